//! Reading and cleaning up a container's cgroup v1 directories (the test
//! machines run cgroup v1 hierarchies at /sys/fs/cgroup/<controller>).

use std::path::PathBuf;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Controllers a runtime puts a container into on the test machines.
pub const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// `/sys/fs/cgroup/<controller>/<cgroups_path>`.
pub fn dir(controller: &str, cgroups_path: &str) -> PathBuf {
    PathBuf::from(CGROUP_ROOT)
        .join(controller)
        .join(cgroups_path.trim_start_matches('/'))
}

/// The trimmed contents of a cgroup file, or `None` if it cannot be read.
pub fn read(controller: &str, cgroups_path: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(dir(controller, cgroups_path).join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The controllers that still have a directory for `cgroups_path`.
pub fn existing(cgroups_path: &str) -> Vec<&'static str> {
    CONTROLLERS
        .iter()
        .copied()
        .filter(|c| dir(c, cgroups_path).exists())
        .collect()
}

/// Removes the directory of `cgroups_path` from every controller (a test's
/// last resort cleanup; the directories must hold no processes).
pub fn remove(cgroups_path: &str) {
    for controller in CONTROLLERS {
        let _ = std::fs::remove_dir(dir(controller, cgroups_path));
    }
}
