//! CNI spec versions this library speaks and the rules between them.

use super::error::{CniError, CniResult, ErrorCode};

/// Result and config versions we can read and write. 0.1.0/0.2.0 results
/// (ip4/ip6 objects) are not supported; runtimes of the last years all ask for
/// 0.3.0 or newer.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Every version a network configuration may declare; a runtime runs
/// plugins of all of them.
pub const KNOWN_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest version, used when nothing else is known (e.g. decoding failed).
pub const CURRENT_VERSION: &str = "1.1.0";

/// A parsed semantic version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Configurations from before 0.2.0 may omit the version.
    pub const V0_1_0: Version = Version(0, 1, 0);
    pub const V0_3_0: Version = Version(0, 3, 0);
    /// First version with CHECK.
    pub const V0_4_0: Version = Version(0, 4, 0);
    /// First version whose results have no per-IP `version` field.
    pub const V1_0_0: Version = Version(1, 0, 0);
    /// First version with STATUS and GC.
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Like [`Version::parse`], but an empty string is 0.1.0, the version
    /// plugins assume when a configuration or result names none.
    pub fn parse_or_oldest(s: &str) -> CniResult<Self> {
        if s.is_empty() {
            Ok(Self::V0_1_0)
        } else {
            Self::parse(s)
        }
    }

    pub fn parse(s: &str) -> CniResult<Self> {
        let bad = || {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersion {s:?} is not a valid version"),
            )
        };
        let mut parts = s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let major = parts.next().ok_or_else(bad)??;
        let minor = parts.next().unwrap_or(Ok(0))?;
        let patch = parts.next().unwrap_or(Ok(0))?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Version(major, minor, patch))
    }

    /// Results in this version use the `interfaces`/`ips` layout (0.3.0+)
    /// rather than the legacy `ip4`/`ip6` one.
    pub fn has_current_result_layout(self) -> bool {
        self >= Self::V0_3_0
    }

    /// Results of 0.3.x and 0.4.0 carry `"version"` in each IP entry.
    pub fn has_ip_version_field(self) -> bool {
        self < Self::V1_0_0
    }

    pub fn supports_check(self) -> bool {
        self >= Self::V0_4_0
    }

    pub fn supports_gc_and_status(self) -> bool {
        self >= Self::V1_1_0
    }
}

/// Checks that a config's cniVersion is one we implement.
pub fn check_supported(version: &str) -> CniResult<Version> {
    let parsed = Version::parse(version)?;
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(parsed);
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!(
            "cniVersion {version:?} is not supported; supported versions: {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_versions() {
        assert!(Version::parse("0.4.0").unwrap() < Version::parse("1.0.0").unwrap());
        assert!(Version::parse("0.3.1").unwrap().has_ip_version_field());
        assert!(!Version::parse("1.1.0").unwrap().has_ip_version_field());
        assert!(Version::parse("0.10.0").unwrap() > Version::V0_4_0);
        assert_eq!(Version::parse_or_oldest("").unwrap(), Version::V0_1_0);
        assert!(!Version::V0_1_0.has_current_result_layout());
    }

    #[test]
    fn rejects_unknown_version_with_code_1() {
        let err = check_supported("9.9.9").unwrap_err();
        assert_eq!(err.code, 1);
        assert_eq!(check_supported("x.y").unwrap_err().code, 1);
    }
}
