//! A SPDY/3.1 client the way kubectl's remotecommand/portforward clients use it, on
//! berth-cri's framer: for tests of the streaming server, alone or behind berth-cri. With `flow_control` it announces its window, grants window only as
//! the test consumes data, records any DATA beyond that window, and keeps the server's
//! windows when sending; without it it behaves like moby/spdystream (no windows at all).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use berth_cri::streaming::spdy::frame::{DEFAULT_WINDOW, FLAG_FIN, SETTINGS_INITIAL_WINDOW_SIZE};
use berth_cri::streaming::spdy::{Frame, FrameDecoder, FrameEncoder, Headers};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

/// Path and authority of a URL the server issued.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("path"));
    (authority.to_owned(), path.to_owned())
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_start: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends a request with the given extra headers and reads the response head; the socket
/// stays open for an upgraded protocol.
pub async fn http_request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> Result<(HttpReply, TcpStream)> {
    let (authority, path) = split_url(url);
    let mut socket = TcpStream::connect(&authority).await?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    let end = loop {
        let mut byte = [0u8; 1];
        if socket.read(&mut byte).await? == 0 {
            bail!("connection closed before the response head");
        }
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break buf.len();
        }
    };
    let text = String::from_utf8(buf[..end].to_vec())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().context("status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("status code")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((
        HttpReply {
            status,
            headers,
            body_start: Vec::new(),
        },
        socket,
    ))
}

#[derive(Debug, PartialEq)]
pub enum Event {
    Reply,
    Data(Bytes),
    Fin,
    Reset(u32),
}

#[derive(Default)]
struct Windows {
    session: i64,
    streams: HashMap<u32, i64>,
}

struct Inner {
    out: mpsc::UnboundedSender<Frame>,
    streams: Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>,
    send_windows: Mutex<Windows>,
    window_changed: Notify,
    received_unacked: Mutex<Windows>,
    pub window_violated: AtomicBool,
    goaway: AtomicBool,
    ping_replies: AtomicU32,
    flow_control: bool,
}

#[derive(Clone)]
pub struct SpdyClient {
    inner: Arc<Inner>,
    next_id: Arc<AtomicU32>,
    tasks: Vec<tokio::task::AbortHandle>,
}

pub struct ClientStream {
    pub id: u32,
    events: mpsc::UnboundedReceiver<Event>,
    inner: Arc<Inner>,
}

/// Upgrades `url` to SPDY/3.1 offering `protocols`; fails unless the server switches.
pub async fn connect(
    url: &str,
    protocols: &[&str],
    flow_control: bool,
) -> Result<(SpdyClient, HttpReply)> {
    let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for protocol in protocols {
        headers.push(("X-Stream-Protocol-Version", protocol));
    }
    let (reply, socket) = http_request(url, "POST", &headers).await?;
    ensure!(
        reply.status == 101,
        "server answered {} instead of switching",
        reply.status
    );
    let (out, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    let inner = Arc::new(Inner {
        out,
        streams: Mutex::new(HashMap::new()),
        send_windows: Mutex::new(Windows {
            session: i64::from(DEFAULT_WINDOW),
            streams: HashMap::new(),
        }),
        window_changed: Notify::new(),
        received_unacked: Mutex::new(Windows::default()),
        window_violated: AtomicBool::new(false),
        goaway: AtomicBool::new(false),
        ping_replies: AtomicU32::new(0),
        flow_control,
    });
    let (mut rd, mut wr) = socket.into_split();
    let writer = tokio::spawn(async move {
        let mut encoder = FrameEncoder::new().unwrap();
        let mut buf = BytesMut::new();
        while let Some(frame) = out_rx.recv().await {
            encoder.encode(&frame, &mut buf).unwrap();
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    });
    if flow_control {
        let _ = inner.out.send(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)],
        });
    }
    let state = inner.clone();
    let reader = tokio::spawn(async move {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                state.on_frame(frame);
            }
            buf.reserve(64 * 1024);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        state.streams.lock().unwrap().clear();
    });
    let tasks = vec![reader.abort_handle(), writer.abort_handle()];
    Ok((
        SpdyClient {
            inner,
            next_id: Arc::new(AtomicU32::new(1)),
            tasks,
        },
        reply,
    ))
}

