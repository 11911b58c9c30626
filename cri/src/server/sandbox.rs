//! Sandbox RPCs: RunPodSandbox (every step undone on failure), Stop, Remove,
//! Status and List.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_proto::runtime::v1 as cri;
use tonic::Status;

use super::daemon::Daemon;
use super::events::EventType;
use super::phases::Phases;
use super::status::{now_nanos, present, required};
use crate::network::{CniError, PodNetwork};
use crate::sandbox::cgroup::PodCgroups;
use crate::sandbox::files::SandboxFiles;
use crate::sandbox::pause::{PauseError, SandboxNamespaces, spawn_pause};
use crate::sandbox::{netns, process, sysctl};
use crate::store::{SandboxRecord, SandboxState, StoreError};
use crate::supervisor::client::{self, SupervisorError};

/// Things made by RunPodSandbox, undone in reverse order unless disarmed.
#[derive(Default)]
struct Rollback {
    name: Option<String>,
    dir: Option<PathBuf>,
    netns: Option<PathBuf>,
    network: Option<PodNetwork>,
    pause: Option<(i32, u64)>,
    cgroups: Option<PodCgroups>,
    /// The supervisor's dir: it is shut down and the dir removed.
    supervisor: Option<PathBuf>,
    /// The id of the sandbox whose record was written.
    record: Option<String>,
}

impl Rollback {
    async fn undo(self, daemon: &Daemon) {
        if let Some(dir) = self.supervisor {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = client::shutdown(&dir);
                std::fs::remove_dir_all(&dir)
            })
            .await;
        }
        if let Some((pid, started)) = self.pause {
            let _ = tokio::task::spawn_blocking(move || {
                process::kill_and_wait(pid, started, Duration::from_secs(10))
            })
            .await;
        }
        if let Some(cgroups) = &self.cgroups
            && let Err(e) = cgroups.remove()
        {
            tracing::warn!("rollback of the sandbox cgroup: {e}");
        }
        if let Some(pod) = &self.network
            && let Err(e) = daemon.cni.teardown(pod).await
        {
            tracing::warn!(sandbox = %pod.sandbox_id, "rollback of the pod network: {e}");
        }
        if let Some(path) = &self.netns
            && let Err(e) = netns::remove(path)
        {
            tracing::warn!("rollback of {}: {e}", path.display());
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(id) = &self.record
            && let Err(e) = daemon.sandboxes.delete(id)
        {
            tracing::warn!(sandbox = %id, "rollback of the record: {e}");
        }
        if let Some(name) = &self.name {
            daemon.sandboxes.release_name(name);
        }
    }
}

pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound { .. } => Status::not_found(error.to_string()),
        StoreError::Ambiguous { .. } => Status::invalid_argument(error.to_string()),
        StoreError::Reserved(_) => Status::already_exists(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

fn cni_status(error: CniError) -> Status {
    match error {
        CniError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        _ => Status::unknown(error.to_string()),
    }
}

fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// containerd's sandbox name: `<name>_<namespace>_<uid>_<attempt>`.
fn sandbox_name(meta: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    )
}

fn validate_config(config: &cri::PodSandboxConfig) -> Result<(), Status> {
    let meta = present(&config.metadata, "config.metadata")?;
    required(&meta.name, "config.metadata.name")?;
    required(&meta.namespace, "config.metadata.namespace")?;
    required(&meta.uid, "config.metadata.uid")?;
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    for (field, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
        if cri::NamespaceMode::try_from(mode).is_err() || mode == cri::NamespaceMode::Target as i32
        {
            return Err(Status::invalid_argument(format!(
                "config.linux.security_context.namespace_options.{field}: unsupported mode {mode}"
            )));
        }
    }
    if let Some(linux) = &config.linux {
        sysctl::validate(
            &linux.sysctls,
            ns.network == cri::NamespaceMode::Node as i32,
            ns.ipc == cri::NamespaceMode::Node as i32,
        )
        .map_err(|e| Status::invalid_argument(format!("config.linux.sysctls: {e}")))?;
    }
    Ok(())
}

