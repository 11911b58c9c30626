//! Errors of the image store, each naming the image, blob, file or field at fault.

use std::io;
use std::path::PathBuf;

use super::unpack::UnpackError;

/// What went wrong while pulling, storing, unpacking or mounting an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {image}: registry {endpoint}: {reason}")]
    Registry {
        image: String,
        endpoint: String,
        reason: String,
        /// HTTP status when the registry answered with one (401, 404, 429, 5xx...).
        status: Option<u16>,
    },
    /// A TLS failure that repeats on every attempt: an untrusted server certificate or
    /// a handshake the server refused (a missing client certificate).
    #[error("image {image}: registry {endpoint}: {reason}")]
    Tls {
        image: String,
        endpoint: String,
        reason: String,
    },
    #[error("image {image}: blob {digest}: {reason}")]
    Blob {
        image: String,
        digest: String,
        reason: String,
    },
    #[error("image {image}: manifest {digest}: {reason}")]
    Manifest {
        image: String,
        digest: String,
        reason: String,
    },
    #[error("image {image}: no manifest for platform {platform} (index offers: {available})")]
    NoMatchingPlatform {
        image: String,
        platform: String,
        available: String,
    },
    #[error("image {image}: layer {digest}: {source}")]
    Unpack {
        image: String,
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("image {0} not found")]
    NotFound(String),
    #[error("image {image} is in use by {holders}")]
    InUse { image: String, holders: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("registry hosts config {}: {reason}", path.display())]
    HostsConfig { path: PathBuf, reason: String },
    #[error("image archive {}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("snapshot {id}: {reason}")]
    Snapshot { id: String, reason: String },
    /// The same failure, reported to every caller that waited on one shared pull.
    #[error(transparent)]
    Shared(std::sync::Arc<ImageError>),
    #[error("image store record {}: {reason}", path.display())]
    CorruptRecord { path: PathBuf, reason: String },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    /// True for errors that are the registry's or network's transient state (429, 5xx,
    /// connection failures): worth retrying, and a later pull may succeed.
    pub fn is_transient(&self) -> bool {
        if let ImageError::Shared(inner) = self {
            return inner.is_transient();
        }
        matches!(self, ImageError::Registry { status: Some(s), .. } if *s == 429 || *s >= 500)
            || matches!(self, ImageError::Registry { status: None, .. })
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
