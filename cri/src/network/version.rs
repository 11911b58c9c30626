//! CNI specification versions (`cniVersion`), compared numerically.

use std::fmt;
use std::str::FromStr;

/// A `major.minor.patch` CNI spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    major: u32,
    minor: u32,
    patch: u32,
}

impl CniVersion {
    pub const V0_1_0: CniVersion = CniVersion::new(0, 1, 0);
    pub const V0_3_0: CniVersion = CniVersion::new(0, 3, 0);
    /// First version with CHECK.
    pub const V0_4_0: CniVersion = CniVersion::new(0, 4, 0);
    /// First version whose results have no per-IP `version` field.
    pub const V1_0_0: CniVersion = CniVersion::new(1, 0, 0);
    /// First version with STATUS and GC.
    pub const V1_1_0: CniVersion = CniVersion::new(1, 1, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        CniVersion {
            major,
            minor,
            patch,
        }
    }

    /// Results in this version use the `interfaces`/`ips` layout (0.3.0+)
    /// rather than the legacy `ip4`/`ip6` one.
    pub fn has_current_result_layout(self) -> bool {
        self >= Self::V0_3_0
    }
}

/// Versions a CNI configuration may declare.
pub const KNOWN_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

impl FromStr for CniVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor)), patch, None) => {
                let patch = match patch {
                    None => 0,
                    Some(Ok(p)) => p,
                    Some(Err(_)) => return Err(format!("{s:?} is not a version")),
                };
                Ok(CniVersion::new(major, minor, patch))
            }
            _ => Err(format!("{s:?} is not a version")),
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically() {
        let v: CniVersion = "0.10.0".parse().unwrap();
        assert!(v > "0.4.0".parse().unwrap());
        assert!(CniVersion::V1_1_0 > "1.0.0".parse().unwrap());
        assert_eq!("1.0".parse::<CniVersion>().unwrap(), CniVersion::V1_0_0);
        assert!("1.x.0".parse::<CniVersion>().is_err());
    }
}
