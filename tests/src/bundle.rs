//! OCI runtime bundles: a rootfs directory plus `config.json`, built from a
//! default spec (close to `runc spec`, minus the terminal) with builder
//! methods for what tests vary.

use crate::image::{Layer, busybox_layer};
use crate::tempdir::TempDir;
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Capabilities containerd and Docker grant by default.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A runtime spec (`config.json`) under construction. Kept as JSON so tests
/// can also write specs a typed model would refuse (bad input tests).
#[derive(Clone, Debug)]
pub struct Spec {
    json: Value,
}

impl Default for Spec {
    fn default() -> Self {
        Self::new()
    }
}

impl Spec {
    /// `runc spec`'s defaults, except: no terminal, a writable rootfs, the
    /// container runtime default capabilities, hostname `berth-test`.
    pub fn new() -> Self {
        let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
        let json = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh"],
                "env": [DEFAULT_PATH],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "berth-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"}
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        });
        Self { json }
    }

    /// [`Spec::new`] running a shell that prints `up` and then sleeps until
    /// killed: wait for `up` on its stdout to know the container runs.
    pub fn sleeper() -> Self {
        Self::new().shell("echo up; exec sleep 1000")
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Sets the value at a JSON pointer (`/linux/resources/memory/limit`),
    /// creating missing objects on the way. For anything without a method.
    pub fn set(mut self, pointer: &str, value: impl Into<Value>) -> Self {
        set_pointer(&mut self.json, pointer, value.into());
        self
    }

    /// Removes the value at a JSON pointer, if present.
    pub fn remove(mut self, pointer: &str) -> Self {
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            if let Some(Value::Object(map)) = self.json.pointer_mut(parent) {
                map.remove(key);
            }
        }
        self
    }

    fn push(mut self, pointer: &str, value: Value) -> Self {
        if self.json.pointer(pointer).is_none() {
            set_pointer(&mut self.json, pointer, json!([]));
        }
        if let Some(Value::Array(items)) = self.json.pointer_mut(pointer) {
            items.push(value);
        }
        self
    }

    pub fn args(self, args: &[&str]) -> Self {
        self.set("/process/args", args.to_vec())
    }

    /// Runs `script` with `sh -c`.
    pub fn shell(self, script: &str) -> Self {
        self.args(&["sh", "-c", script])
    }

    /// Adds `NAME=value` to the environment.
    pub fn env(self, name: &str, value: &str) -> Self {
        self.push("/process/env", format!("{name}={value}").into())
    }

    pub fn cwd(self, cwd: &str) -> Self {
        self.set("/process/cwd", cwd)
    }

    pub fn user(self, uid: u32, gid: u32) -> Self {
        self.set("/process/user/uid", uid)
            .set("/process/user/gid", gid)
    }

    pub fn additional_gids(self, gids: &[u32]) -> Self {
        self.set("/process/user/additionalGids", gids.to_vec())
    }

    pub fn umask(self, umask: u32) -> Self {
        self.set("/process/user/umask", umask)
    }

    pub fn hostname(self, hostname: &str) -> Self {
        self.set("/hostname", hostname)
    }

    pub fn readonly(self, readonly: bool) -> Self {
        self.set("/root/readonly", readonly)
    }

    /// Sets the bounding, effective and permitted sets.
    pub fn capabilities(self, caps: &[&str]) -> Self {
        self.set("/process/capabilities/bounding", caps.to_vec())
            .set("/process/capabilities/effective", caps.to_vec())
            .set("/process/capabilities/permitted", caps.to_vec())
    }

    /// The default capabilities minus `dropped`.
    pub fn drop_capabilities(self, dropped: &[&str]) -> Self {
        let caps: Vec<&str> = DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| !dropped.contains(c))
            .collect();
        self.capabilities(&caps)
    }

    pub fn no_new_privileges(self, enabled: bool) -> Self {
        self.set("/process/noNewPrivileges", enabled)
    }

    /// Replaces the rlimit of `kind` (e.g. `RLIMIT_NOFILE`).
    pub fn rlimit(mut self, kind: &str, soft: u64, hard: u64) -> Self {
        if let Some(Value::Array(limits)) = self.json.pointer_mut("/process/rlimits") {
            limits.retain(|l| l["type"] != kind);
        }
        self.push(
            "/process/rlimits",
            json!({"type": kind, "soft": soft, "hard": hard}),
        )
    }

    pub fn oom_score_adj(self, adj: i32) -> Self {
        self.set("/process/oomScoreAdj", adj)
    }

    /// Adds a new namespace of `kind` (`cgroup`, `user`, ...).
    pub fn namespace(self, kind: &str) -> Self {
        self.without_namespace(kind)
            .push("/linux/namespaces", json!({"type": kind}))
    }

    /// Joins the existing namespace at `path` instead of making one.
    pub fn namespace_path(self, kind: &str, path: &Path) -> Self {
        let entry = json!({"type": kind, "path": path});
        self.without_namespace(kind)
            .push("/linux/namespaces", entry)
    }

    pub fn without_namespace(mut self, kind: &str) -> Self {
        if let Some(Value::Array(namespaces)) = self.json.pointer_mut("/linux/namespaces") {
            namespaces.retain(|ns| ns["type"] != kind);
        }
        self
    }

    /// Maps container ids `0..size` to host ids `host..host+size` (uid and
    /// gid); pair with `namespace("user")`.
    pub fn id_mapping(self, host: u32, size: u32) -> Self {
        let mapping = json!([{"containerID": 0, "hostID": host, "size": size}]);
        self.set("/linux/uidMappings", mapping.clone())
            .set("/linux/gidMappings", mapping)
    }

    pub fn mount(self, mount: Value) -> Self {
        self.push("/mounts", mount)
    }

    pub fn tmpfs(self, destination: &str, options: &[&str]) -> Self {
        self.mount(json!({
            "destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options
        }))
    }

    /// A bind mount; `options` beyond `rbind` (e.g. `ro`).
    pub fn bind(self, source: &Path, destination: &str, options: &[&str]) -> Self {
        let mut all = vec!["rbind"];
        all.extend_from_slice(options);
        self.mount(json!({
            "destination": destination, "type": "bind", "source": source, "options": all
        }))
    }

    pub fn masked_paths(self, paths: &[&str]) -> Self {
        self.set("/linux/maskedPaths", paths.to_vec())
    }

    pub fn readonly_paths(self, paths: &[&str]) -> Self {
        self.set("/linux/readonlyPaths", paths.to_vec())
    }

    pub fn memory_limit(self, bytes: i64) -> Self {
        self.set("/linux/resources/memory/limit", bytes)
    }

    pub fn pids_limit(self, limit: i64) -> Self {
        self.set("/linux/resources/pids/limit", limit)
    }

    pub fn cpu(self, shares: u64, quota: i64, period: u64) -> Self {
        self.set("/linux/resources/cpu/shares", shares)
            .set("/linux/resources/cpu/quota", quota)
            .set("/linux/resources/cpu/period", period)
    }

    pub fn seccomp(self, seccomp: Value) -> Self {
        self.set("/linux/seccomp", seccomp)
    }

    pub fn sysctl(mut self, name: &str, value: &str) -> Self {
        if self.json.pointer("/linux/sysctl").is_none() {
            set_pointer(&mut self.json, "/linux/sysctl", json!({}));
        }
        if let Some(Value::Object(sysctls)) = self.json.pointer_mut("/linux/sysctl") {
            sysctls.insert(name.to_string(), value.into());
        }
        self
    }

    /// Adds a hook of `kind` (`prestart`, `createRuntime`, `poststart`, ...).
    pub fn hook(self, kind: &str, path: &str, args: &[&str]) -> Self {
        self.push(
            &format!("/hooks/{kind}"),
            json!({"path": path, "args": args}),
        )
    }

    pub fn cgroups_path(self, path: &str) -> Self {
        self.set("/linux/cgroupsPath", path)
    }
}

