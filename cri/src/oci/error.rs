//! Errors of the runtime library. Every variant names the container, file, field or
//! step that failed.

use super::cgroups::CgroupError;
use super::seccomp::SeccompError;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// The config.json (or a process.json) is unusable; `field` is its JSON path.
    #[error("{field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("container with id \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("invalid container id {0:?}: {1}")]
    InvalidId(String, &'static str),
    /// The operation does not fit the container's current status.
    #[error("container \"{id}\": {reason}")]
    InvalidState { id: String, reason: String },
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("{0}")]
    Seccomp(#[from] SeccompError),
    #[error("{kind} hook [{index}] ({path}): {reason}")]
    Hook {
        kind: &'static str,
        index: usize,
        path: String,
        reason: String,
    },
    /// Reported by the container's init (or exec'd) process during its setup.
    #[error("{0}")]
    Init(String),
}

pub type Result<T> = std::result::Result<T, OciError>;

/// Attaches a description of the failed step to io and errno errors.
pub trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| OciError::Io {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| OciError::Sys {
            context: context(),
            source,
        })
    }
}

pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> OciError {
    OciError::InvalidSpec {
        field: field.into(),
        reason: reason.into(),
    }
}
