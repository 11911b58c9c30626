//! Process creation primitives.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::oci::error::{Context, Result};

pub enum Forked {
    Parent(Pid),
    Child,
}

/// clone(2) without a new stack: fork semantics plus the given namespace flags
/// (a new pid namespace makes the child its pid 1). Hand-written because neither
/// nix nor std offer clone-as-fork with namespace flags.
///
/// The caller must be single-threaded.
pub fn clone_with(flags: CloneFlags) -> Result<Forked> {
    // SAFETY: raw clone with a null stack behaves like fork(); the process is
    // single-threaded (library contract), so the child owns a consistent copy.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match Errno::result(rc).context(|| format!("clone({flags:?})"))? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// A CLOEXEC duplicate of `fd` numbered at least `min`.
pub fn dup_above(fd: &OwnedFd, min: RawFd) -> Result<OwnedFd> {
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))
        .context(|| "dup".into())?;
    // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Marks every fd from `first` up close-on-exec, so nothing of the runtime's
/// leaks into the container (only stdio and preserved fds stay open).
pub fn cloexec_from(first: RawFd) -> Result<()> {
    // SAFETY: plain syscall on integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(rc).map(drop).context(|| "close_range".into())
}
