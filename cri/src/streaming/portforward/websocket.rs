//! Port forwarding over WebSocket: channels 2n (data) and 2n+1 (error) serve the n-th
//! port of the query; the server's first message on each starts with the port (u16 LE).

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::forward_error;
use crate::streaming::StreamingBackend;
use crate::streaming::server::Shared;
use crate::streaming::upgrade::{Upgraded, into_websocket};
use crate::streaming::websocket::{self as ws, Channel, Framing};

pub(super) async fn run<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    io: Upgraded,
    protocol_name: &'static str,
    pod: String,
    ports: Vec<u16>,
) {
    let framing = Framing {
        base64: protocol_name.contains("base64."),
        close_signal: false,
    };
    let channels: Vec<Channel> = ports
        .iter()
        .flat_map(|_| [Channel::ReadWrite, Channel::Write])
        .collect();
    let ws = into_websocket(io).await;
    let mut conn = ws::open(ws, framing, &channels, shared.config.stream_idle_timeout);
    let closed = conn.closed_token();
    let mut forwards = JoinSet::new();
    for (n, port) in ports.iter().copied().enumerate() {
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        let (data_index, error_index) = (2 * n, 2 * n + 1);
        conn.ends[data_index].writer.write(prefix.clone()).await;
        conn.ends[error_index].writer.write(prefix).await;
        let (Some(pipe), Some(sent)) = (
            conn.ends[data_index].backend.take(),
            conn.ends[data_index].pump.take(),
        ) else {
            continue;
        };
        let error = conn.ends[error_index].writer.clone();
        let (shared, pod) = (shared.clone(), pod.clone());
        forwards.spawn(async move {
            if let Err(e) = shared.backend.port_forward(&pod, port, pipe).await {
                let message = forward_error(port, &pod, &e);
                tracing::warn!(message, "port-forward failed");
                error.write(Bytes::from(message)).await;
            }
            let _ = sent.await;
        });
    }
    loop {
        tokio::select! {
            next = forwards.join_next() => if next.is_none() { break },
            _ = closed.cancelled() => return,
        }
    }
    conn.close().await;
}
