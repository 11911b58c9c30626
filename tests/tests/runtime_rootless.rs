//! `--rootless` (runc's semantics): a runtime that is root only of a user
//! namespace may not create cgroups on the host. Rootless mode (`auto` finds
//! it by itself there) skips the cgroup when the spec names no cgroupsPath
//! and sets no limits; `--rootless=false` fails. Root (to set up the user
//! namespace the runtime then runs in).

use std::path::Path;
use std::process::{Child, Command, Output};

use berth_tests::bundle::{Bundle, Spec};
use berth_tests::tempdir::TempDir;
use serde_json::json;

/// Host ids the runtime's user namespace maps 0..65536 onto.
const HOST_BASE: u32 = 300_000;

/// A user namespace (root = HOST_BASE) held open by a sleeping process,
/// killed on drop.
struct UserNamespace(Child);

impl UserNamespace {
    fn new() -> Self {
        let child = Command::new("unshare")
            .args(["--user", "--", "sleep", "1000000"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        berth_tests::wait_for(
            berth_tests::runtime::TIMEOUT,
            "the new user namespace",
            || {
                std::fs::read_link(format!("/proc/{pid}/ns/user"))
                    .ok()
                    .filter(|ns| *ns != ours)
            },
        )
        .unwrap();
        let map = format!("0 {HOST_BASE} 65536");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map).unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), &map).unwrap();
        Self(child)
    }

    /// Runs the runtime as root of this namespace.
    fn runtime(&self, root: &Path, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args([
                "--user",
                "--target",
                &self.0.id().to_string(),
                "-S",
                "0",
                "-G",
                "0",
                "--",
            ])
            .arg(berth_tests::bins::runtime_binary())
            .arg("--root")
            .arg(root)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for UserNamespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chown_tree(path: &Path, id: u32) {
    std::os::unix::fs::lchown(path, Some(id), Some(id)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), id);
        }
    }
}

/// A bundle the namespace's root owns, for a container in a nested user
/// namespace, without linux.cgroupsPath.
fn rootless_bundle(spec: Spec) -> Bundle {
    let spec = spec
        .namespace("user")
        .id_mapping(0, 65536)
        .set(
            "/mounts",
            json!([{"destination": "/proc", "type": "proc", "source": "proc"}]),
        )
        .shell("cat /proc/self/cgroup");
    let mut bundle = Bundle::busybox(spec).unwrap();
    bundle
        .update_spec(|spec| spec.remove("/linux/cgroupsPath"))
        .unwrap();
    chown_tree(bundle.path(), HOST_BASE);
    bundle
}

fn state_root() -> TempDir {
    let root = TempDir::new("berth-rootless-root").unwrap();
    chown_tree(root.path(), HOST_BASE);
    root
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn rootless_auto_runs_without_a_cgroup_and_false_fails_on_it() {
    let userns = UserNamespace::new();
    let root = state_root();
    let bundle = rootless_bundle(Spec::new());
    let run = |extra: &[&str], id: &str| {
        let mut args = extra.to_vec();
        args.extend(["run", "--bundle", bundle.path().to_str().unwrap(), id]);
        userns.runtime(root.path(), &args)
    };

    let refused = run(&["--rootless=false"], "strict");
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{refused:?}"
    );

    for (flag, id) in [(None, "auto"), (Some("--rootless=true"), "explicit")] {
        let out = run(flag.as_slice(), id);
        assert!(out.status.success(), "{out:?}");
        // Still in the cgroups the runtime itself was in: none was made.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let pids = |cgroups: &str| {
            cgroups
                .lines()
                .find(|l| l.contains(":pids:"))
                .map(str::to_string)
        };
        assert_eq!(pids(&text(&out.stdout)), pids(&own), "{out:?}");
    }
}

#[test]
fn rootless_without_a_cgroup_refuses_limits_by_name() {
    let userns = UserNamespace::new();
    let root = state_root();
    let bundle = rootless_bundle(Spec::new().pids_limit(10));
    let out = userns.runtime(
        root.path(),
        &[
            "run",
            "--bundle",
            bundle.path().to_str().unwrap(),
            "limited",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("linux.resources.pids"),
        "{out:?}"
    );
}