impl Daemon {
    pub async fn run_pod_sandbox(
        &self,
        request: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse, Status> {
        let config = present(&request.config, "config")?.clone();
        validate_config(&config)?;
        let meta = config.metadata.clone().unwrap_or_default();
        let id = new_id();
        let name = sandbox_name(&meta);
        let span = tracing::info_span!("RunPodSandbox", pod_uid = %meta.uid, sandbox = %id);
        let _entered = span.enter();
        self.sandboxes
            .reserve_name(&name, &id)
            .map_err(store_status)?;
        let mut made = Rollback {
            name: Some(name.clone()),
            ..Rollback::default()
        };
        drop(_entered);
        match self
            .make_sandbox(&id, &name, config, &request.runtime_handler, &mut made)
            .await
        {
            Ok(()) => {
                self.emit_event(&id, &id, EventType::ContainerCreatedEvent);
                self.emit_event(&id, &id, EventType::ContainerStartedEvent);
                Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
            }
            Err(status) => {
                made.undo(self).await;
                Err(status)
            }
        }
    }

    async fn make_sandbox(
        &self,
        id: &str,
        name: &str,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
        made: &mut Rollback,
    ) -> Result<(), Status> {
        let mut phases = Phases::begin("RunPodSandbox");
        let mut record = SandboxRecord {
            id: id.to_string(),
            name: name.to_string(),
            config,
            runtime_handler: runtime_handler.to_string(),
            created_at: now_nanos(),
            state: SandboxState::Ready,
            netns: None,
            pause_pid: None,
            pause_start_time: None,
            ips: Vec::new(),
            network_attached: false,
            dir: self.sandbox_dir(id),
        };
        let ns = record.namespace_options();
        let host_network = record.host_network();
        let node = cri::NamespaceMode::Node as i32;

        std::fs::create_dir_all(&record.dir)
            .map_err(|e| Status::internal(format!("creating {}: {e}", record.dir.display())))?;
        made.dir = Some(record.dir.clone());
        let hostname = if host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            record.config.hostname.clone()
        };
        SandboxFiles::in_dir(&record.dir)
            .write(&hostname, record.config.dns_config.as_ref(), host_network)
            .map_err(|e| Status::internal(format!("writing sandbox files: {e}")))?;

        if !host_network {
            let path = self
                .netns
                .create()
                .map_err(|e| Status::internal(format!("creating pod network namespace: {e}")))?;
            made.netns = Some(path.clone());
            record.netns = Some(path);
        }

        phases.done("files and netns");
        // The pause process, the pod's supervisor and the CNI ADD only need
        // the netns: they start at the same time.
        let namespaces = SandboxNamespaces {
            host_network,
            host_pid: ns.pid == node,
            host_ipc: ns.ipc == node,
            netns: record.netns.clone(),
            hostname: (!host_network && !record.config.hostname.is_empty())
                .then(|| record.config.hostname.clone()),
        };
        let placement = match PodCgroups::of(&record.config, self.config.cgroup_driver, id) {
            Some(cgroups) => Some((
                cgroups,
                PodCgroups::overhead(&record.config).map_err(Status::invalid_argument)?,
            )),
            None => None,
        };
        let pause_binary = self.config.pause_binary.clone();
        // Moving pause into its cgroup may wait for an RCU grace period
        // (cgroup v1 migration): it happens here, while CNI runs.
        let pause = tokio::task::spawn_blocking(move || {
            let pause = spawn_pause(&pause_binary, &namespaces)?;
            let pid = pause.pid();
            let started = process::start_time(pid);
            let placed = match (placement, started) {
                (Some((cgroups, overhead)), Some(_)) => Some(
                    cgroups
                        .place(pid, overhead.as_ref())
                        .map(|()| cgroups)
                        .map_err(|e| e.to_string()),
                ),
                _ => None,
            };
            Ok((pid, started, placed))
        });
        let supervisor_dir = self.supervisor_dir(id);
        let supervisor = {
            let (binary, root, dir) = (
                self.supervisor_binary(),
                self.runtime_root(),
                supervisor_dir.clone(),
            );
            tokio::task::spawn_blocking(move || client::start(&binary, &dir, &root))
        };
        let network = async {
            if host_network {
                return Ok(None);
            }
            let pod = PodNetwork::from_sandbox_config(id, record.netns.clone(), &record.config)
                .map_err(cni_status)?;
            let setup = self.cni.setup(&pod).await.map_err(cni_status)?;
            Ok::<_, Status>(Some((pod, setup)))
        };
        // The record's wait for the disk overlaps the CNI ADD. What a power
        // loss leaves of it (the processes are gone then) is this early
        // version: with the network taken as attached, so that stopping
        // the sandbox still runs the CNI DEL that releases its address.
        let early = SandboxRecord {
            network_attached: !host_network,
            ..record.clone()
        };
        let written = tokio::task::spawn_blocking(self.sandboxes.write_new(&early));
        let network = network.await;
        let written = written
            .await
            .map_err(|e| Status::internal(format!("record write task: {e}")))
            .and_then(|w| w.map_err(store_status));
        if written.is_ok() {
            made.record = Some(id.to_string());
        }
        phases.done("network and record");
        let pause = match pause.await {
            Ok(spawned) => spawned.map_err(|e: PauseError| e.to_string()),
            Err(e) => Err(format!("spawn task: {e}")),
        };
        let supervisor = supervisor
            .await
            .unwrap_or_else(|e| Err(SupervisorError::Failed(format!("start task: {e}"))));
        phases.done("pause and supervisor");
        // Everything that did start is recorded for the rollback first.
        if let Ok((pid, Some(started), placed)) = &pause {
            made.pause = Some((*pid, *started));
            if let Some(Ok(cgroups)) = placed {
                made.cgroups = Some(cgroups.clone());
            }
        }
        if supervisor.is_ok() {
            made.supervisor = Some(supervisor_dir);
        }
        if let Ok(Some((pod, _))) = &network {
            made.network = Some(pod.clone());
        }
        written?;
        if let Some((_, setup)) = network? {
            record.network_attached = true;
            if let Some(ips) = setup.ips {
                record.ips = std::iter::once(ips.ip)
                    .chain(ips.additional)
                    .map(|ip| ip.to_string())
                    .collect();
            }
        }
        let (pause_pid, started, placed) = pause.map_err(|e| {
            Status::unknown(format!(
                "starting pause process ({}): {e}",
                self.config.pause_binary.display()
            ))
        })?;
        let started = started.ok_or_else(|| Status::internal("pause process exited at once"))?;
        if let Some(Err(e)) = placed {
            return Err(Status::invalid_argument(format!(
                "config.linux.cgroup_parent: placing pause in the pod cgroup: {e}"
            )));
        }
        supervisor.map_err(|e| Status::unknown(format!("starting the pod's supervisor: {e}")))?;
        record.pause_pid = Some(pause_pid);
        record.pause_start_time = Some(started);

        if let Some(linux) = &record.config.linux {
            sysctl::apply(pause_pid, &linux.sysctls)
                .map_err(|e| Status::invalid_argument(format!("config.linux.sysctls: {e}")))?;
        }
        self.sandboxes
            .insert_written(record)
            .map_err(store_status)?;
        phases.done("record added");
        tracing::info!(sandbox = %id, pause = pause_pid, "pod sandbox ready");
        Ok(())
    }

