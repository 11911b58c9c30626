//! The pod's cgroups. Like containerd's sandbox container, the pause process
//! gets its own cgroup below the pod cgroup the kubelet made
//! (`cgroup_parent`), with the pod overhead as its limits; a pod without a
//! cgroup parent leaves pause where the daemon runs. The pod cgroup itself
//! is the kubelet's: berth only reads it (pod stats).

use berth_proto::runtime::v1 as cri;
use oci_spec::runtime::LinuxResources;

use crate::config::CgroupDriver;
use crate::container::spec;
use crate::oci::cgroups::{self, CgroupError, CgroupManager};

/// The cgroups of one sandbox.
#[derive(Debug, Clone)]
pub struct PodCgroups {
    driver: CgroupDriver,
    parent: String,
    sandbox_id: String,
}

impl PodCgroups {
    /// None when the pod has no cgroup parent.
    pub fn of(
        config: &cri::PodSandboxConfig,
        driver: CgroupDriver,
        sandbox_id: &str,
    ) -> Option<Self> {
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str())?;
        (!parent.is_empty()).then(|| PodCgroups {
            driver,
            parent: parent.to_string(),
            sandbox_id: sandbox_id.to_string(),
        })
    }

    fn oci_driver(&self) -> cgroups::CgroupDriver {
        match self.driver {
            CgroupDriver::Cgroupfs => cgroups::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => cgroups::CgroupDriver::Systemd,
        }
    }

    /// The sandbox's own cgroup (where pause runs), named like a
    /// container's cgroup with the sandbox id.
    pub fn sandbox(&self) -> Result<Box<dyn CgroupManager>, CgroupError> {
        let path = spec::cgroups_path(self.driver, &self.parent, &self.sandbox_id);
        cgroups::new_manager(Some(&path), &self.sandbox_id, self.oci_driver())
    }

    /// The kubelet's pod cgroup (the parent), for reading its totals.
    pub fn pod(&self) -> Result<Box<dyn CgroupManager>, CgroupError> {
        let path = match self.driver {
            CgroupDriver::Cgroupfs => self.parent.clone(),
            CgroupDriver::Systemd => {
                cgroups::expand_slice(&self.parent).map_err(|reason| CgroupError::InvalidPath {
                    path: self.parent.clone(),
                    reason,
                })?
            }
        };
        cgroups::new_manager(
            Some(&path),
            &self.sandbox_id,
            cgroups::CgroupDriver::Cgroupfs,
        )
    }

    /// The pod overhead (`config.linux.overhead`) as the sandbox cgroup's
    /// limits.
    pub fn overhead(config: &cri::PodSandboxConfig) -> Result<Option<LinuxResources>, String> {
        config
            .linux
            .as_ref()
            .and_then(|l| l.overhead.as_ref())
            .map(|o| oci_resources(o, "config.linux.overhead"))
            .transpose()
    }

    /// Creates the sandbox cgroup with `resources` and moves `pid` into it.
    pub fn place(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let manager = self.sandbox()?;
        manager.create(resources)?;
        if let Err(e) = manager.add_process(pid) {
            let _ = manager.destroy();
            return Err(e);
        }
        Ok(())
    }

    /// Removes the sandbox cgroup (its processes are gone); idempotent.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.sandbox()?.destroy()
    }
}

/// CRI resources as OCI `linux.resources`; `field` names them in errors.
pub fn oci_resources(
    resources: &cri::LinuxContainerResources,
    field: &str,
) -> Result<LinuxResources, String> {
    serde_json::from_value(spec::resources(resources)).map_err(|e| format!("{field}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(parent: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: parent.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_cgroup_parent_means_no_pod_cgroups() {
        assert!(PodCgroups::of(&config(""), CgroupDriver::Cgroupfs, "s1").is_none());
        assert!(
            PodCgroups::of(
                &cri::PodSandboxConfig::default(),
                CgroupDriver::Cgroupfs,
                "s1"
            )
            .is_none()
        );
    }

    #[test]
    fn sandbox_cgroup_sits_below_the_pod_cgroup() {
        let cgroups =
            PodCgroups::of(&config("/kubepods/pod1/"), CgroupDriver::Cgroupfs, "s1").unwrap();
        assert_eq!(
            spec::cgroups_path(cgroups.driver, &cgroups.parent, &cgroups.sandbox_id),
            "/kubepods/pod1/s1"
        );
    }

    #[test]
    fn overhead_converts_to_oci_limits() {
        let r = oci_resources(
            &cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            },
            "overhead",
        )
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(256));
    }
}
