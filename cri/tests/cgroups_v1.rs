//! Root integration tests of the cgroupfs driver on the host's cgroup v1 hierarchies:
//! real cgroups with real processes in them. Each test uses its own uniquely named
//! cgroup and removes it (and kills its processes) also when it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_cri::oci::cgroups::{CgroupDriver, CgroupError, CgroupManager, new_manager};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder,
};

fn is_v1_host() -> bool {
    Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

mod cgroups_common;

type TestCgroup = cgroups_common::TestCgroup<Box<dyn CgroupManager>>;

/// The manager for a unique cgroup, destroyed on drop after its processes are killed.
fn test_cgroup(test: &str) -> TestCgroup {
    let name = format!("berth-test-{test}-{}", std::process::id());
    let manager = new_manager(Some(&format!("/{name}")), "unused", CgroupDriver::Cgroupfs).unwrap();
    TestCgroup::new(manager, Vec::new())
}

/// The cgroup's directory in one v1 hierarchy, where the kernel shows it (not where
/// the manager says it is).
fn dir(cg: &TestCgroup, controller: &str) -> PathBuf {
    let memory_dir = &cg.manager.paths()["memory"];
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(memory_dir.file_name().unwrap())
}

fn read(cg: &TestCgroup, controller: &str, file: &str) -> String {
    std::fs::read_to_string(dir(cg, controller).join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// Starts `argv` with stdout piped and moves it into the cgroup; returns its pid.
fn spawn(cg: &mut TestCgroup, argv: &[&str], stdin: Stdio) -> i32 {
    cg.spawn(
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(stdin)
            .stdout(Stdio::piped()),
    )
}

fn process_state(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The blkio weight file of this kernel: CFQ's, BFQ's, or none when no block
/// device uses a proportional-weight scheduler (the cgroup then has no weight file).
fn host_blkio_weight_file() -> Option<&'static str> {
    ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| Path::new("/sys/fs/cgroup/blkio").join(f).exists())
}

fn limits() -> LinuxResources {
    let mut block_io = LinuxBlockIoBuilder::default();
    if host_blkio_weight_file().is_some() {
        block_io = block_io.weight(300u16);
    }
    let loop0_read_limit = LinuxThrottleDeviceBuilder::default()
        .major(7i64)
        .minor(0i64)
        .rate(1_048_576u64)
        .build()
        .unwrap();
    LinuxResourcesBuilder::default()
        .block_io(
            block_io
                .throttle_read_bps_device(vec![loop0_read_limit])
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(128i64 << 20)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(32i64).build().unwrap())
        .build()
        .unwrap()
}

#[test]
fn limits_are_applied_updated_and_removed() {
    if !is_v1_host() {
        return;
    }
    let mut cg = test_cgroup("limits");
    cg.manager.create(Some(&limits())).unwrap();
    let pid = spawn(&mut cg, &["sleep", "1000"], Stdio::null());

    assert_eq!(
        read(&cg, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&cg, "memory", "memory.memsw.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&cg, "cpu", "cpu.shares"), "512");
    assert_eq!(read(&cg, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cg, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(read(&cg, "pids", "pids.max"), "32");
    assert_eq!(
        read(&cg, "blkio", "blkio.throttle.read_bps_device"),
        "7:0 1048576"
    );
    if let Some(weight_file) = host_blkio_weight_file() {
        assert!(read(&cg, "blkio", weight_file).contains("300"));
    }
    assert!(read(&cg, "devices", "devices.list").contains("c 1:3 rwm"));
    assert!(!read(&cg, "devices", "devices.list").contains("a *:* rwm"));
    for controller in ["memory", "cpu", "pids", "freezer", "devices"] {
        assert!(
            read(&cg, controller, "cgroup.procs")
                .lines()
                .any(|l| l == pid.to_string()),
            "{controller}"
        );
    }
    assert_eq!(cg.manager.pids().unwrap(), vec![pid]);

    // Growing memory+swap past the current limit and shrinking both need opposite
    // write orders; both must work.
    let grow = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(256i64 << 20)
                .swap(512i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.manager.update(&grow).unwrap();
    assert_eq!(
        read(&cg, "memory", "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read(&cg, "memory", "memory.memsw.limit_in_bytes"),
        (512u64 << 20).to_string()
    );
    let shrink = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .swap(32i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
        .build()
        .unwrap();
    cg.manager.update(&shrink).unwrap();
    assert_eq!(
        read(&cg, "memory", "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(
        read(&cg, "memory", "memory.memsw.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&cg, "pids", "pids.max"), "max");

    let stats = cg.manager.stats().unwrap();
    assert_eq!(stats.memory.usage.limit, 32 << 20);
    assert_eq!(stats.pids.current, 1);

    cg.kill_children();
    cg.manager.destroy().unwrap();
    for controller in [
        "memory", "cpu", "cpuset", "pids", "freezer", "devices", "blkio",
    ] {
        assert!(
            !dir(&cg, controller).exists(),
            "{controller} dir left behind"
        );
    }
    cg.manager.destroy().unwrap();
}

#[test]
fn freeze_stops_the_process_and_thaw_resumes_it() {
    if !is_v1_host() {
        return;
    }
    let mut cg = test_cgroup("freeze");
    cg.manager.create(None).unwrap();
    let pid = spawn(
        &mut cg,
        &["sh", "-c", "read line; echo \"$line\"; exec sleep 1000"],
        Stdio::piped(),
    );
    assert!(!cg.manager.is_frozen().unwrap());
    cg.manager.freeze().unwrap();
    assert!(cg.manager.is_frozen().unwrap());
    assert!(
        process_state(pid).starts_with('D'),
        "frozen task state {}",
        process_state(pid)
    );
    let child = cg.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"resumed\n").unwrap();
    cg.manager.thaw().unwrap();
    assert!(!cg.manager.is_frozen().unwrap());
    // Once thawed the shell reads the line written while it was frozen and echoes it.
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "resumed");
}

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    if !is_v1_host() {
        return;
    }
    let mut cg = test_cgroup("oom");
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(16i64 << 20)
                .swap(16i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.manager.create(Some(&resources)).unwrap();
    // The shell waits for a line before it starts allocating, so it is inside the
    // cgroup by then; `tail` buffers /dev/zero forever as it never sees a newline.
    spawn(
        &mut cg,
        &["sh", "-c", "read line; exec tail /dev/zero"],
        Stdio::piped(),
    );
    let child = cg.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let stats = cg.manager.stats().unwrap();
    assert!(stats.memory.oom_kill >= 1, "{:?}", stats.memory);
    assert_eq!(
        stats.memory.usage.max,
        16 << 20,
        "peak usage reached the limit"
    );
}

fn assert_rejected_without_leftovers(test: &str, resources: LinuxResources, field: &str) {
    let cg = test_cgroup(test);
    let err = cg.manager.create(Some(&resources)).unwrap_err();
    assert!(err.to_string().starts_with(field), "{err}");
    for controller in [
        "memory", "cpu", "cpuset", "pids", "freezer", "devices", "blkio", "unified",
    ] {
        assert!(
            !dir(&cg, controller).exists(),
            "{controller} dir left behind"
        );
    }
}

#[test]
fn impossible_values_name_the_field_and_leave_nothing() {
    if !is_v1_host() {
        return;
    }
    let negative = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(-7i64).build().unwrap())
        .build()
        .unwrap();
    assert_rejected_without_leftovers("negative", negative, "linux.resources.memory.limit");
    let swap = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(32i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_rejected_without_leftovers("swap", swap, "linux.resources.memory.swap");
    let cpus = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("0-4095").build().unwrap())
        .build()
        .unwrap();
    assert_rejected_without_leftovers("cpus", cpus, "linux.resources.cpu.cpus");
    // Passes validation but the kernel refuses it (realtime budget beyond the parent's):
    // the directories made so far must be removed again.
    let rt = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_period(1_000_000u64)
                .realtime_runtime(999_999i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_rejected_without_leftovers("rt", rt, "linux.resources.cpu.realtimeRuntime");
    // Like runc, a weight the kernel has no file for is an error, not ignored.
    if host_blkio_weight_file().is_none() {
        let weight = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(300u16)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_rejected_without_leftovers("weight", weight, "linux.resources.blockIO.weight");
    }
}

#[test]
fn limit_below_usage_is_refused_on_update() {
    if !is_v1_host() {
        return;
    }
    let mut cg = test_cgroup("below-usage");
    cg.manager.create(None).unwrap();
    // A process that has touched some memory, then sleeps.
    spawn(
        &mut cg,
        &[
            "sh",
            "-c",
            "read line; x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 1000",
        ],
        Stdio::piped(),
    );
    let child = cg.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    berth_tests::wait_for(Duration::from_secs(20), "memory usage to grow", || {
        (cg.manager.stats().unwrap().memory.usage.usage >= 4_000_000).then_some(())
    })
    .unwrap();
    // With swap disallowed and the OOM killer off, the kernel cannot get below the
    // limit and refuses it.
    let disable_oom = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.manager.update(&disable_oom).unwrap();
    let tiny = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1i64 << 20)
                .swap(1i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = cg.manager.update(&tiny).unwrap_err();
    assert!(matches!(err, CgroupError::Apply { .. }), "{err}");
    assert!(
        err.to_string().starts_with("linux.resources.memory"),
        "{err}"
    );
}

#[test]
fn systemd_driver_without_systemd_fails_naming_the_unit_and_leaves_nothing() {
    if !is_v1_host() || Path::new("/run/systemd/system").exists() {
        return;
    }
    let id = format!("berth-test-systemd-{}", std::process::id());
    let manager = new_manager(
        Some(&format!("system.slice:berth:{id}")),
        &id,
        CgroupDriver::Systemd,
    )
    .unwrap();
    // Values are checked at create time, before systemd is asked for anything.
    let bad = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(-3i64).build().unwrap())
        .build()
        .unwrap();
    let err = manager.create(Some(&bad)).unwrap_err().to_string();
    assert!(err.starts_with("linux.resources.memory.limit"), "{err}");
    manager.create(Some(&limits())).unwrap();
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let err = manager
        .add_process(child.id() as i32)
        .unwrap_err()
        .to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(err.contains(&format!("berth-{id}.scope")), "{err}");
    assert!(
        !Path::new("/sys/fs/cgroup/memory/system.slice")
            .join(format!("berth-{id}.scope"))
            .exists()
    );
    manager.destroy().unwrap();
}

#[test]
fn missing_controller_names_the_field_and_leaves_nothing() {
    if !is_v1_host() || Path::new("/sys/fs/cgroup/net_cls").exists() {
        return;
    }
    let classid = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(0x100001u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_rejected_without_leftovers("net-cls", classid, "linux.resources.network.classID");
}

#[test]
fn pids_include_nested_cgroups_and_destroy_removes_them() {
    if !is_v1_host() {
        return;
    }
    let mut cg = test_cgroup("nested");
    cg.manager.create(None).unwrap();
    let outer = spawn(&mut cg, &["sleep", "1000"], Stdio::null());
    // A container that makes a cgroup of its own below ours.
    let nested = dir(&cg, "pids").join("inner");
    std::fs::create_dir(&nested).unwrap();
    let inner_child = Command::new("sleep").arg("1000").spawn().unwrap();
    let inner = inner_child.id() as i32;
    cg.children.push(inner_child);
    std::fs::write(nested.join("cgroup.procs"), inner.to_string()).unwrap();
    let mut pids = cg.manager.pids().unwrap();
    pids.sort();
    let mut expected = vec![outer, inner];
    expected.sort();
    assert_eq!(pids, expected);
    cg.kill_children();
    cg.manager.destroy().unwrap();
    assert!(!dir(&cg, "pids").exists());
}

#[test]
fn device_rules_are_enforced_and_updated() {
    if !is_v1_host() || !Path::new("/dev/loop0").exists() {
        return;
    }
    const OPEN_LOOP0: &str = "read line; if head -c0 /dev/loop0 2>/dev/null; then echo open-ok; else echo open-denied; fi";
    let run = |cg: &mut TestCgroup| {
        let child = Command::new("sh")
            .args(["-c", OPEN_LOOP0])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        cg.manager.add_process(child.id() as i32).unwrap();
        let mut child = child;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut cg = test_cgroup("devices");
    cg.manager.create(None).unwrap();
    assert_eq!(run(&mut cg), "open-denied");
    cg.manager
        .update(&cgroups_common::allow_reading_loop_devices())
        .unwrap();
    assert_eq!(run(&mut cg), "open-ok");
}

#[test]
fn hugepage_limits_are_applied_and_reported() {
    if !is_v1_host() || !Path::new("/sys/fs/cgroup/hugetlb/hugetlb.2MB.limit_in_bytes").exists() {
        return;
    }
    let mut cg = test_cgroup("hugetlb");
    let resources = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4i64 << 20)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    cg.manager.create(Some(&resources)).unwrap();
    spawn(&mut cg, &["sleep", "1000"], Stdio::null());
    assert_eq!(
        read(&cg, "hugetlb", "hugetlb.2MB.limit_in_bytes"),
        (4u64 << 20).to_string()
    );
    let stats = cg.manager.stats().unwrap();
    assert_eq!(stats.hugetlb["2MB"].usage, 0);
    let bad = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("3MB")
                .limit(1i64)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let err = cg.manager.update(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("linux.resources.hugepageLimits[0]"),
        "{err}"
    );
}
