//! Container cgroups: cgroup v1, v2 and hybrid hosts, driven through the cgroupfs or
//! through systemd transient scopes, behind one [`CgroupManager`] trait.

mod convert;
mod devices;
mod error;
mod fsutil;
mod hierarchy;
mod path;
mod primer;
mod stats;
mod systemd;
mod v1;
mod v2;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

pub use error::CgroupError;
pub use hierarchy::{CgroupMode, Hierarchies};
pub use primer::MigrationPrimer;
pub use stats::{
    BlkioEntry, BlkioStats, CgroupStats, CpuStats, CpuThrottling, CpuUsage, HugetlbStats,
    MemoryEntry, MemoryStats, PidsStats,
};
pub use systemd::{SystemdManager, expand_slice};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// How long freeze/thaw may take before giving up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long destroy waits for exiting tasks to leave before rmdir gives up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// `cgroups_path` is the spec's linux.cgroupsPath (cgroupfs: "/a/b" or relative;
/// systemd: "slice:prefix:name"), None = runtime default for `container_id`.
/// Detects v1 / v2 / hybrid from the host. Deterministic: calling it again with the
/// same arguments later (another process) yields a manager for the same cgroup.
pub fn new_manager(
    cgroups_path: Option<&str>,
    container_id: &str,
    driver: CgroupDriver,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let hierarchies = Hierarchies::detect()?;
    match driver {
        CgroupDriver::Cgroupfs => {
            fs_manager(&hierarchies, &path::inner_path(cgroups_path, container_id)?)
        }
        CgroupDriver::Systemd => {
            let unit = systemd::parse_unit_path(cgroups_path, container_id)?;
            let fs = fs_manager(&hierarchies, &unit.cgroup_path)?;
            let v2 = hierarchies.mode == CgroupMode::Unified;
            Ok(Box::new(SystemdManager::new(unit, container_id, v2, fs)))
        }
    }
}

/// The cgroupfs manager for `inner` (a path below the hierarchy roots).
fn fs_manager(
    hierarchies: &Hierarchies,
    inner: &str,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    match hierarchies.mode {
        CgroupMode::Legacy | CgroupMode::Hybrid => Ok(Box::new(V1Manager::new(hierarchies, inner))),
        CgroupMode::Unified => {
            let mount = hierarchies
                .unified
                .as_deref()
                .ok_or_else(|| CgroupError::NoHierarchy("no cgroup2 mount".into()))?;
            Ok(Box::new(V2Manager::new(mount, inner)))
        }
    }
}

pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup (every v1 hierarchy, or the v2 dir / systemd scope) and
    /// applies `resources`. Errors name the offending field (e.g.
    /// "linux.resources.memory.limit: ...") and leave nothing created behind.
    fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError>;
    /// Moves a process into the cgroup (init after fork, exec'd processes too).
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    fn freeze(&self) -> Result<(), CgroupError>;
    fn thaw(&self) -> Result<(), CgroupError>;
    fn is_frozen(&self) -> Result<bool, CgroupError>;
    /// cpu (usage total/user/system, throttling), memory (usage, max usage, limit,
    /// cache/rss, swap, oom kill count, failcnt), pids (current, limit), hugetlb, blkio.
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    /// Removes the cgroup(s); idempotent; fine when already gone.
    fn destroy(&self) -> Result<(), CgroupError>;
    /// The cgroup directories: v1 controller name → dir; the cgroup2 dir under "" (for
    /// state files and /proc/<pid>/cgroup checks).
    fn paths(&self) -> BTreeMap<String, PathBuf>;
}
