//! Container Device Interface: devices a container asks for by fully
//! qualified name (`vendor.com/class=name`, from `CDI_devices` and from
//! `cdi.k8s.io/*` annotations, as containerd takes them), resolved in the
//! CDI spec files of the configured dirs and applied to the OCI spec as
//! their container edits: env, device nodes (with a cgroup rule), mounts,
//! hooks, additional gids and intelRdt.
//!
//! Spec files (`*.json`, `*.yaml`, `*.yml`) are read afresh for each
//! container that asks for a device. A later dir has priority over an
//! earlier one (`/var/run/cdi` over `/etc/cdi`); two files of one dir
//! defining the same device conflict. A file that does not parse is left
//! out (logged) and named if a device cannot be resolved.
//!
//! Written by hand: the CDI crate on crates.io brings a JSON-schema
//! validator with an HTTP client, a CLI parser and a deprecated YAML crate
//! into the daemon; the format and the edits are small.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;
use serde::Deserialize;
use serde_json::{Value, json};

/// Annotations of this prefix list CDI devices, comma separated.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// A CDI problem, naming the field or the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CdiError {
    pub field: String,
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> CdiError {
    CdiError {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<DeviceSpec>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct DeviceSpec {
    name: String,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ContainerEdits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<MountEdit>,
    #[serde(default)]
    hooks: Vec<HookEdit>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    #[serde(default)]
    intel_rdt: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    minor: Option<i64>,
    #[serde(default)]
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct MountEdit {
    host_path: String,
    container_path: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct HookEdit {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// The OCI hook lists a CDI hook may name.
const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn valid_vendor(vendor: &str) -> bool {
    let bytes = vendor.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

fn valid_class(class: &str) -> bool {
    let bytes = class.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(b))
}

fn valid_device_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b))
}

/// `vendor/class` of a valid spec kind.
fn valid_kind(kind: &str) -> bool {
    kind.split_once('/')
        .is_some_and(|(vendor, class)| valid_vendor(vendor) && valid_class(class))
}

/// Splits `vendor/class=name`; None unless all three parts are valid.
pub fn parse_qualified_name(qualified: &str) -> Option<(&str, &str)> {
    let (kind, name) = qualified.split_once('=')?;
    (valid_kind(kind) && valid_device_name(name)).then_some((kind, name))
}

/// The devices a container asks for: `CDI_devices` first, then the
/// annotations (by key), each once.
pub fn requested_devices(config: &cri::ContainerConfig) -> Result<Vec<String>, CdiError> {
    let mut devices: Vec<String> = Vec::new();
    let mut add = |name: &str, field: String| {
        if parse_qualified_name(name).is_none() {
            return Err(error(
                field,
                format!(
                    "{name:?} is not a fully qualified CDI device name (vendor.com/class=name)"
                ),
            ));
        }
        if !devices.iter().any(|d| d == name) {
            devices.push(name.to_string());
        }
        Ok(())
    };
    for (index, device) in config.cdi_devices.iter().enumerate() {
        add(&device.name, format!("CDI_devices[{index}].name"))?;
    }
    let annotations: BTreeMap<&String, &String> = config
        .annotations
        .iter()
        .filter(|(key, _)| key.starts_with(ANNOTATION_PREFIX))
        .collect();
    for (key, value) in annotations {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            add(name, format!("annotations[{key:?}]"))?;
        }
    }
    Ok(devices)
}

/// A device's edits and the spec file they come from.
#[derive(Debug, Clone)]
struct Definition {
    file: PathBuf,
    spec_edits: ContainerEdits,
    device_edits: ContainerEdits,
}

/// A qualified name's definition, or why it has none usable.
#[derive(Debug, Clone)]
struct Entry {
    /// Index of the spec dir (higher wins).
    priority: usize,
    /// The (last) file that defines it.
    file: PathBuf,
    found: Result<Definition, String>,
}

/// The devices of the spec files in `dirs`, by qualified name.
#[derive(Debug, Default)]
pub struct Registry {
    devices: BTreeMap<String, Entry>,
    /// Files that could not be used, with why.
    broken: Vec<String>,
}

fn parse_spec(path: &Path, text: &str) -> Result<SpecFile, String> {
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    if spec.cdi_version.is_empty() {
        return Err("cdiVersion is missing".into());
    }
    if !valid_kind(&spec.kind) {
        return Err(format!("kind {:?} is not vendor/class", spec.kind));
    }
    for device in &spec.devices {
        if !valid_device_name(&device.name) {
            return Err(format!("device name {:?} is invalid", device.name));
        }
    }
    Ok(spec)
}

impl Registry {
    /// Reads every spec file of `dirs` (missing dirs are empty).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry::default();
        for (priority, dir) in dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                })
                .collect();
            files.sort();
            for file in files {
                let spec = std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_spec(&file, &text));
                match spec {
                    Ok(spec) => registry.add(&file, priority, spec),
                    Err(reason) => {
                        tracing::warn!(file = %file.display(), "CDI spec left out: {reason}");
                        registry
                            .broken
                            .push(format!("{}: {reason}", file.display()));
                    }
                }
            }
        }
        registry
    }

    fn add(&mut self, file: &Path, priority: usize, spec: SpecFile) {
        for device in spec.devices {
            let name = format!("{}={}", spec.kind, device.name);
            let definition = Definition {
                file: file.to_path_buf(),
                spec_edits: spec.container_edits.clone(),
                device_edits: device.container_edits,
            };
            let found = match self.devices.remove(&name) {
                // Dirs are read in priority order: an earlier entry of the
                // same dir is a conflict, one of an earlier dir is overridden.
                Some(existing) if existing.priority == priority => Err(format!(
                    "defined in both {} and {}",
                    existing.file.display(),
                    file.display()
                )),
                _ => Ok(definition),
            };
            self.devices.insert(
                name,
                Entry {
                    priority,
                    file: file.to_path_buf(),
                    found,
                },
            );
        }
    }

    /// Applies the edits of `devices` to `spec` (the OCI spec as JSON):
    /// each spec's common edits once, then each device's. Nothing is
    /// changed unless every device resolves.
    pub fn inject(&self, spec: &mut Value, devices: &[String]) -> Result<(), CdiError> {
        let mut unresolved = Vec::new();
        let mut edits: Vec<&ContainerEdits> = Vec::new();
        let mut spec_files: Vec<&Path> = Vec::new();
        for name in devices {
            match self.devices.get(name).map(|entry| &entry.found) {
                Some(Ok(definition)) => {
                    if !spec_files.contains(&definition.file.as_path()) {
                        spec_files.push(&definition.file);
                        edits.push(&definition.spec_edits);
                    }
                    edits.push(&definition.device_edits);
                }
                Some(Err(conflict)) => unresolved.push(format!("{name} ({conflict})")),
                None => unresolved.push(name.clone()),
            }
        }
        if !unresolved.is_empty() {
            let mut reason = format!("unresolvable CDI devices {}", unresolved.join(", "));
            if !self.broken.is_empty() {
                reason.push_str(&format!(
                    "; spec files left out: {}",
                    self.broken.join("; ")
                ));
            }
            return Err(error("CDI_devices", reason));
        }
        let mut edited = spec.clone();
        for edit in edits {
            apply(&mut edited, edit)?;
        }
        sort_mounts(&mut edited);
        *spec = edited;
        Ok(())
    }
}

