//! `create`: everything up to the container's init waiting on its exec fifo.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::oci::cgroups::{self, CgroupDriver, CgroupManager};
use crate::oci::console;
use crate::oci::error::{Context, OciError, Result};
use crate::oci::hooks::{self, HookKind};
use crate::oci::namespaces::{NamespacePlan, write_id_maps};
use crate::oci::process::channel::{Channel, Message};
use crate::oci::process::child::{self, ChildConfig, Role};
use crate::oci::process::fork::{Forked, clone_with, dup_above};
use crate::oci::rootfs::RootfsConfig;
use crate::oci::seccomp;
use crate::oci::spec;
use crate::oci::state::{
    ContainerState, EXEC_FIFO, OciState, StateStore, Status, now_rfc3339, process_start_time,
};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    /// Keep the runtime's session keyring instead of a new one per container.
    pub no_new_keyring: bool,
    /// Let the init exec without waiting for `start` (the `run` command); the
    /// caller then runs the poststart hooks ([`super::start::poststart`]).
    pub start_immediately: bool,
    /// Extra fds (3..3+n) handed to the container.
    pub preserve_fds: i32,
    pub systemd_cgroup: bool,
    /// Added to the process environment (e.g. LISTEN_FDS).
    pub extra_env: Vec<String>,
    /// Rootless mode (runc's): without linux.cgroupsPath, a cgroup the runtime
    /// may not create is skipped, unless the spec asks for limits.
    pub rootless: bool,
}

/// Undoes a half-made create: kills the init, removes the cgroup and state dir.
struct Cleanup<'a> {
    store: &'a StateStore,
    id: String,
    cgroup: Option<Box<dyn CgroupManager>>,
    /// (pid, is our child)
    processes: Vec<(i32, bool)>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for (pid, ours) in &self.processes {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            if *ours {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), None);
            } else {
                super::wait_gone(*pid, std::time::Duration::from_secs(10));
            }
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = cgroup.destroy() {
                tracing::warn!(
                    "container {}: removing cgroup after failed create: {e}",
                    self.id
                );
            }
        }
        if let Err(e) = self.store.remove(&self.id) {
            tracing::warn!("container {}: {e}", self.id);
        }
    }
}

