//! CRI v1 API (`runtime.v1`): the protobuf messages and the tonic client and
//! server code for `RuntimeService` and `ImageService`, generated at build
//! time from `api.proto`, plus helpers to speak it over unix sockets.

mod redact;
mod services;
mod unix;

pub use services::{MAX_MESSAGE_SIZE, image_client, image_server, runtime_client, runtime_server};
pub use unix::{SOCKET_MODE, UnixSocketError, bind_unix, connect_unix, serve_unix, socket_path};

/// CRI protobuf packages.
pub mod runtime {
    /// Package `runtime.v1`: every message and enum, and the
    /// `runtime_service_{client,server}` and `image_service_{client,server}`
    /// modules.
    // Generated code: lints are not ours to fix there.
    #[allow(clippy::all, clippy::pedantic, missing_docs, deprecated)]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}
