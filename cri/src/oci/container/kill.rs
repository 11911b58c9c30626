//! `kill`: signals the init, or with `all` every process in the container's cgroup.

use nix::sys::signal::{Signal, kill as send};
use nix::unistd::Pid;

use crate::oci::error::{Context, OciError, Result};
use crate::oci::state::{StateStore, Status};

pub fn kill(store: &StateStore, id: &str, signal: Signal, all: bool) -> Result<()> {
    let state = store.load(id)?;
    let status = state.status(&store.dir(id));
    if all {
        let manager = state.cgroup_manager()?;
        for pid in manager.pids()? {
            match send(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e).context(|| format!("sending {signal} to {pid}")),
            }
        }
        return Ok(());
    }
    if status == Status::Stopped {
        return Err(OciError::InvalidState {
            id: id.into(),
            reason: "container not running".into(),
        });
    }
    send(Pid::from_raw(state.pid), signal)
        .context(|| format!("sending {signal} to the container init"))
}

/// Parses a signal as runc accepts it: `KILL`, `SIGKILL`, `9`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_short_name_and_number() {
        assert_eq!(parse_signal("KILL"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
