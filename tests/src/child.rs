//! A guard that kills and reaps a child process when a test ends, pass or fail.

use std::process::{Child, ExitStatus};

/// Owns a spawned child; on drop sends SIGKILL to its PID and reaps it.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("child is present until drop or wait")
    }

    /// Waits for the child to exit and gives up ownership.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .expect("child is present until drop or wait");
        child.wait()
    }

    /// Returns the exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child_mut().try_wait()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() signals this child's own PID only; wait() reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn drop_kills_and_reaps_the_child() {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        drop(ChildGuard::new(child));
        // Reaped: waiting for it again finds no such child.
        let again = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        assert_eq!(again, Err(nix::errno::Errno::ECHILD));
    }
}
