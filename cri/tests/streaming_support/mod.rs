//! Shared parts of the streaming tests: a backend running real processes, a SPDY/3.1
//! client (on the library's framer) and HTTP/WebSocket helpers.
#![allow(dead_code)]

pub mod backend;
pub mod fake_apiserver;
pub mod spdy_client;
pub mod ws_client;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_cri::streaming::{ExecRequest, StreamingConfig, StreamingServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use backend::ProcessBackend;

pub async fn start_server(config: StreamingConfig) -> (StreamingServer, Arc<ProcessBackend>) {
    let backend = Arc::new(ProcessBackend::default());
    let server = StreamingServer::start(config, backend.clone())
        .await
        .unwrap();
    (server, backend)
}

pub async fn default_server() -> (StreamingServer, Arc<ProcessBackend>) {
    start_server(StreamingConfig::default()).await
}

/// The URL of an exec session of `cmd` in container "ctr", stdout always on.
pub fn exec_url(
    server: &StreamingServer,
    cmd: &[&str],
    stdin: bool,
    stderr: bool,
    tty: bool,
) -> String {
    server
        .get_exec(ExecRequest {
            container_id: "ctr".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr,
        })
        .unwrap()
}

/// The pid of the first process the backend started, once it has started.
pub async fn first_pid(backend: &ProcessBackend) -> u32 {
    wait_for("the process to start", || {
        !backend.pids.lock().unwrap().is_empty()
    })
    .await;
    backend.pids.lock().unwrap()[0]
}

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

/// Reads what follows the head of a non-upgraded response until the server closes or
/// `content-length` bytes arrived.
pub async fn read_body(reply: &HttpReply, socket: &mut TcpStream) -> Result<String> {
    let len: usize = reply.header("content-length").unwrap_or("0").parse()?;
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).await?;
    Ok(String::from_utf8(body)?)
}

/// Waits for `condition` with a deadline (no fixed sleeps as synchronisation).
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP echo server on 127.0.0.1 for port-forward tests.
pub async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = socket.into_split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    port
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
