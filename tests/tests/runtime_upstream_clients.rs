//! Upstream container managers drive `berth-runtime` in place of runc:
//! Debian's containerd (through its runc v2 shim, `ctr run --runc-binary`)
//! and podman (`--runtime`). Each manager runs in a private mount namespace
//! on temp dirs; the runtime is reached through a wrapper that logs every
//! invocation, so the tests prove it was ours that ran. Root.

use berth_tests::bins::runtime_binary;
use berth_tests::cgroup;
use berth_tests::child::ChildGuard;
use berth_tests::image::ImageBuilder;
use berth_tests::mountns::private_mount_ns_command;
use berth_tests::tempdir::TempDir;
use berth_tests::{unique_name, wait_for};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
const IMAGE_REF: &str = "berth.test/busybox:1";

/// Writes the busybox test image as an OCI archive (a tar of an image
/// layout) whose index names it [`IMAGE_REF`].
fn busybox_archive(dir: &TempDir) -> PathBuf {
    let layout = dir.join("image-layout");
    ImageBuilder::busybox()
        .unwrap()
        .build()
        .unwrap()
        .write_layout(&layout, IMAGE_REF)
        .unwrap();
    let archive = dir.join("busybox.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {out:?}");
    archive
}

/// A runtime binary that appends its arguments to a log, one invocation a
/// line, and then becomes the runtime under test.
struct LoggingRuntime {
    wrapper: PathBuf,
    log: PathBuf,
}

impl LoggingRuntime {
    fn new(dir: &TempDir) -> Self {
        let wrapper = dir.join("logging-runtime");
        let log = dir.join("runtime-invocations.log");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            runtime_binary().display()
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { wrapper, log }
    }

    fn path(&self) -> &str {
        self.wrapper.to_str().unwrap()
    }

    /// The logged invocations whose subcommand (first word that is not an
    /// option or an option's value) is `verb`.
    fn invocations_of(&self, verb: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|line| line.split(' ').any(|word| word == verb))
            .map(str::to_string)
            .collect()
    }
}

/// Removes `cgroups_path` and every cgroup below it from every hierarchy,
/// deepest first (the cgroups must hold no processes any more).
fn remove_cgroup_tree(cgroups_path: &str) {
    fn remove_below(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_below(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for hierarchy in cgroup::hierarchies() {
        remove_below(&cgroup::dir(&hierarchy, cgroups_path));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- containerd

/// Debian's containerd on temp dirs, in a mount namespace of its own so the
/// snapshot and rootfs mounts it and its shims make never reach the host.
/// Tasks are deleted, containerd killed by PID and the containerd namespace's
/// cgroups removed on drop.
struct Containerd {
    daemon: Option<ChildGuard>,
    socket: PathBuf,
    /// A containerd namespace of this test alone; ctr puts containers into
    /// the cgroup `/<namespace>/<id>`.
    namespace: String,
    /// Where the shim tells the runtime to keep its state (`--root`).
    runtime_root: PathBuf,
    fifo_dir: PathBuf,
}

impl Containerd {
    fn start(dir: &TempDir) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
                opt = dir.join("opt").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // unshare execs containerd: the PID we hold is containerd's own.
        let daemon = private_mount_ns_command("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let containerd = Containerd {
            daemon: Some(ChildGuard::new(daemon)),
            socket,
            namespace: unique_name("berth-upstream"),
            runtime_root: dir.join("runtime-root"),
            fifo_dir: dir.join("fifo"),
        };
        wait_for(TIMEOUT, "containerd to serve its socket", || {
            containerd.ctr(&["version"]).status.success().then_some(())
        })
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            panic!("{e}\n{log}")
        });
        containerd
    }

    fn ctr_command(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .stdin(Stdio::null());
        command
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().unwrap()
    }

    /// `ctr run` with the runc v2 shim told to use `runtime` as its runc.
    fn run(&self, runtime: &LoggingRuntime, options: &[&str], id: &str, args: &[&str]) -> Output {
        self.ctr_command()
            .args(["run", "--runtime", "io.containerd.runc.v2"])
            .args(["--runc-binary", runtime.path()])
            .arg("--runc-root")
            .arg(&self.runtime_root)
            .arg("--fifo-dir")
            .arg(&self.fifo_dir)
            .args(options)
            .args([IMAGE_REF, id])
            .args(args)
            .output()
            .unwrap()
    }

    fn import(&self, archive: &Path) {
        let out = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(out.status.success(), "ctr images import: {out:?}");
    }

    /// The STATUS column of `ctr task ls` for `id`.
    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&id))
            .and_then(|fields| fields.get(2).map(|s| s.to_string()))
    }

    fn task_pid(&self, id: &str) -> i32 {
        let out = self.ctr(&["task", "ls"]);
        text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&id))
            .and_then(|fields| fields.get(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no task {id}: {out:?}"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims outlive containerd: stop and delete their tasks first.
        let tasks = text(&self.ctr(&["task", "ls", "-q"]).stdout);
        for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
            let _ = wait_for(Duration::from_secs(10), "task delete", || {
                self.ctr(&["task", "delete", id])
                    .status
                    .success()
                    .then_some(())
            });
        }
        let containers = text(&self.ctr(&["containers", "ls", "-q"]).stdout);
        for id in containers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["containers", "delete", id]);
        }
        // Killing containerd (by its PID) ends its mount namespace and with
        // it every mount made there.
        drop(self.daemon.take());
        remove_cgroup_tree(&self.namespace);
    }
}

