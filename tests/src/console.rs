//! The receiving end of a runtime's `--console-socket`: for a container with
//! `process.terminal`, the runtime connects to this unix socket and passes
//! the pseudo-terminal master with SCM_RIGHTS.

use anyhow::Context;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

pub struct ConsoleSocket {
    path: PathBuf,
    master: mpsc::Receiver<anyhow::Result<OwnedFd>>,
}

impl ConsoleSocket {
    /// Listens at `path` and accepts one connection in the background.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let (tx, master) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(receive_master(&listener));
        });
        Ok(Self {
            path: path.to_path_buf(),
            master,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent, waiting at most `timeout`.
    pub fn master(&self, timeout: Duration) -> anyhow::Result<OwnedFd> {
        self.master
            .recv_timeout(timeout)
            .context("no terminal received on the console socket")?
    }
}

fn receive_master(listener: &UnixListener) -> anyhow::Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .context("accepting on the console socket")?;
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .context("receiving the terminal")?;
    for cmsg in message.cmsgs().context("reading control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    anyhow::bail!("the console socket message carried no file descriptor")
}
