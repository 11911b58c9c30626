//! Processes of a daemon under test: everything in its private mount
//! namespace (the daemon and the shims/supervisors it forks; containers get
//! mount namespaces of their own), found through /proc.

use std::path::Path;

/// The inode of `/proc/<pid>/ns/mnt`, the identity of its mount namespace.
pub fn mount_ns_of(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// PIDs of all processes in the mount namespace with inode `ns`.
pub fn mount_ns_processes(ns: u64) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mount_ns_of(*pid) == Some(ns))
        .collect()
}

/// VmRSS of `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of `pid` in KiB (0 once it is gone): pages shared
/// between processes (one binary mapped by many shims) count once in a sum.
pub fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// SIGKILLs each PID (each one this fixture started or its runtime forked).
pub fn kill_all(pids: &[u32]) {
    for pid in pids {
        // SAFETY: kill(2) with a plain PID and signal number.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// PIDs in the cgroup directory `dir` and all cgroups below it.
pub fn cgroup_tree_processes(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_tree_processes(&entry.path()));
            }
        }
    }
    pids
}

/// Removes the cgroup directory `dir` bottom-up (cgroupfs refuses non-empty rmdir).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
