//! The master side of an exec's pty on the async runtime.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::unix::AsyncFd;

use crate::streaming::TerminalSize;

pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        set_nonblocking(std::os::fd::AsFd::as_fd(&fd))?;
        // SAFETY: an OwnedFd stays open and keeps its descriptor while the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self { fd })
    }

    /// Reads output; 0 at the end (EIO: the last holder of the slave closed it).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| match nix::unistd::read(fd.get_ref(), buf) {
                Err(Errno::EIO) => Ok(0),
                other => other.map_err(std::io::Error::from),
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.fd.writable().await?;
            if let Ok(written) = ready
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                data = &data[written?..];
            }
        }
        Ok(())
    }

    pub fn resize(&self, size: TerminalSize) {
        let size = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        unsafe { libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd) -> std::io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
