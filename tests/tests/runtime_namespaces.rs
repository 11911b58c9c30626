//! Each namespace of the spec is observable from inside a busybox container.
//! Root; the runtime is `BERTH_TEST_RUNTIME` or the workspace's berth-runtime.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::image::{Layer, busybox_layer};
use berth_tests::netns::NetNs;
use berth_tests::runtime::Runtime;

const NAMESPACES: &[(&str, &str)] = &[
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mount", "mnt"),
    ("cgroup", "cgroup"),
    ("user", "user"),
];

fn host_ns(proc_name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{proc_name}"))
        .unwrap()
        .display()
        .to_string()
}

/// `readlink /proc/self/ns/<name>` for every namespace, run inside.
fn container_ns(runtime: &Runtime, spec: Spec) -> Vec<String> {
    let script: String = NAMESPACES
        .iter()
        .map(|(_, name)| format!("readlink /proc/self/ns/{name};"))
        .collect();
    let bundle = Bundle::busybox(spec.shell(&script)).unwrap();
    runtime
        .run_ok(&bundle)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn spec_namespaces_are_new_and_the_others_are_the_hosts() {
    let runtime = Runtime::from_env().unwrap();
    // Default spec: pid, network, ipc, uts, mount; no cgroup, no user.
    let inside = container_ns(&runtime, Spec::new());
    for ((kind, name), link) in NAMESPACES.iter().zip(&inside) {
        let shared = matches!(*kind, "cgroup" | "user");
        assert_eq!(
            link == &host_ns(name),
            shared,
            "{kind}: inside {link}, host {}",
            host_ns(name)
        );
    }

    let inside = container_ns(
        &runtime,
        Spec::new().without_namespace("ipc").namespace("cgroup"),
    );
    assert_eq!(
        inside[2],
        host_ns("ipc"),
        "ipc must be shared when not in the spec"
    );
    assert_ne!(inside[5], host_ns("cgroup"), "cgroup namespace requested");
}

#[test]
fn pid_namespace_shows_init_as_pid_1_and_hides_host_processes() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new().shell("echo $$; ls /proc | grep '^[0-9]*$'")).unwrap();
    let out = runtime.run_ok(&bundle).unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    let pids: Vec<u32> = lines.map(|l| l.parse().unwrap()).collect();
    // sh (1) and the ls it forked; no host process such as this test.
    assert!(pids.contains(&1), "{pids:?}");
    assert!(pids.len() <= 3, "host processes visible: {pids:?}");
}

#[test]
fn network_namespace_has_only_loopback() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new().shell("ls /sys/class/net")).unwrap();
    assert_eq!(
        runtime
            .run_ok(&bundle)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo"]
    );
}

#[test]
fn network_namespace_path_joins_an_existing_namespace() {
    let netns = NetNs::new().unwrap();
    let status = netns
        .command("ip")
        .args([
            "link", "add", "berthv0", "type", "veth", "peer", "name", "berthv1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new()
        .namespace_path("network", &netns.path())
        .shell("ls /sys/class/net");
    let bundle = Bundle::busybox(spec).unwrap();
    let out = runtime.run_ok(&bundle).unwrap();
    assert!(out.split_whitespace().any(|n| n == "berthv0"), "{out}");
}

#[test]
fn uts_namespace_has_the_spec_hostname() {
    let runtime = Runtime::from_env().unwrap();
    let name = berth_tests::unique_name("host");
    let bundle = Bundle::busybox(Spec::new().hostname(&name).shell("hostname")).unwrap();
    assert_eq!(runtime.run_ok(&bundle).unwrap().trim(), name);
    assert_ne!(nix::unistd::gethostname().unwrap().to_string_lossy(), name);
}

#[test]
fn cgroup_namespace_shows_the_container_cgroup_as_root() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(
        Spec::new()
            .namespace("cgroup")
            .shell("cat /proc/self/cgroup"),
    )
    .unwrap();
    let out = runtime.run_ok(&bundle).unwrap();
    for line in out.lines() {
        assert!(
            line.ends_with(":/"),
            "not the namespace root: {line}\n{out}"
        );
    }

    let bundle = Bundle::busybox(Spec::new().shell("cat /proc/self/cgroup")).unwrap();
    let out = runtime.run_ok(&bundle).unwrap();
    let memory = out.lines().find(|l| l.contains(":memory:")).unwrap();
    assert!(memory.ends_with(&bundle.cgroups_path()), "{out}");
}

#[test]
fn ipc_namespace_hides_host_message_queues() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new().shell("cat /proc/sysvipc/msg")).unwrap();
    // A SysV queue of the host IPC namespace, removed before any assertion.
    let key = 0x6265_7274 ^ (std::process::id() as i32);
    let queue = unsafe { libc::msgget(key, libc::IPC_CREAT | 0o600) };
    assert!(queue >= 0);
    let host = std::fs::read_to_string("/proc/sysvipc/msg");
    let inside = runtime.run_ok(&bundle);
    unsafe { libc::msgctl(queue, libc::IPC_RMID, std::ptr::null_mut()) };

    let has_queue = |table: &str| {
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&key.to_string()))
    };
    assert!(has_queue(&host.unwrap()), "the host sees its queue");
    let inside = inside.unwrap();
    assert!(!has_queue(&inside), "{inside}");
    assert_eq!(
        inside.lines().count(),
        1,
        "only the header expected: {inside}"
    );
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    const HOST_BASE: u32 = 200_000;
    let runtime = Runtime::from_env().unwrap();
    let files = Layer::new()
        .file_owned("/owned-by-5", "x", 0o644, HOST_BASE + 5, HOST_BASE + 7)
        .file("/owned-by-host-root", "x", 0o644);
    let spec = Spec::new()
        .namespace("user")
        .id_mapping(HOST_BASE, 65536)
        .shell(
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; \
         stat -c '%u:%g' /owned-by-5 /owned-by-host-root; echo made > /tmp/new; \
         echo ready; exec sleep 1000",
        );
    let bundle = Bundle::from_layers(&[busybox_layer().unwrap(), files], spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    let out = container.wait_stdout("ready").unwrap();
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "200000", "65536"], "uid_map: {out}");
    assert_eq!(lines[1], ["0", "200000", "65536"], "gid_map: {out}");
    assert_eq!(lines[2], ["0"], "id -u: {out}");
    assert_eq!(lines[3], ["5:7"], "{out}");
    // Unmapped host ids show as the overflow id.
    assert_eq!(lines[4], ["65534:65534"], "{out}");

    let status = std::fs::read_to_string(format!("/proc/{}/status", container.pid().unwrap()));
    let uid_line = status
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "200000"),
        "{uid_line}"
    );
    // Root inside owns what it creates as the mapped host uid.
    use std::os::unix::fs::MetadataExt;
    let created = std::fs::metadata(bundle.rootfs().join("tmp/new")).unwrap();
    assert_eq!(created.uid(), HOST_BASE);
}

