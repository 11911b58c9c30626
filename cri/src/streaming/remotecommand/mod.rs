//! Exec and attach: the stream set kubelet's remotecommand server expects (error,
//! stdin, stdout, stderr, resize) over SPDY or WebSocket, and the exit status report.

mod spdy;
mod websocket;

use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::protocol::{SPDY_REMOTE_COMMAND, WEBSOCKET_REMOTE_COMMAND};
use super::server::{HttpResponse, Shared};
use super::status::Status;
use super::{CommandStreams, StreamingBackend, upgrade};

/// What runs on the other end of the streams.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// The streams the CRI request asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub(crate) fn serve<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    request: Request<Incoming>,
    target: Target,
    options: Options,
) -> HttpResponse {
    let session_shared = shared.clone();
    if upgrade::is_websocket(request.headers()) {
        match upgrade::websocket(request.headers(), WEBSOCKET_REMOTE_COMMAND) {
            Err(refusal) => refusal,
            Ok((protocol, switching)) => {
                upgrade::on_upgrade(&shared, request, move |io| {
                    websocket::run(session_shared, io, protocol, target, options)
                });
                switching
            }
        }
    } else {
        match upgrade::spdy(request.headers(), SPDY_REMOTE_COMMAND) {
            Err(refusal) => refusal,
            Ok((protocol, switching)) => {
                upgrade::on_upgrade(&shared, request, move |io| {
                    spdy::run(session_shared, io, protocol, target, options)
                });
                switching
            }
        }
    }
}

/// Runs the command and waits until its output reached the connection; `None` when
/// the client went away first (the backend future is dropped then).
async fn execute<B: StreamingBackend>(
    backend: &B,
    target: &Target,
    streams: CommandStreams,
    outputs: Vec<JoinHandle<()>>,
    closed: &CancellationToken,
) -> Option<Status> {
    let status = tokio::select! {
        status = invoke(backend, target, streams) => status,
        _ = closed.cancelled() => {
            tracing::debug!(?target, "client went away, command abandoned");
            return None;
        }
    };
    for output in outputs {
        tokio::select! {
            _ = output => {}
            _ = closed.cancelled() => return None,
        }
    }
    Some(status)
}

async fn invoke<B: StreamingBackend>(
    backend: &B,
    target: &Target,
    streams: CommandStreams,
) -> Status {
    match target {
        Target::Exec { container_id, cmd } => {
            match backend.exec(container_id, cmd, streams).await {
                Ok(code) => Status::exited(code, cmd),
                Err(e) => {
                    tracing::warn!(container_id, error = %e, "exec failed");
                    Status::internal_error(&format!("error executing command in container: {e}"))
                }
            }
        }
        Target::Attach { container_id } => match backend.attach(container_id, streams).await {
            Ok(()) => Status::success(),
            Err(e) => {
                tracing::warn!(container_id, error = %e, "attach failed");
                Status::internal_error(&format!("error attaching to container: {e}"))
            }
        },
    }
}