/// Sets `value` at `pointer`, creating objects for missing path segments.
fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut node = root;
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    let Some((last, parents)) = segments.split_last() else {
        *node = value;
        return;
    };
    for segment in parents {
        if !node.is_object() {
            *node = json!({});
        }
        node = node
            .as_object_mut()
            .map(|map| map.entry(segment.to_string()).or_insert_with(|| json!({})))
            .expect("node was just made an object");
    }
    if !node.is_object() {
        *node = json!({});
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}

/// A bundle directory holding `rootfs/` and `config.json`, with a unique
/// container id whose cgroup is `/<id>` unless the spec says. On drop the
/// directory and any cgroup directories left at the spec's path are removed.
pub struct Bundle {
    dir: TempDir,
    id: String,
    spec: Spec,
}

impl Bundle {
    /// A bundle whose rootfs is the busybox layer.
    pub fn busybox(spec: Spec) -> anyhow::Result<Self> {
        Self::from_layers(&[busybox_layer()?], spec)
    }

    /// A bundle whose rootfs is `layers` applied bottom first.
    pub fn from_layers(layers: &[Layer], spec: Spec) -> anyhow::Result<Self> {
        let dir = TempDir::new("berth-bundle")?;
        let id = crate::unique_name("berth");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        for layer in layers {
            layer.apply_to(&rootfs)?;
        }
        let spec = match spec.json.pointer("/linux/cgroupsPath") {
            Some(_) => spec,
            None => spec.cgroups_path(&format!("/{id}")),
        };
        let bundle = Self { dir, id, spec };
        bundle.write_spec()?;
        Ok(bundle)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The container id tests should use for this bundle.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The spec's `linux.cgroupsPath`.
    pub fn cgroups_path(&self) -> String {
        self.spec.json["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Changes the spec and rewrites `config.json`.
    pub fn update_spec(&mut self, change: impl FnOnce(Spec) -> Spec) -> anyhow::Result<()> {
        self.spec = change(self.spec.clone());
        self.write_spec()
    }

    fn write_spec(&self) -> anyhow::Result<()> {
        let path = self.dir.join("config.json");
        let text = serde_json::to_vec_pretty(&self.spec.json)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let path = self.cgroups_path();
        if !path.is_empty() {
            crate::cgroup::remove(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_creates_missing_objects() {
        let spec = Spec::new().set("/linux/resources/memory/limit", 1024);
        assert_eq!(spec.json()["linux"]["resources"]["memory"]["limit"], 1024);
        assert_eq!(
            spec.json()["linux"]["resources"]["devices"][0]["allow"],
            false
        );
    }

    #[test]
    fn namespace_methods_replace_entries_of_the_same_type() {
        let spec = Spec::new()
            .namespace("user")
            .namespace_path("network", Path::new("/run/netns/x"))
            .without_namespace("ipc");
        let namespaces = spec.json()["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = namespaces
            .iter()
            .map(|ns| ns["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["pid", "uts", "mount", "user", "network"]);
        assert_eq!(namespaces[4]["path"], "/run/netns/x");
    }

    #[test]
    fn rlimit_replaces_the_same_kind() {
        let spec = Spec::new().rlimit("RLIMIT_NOFILE", 10, 20);
        let limits = spec.json()["process"]["rlimits"].as_array().unwrap();
        assert_eq!(
            limits,
            &[json!({"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20})]
        );
    }

    #[test]
    fn bundle_writes_rootfs_and_config_with_a_unique_cgroup() {
        let layer = Layer::new().file("hello", "hi", 0o644);
        let bundle = Bundle::from_layers(&[layer], Spec::new().shell("cat /hello")).unwrap();
        let config: Value =
            serde_json::from_slice(&std::fs::read(bundle.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["process"]["args"], json!(["sh", "-c", "cat /hello"]));
        assert_eq!(config["linux"]["cgroupsPath"], format!("/{}", bundle.id()));
        assert_eq!(std::fs::read(bundle.rootfs().join("hello")).unwrap(), b"hi");
    }
}
