//! A SPDY/3.1 server session on an upgraded connection.
//!
//! A reader task decodes frames and routes DATA to per-stream queues; a writer task owns
//! the socket's write half and the outgoing zlib stream. Streams opened by the peer are
//! handed to the protocol handler, which accepts (SYN_REPLY) or refuses (RST_STREAM)
//! them and turns accepted ones into `DuplexStream` ends for the backend.
//!
//! Flow control: incoming DATA is acknowledged with WINDOW_UPDATE (stream and session)
//! once the backend has taken it. Outgoing DATA honours the peer's windows once the
//! peer shows it keeps them (it sent SETTINGS_INITIAL_WINDOW_SIZE or WINDOW_UPDATE).
//! moby/spdystream — the SPDY stack of kubectl, kube-apiserver and kubelet — neither
//! announces nor updates windows and relies on TCP backpressure; enforcing the 64 KiB
//! default window against it would stall every transfer after 64 KiB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{
    DEFAULT_WINDOW, FLAG_FIN, Frame, FrameDecoder, FrameEncoder, Headers,
    SETTINGS_INITIAL_WINDOW_SIZE, goaway, rst,
};

/// Largest DATA payload we send (what Go's io.Copy hands spdystream, too).
const MAX_DATA_CHUNK: usize = 32 * 1024;
/// Bytes a stream may hold between the socket and the backend before the reader waits.
/// Larger than the window we implicitly grant (64 KiB), so a peer that keeps windows
/// never blocks the reader; peers that do not are held back by TCP.
const INBOUND_BUFFER: usize = 256 * 1024;
/// Capacity of the duplex pipes between the session and the backend.
const PIPE_CAPACITY: usize = 64 * 1024;
/// How long a graceful close waits for queued frames to reach the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

type Inbound = (Bytes, OwnedSemaphorePermit);

enum Outgoing {
    Frame(Frame),
    Close,
}

struct StreamState {
    send_window: i64,
    inbound: Option<mpsc::UnboundedSender<Inbound>>,
    inbound_budget: Arc<Semaphore>,
    reset: CancellationToken,
}

struct Flow {
    enforce: bool,
    initial_window: i64,
    session_window: i64,
    last_stream_id: u32,
    streams: HashMap<u32, StreamState>,
}

struct Inner {
    data_tx: mpsc::Sender<Outgoing>,
    control_tx: mpsc::UnboundedSender<Frame>,
    flow: Mutex<Flow>,
    window_changed: Notify,
    /// Cancelled when the session is over (peer gone, idle, closed by us).
    closed: CancellationToken,
    writer_done: CancellationToken,
    started: Instant,
    last_activity_ms: AtomicU64,
}

/// Cloneable control of one session.
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<Inner>,
}

/// A stream the peer opened; accept or refuse it.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    handle: SessionHandle,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    reset: CancellationToken,
}

/// A stream we replied to.
pub struct AcceptedStream {
    pub id: u32,
    pub headers: Headers,
    handle: SessionHandle,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    reset: CancellationToken,
}

