//! Container RPCs: Create (rootfs snapshot, OCI spec, supervisor create;
//! undone on failure), Start, Stop, Remove, Status, List, ReopenContainerLog.
//! The pod's supervisor runs the containers; the store keeps their records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::runtime::v1 as cri;
use tonic::Status;

use super::daemon::Daemon;
use super::events::EventType;
use super::phases::Phases;
use super::sandbox::store_status;
use super::status::{image_status, now_nanos, present, required};
use crate::container::HostOptions;
use crate::container::image_volume;
use crate::container::spec::{self, ImageDefaults, SandboxContext, SpecInputs};
use crate::oci::cgroups::MigrationPrimer;
use crate::sandbox::files::SandboxFiles;
use crate::store::{ContainerPhase, ContainerRecord, SandboxState, StoreError};
use crate::supervisor::client::{self, SupervisorError};
use crate::supervisor::protocol::{Exit, Op, Response, read_exit};

fn supervisor_status(error: SupervisorError) -> Status {
    Status::unknown(error.to_string())
}

/// Runs a blocking supervisor call off the async runtime.
async fn call(dir: PathBuf, op: Op) -> Result<Response, SupervisorError> {
    tokio::task::spawn_blocking(move || client::call(&dir, op))
        .await
        .unwrap_or_else(|e| Err(SupervisorError::Failed(format!("supervisor call: {e}"))))
}

/// containerd's reason and exit code (docker's 128) of a container that
/// could not start.
const START_ERROR_REASON: &str = "StartError";
const START_ERROR_EXIT_CODE: i32 = 128;

/// The CRI reason of a container exit, as containerd words it.
pub(super) fn exit_reason(exit: &Exit) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn container_name(meta: &cri::ContainerMetadata, pod: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    )
}

/// Undoes a half-made CreateContainer.
struct Made<'a> {
    daemon: &'a Daemon,
    id: String,
    name: String,
    rootfs: Option<PathBuf>,
    snapshot: bool,
    bundle: Option<PathBuf>,
    /// Snapshots of image volumes, with where each got mounted.
    image_volumes: Vec<(String, Option<PathBuf>)>,
    /// The record is on disk.
    record: bool,
}

impl Made<'_> {
    fn undo(self) {
        if self.record
            && let Err(e) = self.daemon.containers.delete(&self.id)
        {
            tracing::warn!(container = %self.id, "rollback of the record: {e}");
        }
        for (snapshot, mounted) in &self.image_volumes {
            if let Some(dir) = mounted {
                let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            }
            if let Err(e) = self.daemon.snapshots.remove(snapshot) {
                tracing::warn!(container = %self.id, "rollback of image volume {snapshot}: {e}");
            }
        }
        if let Some(rootfs) = &self.rootfs {
            let _ = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        if self.snapshot
            && let Err(e) = self.daemon.snapshots.remove(&self.id)
        {
            tracing::warn!(container = %self.id, "rollback of the snapshot: {e}");
        }
        if let Some(bundle) = &self.bundle {
            let _ = std::fs::remove_dir_all(bundle);
        }
        self.daemon.containers.release_name(&self.name);
    }
}

fn unmount(path: &Path) -> Result<(), Status> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Status::internal(format!(
            "unmounting {}: {e}",
            path.display()
        ))),
    }
}

fn unmount_and_remove(daemon: &Daemon, record: &ContainerRecord) -> Result<(), Status> {
    for (index, mount) in record.config.mounts.iter().enumerate() {
        if image_volume::image_of(mount).is_none() {
            continue;
        }
        unmount(&image_volume::mount_dir(&record.bundle, index))?;
        let snapshot = image_volume::snapshot_id(&record.id, index);
        if daemon
            .snapshots
            .get(&snapshot)
            .map_err(image_status)?
            .is_some()
        {
            daemon.snapshots.remove(&snapshot).map_err(image_status)?;
        }
    }
    unmount(&record.bundle.join("rootfs"))?;
    daemon.snapshots.remove(&record.id).map_err(image_status)?;
    if let Err(e) = std::fs::remove_dir_all(&record.bundle)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(Status::internal(format!(
            "removing {}: {e}",
            record.bundle.display()
        )));
    }
    Ok(())
}

