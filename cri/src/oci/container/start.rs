//! `start`: releases a created container's init to exec the user process.

use std::os::fd::AsFd;

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;

use crate::oci::error::{Context, OciError, Result};
use crate::oci::hooks::{self, HookKind};
use crate::oci::state::{EXEC_FIFO, StateStore, Status};

pub fn start(store: &StateStore, id: &str) -> Result<()> {
    let state = store.load(id)?;
    let dir = store.dir(id);
    let invalid = |reason: &str| OciError::InvalidState {
        id: id.into(),
        reason: reason.into(),
    };
    // The pidfd is taken before anything can release the init: once the fifo
    // is open the init may exec, finish and be reaped at once (a short command
    // under load), and a pid looked up after that is gone or someone else's.
    // Taken first and checked against the recorded start time, it names our
    // init for good.
    let pidfd = super::pidfd(state.pid);
    match state.status(&dir) {
        Status::Created => {}
        Status::Stopped => return Err(invalid("cannot start a container that has stopped")),
        _ => return Err(invalid("cannot start an already running container")),
    }
    let pidfd = pidfd.ok_or_else(|| invalid("cannot start a container that has stopped"))?;
    let fifo_path = dir.join(EXEC_FIFO);
    // O_RDWR never blocks on a fifo; the init's pending O_WRONLY open then
    // completes and it writes one byte. Its pidfd tells us if it died instead.
    let fifo = open(&fifo_path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("opening {}", fifo_path.display()))?;
    let mut fds = [
        PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
        PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => {
                other.context(|| "waiting for the container init".into())?;
                break;
            }
        }
    }
    let released = fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN));
    if !released {
        return Err(invalid("the container init exited before start"));
    }
    let mut byte = [0u8; 1];
    nix::unistd::read(&fifo, &mut byte).context(|| "reading the exec fifo".into())?;
    std::fs::remove_file(&fifo_path).context(|| format!("removing {}", fifo_path.display()))?;
    poststart(&state);
    Ok(())
}

/// Runs the poststart hooks; their failures are logged, not fatal (runtime spec).
pub fn poststart(state: &crate::oci::state::ContainerState) {
    if let Err(e) = hooks::run(
        HookKind::Poststart,
        state.hooks.as_ref(),
        &state.oci_state(Status::Running),
    ) {
        tracing::warn!("container {}: {e}", state.id);
    }
}
