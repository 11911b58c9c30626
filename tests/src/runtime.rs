//! Driving a runc-compatible runtime CLI (`berth-runtime`, runc, crun) from
//! tests: each [`Runtime`] has its own `--root` state directory, each
//! [`Container`] is deleted (forcibly) when the test ends.

use crate::bundle::Bundle;
use crate::tempdir::TempDir;
use crate::wait_for;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long tests wait for a container to reach a state.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long stdout/stderr may stay open after a runtime command exited.
const STDIO_GRACE: Duration = Duration::from_secs(5);

pub struct Runtime {
    binary: PathBuf,
    root: TempDir,
}

impl Runtime {
    /// The runtime named by `BERTH_TEST_RUNTIME`, else the workspace's
    /// `berth-runtime`, with a fresh state root.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::new(crate::bins::runtime_binary())
    }

    pub fn new(binary: PathBuf) -> anyhow::Result<Self> {
        anyhow::ensure!(
            binary.exists(),
            "runtime binary {} not found (build it: cargo build -p berth-cri --bin berth-runtime)",
            binary.display()
        );
        Ok(Self {
            binary,
            root: TempDir::new("berth-runtime-root")?,
        })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The `--root` state directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Whether the runtime under test is Debian's runc (for the few places
    /// where our contract and runc's legitimately differ).
    pub fn is_runc(&self) -> bool {
        self.binary.file_name().is_some_and(|n| n == "runc")
    }

    /// `<runtime> --root <root> <args...>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(self.root.path()).args(args);
        command
    }

    /// Runs a runtime command to completion, capturing its output.
    /// A runtime that hangs (or a container that keeps its stdio open after
    /// the runtime exited) fails the test after [`TIMEOUT`] instead of
    /// blocking it forever.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let what = format!("{} {}", self.binary.display(), args.join(" "));
        let mut command = self.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        output_with_timeout(command, TIMEOUT).with_context(|| format!("running {what}"))
    }

    /// Runs a runtime command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args)?;
        anyhow::ensure!(
            output.status.success(),
            "{} {} failed ({}): {}",
            self.binary.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `run` in the foreground: the container's stdout/stderr are captured
    /// and the exit status is the container's.
    pub fn run(&self, bundle: &Bundle) -> anyhow::Result<Output> {
        let _cleanup = Container::adopt(self, bundle);
        self.output(&["run", "--bundle", path_str(bundle.path())?, bundle.id()])
    }

    /// `run` that must exit 0; returns the container's stdout.
    pub fn run_ok(&self, bundle: &Bundle) -> anyhow::Result<String> {
        let output = self.run(bundle)?;
        anyhow::ensure!(
            output.status.success(),
            "container exited with {}: stdout {:?} stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `create`: the container's stdout and stderr go to `stdout.log` and
    /// `stderr.log` in the bundle (a pipe would stay open as long as the
    /// container runs).
    pub fn create<'a>(&'a self, bundle: &'a Bundle) -> anyhow::Result<Container<'a>> {
        self.create_with(bundle, &[])
    }

    /// `create` with extra options (e.g. `--console-socket <path>`).
    pub fn create_with<'a>(
        &'a self,
        bundle: &'a Bundle,
        options: &[&str],
    ) -> anyhow::Result<Container<'a>> {
        let container = Container::adopt(self, bundle);
        let pid_file = container.pid_file();
        let stdout = std::fs::File::create(bundle.path().join("stdout.log"))?;
        let stderr = std::fs::File::create(bundle.path().join("stderr.log"))?;
        let status = self
            .command(&["create", "--bundle", path_str(bundle.path())?])
            .args(options)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(bundle.id())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .context("running create")?;
        anyhow::ensure!(
            status.success(),
            "create failed ({status}): {}",
            std::fs::read_to_string(bundle.path().join("stderr.log")).unwrap_or_default()
        );
        Ok(container)
    }

    /// A guard for container `bundle.id()` whether or not it exists: for
    /// tests that expect a command to fail but must clean up if it did not.
    pub fn adopt<'a>(&'a self, bundle: &'a Bundle) -> Container<'a> {
        Container::adopt(self, bundle)
    }

    /// `create` then `start`.
    pub fn start<'a>(&'a self, bundle: &'a Bundle) -> anyhow::Result<Container<'a>> {
        let container = self.create(bundle)?;
        self.ok(&["start", bundle.id()])?;
        Ok(container)
    }
}

/// `Command::output` with a deadline for the process to exit and for its
/// stdout/stderr to reach EOF. On timeout the process is killed (by PID).
fn output_with_timeout(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = crate::child::ChildGuard::new(command.spawn()?);
    let stdout = read_in_background(child.child_mut().stdout.take());
    let stderr = read_in_background(child.child_mut().stderr.take());
    let status = wait_for(timeout, "the runtime to exit", || {
        child.try_wait().ok().flatten()
    })?;
    // Whatever the runtime ran in the foreground has exited with it, so EOF
    // follows at once unless a container process still holds the pipes.
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(STDIO_GRACE)
            .context("stdio still open after the runtime exited (a container process holds it)")
    };
    Ok(Output {
        status,
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
    })
}

