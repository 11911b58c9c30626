//! Foreground `run` / `exec`: forward signals to the container process and wait
//! for its exit status (we are a child subreaper, so it is reaped here even when
//! it was forked by an intermediate process).

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals a foreground runtime passes on to the container.
pub fn forwarded() -> SigSet {
    let mut set = SigSet::all();
    for never in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ] {
        set.remove(never);
    }
    set
}

/// Blocks the forwarded signals so that they queue for `wait_forwarding`.
pub fn block_signals() -> anyhow::Result<()> {
    forwarded().thread_block()?;
    Ok(())
}

/// Exit code of the shell convention: the status, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Waits for `pid` to exit, forwarding every other signal to it; reaps other
/// children on the way. Returns the exit code.
pub fn wait_forwarding(pid: i32) -> anyhow::Result<i32> {
    let set = forwarded();
    loop {
        // Reap first: the child may have exited before we started waiting.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(status) => {
                    if status.pid() == Some(Pid::from_raw(pid)) {
                        if let Some(code) = exit_code(status) {
                            return Ok(code);
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let signal = set.wait()?;
        if signal != Signal::SIGCHLD {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}
