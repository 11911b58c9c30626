//! cgroup v1 through the cgroupfs: one directory per mounted hierarchy (co-mounted
//! controllers share one), plus the cgroup2 mount's directory on hybrid hosts so the
//! container is tracked there too.

mod apply;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::devices::effective_rules;
use super::fsutil::{
    CreatedDirs, cgroup_pids, read_trimmed, remove_cgroup_dir, wait_until, write_field,
};
use super::hierarchy::Hierarchies;
use super::stats::CgroupStats;
use super::validate::{HostCapacity, validate};
use super::{CgroupError, CgroupManager, FREEZE_TIMEOUT, REMOVE_TIMEOUT};

#[derive(Debug, Clone)]
pub struct V1Manager {
    /// Controller → this container's directory in the hierarchy holding it.
    dirs: BTreeMap<String, PathBuf>,
    /// The directory on the cgroup2 mount of a hybrid host.
    unified: Option<PathBuf>,
}

impl V1Manager {
    pub fn new(hierarchies: &Hierarchies, inner: &str) -> Self {
        let dirs = hierarchies
            .v1
            .iter()
            .map(|(controller, mount)| (controller.clone(), mount.join(inner)))
            .collect();
        let unified = hierarchies.unified.as_ref().map(|mount| mount.join(inner));
        V1Manager { dirs, unified }
    }

    /// This container's directory for `controller`, if the host mounts it.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    /// Every distinct directory (co-mounted controllers appear once), then the unified one.
    fn all_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::new();
        for dir in self.dirs.values().chain(self.unified.iter()) {
            if !dirs.contains(&dir.as_path()) {
                dirs.push(dir);
            }
        }
        dirs
    }

    fn check(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        validate(r, &HostCapacity::read())?;
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::invalid(
                "linux.resources.unified",
                "needs cgroup v2, but this host runs cgroup v1 controllers",
            ));
        }
        Ok(())
    }

    fn freezer_state(&self) -> Result<String, CgroupError> {
        let dir = self.freezer_dir()?;
        read_trimmed(&dir.join("freezer.state"))
    }

    fn freezer_dir(&self) -> Result<&Path, CgroupError> {
        self.dir("freezer").ok_or_else(|| {
            CgroupError::NoHierarchy("the freezer cgroup controller is not mounted".into())
        })
    }
}

impl CgroupManager for V1Manager {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let empty = LinuxResources::default();
        let r = resources.unwrap_or(&empty);
        self.check(r)?;
        let rules = effective_rules(r.devices().as_deref())?;
        let mut created = CreatedDirs::default();
        for dir in self.all_dirs() {
            created.create_all(dir)?;
        }
        if let Some(dir) = self.dir("cpuset") {
            apply::inherit_cpuset(dir)?;
        }
        self.apply(r, Some(&rules))?;
        created.keep();
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.all_dirs() {
            write_field(dir, "cgroup.procs", &pid.to_string(), "process")?;
        }
        Ok(())
    }

    fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.check(resources)?;
        let rules = match resources.devices() {
            Some(spec) => Some(effective_rules(Some(spec))?),
            None => None,
        };
        self.apply(resources, rules.as_deref())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        let dir = self.freezer_dir()?;
        // A task stuck in an uninterruptible sleep can leave the cgroup FREEZING;
        // writing FROZEN again makes the kernel retry those tasks.
        wait_until(
            FREEZE_TIMEOUT,
            &format!("{} to freeze", dir.display()),
            || {
                write_field(dir, "freezer.state", "FROZEN", "freezer.state")?;
                Ok(self.freezer_state()? == "FROZEN")
            },
        )
        .inspect_err(|_| {
            let _ = write_field(dir, "freezer.state", "THAWED", "freezer.state");
        })
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        let dir = self.freezer_dir()?;
        write_field(dir, "freezer.state", "THAWED", "freezer.state")?;
        wait_until(
            FREEZE_TIMEOUT,
            &format!("{} to thaw", dir.display()),
            || Ok(self.freezer_state()? == "THAWED"),
        )
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(self.freezer_state()? == "FROZEN")
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        self.read_stats()
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // The pids (or else any) hierarchy lists every process of the container.
        let dir = self
            .dir("pids")
            .or_else(|| self.dir("freezer"))
            .or_else(|| self.all_dirs().first().copied())
            .ok_or_else(|| CgroupError::NoHierarchy("no cgroup v1 hierarchy mounted".into()))?;
        cgroup_pids(dir)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for dir in self.all_dirs() {
            if let Err(e) = remove_cgroup_dir(dir, REMOVE_TIMEOUT) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut paths = self.dirs.clone();
        if let Some(unified) = &self.unified {
            paths.insert(String::new(), unified.clone());
        }
        paths
    }
}
