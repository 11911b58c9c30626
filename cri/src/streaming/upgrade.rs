//! HTTP/1.1 connection upgrades to SPDY/3.1 and WebSocket, with subprotocol negotiation.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::StreamingBackend;
use super::protocol::{
    HEADER_ACCEPTED_PROTOCOL_VERSIONS, HEADER_PROTOCOL_VERSION, HEADER_WEBSOCKET_PROTOCOL,
    header_values, is_upgrade_to, negotiate,
};
use super::server::{HttpResponse, Shared, text_response};
use super::spdy::UPGRADE_TOKEN;

pub(crate) type Upgraded = TokioIo<hyper::upgrade::Upgraded>;
pub(crate) type WebSocket = WebSocketStream<Upgraded>;

pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    is_upgrade_to(headers, "websocket")
}

// Both outcomes are complete HTTP responses; boxing one of them buys nothing.
#[allow(clippy::result_large_err)]
/// httpstream.Handshake plus the SPDY upgrade checks; on success the 101 response to send.
pub(crate) fn spdy(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<(&'static str, HttpResponse), HttpResponse> {
    let client = header_values(headers, HEADER_PROTOCOL_VERSION);
    if client.is_empty() {
        return Err(text_response(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {HEADER_PROTOCOL_VERSION} is required\n"),
        ));
    }
    let Some(protocol) = negotiate(&client, supported) else {
        let mut response = text_response(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]\n",
                client.join(" "),
                supported.join(" ")
            ),
        );
        for accepted in supported {
            response.headers_mut().append(
                HEADER_ACCEPTED_PROTOCOL_VERSIONS,
                HeaderValue::from_static(accepted),
            );
        }
        return Err(response);
    };
    if !is_upgrade_to(headers, UPGRADE_TOKEN) {
        return Err(text_response(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request\n",
        ));
    }
    let mut response = text_response(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = response.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    h.insert(HEADER_PROTOCOL_VERSION, HeaderValue::from_static(protocol));
    Ok((protocol, response))
}

#[allow(clippy::result_large_err)]
/// The WebSocket handshake with k8s channel subprotocols; `""` when the client asked
/// for none (binary channels, v1 semantics).
pub(crate) fn websocket(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<(&'static str, HttpResponse), HttpResponse> {
    let Some(key) = headers.get("sec-websocket-key") else {
        return Err(text_response(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key\n",
        ));
    };
    if headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(text_response(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (need 13)\n",
        ));
    }
    let client = header_values(headers, HEADER_WEBSOCKET_PROTOCOL);
    let protocol = if client.is_empty() {
        ""
    } else {
        negotiate(&client, supported).ok_or_else(|| {
            text_response(
                StatusCode::FORBIDDEN,
                format!(
                    "requested protocol(s) are not supported: [{}]; supports [{}]\n",
                    client.join(" "),
                    supported.join(" ")
                ),
            )
        })?
    };
    let mut response = text_response(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = response.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", accept);
    }
    if !protocol.is_empty() {
        h.insert(
            HEADER_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    Ok((protocol, response))
}

/// Runs `session` on the connection once hyper hands it over after the 101.
pub(crate) fn on_upgrade<B, F, Fut>(shared: &Arc<Shared<B>>, request: Request<Incoming>, session: F)
where
    B: StreamingBackend,
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    shared.tasks.spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::warn!(error = %e, "streaming connection upgrade failed");
                return;
            }
        };
        tokio::select! {
            _ = session(upgraded) => {}
            _ = shutdown.cancelled() => {}
        }
    });
}

pub(crate) async fn into_websocket(io: Upgraded) -> WebSocket {
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}
