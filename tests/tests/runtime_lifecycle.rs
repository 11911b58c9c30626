//! The container lifecycle through the runtime CLI: create, start, state,
//! kill, delete, run, pause/resume, ps, update, events, list, hooks, spec.
//! Root.

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::runtime::{Runtime, TIMEOUT};
use berth_tests::{cgroup, wait_for};
use serde_json::Value;

fn process_gone(pid: i32) -> bool {
    // A zombie still has /proc/<pid>; it is gone once reaped.
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn create_waits_for_start_then_runs_then_stops() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new()
        .set(
            "/annotations",
            serde_json::json!({"org.example.berth/test": "yes"}),
        )
        .shell(
            "trap 'echo finished; exit 0' USR1; echo started; \
             while :; do sleep 1000 & wait $!; done",
        );
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.create(&bundle).unwrap();

    let state = container.state().unwrap();
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], bundle.id());
    assert_eq!(state["pid"], container.pid().unwrap());
    assert_eq!(state["bundle"], bundle.path().to_str().unwrap());
    // Fields beyond the OCI state that containerd's runc client reads.
    assert_eq!(state["rootfs"], bundle.rootfs().to_str().unwrap());
    let created = state["created"].as_str().unwrap_or_default();
    assert!(
        created.len() >= 20 && created.as_bytes()[10] == b'T',
        "RFC 3339: {created:?}"
    );
    assert_eq!(
        state["annotations"]["org.example.berth/test"], "yes",
        "{state}"
    );
    // The init process exists but the user program has not run.
    assert!(!process_gone(container.pid().unwrap()));
    assert_eq!(container.stdout(), "");

    runtime.ok(&["start", bundle.id()]).unwrap();
    container.wait_stdout("started").unwrap();
    assert_eq!(container.status().unwrap(), "running");

    container.kill("USR1").unwrap();
    container.wait_status("stopped").unwrap();
    assert_eq!(container.stdout(), "started\nfinished\n");
}

#[test]
fn run_returns_the_exit_code() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new().shell("exit 42")).unwrap();
    assert_eq!(runtime.run(&bundle).unwrap().status.code(), Some(42));
    // run deletes the container once it exited.
    assert!(
        runtime.leftovers(&bundle).is_empty(),
        "{:?}",
        runtime.leftovers(&bundle)
    );
}

#[test]
fn kill_delivers_the_signal_to_init() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new().shell(
        "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 3' TERM; echo up; \
         while :; do sleep 1000 & wait $!; done",
    );
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    container.kill("USR1").unwrap();
    container.wait_stdout("got-usr1").unwrap();
    assert_eq!(container.status().unwrap(), "running");
    container.kill("SIGTERM").unwrap();
    container.wait_stdout("got-term").unwrap();
    container.wait_status("stopped").unwrap();
}

#[test]
fn kill_9_stops_a_container_that_ignores_term() {
    let runtime = Runtime::from_env().unwrap();
    let bundle =
        Bundle::busybox(Spec::new().shell("trap '' TERM; echo up; exec sleep 1000")).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    container.kill("9").unwrap();
    container.wait_status("stopped").unwrap();
}

#[test]
fn delete_of_a_stopped_container_leaves_nothing_behind() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let pid = container.pid().unwrap();

    let refused = runtime.output(&["delete", bundle.id()]).unwrap();
    assert!(
        !refused.status.success(),
        "delete of a running container must fail"
    );
    assert_eq!(container.status().unwrap(), "running");

    container.kill("KILL").unwrap();
    container.wait_status("stopped").unwrap();
    container.delete().unwrap();
    assert!(!container.exists());
    wait_for(TIMEOUT, "init to be reaped", || {
        process_gone(pid).then_some(())
    })
    .unwrap();
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}

#[test]
fn delete_force_removes_a_running_container() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new().shell("sleep 1000 & sleep 1000 & echo up; exec sleep 1000");
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let pids = cgroup::read("pids", &bundle.cgroups_path(), "cgroup.procs").unwrap();
    assert_eq!(pids.lines().count(), 3, "{pids}");

    runtime.ok(&["delete", "--force", bundle.id()]).unwrap();
    assert!(!container.exists());
    for pid in pids.lines() {
        let pid: i32 = pid.parse().unwrap();
        wait_for(TIMEOUT, "container processes to be gone", || {
            process_gone(pid).then_some(())
        })
        .unwrap();
    }
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}

#[test]
fn kill_stops_a_created_container() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.create(&bundle).unwrap();
    container.kill("KILL").unwrap();
    container.wait_status("stopped").unwrap();
    assert_eq!(container.stdout(), "", "the user program never ran");
    container.delete().unwrap();
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}

