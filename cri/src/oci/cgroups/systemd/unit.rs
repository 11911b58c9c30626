//! systemd cgroup paths: `linux.cgroupsPath` in the "slice:prefix:name" form, the unit
//! it names and where systemd puts that unit in the cgroup tree.

use crate::oci::cgroups::CgroupError;

/// The unit holding a container and the cgroup path below the hierarchy root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPath {
    /// The parent slice, e.g. `kubepods-burstable-pod123.slice`.
    pub slice: String,
    /// The container's own unit: `<prefix>-<name>.scope`, or a slice when `name` is one.
    pub unit: String,
    /// `kubepods.slice/kubepods-burstable.slice/.../<unit>` (no leading slash).
    pub cgroup_path: String,
}

impl UnitPath {
    pub fn is_slice(&self) -> bool {
        self.unit.ends_with(".slice")
    }
}

/// Parses "slice:prefix:name"; an empty/absent path uses `system.slice`, prefix `berth`
/// and the container id, like runc's `system.slice:runc:<id>`.
pub fn parse(cgroups_path: Option<&str>, container_id: &str) -> Result<UnitPath, CgroupError> {
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: cgroups_path.unwrap_or_default().to_string(),
        reason: reason.to_string(),
    };
    let (slice, prefix, name) = match cgroups_path.filter(|p| !p.is_empty()) {
        None => ("system.slice", "berth", container_id),
        Some(path) => {
            let parts: Vec<&str> = path.split(':').collect();
            let [slice, prefix, name] = parts[..] else {
                return Err(invalid("the systemd driver expects \"slice:prefix:name\""));
            };
            (
                if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                },
                prefix,
                name,
            )
        }
    };
    if name.is_empty() || name.contains('/') || prefix.contains('/') {
        return Err(invalid(
            "prefix and name must be non-empty unit name parts without '/'",
        ));
    }
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    let slice_path = expand_slice(slice).map_err(|reason| invalid(&reason))?;
    // A slice's place follows from its own name; a scope sits in its parent slice.
    let cgroup_path = if unit.ends_with(".slice") {
        expand_slice(&unit).map_err(|reason| invalid(&reason))?
    } else if slice_path.is_empty() {
        unit.clone()
    } else {
        format!("{slice_path}/{unit}")
    };
    Ok(UnitPath {
        slice: slice.to_string(),
        unit,
        cgroup_path,
    })
}

/// systemd nests slices by their dash-separated name: `a-b-c.slice` lives at
/// `a.slice/a-b.slice/a-b-c.slice`. `-.slice` is the root slice (empty path).
pub fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice name (no .slice suffix)"));
    };
    if slice == "-.slice" {
        return Ok(String::new());
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        return Err(format!("{slice:?} is not a valid slice name"));
    }
    let mut path = Vec::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_pod_slices_expand_to_nested_paths() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod123.slice").unwrap(),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice"
        );
        assert_eq!(expand_slice("system.slice").unwrap(), "system.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "");
    }

    #[test]
    fn malformed_slices_are_rejected() {
        for bad in [
            "kubepods",
            "-a.slice",
            "a-.slice",
            "a--b.slice",
            "a/b.slice",
            ".slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cri_style_path_names_a_scope_in_the_pod_slice() {
        let u = parse(
            Some("kubepods-besteffort-podabc.slice:cri-containerd:0123"),
            "x",
        )
        .unwrap();
        assert_eq!(u.unit, "cri-containerd-0123.scope");
        assert_eq!(
            u.cgroup_path,
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/cri-containerd-0123.scope"
        );
        assert!(!u.is_slice());
    }

    #[test]
    fn defaults_and_slice_units() {
        let u = parse(None, "ctr").unwrap();
        assert_eq!(u.unit, "berth-ctr.scope");
        assert_eq!(u.cgroup_path, "system.slice/berth-ctr.scope");
        let u = parse(Some(":pfx:ctr"), "x").unwrap();
        assert_eq!(u.slice, "system.slice");
        let u = parse(Some("kubepods.slice::kubepods-pod1.slice"), "x").unwrap();
        assert!(u.is_slice());
        assert_eq!(u.cgroup_path, "kubepods.slice/kubepods-pod1.slice");
    }

    #[test]
    fn cgroupfs_style_paths_are_rejected() {
        let err = parse(Some("/kubepods/pod1/ctr"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("slice:prefix:name"), "{err}");
    }
}
