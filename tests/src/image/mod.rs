//! Test images built from Debian's busybox-static: file trees that can be
//! written out as a container rootfs or as OCI image layers.

mod busybox;
mod layer;
mod layout;

pub use busybox::{BUSYBOX, busybox_layer};
pub use layer::{Entry, Layer};
pub use layout::{BuiltImage, BuiltLayer, ImageBuilder, ImageConfig, digest_of};
