//! One test's CRI world: a network namespace the test thread lives in, a local
//! registry with the test images, the daemon under test and connected clients.

use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_proto::runtime::v1::image_service_client::ImageServiceClient;
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_proto::runtime::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig,
    PodSandboxStatusRequest, PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use super::daemon::{Daemon, DaemonLayout};
use super::endpoint::{EndpointKind, berth_cri_binary, require_berth_cri};
use super::images::TestImages;
use super::{config, network, procs};
use crate::netns::NetNs;
use crate::registry::{Registry, RegistryOptions};

/// How long the fixture waits for a container to reach a state.
pub const STATE_DEADLINE: Duration = Duration::from_secs(60);

/// Creates a network namespace and moves the calling thread into it, so that
/// everything this thread (and threads and children it creates later) does
/// on the network — the registry, the daemon, streaming connections — stays
/// inside it. Its loopback is brought up. The guard deletes its name on drop.
pub fn enter_test_netns() -> anyhow::Result<NetNs> {
    let netns = NetNs::new()?;
    let status = std::process::Command::new("ip")
        .args(["-n", netns.name(), "link", "set", "lo", "up"])
        .status()
        .context("running ip")?;
    anyhow::ensure!(
        status.success(),
        "ip -n {} link set lo up failed",
        netns.name()
    );
    let file = std::fs::File::open(netns.path())?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .context("setns into the test netns")?;
    Ok(netns)
}

/// Runs one CRI test against the endpoint `BERTH_TEST_CRI` selects, in a fresh
/// network namespace with its own registry and daemon, and cleans all of it up
/// whether the test passes, fails or panics.
///
/// With `BERTH_TEST_CRI` unset and berth-cri not built, the test is skipped
/// with the reason on stderr; with `BERTH_TEST_CRI=berth` it fails instead.
pub fn run<F, Fut>(test: F) -> anyhow::Result<()>
where
    F: FnOnce(CriEnv) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_with_flags(&[], test)
}

/// [`run`] with more berth-cri flags (containerd ignores them: a test
/// that needs them checks [`CriEnv::kind`]).
pub fn run_with_flags<F, Fut>(flags: &[&str], test: F) -> anyhow::Result<()>
where
    F: FnOnce(CriEnv) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (kind, explicit) = EndpointKind::selection()?;
    if kind == EndpointKind::Berth && !berth_cri_binary().is_file() {
        if explicit {
            require_berth_cri()?;
        }
        eprintln!(
            "SKIP: {} is not built and BERTH_TEST_CRI is unset (set BERTH_TEST_CRI=containerd \
             to check the suite against the reference, BERTH_TEST_CRI=berth to require berth-cri)",
            berth_cri_binary().display()
        );
        return Ok(());
    }
    let netns = enter_test_netns()?;
    // Built after setns: its worker threads inherit the test netns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let flags = flags.iter().map(|f| f.to_string()).collect();
        let env = CriEnv::start_with_flags(kind, 0, flags).await?;
        test(env).await
    });
    drop(runtime);
    drop(netns);
    result
}

pub struct CriEnv {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    pub images: TestImages,
    pub daemon: Daemon,
    pub registry: Registry,
    cgroup_parent: String,
    dir: tempfile::TempDir,
}

impl CriEnv {
    /// Starts a registry with the test images and the daemon of `kind`, in the
    /// calling thread's network namespace. `instance` tells apart several
    /// environments in one netns (the benchmark): bridge and subnet differ.
    pub async fn start(kind: EndpointKind, instance: u8) -> anyhow::Result<CriEnv> {
        Self::start_with_flags(kind, instance, Vec::new()).await
    }

