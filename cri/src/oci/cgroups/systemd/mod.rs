//! The systemd cgroup driver: each container is a transient scope (or slice) unit that
//! systemd creates and owns, with its limits set as unit properties so systemd keeps
//! them; what systemd has no property for (devices, hugetlb, freezer ...) is written to
//! the unit's cgroup directly, as runc does.
//!
//! A scope cannot exist without a process, so the unit starts when the first process is
//! added; `create()` checks the resources and keeps them for that moment.

mod dbus;
mod properties;
mod unit;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use oci_spec::runtime::LinuxResources;

use self::dbus::Systemd;
use self::properties::{base_properties, resource_properties};
use self::unit::UnitPath;
use super::stats::CgroupStats;
use super::validate::{HostCapacity, validate};
use super::{CgroupError, CgroupManager};

pub use unit::{expand_slice, parse as parse_unit_path};

#[derive(Debug)]
pub struct SystemdManager {
    unit: UnitPath,
    container_id: String,
    v2: bool,
    /// The same cgroup seen through the filesystem.
    fs: Box<dyn CgroupManager>,
    /// Resources from `create()` for a scope not started yet.
    pending: Mutex<Option<LinuxResources>>,
}

impl SystemdManager {
    pub fn new(unit: UnitPath, container_id: &str, v2: bool, fs: Box<dyn CgroupManager>) -> Self {
        SystemdManager {
            unit,
            container_id: container_id.to_string(),
            v2,
            fs,
            pending: Mutex::new(None),
        }
    }

    fn properties(
        &self,
        r: &LinuxResources,
        pid: Option<u32>,
    ) -> Result<Vec<properties::Property>, CgroupError> {
        let description = format!("berth container {}", self.container_id);
        let mut props = base_properties(&description, &self.unit.slice, self.unit.is_slice(), pid);
        props.extend(resource_properties(r, self.v2)?);
        Ok(props)
    }

    /// Starts the unit (with `pid` in it for a scope), then applies what systemd does
    /// not manage through the filesystem; stops the unit again if that fails.
    fn start(&self, r: &LinuxResources, pid: Option<u32>) -> Result<(), CgroupError> {
        let systemd = Systemd::connect(&self.unit.unit)?;
        systemd.start_transient_unit(&self.unit.unit, &self.properties(r, pid)?)?;
        if let Err(e) = self.fs.create(Some(r)) {
            let _ = systemd.stop_unit(&self.unit.unit);
            return Err(e);
        }
        Ok(())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<LinuxResources>> {
        // A panic while holding the lock cannot leave the Option half-written.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl CgroupManager for SystemdManager {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let r = resources.cloned().unwrap_or_default();
        validate(&r, &HostCapacity::read())?;
        // Computing the properties checks the values systemd will get.
        self.properties(&r, None)?;
        if self.unit.is_slice() {
            return self.start(&r, None);
        }
        *self.pending() = Some(r);
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let pending = self.pending().take();
        if let Some(r) = pending {
            let pid_u32 = u32::try_from(pid)
                .map_err(|_| CgroupError::invalid("process", format!("bad pid {pid}")))?;
            if let Err(e) = self.start(&r, Some(pid_u32)) {
                *self.pending() = Some(r);
                return Err(e);
            }
        }
        // systemd moved the pid into the unit's own hierarchies; this adds it to the rest.
        self.fs.add_process(pid)
    }

    fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        validate(resources, &HostCapacity::read())?;
        if let Some(pending) = self.pending().as_mut() {
            // Not started yet: the update applies when it is.
            *pending = resources.clone();
            return Ok(());
        }
        let props = resource_properties(resources, self.v2)?;
        Systemd::connect(&self.unit.unit)?.set_unit_properties(&self.unit.unit, &props)?;
        self.fs.update(resources)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.fs.freeze()
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.fs.thaw()
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        self.fs.is_frozen()
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        self.fs.stats()
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.fs.pids()
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        if self.pending().take().is_none() {
            Systemd::connect(&self.unit.unit)?.stop_unit(&self.unit.unit)?;
        }
        // Directories in hierarchies systemd does not manage are ours to remove.
        self.fs.destroy()
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        self.fs.paths()
    }
}
