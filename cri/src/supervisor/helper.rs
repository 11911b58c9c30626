//! Runs a [`RuntimeOp`] in the `berth-supervisor-op` helper (see [`super::op`])
//! and returns its answer. The helper is opened once when the supervisor starts
//! and executed from that descriptor, so a supervisor that outlives an upgrade
//! of the binaries keeps running the helper it was built with.

use std::ffi::CString;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, dup2_raw, fexecve, fork, pipe2};
use serde::de::DeserializeOwned;

use super::op::{RESULT_FD, RuntimeOp};

/// The helper's file name; it ships next to `berth-supervisor`.
pub const BINARY: &str = "berth-supervisor-op";

/// The most the helper may answer: it writes its result into the pipe in one
/// go before exiting, so the result must fit the pipe's buffer (64 KiB).
const RESULT_MAX: usize = 60 * 1024;

/// The stdio a created container's init inherits through the helper.
pub struct ContainerStdio<'a> {
    pub stdin: Option<BorrowedFd<'a>>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

pub struct Helper {
    binary: OwnedFd,
    runtime_root: CString,
}

impl Helper {
    /// Opens the helper next to this process's own binary.
    pub fn open(runtime_root: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding our binary: {e}"))?;
        let path = exe.with_file_name(BINARY);
        let opened = open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // Kept clear of the descriptors the child rewires before executing it.
        let binary = fcntl(&opened, FcntlArg::F_DUPFD_CLOEXEC(RESULT_FD + 1))
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        let binary = unsafe { OwnedFd::from_raw_fd(binary) };
        let runtime_root = CString::new(runtime_root.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("runtime root {} has a NUL byte", runtime_root.display()))?;
        Ok(Self {
            binary,
            runtime_root,
        })
    }

    /// Performs `op` in the helper; `stdio`, when given, becomes the helper's
    /// (and so a created container's) stdio, otherwise it inherits ours.
    ///
    /// The caller must be single-threaded (the supervisor is): the forked child
    /// only calls async-signal-safe functions before it executes the helper, but
    /// its arguments are prepared here, before the fork.
    pub fn run<T: DeserializeOwned>(
        &self,
        op: &RuntimeOp,
        stdio: Option<ContainerStdio>,
    ) -> Result<T, String> {
        let what = op.name();
        let request = serde_json::to_string(op).map_err(|e| format!("{what}: {e}"))?;
        let args = [
            CString::new(BINARY).map_err(|e| format!("{what}: {e}"))?,
            self.runtime_root.clone(),
            CString::new(request).map_err(|e| format!("{what}: {e}"))?,
        ];
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(key, value)| {
                let mut pair = key.into_encoded_bytes();
                pair.push(b'=');
                pair.extend(value.into_encoded_bytes());
                CString::new(pair).ok()
            })
            .collect();
        let (from_child, to_parent) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("{what}: pipe: {e}"))?;
        // SAFETY: the supervisor is single-threaded, and the child only makes
        // async-signal-safe calls (dup2, fcntl, sigprocmask, execveat, _exit).
        match unsafe { fork() } {
            Err(e) => Err(format!("{what}: fork: {e}")),
            Ok(ForkResult::Child) => {
                drop(from_child);
                let _ = self.exec(&args, &env, to_parent.as_fd(), stdio.as_ref());
                // SAFETY: leaves the failed child without running the parent's
                // atexit handlers or flushing its buffers.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(to_parent);
                // The helper is waited for first and its result read after: a
                // container init it made holds a copy of the pipe's write end until
                // it executes, so the pipe reports no end of file until then.
                while waitpid(child, None) == Err(Errno::EINTR) {}
                let answer = read_available(from_child)
                    .map_err(|e| format!("{what}: reading the result: {e}"))?;
                if answer.len() > RESULT_MAX {
                    return Err(format!(
                        "{what}: result of {} bytes is too large",
                        answer.len()
                    ));
                }
                serde_json::from_slice::<Result<T, String>>(&answer)
                    .map_err(|_| format!("{what}: the runtime helper died without a result"))?
            }
        }
    }

    /// In the forked child: wires the descriptors and executes the helper.
    fn exec(
        &self,
        args: &[CString],
        env: &[CString],
        result: BorrowedFd,
        stdio: Option<&ContainerStdio>,
    ) -> nix::Result<()> {
        if let Some(stdio) = stdio {
            if let Some(stdin) = stdio.stdin {
                move_to(stdin, 0)?;
            }
            move_to(stdio.stdout, 1)?;
            move_to(stdio.stderr, 2)?;
        }
        move_to(result, RESULT_FD)?;
        // The supervisor blocks SIGCHLD for its signalfd; the helper starts clean.
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        fexecve(&self.binary, args, env)?;
        Ok(())
    }
}

/// Makes `fd` the descriptor `target`, kept open across exec.
fn move_to(fd: BorrowedFd, target: i32) -> nix::Result<()> {
    if fd.as_raw_fd() == target {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        return Ok(());
    }
    // SAFETY: `target` is one of the standard descriptors or the result fd,
    // which the helper expects to be replaced; the new descriptor is handed to
    // the executed program, not owned here.
    unsafe { dup2_raw(fd, target) }.map(std::mem::forget)
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