/// The array at `path` in `value`, made (with the objects leading to it)
/// where missing.
fn array<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Vec<Value> {
    let mut current = value;
    for key in path {
        if !current.is_object() {
            *current = json!({});
        }
        current = &mut current[*key];
    }
    if !current.is_array() {
        *current = json!([]);
    }
    match current {
        Value::Array(items) => items,
        _ => unreachable!("made an array just above"),
    }
}

fn apply(spec: &mut Value, edits: &ContainerEdits) -> Result<(), CdiError> {
    let env = array(spec, &["process", "env"]);
    for entry in &edits.env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        env.retain(|e| {
            e.as_str()
                .is_none_or(|e| e.split_once('=').map_or(e, |(k, _)| k) != key)
        });
        env.push(json!(entry));
    }
    for node in &edits.device_nodes {
        let (device, rule) = device_node(node)?;
        let devices = array(spec, &["linux", "devices"]);
        devices.retain(|d| d["path"] != device["path"]);
        devices.push(device);
        if let Some(rule) = rule {
            array(spec, &["linux", "resources", "devices"]).push(rule);
        }
    }
    for mount in &edits.mounts {
        let mounts = array(spec, &["mounts"]);
        mounts.retain(|m| m["destination"] != json!(mount.container_path));
        let mut entry = json!({
            "destination": mount.container_path,
            "source": mount.host_path,
            "options": mount.options,
        });
        if let Some(kind) = &mount.kind {
            entry["type"] = json!(kind);
        }
        mounts.push(entry);
    }
    for hook in &edits.hooks {
        if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
            return Err(error(
                "CDI_devices",
                format!(
                    "CDI hook {:?}: unknown hookName {:?}",
                    hook.path, hook.hook_name
                ),
            ));
        }
        let mut entry = json!({"path": hook.path});
        if !hook.args.is_empty() {
            entry["args"] = json!(hook.args);
        }
        if !hook.env.is_empty() {
            entry["env"] = json!(hook.env);
        }
        if let Some(timeout) = hook.timeout {
            entry["timeout"] = json!(timeout);
        }
        array(spec, &["hooks", hook.hook_name.as_str()]).push(entry);
    }
    if !edits.additional_gids.is_empty() {
        let gids = array(spec, &["process", "user", "additionalGids"]);
        for gid in edits.additional_gids.iter().filter(|g| **g != 0) {
            if !gids.contains(&json!(gid)) {
                gids.push(json!(gid));
            }
        }
    }
    if let Some(rdt) = &edits.intel_rdt {
        spec["linux"]["intelRdt"] = rdt.clone();
    }
    Ok(())
}

