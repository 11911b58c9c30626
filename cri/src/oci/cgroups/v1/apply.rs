//! Writes `linux.resources` into the v1 controller files, in the orders the kernel needs.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::V1Manager;
use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::devices::DeviceRule;
use crate::oci::cgroups::fsutil::{read_trimmed, write_field};

impl V1Manager {
    /// Applies everything `r` sets; `devices` is the already-validated rule list (None =
    /// leave the device controller as it is).
    pub(super) fn apply(
        &self,
        r: &LinuxResources,
        devices: Option<&[DeviceRule]>,
    ) -> Result<(), CgroupError> {
        if let Some(cpu) = r.cpu() {
            if let Some(dir) = self.dir("cpu") {
                apply_cpu(dir, cpu)?;
            }
            if let Some(dir) = self.dir("cpuset") {
                apply_cpuset(dir, cpu)?;
            }
        }
        if let Some(mem) = r.memory() {
            apply_memory(self.require("memory", "linux.resources.memory")?, mem)?;
        }
        if let Some(pids) = r.pids()
            && pids.limit() != 0
        {
            let value = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_string()
            };
            write_field(
                self.require("pids", "linux.resources.pids")?,
                "pids.max",
                &value,
                "linux.resources.pids.limit",
            )?;
        }
        if let Some(blkio) = r.block_io() {
            apply_blkio(self.require("blkio", "linux.resources.blockIO")?, blkio)?;
        }
        for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
            let field = format!("linux.resources.hugepageLimits[{i}]");
            let dir = self.require("hugetlb", &field)?;
            let file = format!("hugetlb.{}.limit_in_bytes", h.page_size());
            write_field(
                dir,
                &file,
                &h.limit().to_string(),
                &format!("{field}.limit"),
            )?;
        }
        if let Some(net) = r.network() {
            if let Some(class_id) = net.class_id() {
                let dir = self.require("net_cls", "linux.resources.network.classID")?;
                write_field(
                    dir,
                    "net_cls.classid",
                    &class_id.to_string(),
                    "linux.resources.network.classID",
                )?;
            }
            for (i, prio) in net.priorities().iter().flatten().enumerate() {
                let field = format!("linux.resources.network.priorities[{i}]");
                let dir = self.require("net_prio", &field)?;
                let line = format!("{} {}", prio.name(), prio.priority());
                write_field(dir, "net_prio.ifpriomap", &line, &field)?;
            }
        }
        for (device, limits) in r.rdma().iter().flatten() {
            let field = format!("linux.resources.rdma.{device}");
            let dir = self.require("rdma", &field)?;
            let mut line = device.clone();
            if let Some(handles) = limits.hca_handles() {
                line.push_str(&format!(" hca_handle={handles}"));
            }
            if let Some(objects) = limits.hca_objects() {
                line.push_str(&format!(" hca_object={objects}"));
            }
            write_field(dir, "rdma.max", &line, &field)?;
        }
        if let Some(rules) = devices
            && let Some(dir) = self.dir("devices")
        {
            apply_devices(dir, rules)?;
        }
        Ok(())
    }

    fn require(&self, controller: &str, field: &str) -> Result<&Path, CgroupError> {
        self.dir(controller).ok_or_else(|| {
            CgroupError::invalid(
                field,
                format!("the {controller} cgroup controller is not mounted on this host"),
            )
        })
    }
}

fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares()
        && shares != 0
    {
        write_field(
            dir,
            "cpu.shares",
            &shares.to_string(),
            "linux.resources.cpu.shares",
        )?;
    }
    let period = cpu.period().filter(|p| *p != 0);
    let quota = cpu.quota().filter(|q| *q != 0);
    if let Some(period) = period {
        // A new period is refused while the current quota would exceed it; setting
        // the quota first and retrying the period resolves that.
        if let Err(first) = write_field(
            dir,
            "cpu.cfs_period_us",
            &period.to_string(),
            "linux.resources.cpu.period",
        ) {
            let Some(quota) = quota else {
                return Err(first);
            };
            write_field(
                dir,
                "cpu.cfs_quota_us",
                &quota.to_string(),
                "linux.resources.cpu.quota",
            )?;
            write_field(
                dir,
                "cpu.cfs_period_us",
                &period.to_string(),
                "linux.resources.cpu.period",
            )?;
        }
    }
    if let Some(quota) = quota {
        write_field(
            dir,
            "cpu.cfs_quota_us",
            &quota.to_string(),
            "linux.resources.cpu.quota",
        )?;
    }
    if let Some(burst) = cpu.burst() {
        write_field(
            dir,
            "cpu.cfs_burst_us",
            &burst.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    // The realtime period must be in place before a runtime that fits in it.
    if let Some(rt_period) = cpu.realtime_period().filter(|p| *p != 0) {
        write_field(
            dir,
            "cpu.rt_period_us",
            &rt_period.to_string(),
            "linux.resources.cpu.realtimePeriod",
        )?;
    }
    if let Some(rt_runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
        write_field(
            dir,
            "cpu.rt_runtime_us",
            &rt_runtime.to_string(),
            "linux.resources.cpu.realtimeRuntime",
        )?;
    }
    if let Some(idle) = cpu.idle() {
        write_field(
            dir,
            "cpu.idle",
            &idle.to_string(),
            "linux.resources.cpu.idle",
        )?;
    }
    Ok(())
}

fn apply_cpuset(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
        write_field(dir, "cpuset.cpus", cpus, "linux.resources.cpu.cpus")?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
        write_field(dir, "cpuset.mems", mems, "linux.resources.cpu.mems")?;
    }
    Ok(())
}

