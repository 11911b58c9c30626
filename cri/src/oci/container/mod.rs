//! The container lifecycle verbs, one module each, over the persisted state.

pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod pause;
pub mod start;
pub mod state;
pub mod update;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::error::{Context, Result};

/// A pidfd for `pid` (None when the process is already gone).
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: on success the syscall returned a new descriptor nobody else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

/// Waits until process `pid` has exited (it need not be our child).
/// Returns false on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let Some(fd) = pidfd(pid) else { return true };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(n) => return n > 0,
            Err(_) => return false,
        }
    }
}

/// Writes `pid` to `path` atomically (tmp file + rename), as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .context(|| format!("writing pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("writing pid file {}", path.display()))
}

/// Sets a process's oom_score_adj. Lowering it below our own needs
/// CAP_SYS_RESOURCE; without it the value is clamped to ours (like containerd's
/// restrict_oom_score_adj) and logged.
pub fn set_oom_score_adj(pid: i32, value: i32) -> Result<()> {
    let path = format!("/proc/{pid}/oom_score_adj");
    match std::fs::write(&path, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if value < own {
                tracing::info!(
                    "process.oomScoreAdj {value} clamped to the runtime's own {own} (no CAP_SYS_RESOURCE)"
                );
                std::fs::write(&path, own.to_string()).context(|| format!("writing {path}"))
            } else {
                Err(crate::oci::error::invalid(
                    "process.oomScoreAdj",
                    format!("{value}: {e}"),
                ))
            }
        }
        Err(e) => Err(crate::oci::error::invalid(
            "process.oomScoreAdj",
            format!("{value}: {e}"),
        )),
    }
}

/// Hands a seccomp notification listener received from the container process to
/// the agent at linux.seccomp.listenerPath, with the container state.
pub fn forward_seccomp_listener(
    listener: Option<OwnedFd>,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    state: &crate::oci::state::OciState,
) -> Result<()> {
    let (Some(listener), Some(path)) = (listener, seccomp.and_then(|s| s.listener_path().as_ref()))
    else {
        return Err(crate::oci::error::OciError::Init(
            "seccomp listener without linux.seccomp.listenerPath".into(),
        ));
    };
    let state_json = serde_json::to_value(state)
        .map_err(|e| crate::oci::error::OciError::Init(e.to_string()))?;
    let oci_state: oci_spec::runtime::State = serde_json::from_value(state_json)
        .map_err(|e| crate::oci::error::OciError::Init(e.to_string()))?;
    let metadata = seccomp.and_then(|s| s.listener_metadata().as_deref());
    crate::oci::seccomp::send_listener_fd(path, listener.as_fd(), state.pid, metadata, &oci_state)?;
    Ok(())
}
