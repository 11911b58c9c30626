//! Writes `linux.resources` into cgroup v2 interface files.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::V2Manager;
use super::bpf::replace_device_program;
use super::device_program::device_program;
use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::convert::{
    blkio_weight_to_io_weight, memory_swap_to_v2, shares_to_weight,
};
use crate::oci::cgroups::devices::DeviceRule;
use crate::oci::cgroups::fsutil::{read_u64_opt, write_field};

impl V2Manager {
    pub(super) fn apply(
        &self,
        r: &LinuxResources,
        devices: Option<&[DeviceRule]>,
    ) -> Result<(), CgroupError> {
        let dir = self.dir.as_path();
        if let Some(cpu) = r.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(mem) = r.memory() {
            self.apply_memory(mem)?;
        }
        if let Some(pids) = r.pids()
            && pids.limit() != 0
        {
            let value = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_string()
            };
            self.write("pids.max", &value, "linux.resources.pids.limit")?;
        }
        if let Some(io) = r.block_io() {
            self.apply_io(io)?;
        }
        for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
            let field = format!("linux.resources.hugepageLimits[{i}].limit");
            let value = if h.limit() < 0 {
                "max".to_string()
            } else {
                h.limit().to_string()
            };
            self.write(&format!("hugetlb.{}.max", h.page_size()), &value, &field)?;
            // Reservations follow the limit so that a reserved-but-unfaulted mapping
            // cannot exceed it either.
            let rsvd = format!("hugetlb.{}.rsvd.max", h.page_size());
            if dir.join(&rsvd).exists() {
                self.write(&rsvd, &value, &field)?;
            }
        }
        if let Some(net) = r.network()
            && (net.class_id().is_some()
                || net.priorities().as_ref().is_some_and(|p| !p.is_empty()))
        {
            return Err(CgroupError::invalid(
                "linux.resources.network",
                "net_cls/net_prio exist only on cgroup v1; this host runs cgroup v2",
            ));
        }
        for (device, limits) in r.rdma().iter().flatten() {
            let mut line = device.clone();
            if let Some(handles) = limits.hca_handles() {
                line.push_str(&format!(" hca_handle={handles}"));
            }
            if let Some(objects) = limits.hca_objects() {
                line.push_str(&format!(" hca_object={objects}"));
            }
            self.write("rdma.max", &line, &format!("linux.resources.rdma.{device}"))?;
        }
        // Raw v2 settings come last so they override the converted ones.
        let mut unified: Vec<_> = r.unified().iter().flatten().collect();
        unified.sort();
        for (key, value) in unified {
            let field = format!("linux.resources.unified.{key}");
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(CgroupError::invalid(
                    field,
                    "not a cgroup interface file name",
                ));
            }
            if !dir.join(key).exists() {
                let controller = key.split('.').next().unwrap_or(key);
                return Err(CgroupError::invalid(
                    field,
                    format!(
                        "no such file; is the {controller} controller enabled for this cgroup?"
                    ),
                ));
            }
            self.write(key, value, &field)?;
        }
        if let Some(rules) = devices {
            replace_device_program(dir, &device_program(rules))?;
        }
        Ok(())
    }

    fn write(&self, file: &str, value: &str, field: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        if !path.exists() {
            let controller = file.split('.').next().unwrap_or(file);
            return Err(CgroupError::invalid(
                field,
                format!(
                    "{} missing: the {controller} controller is not enabled here",
                    path.display()
                ),
            ));
        }
        write_field(&self.dir, file, value, field)
    }

    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        if cpu.realtime_runtime().is_some_and(|v| v != 0)
            || cpu.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(CgroupError::invalid(
                "linux.resources.cpu.realtimeRuntime",
                "realtime scheduling budgets exist only on cgroup v1",
            ));
        }
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            self.write(
                "cpu.weight",
                &shares_to_weight(shares).to_string(),
                "linux.resources.cpu.shares",
            )?;
        }
        let quota = cpu.quota().unwrap_or(0);
        let period = cpu.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let mut value = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_string()
            };
            if period != 0 {
                value.push_str(&format!(" {period}"));
            }
            self.write("cpu.max", &value, "linux.resources.cpu.quota")?;
        }
        if let Some(burst) = cpu.burst() {
            self.write(
                "cpu.max.burst",
                &burst.to_string(),
                "linux.resources.cpu.burst",
            )?;
        }
        if let Some(idle) = cpu.idle() {
            self.write("cpu.idle", &idle.to_string(), "linux.resources.cpu.idle")?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            self.write("cpuset.cpus", cpus, "linux.resources.cpu.cpus")?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            self.write("cpuset.mems", mems, "linux.resources.cpu.mems")?;
        }
        Ok(())
    }

    fn apply_memory(&self, mem: &LinuxMemory) -> Result<(), CgroupError> {
        let limit = mem.limit().unwrap_or(0);
        let swap = memory_swap_to_v2(mem.swap().unwrap_or(0), limit)
            .map_err(|reason| CgroupError::invalid("linux.resources.memory.swap", reason))?;
        if limit > 0
            && let Some(current) = read_u64_opt(&self.dir.join("memory.current"))?
            && current > limit as u64
        {
            return Err(CgroupError::invalid(
                "linux.resources.memory.limit",
                format!("{limit} is below the current usage of {current} bytes"),
            ));
        }
        if let Some(swap) = swap {
            let value = if swap < 0 {
                "max".to_string()
            } else {
                swap.to_string()
            };
            // Without swap accounting there is no file; "max" and "0" are then already true.
            if self.dir.join("memory.swap.max").exists() {
                write_field(
                    &self.dir,
                    "memory.swap.max",
                    &value,
                    "linux.resources.memory.swap",
                )?;
            } else if swap > 0 {
                return Err(CgroupError::invalid(
                    "linux.resources.memory.swap",
                    "swap accounting is not available on this host",
                ));
            }
        }
        if limit != 0 {
            let value = if limit < 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            self.write("memory.max", &value, "linux.resources.memory.limit")?;
        }
        if let Some(reservation) = mem.reservation().filter(|r| *r != 0) {
            let value = if reservation < 0 {
                "max".to_string()
            } else {
                reservation.to_string()
            };
            self.write("memory.low", &value, "linux.resources.memory.reservation")?;
        }
        if mem.swappiness().is_some()
            || mem.disable_oom_killer() == Some(true)
            || mem.kernel().is_some()
        {
            // No v2 equivalent; runc accepts these and ignores them too.
            tracing::debug!("ignoring memory swappiness/disableOOMKiller/kernel on cgroup v2");
        }
        Ok(())
    }

    fn apply_io(&self, b: &LinuxBlockIo) -> Result<(), CgroupError> {
        let dir: &Path = &self.dir;
        // BFQ takes blkio-style weights as they are; io.weight needs converting.
        let bfq = dir.join("io.bfq.weight").exists();
        let weight = |w: u16| {
            if bfq {
                u64::from(w)
            } else {
                blkio_weight_to_io_weight(u64::from(w))
            }
        };
        let weight_file = if bfq { "io.bfq.weight" } else { "io.weight" };
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            self.write(
                weight_file,
                &weight(w).to_string(),
                "linux.resources.blockIO.weight",
            )?;
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(w) = d.weight() {
                let line = format!("{}:{} {}", d.major(), d.minor(), weight(w));
                self.write(
                    weight_file,
                    &line,
                    &format!("linux.resources.blockIO.weightDevice[{i}]"),
                )?;
            }
        }
        let throttles = [
            (
                "throttleReadBpsDevice",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ];
        for (name, key, devices) in throttles {
            for (i, d) in devices.iter().flatten().enumerate() {
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                let line = format!("{}:{} {key}={rate}", d.major(), d.minor());
                self.write(
                    "io.max",
                    &line,
                    &format!("linux.resources.blockIO.{name}[{i}]"),
                )?;
            }
        }
        Ok(())
    }
}
