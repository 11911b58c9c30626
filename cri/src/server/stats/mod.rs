//! CRI container and pod sandbox stats, filled as containerd fills them:
//! CPU and memory from the container's cgroup (the pod cgroup for a pod),
//! the writable layer from the container's overlay upper dir, network
//! counters from the pod's network namespace. Reading them is blocking file
//! I/O: callers run these off the async runtime.

mod cpu;
pub(super) mod netdev;
mod psi;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;
use tonic::Status;

pub use cpu::CpuSampler;

use super::daemon::Daemon;
use super::sandbox::store_status;
use super::status::{now_nanos, required};
use crate::image::FsUsage;
use crate::oci::cgroups::{CgroupManager, CgroupStats, MemoryStats};
use crate::oci::state::StateStore;
use crate::sandbox::cgroup::PodCgroups;
use crate::store::{ContainerPhase, ContainerRecord, SandboxRecord};

/// The name kubelet looks for as a pod's primary interface.
const DEFAULT_INTERFACE: &str = "eth0";

/// Limits at or above this are "unlimited" (cgroup v1 reports a page-rounded
/// 2^63, v2 reports `max`).
const UNLIMITED: u64 = 1 << 62;

fn value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// A cgroup's usage and its pressure (v2 only).
struct Reading {
    stats: CgroupStats,
    pressure: psi::Pressure,
}

/// The cgroup v2 dir of a manager on a unified host: None on v1 and hybrid
/// hosts, whose per-cgroup PSI containerd does not report either.
fn unified_dir(paths: &BTreeMap<String, PathBuf>) -> Option<&Path> {
    match paths.len() {
        1 => paths.get("").map(PathBuf::as_path),
        _ => None,
    }
}

fn read_cgroup(manager: &dyn CgroupManager) -> Result<Reading, String> {
    let stats = manager.stats().map_err(|e| e.to_string())?;
    let pressure = unified_dir(&manager.paths())
        .map(psi::read)
        .unwrap_or_default();
    Ok(Reading { stats, pressure })
}

fn cpu_usage(sampler: &CpuSampler, id: &str, at: i64, reading: &Reading) -> cri::CpuUsage {
    let total = reading.stats.cpu.usage.total;
    cri::CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: value(total),
        usage_nano_cores: value(sampler.nano_cores(id, at, total)),
        psi: reading.pressure.cpu,
    }
}

fn io_usage(at: i64, reading: &Reading) -> Option<cri::IoUsage> {
    reading.pressure.io.map(|psi| cri::IoUsage {
        timestamp: at,
        psi: Some(psi),
    })
}

/// cgroup v1's hierarchical memory.stat names its counters `total_*`.
fn raw_counter(memory: &MemoryStats, key: &str) -> u64 {
    let total = format!("total_{key}");
    memory
        .raw
        .get(&total)
        .or_else(|| memory.raw.get(key))
        .copied()
        .unwrap_or(0)
}

fn memory_usage(at: i64, memory: &MemoryStats, psi: Option<cri::PsiStats>) -> cri::MemoryUsage {
    let working_set = memory.working_set();
    let limit = memory.usage.limit;
    cri::MemoryUsage {
        timestamp: at,
        working_set_bytes: value(working_set),
        // containerd reports 0 when there is no limit.
        available_bytes: value(if limit < UNLIMITED {
            limit.saturating_sub(working_set)
        } else {
            0
        }),
        usage_bytes: value(memory.usage.usage),
        rss_bytes: value(memory.rss),
        page_faults: value(raw_counter(memory, "pgfault")),
        major_page_faults: value(raw_counter(memory, "pgmajfault")),
        psi,
    }
}

fn swap_usage(at: i64, memory: &MemoryStats) -> cri::SwapUsage {
    let swap = &memory.swap;
    // v1 counts memory+swap together (memsw); v2 counts swap alone.
    let v1 = memory.raw.contains_key("total_rss");
    let used = if v1 {
        swap.usage.saturating_sub(memory.usage.usage)
    } else {
        swap.usage
    };
    let available = if swap.limit < UNLIMITED && swap.limit > 0 {
        swap.limit.saturating_sub(swap.usage)
    } else {
        0
    };
    cri::SwapUsage {
        timestamp: at,
        swap_available_bytes: value(available),
        swap_usage_bytes: value(used),
    }
}

