//! The Linux system calls the supervisor makes, issued directly (no C library):
//! thin wrappers that turn the kernel's negative returns into [`Errno`]s.
//! Hand-written because a crate for this (rustix) is built with its `std`
//! feature in this workspace, which would link the standard library and, with
//! it, the C library back in. Constants and structures come from the `libc`
//! crate, which is declarations only.

use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("berth-supervisor issues x86_64 system calls");

pub type Result<T> = core::result::Result<T, Errno>;

/// An error number from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const AGAIN: Errno = Errno(libc::EAGAIN);
    pub const INTR: Errno = Errno(libc::EINTR);
    pub const INVAL: Errno = Errno(libc::EINVAL);

    fn description(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "Operation not permitted",
            libc::ENOENT => "No such file or directory",
            libc::ESRCH => "No such process",
            libc::EINTR => "Interrupted system call",
            libc::EIO => "Input/output error",
            libc::EBADF => "Bad file descriptor",
            libc::ECHILD => "No child processes",
            libc::EAGAIN => "Resource temporarily unavailable",
            libc::ENOMEM => "Cannot allocate memory",
            libc::EACCES => "Permission denied",
            libc::EEXIST => "File exists",
            libc::ENOTDIR => "Not a directory",
            libc::EISDIR => "Is a directory",
            libc::EINVAL => "Invalid argument",
            libc::EMFILE => "Too many open files",
            libc::ENOSPC => "No space left on device",
            libc::EROFS => "Read-only file system",
            libc::EPIPE => "Broken pipe",
            libc::ENAMETOOLONG => "File name too long",
            libc::ELOOP => "Too many levels of symbolic links",
            libc::EADDRINUSE => "Address already in use",
            libc::ECONNREFUSED => "Connection refused",
            libc::ECONNRESET => "Connection reset by peer",
            libc::EDQUOT => "Disk quota exceeded",
            _ => return None,
        })
    }
}

/// As the standard library prints an OS error.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{text} (os error {})", self.0),
            None => write!(f, "os error {}", self.0),
        }
    }
}

/// # Safety
/// The arguments must be valid for system call `number`.
unsafe fn syscall(number: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; the kernel clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn check(ret: isize) -> Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

macro_rules! sys {
    ($number:expr $(, $arg:expr)*) => {{
        let mut args = [0usize; 6];
        let values: &[usize] = &[$($arg as usize),*];
        args[..values.len()].copy_from_slice(values);
        // SAFETY: each wrapper passes arguments that match its system call.
        check(unsafe { syscall($number, args) })
    }};
}

/// An owned descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    /// # Safety
    /// `raw` must be an open descriptor that nothing else owns.
    pub unsafe fn from_raw(raw: i32) -> Fd {
        Fd(raw)
    }

    pub fn raw(&self) -> i32 {
        self.0
    }

    pub fn try_clone(&self) -> Result<Fd> {
        fcntl(self.0, libc::F_DUPFD_CLOEXEC, 0).map(|fd| Fd(fd as i32))
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = sys!(libc::SYS_close, self.0);
    }
}

/// A NUL-terminated copy of `bytes` for the kernel.
pub fn c_string(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.contains(&0) {
        return Err(Errno::INVAL);
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(bytes);
    out.push(0);
    Ok(out)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    sys!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len())
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize> {
    sys!(libc::SYS_write, fd, buf.as_ptr(), buf.len())
}

/// Writes all of `buf` to a blocking descriptor.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(Errno(libc::EIO)),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn open(path: &[u8], flags: i32, mode: u32) -> Result<Fd> {
    let path = c_string(path)?;
    let flags = flags | libc::O_CLOEXEC;
    sys!(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode).map(|fd| Fd(fd as i32))
}

pub fn mkdir(path: &[u8], mode: u32) -> Result<()> {
    let path = c_string(path)?;
    sys!(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), mode).map(drop)
}

pub fn unlink(path: &[u8]) -> Result<()> {
    let path = c_string(path)?;
    sys!(libc::SYS_unlinkat, libc::AT_FDCWD, path.as_ptr(), 0).map(drop)
}