/// An OCI device (and its cgroup rule for block and char devices) for a
/// CDI device node, filling type, numbers and mode from the host node.
fn device_node(node: &DeviceNode) -> Result<(Value, Option<Value>), CdiError> {
    let field = || format!("CDI device node {}", node.path);
    if !node.path.starts_with('/') {
        return Err(error(field(), "path is not absolute"));
    }
    let host_path = node.host_path.as_deref().unwrap_or(&node.path);
    let mut kind = node.kind.clone().unwrap_or_default();
    let (mut major, mut minor, mut mode) = (node.major, node.minor, node.file_mode);
    if kind.is_empty() || major.is_none() || (kind != "p" && minor.is_none()) {
        let meta = std::fs::metadata(host_path)
            .map_err(|e| error(field(), format!("host path {host_path}: {e}")))?;
        let file_type = meta.file_type();
        let found = if file_type.is_char_device() {
            "c"
        } else if file_type.is_block_device() {
            "b"
        } else if file_type.is_fifo() {
            "p"
        } else {
            return Err(error(field(), format!("{host_path} is not a device")));
        };
        if kind.is_empty() {
            kind = found.to_string();
        }
        let rdev = meta.rdev();
        major.get_or_insert(i64::from(libc::major(rdev)));
        minor.get_or_insert(i64::from(libc::minor(rdev)));
        mode.get_or_insert(meta.mode() & 0o7777);
    }
    if !["c", "b", "u", "p"].contains(&kind.as_str()) {
        return Err(error(field(), format!("unknown device type {kind:?}")));
    }
    let permissions = node.permissions.clone().unwrap_or_else(|| "rwm".into());
    if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(error(
            field(),
            format!("permissions {permissions:?} are not a subset of rwm"),
        ));
    }
    let mut device = json!({
        "path": node.path,
        "type": kind,
        "major": major.unwrap_or(0),
        "minor": minor.unwrap_or(0),
    });
    if let Some(mode) = mode {
        device["fileMode"] = json!(mode);
    }
    if let Some(uid) = node.uid {
        device["uid"] = json!(uid);
    }
    if let Some(gid) = node.gid {
        device["gid"] = json!(gid);
    }
    let rule = matches!(kind.as_str(), "c" | "b" | "u").then(|| {
        json!({"allow": true, "type": if kind == "b" { "b" } else { "c" },
               "major": major, "minor": minor, "access": permissions})
    });
    Ok((device, rule))
}

