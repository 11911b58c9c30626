//! ContainerConfig → OCI runtime spec, with containerd's defaults: image
//! config for command/env/workdir/user, the sandbox's namespaces joined
//! through the pause process, default mounts, masked and read-only paths,
//! capabilities, seccomp and resources.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use super::{HostOptions, apparmor, cdi, selinux, user};
use crate::config::CgroupDriver;
use crate::oci::seccomp::{DEFAULT_CAPABILITIES, runtime_default_profile};

/// What the image says about running it (from its config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageDefaults {
    pub fn from_config(config: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = config.config() else {
            return ImageDefaults::default();
        };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        }
    }
}

/// The sandbox as a container's spec needs it.
#[derive(Debug, Clone)]
pub struct SandboxContext {
    pub id: String,
    pub pause_pid: i32,
    pub namespaces: cri::NamespaceOption,
    pub hostname: String,
    /// Generated hostname, hosts and resolv.conf.
    pub files: crate::sandbox::files::SandboxFiles,
    pub cgroup_parent: String,
    /// The pod's SELinux options (containers without their own use them).
    pub selinux_options: Option<cri::SeLinuxOption>,
}

pub struct SpecInputs<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a SandboxContext,
    pub image: &'a ImageDefaults,
    /// The mounted root filesystem (names are resolved in its /etc files).
    pub rootfs: &'a Path,
    pub cgroup_driver: CgroupDriver,
    pub host: &'a HostOptions,
}

/// A spec problem, naming the ContainerConfig field.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The process arguments, as docker/containerd combine them: the CRI
/// command replaces the image entrypoint (and drops its cmd); CRI args
/// replace the image cmd.
pub fn command_line(config: &cri::ContainerConfig, image: &ImageDefaults) -> Vec<String> {
    let (entrypoint, cmd) = if !config.command.is_empty() {
        (config.command.clone(), config.args.clone())
    } else if !config.args.is_empty() {
        (image.entrypoint.clone(), config.args.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Image env overridden by CRI envs (same key: the CRI value wins, in place).
fn environment(config: &cri::ContainerConfig, image: &ImageDefaults) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    };
    if !image.env.iter().any(|e| e.starts_with("PATH=")) {
        set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    for entry in &image.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k, v);
    }
    for kv in &config.envs {
        set(&kv.key, &kv.value);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn capability_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capability set as containerd computes it: the default set (empty
/// when `ALL` is dropped) minus the drops, plus the adds (`ALL` adds every
/// capability the host has). Privileged containers get every one.
fn capabilities(security: &cri::LinuxContainerSecurityContext) -> Vec<String> {
    // Only what this host's kernel and our bounding set have: capset fails
    // on anything else.
    let all: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .map(|set| set.into_iter().collect::<Vec<_>>())
        .unwrap_or_else(|_| caps::all().into_iter().collect())
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    if security.privileged {
        return sorted(all);
    }
    let requested = security.capabilities.clone().unwrap_or_default();
    let drops_all = requested
        .drop_capabilities
        .iter()
        .any(|d| d.eq_ignore_ascii_case("ALL"));
    let mut set: Vec<String> = if drops_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for drop in &requested.drop_capabilities {
        let name = capability_name(drop);
        set.retain(|c| *c != name);
    }
    for add in &requested.add_capabilities {
        if add.eq_ignore_ascii_case("ALL") {
            set.extend(all.iter().cloned());
        } else {
            set.push(capability_name(add));
        }
    }
    sorted(set)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_options = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// A CRI mount as an OCI bind mount with its propagation.
fn bind_mount(index: usize, mount: &cri::Mount) -> Result<Value, SpecError> {
    let field = |name: &str| format!("mounts[{index}].{name}");
    if !mount.container_path.starts_with('/') {
        return Err(invalid(
            field("container_path"),
            format!("{:?} is not absolute", mount.container_path),
        ));
    }
    if !mount.host_path.starts_with('/') {
        return Err(invalid(
            field("host_path"),
            format!("{:?} is not absolute", mount.host_path),
        ));
    }
    let propagation = match cri::MountPropagation::try_from(mount.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => "rprivate",
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        Err(_) => {
            return Err(invalid(
                field("propagation"),
                format!("unknown value {}", mount.propagation),
            ));
        }
    };
    let mut options = vec!["rbind", propagation];
    options.push(if mount.readonly { "ro" } else { "rw" });
    if mount.image.is_some() {
        // An image volume holds data, never programs to run.
        options.extend(["nosuid", "nodev", "noexec"]);
    }
    Ok(json!({
        "destination": mount.container_path,
        "type": "bind",
        "source": mount.host_path,
        "options": options,
    }))
}

fn device(index: usize, device: &cri::Device) -> Result<(Value, Value), SpecError> {
    let field = |name: &str| format!("devices[{index}].{name}");
    let meta = std::fs::metadata(&device.host_path)
        .map_err(|e| invalid(field("host_path"), format!("{}: {e}", device.host_path)))?;
    let kind = if meta.file_type().is_char_device() {
        "c"
    } else if meta.file_type().is_block_device() {
        "b"
    } else {
        return Err(invalid(
            field("host_path"),
            format!("{} is not a device", device.host_path),
        ));
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let permissions = if device.permissions.is_empty() {
        "rwm"
    } else {
        &device.permissions
    };
    if !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(invalid(
            field("permissions"),
            format!("{permissions:?} is not a subset of rwm"),
        ));
    }
    let path = if device.container_path.is_empty() {
        &device.host_path
    } else {
        &device.container_path
    };
    Ok((
        json!({"path": path, "type": kind, "major": major, "minor": minor,
               "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid()}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": permissions}),
    ))
}

/// OCI `linux.resources` (as JSON) for CRI resources.
pub fn resources(r: &cri::LinuxContainerResources) -> Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    let hugepages: Vec<Value> = r
        .hugepage_limits
        .iter()
        .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
        .collect();
    let mut out = json!({"cpu": cpu, "memory": memory, "hugepageLimits": hugepages});
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

fn seccomp(security: &cri::LinuxContainerSecurityContext) -> Result<Option<Value>, SpecError> {
    use cri::security_profile::ProfileType;
    if security.privileged {
        return Ok(None);
    }
    let Some(profile) = &security.seccomp else {
        return Ok(None);
    };
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::RuntimeDefault) => Ok(Some(json!(runtime_default_profile()))),
        Ok(ProfileType::Localhost) => {
            let field = "linux.security_context.seccomp.localhost_ref";
            let text = std::fs::read_to_string(&profile.localhost_ref)
                .map_err(|e| invalid(field, format!("{}: {e}", profile.localhost_ref)))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| invalid(field, format!("{}: {e}", profile.localhost_ref)))?;
            Ok(Some(value))
        }
        Err(_) => Err(invalid(
            "linux.security_context.seccomp.profile_type",
            format!("unknown value {}", profile.profile_type),
        )),
    }
}

/// The cgroup path of the container under the pod's cgroup parent.
pub fn cgroups_path(driver: CgroupDriver, parent: &str, id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => {
            format!("{}/{id}", parent.trim_end_matches('/'))
        }
        // systemd: "slice:prefix:name", as runc expects.
        CgroupDriver::Systemd => format!("{parent}:cri-berth:{id}"),
    }
}