pub fn rename(from: &[u8], to: &[u8]) -> Result<()> {
    let (from, to) = (c_string(from)?, c_string(to)?);
    sys!(
        libc::SYS_renameat,
        libc::AT_FDCWD,
        from.as_ptr(),
        libc::AT_FDCWD,
        to.as_ptr()
    )
    .map(drop)
}

pub fn fsync(fd: i32) -> Result<()> {
    sys!(libc::SYS_fsync, fd).map(drop)
}

pub fn chdir(path: &[u8]) -> Result<()> {
    let path = c_string(path)?;
    sys!(libc::SYS_chdir, path.as_ptr()).map(drop)
}

pub fn readlink(path: &[u8]) -> Result<Vec<u8>> {
    let path = c_string(path)?;
    let mut buf = alloc::vec![0u8; libc::PATH_MAX as usize];
    let n = sys!(
        libc::SYS_readlink,
        path.as_ptr(),
        buf.as_mut_ptr(),
        buf.len()
    )?;
    buf.truncate(n);
    Ok(buf)
}

pub fn pipe() -> Result<(Fd, Fd)> {
    let mut fds = [0i32; 2];
    sys!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC)?;
    Ok((Fd(fds[0]), Fd(fds[1])))
}

pub fn fcntl(fd: i32, cmd: i32, arg: usize) -> Result<usize> {
    sys!(libc::SYS_fcntl, fd, cmd, arg)
}

pub fn set_nonblocking(fd: i32) -> Result<()> {
    let flags = fcntl(fd, libc::F_GETFL, 0)?;
    fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK as usize).map(drop)
}

