//! Finding plugin binaries in the bin dirs and running them with the CNI
//! environment, stdin and a deadline; failures parsed from the spec's
//! error result.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::error::{CniError, PluginFailure};

/// The environment of one plugin call (spec "Parameters"). Unset values
/// are passed as empty variables, like libcni.
#[derive(Debug, Clone, Default)]
pub struct Invocation<'a> {
    pub command: &'static str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

/// Runs plugins found in `bin_dirs`, each with `timeout`.
#[derive(Debug, Clone)]
pub struct PluginExec {
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ErrorResult {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl PluginExec {
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        PluginExec { bin_dirs, timeout }
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// The first `<dir>/<plugin_type>` that is a file, in bin dir order.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|path| path.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin_type.to_string(),
                dirs: self.bin_dirs.clone(),
            })
    }

    /// Runs `binary` and returns its stdout on success.
    pub async fn run(
        &self,
        binary: &Path,
        inv: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Vec<u8>, PluginFailure> {
        let cni_path = std::env::join_paths(&self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = Command::new(binary)
            .env("CNI_COMMAND", inv.command)
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", inv.args)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PluginFailure::Spawn {
                path: binary.to_path_buf(),
                source,
            })?;
        let mut input = child.stdin.take();
        let feed = async move {
            if let Some(pipe) = input.as_mut() {
                // A plugin may exit without reading stdin; its exit status
                // and output tell what happened, so a broken pipe is not an error.
                let _ = pipe.write_all(stdin).await;
            }
            drop(input);
        };
        let run = async {
            let (_, output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => return Err(PluginFailure::Timeout(self.timeout)),
            Ok(Err(source)) => {
                return Err(PluginFailure::Spawn {
                    path: binary.to_path_buf(),
                    source,
                });
            }
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        match serde_json::from_slice::<ErrorResult>(&output.stdout) {
            Ok(e) => Err(PluginFailure::ErrorResult {
                code: e.code,
                msg: e.msg,
                details: e.details,
            }),
            Err(_) => Err(PluginFailure::Exited {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            }),
        }
    }
}