/// Builds the spec.
pub fn build(inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    let config = inputs.config;
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let privileged = security.privileged;

    let args = command_line(config, inputs.image);
    if args.is_empty() {
        return Err(invalid(
            "command",
            "neither the config nor the image gives a command",
        ));
    }
    let gid = security
        .run_as_group
        .as_ref()
        .map(|g| u32::try_from(g.value))
        .transpose()
        .map_err(|_| invalid("linux.security_context.run_as_group", "out of range"))?;
    let user_spec = match (&security.run_as_user, security.run_as_username.as_str()) {
        (Some(uid), _) => uid.value.to_string(),
        (None, name) if !name.is_empty() => name.to_string(),
        _ => inputs.image.user.clone(),
    };
    let resolved = user::resolve(inputs.rootfs, &user_spec, gid)
        .map_err(|e| invalid("linux.security_context.run_as_user", e))?;
    let mut additional_gids = resolved.additional_gids.clone();
    for g in &security.supplemental_groups {
        let g = u32::try_from(*g).map_err(|_| {
            invalid(
                "linux.security_context.supplemental_groups",
                format!("{g} out of range"),
            )
        })?;
        additional_gids.push(g);
    }
    let additional_gids = {
        additional_gids.sort_unstable();
        additional_gids.dedup();
        additional_gids
    };
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else if !inputs.image.working_dir.is_empty() {
        inputs.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(invalid("working_dir", format!("{cwd:?} is not absolute")));
    }
    let caps = capabilities(&security);
    let resources_in = linux.resources.clone().unwrap_or_default();

    let mut mounts = default_mounts(privileged);
    let user_destinations: Vec<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    let files = &inputs.sandbox.files;
    for (dest, source) in [
        ("/etc/hostname", &files.hostname),
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
    ] {
        if !user_destinations.contains(&dest) {
            mounts.push(
                json!({"destination": dest, "type": "bind", "source": source,
                               "options": ["rbind", "rprivate", "rw"]}),
            );
        }
    }
    for (i, mount) in config.mounts.iter().enumerate() {
        let bind = bind_mount(i, mount)?;
        // A user mount replaces a default one at the same place.
        mounts.retain(|m| m["destination"] != bind["destination"]);
        mounts.push(bind);
    }

    let mut devices = Vec::new();
    let mut device_rules = vec![json!({"allow": false, "access": "rwm"})];
    for (i, d) in config.devices.iter().enumerate() {
        let (dev, rule) = device(i, d)?;
        devices.push(dev);
        device_rules.push(rule);
    }
    if privileged {
        device_rules = vec![json!({"allow": true, "access": "rwm"})];
    }

    let ns = inputs.sandbox.namespaces.clone();
    let container_ns = security.namespace_options.clone().unwrap_or(ns.clone());
    let pause = inputs.sandbox.pause_pid;
    let node = cri::NamespaceMode::Node as i32;
    let container = cri::NamespaceMode::Container as i32;
    let mut namespaces = vec![json!({"type": "mount"})];
    let join =
        |kind: &str, file: &str| json!({"type": kind, "path": format!("/proc/{pause}/ns/{file}")});
    match container_ns.pid {
        m if m == node => {}
        m if m == container => namespaces.push(json!({"type": "pid"})),
        _ => namespaces.push(join("pid", "pid")),
    }
    if ns.network != node {
        namespaces.push(join("network", "net"));
        namespaces.push(join("uts", "uts"));
    }
    if ns.ipc != node {
        namespaces.push(join("ipc", "ipc"));
    }

    let (masked, readonly) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        let pick = |given: &[String], default: &[&str]| {
            if given.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                given.to_vec()
            }
        };
        (
            pick(&security.masked_paths, MASKED_PATHS),
            pick(&security.readonly_paths, READONLY_PATHS),
        )
    };

    let mut linux_spec = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path(inputs.cgroup_driver, &inputs.sandbox.cgroup_parent, inputs.id),
        "resources": resources(&resources_in),
        "devices": devices,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    linux_spec["resources"]["devices"] = json!(device_rules);
    if let Some(profile) = seccomp(&security)? {
        linux_spec["seccomp"] = profile;
    }
    let labels = selinux::labels(
        security.selinux_options.as_ref(),
        inputs.sandbox.selinux_options.as_ref(),
        &inputs.sandbox.id,
        inputs.host.selinux.as_ref(),
    )
    .map_err(|e| invalid(e.field, e.reason))?;
    selinux::relabel_mounts(&config.mounts, &labels, inputs.host.selinux.as_ref())
        .map_err(|e| invalid(e.field, e.reason))?;
    if !labels.mount.is_empty() {
        linux_spec["mountLabel"] = json!(labels.mount);
    }
    let apparmor_profile = apparmor::profile(&security, inputs.host.apparmor.as_ref())
        .map_err(|e| invalid(e.field, e.reason))?;

    let mut process = json!({
        "terminal": config.tty,
        "user": {"uid": resolved.uid, "gid": resolved.gid, "additionalGids": additional_gids},
        "args": args,
        "env": environment(config, inputs.image),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": security.no_new_privs,
    });
    if resources_in.oom_score_adj != 0 {
        process["oomScoreAdj"] = json!(resources_in.oom_score_adj);
    }
    if let Some(profile) = apparmor_profile {
        process["apparmorProfile"] = json!(profile);
    }
    if !labels.process.is_empty() {
        process["selinuxLabel"] = json!(labels.process);
    }
    let annotations: BTreeMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inputs.rootfs, "readonly": security.readonly_rootfs},
        "mounts": mounts,
        "linux": linux_spec,
        "annotations": annotations,
    });
    if ns.network != node && !inputs.sandbox.hostname.is_empty() {
        spec["hostname"] = json!(inputs.sandbox.hostname);
    }
    inject_cdi_devices(&mut spec, config, &inputs.host.cdi_spec_dirs)?;
    serde_json::from_value(spec).map_err(|e| invalid("config", format!("generated spec: {e}")))
}