#[test]
fn a_container_joins_the_namespaces_of_a_running_sandbox() {
    let runtime = Runtime::from_env().unwrap();
    let sandbox = Bundle::busybox(Spec::sleeper().hostname("sandbox-host")).unwrap();
    let sandbox_container = runtime.start(&sandbox).unwrap();
    sandbox_container.wait_stdout("up").unwrap();
    let sandbox_pid = sandbox_container.pid().unwrap();
    let ns_path = |name: &str| std::path::PathBuf::from(format!("/proc/{sandbox_pid}/ns/{name}"));

    let spec = Spec::new()
        // A hostname would be set in the joined UTS namespace, the sandbox's.
        .remove("/hostname")
        .namespace_path("network", &ns_path("net"))
        .namespace_path("ipc", &ns_path("ipc"))
        .namespace_path("uts", &ns_path("uts"))
        .namespace_path("pid", &ns_path("pid"))
        .shell("hostname; for ns in net ipc uts pid; do readlink /proc/self/ns/$ns; done; ps -o pid,args");
    let member = Bundle::busybox(spec).unwrap();
    let out = runtime.run_ok(&member).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "sandbox-host", "{out}");
    for (name, link) in ["net", "ipc", "uts", "pid"].iter().zip(&lines[1..5]) {
        let of_sandbox = std::fs::read_link(ns_path(name)).unwrap();
        assert_eq!(*link, of_sandbox.to_str().unwrap(), "{name}");
    }
    // The sandbox's init is PID 1 of the shared PID namespace.
    assert!(
        lines[5..]
            .iter()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{out}"
    );
}

/// Seconds since boot as the first field of /proc/uptime.
fn uptime_of(text: &str) -> f64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn time_namespace_shifts_the_boot_clock_by_the_spec_offset() {
    const OFFSET: f64 = 10.0 * 86400.0;
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new()
        .namespace("time")
        .set(
            "/linux/timeOffsets",
            serde_json::json!({
                "boottime": {"secs": OFFSET as i64, "nanosecs": 0},
                "monotonic": {"secs": 3600}
            }),
        )
        .shell("cat /proc/uptime; readlink /proc/self/ns/time");
    let bundle = Bundle::busybox(spec).unwrap();
    let before = uptime_of(&std::fs::read_to_string("/proc/uptime").unwrap());
    let out = runtime.run_ok(&bundle).unwrap();
    let after = uptime_of(&std::fs::read_to_string("/proc/uptime").unwrap());
    let mut lines = out.lines();
    let inside = uptime_of(lines.next().unwrap()) - OFFSET;
    assert!(
        before <= inside + 0.01 && inside <= after + 0.01,
        "container uptime minus the offset {inside} is not within the host's {before}..{after}"
    );
    assert_ne!(lines.next(), Some(host_ns("time").as_str()), "{out}");
}
