//! `delete`: removes a stopped (or, forced, any) container: its processes,
//! cgroup and state, then runs the poststop hooks.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::oci::error::{OciError, Result};
use crate::oci::hooks::{self, HookKind};
use crate::oci::state::{StateStore, Status};

const KILL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn delete(store: &StateStore, id: &str, force: bool) -> Result<()> {
    let state = match store.load(id) {
        Ok(state) => state,
        Err(OciError::NotFound(_)) if force => {
            // A create that died before writing its state may have left the dir.
            crate::oci::state::validate_id(id)?;
            return store.remove(id);
        }
        Err(e) => return Err(e),
    };
    let status = state.status(&store.dir(id));
    let manager = state.cgroup_manager()?;
    match status {
        Status::Stopped => {}
        Status::Created | Status::Creating => {}
        Status::Running | Status::Paused if !force => {
            return Err(OciError::InvalidState {
                id: id.into(),
                reason: format!("cannot delete container that is not stopped: {status}"),
            });
        }
        Status::Running | Status::Paused => {}
    }
    if status != Status::Stopped {
        let _ = kill(Pid::from_raw(state.pid), Signal::SIGKILL);
    }
    // Whatever else is left in the cgroup (containers sharing the host pid
    // namespace leave orphans behind their init).
    for pid in manager.pids().unwrap_or_default() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if status == Status::Paused {
        let _ = manager.thaw();
    }
    if status != Status::Stopped && !super::wait_gone(state.pid, KILL_TIMEOUT) {
        return Err(OciError::InvalidState {
            id: id.into(),
            reason: "init did not die after SIGKILL".into(),
        });
    }
    manager.destroy()?;
    if let Err(e) = hooks::run(
        HookKind::Poststop,
        state.hooks.as_ref(),
        &state.oci_state(Status::Stopped),
    ) {
        tracing::warn!("container {id}: {e}");
    }
    store.remove(id)
}
