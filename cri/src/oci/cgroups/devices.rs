//! Device access rules: the spec's `linux.resources.devices` normalised once, then
//! written as v1 `devices.allow`/`devices.deny` lines or compiled to a v2 eBPF program.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Char,
    Block,
}

pub const ACCESS_MKNOD: u8 = 1;
pub const ACCESS_READ: u8 = 2;
pub const ACCESS_WRITE: u8 = 4;
pub const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None = any major.
    pub major: Option<u32>,
    /// None = any minor.
    pub minor: Option<u32>,
    /// Bit set of ACCESS_*.
    pub access: u8,
}

impl DeviceRule {
    const fn allow(kind: DeviceKind, major: Option<u32>, minor: Option<u32>, access: u8) -> Self {
        DeviceRule {
            allow: true,
            kind,
            major,
            minor,
            access,
        }
    }

    /// Matches every device with every access: resets what came before it.
    pub fn is_wildcard(&self) -> bool {
        self.kind == DeviceKind::All && self.access == ACCESS_ALL
    }

    /// The v1 `devices.allow`/`devices.deny` line, e.g. `c 1:3 rwm` or `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, c) in [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        format!("{kind} {}:{} {access}", num(self.major), num(self.minor))
    }
}

/// Devices every container may use, appended after the spec's own rules as runc does:
/// mknod of anything, the standard character devices, ptys and tun/tap.
pub const DEFAULT_ALLOWED: &[DeviceRule] = &[
    DeviceRule::allow(DeviceKind::Char, None, None, ACCESS_MKNOD),
    DeviceRule::allow(DeviceKind::Block, None, None, ACCESS_MKNOD),
    DeviceRule::allow(DeviceKind::Char, Some(1), Some(3), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(1), Some(8), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(1), Some(7), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(5), Some(0), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(1), Some(5), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(1), Some(9), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(136), None, ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(5), Some(2), ACCESS_ALL),
    DeviceRule::allow(DeviceKind::Char, Some(10), Some(200), ACCESS_ALL),
];

/// The effective rule list for a container: default deny, the spec's rules in order,
/// then [`DEFAULT_ALLOWED`]. Errors name `linux.resources.devices[i]...`.
pub fn effective_rules(spec: Option<&[LinuxDeviceCgroup]>) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: ACCESS_ALL,
    }];
    for (i, rule) in spec.unwrap_or_default().iter().enumerate() {
        if let Some(rule) = convert(i, rule)? {
            rules.push(rule);
        }
    }
    rules.extend_from_slice(DEFAULT_ALLOWED);
    Ok(rules)
}

fn convert(i: usize, rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>, CgroupError> {
    let field = |name: &str| format!("linux.resources.devices[{i}].{name}");
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => DeviceKind::All,
        LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
        LinuxDeviceType::B => DeviceKind::Block,
        // The device controller knows no FIFOs; access to them is never restricted.
        LinuxDeviceType::P => {
            tracing::debug!(rule = i, "ignoring device cgroup rule for FIFO type");
            return Ok(None);
        }
    };
    let number = |value: Option<i64>, name: &str| -> Result<Option<u32>, CgroupError> {
        match value {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                CgroupError::invalid(field(name), format!("{n} is not a device number"))
            }),
        }
    };
    let major = number(rule.major(), "major")?;
    let minor = number(rule.minor(), "minor")?;
    let access = match rule.access().as_deref() {
        None | Some("") => ACCESS_ALL,
        Some(text) => {
            let mut bits = 0;
            for c in text.chars() {
                bits |= match c {
                    'r' => ACCESS_READ,
                    'w' => ACCESS_WRITE,
                    'm' => ACCESS_MKNOD,
                    other => {
                        return Err(CgroupError::invalid(
                            field("access"),
                            format!("{other:?} is not one of r, w, m"),
                        ));
                    }
                };
            }
            bits
        }
    };
    Ok(Some(DeviceRule {
        allow: rule.allow(),
        kind,
        major,
        minor,
        access,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn rules_start_with_deny_all_and_end_with_defaults() {
        let spec = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(8i64)
                .minor(0i64)
                .access("rw")
                .build()
                .unwrap(),
        ];
        let rules = effective_rules(Some(&spec)).unwrap();
        assert_eq!(rules[0].v1_line(), "a *:* rwm");
        assert!(!rules[0].allow);
        assert_eq!(rules[1].v1_line(), "b 8:0 rw");
        assert!(rules[1].allow);
        assert_eq!(rules[2].v1_line(), "c *:* m");
        assert!(rules.iter().any(|r| r.v1_line() == "c 136:* rwm"));
    }

    #[test]
    fn bad_access_names_the_field() {
        let spec = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rx")
                .build()
                .unwrap(),
        ];
        let err = effective_rules(Some(&spec)).unwrap_err().to_string();
        assert!(
            err.starts_with("linux.resources.devices[0].access"),
            "{err}"
        );
    }

    #[test]
    fn negative_major_other_than_wildcard_is_rejected() {
        let spec = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .major(-5i64)
                .build()
                .unwrap(),
        ];
        let err = effective_rules(Some(&spec)).unwrap_err().to_string();
        assert!(err.starts_with("linux.resources.devices[0].major"), "{err}");
    }
}
