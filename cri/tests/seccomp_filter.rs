//! Compiled filters loaded into real forked processes: the child sees the filter's
//! verdicts, the test process is never filtered itself.

use std::ffi::CString;

use berth_cri::oci::seccomp::{CompiledFilter, compile, runtime_default_profile};
use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};

/// Runs `probe` in a forked child after installing `filter`; returns the child's exit
/// code. Between fork and _exit the child only makes raw syscalls.
fn in_filtered_child(filter: &CompiledFilter, probe: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only calls async-signal-safe functions before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let code = match filter.install() {
            Ok(()) => probe(),
            Err(_) => 100,
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status:#x}"
    );
    libc::WEXITSTATUS(status)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// 0 when the syscall succeeded, else its errno.
fn result(ret: libc::c_long) -> i32 {
    if ret < 0 { errno() } else { 0 }
}

fn temp_path(name: &str) -> CString {
    let path = std::env::temp_dir().join(format!("berth-seccomp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir(&path);
    CString::new(path.into_os_string().into_encoded_bytes()).unwrap()
}

#[test]
fn denied_mkdir_fails_with_eperm_while_other_syscalls_work() {
    let spec = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let filter = compile(&spec).unwrap();
    let dir = temp_path("mkdir");
    let dir_ptr = dir.as_ptr();
    let code = in_filtered_child(&filter, || {
        let mkdir =
            result(unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, dir_ptr, 0o755) });
        if mkdir != libc::EPERM {
            return 10 + mkdir.min(50);
        }
        // Unfiltered syscalls keep working.
        let devnull = c"/dev/null";
        let fd = unsafe { libc::open(devnull.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return 70;
        }
        unsafe { libc::close(fd) };
        0
    });
    assert_eq!(code, 0);
    assert!(!std::path::Path::new(dir.to_str().unwrap()).exists());
}

#[test]
fn custom_errno_is_returned() {
    let spec = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["getcwd".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::ENOTSUP as u32)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let filter = compile(&spec).unwrap();
    let code = in_filtered_child(&filter, || {
        let mut buf = [0u8; 256];
        result(unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) })
    });
    assert_eq!(code, libc::ENOTSUP);
}

#[test]
fn runtime_default_blocks_privileged_calls_and_allows_normal_ones() {
    let filter = compile(&runtime_default_profile()).unwrap();
    let target = temp_path("mount-target");
    let target_ptr = target.as_ptr();
    let code = in_filtered_child(&filter, || {
        // (check number, errno seen, errno expected); errno is read right after each call.
        let checks = [
            (
                1,
                result(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) }),
                libc::EPERM,
            ),
            (
                2,
                result(unsafe {
                    libc::syscall(
                        libc::SYS_mount,
                        c"none".as_ptr(),
                        target_ptr,
                        c"tmpfs".as_ptr(),
                        0,
                        0,
                    )
                }),
                libc::EPERM,
            ),
            (
                3,
                result(unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) }),
                libc::EPERM,
            ),
            (
                4,
                result(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) }),
                libc::ENOSYS,
            ),
        ];
        for (i, seen, expected) in checks {
            if seen != expected {
                return i;
            }
        }
        // Ordinary calls still work.
        if unsafe { libc::getpid() } <= 0 {
            return 20;
        }
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return 21;
        }
        // A plain fork (clone without namespace flags) is allowed...
        let child = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if child == 0 {
            unsafe { libc::_exit(0) };
        }
        if child < 0 {
            return 22;
        }
        let mut status = 0;
        unsafe { libc::waitpid(child as i32, &mut status, 0) };
        // ...but clone with CLONE_NEWNS is not.
        let ns_clone = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD | libc::CLONE_NEWNS,
                0,
                0,
                0,
                0,
            )
        };
        if ns_clone == 0 {
            unsafe { libc::_exit(0) };
        }
        if result(ns_clone) != libc::EPERM {
            return 23;
        }
        0
    });
    assert_eq!(code, 0);
}

#[test]
fn kill_process_action_kills_the_child() {
    let spec = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["getppid".to_string()])
                .action(LinuxSeccompAction::ScmpActKillProcess)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let filter = compile(&spec).unwrap();
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        if filter.install().is_err() {
            unsafe { libc::_exit(100) };
        }
        unsafe { libc::syscall(libc::SYS_getppid) };
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFSIGNALED(status), "status {status:#x}");
    assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
}

#[test]
fn notify_action_hands_the_syscall_to_the_listener() {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};

    let mut spec = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    spec.set_listener_path(Some("/run/berth-test-agent.sock".into()));
    let filter = compile(&spec).unwrap();
    assert!(filter.needs_listener());
    let dir = temp_path("notify");
    let dir_ptr = dir.as_ptr();

    let mut pipe = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let Ok(Some(listener)) = filter.install_with_listener() else {
            unsafe { libc::_exit(100) };
        };
        // Tell the parent which fd number to take over, then make the call it answers.
        let bytes = listener.to_ne_bytes();
        unsafe { libc::write(pipe[1], bytes.as_ptr().cast(), bytes.len()) };
        let ret = unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, dir_ptr, 0o755) };
        unsafe { libc::_exit(result(ret)) };
    }
    unsafe { libc::close(pipe[1]) };
    let mut bytes = [0u8; 4];
    assert_eq!(
        unsafe { libc::read(pipe[0], bytes.as_mut_ptr().cast(), 4) },
        4
    );
    unsafe { libc::close(pipe[0]) };
    let child_fd = i32::from_ne_bytes(bytes);
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let listener = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, child_fd, 0) } as i32;
    assert!(
        listener >= 0,
        "pidfd_getfd: {}",
        std::io::Error::last_os_error()
    );

    let req = ScmpNotifReq::receive(listener).unwrap();
    assert_eq!(req.pid, pid as u32);
    assert_eq!(req.data.syscall, ScmpSyscall::from_name("mkdirat").unwrap());
    ScmpNotifResp::new_error(req.id, -libc::EROFS, ScmpNotifRespFlags::empty())
        .respond(listener)
        .unwrap();

    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    unsafe {
        libc::close(listener);
        libc::close(pidfd);
    }
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        libc::EROFS,
        "the agent's answer reached the caller"
    );
    assert!(!std::path::Path::new(dir.to_str().unwrap()).exists());
}

#[test]
fn runtime_default_answers_enosys_to_syscalls_newer_than_the_profile() {
    let filter = compile(&runtime_default_profile()).unwrap();
    let code = in_filtered_child(&filter, || {
        // Far beyond any syscall the profile names: looks like an older kernel.
        let unknown = result(unsafe { libc::syscall(1000, 0, 0, 0) });
        // Known to the profile's era but not allowed: plain EPERM.
        let denied = result(unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) });
        match (unknown, denied) {
            (libc::ENOSYS, libc::EPERM) => 0,
            (libc::ENOSYS, _) => 2,
            _ => 1,
        }
    });
    assert_eq!(code, 0);
}
