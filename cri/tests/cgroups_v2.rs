//! Root integration tests of the cgroup v2 manager on this host's cgroup2 mount. On a
//! hybrid host that mount has (almost) no controllers, so these cover what v2 does
//! without them: creation, device eBPF programs, freezing, process listing, stats,
//! removal and field errors for controllers that are missing. Each test works below its
//! own parent directory, so nothing is enabled in the host's root cgroup.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_cri::oci::cgroups::{CgroupManager, V2Manager};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};

fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mountpoint = before.split(' ').nth(4)?;
        after
            .starts_with("cgroup2 ")
            .then(|| PathBuf::from(mountpoint))
    })
}

mod cgroups_common;

type TestCgroup = cgroups_common::TestCgroup<V2Manager>;

/// The manager for a child of a parent cgroup made for one test; both are removed on
/// drop after what runs in the child is killed.
fn test_cgroup(test: &str) -> Option<TestCgroup> {
    let parent = cgroup2_mount()?.join(format!("berth-test-v2-{test}-{}", std::process::id()));
    std::fs::create_dir(&parent).unwrap();
    Some(TestCgroup::new(
        V2Manager::new(&parent, "ctr"),
        vec![parent],
    ))
}

/// Starts `sh -c` in the cgroup; the script runs once a line arrives on its stdin.
fn spawn_waiting(cg: &mut TestCgroup, script: &str) -> i32 {
    cg.spawn(
        Command::new("sh")
            .args(["-c", &format!("read line; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
}

/// Runs `sh -c` in the cgroup and returns what it printed.
fn run_in(cg: &mut TestCgroup, script: &str) -> String {
    spawn_waiting(cg, script);
    let child = cg.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    out
}

const OPEN_LOOP0: &str =
    "if head -c0 /dev/loop0 2>/dev/null; then echo open-ok; else echo open-denied; fi";

#[test]
fn device_program_enforces_the_rules_and_update_replaces_it() {
    if !Path::new("/dev/loop0").exists() {
        return;
    }
    // Control: outside the cgroup the block device opens.
    let out = Command::new("sh")
        .args(["-c", OPEN_LOOP0])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "open-ok");

    let Some(mut cg) = test_cgroup("devices") else {
        return;
    };
    cg.manager.create(None).unwrap();
    assert_eq!(
        run_in(
            &mut cg,
            &format!("{OPEN_LOOP0}; head -c1 /dev/zero | wc -c")
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["open-denied", "1"]
    );

    cg.manager
        .update(&cgroups_common::allow_reading_loop_devices())
        .unwrap();
    assert_eq!(run_in(&mut cg, OPEN_LOOP0).trim(), "open-ok");
}

#[test]
fn freeze_thaw_pids_stats_and_destroy() {
    let Some(mut cg) = test_cgroup("freeze") else {
        return;
    };
    cg.manager.create(None).unwrap();
    let pid = spawn_waiting(&mut cg, "echo \"$line\"; exec sleep 1000");
    assert_eq!(cg.manager.pids().unwrap(), vec![pid]);
    cg.manager.freeze().unwrap();
    assert!(cg.manager.is_frozen().unwrap());
    // The kernel reports the whole cgroup frozen only once every task has stopped.
    let events = std::fs::read_to_string(cg.manager.dir().join("cgroup.events")).unwrap();
    assert!(events.lines().any(|l| l == "frozen 1"), "{events}");
    let child = cg.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"resumed\n").unwrap();
    cg.manager.thaw().unwrap();
    assert!(!cg.manager.is_frozen().unwrap());
    // Once thawed the shell reads the line written while it was frozen and echoes it.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "resumed");
    let stats = cg.manager.stats().unwrap();
    assert_eq!(
        stats.pids.current, 0,
        "no pids controller here, nothing reported"
    );
    cg.kill_children();
    cg.manager.destroy().unwrap();
    assert!(!cg.manager.dir().exists());
    cg.manager.destroy().unwrap();
}

#[test]
fn missing_controller_names_the_field_and_leaves_nothing() {
    let Some(cg) = test_cgroup("missing") else {
        return;
    };
    let parent = &cg.scaffolding[0];
    if parent.join("cgroup.controllers").exists()
        && std::fs::read_to_string(parent.join("cgroup.controllers"))
            .unwrap()
            .contains("memory")
    {
        return; // a real v2 host: covered by the limit tests there
    }
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = cg.manager.create(Some(&resources)).unwrap_err().to_string();
    assert!(err.starts_with("linux.resources.memory.limit"), "{err}");
    assert!(!cg.manager.dir().exists());
}
