//! Loading a compiled filter: one seccomp() syscall on data prepared before fork.

use std::os::fd::RawFd;

use nix::errno::Errno;

use super::CompiledFilter;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

impl CompiledFilter {
    /// Loads the filter into the calling thread/process. Async-signal-safe: it only
    /// issues the seccomp()/prctl syscall on pre-built data, no allocation, so it is
    /// safe in a forked child just before execve. The caller must have set
    /// no_new_privs or hold CAP_SYS_ADMIN.
    pub fn install(&self) -> Result<(), Errno> {
        let fd = self.load()?;
        if let Some(fd) = fd {
            // The caller did not ask for the listener: do not leak it into the container.
            // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
            unsafe { libc::close(fd) };
        }
        Ok(())
    }

    /// Like [`install`](Self::install), returning the notification listener fd when the
    /// filter has SCMP_ACT_NOTIFY rules (to be passed to the seccomp agent).
    pub fn install_with_listener(&self) -> Result<Option<RawFd>, Errno> {
        self.load()
    }

    fn load(&self) -> Result<Option<RawFd>, Errno> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel
        // copies the program before returning.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(Errno::last());
        }
        Ok(self.needs_listener().then_some(ret as RawFd))
    }
}
