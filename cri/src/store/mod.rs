//! The daemon's stores, each the single owner of its state: records kept in
//! memory and persisted atomically (temp file + rename) as one JSON file
//! per object, so they survive a restart of the daemon; fsynced unless the
//! change only describes running processes, which a power loss ends.

mod atomic;
pub mod container;
mod names;
mod proto_bytes;
mod records;
pub mod sandbox;

pub use container::{ContainerPhase, ContainerRecord, ContainerStore};
pub use names::{NameIndex, NameReserved};
pub use records::{Record, Store};
pub use sandbox::{SandboxRecord, SandboxState, SandboxStore};

/// A store operation that failed, naming the object and file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {}: {source}", path.display())]
    Io {
        what: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: corrupt record: {reason}", path.display())]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} id prefix {prefix:?} is ambiguous")]
    Ambiguous { kind: &'static str, prefix: String },
    #[error(transparent)]
    Reserved(#[from] NameReserved),
}
