//! Work handed to a forked helper process so the plugin can return first.
//!
//! Some kernel operations make the calling syscall wait for an RCU grace
//! period (deleting a netdev, closing a packet socket) although their effect
//! is visible at once. The plugin leaves that waiting to a helper whose stdio
//! points at /dev/null, so the runtime reading our stdout is not held up.

use nix::unistd::{ForkResult, Pid, fork};

use crate::types::{CniError, CniResult};

/// Runs `work` in a detached child; the child exits with its return value.
pub fn spawn(work: impl FnOnce() -> i32) -> CniResult<Pid> {
    // SAFETY: the plugins are single-threaded (current-thread runtime, no
    // blocking pool), so the child gets a consistent copy of the process.
    match unsafe { fork() } {
        Err(e) => Err(CniError::io("cannot fork helper process", e)),
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            detach_stdio();
            let code = work();
            // SAFETY: _exit skips the parent's atexit handlers and stdio buffers.
            unsafe { libc::_exit(code) }
        }
    }
}

fn detach_stdio() {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto this process's standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