/// Starts the session tasks; returns its handle and the streams the peer opens.
pub fn start<IO>(io: IO, idle_timeout: Duration) -> (SessionHandle, mpsc::Receiver<IncomingStream>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (data_tx, data_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (stream_tx, stream_rx) = mpsc::channel(16);
    let handle = SessionHandle {
        inner: Arc::new(Inner {
            data_tx,
            control_tx,
            flow: Mutex::new(Flow {
                enforce: false,
                initial_window: i64::from(DEFAULT_WINDOW),
                session_window: i64::from(DEFAULT_WINDOW),
                last_stream_id: 0,
                streams: HashMap::new(),
            }),
            window_changed: Notify::new(),
            closed: CancellationToken::new(),
            writer_done: CancellationToken::new(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }),
    };
    let (rd, wr) = tokio::io::split(io);
    tokio::spawn(handle.clone().write_loop(wr, control_rx, data_rx));
    tokio::spawn(handle.clone().read_loop(rd, stream_tx, idle_timeout));
    (handle, stream_rx)
}

impl SessionHandle {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        // A poisoned lock only means another task panicked mid-update; the counters stay usable.
        self.inner.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        let ms = self.inner.started.elapsed().as_millis() as u64;
        self.inner.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves when the session is over.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Cancelled when the session is over.
    pub fn closed_token(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Sends GOAWAY after everything queued so far, flushes and closes the connection.
    pub async fn close(&self) {
        if self.inner.data_tx.send(Outgoing::Close).await.is_ok() {
            tokio::select! {
                _ = self.inner.writer_done.cancelled() => {}
                _ = self.inner.closed.cancelled() => {}
                _ = tokio::time::sleep(CLOSE_GRACE) => {}
            }
        }
        self.inner.closed.cancel();
    }

    /// Tears the connection down at once.
    pub fn abort(&self) {
        self.inner.closed.cancel();
    }

    /// Tears the connection down when the guard is dropped: the session tasks must not
    /// outlive the handler that owns the session (server shutdown drops handlers).
    pub fn abort_on_drop(&self) -> tokio_util::sync::DropGuard {
        self.inner.closed.clone().drop_guard()
    }

    fn control(&self, frame: Frame) {
        // Fails only once the writer is gone, and then nothing can be sent anyway.
        let _ = self.inner.control_tx.send(frame);
    }

    async fn send(&self, frame: Frame) -> bool {
        self.inner
            .data_tx
            .send(Outgoing::Frame(frame))
            .await
            .is_ok()
    }

    /// Gives back receive window for `len` bytes the backend took (or we dropped).
    fn acknowledge(&self, stream_id: u32, len: usize) {
        if len == 0 || self.is_closed() {
            return;
        }
        let delta = len as u32;
        self.control(Frame::WindowUpdate { stream_id, delta });
        self.control(Frame::WindowUpdate {
            stream_id: 0,
            delta,
        });
    }

    /// Waits until the peer's windows allow sending up to `want` bytes on the stream.
    async fn reserve(
        &self,
        stream_id: u32,
        want: usize,
        reset: &CancellationToken,
    ) -> Option<usize> {
        loop {
            let notified = self.inner.window_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut flow = self.flow();
                let Flow {
                    enforce,
                    session_window,
                    streams,
                    ..
                } = &mut *flow;
                let stream = streams.get_mut(&stream_id)?;
                if reset.is_cancelled() {
                    return None;
                }
                // Windows are counted even while not enforced, so they are right
                // if the peer starts keeping them later.
                let available = stream.send_window.min(*session_window);
                if !*enforce || available > 0 {
                    let take = if *enforce {
                        want.min(available as usize)
                    } else {
                        want
                    };
                    stream.send_window -= take as i64;
                    *session_window -= take as i64;
                    return Some(take);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = reset.cancelled() => return None,
            }
        }
    }

    /// Sends `data` on a stream within the peer's windows, `fin` after the last byte.
    async fn send_data(
        &self,
        stream_id: u32,
        mut data: Bytes,
        fin: bool,
        reset: &CancellationToken,
    ) -> bool {
        while !data.is_empty() {
            let want = data.len().min(MAX_DATA_CHUNK);
            let Some(take) = self.reserve(stream_id, want, reset).await else {
                return false;
            };
            let chunk = data.split_to(take);
            let flags = if fin && data.is_empty() { FLAG_FIN } else { 0 };
            if !self
                .send(Frame::Data {
                    stream_id,
                    flags,
                    data: chunk,
                })
                .await
            {
                return false;
            }
            if flags == FLAG_FIN {
                return true;
            }
        }
        if fin {
            return self
                .send(Frame::Data {
                    stream_id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                })
                .await;
        }
        true
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        self,
        mut wr: W,
        mut control_rx: mpsc::UnboundedReceiver<Frame>,
        mut data_rx: mpsc::Receiver<Outgoing>,
    ) {
        let result: Result<(), SessionError> = async {
            let mut encoder = FrameEncoder::new()?;
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = self.inner.closed.cancelled() => return Ok(()),
                    Some(frame) = control_rx.recv() => Outgoing::Frame(frame),
                    next = data_rx.recv() => next.unwrap_or(Outgoing::Close),
                };
                let mut closing = false;
                let mut next = Some(next);
                // Encode this frame and whatever else is ready into the same write.
                while let Some(outgoing) = next.take() {
                    match outgoing {
                        Outgoing::Frame(frame) => encoder.encode(&frame, &mut buf)?,
                        Outgoing::Close => {
                            let last_good_stream_id = self.flow().last_stream_id;
                            let goaway = Frame::GoAway {
                                last_good_stream_id,
                                status: goaway::OK,
                            };
                            encoder.encode(&goaway, &mut buf)?;
                            closing = true;
                            break;
                        }
                    }
                    if buf.len() < 64 * 1024 {
                        next = match control_rx.try_recv() {
                            Ok(frame) => Some(Outgoing::Frame(frame)),
                            Err(_) => data_rx.try_recv().ok(),
                        };
                    }
                }
                wr.write_all(&buf).await?;
                wr.flush().await?;
                buf.clear();
                self.touch();
                if closing {
                    wr.shutdown().await?;
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "spdy session writer stopped");
            self.inner.closed.cancel();
        }
        self.inner.writer_done.cancel();
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self,
        mut rd: R,
        stream_tx: mpsc::Sender<IncomingStream>,
        idle_timeout: Duration,
    ) {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let result: Result<(), super::SpdyError> = async {
            loop {
                while let Some(frame) = decoder.decode(&mut buf)? {
                    self.on_frame(frame, &stream_tx).await?;
                }
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                let idle_since = Duration::from_millis(self.inner.last_activity_ms.load(Ordering::Relaxed));
                let deadline = self.inner.started + idle_since + idle_timeout;
                tokio::select! {
                    read = rd.read_buf(&mut buf) => {
                        if read? == 0 {
                            return Ok(());
                        }
                        self.touch();
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        let idle_since = Duration::from_millis(self.inner.last_activity_ms.load(Ordering::Relaxed));
                        if Instant::now() >= self.inner.started + idle_since + idle_timeout {
                            tracing::debug!("spdy session idle for {idle_timeout:?}, closing");
                            return Ok(());
                        }
                    }
                    _ = self.inner.closed.cancelled() => return Ok(()),
                }
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "spdy session reader stopped");
            if let super::SpdyError::Protocol(_) | super::SpdyError::Compression(_) = e {
                let last_good_stream_id = self.flow().last_stream_id;
                self.control(Frame::GoAway {
                    last_good_stream_id,
                    status: goaway::PROTOCOL_ERROR,
                });
            }
        }
        self.inner.closed.cancel();
        // Dropping the senders tells every stream reader the peer is gone.
        self.flow().streams.clear();
        self.inner.window_changed.notify_waiters();
    }

    async fn on_frame(
        &self,
        frame: Frame,
        stream_tx: &mpsc::Sender<IncomingStream>,
    ) -> Result<(), super::SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                self.on_syn_stream(stream_id, flags, headers, stream_tx)
                    .await
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                self.on_data(stream_id, flags, data).await;
                Ok(())
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(stream) = self.flow().streams.remove(&stream_id) {
                    stream.reset.cancel();
                }
                self.inner.window_changed.notify_waiters();
                Ok(())
            }
            Frame::Settings { entries, .. } => {
                let mut flow = self.flow();
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let delta = i64::from(value) - flow.initial_window;
                        flow.initial_window = i64::from(value);
                        flow.enforce = true;
                        for stream in flow.streams.values_mut() {
                            stream.send_window += delta;
                        }
                    }
                }
                drop(flow);
                self.inner.window_changed.notify_waiters();
                Ok(())
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut flow = self.flow();
                flow.enforce = true;
                if stream_id == 0 {
                    flow.session_window += i64::from(delta);
                } else if let Some(stream) = flow.streams.get_mut(&stream_id) {
                    stream.send_window += i64::from(delta);
                }
                drop(flow);
                self.inner.window_changed.notify_waiters();
                Ok(())
            }
            // Peer-initiated pings carry odd ids; answer them with the same id.
            Frame::Ping { id } if id % 2 == 1 => {
                self.control(Frame::Ping { id });
                Ok(())
            }
            Frame::Ping { .. }
            | Frame::GoAway { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. } => Ok(()),
        }
    }

    async fn on_syn_stream(
        &self,
        stream_id: u32,
        flags: u8,
        headers: Headers,
        stream_tx: &mpsc::Sender<IncomingStream>,
    ) -> Result<(), super::SpdyError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let reset = self.inner.closed.child_token();
        {
            let mut flow = self.flow();
            if stream_id % 2 == 0 || stream_id <= flow.last_stream_id {
                drop(flow);
                self.control(Frame::RstStream {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                });
                return Ok(());
            }
            if flow.streams.contains_key(&stream_id) {
                drop(flow);
                self.control(Frame::RstStream {
                    stream_id,
                    status: rst::STREAM_IN_USE,
                });
                return Ok(());
            }
            flow.last_stream_id = stream_id;
            let send_window = flow.initial_window;
            flow.streams.insert(
                stream_id,
                StreamState {
                    send_window,
                    inbound: (flags & FLAG_FIN == 0).then_some(tx),
                    inbound_budget: Arc::new(Semaphore::new(INBOUND_BUFFER)),
                    reset: reset.clone(),
                },
            );
        }
        let incoming = IncomingStream {
            id: stream_id,
            headers,
            handle: self.clone(),
            inbound: rx,
            reset,
        };
        if let Err(refused) = stream_tx.send(incoming).await {
            refused.0.refuse(rst::REFUSED_STREAM);
        }
        Ok(())
    }

    async fn on_data(&self, stream_id: u32, flags: u8, data: Bytes) {
        let target = {
            let mut flow = self.flow();
            match flow.streams.get_mut(&stream_id) {
                None => None,
                Some(stream) => {
                    let sender = stream.inbound.clone();
                    if flags & FLAG_FIN != 0 {
                        stream.inbound = None;
                    }
                    Some(sender.map(|tx| (tx, stream.inbound_budget.clone())))
                }
            }
        };
        let len = data.len();
        match target {
            None => {
                if stream_id <= self.flow().last_stream_id {
                    // Data in flight on a stream already reset still counts against the
                    // session window: give it back.
                    if len > 0 && !self.is_closed() {
                        self.control(Frame::WindowUpdate {
                            stream_id: 0,
                            delta: len as u32,
                        });
                    }
                } else {
                    self.control(Frame::RstStream {
                        stream_id,
                        status: rst::INVALID_STREAM,
                    });
                }
            }
            Some(None) => {
                if len > 0 {
                    self.control(Frame::RstStream {
                        stream_id,
                        status: rst::STREAM_ALREADY_CLOSED,
                    });
                }
            }
            Some(Some((tx, budget))) => {
                if len == 0 {
                    return;
                }
                let permits = len.min(INBOUND_BUFFER) as u32;
                let Ok(permit) = budget.acquire_many_owned(permits).await else {
                    return;
                };
                if tx.send((data, permit)).is_err() {
                    // The backend no longer reads this stream: discard, but give the window back.
                    self.acknowledge(stream_id, len);
                }
            }
        }
    }
}