#[test]
fn delete_of_a_created_container_removes_it() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.create(&bundle).unwrap();
    let pid = container.pid().unwrap();
    runtime.ok(&["delete", "--force", bundle.id()]).unwrap();
    wait_for(TIMEOUT, "init to be gone", || {
        process_gone(pid).then_some(())
    })
    .unwrap();
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let freezer = || cgroup::read("freezer", &bundle.cgroups_path(), "freezer.state");

    runtime.ok(&["pause", bundle.id()]).unwrap();
    assert_eq!(container.status().unwrap(), "paused");
    assert_eq!(freezer().as_deref(), Some("FROZEN"));

    runtime.ok(&["resume", bundle.id()]).unwrap();
    assert_eq!(container.status().unwrap(), "running");
    assert_eq!(freezer().as_deref(), Some("THAWED"));
}

#[test]
fn ps_lists_the_container_processes() {
    let runtime = Runtime::from_env().unwrap();
    let bundle =
        Bundle::busybox(Spec::new().shell("sleep 1000 & echo up; exec sleep 1001")).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let listed: Value = serde_json::from_str(
        &runtime
            .ok(&["ps", "--format", "json", bundle.id()])
            .unwrap(),
    )
    .unwrap();
    let mut listed: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    let procs = cgroup::read("pids", &bundle.cgroups_path(), "cgroup.procs").unwrap();
    let mut expected: Vec<i64> = procs.lines().map(|p| p.parse().unwrap()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(listed.contains(&container.pid().unwrap().into()));
    assert_eq!(listed.len(), 2);
}

#[test]
fn update_changes_limits_of_a_running_container() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::sleeper()
        .memory_limit(64 << 20)
        .pids_limit(100)
        .cpu(1024, 20_000, 100_000);
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    runtime
        .ok(&[
            "update",
            "--memory",
            "134217728",
            "--pids-limit",
            "50",
            "--cpu-share",
            "256",
            "--cpu-quota",
            "30000",
            bundle.id(),
        ])
        .unwrap();
    let path = bundle.cgroups_path();
    assert_eq!(
        cgroup::read("memory", &path, "memory.limit_in_bytes").as_deref(),
        Some("134217728")
    );
    assert_eq!(
        cgroup::read("pids", &path, "pids.max").as_deref(),
        Some("50")
    );
    assert_eq!(
        cgroup::read("cpu", &path, "cpu.shares").as_deref(),
        Some("256")
    );
    assert_eq!(
        cgroup::read("cpu", &path, "cpu.cfs_quota_us").as_deref(),
        Some("30000")
    );
    assert_eq!(container.status().unwrap(), "running");

    // The same through a resources file (`-r`), as containerd calls it.
    let resources = bundle.path().join("resources.json");
    std::fs::write(&resources, r#"{"pids": {"limit": 42}}"#).unwrap();
    runtime
        .ok(&["update", "-r", resources.to_str().unwrap(), bundle.id()])
        .unwrap();
    assert_eq!(
        cgroup::read("pids", &path, "pids.max").as_deref(),
        Some("42")
    );

    // The limits in force are remembered in the container's state: each
    // update's changes on top of the spec's, not just the last update's.
    if !runtime.is_runc() {
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(runtime.root().join(bundle.id()).join("state.json")).unwrap(),
        )
        .unwrap();
        let resources = &state["resources"];
        assert_eq!(resources["memory"]["limit"], 134217728, "{resources}");
        assert_eq!(resources["pids"]["limit"], 42, "{resources}");
        assert_eq!(resources["cpu"]["shares"], 256, "{resources}");
        assert_eq!(resources["cpu"]["quota"], 30000, "{resources}");
        assert_eq!(resources["cpu"]["period"], 100000, "{resources}");
    }
}