/// Mounts ordered by depth of their destination (stable), so a parent is
/// mounted before what a device adds under it.
fn sort_mounts(spec: &mut Value) {
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        return;
    };
    mounts.sort_by_key(|m| {
        m["destination"]
            .as_str()
            .map_or(0, |d| Path::new(d).components().count())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR_SPEC: &str = r#"
cdiVersion: "0.6.0"
kind: example.com/test
containerEdits:
  env: ["FROM_SPEC=1"]
devices:
  - name: null0
    containerEdits:
      env: ["CDI_DEVICE=null0"]
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
      mounts:
        - hostPath: /etc/hostname
          containerPath: /run/cdi/hostname
          options: [ro, rbind]
      hooks:
        - hookName: createContainer
          path: /bin/true
          args: ["true", "cdi"]
      additionalGids: [44]
  - name: other
    containerEdits:
      env: ["CDI_DEVICE=other"]
"#;

    fn registry_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let registry = Registry::load(&[dir.path().to_path_buf()]);
        (dir, registry)
    }

    fn base_spec() -> Value {
        json!({
            "process": {"env": ["PATH=/bin", "CDI_DEVICE=none"], "user": {"uid": 0, "gid": 0}},
            "mounts": [{"destination": "/proc"}, {"destination": "/run/cdi/deep/x"}],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}},
        })
    }

    #[test]
    fn names_must_be_fully_qualified() {
        assert_eq!(
            parse_qualified_name("vendor.com/gpu=gpu0"),
            Some(("vendor.com/gpu", "gpu0"))
        );
        for bad in [
            "gpu0",
            "vendor.com/gpu",
            "vendor.com=gpu0",
            "/gpu=0",
            "v/c=",
            "v/c=-x",
        ] {
            assert_eq!(parse_qualified_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn devices_come_from_the_field_then_the_annotations_once_each() {
        let config = cri::ContainerConfig {
            cdi_devices: vec![cri::CdiDevice {
                name: "example.com/test=null0".into(),
            }],
            annotations: [
                (
                    "cdi.k8s.io/plugin_b".to_string(),
                    "example.com/test=other, example.com/test=null0".to_string(),
                ),
                ("unrelated".to_string(), "x".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            requested_devices(&config).unwrap(),
            ["example.com/test=null0", "example.com/test=other"]
        );
        let bad = cri::ContainerConfig {
            annotations: [("cdi.k8s.io/x".to_string(), "gpu0".to_string())].into(),
            ..Default::default()
        };
        let err = requested_devices(&bad).unwrap_err();
        assert_eq!(err.field, "annotations[\"cdi.k8s.io/x\"]");
    }

    #[test]
    fn edits_are_applied_to_the_spec() {
        let (_dir, registry) = registry_with(&[("vendor.yaml", VENDOR_SPEC)]);
        let mut spec = base_spec();
        registry
            .inject(&mut spec, &["example.com/test=null0".to_string()])
            .unwrap();
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "FROM_SPEC=1", "CDI_DEVICE=null0"])
        );
        let device = &spec["linux"]["devices"][0];
        assert_eq!(device["path"], "/dev/cdi-null");
        assert_eq!(device["type"], "c");
        assert_eq!(
            (device["major"].as_i64(), device["minor"].as_i64()),
            (Some(1), Some(3))
        );
        assert_eq!(
            spec["linux"]["resources"]["devices"][1],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        let destinations: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            destinations,
            ["/proc", "/run/cdi/hostname", "/run/cdi/deep/x"]
        );
        assert_eq!(
            spec["hooks"]["createContainer"],
            json!([{"path": "/bin/true", "args": ["true", "cdi"]}])
        );
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([44]));
    }

    #[test]
    fn an_unknown_device_names_itself_and_changes_nothing() {
        let (_dir, registry) =
            registry_with(&[("vendor.yaml", VENDOR_SPEC), ("broken.json", "{not json")]);
        let mut spec = base_spec();
        let err = registry
            .inject(
                &mut spec,
                &[
                    "example.com/test=null0".to_string(),
                    "example.com/test=missing".to_string(),
                ],
            )
            .unwrap_err();
        assert!(err.reason.contains("example.com/test=missing"), "{err}");
        assert!(err.reason.contains("broken.json"), "{err}");
        assert_eq!(spec, base_spec());
    }

    #[test]
    fn later_dirs_override_and_one_dir_conflicts() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        let json_spec = |env: &str| {
            format!(
                r#"{{"cdiVersion":"0.6.0","kind":"example.com/test","devices":[{{"name":"d","containerEdits":{{"env":["{env}"]}}}}]}}"#
            )
        };
        std::fs::write(low.path().join("a.json"), json_spec("WHO=low")).unwrap();
        std::fs::write(high.path().join("a.json"), json_spec("WHO=high")).unwrap();
        let registry = Registry::load(&[low.path().into(), high.path().into()]);
        let mut spec = json!({});
        registry
            .inject(&mut spec, &["example.com/test=d".to_string()])
            .unwrap();
        assert_eq!(spec["process"]["env"], json!(["WHO=high"]));

        std::fs::write(low.path().join("b.json"), json_spec("WHO=twin")).unwrap();
        let registry = Registry::load(&[low.path().into()]);
        let err = registry
            .inject(&mut json!({}), &["example.com/test=d".to_string()])
            .unwrap_err();
        assert!(err.reason.contains("defined in both"), "{err}");
    }

    #[test]
    fn bad_spec_files_are_left_out() {
        let (_dir, registry) = registry_with(&[(
            "bad.yaml",
            "cdiVersion: \"0.6.0\"\nkind: nokind\ndevices: []\n",
        )]);
        assert_eq!(registry.broken.len(), 1);
        assert!(registry.broken[0].contains("nokind"));
    }
}
