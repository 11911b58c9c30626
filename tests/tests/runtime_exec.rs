//! `exec`: the process joins the namespaces and cgroup of the container's
//! init and runs with the spec's process settings unless overridden. Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::runtime::Runtime;

const NAMESPACE_NAMES: &[&str] = &["pid", "net", "ipc", "uts", "mnt", "cgroup"];

#[test]
fn exec_joins_the_namespaces_and_cgroup_of_init() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper().namespace("cgroup")).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let init = container.pid().unwrap();

    let script: String = NAMESPACE_NAMES
        .iter()
        .map(|ns| format!("readlink /proc/self/ns/{ns};"))
        .collect();
    let out = container
        .exec(&["sh", "-c", &format!("{script} cat /proc/self/cgroup")])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    for (ns, inside) in NAMESPACE_NAMES.iter().zip(&lines) {
        let of_init = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap();
        assert_eq!(
            *inside,
            of_init.to_str().unwrap(),
            "{ns} namespace differs from init's"
        );
    }
    // In init's cgroup, which the cgroup namespace shows as its root.
    for line in &lines[NAMESPACE_NAMES.len()..] {
        assert!(line.ends_with(":/"), "{stdout}");
    }
}

#[test]
fn exec_runs_with_the_spec_environment_and_returns_its_exit_code() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper().env("FROM_SPEC", "yes").cwd("/tmp")).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let out = container
        .exec(&["sh", "-c", "echo $FROM_SPEC $(pwd); exit 7"])
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "yes /tmp\n");

    let options = ["--env", "EXTRA=1", "--cwd", "/"];
    let out = container.exec_with(&options, &["sh", "-c", "echo $EXTRA $(pwd)"]);
    let out = out.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 /\n", "{out:?}");
}

#[test]
fn exec_options_override_user_and_capabilities() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper().capabilities(&["CAP_KILL"])).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let script = ["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"];

    let out = container
        .exec_with(&["--user", "1000:1001"], &script)
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().take(2).collect::<Vec<_>>(),
        ["1000", "1001"],
        "{out:?}"
    );

    let out = container
        .exec_with(&["--cap", "CAP_CHOWN"], &script)
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // CAP_KILL from the spec plus the added CAP_CHOWN.
    assert!(stdout.contains("CapEff:\t0000000000000021"), "{out:?}");
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    container.kill("KILL").unwrap();
    container.wait_status("stopped").unwrap();
    let out = container.exec(&["true"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped"),
        "{out:?}"
    );
}
