//! Reading and cleaning up a container's cgroup directories. The test
//! machines run cgroup v1 hierarchies at /sys/fs/cgroup/<controller> (plus a
//! named `systemd` hierarchy and a cgroup2 mount at `unified`).

use std::path::PathBuf;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers every runtime puts a container into on the test machines.
pub const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// `/sys/fs/cgroup/<hierarchy>/<cgroups_path>`.
pub fn dir(hierarchy: &str, cgroups_path: &str) -> PathBuf {
    PathBuf::from(CGROUP_ROOT)
        .join(hierarchy)
        .join(cgroups_path.trim_start_matches('/'))
}

/// The trimmed contents of a cgroup file, or `None` if it cannot be read.
pub fn read(hierarchy: &str, cgroups_path: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(dir(hierarchy, cgroups_path).join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every mounted hierarchy under /sys/fs/cgroup: the v1 controllers, named
/// hierarchies (`systemd`) and the cgroup2 mount (`unified`), sorted.
pub fn hierarchies() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The hierarchies that still have a directory for `cgroups_path`.
pub fn existing(cgroups_path: &str) -> Vec<String> {
    hierarchies()
        .into_iter()
        .filter(|h| dir(h, cgroups_path).exists())
        .collect()
}

/// Removes the directory of `cgroups_path` from every hierarchy (a test's
/// last resort cleanup; the directories must hold no processes).
pub fn remove(cgroups_path: &str) {
    for hierarchy in hierarchies() {
        let _ = std::fs::remove_dir(dir(&hierarchy, cgroups_path));
    }
}
