//! Interface stand-in for the cgroup managers until branch `cgroups` is merged: the
//! contract's types, backed by a bare cgroupfs v1 manager that creates the
//! directories, moves processes and freezes, but applies no resource limits.

use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CgroupStats {}

const ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio",
];

pub fn new_manager(
    cgroups_path: Option<&str>,
    container_id: &str,
    driver: CgroupDriver,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    if driver == CgroupDriver::Systemd {
        return Err(CgroupError::NoHierarchy("systemd driver".into()));
    }
    let inner = match cgroups_path {
        Some(p) => p.trim_start_matches('/').to_string(),
        None => format!("berth/{container_id}"),
    };
    Ok(Box::new(StandIn { inner }))
}

pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError>;
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    fn freeze(&self) -> Result<(), CgroupError>;
    fn thaw(&self) -> Result<(), CgroupError>;
    fn is_frozen(&self) -> Result<bool, CgroupError>;
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    fn destroy(&self) -> Result<(), CgroupError>;
}

#[derive(Debug)]
struct StandIn {
    inner: String,
}

impl StandIn {
    fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        CONTROLLERS
            .iter()
            .map(|c| PathBuf::from(ROOT).join(c))
            .filter(|p| p.is_dir())
            .map(|p| p.join(&self.inner))
    }
    fn write(path: PathBuf, value: &str) -> Result<(), CgroupError> {
        std::fs::write(&path, value).map_err(|source| CgroupError::Io { path, source })
    }
    fn freezer(&self) -> PathBuf {
        PathBuf::from(ROOT).join("freezer").join(&self.inner)
    }
}

impl CgroupManager for StandIn {
    fn create(&self, _resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            Self::write(dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
    fn update(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    fn freeze(&self) -> Result<(), CgroupError> {
        Self::write(self.freezer().join("freezer.state"), "FROZEN")
    }
    fn thaw(&self) -> Result<(), CgroupError> {
        Self::write(self.freezer().join("freezer.state"), "THAWED")
    }
    fn is_frozen(&self) -> Result<bool, CgroupError> {
        let path = self.freezer().join("freezer.state");
        let state =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Io { path, source })?;
        Ok(state.trim() == "FROZEN")
    }
    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        Ok(CgroupStats::default())
    }
    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let path = self.freezer().join("cgroup.procs");
        let procs =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Io { path, source })?;
        Ok(procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }
    fn destroy(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            if dir.exists() {
                std::fs::remove_dir(&dir).map_err(|source| CgroupError::Io {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}
