//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric
//! names, so a kubelet in CRI-metrics mode serves the same
//! /metrics/cadvisor series it would get from cAdvisor. Every metric
//! carries the label keys `id`, `name`, `image` (the container's or the
//! pod's), plus `cpu`, `interface` or `device` where cAdvisor has them.

use berth_proto::runtime::v1 as cri;

use super::daemon::Daemon;
use super::stats::netdev::{self, InterfaceCounters};
use super::status::now_nanos;
use crate::oci::cgroups::CgroupStats;
use crate::store::{ContainerPhase, ContainerRecord, SandboxRecord};

const BASE_LABELS: [&str; 3] = ["id", "name", "image"];
const NANOS_PER_SECOND: u64 = 1_000_000_000;

use cri::MetricType::{Counter, Gauge};

/// A metric read from a container's cgroup.
struct CgroupMetric {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    value: fn(&CgroupStats) -> u64,
}

const CGROUP_METRICS: &[CgroupMetric] = &[
    CgroupMetric {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu.usage.total / NANOS_PER_SECOND,
    },
    CgroupMetric {
        name: "container_cpu_user_seconds_total",
        help: "Cumulative user cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu.usage.user / NANOS_PER_SECOND,
    },
    CgroupMetric {
        name: "container_cpu_system_seconds_total",
        help: "Cumulative system cpu time consumed in seconds.",
        kind: Counter,
        value: |s| s.cpu.usage.kernel / NANOS_PER_SECOND,
    },
    CgroupMetric {
        name: "container_cpu_cfs_periods_total",
        help: "Number of elapsed enforcement period intervals.",
        kind: Counter,
        value: |s| s.cpu.throttling.periods,
    },
    CgroupMetric {
        name: "container_cpu_cfs_throttled_periods_total",
        help: "Number of throttled period intervals.",
        kind: Counter,
        value: |s| s.cpu.throttling.throttled_periods,
    },
    CgroupMetric {
        name: "container_cpu_cfs_throttled_seconds_total",
        help: "Total time duration the container has been throttled.",
        kind: Counter,
        value: |s| s.cpu.throttling.throttled_time / NANOS_PER_SECOND,
    },
    CgroupMetric {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed",
        kind: Gauge,
        value: |s| s.memory.usage.usage,
    },
    CgroupMetric {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        kind: Gauge,
        value: |s| s.memory.working_set(),
    },
    CgroupMetric {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        kind: Gauge,
        value: |s| s.memory.rss,
    },
    CgroupMetric {
        name: "container_memory_cache",
        help: "Number of bytes of page cache memory.",
        kind: Gauge,
        value: |s| s.memory.cache,
    },
    CgroupMetric {
        name: "container_memory_max_usage_bytes",
        help: "Maximum memory usage recorded in bytes",
        kind: Gauge,
        value: |s| s.memory.usage.max,
    },
    CgroupMetric {
        name: "container_memory_failcnt",
        help: "Number of memory usage hits limits",
        kind: Counter,
        value: |s| s.memory.usage.failcnt,
    },
    CgroupMetric {
        name: "container_oom_events_total",
        help: "Count of out of memory events observed for the container",
        kind: Counter,
        value: |s| s.memory.oom_kill,
    },
    CgroupMetric {
        name: "container_processes",
        help: "Number of processes running inside the container.",
        kind: Gauge,
        value: |s| s.pids.current,
    },
];

/// A counter of one pod network interface.
struct NetworkMetric {
    name: &'static str,
    help: &'static str,
    value: fn(&InterfaceCounters) -> u64,
}

const NETWORK_METRICS: &[NetworkMetric] = &[
    NetworkMetric {
        name: "container_network_receive_bytes_total",
        help: "Cumulative count of bytes received",
        value: |i| i.rx_bytes,
    },
    NetworkMetric {
        name: "container_network_receive_packets_total",
        help: "Cumulative count of packets received",
        value: |i| i.rx_packets,
    },
    NetworkMetric {
        name: "container_network_receive_packets_dropped_total",
        help: "Cumulative count of packets dropped while receiving",
        value: |i| i.rx_dropped,
    },
    NetworkMetric {
        name: "container_network_receive_errors_total",
        help: "Cumulative count of errors encountered while receiving",
        value: |i| i.rx_errors,
    },
    NetworkMetric {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative count of bytes transmitted",
        value: |i| i.tx_bytes,
    },
    NetworkMetric {
        name: "container_network_transmit_packets_total",
        help: "Cumulative count of packets transmitted",
        value: |i| i.tx_packets,
    },
    NetworkMetric {
        name: "container_network_transmit_packets_dropped_total",
        help: "Cumulative count of packets dropped while transmitting",
        value: |i| i.tx_dropped,
    },
    NetworkMetric {
        name: "container_network_transmit_errors_total",
        help: "Cumulative count of errors encountered while transmitting",
        value: |i| i.tx_errors,
    },
];

const FS_USAGE: &str = "container_fs_usage_bytes";
const FS_INODES: &str = "container_fs_inodes_total";

/// The label key cAdvisor adds to a metric beyond the base ones.
fn extra_label(name: &str) -> Option<&'static str> {
    if name == "container_cpu_usage_seconds_total" {
        Some("cpu")
    } else if name.starts_with("container_network_") {
        Some("interface")
    } else if name.starts_with("container_fs_") {
        Some("device")
    } else {
        None
    }
}

fn descriptor(name: &str, help: &str) -> cri::MetricDescriptor {
    cri::MetricDescriptor {
        name: name.to_string(),
        help: help.to_string(),
        label_keys: BASE_LABELS
            .iter()
            .copied()
            .chain(extra_label(name))
            .map(String::from)
            .collect(),
    }
}