    /// [`CriEnv::start`] with more berth-cri flags.
    pub async fn start_with_flags(
        kind: EndpointKind,
        instance: u8,
        extra_flags: Vec<String>,
    ) -> anyhow::Result<CriEnv> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-cri-{}-", kind.name()))
            .tempdir()?;
        let registry = Registry::start(RegistryOptions::default())?;
        let images = TestImages::push(&registry).await?;
        let registry_config_dir = dir.path().join("certs.d");
        registry.write_hosts_toml(&registry_config_dir)?;
        let (cni_conf_dir, cni_bin_dir) = network::write_cni(dir.path(), instance)?;
        let daemon_dir = dir.path().join("daemon");
        std::fs::create_dir_all(&daemon_dir)?;
        let layout = DaemonLayout {
            socket: daemon_dir.join("cri.sock"),
            dir: daemon_dir,
            cni_conf_dir,
            cni_bin_dir,
            registry_config_dir,
            pause_image: images.pause.clone(),
            extra_flags,
        };
        let cgroup_parent = format!("/{}", crate::unique_name("berth-cri-test"));
        let daemon = Daemon::start(kind, layout).await?;
        let channel = daemon.connect().await?;
        Ok(CriEnv {
            runtime: berth_proto::runtime_client(channel.clone()),
            image: berth_proto::image_client(channel),
            images,
            daemon,
            registry,
            cgroup_parent,
            dir,
        })
    }

    pub fn kind(&self) -> EndpointKind {
        self.daemon.kind()
    }

    /// The cgroup parent every pod of this environment gets (cgroupfs path).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Where pod log directories go.
    pub fn log_root(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        config::pod_config(name, &self.log_root(), &self.cgroup_parent)
    }

    /// A busybox container running `command`.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        config::container_config(name, &self.images.busybox, command)
    }

    /// Pulls `image`; returns the image ref the runtime reports.
    pub async fn pull(&mut self, image: &str) -> anyhow::Result<String> {
        let response = self
            .image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .with_context(|| format!("pulling {image}"))?;
        Ok(response.into_inner().image_ref)
    }

    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> anyhow::Result<String> {
        let response = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    /// Every sandbox the runtime lists, unfiltered.
    pub async fn list_pods(&mut self) -> anyhow::Result<Vec<PodSandbox>> {
        let response = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .context("ListPodSandbox")?;
        Ok(response.into_inner().items)
    }

    /// The containers the runtime lists in sandbox `pod`.
    pub async fn pod_containers(&mut self, pod: &str) -> anyhow::Result<Vec<Container>> {
        let response = self
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    pod_sandbox_id: pod.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .context("ListContainers")?;
        Ok(response.into_inner().containers)
    }

    /// StopPodSandbox, then RemovePodSandbox.
    pub async fn stop_and_remove_pod(&mut self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .context("StopPodSandbox")?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }

    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> anyhow::Result<String> {
        let name = config.metadata.as_ref().map(|m| m.name.clone());
        let response = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .with_context(|| format!("CreateContainer {name:?}"))?;
        Ok(response.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .with_context(|| format!("StartContainer {id}"))?;
        Ok(())
    }

    /// Pulls busybox, runs a pod named `pod_name`, creates and starts one
    /// container in it; returns (pod id, pod config, container id).
    pub async fn pod_with_container(
        &mut self,
        pod_name: &str,
        config: ContainerConfig,
    ) -> anyhow::Result<(String, PodSandboxConfig, String)> {
        let busybox = self.images.busybox.clone();
        self.pull(&busybox).await?;
        let pod_config = self.pod_config(pod_name);
        let pod = self.run_pod(&pod_config).await?;
        let container = self.create_container(&pod, &pod_config, config).await?;
        self.start_container(&container).await?;
        Ok((pod, pod_config, container))
    }

    pub async fn container_status(&mut self, id: &str) -> anyhow::Result<ContainerStatus> {
        self.runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner()
            .status
            .with_context(|| format!("ContainerStatus {id} without status"))
    }

    /// The PID of the pod's pause (sandbox) process, from verbose status.
    pub async fn pause_pid(&mut self, pod: &str) -> anyhow::Result<u32> {
        let info = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.to_string(),
                verbose: true,
            })
            .await
            .with_context(|| format!("PodSandboxStatus {pod}"))?
            .into_inner()
            .info;
        let info: serde_json::Value = serde_json::from_str(
            info.get("info")
                .with_context(|| format!("no verbose info for pod {pod}"))?,
        )?;
        info["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .with_context(|| format!("no pid in the verbose info of pod {pod}: {info}"))
    }

    /// Polls ContainerStatus until the container is in `state`.
    pub async fn wait_container_state(
        &mut self,
        id: &str,
        state: ContainerState,
    ) -> anyhow::Result<ContainerStatus> {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let status = self.container_status(id).await?;
            if status.state == state as i32 {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "container {id} not {state:?} within {STATE_DEADLINE:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_seconds: i64,
    ) -> anyhow::Result<ExecSyncResponse> {
        Ok(self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_seconds,
            })
            .await
            .with_context(|| format!("ExecSync {cmd:?} in {id}"))?
            .into_inner())
    }

    /// ExecSync that must exit 0; returns stdout as text.
    pub async fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let response = self.exec_sync(id, cmd, 30).await?;
        anyhow::ensure!(
            response.exit_code == 0,
            "{cmd:?} exited {}: {}",
            response.exit_code,
            String::from_utf8_lossy(&response.stderr)
        );
        Ok(String::from_utf8_lossy(&response.stdout).into_owned())
    }

    /// Retries `cmd` until it exits 0 (the container's own command may still be
    /// setting up what it checks); returns its stdout.
    pub async fn exec_until_ok(&mut self, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let response = self.exec_sync(id, cmd, 30).await?;
            if response.exit_code == 0 {
                return Ok(String::from_utf8_lossy(&response.stdout).into_owned());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{cmd:?} kept failing in {id}: {}",
                String::from_utf8_lossy(&response.stderr)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills whatever is still in the environment's cgroups and removes them.
    fn remove_cgroups(&self) {
        for hierarchy in crate::cgroup::hierarchies() {
            let dir = crate::cgroup::dir(&hierarchy, &self.cgroup_parent);
            if dir.exists() {
                procs::kill_all(&procs::cgroup_tree_processes(&dir));
            }
        }
        for hierarchy in crate::cgroup::hierarchies() {
            let dir = crate::cgroup::dir(&hierarchy, &self.cgroup_parent);
            // Killed processes leave their cgroups a moment after SIGKILL.
            let _ = crate::wait_for(Duration::from_secs(10), "cgroup emptied", || {
                procs::cgroup_tree_processes(&dir).is_empty().then_some(())
            });
            procs::remove_cgroup_tree(&dir);
        }
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        // Graceful first (CNI DEL, pod netns files, shims exit), on a thread of
        // its own: Drop may run inside the test's runtime. The thread inherits
        // the test netns from this one.
        let socket = self.daemon.socket().to_path_buf();
        let alive = self.daemon.pid() != 0;
        if alive {
            let _ = std::thread::spawn(move || graceful_cleanup(&socket)).join();
        }
        self.daemon.kill_everything();
        self.remove_cgroups();
    }
}

fn graceful_cleanup(socket: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let work = async {
            let mut client = berth_proto::runtime_client(berth_proto::connect_unix(socket).await?);
            let pods = client
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await?
                .into_inner()
                .items;
            for pod in pods {
                let id = pod.id;
                let _ = client
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = client
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(60), work).await?
    })
}