/// The upper dir of an overlay snapshot, from its mount options.
fn upper_dir(options: &[String]) -> Option<&Path> {
    options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .map(Path::new)
}

fn matches_labels(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Daemon {
    /// Bytes and inodes of the container's writable layer, None for a
    /// read-only rootfs or a missing snapshot.
    pub(super) fn writable_layer(&self, id: &str) -> Option<cri::FilesystemUsage> {
        let snapshot = self.snapshots.get(id).ok().flatten()?;
        let upper = upper_dir(&snapshot.mount.options)?;
        let usage = match FsUsage::of_tree(upper) {
            Ok(usage) => usage,
            Err(e) => {
                tracing::debug!(container = %id, "writable layer usage: {e}");
                return None;
            }
        };
        // The snapshotter's dir (snapshots/<id>/upper → snapshots) names the
        // filesystem, as containerd names its snapshotter root.
        let mountpoint = upper.parent().and_then(Path::parent).unwrap_or(upper);
        Some(cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: value(usage.used_bytes),
            inodes_used: value(usage.inodes_used),
        })
    }

    /// The container's cgroup reading, None once its cgroup is gone.
    pub(super) fn container_cgroup_stats(&self, id: &str) -> Option<CgroupStats> {
        self.container_cgroup(id).map(|reading| reading.stats)
    }

    fn container_cgroup(&self, id: &str) -> Option<Reading> {
        let result = StateStore::new(self.runtime_root())
            .load(id)
            .map_err(|e| e.to_string())
            .and_then(|state| state.cgroup_manager().map_err(|e| e.to_string()))
            .and_then(|manager| read_cgroup(manager.as_ref()));
        match result {
            Ok(reading) => Some(reading),
            Err(e) => {
                tracing::debug!(container = %id, "cgroup stats: {e}");
                None
            }
        }
    }

    fn container_stats_of(&self, record: &ContainerRecord) -> cri::ContainerStats {
        let at = now_nanos();
        let cgroup = matches!(
            record.phase,
            ContainerPhase::Running | ContainerPhase::Created
        )
        .then(|| self.container_cgroup(&record.id))
        .flatten();
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            cpu: cgroup
                .as_ref()
                .map(|s| cpu_usage(&self.cpu_samples, &record.id, at, s)),
            memory: cgroup
                .as_ref()
                .map(|r| memory_usage(at, &r.stats.memory, r.pressure.memory)),
            swap: cgroup.as_ref().map(|r| swap_usage(at, &r.stats.memory)),
            writable_layer: self.writable_layer(&record.id),
            io: cgroup.as_ref().and_then(|r| io_usage(at, r)),
        }
    }

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, Status> {
        required(id, "container_id")?;
        let record = self.containers.get(id).map_err(store_status)?;
        Ok(self.container_stats_of(&record))
    }

    /// ListContainerStats and StreamContainerStats: id and sandbox id match
    /// by prefix, labels exactly.
    pub fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        let filter = filter.unwrap_or_default();
        let records = self.containers.list();
        if filter == cri::ContainerStatsFilter::default() {
            self.forget_removed_samples();
        }
        records
            .iter()
            .filter(|r| r.id.starts_with(&filter.id))
            .filter(|r| r.sandbox_id.starts_with(&filter.pod_sandbox_id))
            .filter(|r| matches_labels(&r.config.labels, &filter.label_selector))
            .map(|r| self.container_stats_of(r))
            .collect()
    }

    fn forget_removed_samples(&self) {
        let live: HashSet<String> = self
            .containers
            .list()
            .into_iter()
            .map(|r| r.id)
            .chain(self.sandboxes.list().into_iter().map(|r| r.id))
            .collect();
        self.cpu_samples.retain(&live);
    }

    fn network_usage(&self, record: &SandboxRecord, at: i64) -> Option<cri::NetworkUsage> {
        if record.host_network() {
            return None;
        }
        let pid = record.pause_pid?;
        let interfaces = match netdev::read(pid) {
            Ok(interfaces) => interfaces,
            Err(e) => {
                tracing::debug!(sandbox = %record.id, "network stats: {e}");
                return None;
            }
        };
        let interfaces: Vec<cri::NetworkInterfaceUsage> = interfaces
            .into_iter()
            .map(|i| cri::NetworkInterfaceUsage {
                name: i.name,
                rx_bytes: value(i.rx_bytes),
                rx_errors: value(i.rx_errors),
                tx_bytes: value(i.tx_bytes),
                tx_errors: value(i.tx_errors),
            })
            .collect();
        Some(cri::NetworkUsage {
            timestamp: at,
            default_interface: interfaces
                .iter()
                .find(|i| i.name == DEFAULT_INTERFACE)
                .cloned(),
            interfaces,
        })
    }

    fn pod_cgroup(&self, record: &SandboxRecord) -> Option<Reading> {
        let cgroups = PodCgroups::of(&record.config, self.config.cgroup_driver, &record.id)?;
        let reading = cgroups
            .pod()
            .map_err(|e| e.to_string())
            .and_then(|m| read_cgroup(m.as_ref()));
        match reading {
            Ok(reading) => Some(reading),
            Err(e) => {
                tracing::debug!(sandbox = %record.id, "pod cgroup stats: {e}");
                None
            }
        }
    }

    fn pod_sandbox_stats_of(&self, record: &SandboxRecord) -> cri::PodSandboxStats {
        let at = now_nanos();
        let cgroup = self.pod_cgroup(record);
        let containers = self
            .containers
            .list()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id && c.phase == ContainerPhase::Running)
            .map(|c| self.container_stats_of(&c))
            .collect();
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: record.id.clone(),
                metadata: Some(record.metadata()),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: cgroup
                    .as_ref()
                    .map(|s| cpu_usage(&self.cpu_samples, &record.id, at, s)),
                memory: cgroup
                    .as_ref()
                    .map(|r| memory_usage(at, &r.stats.memory, r.pressure.memory)),
                network: self.network_usage(record, at),
                process: cgroup.as_ref().map(|r| cri::ProcessUsage {
                    timestamp: at,
                    process_count: value(r.stats.pids.current),
                }),
                containers,
                io: cgroup.as_ref().and_then(|r| io_usage(at, r)),
            }),
            windows: None,
        }
    }

    /// PodSandboxStats: like containerd, only a ready sandbox has stats.
    pub fn pod_sandbox_stats(&self, id: &str) -> Result<cri::PodSandboxStats, Status> {
        required(id, "pod_sandbox_id")?;
        let record = self.sandboxes.get(id).map_err(store_status)?;
        if Self::observed_state(&record) != cri::PodSandboxState::SandboxReady {
            return Err(Status::unavailable(format!(
                "sandbox {} is not ready: it has no stats",
                record.id
            )));
        }
        Ok(self.pod_sandbox_stats_of(&record))
    }

    /// ListPodSandboxStats and StreamPodSandboxStats: ready sandboxes only.
    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        let filter = filter.unwrap_or_default();
        if filter == cri::PodSandboxStatsFilter::default() {
            self.forget_removed_samples();
        }
        self.sandboxes
            .list()
            .iter()
            .filter(|r| r.id.starts_with(&filter.id))
            .filter(|r| matches_labels(&r.config.labels, &filter.label_selector))
            .filter(|r| Self::observed_state(r) == cri::PodSandboxState::SandboxReady)
            .map(|r| self.pod_sandbox_stats_of(r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_memory() -> MemoryStats {
        let mut m = MemoryStats::default();
        m.usage.usage = 100 << 20;
        m.usage.limit = 9_223_372_036_854_771_712;
        m.rss = 60 << 20;
        for (k, v) in [
            ("total_rss", 60 << 20),
            ("total_inactive_file", 10 << 20),
            ("total_pgfault", 1234),
            ("total_pgmajfault", 5),
            ("pgfault", 1),
        ] {
            m.raw.insert(k.to_string(), v);
        }
        m
    }

    #[test]
    fn memory_is_reported_like_containerd() {
        let mut m = v1_memory();
        let usage = memory_usage(7, &m, None);
        assert_eq!(usage.working_set_bytes, value(90 << 20));
        assert_eq!(usage.usage_bytes, value(100 << 20));
        assert_eq!(usage.rss_bytes, value(60 << 20));
        assert_eq!(usage.page_faults, value(1234));
        assert_eq!(usage.major_page_faults, value(5));
        assert_eq!(usage.available_bytes, value(0), "unlimited");
        m.usage.limit = 128 << 20;
        assert_eq!(memory_usage(7, &m, None).available_bytes, value(38 << 20));
    }

    #[test]
    fn v1_swap_is_memsw_minus_memory() {
        let mut m = v1_memory();
        m.swap.usage = (100 << 20) + 4096;
        m.swap.limit = 200 << 20;
        let swap = swap_usage(1, &m);
        assert_eq!(swap.swap_usage_bytes, value(4096));
        assert_eq!(swap.swap_available_bytes, value((100 << 20) - 4096));
    }

    #[test]
    fn v2_swap_is_reported_as_is() {
        let mut m = MemoryStats::default();
        m.raw.insert("anon".into(), 1);
        m.swap.usage = 8192;
        m.swap.limit = u64::MAX;
        let swap = swap_usage(1, &m);
        assert_eq!(swap.swap_usage_bytes, value(8192));
        assert_eq!(swap.swap_available_bytes, value(0));
    }

    #[test]
    fn psi_is_read_only_from_a_unified_cgroup() {
        let v2: BTreeMap<String, PathBuf> =
            [(String::new(), PathBuf::from("/sys/fs/cgroup/pod"))].into();
        assert_eq!(unified_dir(&v2), Some(Path::new("/sys/fs/cgroup/pod")));
        let hybrid: BTreeMap<String, PathBuf> = [
            (String::new(), PathBuf::from("/sys/fs/cgroup/unified/pod")),
            (
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/pod"),
            ),
        ]
        .into();
        assert_eq!(unified_dir(&hybrid), None);
    }

    #[test]
    fn v2_pressure_fills_cpu_memory_and_io() {
        let dir = tempfile::tempdir().unwrap();
        let sample = "some avg10=2.00 avg60=1.00 avg300=0.50 total=1000\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=10\n";
        for file in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            std::fs::write(dir.path().join(file), sample).unwrap();
        }
        let reading = Reading {
            stats: CgroupStats::default(),
            pressure: psi::read(dir.path()),
        };
        let sampler = CpuSampler::default();
        let cpu = cpu_usage(&sampler, "c", 5, &reading);
        assert_eq!(cpu.psi.unwrap().some.unwrap().total, 1_000_000);
        let memory = memory_usage(5, &reading.stats.memory, reading.pressure.memory);
        assert_eq!(memory.psi.unwrap().full.unwrap().avg10, 1.0);
        let io = io_usage(5, &reading).unwrap();
        assert_eq!(io.timestamp, 5);
        assert!(io.psi.is_some());
        let v1 = Reading {
            stats: CgroupStats::default(),
            pressure: psi::Pressure::default(),
        };
        assert_eq!(io_usage(5, &v1), None);
        assert_eq!(cpu_usage(&sampler, "d", 5, &v1).psi, None);
    }

    #[test]
    fn upper_dir_comes_from_the_overlay_options() {
        let options = vec![
            "lowerdir=/a:/b".to_string(),
            "upperdir=/s/snapshots/c1/upper".to_string(),
            "workdir=/s/snapshots/c1/work".to_string(),
        ];
        assert_eq!(
            upper_dir(&options),
            Some(Path::new("/s/snapshots/c1/upper"))
        );
        assert_eq!(upper_dir(&["ro".to_string()]), None);
    }
}