#[test]
fn hooks_run_with_the_state_on_stdin() {
    let runtime = Runtime::from_env().unwrap();
    let bundle_dir = berth_tests::tempdir::TempDir::new("berth-hooks").unwrap();
    let record = |name: &str| {
        let file = bundle_dir.join(format!("{name}.json"));
        format!("cat > {}", file.display())
    };
    let spec = Spec::sleeper()
        .hook(
            "createRuntime",
            "/bin/sh",
            &["sh", "-c", &record("createRuntime")],
        )
        .hook("poststart", "/bin/sh", &["sh", "-c", &record("poststart")])
        .hook("poststop", "/bin/sh", &["sh", "-c", &record("poststop")]);
    let bundle = Bundle::busybox(spec).unwrap();
    // Hooks have finished when the runtime command that runs them returns.
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(bundle_dir.join(format!("{name}.json")));
        let text = text.unwrap_or_else(|e| panic!("{name} hook output: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} hook got {text:?}: {e}"))
    };

    let container = runtime.create(&bundle).unwrap();
    let state = read("createRuntime");
    assert_eq!(state["id"], bundle.id());
    assert_eq!(state["pid"], container.pid().unwrap());
    assert_eq!(state["bundle"], bundle.path().to_str().unwrap());
    assert_eq!(state["status"], "creating");
    // The spec runs poststart after the user process started; runc 1.1
    // runs it at the end of create (with status "created"), fixed in 1.2.
    if !runtime.is_runc() {
        assert!(
            !bundle_dir.join("poststart.json").exists(),
            "poststart ran before start"
        );
    }

    runtime.ok(&["start", bundle.id()]).unwrap();
    container.wait_stdout("up").unwrap();
    let expected = if runtime.is_runc() {
        "created"
    } else {
        "running"
    };
    assert_eq!(read("poststart")["status"], expected);

    container.kill("KILL").unwrap();
    container.wait_status("stopped").unwrap();
    container.delete().unwrap();
    assert_eq!(read("poststop")["status"], "stopped");
}

#[test]
fn spec_writes_a_default_config_that_runs() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::new()).unwrap();
    std::fs::remove_file(bundle.path().join("config.json")).unwrap();
    runtime
        .ok(&["spec", "--bundle", bundle.path().to_str().unwrap()])
        .unwrap();
    let config_path = bundle.path().join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["root"]["path"], "rootfs");
    let namespaces: Vec<&str> = config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| ns["type"].as_str().unwrap())
        .collect();
    for kind in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(
            namespaces.contains(&kind),
            "{kind} missing from {namespaces:?}"
        );
    }
    // The default asks for a terminal; run it without one.
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["sh", "-c", "echo default-spec-ran"]);
    config["linux"]["cgroupsPath"] = bundle.cgroups_path().into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = runtime.run(&bundle).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "default-spec-ran\n",
        "{out:?}"
    );
}

#[test]
fn events_stats_report_the_container_cgroup() {
    let runtime = Runtime::from_env().unwrap();
    let spec = Spec::new()
        .memory_limit(64 << 20)
        .shell("sleep 1000 & echo up; exec sleep 1001");
    let bundle = Bundle::busybox(spec).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let stdout = runtime.ok(&["events", "--stats", bundle.id()]).unwrap();
    let event: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], bundle.id());
    let data = &event["data"];
    assert_eq!(data["pids"]["current"], 2, "{data}");
    assert_eq!(data["memory"]["usage"]["limit"], 64 << 20, "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{data}"
    );
    assert!(data["cpu"]["usage"]["total"].as_u64().is_some(), "{data}");
}

#[test]
fn list_shows_the_containers_of_the_root() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let listed: Value =
        serde_json::from_str(&runtime.ok(&["list", "--format", "json"]).unwrap()).unwrap();
    let entry = &listed.as_array().unwrap()[0];
    assert_eq!(entry["id"], bundle.id());
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["pid"], container.pid().unwrap());
    assert_eq!(entry["bundle"], bundle.path().to_str().unwrap());
}

#[test]
fn start_of_a_running_container_is_refused() {
    let runtime = Runtime::from_env().unwrap();
    let bundle = Bundle::busybox(Spec::sleeper()).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let again = runtime.output(&["start", bundle.id()]).unwrap();
    assert!(!again.status.success());
    assert_eq!(container.status().unwrap(), "running");
}

#[test]
fn a_paused_container_refuses_exec_and_is_removed_by_delete_force() {
    let runtime = Runtime::from_env().unwrap();
    let bundle =
        Bundle::busybox(Spec::new().shell("sleep 1000 & echo up; exec sleep 1001")).unwrap();
    let container = runtime.start(&bundle).unwrap();
    container.wait_stdout("up").unwrap();
    let procs = cgroup::read("pids", &bundle.cgroups_path(), "cgroup.procs").unwrap();
    runtime.ok(&["pause", bundle.id()]).unwrap();

    let exec = container.exec(&["true"]).unwrap();
    assert!(
        !exec.status.success(),
        "exec into a paused container must fail"
    );
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("paused"),
        "{exec:?}"
    );

    runtime.ok(&["delete", "--force", bundle.id()]).unwrap();
    for pid in procs.lines() {
        let pid: i32 = pid.parse().unwrap();
        wait_for(TIMEOUT, "frozen processes to be killed", || {
            process_gone(pid).then_some(())
        })
        .unwrap();
    }
    assert_eq!(runtime.leftovers(&bundle), Vec::<String>::new());
}
