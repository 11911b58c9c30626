//! A minimal client of the Kubernetes streaming protocols over WebSocket, as
//! kubectl speaks them to a CRI streaming server: the remote command protocol
//! (`v4.channel.k8s.io`, which port forwarding uses too: each binary frame starts with a channel byte,
//! 0 stdin, 1 stdout, 2 stderr, 3 error) and port forwarding (two channels per
//! port, data 2n and error 2n+1, each opened by the server with the port
//! number as two little-endian bytes).

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const CHANNEL_V4: &str = "v4.channel.k8s.io";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
/// Terminal sizes, JSON `{"Width":W,"Height":H}` (tty sessions).
pub const RESIZE: u8 = 4;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket over TLS to a streaming server of the daemon.
pub type TlsSocket = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The upgrade request for a streaming URL (http(s):// becomes ws(s)://)
/// asking for `protocol`.
fn upgrade_request(
    url: &str,
    protocol: &str,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut request = ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    Ok(request)
}

fn check_protocol(
    response: &tokio_tungstenite::tungstenite::handshake::client::Response,
    protocol: &str,
) -> anyhow::Result<()> {
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    anyhow::ensure!(chosen == Some(protocol), "server chose protocol {chosen:?}");
    Ok(())
}

/// Opens the streaming URL a CRI Exec/Attach/PortForward call returned
/// asking for `protocol`.
pub async fn connect(url: &str, protocol: &str) -> anyhow::Result<Socket> {
    let request = upgrade_request(url, protocol)?;
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("WebSocket upgrade of {url}"))?;
    check_protocol(&response, protocol)?;
    Ok(socket)
}

/// Opens an https:// streaming URL, trusting the certificates of `roots`.
pub async fn connect_tls(
    url: &str,
    protocol: &str,
    roots: rustls::RootCertStore,
) -> anyhow::Result<TlsSocket> {
    let parsed = url::Url::parse(url)?;
    anyhow::ensure!(parsed.scheme() == "https", "{url} is not https");
    let host = parsed.host_str().context("URL without host")?.to_string();
    let port = parsed.port_or_known_default().context("URL without port")?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {url}"))?;
    let (socket, response) = tokio_tungstenite::client_async(upgrade_request(url, protocol)?, tls)
        .await
        .with_context(|| format!("WebSocket upgrade of {url}"))?;
    check_protocol(&response, protocol)?;
    Ok(socket)
}

/// What a remote command produced by the time the server closed the stream.
#[derive(Debug, Default)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The v4 status JSON from the error channel.
    pub status: Option<serde_json::Value>,
}

impl CommandOutput {
    /// The exit code the status reports: 0 on Success, the NonZeroExitCode cause otherwise.
    pub fn exit_code(&self) -> Option<i64> {
        let status = self.status.as_ref()?;
        if status["status"] == "Success" {
            return Some(0);
        }
        status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Reads frames until the server closes, sorting them by channel. `until`
/// may end the read early once enough stdout arrived (attach streams never end).
pub async fn collect<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    until: impl Fn(&CommandOutput) -> bool,
) -> anyhow::Result<CommandOutput> {
    let mut output = CommandOutput::default();
    while let Some(message) = socket.next().await {
        let data = match message? {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDOUT => output.stdout.extend_from_slice(payload),
            STDERR => output.stderr.extend_from_slice(payload),
            ERROR if !payload.is_empty() => {
                output.status = Some(serde_json::from_slice(payload).context("error channel JSON")?)
            }
            _ => {}
        }
        if until(&output) {
            break;
        }
    }
    Ok(output)
}

/// Sends `data` on the remote command channel `channel`.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    channel: u8,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    socket.send(Message::Binary(frame.into())).await?;
    Ok(())
}

/// Reads the next binary frame of port-forward `channel`, skipping others.
pub async fn next_on<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    channel: u8,
) -> anyhow::Result<Vec<u8>> {
    while let Some(message) = socket.next().await {
        if let Message::Binary(data) = message?
            && data.first() == Some(&channel)
        {
            return Ok(data[1..].to_vec());
        }
    }
    anyhow::bail!("stream closed before a frame on channel {channel}")
}