impl IncomingStream {
    /// Sends SYN_REPLY; DATA we send later on this stream follows it on the wire.
    pub async fn accept(self) -> AcceptedStream {
        self.handle
            .send(Frame::SynReply {
                stream_id: self.id,
                flags: 0,
                headers: Headers::new(),
            })
            .await;
        AcceptedStream {
            id: self.id,
            headers: self.headers,
            handle: self.handle,
            inbound: self.inbound,
            reset: self.reset,
        }
    }

    /// Refuses the stream with RST_STREAM.
    pub fn refuse(self, status: u32) {
        self.handle.flow().streams.remove(&self.id);
        self.reset.cancel();
        self.handle.control(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }
}

impl AcceptedStream {
    /// Data the peer sends on this stream, for the backend to read.
    pub fn into_reader(self) -> DuplexStream {
        let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
        tokio::spawn(pump_in(
            self.handle,
            self.id,
            self.inbound,
            ours,
            self.reset,
        ));
        backend
    }

    /// A pipe whose writes become DATA on this stream, FIN when the backend drops it.
    /// The task ends once everything written has been queued to the socket.
    pub fn into_writer(self) -> (DuplexStream, JoinHandle<()>) {
        let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
        let id = self.id;
        // Anything the peer sends on an output stream is read and dropped.
        tokio::spawn(pump_in(
            self.handle.clone(),
            id,
            self.inbound,
            tokio::io::sink(),
            self.reset.clone(),
        ));
        let task = tokio::spawn(pump_out(self.handle, id, ours, self.reset));
        (backend, task)
    }

