//! Processes a sandbox owns, identified by pid plus start time so that a
//! recycled pid is never mistaken for them (the daemon may have restarted).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// Field 22 of /proc/<pid>/stat (start time in clock ticks) and whether the
/// process is a zombie. None when there is no such process.
fn stat(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let zombie = fields.first() == Some(&"Z");
    // `rest` starts at field 3 (state), so field 22 is index 19.
    Some((fields.get(19)?.parse().ok()?, zombie))
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

/// True when `pid` is still the process that started at `started` and has
/// not exited.
pub fn is_alive(pid: i32, started: u64) -> bool {
    matches!(stat(pid), Some((start, false)) if start == started)
}

/// Kills the process (if it is still the one started at `started`) and
/// waits for it: reaps it when it is our child, else waits on its pidfd.
pub fn kill_and_wait(pid: i32, started: u64, timeout: Duration) {
    if !matches!(stat(pid), Some((start, _)) if start == started) {
        return;
    }
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, "killing process: {e}"),
    }
    match waitpid(Pid::from_raw(pid), None) {
        Ok(_) => {}
        Err(Errno::ECHILD) => {
            crate::oci::container::wait_gone(pid, timeout);
        }
        Err(e) => tracing::warn!(pid, "waiting for process: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let started = start_time(pid).unwrap();
        assert!(is_alive(pid, started));
        assert!(!is_alive(pid, started + 1));
    }
}