impl Daemon {
    pub async fn create_container(
        &self,
        request: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse, Status> {
        let mut phases = Phases::begin("CreateContainer");
        let sandbox_id = required(&request.pod_sandbox_id, "pod_sandbox_id")?;
        let config = present(&request.config, "config")?.clone();
        let meta = present(&config.metadata, "config.metadata")?.clone();
        required(&meta.name, "config.metadata.name")?;
        let image_spec = present(&config.image, "config.image")?;
        let image_name = required(&image_spec.image, "config.image.image")?.to_string();
        let sandbox = self.sandboxes.get(sandbox_id).map_err(store_status)?;
        if self.reconcile_lost_supervisor(&sandbox.id).await {
            return Err(Status::failed_precondition(format!(
                "pod_sandbox_id: sandbox {} is not ready: its supervisor died; \
                 stop and remove it, then run a new sandbox",
                sandbox.id
            )));
        }
        let (Some(pause_pid), SandboxState::Ready) = (sandbox.pause_pid, sandbox.state) else {
            return Err(Status::failed_precondition(format!(
                "pod_sandbox_id: sandbox {} is not ready",
                sandbox.id
            )));
        };
        let image = self.images.status(&image_name).ok_or_else(|| {
            Status::not_found(format!(
                "config.image.image: image {image_name:?} not found"
            ))
        })?;
        let image_config = self.images.config(&image).map_err(image_status)?;
        // The init's move into its cgroups, late in this call, then finds
        // the kernel's migration lock warm.
        let primer = MigrationPrimer::start();
        phases.done("lookup");

        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let name = container_name(&meta, &sandbox.metadata());
        self.containers
            .reserve_name(&name, &id)
            .map_err(store_status)?;
        let mut made = Made {
            daemon: self,
            id: id.clone(),
            name: name.clone(),
            rootfs: None,
            snapshot: false,
            bundle: None,
            image_volumes: Vec::new(),
            record: false,
        };
        let result = async {
            let bundle = spec::bundle_dir(&self.config.root, &id);
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| Status::internal(format!("creating {}: {e}", rootfs.display())))?;
            made.bundle = Some(bundle.clone());
            let snapshot = self
                .snapshots
                .prepare(&id, image.id.as_str(), false)
                .map_err(image_status)?;
            made.snapshot = true;
            snapshot.mount.mount_at(&rootfs).map_err(image_status)?;
            made.rootfs = Some(rootfs.clone());
            phases.done("rootfs");

            let spec_config = self.mount_image_volumes(&id, &bundle, &config, &mut made)?;
            let sandbox_linux = sandbox.config.linux.clone().unwrap_or_default();
            let context = SandboxContext {
                id: sandbox.id.clone(),
                pause_pid,
                namespaces: sandbox.namespace_options(),
                hostname: sandbox.config.hostname.clone(),
                files: SandboxFiles::in_dir(&sandbox.dir),
                cgroup_parent: sandbox_linux.cgroup_parent.clone(),
                selinux_options: sandbox_linux
                    .security_context
                    .as_ref()
                    .and_then(|s| s.selinux_options.clone()),
            };
            let defaults = ImageDefaults::from_config(&image_config);
            let oci = spec::build(&SpecInputs {
                id: &id,
                config: &spec_config,
                sandbox: &context,
                image: &defaults,
                rootfs: &rootfs,
                cgroup_driver: self.config.cgroup_driver,
                host: &HostOptions::from_config(&self.config),
            })
            .map_err(|e| Status::invalid_argument(format!("config.{e}")))?;
            let spec_path = bundle.join("config.json");
            let spec_json = serde_json::to_vec(&oci)
                .map_err(|e| Status::internal(format!("encoding spec: {e}")))?;
            std::fs::write(&spec_path, spec_json)
                .map_err(|e| Status::internal(format!("writing {}: {e}", spec_path.display())))?;
            phases.done("spec");

            let log_path = if sandbox.config.log_directory.is_empty() || config.log_path.is_empty()
            {
                PathBuf::new()
            } else {
                Path::new(&sandbox.config.log_directory).join(&config.log_path)
            };
            let mut record = ContainerRecord {
                id: id.clone(),
                name: name.clone(),
                sandbox_id: sandbox.id.clone(),
                config: config.clone(),
                image_id: image.id.as_str().to_string(),
                image_name: image_name.clone(),
                image_ref: image
                    .repo_digests
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.as_str().to_string()),
                image_stop_signal: image_config
                    .config()
                    .as_ref()
                    .and_then(|c| c.stop_signal().clone()),
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                phase: ContainerPhase::Created,
                reason: String::new(),
                message: String::new(),
                log_path,
                bundle,
                pid: None,
            };
            // The record's wait for the disk overlaps the runtime's create;
            // a record without a pid is one StartContainer creates again.
            let written = tokio::task::spawn_blocking(self.containers.write_new(&record));
            let created = self.create_in_runtime(&record).await;
            // The container's init has joined its cgroups: no migration is left to prime.
            drop(primer);
            let written = written
                .await
                .map_err(|e| Status::internal(format!("record write task: {e}")))
                .and_then(|w| w.map_err(store_status));
            phases.done("runtime create and record");
            made.record = written.is_ok();
            written?;
            match created {
                Ok(pid) => record.pid = Some(pid),
                // What runc's create refuses (a missing executable, a bad
                // mount source) containerd only meets in StartContainer,
                // where it runs the runtime's create: keep the container
                // without a process (no pid) and let StartContainer retry
                // and report it.
                Err(SupervisorError::Failed(reason)) => {
                    tracing::info!(container = %id, "runtime create deferred to start: {reason}");
                }
                Err(e) => {
                    return Err(Status::unknown(format!("creating container {id}: {e}")));
                }
            }
            self.containers
                .insert_written(record)
                .map_err(store_status)?;
            phases.done("record added");
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                self.emit_event(&id, &sandbox.id, EventType::ContainerCreatedEvent);
                Ok(cri::CreateContainerResponse { container_id: id })
            }
            Err(status) => {
                // The supervisor may hold a half-made container: delete it there too.
                let _ = call(
                    self.supervisor_dir(&sandbox.id),
                    Op::Delete { id: id.clone() },
                )
                .await;
                made.undo();
                Err(status)
            }
        }
    }

    /// Mounts a read-only snapshot of each image volume's image under the
    /// bundle; returns the config the spec is built from, with those mounts
    /// turned into binds of them.
    fn mount_image_volumes(
        &self,
        id: &str,
        bundle: &Path,
        config: &cri::ContainerConfig,
        made: &mut Made<'_>,
    ) -> Result<cri::ContainerConfig, Status> {
        let mut spec_config = config.clone();
        for (index, mount) in config.mounts.iter().enumerate() {
            let Some(name) = image_volume::image_of(mount) else {
                continue;
            };
            let image = self.images.status(name).ok_or_else(|| {
                Status::not_found(format!(
                    "config.mounts[{index}].image: image {name:?} not found: pull it first"
                ))
            })?;
            let snapshot_id = image_volume::snapshot_id(id, index);
            let snapshot = self
                .snapshots
                .prepare(&snapshot_id, image.id.as_str(), true)
                .map_err(image_status)?;
            made.image_volumes.push((snapshot_id, None));
            let dir = image_volume::mount_dir(bundle, index);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
            snapshot.mount.mount_at(&dir).map_err(image_status)?;
            if let Some(last) = made.image_volumes.last_mut() {
                last.1 = Some(dir.clone());
            }
            let host_path = image_volume::host_path(index, &dir, mount)
                .map_err(|e| Status::invalid_argument(format!("config.{e}")))?;
            spec_config.mounts[index] = image_volume::as_bind(mount, &host_path);
        }
        Ok(spec_config)
    }

    fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        required(id, "container_id")?;
        self.containers.get(id).map_err(store_status)
    }

    /// Creates the container in its pod's supervisor (the runtime's create:
    /// process forked, namespaces and rootfs set up, waiting for start);
    /// returns its pid. A failure leaves nothing behind in the supervisor.
    async fn create_in_runtime(&self, record: &ContainerRecord) -> Result<i32, SupervisorError> {
        let dir = self.supervisor_dir(&record.sandbox_id);
        let config = &record.config;
        let created = call(
            dir.clone(),
            Op::Create {
                id: record.id.clone(),
                bundle: record.bundle.clone(),
                log_path: if record.log_path.as_os_str().is_empty() {
                    record.bundle.join("discarded.log")
                } else {
                    record.log_path.clone()
                },
                systemd_cgroup: self.config.cgroup_driver == crate::config::CgroupDriver::Systemd,
                stdio: crate::supervisor::protocol::Stdio {
                    tty: config.tty,
                    stdin: config.stdin,
                    stdin_once: config.stdin_once,
                },
            },
        )
        .await;
        if created.is_err() {
            let _ = call(
                dir,
                Op::Delete {
                    id: record.id.clone(),
                },
            )
            .await;
        }
        created?
            .pid
            .ok_or_else(|| SupervisorError::Failed("the supervisor reported no pid".into()))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let record = self.container(id)?;
        if record.phase != ContainerPhase::Created {
            return Err(Status::failed_precondition(format!(
                "container {} is in state {:?}, not Created",
                record.id, record.phase
            )));
        }
        let mut response = if record.pid.is_none() {
            // Its runtime create failed at CreateContainer: try again.
            self.create_in_runtime(&record)
                .await
                .and_then(|pid| {
                    self.containers
                        .update(&record.id, |r| r.pid = Some(pid))
                        .map_err(|e| SupervisorError::Failed(e.to_string()))
                })
                .map(|_| Response::default())
        } else {
            Ok(Response::default())
        };
        if response.is_ok() {
            response = call(
                self.supervisor_dir(&record.sandbox_id),
                Op::Start {
                    id: record.id.clone(),
                },
            )
            .await;
        }
        match response {
            Ok(response) => {
                self.containers
                    .update_running(&record.id, |r| {
                        r.phase = ContainerPhase::Running;
                        r.started_at = response.started_at.unwrap_or_else(now_nanos);
                    })
                    .map_err(store_status)?;
                self.emit_event(
                    &record.id,
                    &record.sandbox_id,
                    EventType::ContainerStartedEvent,
                );
                Ok(())
            }
            Err(SupervisorError::Unreachable { .. })
                if self.reconcile_lost_supervisor(&record.sandbox_id).await =>
            {
                Err(Status::failed_precondition(format!(
                    "container {}: sandbox {} is not ready: its supervisor died",
                    record.id, record.sandbox_id
                )))
            }
            Err(e) => Err(self.record_start_failure(&record, &e.to_string()).await),
        }
    }

    /// A container that could not start ends EXITED the way containerd
    /// reports it (reason StartError, exit code 128 as docker, the error as
    /// message), its half-started process is removed, and STOPPED goes out.
    async fn record_start_failure(&self, record: &ContainerRecord, message: &str) -> Status {
        let _ = call(
            self.supervisor_dir(&record.sandbox_id),
            Op::Delete {
                id: record.id.clone(),
            },
        )
        .await;
        let updated = self.containers.update(&record.id, |r| {
            r.phase = ContainerPhase::Exited;
            r.pid = None;
            r.finished_at = now_nanos();
            r.exit_code = START_ERROR_EXIT_CODE;
            r.reason = START_ERROR_REASON.into();
            r.message = message.to_string();
        });
        if let Err(e) = updated {
            return store_status(e);
        }
        self.emit_event(
            &record.id,
            &record.sandbox_id,
            EventType::ContainerStoppedEvent,
        );
        Status::unknown(format!("starting container {}: {message}", record.id))
    }

    /// The record updated with what the supervisor knows (exit, lost).
    pub async fn refresh(&self, record: ContainerRecord) -> ContainerRecord {
        if !matches!(
            record.phase,
            ContainerPhase::Running | ContainerPhase::Created
        ) {
            return record;
        }
        let dir = self.supervisor_dir(&record.sandbox_id);
        let exit = match call(
            dir.clone(),
            Op::Status {
                id: record.id.clone(),
            },
        )
        .await
        {
            Ok(response) => response.exit,
            Err(SupervisorError::Unreachable { .. })
                if self.reconcile_lost_supervisor(&record.sandbox_id).await =>
            {
                return self.containers.get(&record.id).unwrap_or(record);
            }
            Err(SupervisorError::Unreachable { .. }) => match read_exit(&dir, &record.id) {
                Some(exit) => Some(exit),
                None => {
                    return self
                        .containers
                        .update(&record.id, |r| {
                            r.phase = ContainerPhase::Unknown;
                            r.reason = "Unknown".into();
                            r.message = "the pod's supervisor is gone".into();
                        })
                        .unwrap_or(record);
                }
            },
            Err(SupervisorError::Failed(_)) => read_exit(&dir, &record.id),
        };
        let Some(exit) = exit else {
            return record;
        };
        let mut stopped_now = false;
        let updated = self
            .containers
            .update(&record.id, |r| {
                stopped_now = r.phase != ContainerPhase::Exited;
                r.phase = ContainerPhase::Exited;
                r.exit_code = exit.code;
                r.finished_at = exit.finished_at;
                r.reason = exit_reason(&exit).into();
            })
            .unwrap_or(record);
        if stopped_now {
            self.emit_event(
                &updated.id,
                &updated.sandbox_id,
                EventType::ContainerStoppedEvent,
            );
        }
        updated
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let record = self.refresh(self.container(id)?).await;
        if record.phase != ContainerPhase::Running {
            return Ok(());
        }
        let dir = self.supervisor_dir(&record.sandbox_id);
        let signal = record
            .image_stop_signal
            .as_deref()
            .and_then(crate::oci::container::kill::parse_signal)
            .unwrap_or(nix::sys::signal::Signal::SIGTERM);
        let steps = [
            (
                signal,
                Duration::from_secs(u64::try_from(timeout).unwrap_or(0)),
            ),
            (nix::sys::signal::Signal::SIGKILL, Duration::from_secs(30)),
        ];
        for (signal, grace) in steps {
            if timeout > 0 || signal == nix::sys::signal::Signal::SIGKILL {
                let sent = call(
                    dir.clone(),
                    Op::Kill {
                        id: record.id.clone(),
                        signal: signal as i32,
                    },
                )
                .await;
                if let Err(e) = sent {
                    tracing::warn!(container = %record.id, "sending {signal}: {e}");
                }
            }
            let deadline = Instant::now() + grace;
            loop {
                let current = self.refresh(self.container(&record.id)?).await;
                if current.phase != ContainerPhase::Running {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(Status::deadline_exceeded(format!(
            "container {} did not stop after SIGKILL",
            record.id
        )))
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        required(id, "container_id")?;
        let record = match self.containers.get(id) {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(store_status(e)),
        };
        self.stop_container(&record.id, 0).await?;
        match call(
            self.supervisor_dir(&record.sandbox_id),
            Op::Delete {
                id: record.id.clone(),
            },
        )
        .await
        {
            Ok(_) | Err(SupervisorError::Unreachable { .. }) => {}
            Err(e) => return Err(supervisor_status(e)),
        }
        unmount_and_remove(self, &record)?;
        self.containers.delete(&record.id).map_err(store_status)?;
        self.emit_event(
            &record.id,
            &record.sandbox_id,
            EventType::ContainerDeletedEvent,
        );
        Ok(())
    }

    /// Applies new resources to a created or running container's cgroup
    /// (no fork: done in process) and records them for ContainerStatus.
    pub async fn update_container_resources(
        &self,
        request: cri::UpdateContainerResourcesRequest,
    ) -> Result<(), Status> {
        let record = self.refresh(self.container(&request.container_id)?).await;
        let Some(linux) = request.linux else {
            return Ok(());
        };
        if !matches!(
            record.phase,
            ContainerPhase::Created | ContainerPhase::Running
        ) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_value(spec::resources(&linux))
                .map_err(|e| Status::invalid_argument(format!("linux: {e}")))?;
        let store = crate::oci::state::StateStore::new(self.runtime_root());
        store
            .load(&record.id)
            .and_then(|state| state.cgroup_manager())
            .map_err(|e| Status::internal(format!("container {}: {e}", record.id)))?
            .update(&resources)
            .map_err(|e| Status::invalid_argument(format!("linux: {e}")))?;
        self.containers
            .update(&record.id, |r| {
                r.config
                    .linux
                    .get_or_insert_with(Default::default)
                    .resources = Some(linux.clone());
            })
            .map_err(store_status)?;
        Ok(())
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let record = self.refresh(self.container(id)?).await;
        if record.phase != ContainerPhase::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        call(
            self.supervisor_dir(&record.sandbox_id),
            Op::ReopenLog { id: record.id },
        )
        .await
        .map(|_| ())
        .map_err(supervisor_status)
    }

    pub(super) fn to_cri_status(record: &ContainerRecord) -> cri::ContainerStatus {
        let config = &record.config;
        cri::ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: record.phase.to_cri() as i32,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            exit_code: record.exit_code,
            image: Some(cri::ImageSpec {
                image: record.image_name.clone(),
                ..Default::default()
            }),
            image_ref: record.image_ref.clone(),
            reason: record.reason.clone(),
            message: record.message.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: record.log_path.display().to_string(),
            resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|linux| cri::ContainerResources {
                    linux: Some(linux),
                    windows: None,
                }),
            image_id: record.image_id.clone(),
            ..Default::default()
        }
    }

    pub async fn container_status(
        &self,
        request: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        let record = self.refresh(self.container(&request.container_id)?).await;
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "sandboxID": record.sandbox_id,
                "pid": record.pid,
                "bundle": record.bundle,
                "name": record.name,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(Self::to_cri_status(&record)),
            info,
        })
    }

    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Vec<cri::Container> {
        let filter = filter.unwrap_or_default();
        let mut out = Vec::new();
        for record in self.containers.list() {
            if !filter.id.is_empty() && !record.id.starts_with(&filter.id) {
                continue;
            }
            if !filter.pod_sandbox_id.is_empty()
                && !record.sandbox_id.starts_with(&filter.pod_sandbox_id)
            {
                continue;
            }
            if !filter
                .label_selector
                .iter()
                .all(|(k, v)| record.config.labels.get(k) == Some(v))
            {
                continue;
            }
            let record = self.refresh(record).await;
            let state = record.phase.to_cri() as i32;
            if filter.state.as_ref().is_some_and(|s| s.state != state) {
                continue;
            }
            out.push(cri::Container {
                id: record.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: record.config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: record.image_name.clone(),
                    ..Default::default()
                }),
                image_ref: record.image_ref.clone(),
                state,
                created_at: record.created_at,
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
                image_id: record.image_id.clone(),
            });
        }
        out
    }

    /// Every container of a sandbox, stopped at once (StopPodSandbox).
    pub async fn stop_sandbox_containers(&self, sandbox_id: &str) -> Result<(), Status> {
        for record in self.containers.list() {
            if record.sandbox_id == sandbox_id {
                self.stop_container(&record.id, 0).await?;
            }
        }
        Ok(())
    }

    /// Removes every container of a sandbox and ends its supervisor.
    pub async fn remove_sandbox_containers(&self, sandbox_id: &str) -> Result<(), Status> {
        for record in self.containers.list() {
            if record.sandbox_id == sandbox_id {
                self.remove_container(&record.id).await?;
            }
        }
        let dir = self.supervisor_dir(sandbox_id);
        let stopping = dir.clone();
        let _ = tokio::task::spawn_blocking(move || client::shutdown(&stopping)).await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
