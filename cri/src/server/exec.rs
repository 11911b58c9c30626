//! ExecSync: the command runs through `berth-runtime exec` (our runc-
//! compatible CLI over the same runtime state), a child of the daemon that
//! joins the container with the container's own process settings, so the
//! forking happens in a single-threaded process.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
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
        // The exec'd process's host PID lands here, so that a timeout can
        // kill the process itself and not only the runtime waiting for it.
        let exec_dir = self.config.state.join("exec");
        std::fs::create_dir_all(&exec_dir)
            .map_err(|e| Status::internal(format!("creating {}: {e}", exec_dir.display())))?;
        let pid_file = PidFile(exec_dir.join(format!("{}.pid", uuid::Uuid::new_v4().simple())));
        let mut child = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(self.runtime_root())
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file.0)
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
        let mut stdout = tokio::spawn(read_limited(stdout));
        let mut stderr = tokio::spawn(read_limited(stderr));
        let run = async {
            let status = child.wait().await;
            let stdout = (&mut stdout).await.unwrap_or_default();
            let stderr = (&mut stderr).await.unwrap_or_default();
            (stdout, stderr, status)
        };
        let finished = if request.timeout > 0 {
            let limit = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
            tokio::time::timeout(limit, run).await.ok()
        } else {
            Some(run.await)
        };
        let Some((stdout, stderr, status)) = finished else {
            // Like containerd: the process is killed and reaped before the
            // call fails with DeadlineExceeded, which the kubelet reads as a
            // probe timeout.
            kill_timed_out(&pid_file.0, &mut child).await;
            stdout.abort();
            stderr.abort();
            return Err(Status::deadline_exceeded(format!(
                "command {:?} in container {}: timeout {}s exceeded; the process was killed",
                request.cmd, record.id, request.timeout
            )));
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

/// An exec's pid file, removed when the call ends.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long a timed-out exec gets to appear in its pid file and to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// SIGKILLs a timed-out exec'd process and waits until its runtime (a
/// subreaper that reaps it, so the PID cannot be reused before) has exited.
/// An exec still starting is waited for until its PID is known.
async fn kill_timed_out(pid_file: &Path, runtime: &mut tokio::process::Child) {
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            // ESRCH: it ended on its own meanwhile.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            break;
        }
        if matches!(runtime.try_wait(), Ok(Some(_))) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if tokio::time::timeout_at(deadline, runtime.wait())
        .await
        .is_err()
    {
        tracing::warn!("exec runtime did not end after its process was killed");
        let _ = runtime.kill().await;
    }
}