fn read_in_background(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// A container of a [`Runtime`]; dropping it runs `delete --force` (the
/// bundle removes any cgroup directory the runtime left).
pub struct Container<'a> {
    runtime: &'a Runtime,
    bundle: &'a Bundle,
}

impl<'a> Container<'a> {
    fn adopt(runtime: &'a Runtime, bundle: &'a Bundle) -> Self {
        Self { runtime, bundle }
    }

    pub fn id(&self) -> &str {
        self.bundle.id()
    }

    pub fn bundle(&self) -> &Bundle {
        self.bundle
    }

    fn pid_file(&self) -> PathBuf {
        self.bundle.path().join("container.pid")
    }

    /// The container init's host PID, from `--pid-file`.
    pub fn pid(&self) -> anyhow::Result<i32> {
        let text = std::fs::read_to_string(self.pid_file()).context("reading the pid file")?;
        text.trim()
            .parse()
            .with_context(|| format!("pid file holds {text:?}"))
    }

    /// `state` as JSON.
    pub fn state(&self) -> anyhow::Result<Value> {
        let stdout = self.runtime.ok(&["state", self.id()])?;
        serde_json::from_str(&stdout).with_context(|| format!("state output {stdout:?}"))
    }

    /// The `status` field of `state`.
    pub fn status(&self) -> anyhow::Result<String> {
        Ok(self.state()?["status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn wait_status(&self, status: &str) -> anyhow::Result<()> {
        wait_for(
            TIMEOUT,
            &format!("container {} to be {status}", self.id()),
            || self.status().ok().filter(|s| s == status).map(|_| ()),
        )
    }

    /// What the container wrote to its stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.bundle.path().join("stdout.log")).unwrap_or_default()
    }

    /// Waits until the container's stdout contains `text`; returns it all.
    pub fn wait_stdout(&self, text: &str) -> anyhow::Result<String> {
        wait_for(
            TIMEOUT,
            &format!("{text:?} on the stdout of {}", self.id()),
            || {
                let stdout = self.stdout();
                stdout.contains(text).then_some(stdout)
            },
        )
        .with_context(|| {
            format!(
                "stdout {:?} stderr {:?}",
                self.stdout(),
                std::fs::read_to_string(self.bundle.path().join("stderr.log")).unwrap_or_default()
            )
        })
    }

    /// `exec` of `args` in the container, capturing output.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_with(&[], args)
    }

    /// `exec <options...> <id> <args...>` (options such as `--env K=V`).
    pub fn exec_with(&self, options: &[&str], args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["exec"];
        all.extend_from_slice(options);
        all.push(self.id());
        all.extend_from_slice(args);
        self.runtime.output(&all)
    }

    pub fn kill(&self, signal: &str) -> anyhow::Result<()> {
        self.runtime.ok(&["kill", self.id(), signal]).map(|_| ())
    }

    pub fn delete(&self) -> anyhow::Result<()> {
        self.runtime.ok(&["delete", self.id()]).map(|_| ())
    }

    /// Whether the runtime still knows the container.
    pub fn exists(&self) -> bool {
        self.runtime
            .output(&["state", self.id()])
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.output(&["delete", "--force", self.id()]);
    }
}

impl Runtime {
    /// What container `bundle.id()` left behind after it was deleted (or
    /// failed to be created): its state directory under `--root`, cgroup
    /// directories, mounts under the bundle, and processes whose root or
    /// working directory is inside the bundle. Empty when all is clean.
    pub fn leftovers(&self, bundle: &Bundle) -> Vec<String> {
        let mut found = Vec::new();
        let state_dir = self.root().join(bundle.id());
        if state_dir.exists() {
            found.push(format!("state dir {}", state_dir.display()));
        }
        for controller in crate::cgroup::existing(&bundle.cgroups_path()) {
            found.push(format!("{controller} cgroup {}", bundle.cgroups_path()));
        }
        for mount in crate::tempdir::mounts_under(bundle.path()) {
            found.push(format!("mount {}", mount.display()));
        }
        for pid in processes_inside(bundle.path()) {
            found.push(format!("process {pid}"));
        }
        found
    }
}

/// PIDs whose root or cwd lies under `dir`, as seen from this mount namespace.
fn processes_inside(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            ["root", "cwd"].iter().any(|link| {
                std::fs::read_link(format!("/proc/{pid}/{link}")).is_ok_and(|p| p.starts_with(dir))
            })
        })
        .collect()
}
