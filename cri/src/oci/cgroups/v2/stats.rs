//! Reads usage back from cgroup v2 interface files.

use std::path::Path;

use super::V2Manager;
use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::fsutil::{keyed_value, read_keyed, read_u64, read_u64_opt};
use crate::oci::cgroups::stats::{BlkioEntry, CgroupStats, HugetlbStats};

impl V2Manager {
    pub(super) fn read_stats(&self) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir.as_path();
        let mut s = CgroupStats::default();
        // cpu.stat exists even without the cpu controller (usage only).
        let cpu = read_keyed(&dir.join("cpu.stat"))?;
        s.cpu.usage.total = keyed_value(&cpu, "usage_usec") * 1000;
        s.cpu.usage.user = keyed_value(&cpu, "user_usec") * 1000;
        s.cpu.usage.kernel = keyed_value(&cpu, "system_usec") * 1000;
        s.cpu.throttling.periods = keyed_value(&cpu, "nr_periods");
        s.cpu.throttling.throttled_periods = keyed_value(&cpu, "nr_throttled");
        s.cpu.throttling.throttled_time = keyed_value(&cpu, "throttled_usec") * 1000;
        if let Some(usage) = read_u64_opt(&dir.join("memory.current"))? {
            s.memory.usage.usage = usage;
            s.memory.usage.limit = read_u64(&dir.join("memory.max"))?;
            s.memory.usage.max = read_u64_opt(&dir.join("memory.peak"))?.unwrap_or(0);
            let raw = read_keyed(&dir.join("memory.stat"))?;
            s.memory.rss = keyed_value(&raw, "anon");
            s.memory.cache = keyed_value(&raw, "file");
            s.memory.raw = raw.into_iter().collect();
            let events = read_keyed(&dir.join("memory.events"))?;
            s.memory.usage.failcnt = keyed_value(&events, "max");
            s.memory.oom = keyed_value(&events, "oom");
            s.memory.oom_kill = keyed_value(&events, "oom_kill");
            if let Some(swap) = read_u64_opt(&dir.join("memory.swap.current"))? {
                s.memory.swap.usage = swap;
                s.memory.swap.limit = read_u64(&dir.join("memory.swap.max"))?;
                s.memory.swap.max = read_u64_opt(&dir.join("memory.swap.peak"))?.unwrap_or(0);
            }
        }
        if let Some(current) = read_u64_opt(&dir.join("pids.current"))? {
            s.pids.current = current;
            s.pids.limit = match read_u64(&dir.join("pids.max"))? {
                u64::MAX => 0,
                limit => limit,
            };
        }
        for size in hugetlb_sizes(dir)? {
            let file = |suffix: &str| dir.join(format!("hugetlb.{size}.{suffix}"));
            let events = read_keyed(&file("events"))?;
            let stats = HugetlbStats {
                usage: read_u64(&file("current"))?,
                max: 0,
                failcnt: keyed_value(&events, "max"),
            };
            s.hugetlb.insert(size, stats);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("io.stat")) {
            (
                s.blkio.io_service_bytes_recursive,
                s.blkio.io_serviced_recursive,
            ) = parse_io_stat(&text);
        }
        Ok(s)
    }
}

fn hugetlb_sizes(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CgroupError::io(dir, e))?;
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(".current")?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// `8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0` → (bytes, ios) entries in
/// the v1 shape (op Read/Write).
pub(crate) fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in parts {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse() else { continue };
            let (list, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_lines_become_read_write_entries() {
        let (bytes, ios) =
            parse_io_stat("8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n");
        assert_eq!(bytes.len(), 2);
        assert_eq!(
            bytes[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
        assert_eq!(
            ios[1],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 1
            }
        );
    }
}