pub fn create(store: &StateStore, options: &CreateOptions) -> Result<ContainerState> {
    let bundle = options
        .bundle
        .canonicalize()
        .map_err(|e| OciError::InvalidSpec {
            field: "bundle".into(),
            reason: format!("{}: {e}", options.bundle.display()),
        })?;
    let mut spec = spec::load(&bundle)?;
    absolutize_bind_sources(&mut spec, &bundle);
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && options.console_socket.is_none() {
        return Err(OciError::InvalidSpec {
            field: "process.terminal".into(),
            reason: "a terminal needs a console socket (--console-socket)".into(),
        });
    }
    let dir = store.create_dir(&options.id)?;
    let mut cleanup = Cleanup {
        store,
        id: options.id.clone(),
        cgroup: None,
        processes: Vec::new(),
        armed: true,
    };

    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec.process().clone().unwrap_or_default();
    let compiled = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
    let plan = NamespacePlan::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;
    let driver = if options.systemd_cgroup {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let manager = cgroups::new_manager(cgroups_path.as_deref(), &options.id, driver)?;
    match manager.create(linux.resources().as_ref()) {
        Ok(()) => cleanup.cgroup = Some(manager),
        Err(e) if options.rootless && cgroups_path.is_none() && e.is_access_denied() => {
            if let Err(e) = manager.destroy() {
                tracing::debug!("container {}: {e}", options.id);
            }
            if let Some(field) = linux.resources().as_ref().and_then(first_limit) {
                return Err(crate::oci::error::invalid(
                    format!("linux.resources.{field}"),
                    format!("cannot set limits: the container could not create its cgroup ({e})"),
                ));
            }
            tracing::warn!(
                "container {}: running without a cgroup (rootless): {e}",
                options.id
            );
        }
        Err(e) => return Err(e.into()),
    }

    let above = 3 + options.preserve_fds;
    let exec_fifo = if options.start_immediately {
        None
    } else {
        let fifo_path = dir.join(EXEC_FIFO);
        make_exec_fifo(&fifo_path, &linux)?;
        let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .context(|| format!("opening {}", fifo_path.display()))?;
        Some(relocate(fifo, above)?)
    };
    let console_socket = options
        .console_socket
        .as_deref()
        .map(console::connect_socket)
        .transpose()?;
    let console_socket = console_socket.map(|fd| relocate(fd, above)).transpose()?;
    let (runtime_end, mut child_end) = Channel::pair()?;
    if options.preserve_fds > 0 {
        child_end.relocate(above)?;
    }

    let created = now_rfc3339();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let spec_hooks = spec.hooks().clone();
    let runtime_hooks = spec_hooks.as_ref().is_some_and(|h| {
        !HookKind::Prestart.select(h).is_empty() || !HookKind::CreateRuntime.select(h).is_empty()
    });
    let clone_flags = if plan.single_clone() {
        plan.new & !(CloneFlags::CLONE_NEWCGROUP | crate::oci::timens::CLONE_NEWTIME)
    } else {
        CloneFlags::empty()
    };
    let idmapped = crate::oci::rootfs::idmap::prepare(&spec)?
        .into_iter()
        .map(|mut m| {
            m.tree = relocate(m.tree, above)?;
            Ok(m)
        })
        .collect::<Result<Vec<_>>>()?;
    let rootfs = RootfsConfig {
        rootfs: spec::rootfs(&spec),
        no_pivot: options.no_pivot,
        in_user_ns: plan.creates(CloneFlags::CLONE_NEWUSER)
            || plan.joins(CloneFlags::CLONE_NEWUSER),
        cgroup_ns: plan.creates(CloneFlags::CLONE_NEWCGROUP)
            || plan.joins(CloneFlags::CLONE_NEWCGROUP),
        idmapped,
    };

    let seccomp_listener = linux
        .seccomp()
        .as_ref()
        .is_some_and(|s| s.listener_path().is_some());
    let child_pid = match clone_with(clone_flags)? {
        Forked::Child => {
            drop(runtime_end);
            child::run(ChildConfig {
                role: Role::Init {
                    spec: &spec,
                    rootfs,
                    exec_fifo,
                    runtime_hooks,
                    session_keyring: (!options.no_new_keyring).then(|| options.id.clone()),
                },
                process: &process,
                namespaces: &plan,
                channel: child_end,
                console_socket,
                seccomp: compiled.as_ref(),
                hooks: spec_hooks.as_ref(),
                hook_state: spec_state(&options.id, &bundle, &spec, &created),
                extra_env: options.extra_env.clone(),
                preserve_fds: options.preserve_fds,
                seccomp_listener,
            })
        }
        Forked::Parent(pid) => pid.as_raw(),
    };
    drop(child_end);
    drop(exec_fifo);
    drop(console_socket);
    cleanup.processes.push((child_pid, true));

    let init_pid = if plan.single_clone() {
        if plan.creates(CloneFlags::CLONE_NEWUSER) {
            write_id_maps(child_pid, &linux)?;
        }
        child_pid
    } else {
        receive_init_pid(&runtime_end, child_pid, &linux)?
    };
    if init_pid != child_pid {
        // The intermediate process exits right after forking the init.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(child_pid), None);
        cleanup.processes = vec![(init_pid, false)];
    }
    if let Some(manager) = &cleanup.cgroup {
        manager.add_process(init_pid)?;
    }
    if let Some(value) = process.oom_score_adj() {
        super::set_oom_score_adj(init_pid, value)?;
    }
    // Read while the init waits for us: with start_immediately it may be gone
    // by the time setup is reported done.
    let pid_start_time = process_start_time(init_pid)
        .ok_or_else(|| OciError::Init("the container init exited during setup".into()))?;
    if let Err(e) = runtime_end.send(&Message::Continue { pid: init_pid }) {
        // The init may have failed meanwhile (it builds its rootfs in parallel):
        // its own report says more than our broken pipe.
        return Err(match runtime_end.recv() {
            Ok(Some((Message::Error(report), _))) => OciError::Init(report),
            _ => e,
        });
    }

    let mut hook_state = OciState {
        pid: init_pid,
        ..spec_state(&options.id, &bundle, &spec, &created)
    };
    loop {
        let received = runtime_end
            .recv_with_fd()?
            .ok_or_else(|| OciError::Init("the container init exited during setup".into()))?;
        match received.message {
            Message::Ready => break,
            Message::RunRuntimeHooks => {
                hook_state.status = Status::Creating;
                hooks::run(HookKind::Prestart, spec_hooks.as_ref(), &hook_state)?;
                hooks::run(HookKind::CreateRuntime, spec_hooks.as_ref(), &hook_state)?;
                runtime_end.send(&Message::RuntimeHooksDone)?;
            }
            Message::SeccompListener => {
                super::forward_seccomp_listener(
                    received.fd,
                    linux.seccomp().as_ref(),
                    &hook_state,
                )?;
                runtime_end.send(&Message::SeccompListenerDone)?;
            }
            Message::Error(e) => return Err(OciError::Init(e)),
            other => {
                return Err(OciError::Init(format!(
                    "unexpected {other:?} from the container init"
                )));
            }
        }
    }

    let state = ContainerState {
        id: options.id.clone(),
        pid: init_pid,
        pid_start_time,
        bundle,
        rootfs: spec::rootfs(&spec),
        created,
        annotations: annotations.into_iter().collect(),
        cgroups_path,
        systemd_cgroup: options.systemd_cgroup,
        hooks: spec_hooks,
        owner: String::new(),
        process: Some(process),
        seccomp: linux.seccomp().clone(),
        resources: linux.resources().clone(),
    };
    store.save(&state)?;
    if let Some(pid_file) = &options.pid_file {
        super::write_pid_file(pid_file, init_pid)?;
    }
    cleanup.armed = false;
    Ok(state)
}

/// The first resource the spec limits, ignoring device rules (a rootless
/// container without a cgroup cannot enforce it; device rules are not
/// expected to work there, as with runc).
fn first_limit(resources: &oci_spec::runtime::LinuxResources) -> Option<String> {
    let json = serde_json::to_value(resources).ok()?;
    json.as_object()?
        .iter()
        .find(|(name, value)| *name != "devices" && !value.is_null())
        .map(|(name, _)| name.clone())
}

/// The exec fifo, writable by the container's root (which the init runs as when
/// it opens it, possibly mapped to another host uid by a user namespace).
fn make_exec_fifo(path: &Path, linux: &oci_spec::runtime::Linux) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o622))
        .context(|| format!("mkfifo {}", path.display()))?;
    // mkfifo's mode is subject to our umask.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .context(|| format!("chmod {}", path.display()))?;
    let host_id = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    let uid = host_id(linux.uid_mappings());
    let gid = host_id(linux.gid_mappings());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn spec_state(id: &str, bundle: &Path, spec: &Spec, created: &str) -> OciState {
    OciState {
        oci_version: crate::oci::state::OCI_VERSION.into(),
        id: id.into(),
        pid: 0,
        status: Status::Creating,
        bundle: bundle.into(),
        rootfs: spec::rootfs(spec),
        created: created.into(),
        owner: String::new(),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

/// The child that joins namespaces reports the init's pid (after writing id maps
/// if it made a user namespace).
fn receive_init_pid(
    channel: &Channel,
    child_pid: i32,
    linux: &oci_spec::runtime::Linux,
) -> Result<i32> {
    loop {
        match channel.recv()? {
            Some((Message::WriteIdMaps, _)) => {
                write_id_maps(child_pid, linux)?;
                channel.send(&Message::IdMapsWritten)?;
            }
            Some((Message::Pid, Some(pid))) => return Ok(pid),
            Some((Message::Error(e), _)) => return Err(OciError::Init(e)),
            Some((other, _)) => {
                return Err(OciError::Init(format!(
                    "unexpected {other:?} from the container init"
                )));
            }
            None => {
                return Err(OciError::Init(
                    "the container init exited during setup".into(),
                ));
            }
        }
    }
}

fn relocate(fd: OwnedFd, above: i32) -> Result<OwnedFd> {
    if above > 3 {
        dup_above(&fd, above)
    } else {
        Ok(fd)
    }
}

/// Bind mount sources may be relative to the bundle.
fn absolutize_bind_sources(spec: &mut Spec, bundle: &Path) {
    if let Some(mounts) = spec.mounts_mut() {
        for m in mounts.iter_mut() {
            if let Some(source) = m.source().clone() {
                let is_bind = m.typ().as_deref() == Some("bind")
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind");
                if is_bind && source.is_relative() {
                    m.set_source(Some(bundle.join(source)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_are_not_limits_but_the_rest_are() {
        let devices: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).unwrap();
        assert_eq!(first_limit(&devices), None);
        let memory: oci_spec::runtime::LinuxResources =
            serde_json::from_str(r#"{"devices":[],"memory":{"limit":1000000}}"#).unwrap();
        assert_eq!(first_limit(&memory).as_deref(), Some("memory"));
    }
}