impl Inner {
    fn event(&self, id: u32, event: Event) {
        if let Some(tx) = self.streams.lock().unwrap().get(&id) {
            let _ = tx.send(event);
        }
    }

    fn on_frame(&self, frame: Frame) {
        match frame {
            Frame::SynReply {
                stream_id, flags, ..
            } => {
                self.event(stream_id, Event::Reply);
                if flags & FLAG_FIN != 0 {
                    self.event(stream_id, Event::Fin);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if self.flow_control && !data.is_empty() {
                    let mut unacked = self.received_unacked.lock().unwrap();
                    unacked.session += data.len() as i64;
                    let stream = unacked.streams.entry(stream_id).or_default();
                    *stream += data.len() as i64;
                    if *stream > i64::from(DEFAULT_WINDOW)
                        || unacked.session > i64::from(DEFAULT_WINDOW)
                    {
                        self.window_violated.store(true, Ordering::SeqCst);
                    }
                }
                if !data.is_empty() {
                    self.event(stream_id, Event::Data(data));
                }
                if flags & FLAG_FIN != 0 {
                    self.event(stream_id, Event::Fin);
                }
            }
            Frame::RstStream { stream_id, status } => self.event(stream_id, Event::Reset(status)),
            Frame::WindowUpdate { stream_id, delta } => {
                let mut windows = self.send_windows.lock().unwrap();
                if stream_id == 0 {
                    windows.session += i64::from(delta);
                } else {
                    *windows
                        .streams
                        .entry(stream_id)
                        .or_insert(i64::from(DEFAULT_WINDOW)) += i64::from(delta);
                }
                drop(windows);
                self.window_changed.notify_waiters();
            }
            Frame::GoAway { .. } => self.goaway.store(true, Ordering::SeqCst),
            Frame::Ping { .. } => {
                self.ping_replies.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

impl SpdyClient {
    /// Opens a stream with the given headers (SYN_STREAM).
    pub fn open(&self, headers: &[(&str, &str)]) -> ClientStream {
        let id = self.next_id.fetch_add(2, Ordering::SeqCst);
        let (tx, events) = mpsc::unbounded_channel();
        self.inner.streams.lock().unwrap().insert(id, tx);
        let headers = headers
            .iter()
            .fold(Headers::new(), |h, (n, v)| h.with(n, v));
        let _ = self.inner.out.send(Frame::SynStream {
            stream_id: id,
            associated_stream_id: 0,
            priority: 0,
            flags: 0,
            headers,
        });
        ClientStream {
            id,
            events,
            inner: self.inner.clone(),
        }
    }

    pub fn send_raw(&self, frame: Frame) {
        let _ = self.inner.out.send(frame);
    }

    /// Whether the server ever sent more than the window we granted.
    pub fn window_violated(&self) -> bool {
        self.inner.window_violated.load(Ordering::SeqCst)
    }

    /// Bytes received on the stream that the test has not consumed (window not granted back).
    pub fn unacknowledged(&self, stream_id: u32) -> i64 {
        let unacked = self.inner.received_unacked.lock().unwrap();
        unacked.streams.get(&stream_id).copied().unwrap_or(0)
    }

    pub fn ping_replies(&self) -> u32 {
        self.inner.ping_replies.load(Ordering::SeqCst)
    }

    pub fn got_goaway(&self) -> bool {
        self.inner.goaway.load(Ordering::SeqCst)
    }

    /// Drops the connection abruptly (both socket halves close with their tasks).
    pub fn disconnect(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ClientStream {
    /// Next event; consuming DATA grants the window back when flow control is on.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.events.recv().await?;
        if let Event::Data(data) = &event {
            if self.inner.flow_control {
                let delta = data.len() as u32;
                {
                    let mut unacked = self.inner.received_unacked.lock().unwrap();
                    unacked.session -= i64::from(delta);
                    *unacked.streams.entry(self.id).or_default() -= i64::from(delta);
                }
                let _ = self.inner.out.send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                });
                let _ = self.inner.out.send(Frame::WindowUpdate {
                    stream_id: 0,
                    delta,
                });
            }
        }
        Some(event)
    }

    pub async fn expect_reply(&mut self) {
        assert_eq!(
            self.next().await,
            Some(Event::Reply),
            "stream {} not accepted",
            self.id
        );
    }

    /// Data until FIN; `None` if the stream was reset or the connection dropped first.
    pub async fn read_to_end(&mut self) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            match self.next().await? {
                Event::Data(data) => all.extend_from_slice(&data),
                Event::Fin => return Some(all),
                Event::Reset(_) => return None,
                Event::Reply => {}
            }
        }
    }

    /// Reads data until what arrived so far contains `needle`; returns all of it.
    /// Fails if the stream ends first or nothing matches within a minute.
    pub async fn read_until(&mut self, needle: &str) -> Result<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let event = tokio::time::timeout_at(deadline, self.next())
                .await
                .with_context(|| {
                    format!(
                        "waiting for {needle:?}, got {:?}",
                        String::from_utf8_lossy(&seen)
                    )
                })?;
            match event {
                Some(Event::Data(data)) => seen.extend_from_slice(&data),
                Some(Event::Reply) => {}
                other => bail!(
                    "stream {} ended ({other:?}) before {needle:?}: {:?}",
                    self.id,
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }

    /// A handle that writes on this stream while another task reads it.
    pub fn writer(&self) -> StreamWriter {
        StreamWriter {
            id: self.id,
            inner: self.inner.clone(),
        }
    }

    pub async fn write(&self, data: &[u8]) {
        self.writer().write(data).await
    }

    pub fn close(&self) {
        self.writer().close()
    }
}

pub struct StreamWriter {
    id: u32,
    inner: Arc<Inner>,
}

impl StreamWriter {
    /// Sends data, keeping the server's windows when flow control is on.
    pub async fn write(&self, mut data: &[u8]) {
        while !data.is_empty() {
            let mut take = data.len().min(16 * 1024);
            if self.inner.flow_control {
                loop {
                    let notified = self.inner.window_changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    {
                        let mut windows = self.inner.send_windows.lock().unwrap();
                        let stream = *windows
                            .streams
                            .entry(self.id)
                            .or_insert(i64::from(DEFAULT_WINDOW));
                        let available = stream.min(windows.session);
                        if available > 0 {
                            take = take.min(available as usize);
                            windows.session -= take as i64;
                            *windows.streams.get_mut(&self.id).unwrap() -= take as i64;
                            break;
                        }
                    }
                    notified.await;
                }
            }
            let _ = self.inner.out.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(&data[..take]),
            });
            data = &data[take..];
        }
    }

    /// Half-closes our side (FIN).
    pub fn close(&self) {
        let _ = self.inner.out.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
    }
}

/// The streams of an exec or attach session, opened like kubectl: error first, then
/// stdin, stdout, stderr, resize; each accepted by the server.
pub struct CommandStreams {
    pub error: ClientStream,
    pub stdin: Option<ClientStream>,
    pub stdout: ClientStream,
    pub stderr: Option<ClientStream>,
    pub resize: Option<ClientStream>,
}

pub async fn open_command_streams(
    client: &SpdyClient,
    stdin: bool,
    stderr: bool,
    resize: bool,
) -> CommandStreams {
    let mut error = client.open(&[("streamType", "error")]);
    let mut stdin = stdin.then(|| client.open(&[("streamType", "stdin")]));
    let mut stdout = client.open(&[("streamType", "stdout")]);
    let mut stderr = stderr.then(|| client.open(&[("streamType", "stderr")]));
    let mut resize = resize.then(|| client.open(&[("streamType", "resize")]));
    error.expect_reply().await;
    for stream in [
        stdin.as_mut(),
        Some(&mut stdout),
        stderr.as_mut(),
        resize.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        stream.expect_reply().await;
    }
    CommandStreams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    }
}

/// Writes a terminal size on the resize stream, as kubectl does (one JSON object each).
pub async fn send_resize(resize: &ClientStream, width: u16, height: u16) {
    let size = serde_json::json!({ "Width": width, "Height": height });
    resize.write(size.to_string().as_bytes()).await;
}

impl std::fmt::Debug for SpdyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpdyClient")
    }
}
