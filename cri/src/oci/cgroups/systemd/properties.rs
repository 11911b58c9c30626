//! The transient-unit properties for a container's resources: what systemd itself must
//! know so that it does not reset our limits on its next reload. Same choices as runc.

use oci_spec::runtime::LinuxResources;

use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::convert::{
    blkio_weight_to_io_weight, memory_swap_to_v2, shares_to_weight,
};
use crate::oci::cgroups::validate::parse_cpu_list;

/// A D-Bus property value of the types the unit properties use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    Bool(bool),
    /// D-Bus `t`.
    U64(u64),
    Str(String),
    /// D-Bus `au` (PIDs).
    U32s(Vec<u32>),
    /// D-Bus `ay` (CPU/memory-node bitmasks).
    Bytes(Vec<u8>),
}

pub type Property = (&'static str, PropValue);

/// systemd's "infinity" for limits.
const INFINITY: u64 = u64::MAX;
const DEFAULT_CFS_PERIOD: u64 = 100_000;

/// Properties every container unit gets: a delegated cgroup, no implicit dependencies
/// (which would order it after basic.target and stop it on shutdown ordering), accounting.
pub fn base_properties(
    description: &str,
    slice: &str,
    is_slice: bool,
    pid: Option<u32>,
) -> Vec<Property> {
    let mut props: Vec<Property> = vec![("Description", PropValue::Str(description.to_string()))];
    if !is_slice {
        props.push(("Slice", PropValue::Str(slice.to_string())));
        props.push(("Delegate", PropValue::Bool(true)));
    }
    if let Some(pid) = pid {
        props.push(("PIDs", PropValue::U32s(vec![pid])));
    }
    props.push(("DefaultDependencies", PropValue::Bool(false)));
    for accounting in [
        "MemoryAccounting",
        "CPUAccounting",
        "IOAccounting",
        "TasksAccounting",
    ] {
        props.push((accounting, PropValue::Bool(true)));
    }
    props
}

/// Resource properties for `r` on a cgroup v1 (`v2 == false`) or v2 host.
pub fn resource_properties(r: &LinuxResources, v2: bool) -> Result<Vec<Property>, CgroupError> {
    let mut props = Vec::new();
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            props.push(if v2 {
                ("CPUWeight", PropValue::U64(shares_to_weight(shares)))
            } else {
                ("CPUShares", PropValue::U64(shares))
            });
        }
        add_cpu_quota(
            &mut props,
            cpu.quota().unwrap_or(0),
            cpu.period().unwrap_or(0),
        );
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            props.push((
                "AllowedCPUs",
                PropValue::Bytes(cpu_bits(cpus, "linux.resources.cpu.cpus")?),
            ));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            props.push((
                "AllowedMemoryNodes",
                PropValue::Bytes(cpu_bits(mems, "linux.resources.cpu.mems")?),
            ));
        }
    }
    if let Some(mem) = r.memory() {
        let limit = mem.limit().unwrap_or(0);
        if limit != 0 {
            let value = if limit < 0 { INFINITY } else { limit as u64 };
            props.push((
                if v2 { "MemoryMax" } else { "MemoryLimit" },
                PropValue::U64(value),
            ));
        }
        if v2 {
            let swap = memory_swap_to_v2(mem.swap().unwrap_or(0), limit)
                .map_err(|reason| CgroupError::invalid("linux.resources.memory.swap", reason))?;
            if let Some(swap) = swap {
                props.push((
                    "MemorySwapMax",
                    PropValue::U64(if swap < 0 { INFINITY } else { swap as u64 }),
                ));
            }
            if let Some(low) = mem.reservation().filter(|r| *r > 0) {
                props.push(("MemoryLow", PropValue::U64(low as u64)));
            }
        }
    }
    if let Some(pids) = r.pids()
        && pids.limit() != 0
    {
        let value = if pids.limit() < 0 {
            INFINITY
        } else {
            pids.limit() as u64
        };
        props.push(("TasksMax", PropValue::U64(value)));
    }
    if let Some(weight) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
    {
        props.push(if v2 {
            (
                "IOWeight",
                PropValue::U64(blkio_weight_to_io_weight(u64::from(weight))),
            )
        } else {
            ("BlockIOWeight", PropValue::U64(u64::from(weight)))
        });
    }
    if v2 {
        let mut unified: Vec<_> = r.unified().iter().flatten().collect();
        unified.sort();
        for (key, value) in unified {
            unified_property(&mut props, key, value)?;
        }
    }
    Ok(props)
}

/// systemd takes the quota as CPU time per second, in whole 10ms steps (rounded up so
/// the container never gets less than asked for).
fn add_cpu_quota(props: &mut Vec<Property>, quota: i64, period: u64) {
    if period != 0 {
        props.push(("CPUQuotaPeriodUSec", PropValue::U64(period)));
    }
    if quota == 0 && period == 0 {
        return;
    }
    let per_sec = if quota > 0 {
        let period = if period == 0 {
            DEFAULT_CFS_PERIOD
        } else {
            period
        };
        let per_sec = quota as u64 * 1_000_000 / period;
        per_sec.div_ceil(10_000) * 10_000
    } else {
        INFINITY
    };
    props.push(("CPUQuotaPerSecUSec", PropValue::U64(per_sec)));
}

/// A cpuset list as systemd's bitmask: byte i holds cpus 8i..8i+7, lowest bit first.
fn cpu_bits(list: &str, field: &str) -> Result<Vec<u8>, CgroupError> {
    let set = parse_cpu_list(list)
        .ok_or_else(|| CgroupError::invalid(field, format!("{list:?} is not a list like 0-3,5")))?;
    let len = set.last().map_or(1, |max| *max as usize / 8 + 1);
    let mut bytes = vec![0u8; len];
    for cpu in set {
        bytes[cpu as usize / 8] |= 1 << (cpu % 8);
    }
    Ok(bytes)
}

