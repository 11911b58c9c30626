//! Turns a spec's `linux.cgroupsPath` (cgroupfs form) into a path inside each hierarchy.

use super::CgroupError;

/// The path below each hierarchy's mount point, without leading slash, with `.` and `..`
/// resolved lexically so that `..` can never climb above the hierarchy root.
///
/// Relative paths are taken relative to the hierarchy root, not to the caller's own
/// cgroup: the result must not depend on which process asks (the runtime re-creates
/// the manager from the spec in later invocations).
pub fn inner_path(cgroups_path: Option<&str>, container_id: &str) -> Result<String, CgroupError> {
    let raw = match cgroups_path {
        Some(p) if !p.is_empty() => p,
        _ => container_id,
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(CgroupError::InvalidPath {
            path: raw.to_string(),
            reason: "resolves to the root cgroup; a container needs its own cgroup".into(),
        });
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_paths_resolve_below_the_root() {
        assert_eq!(
            inner_path(Some("/kubepods/burstable/pod1/c1"), "x").unwrap(),
            "kubepods/burstable/pod1/c1"
        );
        assert_eq!(inner_path(Some("a/b"), "x").unwrap(), "a/b");
    }

    #[test]
    fn dot_dot_cannot_escape_the_hierarchy() {
        assert_eq!(inner_path(Some("/../../etc/./x"), "id").unwrap(), "etc/x");
        assert_eq!(inner_path(Some("a/../b"), "id").unwrap(), "b");
    }

    #[test]
    fn missing_path_defaults_to_the_container_id() {
        assert_eq!(inner_path(None, "ctr1").unwrap(), "ctr1");
        assert_eq!(inner_path(Some(""), "ctr1").unwrap(), "ctr1");
    }

    #[test]
    fn root_path_is_rejected() {
        let err = inner_path(Some("/.."), "id").unwrap_err().to_string();
        assert!(err.contains("linux.cgroupsPath"), "{err}");
    }
}
