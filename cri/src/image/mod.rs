//! Images: registry pulls, the content store, secure layer unpacking, overlayfs
//! snapshots, image archives. Used by the CRI ImageService and by container creation.
//!
//! Entry points: [`ImageStore`] (pull, list, status, remove, leases, usage, gc, import,
//! export) and [`Snapshotter`] (per-container overlay mounts of an image's layers).
//!
//! On disk under the store root (default `/var/lib/berth/cri`): `blobs/sha256/` (content
//! as fetched), `layers/<diff id>/` (unpacked, one overlay lower dir each, shared by all
//! images), `l/` (short links to layers for mount options), `images/<id>.json`
//! (records), `leases.json` (who uses which image), `snapshots/<id>/` (upper and work
//! dirs), `staging/` (in-progress work, emptied on open). Every write is temp + rename;
//! a record is written only after everything it names exists.
//!
//! Registry endpoints come from a containerd-style hosts dir (see [`hosts`]); the
//! distribution protocol is in `registry.rs` (authentication in `auth.rs`, HTTP and TLS
//! setup in `transport.rs`); oci-client only parses references. Containers lease their image through [`Snapshotter::prepare`]; callers that
//! hold an image otherwise use [`ImageStore::acquire`] / [`ImageStore::release`].

mod archive;
mod atomic;
mod auth;
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
mod transport;
pub mod unpack;

pub use digest::Digest;
pub use error::{ImageError, Result};
pub use media::{Compression, Platform};
pub use record::{ImageRecord, normalize_reference};
pub use registry::Credentials;
pub use snapshot::{Mount, Snapshot, Snapshotter};
pub use store::{DEFAULT_ROOT, FsUsage, GcReport, ImageStore, StoreOptions};
