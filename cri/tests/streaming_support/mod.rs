//! Shared parts of the streaming tests: a backend running real processes, the SPDY/3.1
//! client of `berth_tests::cri::spdy` (on the library's framer) and HTTP/WebSocket
//! helpers.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod fake_apiserver;
pub mod ws_client;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use berth_cri::streaming::{ExecRequest, StreamingConfig, StreamingServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use backend::ProcessBackend;
pub use berth_tests::cri::spdy as spdy_client;
pub use berth_tests::cri::spdy::{HttpReply, http_request, split_url};

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

/// Waits until the session's process `pid` has been killed.
pub async fn wait_killed(pid: u32) {
    wait_for("the process to be killed", || backend::process_ended(pid)).await;
}

/// Shuts `server` down; its tasks must end within the deadline.
pub async fn shut_down(server: StreamingServer) {
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("server tasks ended");
}

/// After a client went away mid-session: its process `pid` is killed, every task
/// of the connection ends (back to the `idle_tasks` there were before it), and
/// the server then shuts down.
pub async fn assert_session_cleaned_up(server: StreamingServer, pid: u32, idle_tasks: usize) {
    wait_killed(pid).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    wait_for("the session tasks to end", || {
        metrics.num_alive_tasks() == idle_tasks
    })
    .await;
    shut_down(server).await;
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
