//! Loading a bundle's config.json and checking it before anything is created.
//!
//! Unknown properties are accepted (the runtime spec forbids failing on them) and
//! each one is logged with its JSON path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::{Context, Result, invalid};
use super::rootfs::mounts::parse_propagation;

/// Parses a runtime-spec document, returning it with the JSON paths of every
/// property it did not know. Capability names this build does not know are
/// dropped first (runc ignores them with a warning too).
pub fn parse<T: serde::de::DeserializeOwned>(json: &[u8], what: &str) -> Result<(T, Vec<String>)> {
    let mut value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| invalid(what, format!("invalid JSON: {e}")))?;
    let mut unknown = Vec::new();
    let process = if what == "process" {
        Some(&mut value)
    } else {
        value.get_mut("process")
    };
    if let Some(process) = process {
        drop_unknown_capabilities(process, &mut unknown);
    }
    let parsed =
        serde_ignored::deserialize(value, |path| unknown.push(json_path(&path.to_string())))
            .map_err(|e| invalid(what, format!("invalid document: {e}")))?;
    Ok((parsed, unknown))
}

/// serde_ignored marks each Option it passes through with a `?` segment.
fn json_path(raw: &str) -> String {
    raw.split('.')
        .filter(|s| *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

fn drop_unknown_capabilities(process: &mut serde_json::Value, unknown: &mut Vec<String>) {
    let Some(sets) = process
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return;
    };
    for (set, names) in sets.iter_mut() {
        if let Some(names) = names.as_array_mut() {
            names.retain(|name| {
                let known = name.as_str().is_some_and(|n| {
                    n.trim_start_matches("CAP_")
                        .parse::<oci_spec::runtime::Capability>()
                        .is_ok()
                });
                if !known {
                    unknown.push(format!("process.capabilities.{set}: {name}"));
                }
                known
            });
        }
    }
}

/// Reads `<bundle>/config.json`, warns about unknown fields and validates it.
/// The returned spec has `root.path` made absolute.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let json = std::fs::read(&path).context(|| format!("reading {}", path.display()))?;
    let (mut spec, unknown): (Spec, _) = parse(&json, "config.json")?;
    for field in unknown {
        tracing::warn!("config.json: ignoring unknown property {field}");
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?
        .clone();
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = rootfs
        .canonicalize()
        .map_err(|e| invalid("root.path", format!("{}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(invalid(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    let mut root = root;
    root.set_path(rootfs);
    spec.set_root(Some(root));
    validate(&spec)?;
    Ok(spec)
}

pub fn rootfs(spec: &Spec) -> PathBuf {
    spec.root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default()
}

/// Checks the parts of a spec that the kernel would otherwise reject half-way
/// through setup (or silently misapply).
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(invalid("process.args", "must not be empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", process.cwd()),
        ));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(invalid(
                format!("linux.namespaces[{i}].type"),
                format!("namespace {} listed twice", ns.typ()),
            ));
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} does not exist", path.display()),
                ));
            }
        }
    }
    let private = |typ: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == typ);
    if let Some(offsets) = linux.time_offsets() {
        let time = |path: bool| {
            namespaces
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_some() == path)
        };
        crate::oci::timens::validate(offsets, time(false), time(true))?;
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !private(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "hostname",
            "cannot set a hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty())
        && !private(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "domainname",
            "cannot set a domainname without a private UTS namespace",
        ));
    }
    let new_user = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if new_user && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
        return Err(invalid(
            "linux.uidMappings",
            "a new user namespace needs uid mappings",
        ));
    }
    if new_user && linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
        return Err(invalid(
            "linux.gidMappings",
            "a new user namespace needs gid mappings",
        ));
    }
    if let Some(sysctls) = linux.sysctl() {
        for key in sysctls.keys() {
            validate_sysctl(key, &private)?;
        }
    }
    if let Some(propagation) = linux
        .rootfs_propagation()
        .as_ref()
        .filter(|p| !p.is_empty())
    {
        parse_propagation(propagation).ok_or_else(|| {
            invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {propagation:?}"),
            )
        })?;
    }
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        if mount.destination().as_os_str().is_empty() {
            return Err(invalid(
                format!("mounts[{i}].destination"),
                "must not be empty",
            ));
        }
    }
    crate::oci::rootfs::idmap::validate(spec)?;
    for (i, device) in linux.devices().iter().flatten().enumerate() {
        if !device.path().starts_with("/dev") {
            return Err(invalid(
                format!("linux.devices[{i}].path"),
                format!("{} is not under /dev", device.path().display()),
            ));
        }
    }
    Ok(())
}

