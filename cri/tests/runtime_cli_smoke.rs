//! Smoke tests of the berth-runtime binary on a busybox bundle (needs root).
//! The full behaviour suite lives in the workspace's tests/ crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BUSYBOX: &str = "/bin/busybox";

struct Fixture {
    dir: tempfile::TempDir,
    id: String,
}

impl Fixture {
    /// A bundle whose process runs `script` with sh, and a fresh --root.
    fn new(script: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("bundle/rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "cat", "sleep", "true", "ls"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let id = format!(
            "smoke-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let fixture = Fixture { dir, id };
        let out = fixture.runtime(&["spec", "--bundle", fixture.bundle().to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        fixture.edit_config(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        });
        fixture
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn edit_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.bundle().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    fn runtime(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth-runtime"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `create`: the init inherits the runtime's stdio and keeps it open, so
    /// it goes to files rather than to pipes we would wait on.
    fn create(&self) -> (bool, String) {
        let stderr_path = self.dir.path().join("create.stderr");
        let status = Command::new(env!("CARGO_BIN_EXE_berth-runtime"))
            .arg("--root")
            .arg(self.root())
            .args([
                "create",
                "--bundle",
                self.bundle().to_str().unwrap(),
                &self.id,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .status()
            .unwrap();
        (
            status.success(),
            std::fs::read_to_string(stderr_path).unwrap(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.runtime(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> String {
        let state: serde_json::Value =
            serde_json::from_str(&self.ok(&["state", &self.id])).unwrap();
        state["status"].as_str().unwrap().to_string()
    }

    fn cgroup_dir(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/pids").join(&self.id)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runtime(&["delete", "--force", &self.id]);
    }
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    berth_tests::wait_for(Duration::from_secs(20), what, || condition().then_some(())).unwrap();
}

#[test]
fn run_passes_output_and_exit_code_and_cleans_up() {
    let fixture = Fixture::new("echo hello from $(cat /proc/self/cgroup | grep -c pids); exit 3");
    let out = fixture.runtime(&[
        "run",
        "--bundle",
        fixture.bundle().to_str().unwrap(),
        &fixture.id,
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from 1\n");
    assert!(!fixture.root().join(&fixture.id).exists());
    assert!(!fixture.cgroup_dir().exists());
}

#[test]
fn create_start_exec_kill_delete() {
    let fixture = Fixture::new("exec sleep 1000");
    let (created, stderr) = fixture.create();
    assert!(created, "{stderr}");
    assert_eq!(fixture.status(), "created");
    let state: serde_json::Value =
        serde_json::from_str(&fixture.ok(&["state", &fixture.id])).unwrap();
    let init_cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", state["pid"])).unwrap();
    assert!(init_cgroups.contains(&fixture.id), "{init_cgroups}");
    fixture.ok(&["start", &fixture.id]);
    assert_eq!(fixture.status(), "running");
    let out = fixture.ok(&[
        "exec",
        &fixture.id,
        "sh",
        "-c",
        "cat /proc/1/cmdline; echo; echo $$",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].replace('\0', " ").trim(), "sleep 1000");
    assert_ne!(lines[1], "1", "exec'd process is not the init");
    let refused = fixture.runtime(&["delete", &fixture.id]);
    assert!(!refused.status.success());
    fixture.ok(&["kill", &fixture.id, "KILL"]);
    wait_for("the container to stop", || fixture.status() == "stopped");
    fixture.ok(&["delete", &fixture.id]);
    assert!(!fixture.root().join(&fixture.id).exists());
    assert!(!fixture.cgroup_dir().exists());
}

#[test]
fn failed_create_names_the_field_and_leaves_nothing_behind() {
    let fixture = Fixture::new("true");
    fixture.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "ipc", "path": "/proc/self/status"}));
    });
    let (created, stderr) = fixture.create();
    assert!(!created);
    assert!(stderr.contains("linux.namespaces["), "{stderr}");
    assert!(!fixture.root().join(&fixture.id).exists());
    assert!(!fixture.cgroup_dir().exists());
}

#[test]
fn unknown_fields_are_logged_not_fatal() {
    let fixture = Fixture::new("echo fine");
    fixture.edit_config(|c| {
        c["process"]["futureKnob"] = true.into();
    });
    let log = fixture.dir.path().join("log.json");
    let bundle = fixture.bundle();
    let out = fixture.runtime(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        &fixture.id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fine\n");
    let log = std::fs::read_to_string(log).unwrap();
    let warning = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| {
            l["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("process.futureKnob")
        })
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert_eq!(warning["level"], "warning");
    assert!(warning["time"].is_string());
}
