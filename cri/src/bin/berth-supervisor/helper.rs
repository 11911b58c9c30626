//! Runs a [`RuntimeOp`] in the `berth-supervisor-op` helper
//! (`berth_cri::supervisor::op`) and returns its answer. The helper is opened once
//! when the supervisor starts and executed from that descriptor, so a supervisor
//! that outlives an upgrade of the binaries keeps running the helper it was built
//! with.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::json::Value;
use crate::names::RESULT_FD;
use crate::sys::{self, Errno, Fd};
use crate::wire::{RuntimeOp, parse_result};

/// The helper's file name; it ships next to `berth-supervisor`.
const BINARY: &str = "berth-supervisor-op";
/// The most the helper may answer: it writes its result into the pipe in one
/// go before exiting, so the result must fit the pipe's buffer (64 KiB).
const RESULT_MAX: usize = 60 * 1024;

/// The stdio a created container's init inherits through the helper.
pub struct ContainerStdio {
    pub stdin: Option<i32>,
    pub stdout: i32,
    pub stderr: i32,
}

pub struct Helper {
    binary: Fd,
    /// NUL-terminated.
    runtime_root: Vec<u8>,
    /// Our environment, handed on as it is.
    envp: *const *const u8,
}

impl Helper {
    /// Opens the helper next to this process's own binary.
    pub fn open(runtime_root: &[u8], envp: *const *const u8) -> Result<Self, String> {
        let exe =
            sys::readlink(b"/proc/self/exe").map_err(|e| format!("finding our binary: {e}"))?;
        let dir = match exe.iter().rposition(|b| *b == b'/') {
            Some(slash) => &exe[..=slash],
            None => &[][..],
        };
        let mut path = dir.to_vec();
        path.extend_from_slice(BINARY.as_bytes());
        let shown = String::from_utf8_lossy(&path).into_owned();
        let opened =
            sys::open(&path, libc::O_PATH, 0).map_err(|e| format!("opening {shown}: {e}"))?;
        // Kept clear of the descriptors the child rewires before executing it.
        let binary = sys::fcntl(opened.raw(), libc::F_DUPFD_CLOEXEC, RESULT_FD as usize + 1)
            .map_err(|e| format!("opening {shown}: {e}"))?;
        let runtime_root = sys::c_string(runtime_root)
            .map_err(|_| String::from("the runtime root has a NUL byte"))?;
        Ok(Helper {
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            binary: unsafe { Fd::from_raw(binary as i32) },
            runtime_root,
            envp,
        })
    }

    /// Performs `op` in the helper; `stdio`, when given, becomes the helper's
    /// (and so a created container's) stdio, otherwise it inherits ours.
    pub fn run(&self, op: &RuntimeOp, stdio: Option<ContainerStdio>) -> Result<Value, String> {
        let what = op.name();
        let name = sys::c_string(BINARY.as_bytes()).map_err(|e| format!("{what}: {e}"))?;
        let request = sys::c_string(&op.to_json()).map_err(|e| format!("{what}: {e}"))?;
        let argv = [
            name.as_ptr(),
            self.runtime_root.as_ptr(),
            request.as_ptr(),
            core::ptr::null(),
        ];
        let (from_child, to_parent) = sys::pipe().map_err(|e| format!("{what}: pipe: {e}"))?;
        // SAFETY: the child only makes system calls before it executes or exits.
        match unsafe { sys::fork() } {
            Err(e) => Err(format!("{what}: fork: {e}")),
            Ok(0) => {
                let _ = self.exec(&argv, to_parent.raw(), stdio.as_ref());
                sys::exit(127)
            }
            Ok(child) => {
                drop(to_parent);
                // The helper is waited for first and its result read after: a
                // container init it made holds a copy of the pipe's write end until
                // it executes, so the pipe reports no end of file until then.
                while matches!(sys::wait(child, true), Err(Errno::INTR)) {}
                let answer = read_available(&from_child)
                    .map_err(|e| format!("{what}: reading the result: {e}"))?;
                if answer.len() > RESULT_MAX {
                    return Err(format!(
                        "{what}: result of {} bytes is too large",
                        answer.len()
                    ));
                }
                parse_result(&answer).unwrap_or_else(|| {
                    Err(format!("{what}: the runtime helper died without a result"))
                })
            }
        }
    }

    /// In the forked child: wires the descriptors and executes the helper.
    fn exec(
        &self,
        argv: &[*const u8],
        result: i32,
        stdio: Option<&ContainerStdio>,
    ) -> sys::Result<()> {
        if let Some(stdio) = stdio {
            if let Some(stdin) = stdio.stdin {
                move_to(stdin, 0)?;
            }
            move_to(stdio.stdout, 1)?;
            move_to(stdio.stderr, 2)?;
        }
        move_to(result, RESULT_FD)?;
        // The supervisor blocks SIGCHLD for its signalfd; the helper starts clean.
        sys::set_signal_mask(libc::SIG_SETMASK, 0)?;
        Err(sys::execute(self.binary.raw(), argv, self.envp))
    }
}

/// Makes `fd` the descriptor `target`, kept open across exec.
fn move_to(fd: i32, target: i32) -> sys::Result<()> {
    if fd == target {
        return sys::fcntl(fd, libc::F_SETFD, 0).map(drop);
    }
    sys::dup2(fd, target)
}

/// What is in the pipe now, without waiting for more.
fn read_available(pipe: &Fd) -> sys::Result<Vec<u8>> {
    sys::set_nonblocking(pipe.raw())?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sys::read(pipe.raw(), &mut chunk) {
            Ok(0) | Err(Errno::AGAIN) => return Ok(answer),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}
