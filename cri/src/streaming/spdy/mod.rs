//! SPDY/3.1 (draft-mbelshe-httpbis-spdy / the Chromium SPDY/3.1 draft), the transport
//! of `kubectl exec/attach/port-forward` through kube-apiserver and kubelet.
//!
//! Written here because no maintained Rust crate implements SPDY/3.1: the protocol was
//! retired in favour of HTTP/2, but Kubernetes' streaming still speaks it.

mod compression;
mod dictionary;
pub mod frame;
pub mod session;

pub use compression::{HeaderCompressor, HeaderDecompressor};
pub use dictionary::SPDY3_DICTIONARY;
pub use frame::{Frame, FrameDecoder, FrameEncoder, Headers};

/// The `Upgrade` token of a SPDY/3.1 connection upgrade.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    #[error("spdy header compression: {0}")]
    Compression(String),
    #[error("spdy version {0} is not supported (only 3)")]
    UnsupportedVersion(u16),
    #[error("spdy frame of {0} bytes exceeds the 24-bit length field")]
    FrameTooLarge(usize),
}