/// Raw v2 settings that systemd also manages, so that it keeps them.
fn unified_property(props: &mut Vec<Property>, key: &str, value: &str) -> Result<(), CgroupError> {
    let field = format!("linux.resources.unified.{key}");
    let number = |v: &str| -> Result<u64, CgroupError> {
        if v == "max" {
            return Ok(INFINITY);
        }
        v.parse()
            .map_err(|_| CgroupError::invalid(&field, format!("{v:?} is not a number or \"max\"")))
    };
    let name = match key {
        "cpu.weight" => "CPUWeight",
        "memory.min" => "MemoryMin",
        "memory.low" => "MemoryLow",
        "memory.high" => "MemoryHigh",
        "memory.max" => "MemoryMax",
        "memory.swap.max" => "MemorySwapMax",
        "pids.max" => "TasksMax",
        "cpuset.cpus" => {
            props.push(("AllowedCPUs", PropValue::Bytes(cpu_bits(value, &field)?)));
            return Ok(());
        }
        "cpuset.mems" => {
            props.push((
                "AllowedMemoryNodes",
                PropValue::Bytes(cpu_bits(value, &field)?),
            ));
            return Ok(());
        }
        "cpu.max" => {
            let mut parts = value.split_whitespace();
            let quota = parts.next().unwrap_or("max");
            let period = parts.next().map(number).transpose()?.unwrap_or(0);
            let quota = if quota == "max" {
                -1
            } else {
                number(quota)? as i64
            };
            add_cpu_quota(props, quota, period);
            return Ok(());
        }
        // Other files have no unit property; the cgroupfs write covers them.
        _ => return Ok(()),
    };
    props.push((name, PropValue::U64(number(value.trim())?)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    fn get<'a>(props: &'a [Property], name: &str) -> Option<&'a PropValue> {
        props.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0-2,9")
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256i64 << 20)
                    .swap(512i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn v1_properties_use_v1_names_and_units() {
        let props = resource_properties(&resources(), false).unwrap();
        assert_eq!(get(&props, "CPUShares"), Some(&PropValue::U64(1024)));
        assert_eq!(get(&props, "MemoryLimit"), Some(&PropValue::U64(256 << 20)));
        assert_eq!(get(&props, "BlockIOWeight"), Some(&PropValue::U64(500)));
        assert_eq!(
            get(&props, "CPUQuotaPerSecUSec"),
            Some(&PropValue::U64(500_000))
        );
        assert_eq!(get(&props, "TasksMax"), Some(&PropValue::U64(100)));
        assert_eq!(get(&props, "MemoryMax"), None);
    }

    #[test]
    fn v2_properties_convert_values() {
        let props = resource_properties(&resources(), true).unwrap();
        assert_eq!(get(&props, "CPUWeight"), Some(&PropValue::U64(100)));
        assert_eq!(get(&props, "MemoryMax"), Some(&PropValue::U64(256 << 20)));
        assert_eq!(
            get(&props, "MemorySwapMax"),
            Some(&PropValue::U64(256 << 20))
        );
        assert_eq!(get(&props, "IOWeight"), Some(&PropValue::U64(4950)));
        assert_eq!(
            get(&props, "AllowedCPUs"),
            Some(&PropValue::Bytes(vec![0b0000_0111, 0b0000_0010]))
        );
        assert_eq!(
            get(&props, "CPUQuotaPeriodUSec"),
            Some(&PropValue::U64(100_000))
        );
    }

    #[test]
    fn quota_rounds_up_to_10ms_and_unlimited_is_infinity() {
        let mut props = Vec::new();
        add_cpu_quota(&mut props, 12_345, 100_000);
        assert_eq!(
            get(&props, "CPUQuotaPerSecUSec"),
            Some(&PropValue::U64(130_000))
        );
        let mut props = Vec::new();
        add_cpu_quota(&mut props, -1, 0);
        assert_eq!(
            get(&props, "CPUQuotaPerSecUSec"),
            Some(&PropValue::U64(u64::MAX))
        );
        let mut props = Vec::new();
        add_cpu_quota(&mut props, 20_000, 0);
        assert_eq!(
            get(&props, "CPUQuotaPerSecUSec"),
            Some(&PropValue::U64(200_000))
        );
    }

    #[test]
    fn scope_base_properties_delegate_and_carry_the_pid() {
        let props = base_properties("c", "kubepods.slice", false, Some(42));
        assert_eq!(get(&props, "Delegate"), Some(&PropValue::Bool(true)));
        assert_eq!(
            get(&props, "DefaultDependencies"),
            Some(&PropValue::Bool(false))
        );
        assert_eq!(
            get(&props, "Slice"),
            Some(&PropValue::Str("kubepods.slice".into()))
        );
        assert_eq!(get(&props, "PIDs"), Some(&PropValue::U32s(vec![42])));
    }

    #[test]
    fn unified_keys_become_properties() {
        let r = LinuxResourcesBuilder::default()
            .unified(
                [
                    ("memory.high".to_string(), "max".to_string()),
                    ("cpu.max".to_string(), "25000 50000".to_string()),
                ]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        let props = resource_properties(&r, true).unwrap();
        assert_eq!(get(&props, "MemoryHigh"), Some(&PropValue::U64(u64::MAX)));
        assert_eq!(
            get(&props, "CPUQuotaPerSecUSec"),
            Some(&PropValue::U64(500_000))
        );
        assert_eq!(
            get(&props, "CPUQuotaPeriodUSec"),
            Some(&PropValue::U64(50_000))
        );
    }
}
