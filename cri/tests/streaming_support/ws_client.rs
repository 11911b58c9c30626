//! WebSocket client helpers (tokio-tungstenite) for the k8s channel protocols.

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use super::split_url;

pub type Ws = WebSocketStream<TcpStream>;

/// Opens `url` (http://) as a WebSocket offering `protocols`; `Err(status)` when the
/// server refuses the upgrade.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Ws, Option<String>), u16> {
    let (authority, _) = split_url(url);
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    let socket = TcpStream::connect(&authority).await.unwrap();
    match client_async(request, socket).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, protocol))
        }
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

/// Sends `data` on `channel` in binary framing.
pub async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    ws.send(Message::binary(frame)).await.unwrap();
}

/// Collects every message per channel until the server closes; decodes base64 framing.
pub async fn collect(ws: &mut Ws, base64: bool, channels: usize) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = vec![Vec::new(); channels];
    while let Some(message) = ws.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data.to_vec(),
            Ok(Message::Text(text)) => text.as_bytes().to_vec(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let (channel, payload) = if base64 {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(&data[1..])
                .unwrap();
            (usize::from(data[0] - b'0'), payload)
        } else {
            (usize::from(data[0]), data[1..].to_vec())
        };
        out[channel].extend_from_slice(&payload);
    }
    out
}
