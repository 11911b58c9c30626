//! Errors of the cgroup managers. Every variant says which file, field or unit failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A resource value that can never be applied (checked before anything is created).
    #[error("{field}: {reason}")]
    InvalidResource { field: String, reason: String },
    /// The kernel refused a value for a field (e.g. a memory limit below current usage).
    #[error("{field}: writing {value:?} to {}: {source}", path.display())]
    Apply {
        field: String,
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: unexpected content {content:?}", path.display())]
    Parse { path: PathBuf, content: String },
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error("timed out waiting for {what}")]
    Timeout { what: String },
    #[error("systemd unit {unit}: {reason}")]
    Systemd { unit: String, reason: String },
    #[error("device access eBPF program for {}: {reason}", path.display())]
    DeviceProgram { path: PathBuf, reason: String },
}

impl CgroupError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CgroupError::InvalidResource {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the kernel refused us access (EACCES, EPERM, EROFS): what an
    /// unprivileged or user-namespaced runtime gets from the host's cgroups.
    pub fn is_access_denied(&self) -> bool {
        let source = match self {
            CgroupError::Apply { source, .. } | CgroupError::Io { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CgroupError::Io {
            path: path.into(),
            source,
        }
    }
}
