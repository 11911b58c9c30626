//! Runtime operations (create, start, kill, delete, the OOM check) run in a
//! short-lived forked child, not in the supervisor itself. The supervisor lives
//! as long as its pod; what the runtime touches on the way — the spec parser,
//! seccomp compilation, cgroup setup, their heap — would stay resident in it for
//! that whole time. A child that does the work and exits leaves the supervisor at
//! its idle size. Containers the child creates are reparented to the supervisor
//! (a child subreaper) when it exits, so the supervisor still reaps them.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe2};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most a child sends back: it writes its result into the pipe in one go
/// before exiting, so the result must fit the pipe's buffer (64 KiB).
const RESULT_MAX: usize = 60 * 1024;

/// Runs `op` in a forked child and returns what it returned. `what` names the
/// operation in errors.
///
/// The caller must be single-threaded (the supervisor is), so that the child
/// owns a consistent copy of the process.
pub fn run<T, F>(what: &str, op: F) -> Result<T, String>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    let (from_child, to_parent) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{what}: pipe: {e}"))?;
    // SAFETY: the supervisor is single-threaded: no lock can be held by a
    // thread that does not exist in the child.
    match unsafe { fork() } {
        Err(e) => Err(format!("{what}: fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(from_child);
            // A panic must not unwind into the parent's code in this copy of it.
            let result = std::panic::catch_unwind(AssertUnwindSafe(op))
                .unwrap_or_else(|_| Err(format!("{what} panicked")));
            let mut bytes = serde_json::to_vec(&result).unwrap_or_default();
            if bytes.len() > RESULT_MAX {
                bytes = serde_json::to_vec(&Err::<T, String>(format!(
                    "{what}: result of {} bytes is too large",
                    bytes.len()
                )))
                .unwrap_or_default();
            }
            let code = match std::fs::File::from(to_parent).write_all(&bytes) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: _exit skips atexit handlers and stdio flushing, which belong
            // to the parent's copy of this process.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(to_parent);
            // The child is waited for first and its result read after: a
            // container init it made holds a copy of the pipe's write end until
            // it execs, so the pipe reports no end of file until then.
            while waitpid(child, None) == Err(Errno::EINTR) {}
            let answer = read_available(from_child)
                .map_err(|e| format!("{what}: reading the result: {e}"))?;
            serde_json::from_slice::<Result<T, String>>(&answer)
                .map_err(|_| format!("{what}: the runtime child died without a result"))?
        }
    }
}

/// What is in the pipe now, without waiting for more.
fn read_available(pipe: OwnedFd) -> std::io::Result<Vec<u8>> {
    super::stdio::set_nonblocking(pipe.as_fd())?;
    let mut file = std::fs::File::from(pipe);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(answer),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn the_result_comes_from_a_reaped_child() {
        let child = run("probe", || Ok(std::process::id())).unwrap();
        assert_ne!(child, std::process::id());
        // Already reaped: no zombie is left behind.
        assert_eq!(
            waitpid(Pid::from_raw(child as i32), None),
            Err(Errno::ECHILD)
        );
    }

    #[test]
    fn errors_and_deaths_are_reported() {
        assert_eq!(
            run::<(), _>("probe", || Err("refused".into())),
            Err("refused".into())
        );
        let died = run::<(), _>("probe", || {
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(3) }
        });
        assert_eq!(
            died,
            Err("probe: the runtime child died without a result".into())
        );
    }
}