/// A new v1 cpuset cgroup starts with empty cpus/mems and refuses tasks until they are
/// set: copy them down from the nearest ancestor that has them.
pub(super) fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if !read_trimmed(&dir.join(file))?.is_empty() {
            continue;
        }
        let Some(parent) = dir.parent() else { continue };
        inherit_cpuset(parent)?;
        let value = read_trimmed(&parent.join(file))?;
        write_field(
            dir,
            file,
            &value,
            &format!("linux.resources.cpu.{}", &file[7..]),
        )?;
    }
    Ok(())
}

fn apply_memory(dir: &Path, mem: &LinuxMemory) -> Result<(), CgroupError> {
    const LIMIT: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let limit = mem.limit().unwrap_or(0);
    let mut swap = mem.swap().unwrap_or(0);
    // Unlimited memory with no swap setting means unlimited memory+swap too.
    if limit == -1 && swap == 0 {
        swap = -1;
    }
    let has_memsw = dir.join(MEMSW).exists();
    let write_memsw = |value: i64| -> Result<(), CgroupError> {
        if has_memsw {
            write_field(
                dir,
                MEMSW,
                &value.to_string(),
                "linux.resources.memory.swap",
            )
        } else if value > 0 {
            Err(CgroupError::invalid(
                "linux.resources.memory.swap",
                "swap accounting is disabled on this host (no memory.memsw.limit_in_bytes)",
            ))
        } else {
            Ok(())
        }
    };
    // The kernel keeps memsw >= limit at every step, so the order depends on whether
    // the new memsw value grows past the current limit.
    let mut done = false;
    if limit != 0 && swap != 0 {
        let current: i64 = read_trimmed(&dir.join(LIMIT))?.parse().unwrap_or(i64::MAX);
        if swap == -1 || current < swap {
            write_memsw(swap)?;
            write_field(
                dir,
                LIMIT,
                &limit.to_string(),
                "linux.resources.memory.limit",
            )?;
            done = true;
        }
    }
    if !done {
        if limit != 0 {
            write_field(
                dir,
                LIMIT,
                &limit.to_string(),
                "linux.resources.memory.limit",
            )?;
        }
        if swap != 0 {
            write_memsw(swap)?;
        }
    }
    if let Some(reservation) = mem.reservation().filter(|r| *r != 0) {
        write_field(
            dir,
            "memory.soft_limit_in_bytes",
            &reservation.to_string(),
            "linux.resources.memory.reservation",
        )?;
    }
    if mem.kernel().is_some() {
        // Kernel memory limits are deprecated upstream and ignored by runc; accepted for compatibility.
        tracing::debug!("ignoring linux.resources.memory.kernel");
    }
    if let Some(tcp) = mem.kernel_tcp().filter(|t| *t != 0)
        && dir.join("memory.kmem.tcp.limit_in_bytes").exists()
    {
        write_field(
            dir,
            "memory.kmem.tcp.limit_in_bytes",
            &tcp.to_string(),
            "linux.resources.memory.kernelTCP",
        )?;
    }
    if let Some(swappiness) = mem.swappiness() {
        write_field(
            dir,
            "memory.swappiness",
            &swappiness.to_string(),
            "linux.resources.memory.swappiness",
        )?;
    }
    if mem.disable_oom_killer() == Some(true) {
        write_field(
            dir,
            "memory.oom_control",
            "1",
            "linux.resources.memory.disableOOMKiller",
        )?;
    }
    Ok(())
}

fn apply_blkio(dir: &Path, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // CFQ exposes blkio.weight; BFQ (the only proportional scheduler on newer kernels)
    // blkio.bfq.weight.
    let weight_file = if dir.join("blkio.weight").exists() {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        write_field(
            dir,
            weight_file,
            &w.to_string(),
            "linux.resources.blockIO.weight",
        )?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        write_field(
            dir,
            "blkio.leaf_weight",
            &w.to_string(),
            "linux.resources.blockIO.leafWeight",
        )?;
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let field = format!("linux.resources.blockIO.weightDevice[{i}]");
        if let Some(w) = d.weight() {
            let file = if weight_file == "blkio.weight" {
                "blkio.weight_device"
            } else {
                "blkio.bfq.weight_device"
            };
            write_field(
                dir,
                file,
                &format!("{}:{} {w}", d.major(), d.minor()),
                &field,
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            write_field(
                dir,
                "blkio.leaf_weight_device",
                &format!("{}:{} {w}", d.major(), d.minor()),
                &field,
            )?;
        }
    }
    let throttles = [
        (
            "throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (name, file, devices) in throttles {
        for (i, d) in devices.iter().flatten().enumerate() {
            let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            write_field(
                dir,
                file,
                &line,
                &format!("linux.resources.blockIO.{name}[{i}]"),
            )?;
        }
    }
    Ok(())
}

/// Deny everything, then replay the rules in order (a wildcard rule resets the state).
fn apply_devices(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for (i, rule) in rules.iter().enumerate() {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        let line = if rule.is_wildcard() {
            "a".to_string()
        } else {
            rule.v1_line()
        };
        write_field(
            dir,
            file,
            &line,
            &format!("linux.resources.devices (rule {i}: {line})"),
        )?;
    }
    Ok(())
}