/// Every metric ListPodSandboxMetrics may report.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    CGROUP_METRICS
        .iter()
        .map(|m| descriptor(m.name, m.help))
        .chain(NETWORK_METRICS.iter().map(|m| descriptor(m.name, m.help)))
        .chain([
            descriptor(
                FS_USAGE,
                "Number of bytes that are consumed by the container on this filesystem.",
            ),
            descriptor(FS_INODES, "Number of Inodes"),
        ])
        .collect()
}

/// One sample; `labels` are the base label values, `extra` the value of
/// the metric's extra label if it has one.
fn metric(
    name: &str,
    kind: cri::MetricType,
    at: i64,
    labels: &[String; 3],
    extra: &str,
    value: u64,
) -> cri::Metric {
    let mut label_values = labels.to_vec();
    if extra_label(name).is_some() {
        label_values.push(extra.to_string());
    }
    cri::Metric {
        name: name.to_string(),
        timestamp: at,
        metric_type: kind as i32,
        label_values,
        value: Some(cri::UInt64Value { value }),
    }
}

fn cgroup_metrics(stats: &CgroupStats, at: i64, labels: &[String; 3]) -> Vec<cri::Metric> {
    CGROUP_METRICS
        .iter()
        .map(|m| metric(m.name, m.kind, at, labels, "total", (m.value)(stats)))
        .collect()
}

fn network_metrics(
    interfaces: &[InterfaceCounters],
    at: i64,
    labels: &[String; 3],
) -> Vec<cri::Metric> {
    interfaces
        .iter()
        .flat_map(|i| {
            NETWORK_METRICS
                .iter()
                .map(move |m| metric(m.name, Counter, at, labels, &i.name, (m.value)(i)))
        })
        .collect()
}

impl Daemon {
    fn container_metrics(&self, record: &ContainerRecord) -> cri::ContainerMetrics {
        let at = now_nanos();
        let name = record
            .config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let labels = [record.id.clone(), name, record.image_name.clone()];
        let mut metrics = self
            .container_cgroup_stats(&record.id)
            .map(|stats| cgroup_metrics(&stats, at, &labels))
            .unwrap_or_default();
        if let Some(layer) = self.writable_layer(&record.id) {
            let device = layer.fs_id.map(|f| f.mountpoint).unwrap_or_default();
            let used = |v: Option<cri::UInt64Value>| v.map(|v| v.value).unwrap_or(0);
            metrics.push(metric(
                FS_USAGE,
                Gauge,
                at,
                &labels,
                &device,
                used(layer.used_bytes),
            ));
            metrics.push(metric(
                FS_INODES,
                Gauge,
                at,
                &labels,
                &device,
                used(layer.inodes_used),
            ));
        }
        cri::ContainerMetrics {
            container_id: record.id.clone(),
            metrics,
        }
    }

    fn pod_sandbox_metrics(&self, record: &SandboxRecord) -> cri::PodSandboxMetrics {
        let labels = [record.id.clone(), record.metadata().name, String::new()];
        let interfaces = match (record.host_network(), record.pause_pid) {
            (false, Some(pid)) => netdev::read(pid).unwrap_or_default(),
            _ => Vec::new(),
        };
        cri::PodSandboxMetrics {
            pod_sandbox_id: record.id.clone(),
            metrics: network_metrics(&interfaces, now_nanos(), &labels),
            container_metrics: self
                .containers
                .list()
                .iter()
                .filter(|c| c.sandbox_id == record.id && c.phase == ContainerPhase::Running)
                .map(|c| self.container_metrics(c))
                .collect(),
        }
    }

    /// ListPodSandboxMetrics and StreamPodSandboxMetrics: ready pods only.
    pub fn list_pod_sandbox_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        self.sandboxes
            .list()
            .iter()
            .filter(|r| Self::observed_state(r) == cri::PodSandboxState::SandboxReady)
            .map(|r| self.pod_sandbox_metrics(r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_have_unique_names_and_cadvisor_label_keys() {
        let all = descriptors();
        let names: std::collections::HashSet<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), all.len());
        let keys = |name: &str| {
            all.iter()
                .find(|d| d.name == name)
                .unwrap()
                .label_keys
                .clone()
        };
        assert_eq!(
            keys("container_cpu_usage_seconds_total"),
            ["id", "name", "image", "cpu"]
        );
        assert_eq!(
            keys("container_memory_working_set_bytes"),
            ["id", "name", "image"]
        );
        assert_eq!(
            keys("container_network_receive_bytes_total"),
            ["id", "name", "image", "interface"]
        );
    }

    #[test]
    fn every_sample_has_a_value_per_label_key() {
        let labels = ["c1".to_string(), "app".to_string(), "busybox".to_string()];
        let mut stats = CgroupStats::default();
        stats.cpu.usage.total = 3 * NANOS_PER_SECOND + 5;
        let interface = InterfaceCounters {
            name: "eth0".into(),
            rx_bytes: 10,
            rx_packets: 1,
            rx_errors: 0,
            rx_dropped: 0,
            tx_bytes: 20,
            tx_packets: 2,
            tx_errors: 0,
            tx_dropped: 0,
        };
        let descriptors = descriptors();
        let samples = cgroup_metrics(&stats, 1, &labels)
            .into_iter()
            .chain(network_metrics(&[interface], 1, &labels));
        for sample in samples {
            let descriptor = descriptors.iter().find(|d| d.name == sample.name).unwrap();
            assert_eq!(
                sample.label_values.len(),
                descriptor.label_keys.len(),
                "{}",
                sample.name
            );
        }
        let cpu = cgroup_metrics(&stats, 1, &labels)
            .into_iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.value.unwrap().value, 3);
        assert_eq!(cpu.label_values[3], "total");
    }
}
