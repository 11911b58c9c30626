//! What the daemon implements to run the streams a client opened.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use super::terminal::TerminalSize;

/// Data the client sends (stdin). Reads end with EOF when the client closes it.
pub type InputStream = Box<dyn AsyncRead + Send + Unpin>;
/// Data for the client (stdout/stderr). Dropping it closes the stream for the client.
pub type OutputStream = Box<dyn AsyncWrite + Send + Unpin>;
/// One forwarded connection: reads what the client sends, writes what it receives.
pub type PortForwardStream = DuplexStream;

/// The streams of one exec or attach, as the client asked for them.
pub struct CommandStreams {
    pub tty: bool,
    pub stdin: Option<InputStream>,
    pub stdout: Option<OutputStream>,
    pub stderr: Option<OutputStream>,
    /// Terminal size changes (tty sessions with protocol v3 and later).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// Runs commands and connections for the streaming server.
///
/// Every method returns only after all output has been written and the output streams
/// are dropped. When the client goes away the server drops the returned future, so an
/// implementation must stop what it started on drop (e.g. `kill_on_drop`).
pub trait StreamingBackend: Send + Sync + 'static {
    /// Runs `cmd` in the container; resolves to its exit code.
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        streams: CommandStreams,
    ) -> impl Future<Output = Result<i32, BackendError>> + Send;

    /// Connects the streams to the container's main process until it exits or the
    /// client detaches.
    fn attach(
        &self,
        container_id: &str,
        streams: CommandStreams,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Connects `stream` to `port` inside the sandbox's network namespace until either
    /// side closes.
    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: PortForwardStream,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
