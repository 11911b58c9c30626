//! A loopback proxy in front of a registry that records what reaches it: either HTTP
//! (one request per connection; each request's arrival time and headers are kept, and
//! scripted answers such as a 429 with Retry-After replace the registry's for the first
//! matching requests) or plain TCP (connections counted, bytes relayed untouched, for
//! TLS registries).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Answer the first `times` requests whose path contains `path_contains` with this
/// status and these headers instead of forwarding them.
#[derive(Clone, Debug)]
pub struct ScriptedAnswer {
    pub path_contains: String,
    pub status: &'static str,
    pub headers: Vec<(String, String)>,
    pub times: usize,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The scripted status it got, or None when it was forwarded.
    pub scripted: Option<&'static str>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<SeenRequest>>,
    answers: Mutex<Vec<ScriptedAnswer>>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// An HTTP proxy to `upstream` (`host:port`) with these scripted answers.
    pub fn http(upstream: &str, answers: Vec<ScriptedAnswer>) -> anyhow::Result<Proxy> {
        Self::start(upstream, Some(answers))
    }

    /// A TCP relay to `upstream` that only counts connections.
    pub fn tcp(upstream: &str) -> anyhow::Result<Proxy> {
        Self::start(upstream, None)
    }

    fn start(upstream: &str, answers: Option<Vec<ScriptedAnswer>>) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let http = answers.is_some();
        let shared = Arc::new(Shared {
            answers: Mutex::new(answers.unwrap_or_default()),
            ..Default::default()
        });
        let (upstream, state) = (upstream.to_string(), shared.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (upstream, state) = (upstream.clone(), state.clone());
                std::thread::spawn(move || {
                    let _ = if http {
                        serve_http(client, &upstream, &state)
                    } else {
                        relay(client, &upstream)
                    };
                });
            }
        });
        Ok(Proxy { port, shared })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests seen so far (HTTP mode), in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_http(client: TcpStream, upstream: &str, state: &Shared) -> anyhow::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let scripted = {
        let mut answers = state
            .answers
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        answers
            .iter_mut()
            .find(|a| a.times > 0 && path.contains(&a.path_contains))
            .map(|a| {
                a.times -= 1;
                a.clone()
            })
    };
    state
        .requests
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(SeenRequest {
            at: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            scripted: scripted.as_ref().map(|a| a.status),
        });
    let mut client = client;
    if let Some(answer) = scripted {
        let mut response = format!("HTTP/1.1 {}\r\n", answer.status);
        for (name, value) in &answer.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(response.as_bytes())?;
        return Ok(());
    }
    // One request per connection keeps the relay simple: the registry closes after
    // answering, and the client opens a new connection for its next request.
    let mut server = TcpStream::connect(upstream)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("connection"))
    {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes())?;
    std::io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

fn relay(client: TcpStream, upstream: &str) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let _ = std::io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}
