//! k8s channel multiplexing over one WebSocket (apiserver's wsstream): every message
//! starts with its channel number — a byte for binary protocols, an ASCII digit followed
//! by base64 for the `base64.` ones. v5 adds the client's half-close signal
//! `[255, channel]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::upgrade::WebSocket;

/// First byte of the v5 half-close signal.
const STREAM_CLOSE: u8 = 255;
const PIPE_CAPACITY: usize = 64 * 1024;
const MAX_CHUNK: usize = 32 * 1024;
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Direction of a channel as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// The client writes (stdin, resize).
    Read,
    /// The server writes (stdout, stderr, error).
    Write,
    /// Both (port-forward data).
    ReadWrite,
    /// Not requested: whatever arrives is dropped.
    Ignore,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    pub base64: bool,
    /// v5: the client may half-close a channel with `[255, channel]`.
    pub close_signal: bool,
}

enum Outgoing {
    Data(u8, Bytes),
    Close,
}

/// Sends messages on one channel.
#[derive(Clone)]
pub(crate) struct ChannelWriter {
    index: u8,
    tx: mpsc::Sender<Outgoing>,
}

/// What the handler gets per channel.
pub(crate) struct ChannelEnd {
    /// Read: the client's data; ReadWrite: both directions.
    pub backend: Option<DuplexStream>,
    pub writer: ChannelWriter,
    /// ReadWrite: the task carrying what the backend writes to the client.
    pub pump: Option<JoinHandle<()>>,
}

pub(crate) struct ChannelConn {
    pub ends: Vec<ChannelEnd>,
    tx: mpsc::Sender<Outgoing>,
    closed: CancellationToken,
    writer_done: CancellationToken,
}

struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

pub(crate) fn open(
    ws: WebSocket,
    framing: Framing,
    channels: &[Channel],
    idle_timeout: Duration,
) -> ChannelConn {
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(64);
    let closed = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut inbound: Vec<Option<WriteHalf<DuplexStream>>> = Vec::new();
    let mut ends = Vec::new();
    for (index, channel) in channels.iter().enumerate() {
        let writer = ChannelWriter {
            index: index as u8,
            tx: tx.clone(),
        };
        match channel {
            Channel::Write | Channel::Ignore => {
                inbound.push(None);
                ends.push(ChannelEnd {
                    backend: None,
                    writer,
                    pump: None,
                });
            }
            Channel::Read => {
                let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
                let (_, ours_wr) = tokio::io::split(ours);
                inbound.push(Some(ours_wr));
                ends.push(ChannelEnd {
                    backend: Some(backend),
                    writer,
                    pump: None,
                });
            }
            Channel::ReadWrite => {
                let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
                let (ours_rd, ours_wr) = tokio::io::split(ours);
                inbound.push(Some(ours_wr));
                let pump = tokio::spawn(pump_out(ours_rd, writer.clone(), closed.clone()));
                ends.push(ChannelEnd {
                    backend: Some(backend),
                    writer,
                    pump: Some(pump),
                });
            }
        }
    }
    tokio::spawn(write_loop(
        sink,
        rx,
        framing,
        closed.clone(),
        writer_done.clone(),
        activity.clone(),
    ));
    tokio::spawn(read_loop(
        stream,
        inbound,
        framing,
        closed.clone(),
        idle_timeout,
        activity,
    ));
    ChannelConn {
        ends,
        tx,
        closed,
        writer_done,
    }
}

impl Drop for ChannelConn {
    /// The connection's tasks end with the handler that owns it.
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl ChannelConn {
    pub fn closed_token(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Sends a close frame after everything queued, then ends the connection.
    pub async fn close(&self) {
        if self.tx.send(Outgoing::Close).await.is_ok() {
            tokio::select! {
                _ = self.writer_done.cancelled() => {}
                _ = self.closed.cancelled() => {}
                _ = tokio::time::sleep(CLOSE_GRACE) => {}
            }
        }
        self.closed.cancel();
    }
}

impl ChannelWriter {
    pub async fn write(&self, data: Bytes) -> bool {
        self.tx.send(Outgoing::Data(self.index, data)).await.is_ok()
    }

    /// A pipe whose writes become messages on this channel; the task ends at EOF.
    pub fn into_pipe(self, closed: CancellationToken) -> (DuplexStream, JoinHandle<()>) {
        let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
        (backend, tokio::spawn(pump_out(ours, self, closed)))
    }
}

async fn pump_out<R: tokio::io::AsyncRead + Unpin>(
    mut src: R,
    writer: ChannelWriter,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(MAX_CHUNK);
    loop {
        buf.reserve(MAX_CHUNK);
        let read = tokio::select! {
            read = src.read_buf(&mut buf) => read,
            _ = closed.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !writer.write(buf.split().freeze()).await {
                    return;
                }
            }
        }
    }
}

fn encode(framing: Framing, index: u8, data: &[u8]) -> Message {
    if framing.base64 {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0' + index));
        STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut frame = BytesMut::with_capacity(1 + data.len());
        frame.put_u8(index);
        frame.put_slice(data);
        Message::binary(frame.freeze())
    }
}

async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outgoing>,
    framing: Framing,
    closed: CancellationToken,
    writer_done: CancellationToken,
    activity: Arc<Activity>,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => break,
            next = rx.recv() => next.unwrap_or(Outgoing::Close),
        };
        let sent = match next {
            Outgoing::Data(index, data) => sink.send(encode(framing, index, &data)).await,
            Outgoing::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
                break;
            }
        };
        if sent.is_err() {
            closed.cancel();
            break;
        }
        activity.touch();
    }
    writer_done.cancel();
}

async fn read_loop<S, E>(
    mut stream: S,
    mut inbound: Vec<Option<WriteHalf<DuplexStream>>>,
    framing: Framing,
    closed: CancellationToken,
    idle_timeout: Duration,
    activity: Arc<Activity>,
) where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        let deadline = activity.idle_deadline(idle_timeout);
        let message = tokio::select! {
            message = stream.next() => message,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if Instant::now() >= activity.idle_deadline(idle_timeout) {
                    tracing::debug!("websocket idle for {idle_timeout:?}, closing");
                    break;
                }
                continue;
            }
            _ = closed.cancelled() => break,
        };
        let data: Bytes = match message {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Text(text))) => Bytes::copy_from_slice(text.as_bytes()),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                break;
            }
        };
        activity.touch();
        let Some(&first) = data.first() else { continue };
        if framing.close_signal && first == STREAM_CLOSE {
            match data.get(1) {
                Some(&channel) if data.len() == 2 => {
                    if let Some(slot) = inbound.get_mut(usize::from(channel)) {
                        if let Some(mut pipe) = slot.take() {
                            let _ = pipe.shutdown().await;
                        }
                    }
                }
                _ => tracing::debug!("malformed stream close signal"),
            }
            continue;
        }
        let (index, payload) = if framing.base64 {
            let Some(index) = first.checked_sub(b'0') else {
                continue;
            };
            match STANDARD.decode(&data[1..]) {
                Ok(payload) => (index, Bytes::from(payload)),
                Err(_) => continue,
            }
        } else {
            (first, data.slice(1..))
        };
        let Some(slot) = inbound.get_mut(usize::from(index)) else {
            continue;
        };
        let Some(pipe) = slot.as_mut() else { continue };
        let written = tokio::select! {
            written = pipe.write_all(&payload) => written.is_ok(),
            _ = closed.cancelled() => break,
        };
        if !written {
            *slot = None;
        }
    }
    closed.cancel();
}
