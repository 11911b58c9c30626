//! Delegation to an IPAM plugin: executed from CNI_PATH with the same
//! environment and network configuration, as the spec describes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use crate::skel::{CmdArgs, Command};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode};

fn command_name(c: Command) -> &'static str {
    match c {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Version => "VERSION",
        Command::Status => "STATUS",
        Command::Gc => "GC",
    }
}

/// Finds plugin `name` in CNI_PATH.
pub fn find_plugin(args: &CmdArgs, name: &str) -> CniResult<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return Err(CniError::invalid_config(format!(
            "field \"ipam.type\": {name:?} is not a plugin name"
        )));
    }
    args.path
        .iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("field \"ipam.type\": plugin {name:?} not found in CNI_PATH"),
            )
            .with_details(format!("searched {:?}", args.path))
        })
}

/// An IPAM plugin running in the background, so that the caller can do its
/// own netlink work meanwhile.
pub struct Running {
    child: std::process::Child,
    ipam_type: String,
}

/// Starts the IPAM plugin for `command` (stdin is written before returning).
pub fn spawn(args: &CmdArgs, command: Command) -> CniResult<Running> {
    let ipam_type = args
        .conf
        .ipam
        .as_ref()
        .map(|i| i.plugin_type.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CniError::invalid_config("field \"ipam.type\" is missing"))?;
    let plugin = find_plugin(args, ipam_type)?;
    let cni_args = args
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let path = std::env::join_paths(&args.path).map_err(|e| {
        CniError::new(ErrorCode::InvalidEnvironment, "bad CNI_PATH").with_details(e)
    })?;
    let mut child = Process::new(&plugin)
        .env("CNI_COMMAND", command_name(command))
        .env("CNI_CONTAINERID", &args.container_id)
        .env("CNI_NETNS", &args.netns)
        .env("CNI_IFNAME", &args.ifname)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::io(
                format!("cannot execute IPAM plugin {}", plugin.display()),
                e,
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A config bigger than the pipe buffer would block here until the
        // plugin reads it; configs are a few hundred bytes.
        stdin
            .write_all(&args.stdin)
            .map_err(|e| CniError::io("cannot write IPAM plugin stdin", e))?;
    }
    Ok(Running {
        child,
        ipam_type: ipam_type.to_string(),
    })
}

impl Running {
    /// Waits for the plugin; its stdout on success, its error otherwise.
    pub fn wait(self) -> CniResult<Vec<u8>> {
        let ipam_type = self.ipam_type;
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| CniError::io("cannot wait for IPAM plugin", e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(
            serde_json::from_slice::<CniError>(&out.stdout).unwrap_or_else(|_| {
                CniError::new(
                    ErrorCode::Internal,
                    format!("IPAM plugin {ipam_type} failed with {}", out.status),
                )
                .with_details(String::from_utf8_lossy(&out.stdout))
            }),
        )
    }

    /// Waits for an ADD and decodes its result.
    pub fn wait_result(self) -> CniResult<CniOutput> {
        let stdout = self.wait()?;
        let value = serde_json::from_slice(&stdout).map_err(|e| {
            CniError::decoding("IPAM plugin printed no JSON result").with_details(e)
        })?;
        CniOutput::from_value(value)
    }
}

fn exec(args: &CmdArgs, command: Command) -> CniResult<Vec<u8>> {
    spawn(args, command)?.wait()
}

pub fn del(args: &CmdArgs) -> CniResult<()> {
    exec(args, Command::Del).map(|_| ())
}

pub fn check(args: &CmdArgs) -> CniResult<()> {
    exec(args, Command::Check).map(|_| ())
}

pub fn gc(args: &CmdArgs) -> CniResult<()> {
    exec(args, Command::Gc).map(|_| ())
}

pub fn status(args: &CmdArgs) -> CniResult<()> {
    exec(args, Command::Status).map(|_| ())
}
