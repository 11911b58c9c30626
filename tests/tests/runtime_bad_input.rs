//! Bad bundles are refused with a non-zero exit, an error naming what is
//! wrong, and nothing left behind (state, cgroups, mounts, processes). Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::cgroup;
use berth_tests::runtime::Runtime;
use serde_json::json;
use std::path::Path;

/// Creates the container, expects failure, and returns stderr (lowercased)
/// after checking that nothing was left behind.
fn create_fails(bundle: &Bundle) -> String {
    let runtime = Runtime::from_env().unwrap();
    // Deletes the container should create succeed after all.
    let _cleanup = runtime.adopt(bundle);
    let out = runtime
        .output(&[
            "create",
            "--bundle",
            bundle.path().to_str().unwrap(),
            bundle.id(),
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    eprintln!("create failed as expected: {stderr}");
    assert!(!out.status.success(), "create succeeded; stderr {stderr}");
    assert!(!stderr.trim().is_empty(), "no error message");
    let state = runtime.output(&["state", bundle.id()]).unwrap();
    assert!(
        !state.status.success(),
        "a failed create must leave no container"
    );
    assert_eq!(
        runtime.leftovers(bundle),
        Vec::<String>::new(),
        "after: {stderr}"
    );
    stderr
}

#[test]
fn missing_rootfs_is_refused() {
    let bundle = Bundle::busybox(Spec::new().set("/root/path", "no-such-rootfs")).unwrap();
    let stderr = create_fails(&bundle);
    assert!(
        stderr.contains("no-such-rootfs") || stderr.contains("root.path"),
        "{stderr}"
    );
}

#[test]
fn bad_namespace_path_is_refused() {
    let spec = Spec::new().namespace_path("network", Path::new("/run/netns/berth-no-such-ns"));
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(stderr.contains("berth-no-such-ns"), "{stderr}");
}

#[test]
fn namespace_path_of_the_wrong_type_is_refused() {
    let spec = Spec::new().namespace_path("network", Path::new("/proc/self/ns/ipc"));
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(
        stderr.contains("network") || stderr.contains("net"),
        "{stderr}"
    );
}

#[test]
fn impossible_cgroup_value_is_refused() {
    // CPU 4095 does not exist on the test machines.
    let spec = Spec::new().set("/linux/resources/cpu/cpus", "4095");
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(
        stderr.contains("cpuset") || stderr.contains("cpus"),
        "{stderr}"
    );
}

#[test]
fn bad_seccomp_action_is_refused() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]
    });
    let stderr = create_fails(&Bundle::busybox(Spec::new().seccomp(profile)).unwrap());
    assert!(
        stderr.contains("scmp_act_bogus") || stderr.contains("action"),
        "{stderr}"
    );
}

#[test]
fn missing_executable_is_refused() {
    let bundle = Bundle::busybox(Spec::new().args(&["/no/such/binary"])).unwrap();
    let runtime = Runtime::from_env().unwrap();
    let out = runtime.run(&bundle).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/no/such/binary"), "{stderr}");
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}

#[test]
fn unknown_mount_type_is_refused() {
    let mount = json!({"destination": "/x", "type": "no-such-fs", "source": "none"});
    let stderr = create_fails(&Bundle::busybox(Spec::new().mount(mount)).unwrap());
    assert!(
        stderr.contains("/x") || stderr.contains("no-such-fs"),
        "{stderr}"
    );
}

#[test]
fn a_second_container_with_the_same_id_is_refused_and_the_first_survives() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let pid = container.pid().unwrap();

    let other = Bundle::busybox(Spec::new()).unwrap();
    let other_path = other.path().to_str().unwrap();
    let out = runtime
        .output(&["create", "--bundle", other_path, bundle.id()])
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exist"), "{stderr}");
    assert_eq!(container.status().unwrap(), "running");
    assert_eq!(container.state().unwrap()["pid"], pid);
    assert!(cgroup::existing(&other.cgroups_path()).is_empty());
}

#[test]
fn unknown_containers_are_errors_except_for_delete_force() {
    let runtime = Runtime::from_env().unwrap();
    for command in [
        &["state", "no-such-ctr"][..],
        &["kill", "no-such-ctr", "KILL"],
        &["delete", "no-such-ctr"],
    ] {
        let out = runtime.output(command).unwrap();
        assert!(!out.status.success(), "{command:?} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not exist"),
            "{command:?}: {out:?}"
        );
    }
    // containerd relies on a forced delete being idempotent.
    runtime.ok(&["delete", "--force", "no-such-ctr"]).unwrap();
}

#[test]
fn rlimit_with_soft_above_hard_is_refused() {
    let spec = Spec::new().rlimit("RLIMIT_NOFILE", 2048, 1024);
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(stderr.contains("rlimit"), "{stderr}");
}

#[test]
fn unknown_rlimit_is_refused() {
    let spec = Spec::new().rlimit("RLIMIT_BOGUS", 1, 1);
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(stderr.contains("rlimit_bogus"), "{stderr}");
}

#[test]
fn time_offsets_without_a_time_namespace_or_with_an_unknown_clock_are_refused() {
    let offsets = |clock: &str| json!({ clock: {"secs": 10} });
    let no_ns = Spec::new().set("/linux/timeOffsets", offsets("boottime"));
    let stderr = create_fails(&Bundle::busybox(no_ns).unwrap());
    assert!(stderr.contains("linux.timeoffsets"), "{stderr}");
    let bad_clock = Spec::new()
        .namespace("time")
        .set("/linux/timeOffsets", offsets("realtime"));
    let stderr = create_fails(&Bundle::busybox(bad_clock).unwrap());
    assert!(stderr.contains("linux.timeoffsets.realtime"), "{stderr}");
}

#[test]
fn idmapped_mount_with_half_its_mappings_is_refused() {
    let spec = Spec::new().mount(json!({
        "destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind"],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    }));
    let stderr = create_fails(&Bundle::busybox(spec).unwrap());
    assert!(stderr.contains("gidmappings"), "{stderr}");
}
