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
