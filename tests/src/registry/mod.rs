//! Registry fixture: a real distribution server on loopback, a builder of test image
//! content (layers with every tar entry kind, busybox images, indexes), a pusher and a
//! recording proxy.

mod image;
mod layer;
mod proxy;
mod push;
mod server;
mod token;

pub use image::{
    Blob, BuiltImage, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ImageBuilder,
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, index_of,
};
pub use layer::{
    Layer, LayerBuilder, LayerCompression, busybox_layer, compress, pseudo_random_bytes,
    sha256_digest,
};
pub use proxy::{Proxy, ScriptedAnswer, SeenRequest};
pub use push::Pusher;
pub use server::{Registry, RegistryOptions};