    /// Stops the sandbox's processes and releases its network; idempotent,
    /// and like containerd a sandbox that is already gone is no error.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        required(id, "pod_sandbox_id")?;
        let record = match self.sandboxes.get(id) {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(store_status(e)),
        };
        // STOPPED is announced when pause goes from alive to dead; the exit
        // watcher announces a pause that died on its own.
        let was_running = Self::observed_state(&record) == cri::PodSandboxState::SandboxReady;
        self.stop_sandbox_containers(&record.id).await?;
        if let (Some(pid), Some(started)) = (record.pause_pid, record.pause_start_time) {
            tokio::task::spawn_blocking(move || {
                process::kill_and_wait(pid, started, Duration::from_secs(10))
            })
            .await
            .map_err(|e| Status::internal(format!("stopping pause process: {e}")))?;
        }
        self.remove_sandbox_cgroup(&record)?;
        if record.network_attached {
            // The netns may have vanished (a reboot): DEL still runs, without it.
            let live_netns = record.netns.clone().filter(|p| netns::exists(p));
            let pod = PodNetwork::from_sandbox_config(&record.id, live_netns, &record.config)
                .map_err(cni_status)?;
            self.cni.teardown(&pod).await.map_err(|e| {
                Status::unknown(format!(
                    "tearing down network of sandbox {}: {e}",
                    record.id
                ))
            })?;
        }
        if let Some(path) = &record.netns {
            netns::remove(path).map_err(|e| Status::internal(e.to_string()))?;
        }
        self.sandboxes
            .update(&record.id, |r| {
                r.state = SandboxState::NotReady;
                r.network_attached = false;
                r.netns = None;
                r.pause_pid = None;
                r.pause_start_time = None;
            })
            .map_err(store_status)?;
        tracing::info!(sandbox = %record.id, "pod sandbox stopped");
        if was_running {
            self.emit_sandbox_stopped(&record.id);
        }
        Ok(())
    }

    /// Stops (if needed) and forgets the sandbox; a missing one is fine.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        required(id, "pod_sandbox_id")?;
        let record = match self.sandboxes.get(id) {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(store_status(e)),
        };
        self.stop_pod_sandbox(&record.id).await?;
        self.remove_sandbox_containers(&record.id).await?;
        if let Err(e) = std::fs::remove_dir_all(&record.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Status::internal(format!(
                "removing {}: {e}",
                record.dir.display()
            )));
        }
        self.sandboxes.delete(&record.id).map_err(store_status)?;
        self.emit_event(&record.id, &record.id, EventType::ContainerDeletedEvent);
        Ok(())
    }

    /// READY only while the pause process lives.
    pub(super) fn observed_state(record: &SandboxRecord) -> cri::PodSandboxState {
        let alive = match (record.pause_pid, record.pause_start_time) {
            (Some(pid), Some(started)) => process::is_alive(pid, started),
            _ => false,
        };
        // The pause process holds the pod netns even where its pin is not
        // visible (another mount namespace): its life is what counts.
        if record.state == SandboxState::Ready && alive {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
    }

    pub fn pod_sandbox_status(
        &self,
        request: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        required(&request.pod_sandbox_id, "pod_sandbox_id")?;
        let record = self
            .sandboxes
            .get(&request.pod_sandbox_id)
            .map_err(store_status)?;
        let state = Self::observed_state(&record);
        let mut ips = record.ips.iter();
        let network = (!record.host_network()).then(|| cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        });
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "pid": record.pause_pid,
                "netNamespacePath": record.netns,
                "sandboxDir": record.dir,
                "runtimeHandler": record.runtime_handler,
                "name": record.name,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: record.id.clone(),
                metadata: Some(record.metadata()),
                state: state as i32,
                created_at: record.created_at,
                network,
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: Some(record.namespace_options()),
                    }),
                }),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
                runtime_handler: record.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    pub fn list_pod_sandbox(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let filter = filter.unwrap_or_default();
        self.sandboxes
            .list()
            .into_iter()
            .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
            .filter(|r| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .map(|r| cri::PodSandbox {
                state: Self::observed_state(&r) as i32,
                id: r.id.clone(),
                metadata: Some(r.metadata()),
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .filter(|s| filter.state.as_ref().is_none_or(|f| f.state == s.state))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_containerd() {
        assert_eq!(
            sandbox_name(&config().metadata.unwrap()),
            "web_default_u1_2"
        );
    }

    #[test]
    fn validation_names_the_missing_field() {
        assert!(validate_config(&config()).is_ok());
        let mut bad = config();
        bad.metadata.as_mut().unwrap().uid.clear();
        let err = validate_config(&bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("config.metadata.uid"),
            "{}",
            err.message()
        );
        let err = validate_config(&cri::PodSandboxConfig::default()).unwrap_err();
        assert!(
            err.message().contains("config.metadata"),
            "{}",
            err.message()
        );
        let mut bad = config();
        bad.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: [("vm.swappiness".to_string(), "1".to_string())].into(),
            ..Default::default()
        });
        let err = validate_config(&bad).unwrap_err();
        assert!(
            err.message().contains("config.linux.sysctls"),
            "{}",
            err.message()
        );
    }
}