/// Makes `fd` the descriptor `target` as well (for a child about to execute).
pub fn dup2(fd: i32, target: i32) -> Result<()> {
    sys!(libc::SYS_dup2, fd, target).map(drop)
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize> {
    sys!(libc::SYS_poll, fds.as_mut_ptr(), fds.len(), timeout_ms)
}

/// A stream socket of the unix domain.
pub fn unix_socket() -> Result<Fd> {
    sys!(
        libc::SYS_socket,
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0
    )
    .map(|fd| Fd(fd as i32))
}

/// A listening unix socket bound to `path`.
pub fn listen_unix(path: &[u8]) -> Result<Fd> {
    // SAFETY: all-zero is a valid sockaddr_un (integers and a byte array).
    let mut address: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= address.sun_path.len() || path.contains(&0) {
        return Err(Errno::INVAL);
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(path) {
        *slot = *byte as libc::c_char;
    }
    let length = core::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    let socket = unix_socket()?;
    sys!(libc::SYS_bind, socket.raw(), &raw const address, length)?;
    sys!(libc::SYS_listen, socket.raw(), 128)?;
    Ok(socket)
}

pub fn accept(listener: i32) -> Result<Fd> {
    sys!(libc::SYS_accept4, listener, 0, 0, libc::SOCK_CLOEXEC).map(|fd| Fd(fd as i32))
}

/// Bounds how long a blocking read on socket `fd` waits.
pub fn set_read_timeout(fd: i32, seconds: i64) -> Result<()> {
    let timeout = libc::timeval {
        tv_sec: seconds,
        tv_usec: 0,
    };
    sys!(
        libc::SYS_setsockopt,
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        &raw const timeout,
        core::mem::size_of::<libc::timeval>()
    )
    .map(drop)
}

/// Receives one descriptor passed with SCM_RIGHTS (the payload is discarded).
pub fn receive_fd(socket: i32) -> Result<Option<Fd>> {
    let mut payload = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // Room for one cmsghdr carrying one descriptor, aligned for the header.
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid msghdr (null pointers and zero lengths).
    let mut message: libc::msghdr = unsafe { core::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = core::mem::size_of_val(&control);
    sys!(
        libc::SYS_recvmsg,
        socket,
        &raw mut message,
        libc::MSG_CMSG_CLOEXEC
    )?;
    // SAFETY: the kernel filled msg_control with well-formed headers.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let fd = libc::CMSG_DATA(header).cast::<i32>().read_unaligned();
                return Ok(Some(Fd(fd)));
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok(None)
}

pub fn become_subreaper() -> Result<()> {
    sys!(libc::SYS_prctl, libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0).map(drop)
}

/// A signal set as the kernel takes it.
pub fn signal_set(signals: &[i32]) -> u64 {
    signals
        .iter()
        .fold(0, |set, signal| set | 1 << (signal - 1))
}

pub fn set_signal_mask(how: i32, set: u64) -> Result<()> {
    sys!(
        libc::SYS_rt_sigprocmask,
        how,
        &raw const set,
        0,
        core::mem::size_of::<u64>()
    )
    .map(drop)
}

/// The kernel's `struct sigaction` (not the C library's).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

pub fn ignore_signal(signal: i32) -> Result<()> {
    let action = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    sys!(
        libc::SYS_rt_sigaction,
        signal,
        &raw const action,
        0,
        core::mem::size_of::<u64>()
    )
    .map(drop)
}

/// A non-blocking signalfd for the (blocked) signals in `set`.
pub fn signalfd(set: u64) -> Result<Fd> {
    sys!(
        libc::SYS_signalfd4,
        -1i32,
        &raw const set,
        core::mem::size_of::<u64>(),
        libc::SFD_NONBLOCK | libc::SFD_CLOEXEC
    )
    .map(|fd| Fd(fd as i32))
}

/// How a reaped child ended.
pub enum ChildExit {
    Exited(i32),
    Signaled(i32),
}

/// Reaps child `pid` (-1: any), without waiting when `block` is false;
/// None when no child was ready.
pub fn wait(pid: i32, block: bool) -> Result<Option<(i32, ChildExit)>> {
    let mut status = 0i32;
    let options = if block { 0 } else { libc::WNOHANG };
    let reaped = sys!(libc::SYS_wait4, pid, &raw mut status, options, 0)? as i32;
    if reaped == 0 {
        return Ok(None);
    }
    let exit = if status & 0x7f == 0 {
        ChildExit::Exited((status >> 8) & 0xff)
    } else {
        ChildExit::Signaled(status & 0x7f)
    };
    Ok(Some((reaped, exit)))
}

/// Forks; Ok(0) in the child.
///
/// # Safety
/// The child may only make system calls until it executes or exits.
pub unsafe fn fork() -> Result<i32> {
    sys!(libc::SYS_fork).map(|pid| pid as i32)
}

/// Executes the program open at `program` (an O_PATH descriptor).
pub fn execute(program: i32, argv: &[*const u8], envp: *const *const u8) -> Errno {
    let empty = b"\0";
    match sys!(
        libc::SYS_execveat,
        program,
        empty.as_ptr(),
        argv.as_ptr(),
        envp,
        libc::AT_EMPTY_PATH
    ) {
        Ok(_) => Errno::INVAL,
        Err(e) => e,
    }
}

pub fn exit(code: i32) -> ! {
    loop {
        let _ = sys!(libc::SYS_exit_group, code);
    }
}

/// Ends the process with SIGABRT, as an abort does.
#[cfg(panic = "abort")]
pub fn abort() -> ! {
    let _ = set_signal_mask(libc::SIG_UNBLOCK, signal_set(&[libc::SIGABRT]));
    if let Ok(pid) = sys!(libc::SYS_getpid) {
        let _ = sys!(libc::SYS_kill, pid, libc::SIGABRT);
    }
    exit(134)
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match sys!(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &raw mut time) {
        Ok(_) => time
            .tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(time.tv_nsec),
        Err(_) => 0,
    }
}

pub fn set_window_size(fd: i32, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = sys!(libc::SYS_ioctl, fd, libc::TIOCSWINSZ, &raw const size);
}

/// Anonymous memory for the allocator.
pub fn map_memory(len: usize) -> Option<*mut u8> {
    sys!(
        libc::SYS_mmap,
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1i32,
        0
    )
    .ok()
    .map(|address| address as *mut u8)
}

/// # Safety
/// `address..address + len` must be a mapping nothing uses any more.
pub unsafe fn unmap_memory(address: *mut u8, len: usize) {
    let _ = sys!(libc::SYS_munmap, address, len);
}
