//! Reads usage back from the v1 controller files.

use std::path::Path;

use super::V1Manager;
use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::fsutil::{keyed_value, read_keyed, read_trimmed, read_u64, read_u64_opt};
use crate::oci::cgroups::stats::{BlkioEntry, CgroupStats, HugetlbStats, MemoryEntry};

/// USER_HZ: the unit of cpuacct.stat.
const CLOCK_TICKS_NS: u64 = 10_000_000;

impl V1Manager {
    pub(super) fn read_stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut s = CgroupStats::default();
        if let Some(dir) = self.dir("cpuacct") {
            s.cpu.usage.total = read_u64(&dir.join("cpuacct.usage"))?;
            let percpu = read_trimmed(&dir.join("cpuacct.usage_percpu"))?;
            s.cpu.usage.percpu = percpu
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let ticks = read_keyed(&dir.join("cpuacct.stat"))?;
            s.cpu.usage.user = keyed_value(&ticks, "user") * CLOCK_TICKS_NS;
            s.cpu.usage.kernel = keyed_value(&ticks, "system") * CLOCK_TICKS_NS;
        }
        if let Some(dir) = self.dir("cpu") {
            let stat = read_keyed(&dir.join("cpu.stat"))?;
            s.cpu.throttling.periods = keyed_value(&stat, "nr_periods");
            s.cpu.throttling.throttled_periods = keyed_value(&stat, "nr_throttled");
            s.cpu.throttling.throttled_time = keyed_value(&stat, "throttled_time");
        }
        if let Some(dir) = self.dir("memory") {
            let raw = read_keyed(&dir.join("memory.stat"))?;
            s.memory.cache = keyed_value(&raw, "total_cache");
            s.memory.rss = keyed_value(&raw, "total_rss");
            s.memory.raw = raw.into_iter().collect();
            s.memory.usage = memory_entry(dir, "memory")?;
            if dir.join("memory.memsw.usage_in_bytes").exists() {
                s.memory.swap = memory_entry(dir, "memory.memsw")?;
            }
            let oom = read_keyed(&dir.join("memory.oom_control"))?;
            s.memory.oom_kill = keyed_value(&oom, "oom_kill");
            s.memory.oom = s.memory.oom_kill;
        }
        if let Some(dir) = self.dir("pids") {
            s.pids.current = read_u64(&dir.join("pids.current"))?;
            s.pids.limit = match read_trimmed(&dir.join("pids.max"))?.as_str() {
                "max" => 0,
                v => v.parse().unwrap_or(0),
            };
        }
        if let Some(dir) = self.dir("hugetlb") {
            for size in hugetlb_sizes(dir)? {
                let file = |suffix: &str| dir.join(format!("hugetlb.{size}.{suffix}"));
                let stats = HugetlbStats {
                    usage: read_u64(&file("usage_in_bytes"))?,
                    max: read_u64(&file("max_usage_in_bytes"))?,
                    failcnt: read_u64(&file("failcnt"))?,
                };
                s.hugetlb.insert(size, stats);
            }
        }
        if let Some(dir) = self.dir("blkio") {
            s.blkio.io_service_bytes_recursive =
                read_blkio(&dir.join("blkio.throttle.io_service_bytes_recursive"))?;
            s.blkio.io_serviced_recursive =
                read_blkio(&dir.join("blkio.throttle.io_serviced_recursive"))?;
        }
        Ok(s)
    }
}

fn memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    let file = |suffix: &str| dir.join(format!("{prefix}.{suffix}"));
    Ok(MemoryEntry {
        limit: read_u64(&file("limit_in_bytes"))?,
        usage: read_u64(&file("usage_in_bytes"))?,
        max: read_u64_opt(&file("max_usage_in_bytes"))?.unwrap_or(0),
        failcnt: read_u64_opt(&file("failcnt"))?.unwrap_or(0),
    })
}

/// Page sizes this hugetlb cgroup has files for (`hugetlb.2MB.limit_in_bytes` → `2MB`).
fn hugetlb_sizes(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CgroupError::io(dir, e))?;
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name
                .strip_prefix("hugetlb.")?
                .strip_suffix(".limit_in_bytes")?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// `8:0 Read 4096` lines; the trailing `Total` line has no device and is skipped.
pub(crate) fn parse_blkio(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parts.next()?.split_once(':')?;
            let op = parts.next()?.to_string();
            let value = parts.next()?.parse().ok()?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op,
                value,
            })
        })
        .collect()
}

fn read_blkio(path: &Path) -> Result<Vec<BlkioEntry>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_blkio(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CgroupError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_lines_parse_and_total_is_skipped() {
        let entries = parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
    }
}
