//! The CRI streaming server: the URLs `Exec`, `Attach` and `PortForward` return, and the
//! SPDY/3.1 and WebSocket protocols kubectl, crictl and kube-apiserver speak on them.
//!
//! ```text
//! CRI Exec ──> StreamingServer::get_exec ──> http://addr/exec/<one-time token>
//! client ──HTTP upgrade──> /exec/<token> ──> SPDY session or WebSocket channels
//!        ──> StreamingBackend::exec(container, cmd, streams) ──> status on the error channel
//! ```
//!
//! The daemon starts one server with [`StreamingServer::start`] and its implementation of
//! [`StreamingBackend`], and answers the CRI calls with [`StreamingServer::get_exec`],
//! [`get_attach`](StreamingServer::get_attach) and
//! [`get_port_forward`](StreamingServer::get_port_forward) (map
//! [`StreamingError::InvalidArgument`] to gRPC InvalidArgument and
//! [`StreamingError::TooManyInFlight`] to ResourceExhausted, as containerd does).
//! Everything after that — upgrade, protocol negotiation, streams, exit status — happens
//! here; the backend only sees `AsyncRead`/`AsyncWrite` ends and a resize channel.

mod backend;
mod cache;
mod portforward;
pub mod protocol;
mod remotecommand;
mod request;
mod server;
pub mod spdy;
mod status;
mod terminal;
mod tls;
mod upgrade;
mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

pub use backend::{
    BackendError, CommandStreams, InputStream, OutputStream, PortForwardStream, StreamingBackend,
};
pub use request::{AttachRequest, ExecRequest, PortForwardRequest};
pub use server::StreamingServer;
pub use status::{Status, StatusCause, StatusDetails};
pub use terminal::TerminalSize;
pub use tls::TlsConfig;

/// Settings of the streaming server (containerd: `stream_server_address`/`_port`,
/// `stream_idle_timeout`; kubelet: streaming.Config).
#[derive(Debug, Clone)]
pub struct StreamingConfig {
    /// Where to listen; port 0 picks a free one.
    pub address: SocketAddr,
    /// URL prefix put in returned URLs; defaults to `http://<bound address>`. Set it when
    /// listening on a wildcard address.
    pub base_url: Option<String>,
    /// How long an issued URL stays valid.
    pub token_ttl: Duration,
    /// Most URLs issued and not yet used.
    pub max_in_flight: usize,
    /// A connection with no traffic for this long is closed.
    pub stream_idle_timeout: Duration,
    /// How long a SPDY client has to open the streams it asked for.
    pub stream_creation_timeout: Duration,
    /// Serve HTTPS (URLs become `https://`); `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_url: None,
            token_ttl: Duration::from_secs(60),
            max_in_flight: 1000,
            stream_idle_timeout: Duration::from_secs(4 * 60 * 60),
            stream_creation_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("maximum number of in-flight streaming requests ({0}) exceeded")]
    TooManyInFlight(usize),
    #[error("generating a streaming token: {0}")]
    Token(String),
    #[error("streaming TLS: {0}")]
    Tls(String),
    #[error("binding the streaming server to {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}
