//! Images: registry pulls, the content store, secure layer unpacking, overlayfs
//! snapshots, image archives. Used by the CRI ImageService and by container creation.
//!
//! Entry points: [`ImageStore`] (pull, list, status, remove, leases, usage, gc, import,
//! export) and [`Snapshotter`] (per-container overlay mounts of an image's layers).

mod archive;
mod atomic;
mod content;
pub mod digest;
mod error;
pub mod hosts;
mod lease;
pub mod media;
mod pull;
mod record;
mod registry;
mod snapshot;
mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{ImageError, Result};
pub use media::{Compression, Platform};
pub use record::{ImageRecord, normalize_reference};
pub use registry::Credentials;
pub use snapshot::{Mount, Snapshot, Snapshotter};
pub use store::{DEFAULT_ROOT, FsUsage, GcReport, ImageStore, StoreOptions};
