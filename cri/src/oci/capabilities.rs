//! The process's five capability sets.

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use super::error::{Context, OciError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// Converts the spec's sets; capabilities this build or kernel does not know are
/// skipped with a warning, as runc does.
pub fn from_spec(spec: &LinuxCapabilities) -> CapabilitySets {
    let supported = caps::runtime::thread_all_supported();
    let convert = |set: &Option<oci_spec::runtime::Capabilities>, name: &str| -> CapsHashSet {
        set.iter()
            .flatten()
            .filter_map(|cap| match format!("CAP_{cap}").parse::<Capability>() {
                Ok(c) if supported.contains(&c) => Some(c),
                _ => {
                    tracing::warn!(
                        "process.capabilities.{name}: CAP_{cap} is not supported, ignored"
                    );
                    None
                }
            })
            .collect()
    };
    CapabilitySets {
        bounding: convert(spec.bounding(), "bounding"),
        effective: convert(spec.effective(), "effective"),
        permitted: convert(spec.permitted(), "permitted"),
        inheritable: convert(spec.inheritable(), "inheritable"),
        ambient: convert(spec.ambient(), "ambient"),
    }
}

/// Parses `CAP_X` names (exec --cap).
pub fn parse_names(names: &[String]) -> Result<CapsHashSet> {
    names
        .iter()
        .map(|n| {
            let upper = n.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            full.parse::<Capability>()
                .map_err(|_| OciError::InvalidSpec {
                    field: "process.capabilities".into(),
                    reason: format!("unknown capability {n}"),
                })
        })
        .collect()
}

/// Drops from the bounding set everything not in `sets.bounding`. Must run while
/// CAP_SETPCAP is still effective (before the uid change).
pub fn drop_bounding(sets: &CapabilitySets) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !sets.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                OciError::Init(format!("dropping {cap} from the bounding set: {e}"))
            })?;
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable, then ambient (which needs the cap in
/// both permitted and inheritable).
pub fn apply(sets: &CapabilitySets) -> Result<()> {
    let set = |which: CapSet, value: &CapsHashSet| {
        caps::set(None, which, value)
            .map_err(|e| OciError::Init(format!("setting {which:?} capabilities: {e}")))
    };
    set(CapSet::Effective, &sets.effective)?;
    set(CapSet::Permitted, &sets.permitted)?;
    set(CapSet::Inheritable, &sets.inheritable)?;
    if !sets.ambient.is_empty() {
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| OciError::Init(format!("clearing ambient: {e}")))?;
        for cap in &sets.ambient {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| OciError::Init(format!("raising ambient {cap}: {e}")))?;
        }
    }
    Ok(())
}

/// Keeps permitted capabilities across the setuid away from root.
pub fn keep_across_setuid(keep: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(keep).context(|| "prctl(PR_SET_KEEPCAPS)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_map_to_kernel_capabilities() {
        let spec: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_NET_BIND_SERVICE"],"effective":["CAP_KILL"]}"#,
        )
        .unwrap();
        let sets = from_spec(&spec);
        assert!(sets.bounding.contains(&Capability::CAP_CHOWN));
        assert!(sets.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert_eq!(sets.effective.len(), 1);
        assert!(sets.ambient.is_empty());
    }

    #[test]
    fn cap_flag_names_accept_short_and_long_forms() {
        let parsed = parse_names(&["net_admin".into(), "CAP_SYS_ADMIN".into()]).unwrap();
        assert!(
            parsed.contains(&Capability::CAP_NET_ADMIN)
                && parsed.contains(&Capability::CAP_SYS_ADMIN)
        );
        assert!(parse_names(&["CAP_BOGUS".into()]).is_err());
    }
}