/// Namespaced sysctls may only be set when the container has its own namespace
/// of that kind (the same rule as runc's).
fn validate_sysctl(key: &str, private: &dyn Fn(LinuxNamespaceType) -> bool) -> Result<()> {
    let field = || format!("linux.sysctl.{key}");
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        if !private(LinuxNamespaceType::Ipc) {
            return Err(invalid(field(), "needs a private IPC namespace"));
        }
        return Ok(());
    }
    if key.starts_with("net.") {
        if !private(LinuxNamespaceType::Network) {
            return Err(invalid(field(), "needs a private network namespace"));
        }
        return Ok(());
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Err(invalid(field(), "use the spec's hostname/domainname"));
    }
    Err(invalid(
        field(),
        "not a namespaced sysctl: it would change the host",
    ))
}

/// Reads a file holding a runtime-spec `process` (exec --process).
pub fn load_process(path: &Path) -> Result<oci_spec::runtime::Process> {
    let json = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
    let (process, unknown): (oci_spec::runtime::Process, _) = parse(&json, "process")?;
    for field in unknown {
        tracing::warn!("process: ignoring unknown property {field}");
    }
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(extra_linux: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/"}},"process":{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"mount"}}]{extra_linux}}},"futureThing":{{"a":1}}}}"#
        )
    }

    #[test]
    fn unknown_fields_are_reported_not_fatal() {
        let (spec, unknown): (Spec, _) = parse(spec_json("").as_bytes(), "config.json").unwrap();
        assert!(unknown.iter().any(|u| u == "futureThing"), "{unknown:?}");
        let nested = spec_json("").replace(r#""cwd":"/""#, r#""cwd":"/","knob":1"#);
        let (_, unknown): (Spec, _) = parse(nested.as_bytes(), "config.json").unwrap();
        assert_eq!(
            unknown,
            vec!["futureThing".to_string(), "process.knob".to_string()]
        );
        validate(&spec).unwrap();
    }

    #[test]
    fn unknown_capabilities_are_dropped_and_reported() {
        let json = spec_json("").replace(
            r#""cwd":"/""#,
            r#""cwd":"/","capabilities":{"bounding":["CAP_CHOWN","CAP_BOGUS"]}"#,
        );
        let (spec, unknown): (Spec, _) = parse(json.as_bytes(), "config.json").unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
        assert!(
            unknown.iter().any(|u| u.contains("CAP_BOGUS")),
            "{unknown:?}"
        );
    }

    #[test]
    fn net_sysctl_needs_network_namespace() {
        let (spec, _): (Spec, _) = parse(
            spec_json(r#","sysctl":{"net.ipv4.ip_forward":"1"}"#).as_bytes(),
            "c",
        )
        .unwrap();
        let err = validate(&spec).unwrap_err().to_string();
        assert!(err.contains("linux.sysctl.net.ipv4.ip_forward"), "{err}");
    }

    #[test]
    fn idmapped_mounts_need_both_mappings() {
        let json = spec_json("").replace(
            r#""ociVersion""#,
            r#""mounts":[{"destination":"/data","type":"bind","source":"/tmp","uidMappings":[{"containerID":0,"hostID":1000,"size":1}]}],"ociVersion""#,
        );
        let (spec, _): (Spec, _) = parse(json.as_bytes(), "c").unwrap();
        let err = validate(&spec).unwrap_err().to_string();
        assert!(err.starts_with("mounts[0].gidMappings"), "{err}");
    }

    #[test]
    fn hostname_needs_uts_namespace() {
        let json = spec_json("").replace(r#""ociVersion""#, r#""hostname":"x","ociVersion""#);
        let (spec, _): (Spec, _) = parse(json.as_bytes(), "c").unwrap();
        assert!(
            validate(&spec)
                .unwrap_err()
                .to_string()
                .starts_with("hostname:")
        );
    }

    #[test]
    fn missing_namespace_path_names_the_field() {
        let json = spec_json("").replace(
            r#"{"type":"mount"}"#,
            r#"{"type":"network","path":"/nonexistent/ns"}"#,
        );
        let (spec, _): (Spec, _) = parse(json.as_bytes(), "c").unwrap();
        let err = validate(&spec).unwrap_err().to_string();
        assert!(err.contains("linux.namespaces[1].path"), "{err}");
    }

    #[test]
    fn missing_rootfs_names_root_path() {
        let dir = tempfile::tempdir().unwrap();
        let json = spec_json("").replace(r#""path":"/""#, r#""path":"rootfs""#);
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("root.path:"), "{err}");
    }
}
