//! Checks `linux.resources` for values no kernel accepts before anything is created, so
//! a bad spec fails with the field named and leaves no cgroup behind.

use std::collections::BTreeSet;

use oci_spec::runtime::LinuxResources;

use super::CgroupError;

/// What the host offers, read once per create/update (a seam for unit tests).
#[derive(Debug, Clone, Default)]
pub struct HostCapacity {
    pub cpus: BTreeSet<u32>,
    pub mems: BTreeSet<u32>,
}

impl HostCapacity {
    pub fn read() -> Self {
        let read_set = |path: &str, fallback: &str| {
            let text = std::fs::read_to_string(path).unwrap_or_else(|_| fallback.to_string());
            parse_cpu_list(text.trim()).unwrap_or_default()
        };
        HostCapacity {
            cpus: read_set("/sys/devices/system/cpu/online", "0"),
            mems: read_set("/sys/devices/system/node/online", "0"),
        }
    }
}

/// Parses the kernel's list format (`0-3,8,10-11`).
pub fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    if text.is_empty() {
        return Some(set);
    }
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
                if lo > hi {
                    return None;
                }
                set.extend(lo..=hi);
            }
            None => {
                set.insert(part.parse().ok()?);
            }
        }
    }
    Some(set)
}

pub fn validate(r: &LinuxResources, host: &HostCapacity) -> Result<(), CgroupError> {
    if let Some(mem) = r.memory() {
        for (name, value) in [
            ("limit", mem.limit()),
            ("reservation", mem.reservation()),
            ("swap", mem.swap()),
        ] {
            if let Some(v) = value
                && v < -1
            {
                return Err(CgroupError::invalid(
                    format!("linux.resources.memory.{name}"),
                    format!("{v} is negative (only -1, meaning unlimited, is allowed)"),
                ));
            }
        }
        if let (Some(limit), Some(swap)) = (mem.limit(), mem.swap())
            && limit > 0
            && swap > 0
            && swap < limit
        {
            return Err(CgroupError::invalid(
                "linux.resources.memory.swap",
                format!("memory+swap limit {swap} is below the memory limit {limit}"),
            ));
        }
        if let Some(s) = mem.swappiness()
            && s > 100
        {
            return Err(CgroupError::invalid(
                "linux.resources.memory.swappiness",
                format!("{s} is outside 0..=100"),
            ));
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares()
            && shares != 0
            && !(2..=262_144).contains(&shares)
        {
            return Err(CgroupError::invalid(
                "linux.resources.cpu.shares",
                format!("{shares} is outside 2..=262144"),
            ));
        }
        if let Some(quota) = cpu.quota()
            && quota != 0
            && quota != -1
            && quota < 1000
        {
            return Err(CgroupError::invalid(
                "linux.resources.cpu.quota",
                format!("{quota} is below the 1000us minimum (use -1 for unlimited)"),
            ));
        }
        if let Some(period) = cpu.period()
            && period != 0
            && !(1000..=1_000_000).contains(&period)
        {
            return Err(CgroupError::invalid(
                "linux.resources.cpu.period",
                format!("{period} is outside 1000..=1000000us"),
            ));
        }
        if let Some(rt) = cpu.realtime_runtime()
            && rt < -1
        {
            return Err(CgroupError::invalid(
                "linux.resources.cpu.realtimeRuntime",
                format!("{rt} is negative"),
            ));
        }
        check_cpuset("cpus", cpu.cpus().as_deref(), &host.cpus)?;
        check_cpuset("mems", cpu.mems().as_deref(), &host.mems)?;
    }
    if let Some(blkio) = r.block_io() {
        for (name, value) in [
            ("weight", blkio.weight()),
            ("leafWeight", blkio.leaf_weight()),
        ] {
            if let Some(w) = value
                && w != 0
                && !(10..=1000).contains(&w)
            {
                return Err(CgroupError::invalid(
                    format!("linux.resources.blockIO.{name}"),
                    format!("{w} is outside 10..=1000"),
                ));
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        if hugepage_size_bytes(h.page_size()).is_none() {
            return Err(CgroupError::invalid(
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("{:?} is not a page size like 2MB or 1GB", h.page_size()),
            ));
        }
        if h.limit() < -1 {
            return Err(CgroupError::invalid(
                format!("linux.resources.hugepageLimits[{i}].limit"),
                format!("{} is negative", h.limit()),
            ));
        }
    }
    Ok(())
}

fn check_cpuset(
    name: &str,
    value: Option<&str>,
    available: &BTreeSet<u32>,
) -> Result<(), CgroupError> {
    let Some(text) = value.filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let field = format!("linux.resources.cpu.{name}");
    let wanted = parse_cpu_list(text).ok_or_else(|| {
        CgroupError::invalid(&field, format!("{text:?} is not a list like 0-3,5"))
    })?;
    if let Some(missing) = wanted.iter().find(|c| !available.contains(c)) {
        return Err(CgroupError::invalid(
            field,
            format!("{text:?} includes {missing}, which this host does not have online"),
        ));
    }
    Ok(())
}

/// `2MB` → 2 MiB, `1GB` → 1 GiB, `64KB` → 64 KiB (the spelling of hugetlb file names).
pub fn hugepage_size_bytes(size: &str) -> Option<u64> {
    let split = size.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = size.split_at(split);
    let num: u64 = num.parse().ok()?;
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        _ => return None,
    };
    Some(num << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    fn host() -> HostCapacity {
        HostCapacity {
            cpus: (0..2).collect(),
            mems: [0].into(),
        }
    }

    fn field_of(r: LinuxResources) -> String {
        match validate(&r, &host()).unwrap_err() {
            CgroupError::InvalidResource { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), [0, 1, 2, 5].into());
        assert!(parse_cpu_list("3-1").is_none());
        assert!(parse_cpu_list("a").is_none());
    }

    #[test]
    fn negative_memory_limit_is_rejected() {
        let r = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-5i64).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(field_of(r), "linux.resources.memory.limit");
    }

    #[test]
    fn swap_below_limit_is_rejected() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(2 << 20)
                    .swap(1 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(field_of(r), "linux.resources.memory.swap");
    }

    #[test]
    fn unlimited_values_pass() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(-1)
                    .swap(-1)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(-1)
                    .cpus("0-1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        validate(&r, &host()).unwrap();
    }

    #[test]
    fn cpuset_outside_host_is_rejected() {
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().cpus("0-7").build().unwrap())
            .build()
            .unwrap();
        assert_eq!(field_of(r), "linux.resources.cpu.cpus");
    }

    #[test]
    fn tiny_quota_and_bad_shares_are_rejected() {
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(10).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(field_of(r), "linux.resources.cpu.quota");
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(1u64).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(field_of(r), "linux.resources.cpu.shares");
    }

    #[test]
    fn hugepage_sizes_parse() {
        assert_eq!(hugepage_size_bytes("2MB"), Some(2 << 20));
        assert_eq!(hugepage_size_bytes("1GB"), Some(1 << 30));
        assert_eq!(hugepage_size_bytes("2M"), None);
    }
}
