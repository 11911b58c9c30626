//! A CRI daemon process under test: started in a private mount namespace
//! (overlay snapshots and pod netns bind mounts never reach the host), in the
//! network namespace of the calling thread, ready once its socket answers
//! `Status` with RuntimeReady. Killed by PID together with the processes it
//! forked (found by its mount namespace) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_proto::runtime::v1::StatusRequest;
use tonic::transport::Channel;

use super::endpoint::EndpointKind;
use super::procs;
use super::{berth, containerd};

const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Everything a daemon is configured with; all paths are inside the test's temp dir.
#[derive(Clone, Debug)]
pub struct DaemonLayout {
    /// Root of the daemon's own dirs (state, root, config, log).
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// containerd-style registry hosts dir (`<host>/hosts.toml`).
    pub registry_config_dir: PathBuf,
    /// The sandbox (pause) image, for runtimes that run one.
    pub pause_image: String,
    /// More berth-cri flags a test needs (containerd ignores them).
    pub extra_flags: Vec<String>,
}

impl DaemonLayout {
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
}

pub struct Daemon {
    kind: EndpointKind,
    layout: DaemonLayout,
    child: Option<Child>,
    /// Inode of the daemon's mount namespace, and an open handle on it: the
    /// handle keeps the namespace (and so its inode number) alive, so a new
    /// namespace of another test can never reuse the number and be taken for
    /// ours.
    mount_ns: u64,
    mount_ns_handle: Option<std::fs::File>,
}

impl Daemon {
    /// Starts the daemon of `kind` and waits until it reports RuntimeReady.
    pub async fn start(kind: EndpointKind, layout: DaemonLayout) -> anyhow::Result<Daemon> {
        let mut daemon = Daemon {
            kind,
            layout,
            child: None,
            mount_ns: 0,
            mount_ns_handle: None,
        };
        daemon.spawn().await?;
        Ok(daemon)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = match self.kind {
            EndpointKind::Containerd => containerd::command(&self.layout)?,
            EndpointKind::Berth => berth::command(&self.layout)?,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log_file())?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.kind.name()))?;
        let pid = child.id();
        self.child = Some(child);
        // `unshare` execs the daemon: the PID is the daemon's once it has
        // left the parent's mount namespace.
        let parent_ns = procs::mount_ns_of(std::process::id());
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            self.check_alive()?;
            if let Ok(handle) = std::fs::File::open(format!("/proc/{pid}/ns/mnt")) {
                let ns = std::os::unix::fs::MetadataExt::ino(&handle.metadata()?);
                if Some(ns) != parent_ns {
                    self.mount_ns = ns;
                    self.mount_ns_handle = Some(handle);
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} never unshared",
                self.kind.name()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.wait_ready(deadline).await
    }

    async fn wait_ready(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let mut last_error = String::from("socket not created");
        while Instant::now() < deadline {
            self.check_alive()?;
            if self.layout.socket.exists() {
                match self.ready().await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!(
            "{} not ready within {READY_DEADLINE:?}: {last_error}\n{}",
            self.kind.name(),
            self.log_tail()
        )
    }

    async fn ready(&self) -> anyhow::Result<()> {
        let mut client = berth_proto::runtime_client(self.connect().await?);
        let status = client
            .status(StatusRequest { verbose: false })
            .await?
            .into_inner()
            .status
            .context("Status without status")?;
        let runtime_ready = status
            .conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status);
        anyhow::ensure!(
            runtime_ready,
            "RuntimeReady is not true: {:?}",
            status.conditions
        );
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            anyhow::bail!(
                "{} exited with {status}\n{}",
                self.kind.name(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.layout.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub async fn connect(&self) -> anyhow::Result<Channel> {
        Ok(berth_proto::connect_unix(&self.layout.socket).await?)
    }

    pub fn kind(&self) -> EndpointKind {
        self.kind
    }

    pub fn layout(&self) -> &DaemonLayout {
        &self.layout
    }

    pub fn socket(&self) -> &Path {
        &self.layout.socket
    }

    /// PID of the daemon itself.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The daemon and every process it forked that stayed in its mount
    /// namespace: containerd's shims, berth-cri's supervisors.
    pub fn processes(&self) -> Vec<u32> {
        procs::mount_ns_processes(self.mount_ns)
    }

    /// Sum of VmRSS (KiB) of [`Daemon::processes`].
    pub fn rss_kib(&self) -> u64 {
        self.processes().into_iter().map(procs::rss_kib).sum()
    }

    /// Sum of PSS (KiB) of [`Daemon::processes`].
    pub fn pss_kib(&self) -> u64 {
        self.processes().into_iter().map(procs::pss_kib).sum()
    }

    /// SIGKILLs the daemon alone (its shims/supervisors keep running), as a
    /// crash would, and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the daemon as an operator does (SIGTERM), killing it if it has
    /// not exited within 30s; then ends what is left in its mount namespace.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill_everything();
        Ok(())
    }

    /// Starts the daemon again with the same configuration after [`Daemon::kill`].
    /// The new one shares nothing in memory with the old: it must re-adopt
    /// what the old one left running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "restart of a running daemon");
        self.spawn().await
    }

    /// Kills the daemon and everything left in its mount namespace.
    pub(crate) fn kill_everything(&mut self) {
        let _ = self.kill();
        if self.mount_ns != 0 {
            procs::kill_all(&self.processes());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_everything();
    }
}
