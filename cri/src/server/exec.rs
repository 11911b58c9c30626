//! ExecSync: the command runs through `berth-runtime exec` (our runc-
//! compatible CLI over the same runtime state), a child of the daemon that
//! joins the container with the container's own process settings, so the
//! forking happens in a single-threaded process.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use berth_proto::runtime::v1 as cri;
use tokio::io::AsyncReadExt;
use tonic::Status;

use super::daemon::Daemon;
use super::status::required;
use crate::store::ContainerPhase;

/// Output kept per stream, as containerd limits ExecSync output.
pub const MAX_EXEC_OUTPUT: usize = 16 * 1024 * 1024;

/// Reads a stream to its end, keeping at most `MAX_EXEC_OUTPUT` bytes.
async fn read_limited(mut pipe: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

impl Daemon {
    /// `berth-runtime`, installed next to this binary: commands in containers run
    /// through it so the forking happens in a single-threaded process.
    pub fn runtime_binary(&self) -> std::path::PathBuf {
        self.own_binary()
            .parent()
            .map(|dir| dir.join("berth-runtime"))
            .unwrap_or_else(|| "berth-runtime".into())
    }

    pub async fn exec_sync(
        &self,
        request: cri::ExecSyncRequest,
    ) -> Result<cri::ExecSyncResponse, Status> {
        required(&request.container_id, "container_id")?;
        if request.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must be set"));
        }
        let record = self
            .containers
            .get(&request.container_id)
            .map_err(super::sandbox::store_status)?;
        let record = self.refresh(record).await;
        if record.phase != ContainerPhase::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let runtime = self.runtime_binary();
        let mut child = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(self.runtime_root())
            .arg("exec")
            .arg(&record.id)
            .args(&request.cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Status::internal(format!("starting {}: {e}", runtime.display())))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(Status::internal("exec output pipes missing"));
        };
        let run = async {
            let (stdout, stderr, status) =
                tokio::join!(read_limited(stdout), read_limited(stderr), child.wait());
            (stdout, stderr, status)
        };
        let (stdout, stderr, status) = if request.timeout > 0 {
            let limit = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
            tokio::time::timeout(limit, run).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "command {:?} in container {} timed out after {}s",
                    request.cmd, record.id, request.timeout
                ))
            })?
        } else {
            run.await
        };
        let status = status.map_err(|e| Status::internal(format!("waiting for exec: {e}")))?;
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255);
        Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        })
    }
}
