//! cgroup v2 through the cgroupfs: one directory in the unified hierarchy, controllers
//! enabled down the path, device rules as an eBPF program.

mod apply;
mod bpf;
mod device_program;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::devices::effective_rules;
use super::fsutil::{
    CreatedDirs, cgroup_pids, keyed_value, read_keyed, read_trimmed, remove_cgroup_dir, wait_until,
    write_field,
};
use super::stats::CgroupStats;
use super::validate::{HostCapacity, validate};
use super::{CgroupError, CgroupManager, FREEZE_TIMEOUT, REMOVE_TIMEOUT};

#[derive(Debug, Clone)]
pub struct V2Manager {
    /// Mount point of the unified hierarchy.
    mount: PathBuf,
    /// This container's directory below it.
    dir: PathBuf,
}

impl V2Manager {
    pub fn new(mount: &Path, inner: &str) -> Self {
        V2Manager {
            mount: mount.to_path_buf(),
            dir: mount.join(inner),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Enables in every ancestor's cgroup.subtree_control each controller it has, so
    /// the new cgroup gets them all. A controller the kernel refuses to delegate (e.g.
    /// a threaded subtree) is left out and reported when a field needs it.
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        let Some(parent) = self.dir.parent() else {
            return Ok(());
        };
        let Ok(below_mount) = parent.strip_prefix(&self.mount) else {
            return Ok(());
        };
        let mut current = self.mount.clone();
        let mut chain = vec![current.clone()];
        for part in below_mount.components() {
            current.push(part);
            chain.push(current.clone());
        }
        for dir in chain {
            let available = read_trimmed(&dir.join("cgroup.controllers"))?;
            let enabled = read_trimmed(&dir.join("cgroup.subtree_control"))?;
            for controller in available.split_whitespace() {
                if enabled.split_whitespace().any(|c| c == controller) {
                    continue;
                }
                if let Err(e) = write_field(
                    &dir,
                    "cgroup.subtree_control",
                    &format!("+{controller}"),
                    "cgroup.subtree_control",
                ) {
                    tracing::debug!(error = %e, "controller not enabled");
                }
            }
        }
        Ok(())
    }

    fn frozen(&self) -> Result<bool, CgroupError> {
        let events = read_keyed(&self.dir.join("cgroup.events"))?;
        Ok(keyed_value(&events, "frozen") == 1)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        write_field(
            &self.dir,
            "cgroup.freeze",
            if frozen { "1" } else { "0" },
            "cgroup.freeze",
        )?;
        let what = format!(
            "{} to {}",
            self.dir.display(),
            if frozen { "freeze" } else { "thaw" }
        );
        wait_until(FREEZE_TIMEOUT, &what, || Ok(self.frozen()? == frozen))
    }
}

impl CgroupManager for V2Manager {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let empty = LinuxResources::default();
        let r = resources.unwrap_or(&empty);
        validate(r, &HostCapacity::read())?;
        let rules = effective_rules(r.devices().as_deref())?;
        let mut created = CreatedDirs::default();
        if let Some(parent) = self.dir.parent() {
            created.create_all(parent)?;
        }
        self.enable_controllers()?;
        created.create_all(&self.dir)?;
        self.apply(r, Some(&rules))?;
        created.keep();
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        write_field(&self.dir, "cgroup.procs", &pid.to_string(), "process")
    }

    fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        validate(resources, &HostCapacity::read())?;
        let rules = match resources.devices() {
            Some(spec) => Some(effective_rules(Some(spec))?),
            None => None,
        };
        self.apply(resources, rules.as_deref())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true).inspect_err(|_| {
            let _ = write_field(&self.dir, "cgroup.freeze", "0", "cgroup.freeze");
        })
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        self.frozen()
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        self.read_stats()
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        cgroup_pids(&self.dir)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        remove_cgroup_dir(&self.dir, REMOVE_TIMEOUT)
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([(String::new(), self.dir.clone())])
    }
}
