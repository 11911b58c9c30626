//! The runtime CLI as containerd's shim drives it: terminals through
//! `--console-socket`, errors in a JSON `--log`, `exec --process <file>
//! --detach --pid-file`, `kill --all`. Root.

use berth_tests::bundle::{Bundle, DEFAULT_PATH, Spec};
use berth_tests::console::ConsoleSocket;
use berth_tests::runtime::{Runtime, TIMEOUT};
use berth_tests::{cgroup, wait_for};
use serde_json::{Value, json};
use std::io::Read;

/// Reads what the container writes to its terminal until `marker` shows up;
/// fails after [`TIMEOUT`] with what was seen.
fn read_terminal(master: std::os::fd::OwnedFd, marker: &str) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut terminal = std::fs::File::from(master);
        let mut buffer = [0u8; 4096];
        // read fails with EIO once the container side of the pty is closed.
        while let Ok(n @ 1..) = terminal.read(&mut buffer) {
            if tx.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!(
                "{marker:?} not seen on the terminal: {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn terminal_master_is_sent_over_the_console_socket() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new()
        .set("/process/terminal", true)
        .shell("tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; exec sleep 1000");
    let bundle = Bundle::busybox(spec).unwrap();
    let console = ConsoleSocket::bind(&bundle.path().join("console.sock")).unwrap();
    let socket = console.path().to_str().unwrap().to_string();
    let container = runtime
        .create_with(&bundle, &["--console-socket", &socket])
        .unwrap();
    let master = console.master(TIMEOUT).unwrap();
    runtime.ok(&["start", container.id()]).unwrap();
    let out = read_terminal(master, "all-tty");
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("all-tty\r\n"), "{out:?}");
}

#[test]
fn json_log_records_the_error_of_a_failed_create() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new().set("/root/path", "missing-rootfs")).unwrap();
    let log = bundle.path().join("runtime-log.json");
    let log_arg = log.to_str().unwrap();
    let bundle_arg = bundle.path().to_str().unwrap();
    let out = runtime
        .output(&[
            "--log",
            log_arg,
            "--log-format",
            "json",
            "create",
            "--bundle",
            bundle_arg,
            bundle.id(),
        ])
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .filter(|entry| entry["level"] == "error")
        .collect();
    assert!(
        errors.iter().any(|e| e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("missing-rootfs")),
        "{text}"
    );
}

#[test]
fn exec_of_a_process_file_detached_writes_its_pid_file() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();

    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", "echo \"$X $(id -u) $(pwd)\"; exec sleep 1000"],
        "env": [DEFAULT_PATH, "X=from-process-json"],
        "cwd": "/home/app"
    });
    let process_file = bundle.path().join("process.json");
    std::fs::write(&process_file, process.to_string()).unwrap();
    let pid_file = bundle.path().join("exec.pid");
    let out_file = bundle.path().join("exec.out");
    let status = runtime
        .command(&[
            "exec",
            "--process",
            process_file.to_str().unwrap(),
            "--detach",
            "--pid-file",
        ])
        .arg(&pid_file)
        .arg(container.id())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());

    // --detach returns once the process runs; the pid file names it.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let procs = cgroup::read("pids", &bundle.cgroups_path(), "cgroup.procs").unwrap();
    assert!(
        procs.lines().any(|p| p == pid.to_string()),
        "{pid} not in {procs}"
    );
    let out = wait_for(TIMEOUT, "the exec'd process's output", || {
        let out = std::fs::read_to_string(&out_file).unwrap_or_default();
        out.ends_with('\n').then_some(out)
    })
    .unwrap();
    assert_eq!(out, "from-process-json 1000 /home/app\n");
}

#[test]
fn kill_all_signals_every_process_of_the_container() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new().shell("sleep 1000 & sleep 1001 & echo up; exec sleep 1002");
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let procs = || cgroup::read("pids", &bundle.cgroups_path(), "cgroup.procs").unwrap_or_default();
    assert_eq!(procs().lines().count(), 3);

    runtime
        .ok(&["kill", "--all", container.id(), "KILL"])
        .unwrap();
    wait_for(TIMEOUT, "every process to be gone", || {
        procs().is_empty().then_some(())
    })
    .unwrap();
    container.wait_status("stopped").unwrap();
}

#[test]
fn exec_with_a_terminal_sends_its_master_over_the_console_socket() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();

    let console = ConsoleSocket::bind(&bundle.path().join("exec-console.sock")).unwrap();
    let socket = console.path().to_str().unwrap().to_string();
    let pid_file = bundle.path().join("exec.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let options = [
        "--tty",
        "--console-socket",
        &socket,
        "--detach",
        "--pid-file",
        pid_arg,
    ];
    let out = container
        .exec_with(
            &options,
            &[
                "sh",
                "-c",
                "tty; [ -t 0 ] && echo exec-tty; exec sleep 1000",
            ],
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let terminal = read_terminal(console.master(TIMEOUT).unwrap(), "exec-tty");
    assert!(terminal.contains("/dev/pts/"), "{terminal:?}");
    assert!(
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse::<i32>()
            .is_ok()
    );
}

#[test]
fn no_pivot_creates_a_working_container() {
    let runtime = Runtime::from_env().unwrap();
    let bundle =
        Bundle::busybox(Spec::new().shell("cat /etc/hostname; echo up; exec sleep 1000")).unwrap();
    let container = runtime.create_with(&bundle, &["--no-pivot"]).unwrap();
    runtime.ok(&["start", container.id()]).unwrap();
    assert_eq!(container.wait_stdout("up").unwrap(), "berth-test\nup\n");
}
