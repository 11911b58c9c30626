//! Resource limits of `linux.resources` enforced by cgroups (v1 on the test
//! machines): OOM kill, the pids limit, cpu values written. Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::cgroup;
use berth_tests::runtime::Runtime;

const MIB: i64 = 1024 * 1024;

/// `dd` allocates and fills a 256 MiB buffer: far over a 32 MiB limit.
fn memory_hog() -> Spec {
    Spec::new().memory_limit(32 * MIB).args(&[
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=256M",
        "count=1",
    ])
}

#[test]
fn memory_hog_exits_by_sigkill() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(memory_hog()).unwrap();
    let out = runtime.run(&bundle).unwrap();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
}

#[test]
fn memory_hog_is_counted_as_an_oom_kill_in_its_cgroup() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(memory_hog()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_status("stopped").unwrap();
    let path = bundle.cgroups_path();
    let oom_control = cgroup::read("memory", &path, "memory.oom_control").unwrap();
    let kills = oom_control
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "));
    assert!(
        kills.is_some_and(|n| n.parse::<u64>().unwrap() >= 1),
        "{oom_control}"
    );
    assert_eq!(
        cgroup::read("memory", &path, "memory.limit_in_bytes"),
        Some((32 * MIB).to_string())
    );
    assert_ne!(
        cgroup::read("memory", &path, "memory.failcnt").as_deref(),
        Some("0")
    );
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let runtime = Runtime::from_env().unwrap();
    // The subshell forks until refused (and then gives up); init survives.
    let spec = Spec::new().pids_limit(8).shell(
        "(i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done); \
         echo spawned; exec sleep 1000",
    );
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("spawned").unwrap();
    let path = bundle.cgroups_path();
    assert_eq!(
        cgroup::read("pids", &path, "pids.max").as_deref(),
        Some("8")
    );
    let current: u32 = cgroup::read("pids", &path, "pids.current")
        .unwrap()
        .parse()
        .unwrap();
    // Init and the sleeps that fit: the subshell that held the last slot has exited.
    assert!((2..=8).contains(&current), "pids.current {current}");
    let events = cgroup::read("pids", &path, "pids.events").unwrap();
    let refused: u64 = events.strip_prefix("max ").unwrap().parse().unwrap();
    assert!(refused >= 1, "{events}");
    let stderr = std::fs::read_to_string(bundle.path().join("stderr.log")).unwrap();
    assert!(stderr.contains("can't fork"), "{stderr}");
}

#[test]
fn cpu_and_memory_values_are_written_to_the_cgroup() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::sleeper()
        .cpu(512, 50_000, 100_000)
        .memory_limit(64 * MIB)
        .set("/linux/resources/cpu/cpus", "0")
        .set("/linux/resources/cpu/mems", "0")
        .set("/linux/resources/memory/reservation", 32 * MIB)
        .set("/linux/resources/memory/swap", 96 * MIB)
        .set("/linux/resources/memory/swappiness", 10)
        .set("/linux/resources/pids/limit", 321);
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let path = bundle.cgroups_path();
    let read = |controller: &str, file: &str| cgroup::read(controller, &path, file);
    assert_eq!(read("cpu", "cpu.shares").as_deref(), Some("512"));
    assert_eq!(read("cpu", "cpu.cfs_quota_us").as_deref(), Some("50000"));
    assert_eq!(read("cpu", "cpu.cfs_period_us").as_deref(), Some("100000"));
    assert_eq!(read("cpuset", "cpuset.cpus").as_deref(), Some("0"));
    assert_eq!(read("cpuset", "cpuset.mems").as_deref(), Some("0"));
    let bytes = |mib: i64| Some((mib * MIB).to_string());
    assert_eq!(read("memory", "memory.limit_in_bytes"), bytes(64));
    assert_eq!(read("memory", "memory.soft_limit_in_bytes"), bytes(32));
    // The spec's swap is memory + swap, as memsw is in cgroup v1.
    assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), bytes(96));
    assert_eq!(read("memory", "memory.swappiness").as_deref(), Some("10"));
    assert_eq!(read("pids", "pids.max").as_deref(), Some("321"));
    let pid = container.pid().unwrap().to_string();
    for controller in cgroup::CONTROLLERS {
        let procs = read(controller, "cgroup.procs").unwrap_or_default();
        assert!(
            procs.lines().any(|p| p == pid),
            "init not in the {controller} cgroup"
        );
    }
}