#[test]
fn containerd_runs_containers_through_berth_runtime() {
    let dir = TempDir::new("berth-upstream-ctrd").unwrap();
    let runtime = LoggingRuntime::new(&dir);
    let containerd = Containerd::start(&dir);
    containerd.import(&busybox_archive(&dir));

    // Foreground with plain stdio: output and exit code come back through the shim.
    let id = unique_name("once");
    let greeting = format!("GREETING=hello from {id}");
    let out = containerd.run(
        &runtime,
        &["--rm", "--env", &greeting],
        &id,
        &["sh", "-c", "echo $GREETING; echo oops >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(text(&out.stdout), format!("hello from {id}\n"), "{out:?}");
    assert!(text(&out.stderr).contains("oops"), "{out:?}");
    // --rm removed the container and the runtime's state for it.
    assert!(!text(&containerd.ctr(&["containers", "ls", "-q"]).stdout).contains(&id));
    assert!(!containerd.runtime_root.join(&id).exists());

    let root = containerd.runtime_root.display().to_string();
    for verb in ["create", "start", "delete"] {
        let calls = runtime.invocations_of(verb);
        assert!(
            calls.iter().any(|c| c.contains(&root) && c.contains(&id)),
            "no `{verb}` of {id} with --root {root} in {calls:?}"
        );
    }

    // Detached task, then exec, kill and delete.
    let id = unique_name("detached");
    let out = containerd.run(&runtime, &["-d"], &id, &["sleep", "1000"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(containerd.task_status(&id).as_deref(), Some("RUNNING"));
    let pid = containerd.task_pid(&id);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = format!(":/{}/{id}", containerd.namespace);
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(":pids:") && l.ends_with(&expected)),
        "{cgroups}"
    );

    let exec = containerd
        .ctr_command()
        .args(["task", "exec", "--exec-id", "probe", "--fifo-dir"])
        .arg(&containerd.fifo_dir)
        .args([
            &id,
            "sh",
            "-c",
            "echo exec sees $(cat /proc/1/comm) > /exec-probe; exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(5), "{exec:?}");
    // Read from the container's root, not from ctr's stdout: Debian's ctr 1.6 deletes an
    // exec before draining its output, so a process that exits at once can lose it there
    // (fixed upstream in containerd PR 13931, "ctr: drain exec output before cleanup").
    let probe = std::fs::read_to_string(format!("/proc/{pid}/root/exec-probe")).unwrap();
    assert_eq!(probe, "exec sees sleep\n", "{exec:?}");
    assert!(
        runtime
            .invocations_of("exec")
            .iter()
            .any(|c| c.contains(&id)),
        "exec did not go through berth-runtime"
    );

    let kill = containerd.ctr(&["task", "kill", "-s", "KILL", &id]);
    assert!(kill.status.success(), "{kill:?}");
    wait_for(TIMEOUT, "the task to stop", || {
        (containerd.task_status(&id).as_deref() == Some("STOPPED")).then_some(())
    })
    .unwrap();
    let delete = containerd.ctr(&["task", "delete", &id]);
    assert!(delete.status.success(), "{delete:?}");
    assert_eq!(containerd.task_status(&id), None);
    assert!(!containerd.runtime_root.join(&id).exists());
    assert!(
        runtime
            .invocations_of("kill")
            .iter()
            .any(|c| c.contains(&id) && (c.ends_with(" 9") || c.ends_with(" KILL"))),
        "{:?}",
        runtime.invocations_of("kill")
    );
    let delete = containerd.ctr(&["containers", "delete", &id]);
    assert!(delete.status.success(), "{delete:?}");
    // The runtime removed the container's cgroup on delete.
    assert!(
        cgroup::existing(&format!("/{}/{id}", containerd.namespace)).is_empty(),
        "{:?}",
        cgroup::existing(&format!("/{}/{id}", containerd.namespace))
    );
}

// ------------------------------------------------------------------- podman

/// podman on temp dirs with `runtime` as its OCI runtime. Every invocation
/// runs in a fresh private mount namespace with a tmpfs on /run, so neither
/// its storage mounts nor its run-time files reach the host; containers go
/// into cgroups below a parent of this test alone, removed on drop.
struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    fn new(dir: &TempDir, runtime: &LoggingRuntime) -> Self {
        Self {
            dir: dir.path().to_path_buf(),
            runtime: PathBuf::from(runtime.path()),
            cgroup_parent: unique_name("berth-podman"),
        }
    }

    /// `podman run --rm` of the OCI archive with `args`, feeding `stdin`.
    fn run(&self, archive: &Path, options: &[&str], args: &[&str], stdin: &[u8]) -> Output {
        let mut command = private_mount_ns_command("sh");
        command
            .args([
                "-c",
                "mount -t tmpfs tmpfs /run && exec podman \"$@\"",
                "podman",
            ])
            .arg("--root")
            .arg(self.dir.join("podman-storage"))
            // Run-time state lives on the namespace's own /run: each
            // invocation starts as if after a reboot (runroot must also be
            // shorter than 50 characters).
            .args(["--runroot", "/run/podman", "--tmpdir", "/run/libpod"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args([
                "--storage-driver",
                "overlay",
                "run",
                "--rm",
                "--network",
                "none",
            ])
            .args(["--cgroup-parent", &format!("/{}", self.cgroup_parent)])
            // podman's default RLIMIT_NOFILE/NPROC exceed the hard limits here
            // and raising them needs CAP_SYS_RESOURCE (runc fails the same way).
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(options)
            .arg(format!("oci-archive:{}", archive.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // conmon leaves its cgroup just after `run --rm` returns.
        let _ = wait_for(TIMEOUT, "podman's cgroups to be removable", || {
            remove_cgroup_tree(&self.cgroup_parent);
            cgroup::existing(&self.cgroup_parent)
                .is_empty()
                .then_some(())
        });
    }
}

#[test]
fn podman_runs_containers_through_berth_runtime() {
    let dir = TempDir::new("berth-upstream-podman").unwrap();
    let runtime = LoggingRuntime::new(&dir);
    let podman = Podman::new(&dir, &runtime);
    let archive = busybox_archive(&dir);

    let out = podman.run(&archive, &[], &["echo", "hi"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n", "{out:?}");

    let out = podman.run(
        &archive,
        &[],
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n", "{out:?}");
    assert!(text(&out.stderr).contains("err\n"), "{out:?}");

    let out = podman.run(
        &archive,
        &["-i"],
        &["sh", "-c", "tr a-z A-Z"],
        b"piped in\n",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "PIPED IN\n", "{out:?}");

    for verb in ["create", "start", "delete"] {
        assert_eq!(
            runtime.invocations_of(verb).len(),
            3,
            "{verb}: {:?}",
            runtime.invocations_of(verb)
        );
    }
}
