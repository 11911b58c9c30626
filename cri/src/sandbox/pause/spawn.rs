//! Starting the pause process directly: clone(2) into the new namespaces,
//! join the pod netns, set the hostname, exec `berth-pause`. Failures in
//! the child before exec come back through a close-on-exec pipe.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, clone};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use super::namespaces::{NamespacePaths, SandboxNamespaces};

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{action}: {source}")]
    Sys { action: &'static str, source: Errno },
    /// A step in the child before exec failed.
    #[error("pause process: {step} failed: {source}")]
    Child { step: &'static str, source: Errno },
}

/// Child steps, reported by index through the error pipe.
const STEPS: &[&str] = &[
    "joining the pod network namespace",
    "setting the hostname",
    "creating a session",
    "redirecting stdio to /dev/null",
    "resetting the signal mask",
    "executing berth-pause",
];

/// A running pause process (a child of the caller, who must reap it).
#[derive(Debug, Clone)]
pub struct PauseProcess {
    pid: i32,
    namespaces: NamespacePaths,
}

impl PauseProcess {
    /// The host PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn namespaces(&self) -> &NamespacePaths {
        &self.namespaces
    }

    /// Whether it has taken over its signals (its SIGTERM handler shows in
    /// SigCgt). Until then the kernel drops a SIGTERM sent to the init of
    /// a PID namespace, so callers that stop a freshly started sandbox
    /// gracefully wait for this (or kill).
    pub fn is_ready(&self) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        let term_bit = 1u64 << (libc::SIGTERM - 1);
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & term_bit != 0)
    }

    /// Asks it to exit (it exits 0 on SIGTERM once ready).
    pub fn terminate(&self) -> Result<(), PauseError> {
        self.signal(Signal::SIGTERM)
    }

    /// Stops it unconditionally.
    pub fn kill(&self) -> Result<(), PauseError> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, signal: Signal) -> Result<(), PauseError> {
        match kill(Pid::from_raw(self.pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(PauseError::Sys {
                action: "signalling pause process",
                source,
            }),
        }
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&self) -> Result<WaitStatus, PauseError> {
        loop {
            match waitpid(Pid::from_raw(self.pid), None) {
                Err(Errno::EINTR) => continue,
                other => {
                    return other.map_err(|source| PauseError::Sys {
                        action: "waiting for pause process",
                        source,
                    });
                }
            }
        }
    }
}

/// Starts `binary` (berth-pause) as described by `ns`.
pub fn spawn_pause(binary: &Path, ns: &SandboxNamespaces) -> Result<PauseProcess, PauseError> {
    // Everything the child needs is prepared here: after clone() in a
    // multi-threaded process the child may only make raw syscalls.
    let netns = match (&ns.netns, ns.host_network) {
        (_, true) => None,
        (Some(path), false) => Some(open(path)?),
        (None, false) => {
            return Err(PauseError::Invalid {
                field: "netns",
                reason: "required when the pod does not use the host network".into(),
            });
        }
    };
    let hostname = match (&ns.hostname, ns.host_network) {
        (Some(name), false) => {
            if name.is_empty() || name.len() > 64 || name.contains('\0') {
                return Err(PauseError::Invalid {
                    field: "hostname",
                    reason: format!("{name:?} must be 1 to 64 bytes without NUL"),
                });
            }
            Some(name.as_bytes().to_vec())
        }
        _ => None,
    };
    let program = CString::new(binary.as_os_str().as_bytes()).map_err(|_| PauseError::Invalid {
        field: "binary",
        reason: format!("{} contains NUL", binary.display()),
    })?;
    let argv = [program.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let devnull = open(Path::new("/dev/null"))?;
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(|source| PauseError::Sys {
        action: "creating the error pipe",
        source,
    })?;

    let mut flags = CloneFlags::empty();
    if !ns.host_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if !ns.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if !ns.host_network {
        flags |= CloneFlags::CLONE_NEWUTS;
    }

    let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
    let devnull_fd = devnull.as_raw_fd();
    let report_fd = err_write.as_raw_fd();
    let child = Box::new(move || -> isize {
        // SAFETY: async-signal-safe syscalls on descriptors and buffers
        // prepared before clone(); the child has its own copy of memory.
        unsafe {
            pause_child(
                netns_fd,
                hostname.as_deref(),
                devnull_fd,
                &argv,
                &envp,
                report_fd,
            )
        }
    });
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the callback only makes raw syscalls (see pause_child) and
    // never returns into the parent's frames.
    let pid =
        unsafe { clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(|source| {
            PauseError::Sys {
                action: "clone",
                source,
            }
        })?;
    drop(err_write);
    drop(netns);
    drop(devnull);

    let failure = read_child_failure(err_read);
    if let Some((step, errno)) = failure {
        // The child exits right after reporting; reap it.
        let _ = waitpid(pid, None);
        return Err(PauseError::Child {
            step: STEPS.get(step).copied().unwrap_or("an unknown step"),
            source: Errno::from_raw(errno),
        });
    }
    Ok(PauseProcess {
        pid: pid.as_raw(),
        namespaces: NamespacePaths::of(pid.as_raw(), ns),
    })
}

fn open(path: &Path) -> Result<File, PauseError> {
    File::open(path).map_err(|source| PauseError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// EOF means exec succeeded; 8 bytes are (step, errno) of a failure.
fn read_child_failure(pipe: OwnedFd) -> Option<(usize, i32)> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    let mut file = File::from(pipe);
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if filled < buf.len() {
        return None;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((step, errno))
}

/// Runs in the cloned child; returns only by exiting.
unsafe fn pause_child(
    netns: Option<i32>,
    hostname: Option<&[u8]>,
    devnull: i32,
    argv: &[*const libc::c_char; 2],
    envp: &[*const libc::c_char; 1],
    report: i32,
) -> isize {
    let fail = |step: u32| -> isize {
        let errno = Errno::last_raw();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writing a stack buffer to our own pipe, then exiting
        // without running the parent's atexit handlers.
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: raw syscalls with valid descriptors and NUL-free buffers.
    unsafe {
        if let Some(fd) = netns {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return fail(0);
            }
        }
        if let Some(name) = hostname {
            if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                return fail(1);
            }
        }
        if libc::setsid() < 0 {
            return fail(2);
        }
        for target in 0..3 {
            if libc::dup2(devnull, target) < 0 {
                return fail(3);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return fail(4);
        }
        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        fail(5)
    }
}