    /// Both directions on one pipe (port forwarding); the task ends once everything the
    /// backend wrote has been queued to the socket.
    pub fn into_duplex(self) -> (DuplexStream, JoinHandle<()>) {
        let (backend, ours) = tokio::io::duplex(PIPE_CAPACITY);
        let (ours_rd, ours_wr) = tokio::io::split(ours);
        let (id, handle) = (self.id, self.handle);
        let sent = CancellationToken::new();
        let outbound = tokio::spawn({
            let (handle, reset, sent) = (handle.clone(), self.reset.clone(), sent.clone());
            async move {
                pump_out(handle, id, ours_rd, reset).await;
                sent.cancel();
            }
        });
        tokio::spawn(async move {
            pump_in(handle.clone(), id, self.inbound, ours_wr, self.reset).await;
            // The stream's state goes once both directions are finished.
            sent.cancelled().await;
            handle.flow().streams.remove(&id);
        });
        (backend, outbound)
    }

    /// Writes directly on the stream (the error channel).
    pub async fn write(&self, data: Bytes) -> bool {
        self.handle
            .send_data(self.id, data, false, &self.reset)
            .await
    }

    /// Half-closes our side of the stream.
    pub async fn finish(&self) -> bool {
        self.handle
            .send_data(self.id, Bytes::new(), true, &self.reset)
            .await
    }
}

async fn pump_in<W: AsyncWrite + Unpin>(
    handle: SessionHandle,
    id: u32,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    mut out: W,
    reset: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = inbound.recv() => next,
            _ = reset.cancelled() => return,
        };
        let Some((chunk, permit)) = next else { break };
        let len = chunk.len();
        let written = tokio::select! {
            written = out.write_all(&chunk) => written.is_ok(),
            _ = reset.cancelled() => return,
        };
        drop(permit);
        handle.acknowledge(id, len);
        if !written {
            // The backend closed its end: keep acknowledging what still arrives.
            while let Some((chunk, _permit)) = inbound.recv().await {
                handle.acknowledge(id, chunk.len());
            }
            return;
        }
    }
    let _ = out.shutdown().await;
}

async fn pump_out<R: AsyncRead + Unpin>(
    handle: SessionHandle,
    id: u32,
    mut src: R,
    reset: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(MAX_DATA_CHUNK);
    loop {
        buf.clear();
        let read = tokio::select! {
            read = src.read_buf(&mut buf) => read,
            _ = reset.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => {
                handle.send_data(id, Bytes::new(), true, &reset).await;
                return;
            }
            Ok(_) => {
                let chunk = buf.split().freeze();
                if !handle.send_data(id, chunk, false, &reset).await {
                    return;
                }
                buf.reserve(MAX_DATA_CHUNK);
            }
        }
    }
}

struct SessionError(super::SpdyError);

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<super::SpdyError> for SessionError {
    fn from(e: super::SpdyError) -> Self {
        Self(e)
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        Self(super::SpdyError::Io(e))
    }
}
