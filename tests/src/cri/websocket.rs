//! A minimal client of the Kubernetes streaming protocols over WebSocket, as
//! kubectl speaks them to a CRI streaming server: the remote command protocol
//! (`v4.channel.k8s.io`, which port forwarding uses too: each binary frame starts with a channel byte,
//! 0 stdin, 1 stdout, 2 stderr, 3 error) and port forwarding (two channels per
//! port, data 2n and error 2n+1, each opened by the server with the port
//! number as two little-endian bytes).

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
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

/// Opens the streaming URL a CRI Exec/Attach/PortForward call returned
/// (http:// becomes ws://) asking for `protocol`.
pub async fn connect(url: &str, protocol: &str) -> anyhow::Result<Socket> {
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut request = ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("WebSocket upgrade of {ws_url}"))?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    anyhow::ensure!(chosen == Some(protocol), "server chose protocol {chosen:?}");
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
pub async fn collect(
    socket: &mut Socket,
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
pub async fn send(socket: &mut Socket, channel: u8, data: &[u8]) -> anyhow::Result<()> {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    socket.send(Message::Binary(frame.into())).await?;
    Ok(())
}

/// Reads the next binary frame of port-forward `channel`, skipping others.
pub async fn next_on(socket: &mut Socket, channel: u8) -> anyhow::Result<Vec<u8>> {
    while let Some(message) = socket.next().await {
        if let Message::Binary(data) = message?
            && data.first() == Some(&channel)
        {
            return Ok(data[1..].to_vec());
        }
    }
    anyhow::bail!("stream closed before a frame on channel {channel}")
}
