//! Terminals: the container gets a pty whose master goes to the caller over the
//! console socket (SCM_RIGHTS, as runc's --console-socket).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    connect, recvmsg, sendmsg, socket,
};
use nix::sys::stat::Mode;

use super::error::{Context, OciError, Result};

/// Connects to the caller's console socket (before the fork: the path is only
/// reachable from the host's mount namespace).
pub fn connect_socket(path: &Path) -> Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| "console socket".into())?;
    let addr = UnixAddr::new(path).context(|| format!("console socket {}", path.display()))?;
    connect(fd.as_raw_fd(), &addr)
        .context(|| format!("connecting to console socket {}", path.display()))?;
    Ok(fd)
}

/// In the container (after /dev/pts is mounted): opens a pty, hands the master to
/// the console socket, makes the slave the controlling terminal and stdio.
pub fn setup_pty(socket: &OwnedFd, size: Option<(u16, u16)>) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context(|| "opening /dev/ptmx".into())?;
    grantpt(&master).context(|| "grantpt".into())?;
    unlockpt(&master).context(|| "unlockpt".into())?;
    let name = ptsname_r(&master).context(|| "ptsname".into())?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("opening {name}"))?;
    if let Some((height, width)) = size {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    send_fd(socket, master.as_fd().as_raw_fd(), name.as_bytes())?;
    drop(master);
    // SAFETY: TIOCSCTTY takes an int argument; we are a session leader.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(OciError::Init(format!(
            "TIOCSCTTY: {}",
            std::io::Error::last_os_error()
        )));
    }
    for target in 0..3 {
        // SAFETY: replacing stdio with the pty slave; the old fds are ours to close.
        let stdio =
            unsafe { nix::unistd::dup2_raw(&slave, target) }.context(|| "dup2 pty".into())?;
        // fds 0-2 now belong to the process for good, not to an OwnedFd.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(stdio);
    }
    Ok(())
}

fn send_fd(socket: &OwnedFd, fd: RawFd, name: &[u8]) -> Result<()> {
    let iov = [IoSlice::new(name)];
    let fds = [fd];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context(|| "sending the pty master to the console socket".into())?;
    Ok(())
}

/// Receives an fd sent with SCM_RIGHTS (the runtime's own `run -t`).
pub fn recv_fd(socket: &OwnedFd) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context(|| "receiving the pty master".into())?;
    for cmsg in msg.cmsgs().context(|| "reading control messages".into())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(OciError::Init("no pty master received".into()))
}
