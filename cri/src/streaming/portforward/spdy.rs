//! Port forwarding over SPDY: the client opens a `data` and an `error` stream per
//! forwarded connection, paired by their `requestID` header.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::{forward_error, parse_port};
use crate::streaming::StreamingBackend;
use crate::streaming::protocol::{HEADER_PORT, HEADER_REQUEST_ID, HEADER_STREAM_TYPE};
use crate::streaming::server::Shared;
use crate::streaming::spdy::frame::rst;
use crate::streaming::spdy::session::{self, AcceptedStream, IncomingStream};
use crate::streaming::upgrade::Upgraded;

struct Pair {
    port: u16,
    data: Option<AcceptedStream>,
    error: Option<AcceptedStream>,
    deadline: Instant,
}

impl Pair {
    async fn print_error(&self, message: &str) {
        tracing::warn!(message, "port-forward stream error");
        if let Some(error) = &self.error {
            error
                .write(Bytes::copy_from_slice(message.as_bytes()))
                .await;
        }
    }
}

pub(super) async fn run<B: StreamingBackend>(shared: Arc<Shared<B>>, io: Upgraded, pod: String) {
    let (session, mut incoming) = session::start(io, shared.config.stream_idle_timeout);
    let _abort = session.abort_on_drop();
    let closed = session.closed_token();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Dropped (aborting the forwards) when the session ends.
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pairs.values().map(|p| p.deadline).min();
        let stream = tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => break,
            },
            _ = sleep_until(next_deadline) => {
                let now = Instant::now();
                let expired: Vec<String> = pairs.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| id.clone()).collect();
                for id in expired {
                    if let Some(pair) = pairs.remove(&id) {
                        pair.print_error("timed out waiting for streams").await;
                    }
                }
                continue;
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            _ = closed.cancelled() => break,
        };
        let Some((kind, port, request_id)) = classify(&stream) else {
            stream.refuse(rst::CANCEL);
            continue;
        };
        let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
            port,
            data: None,
            error: None,
            deadline: Instant::now() + shared.config.stream_creation_timeout,
        });
        let slot = if kind == "data" {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let message = format!(
                "error processing stream for request {request_id}: {kind} stream already assigned"
            );
            stream.refuse(rst::STREAM_IN_USE);
            pair.print_error(&message).await;
            continue;
        }
        *slot = Some(stream.accept().await);
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair {
                port,
                data: Some(data),
                error: Some(error),
                ..
            }) = pairs.remove(&request_id)
            {
                forwards.spawn(forward(shared.clone(), pod.clone(), port, data, error));
            }
        }
    }
    session.abort();
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Checks the headers like kubelet does; `None` (logged) when they are wrong.
fn classify(stream: &IncomingStream) -> Option<(&'static str, u16, String)> {
    let refuse = |why: String| {
        tracing::warn!(stream = stream.id, why, "port-forward stream refused");
        None
    };
    let port = match stream.headers.get(HEADER_PORT) {
        None | Some("") => return refuse(format!("{HEADER_PORT:?} header is required")),
        Some(text) => match parse_port(text) {
            Ok(port) => port,
            Err(why) => return refuse(why),
        },
    };
    let kind = match stream.headers.get(HEADER_STREAM_TYPE) {
        Some("data") => "data",
        Some("error") => "error",
        None | Some("") => return refuse(format!("{HEADER_STREAM_TYPE:?} header is required")),
        Some(other) => return refuse(format!("invalid stream type {other:?}")),
    };
    // Clients before Kubernetes 1.6 send no requestID: the error stream comes first and
    // the data stream two ids later, so derive one id for both.
    let request_id = match stream.headers.get(HEADER_REQUEST_ID) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if kind == "error" => stream.id.to_string(),
        _ => stream.id.saturating_sub(2).to_string(),
    };
    Some((kind, port, request_id))
}

async fn forward<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    pod: String,
    port: u16,
    data: AcceptedStream,
    error: AcceptedStream,
) {
    let (pipe, sent) = data.into_duplex();
    if let Err(e) = shared.backend.port_forward(&pod, port, pipe).await {
        let message = forward_error(port, &pod, &e);
        tracing::warn!(message, "port-forward failed");
        error.write(Bytes::from(message)).await;
    }
    let _ = sent.await;
    error.finish().await;
}
