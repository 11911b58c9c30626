//! Foreground `run` / `exec`: forward signals to the container process, relay
//! its terminal when we own it, and wait for its exit status. We are a child
//! subreaper, so the process is reaped here even when an intermediate forked it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept, bind, listen, socket,
};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals a foreground runtime passes on to the container.
fn forwarded() -> SigSet {
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

/// Blocks the forwarded signals; they are then read from a signalfd.
pub fn block_signals() -> anyhow::Result<SignalFd> {
    let set = forwarded();
    set.thread_block()?;
    Ok(SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?)
}

/// Exit code of the shell convention: the status, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// A console socket the runtime itself listens on, for a terminal process
/// run in the foreground without --console-socket.
pub struct OwnConsole {
    path: PathBuf,
    listener: OwnedFd,
}

impl OwnConsole {
    pub fn listen(path: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(listener.as_raw_fd(), &UnixAddr::new(path)?)
            .with_context(|| format!("binding {}", path.display()))?;
        listen(&listener, Backlog::new(1)?)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the container process sent.
    pub fn receive(&self) -> anyhow::Result<OwnedFd> {
        use std::os::fd::FromRawFd;
        let conn = accept(self.listener.as_raw_fd())?;
        // SAFETY: accept returned a new descriptor owned by nobody else.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        Ok(crate::oci::console::recv_fd(&conn)?)
    }
}

impl Drop for OwnConsole {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Puts our own terminal in raw mode while relaying a container's pty.
struct RawTerminal(Termios);

impl RawTerminal {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

fn copy(from: BorrowedFd, to: BorrowedFd) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => nix::unistd::write(to, &buf[..n]).is_ok(),
    }
}

fn copy_window_size(pty: BorrowedFd) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize struct.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Waits for `pid` to exit, forwarding signals to it and relaying `pty` to our
/// stdio; reaps other children on the way. Returns the exit code.
pub fn wait_forwarding(pid: i32, signals: SignalFd, pty: Option<OwnedFd>) -> anyhow::Result<i32> {
    let _raw = pty.as_ref().and_then(|_| RawTerminal::enter());
    if let Some(pty) = &pty {
        copy_window_size(pty.as_fd());
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = pty.is_some();
    let mut pty_open = pty.is_some();
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(status) if status.pid() == Some(Pid::from_raw(pid)) => {
                    if let Some(code) = exit_code(status) {
                        // Output still buffered in the pty.
                        if let Some(pty) = pty.as_ref().filter(|_| pty_open) {
                            while poll(
                                &mut [PollFd::new(pty.as_fd(), PollFlags::POLLIN)],
                                PollTimeout::ZERO,
                            )
                            .is_ok_and(|n| n > 0)
                                && copy(pty.as_fd(), stdout.as_fd())
                            {}
                        }
                        return Ok(code);
                    }
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let (Some(pty), true) = (&pty, pty_open) {
            fds.push(PollFd::new(pty.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => {
                other?;
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let signal_ready = ready(&fds[0]);
        let pty_ready = pty_open && ready(&fds[1]);
        let stdin_ready = stdin_open && ready(&fds[fds.len() - 1]);
        drop(fds);
        if signal_ready {
            if let Some(info) = signals.read_signal()? {
                let signal = Signal::try_from(info.ssi_signo as i32)?;
                match (signal, &pty) {
                    (Signal::SIGCHLD, _) => {}
                    (Signal::SIGWINCH, Some(pty)) => copy_window_size(pty.as_fd()),
                    _ => {
                        let _ = kill(Pid::from_raw(pid), signal);
                    }
                }
            }
        }
        if let (Some(pty), true) = (&pty, pty_ready) {
            pty_open = copy(pty.as_fd(), stdout.as_fd());
        }
        if let (Some(pty), true) = (&pty, stdin_ready) {
            stdin_open = copy(stdin.as_fd(), pty.as_fd());
        }
    }
}
