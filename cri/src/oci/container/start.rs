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
    match state.status(&dir) {
        Status::Created => {}
        Status::Stopped => return Err(invalid("cannot start a container that has stopped")),
        _ => return Err(invalid("cannot start an already running container")),
    }
    let fifo_path = dir.join(EXEC_FIFO);
    // O_RDWR never blocks on a fifo; the init's pending O_WRONLY open then
    // completes and it writes one byte. Its pidfd tells us if it died instead.
    let fifo = open(&fifo_path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("opening {}", fifo_path.display()))?;
    let pidfd = super::pidfd(state.pid)
        .ok_or_else(|| invalid("cannot start a container that has stopped"))?;
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
    // Poststart failures are logged, not fatal (runtime spec).
    if let Err(e) = hooks::run(
        HookKind::Poststart,
        state.hooks.as_ref(),
        &state.oci_state(Status::Running),
    ) {
        tracing::warn!("container {id}: {e}");
    }
    Ok(())
}