/// Applies the CDI devices the container asks for (none without CDI, as
/// containerd ignores them with `enable_cdi = false`).
fn inject_cdi_devices(
    spec: &mut Value,
    config: &cri::ContainerConfig,
    dirs: &[PathBuf],
) -> Result<(), SpecError> {
    let devices = cdi::requested_devices(config).map_err(|e| invalid(e.field, e.reason))?;
    if devices.is_empty() {
        return Ok(());
    }
    if dirs.is_empty() {
        tracing::info!(?devices, "CDI is disabled: devices not injected");
        return Ok(());
    }
    cdi::Registry::load(dirs)
        .inject(spec, &devices)
        .map_err(|e| invalid(e.field, e.reason))
}

/// Where a container's bundle (config.json + rootfs mount point) lives.
pub fn bundle_dir(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::files::SandboxFiles;

    fn sandbox() -> SandboxContext {
        SandboxContext {
            id: "sb1".into(),
            pause_pid: 4242,
            namespaces: cri::NamespaceOption::default(),
            hostname: "web-0".into(),
            files: SandboxFiles::in_dir(Path::new("/sb")),
            cgroup_parent: "/kubepods/pod1".into(),
            selinux_options: None,
        }
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: "/srv".into(),
            user: String::new(),
        }
    }

    fn build_with(config: &cri::ContainerConfig) -> Result<Spec, SpecError> {
        let rootfs = tempfile::tempdir().unwrap();
        build(&SpecInputs {
            id: "c1",
            config,
            sandbox: &sandbox(),
            image: &image(),
            rootfs: rootfs.path(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            host: &HostOptions::none(),
        })
    }

    #[test]
    fn image_defaults_fill_what_the_config_leaves_out() {
        let config = cri::ContainerConfig {
            envs: vec![cri::KeyValue {
                key: "MODE".into(),
                value: "cri".into(),
            }],
            ..Default::default()
        };
        let spec = build_with(&config).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/entry", "serve"]);
        assert_eq!(process.cwd(), Path::new("/srv"));
        assert_eq!(process.env().as_ref().unwrap(), &["PATH=/bin", "MODE=cri"]);
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd() {
        let img = image();
        let with = |command: &[&str], args: &[&str]| {
            command_line(
                &cri::ContainerConfig {
                    command: command.iter().map(|s| s.to_string()).collect(),
                    args: args.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
                &img,
            )
        };
        assert_eq!(with(&["sh"], &[]), ["sh"]);
        assert_eq!(with(&["sh"], &["-c", "x"]), ["sh", "-c", "x"]);
        assert_eq!(with(&[], &["other"]), ["/bin/entry", "other"]);
    }

    #[test]
    fn namespaces_join_the_pause_process_unless_host() {
        let spec = build_with(&cri::ContainerConfig::default()).unwrap();
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let paths: Vec<String> = namespaces
            .iter()
            .filter_map(|n| n.path().as_ref().map(|p| p.display().to_string()))
            .collect();
        assert!(
            paths.contains(&"/proc/4242/ns/net".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"/proc/4242/ns/pid".to_string()),
            "{paths:?}"
        );
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/kubepods/pod1/c1"))
        );
    }

    #[test]
    fn security_context_shapes_caps_paths_and_seccomp() {
        let config = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: vec!["NET_ADMIN".into()],
                        drop_capabilities: vec!["CHOWN".into()],
                        ..Default::default()
                    }),
                    readonly_rootfs: true,
                    no_new_privs: true,
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_quota: 50_000,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let spec = build_with(&config).unwrap();
        let process = spec.process().as_ref().unwrap();
        let bounding = process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        let names: Vec<String> = bounding.iter().map(|c| c.to_string()).collect();
        assert!(names.iter().any(|c| c.contains("NET_ADMIN")), "{names:?}");
        assert!(!names.iter().any(|c| c.contains("CHOWN")), "{names:?}");
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
        let memory = linux
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .as_ref()
            .unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
    }

    #[test]
    fn drop_all_then_add_keeps_only_the_added() {
        let security = cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["NET_RAW".into()],
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(capabilities(&security), ["CAP_NET_RAW"]);
    }

    #[test]
    fn privileged_gets_all_caps_and_no_masking() {
        let config = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                resources: None,
            }),
            ..Default::default()
        };
        let spec = build_with(&config).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().is_none_or(|p| p.is_empty()));
        assert!(linux.seccomp().is_none());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert!(caps.bounding().as_ref().unwrap().len() > 30);
    }

    #[test]
    fn bad_mounts_and_commands_name_the_field() {
        let config = cri::ContainerConfig {
            command: vec!["sh".into()],
            mounts: vec![cri::Mount {
                container_path: "relative".into(),
                host_path: "/tmp".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = build_with(&config).unwrap_err();
        assert_eq!(err.field, "mounts[0].container_path");
        let rootfs = tempfile::tempdir().unwrap();
        let err = build(&SpecInputs {
            id: "c1",
            config: &cri::ContainerConfig::default(),
            sandbox: &sandbox(),
            image: &ImageDefaults::default(),
            rootfs: rootfs.path(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            host: &HostOptions::none(),
        })
        .unwrap_err();
        assert_eq!(err.field, "command");
    }
}
