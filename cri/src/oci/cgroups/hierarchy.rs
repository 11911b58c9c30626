//! Which cgroup hierarchies the host has: v1 (one mount per controller group), v2 (one
//! unified mount) or hybrid (v1 controllers plus a cgroup2 mount, often without
//! controllers). Read from /proc/self/mountinfo so the logic is testable on text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// The v1 controllers a container is placed in (and `name=systemd`, which systemd and
/// tools use to find a process' unit on v1 hosts).
pub const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "name=systemd",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// cgroup v1 controllers and a cgroup2 mount beside them.
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub mode: CgroupMode,
    /// v1 controller name → mount point of the hierarchy holding it.
    pub v1: BTreeMap<String, PathBuf>,
    /// Mount point of the cgroup2 hierarchy, if any.
    pub unified: Option<PathBuf>,
}

impl Hierarchies {
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|e| CgroupError::io(path, e))?;
        Self::from_mountinfo(&text)
    }

    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut v1 = BTreeMap::new();
        let mut unified = None;
        for line in text.lines() {
            let Some(mount) = parse_line(line) else {
                continue;
            };
            match mount.fstype {
                "cgroup2" => {
                    // The first cgroup2 mount wins, like the kernel's own /proc/self/cgroup view.
                    unified.get_or_insert_with(|| PathBuf::from(mount.mountpoint));
                }
                "cgroup" => {
                    for option in mount.super_options.split(',') {
                        if V1_CONTROLLERS.contains(&option) {
                            v1.entry(option.to_string())
                                .or_insert_with(|| PathBuf::from(mount.mountpoint));
                        }
                    }
                }
                _ => {}
            }
        }
        let mode = match (v1.is_empty(), &unified) {
            (true, Some(_)) => CgroupMode::Unified,
            (false, Some(_)) => CgroupMode::Hybrid,
            (false, None) => CgroupMode::Legacy,
            (true, None) => {
                return Err(CgroupError::NoHierarchy(
                    "no cgroup or cgroup2 mount in /proc/self/mountinfo".into(),
                ));
            }
        };
        Ok(Hierarchies { mode, v1, unified })
    }
}

struct MountLine<'a> {
    mountpoint: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 35 98:0 /root /mnt rw,noatime master:1 - cgroup cgroup rw,cpu,cpuacct`: optional
/// fields end at the lone `-`; after it come fstype, source and super options.
fn parse_line(line: &str) -> Option<MountLine<'_>> {
    let (before, after) = line.split_once(" - ")?;
    let mountpoint = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let _source = after.next()?;
    let super_options = after.next().unwrap_or("");
    Some(MountLine {
        mountpoint,
        fstype,
        super_options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 31 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
36 31 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_lists_v1_controllers_and_unified_mount() {
        let h = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(h.mode, CgroupMode::Hybrid);
        assert_eq!(h.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(h.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            h.v1["name=systemd"],
            PathBuf::from("/sys/fs/cgroup/systemd")
        );
        assert!(!h.v1.contains_key("xattr"));
        assert_eq!(h.unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn unified_only_host_is_v2() {
        let text =
            "31 25 0:27 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_mountinfo(text).unwrap();
        assert_eq!(h.mode, CgroupMode::Unified);
        assert!(h.v1.is_empty());
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let text = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n";
        assert!(Hierarchies::from_mountinfo(text).is_err());
    }
}
