//! Security properties: no host file descriptors leak into containers, and
//! a container cannot reach the runtime's own binary through
//! /proc/<pid>/exe of a runtime process inside its PID namespace
//! (CVE-2019-5736). Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::runtime::{Runtime, TIMEOUT};
use berth_tests::tempdir::TempDir;
use berth_tests::wait_for;
use sha2::{Digest, Sha256};
use std::os::fd::AsRawFd;

/// Opens a file descriptor without close-on-exec, so every child this test
/// spawns (the runtime) inherits it.
fn inheritable_fd() -> std::fs::File {
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let fd = file.as_raw_fd();
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) },
        0
    );
    file
}

fn fds_of(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn host_fds_do_not_leak_into_init_or_exec() {
    let leaked = inheritable_fd();
    let runtime = Runtime::from_env().unwrap();
    // The shell's descriptors, not those of ls (the trailing `:` keeps the
    // shell from exec'ing ls in its place).
    let list_fds = "ls /proc/$$/fd; :";
    let bundle = Bundle::busybox(Spec::new().shell(list_fds)).unwrap();
    assert_eq!(
        fds_of(runtime.run_ok(&bundle).unwrap().as_bytes()),
        ["0", "1", "2"]
    );

    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let init_fds = std::fs::read_dir(format!("/proc/{}/fd", container.pid().unwrap())).unwrap();
    let mut init_fds: Vec<String> = init_fds
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    init_fds.sort();
    let links: Vec<_> = init_fds
        .iter()
        .map(|fd| std::fs::read_link(format!("/proc/{}/fd/{fd}", container.pid().unwrap())))
        .collect();
    assert_eq!(init_fds, ["0", "1", "2"], "{links:?}");
    let out = container.exec(&["sh", "-c", list_fds]).unwrap();
    assert_eq!(fds_of(&out.stdout), ["0", "1", "2"], "{out:?}");
    drop(leaked);
}

fn sha256_of(path: &std::path::Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The PID of host process `pid` in the innermost PID namespace it is in.
fn innermost_pid(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap();
    nspid.split_whitespace().last().unwrap().to_string()
}

#[test]
fn runtime_binary_cannot_be_written_through_proc_pid_exe() {
    // Drive a private copy of the runtime so that a vulnerable runtime can
    // only damage the copy.
    let copy_dir = TempDir::new("berth-runtime-copy").unwrap();
    let binary = copy_dir.join("runtime");
    std::fs::copy(berth_tests::bins::runtime_binary(), &binary).unwrap();
    let before = sha256_of(&binary);
    let runtime = Runtime::new(binary.clone()).unwrap();

    // The victim's PID namespace; the attacker runs in it via exec.
    let victim = Bundle::busybox(Spec::sleeper()).unwrap();
    let victim_container = runtime.start(&victim).unwrap();
    victim_container.wait_stdout("up").unwrap();
    let pid_ns = format!("/proc/{}/ns/pid", victim_container.pid().unwrap());

    // A created container's init is the runtime's own process, waiting in
    // the victim's PID namespace for `start`.
    let spec = Spec::new().namespace_path("pid", std::path::Path::new(&pid_ns));
    let waiting = Bundle::busybox(spec.shell("echo started; exec sleep 1000")).unwrap();
    let waiting_container = runtime.create(&waiting).unwrap();
    let target = innermost_pid(waiting_container.pid().unwrap());

    // The attacker holds the runtime's /proc/<pid>/exe open, and after the
    // runtime process has exec'd the user program, tries to reopen it for
    // writing. CAP_SYS_PTRACE lifts the ptrace access check so that only
    // the runtime's own protection stands in the way.
    let attack = format!(
        "exec 3< /proc/{target}/exe || exit 0; echo opened; \
         while [ ! -e /tmp/go ]; do usleep 10000; done; \
         if (echo pwned >> /proc/self/fd/3) 2>/dev/null; then echo WROTE; else echo refused; fi"
    );
    let out_path = victim.path().join("attack.out");
    let attacker = runtime
        .command(&[
            "exec",
            "--cap",
            "CAP_SYS_PTRACE",
            victim.id(),
            "sh",
            "-c",
            &attack,
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut attacker = berth_tests::child::ChildGuard::new(attacker);
    let read_out = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let opened = wait_for(TIMEOUT, "the attacker to open or give up", || {
        if read_out().contains("opened") {
            return Some(true);
        }
        attacker.try_wait().unwrap().map(|_| false)
    })
    .unwrap();

    // Refusing the open is a pass too (e.g. a runtime that keeps its init
    // undumpable even for CAP_SYS_PTRACE holders).
    eprintln!("attacker opened /proc/{target}/exe: {opened}");
    if opened {
        runtime.ok(&["start", waiting.id()]).unwrap();
        waiting_container.wait_stdout("started").unwrap();
        std::fs::write(victim.rootfs().join("tmp/go"), "").unwrap();
        let out = wait_for(TIMEOUT, "the attack to finish", || {
            let out = read_out();
            (out.contains("WROTE") || out.contains("refused")).then_some(out)
        })
        .unwrap();
        eprintln!("attack outcome: {out}");
        assert!(
            out.contains("refused"),
            "the runtime binary was writable: {out}"
        );
    }
    assert_eq!(sha256_of(&binary), before, "the runtime binary changed");
}
