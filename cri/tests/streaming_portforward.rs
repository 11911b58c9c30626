//! Port forwarding over SPDY (data/error pairs) and WebSocket (per-port channels) to a
//! TCP echo server on 127.0.0.1.

mod streaming_support;

use berth_cri::streaming::{PortForwardRequest, StreamingServer};
use futures_util::StreamExt;
use streaming_support::spdy_client::{Event, connect};
use streaming_support::ws_client;
use streaming_support::*;
use tokio_tungstenite::tungstenite::Message;

fn forward_url(server: &StreamingServer, port: u16) -> String {
    server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "sandbox-1".into(),
            port: vec![i32::from(port)],
        })
        .unwrap()
}

#[tokio::test]
async fn spdy_forwards_connections_by_request_id() {
    let (server, backend) = default_server().await;
    let port = echo_server().await;
    let (client, reply) = connect(&forward_url(&server, port), &["portforward.k8s.io"], true)
        .await
        .unwrap();
    assert_eq!(
        reply.header("X-Stream-Protocol-Version"),
        Some("portforward.k8s.io")
    );
    let port_text = port.to_string();
    let mut pairs = Vec::new();
    for request_id in ["0", "1"] {
        let mut error = client.open(&[
            ("streamType", "error"),
            ("port", &port_text),
            ("requestID", request_id),
        ]);
        let mut data = client.open(&[
            ("streamType", "data"),
            ("port", &port_text),
            ("requestID", request_id),
        ]);
        error.expect_reply().await;
        data.expect_reply().await;
        pairs.push((error, data));
    }
    // Two concurrent connections, each carrying 2 MiB through the echo server.
    let mut checks = Vec::new();
    for (n, (mut error, mut data)) in pairs.into_iter().enumerate() {
        checks.push(tokio::spawn(async move {
            let sent = payload(2 * 1024 * 1024 + n);
            let writer = data.writer();
            let (echoed, _) = tokio::join!(data.read_to_end(), async {
                writer.write(&sent).await;
                writer.close();
            });
            assert_eq!(sha256(&echoed.unwrap()), sha256(&sent));
            assert_eq!(error.read_to_end().await.unwrap(), b"", "no error reported");
        }));
    }
    for check in checks {
        check.await.unwrap();
    }
    assert!(!client.window_violated());
    let ports = backend.forwarded_ports.lock().unwrap().clone();
    assert_eq!(
        ports,
        [
            ("sandbox-1".to_owned(), port),
            ("sandbox-1".to_owned(), port)
        ]
    );
}

#[tokio::test]
async fn spdy_pairs_streams_of_clients_without_request_ids() {
    let (server, _) = default_server().await;
    let port = echo_server().await;
    let (client, _) = connect(&forward_url(&server, port), &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let port_text = port.to_string();
    let mut error = client.open(&[("streamType", "error"), ("port", &port_text)]);
    let mut data = client.open(&[("streamType", "data"), ("port", &port_text)]);
    error.expect_reply().await;
    data.expect_reply().await;
    data.write(b"legacy").await;
    data.close();
    assert_eq!(data.read_to_end().await.unwrap(), b"legacy");
}

#[tokio::test]
async fn spdy_reports_forwarding_errors_and_refuses_bad_headers() {
    let (server, _) = default_server().await;
    // Nothing listens on this port once the listener is gone.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (client, _) = connect(
        &forward_url(&server, closed_port),
        &["portforward.k8s.io"],
        false,
    )
    .await
    .unwrap();
    let mut missing_port = client.open(&[("streamType", "data"), ("requestID", "9")]);
    assert!(matches!(missing_port.next().await, Some(Event::Reset(_))));
    let mut bad_type = client.open(&[("streamType", "stdin"), ("port", "80")]);
    assert!(matches!(bad_type.next().await, Some(Event::Reset(_))));

    let port_text = closed_port.to_string();
    let mut error = client.open(&[
        ("streamType", "error"),
        ("port", &port_text),
        ("requestID", "1"),
    ]);
    let mut data = client.open(&[
        ("streamType", "data"),
        ("port", &port_text),
        ("requestID", "1"),
    ]);
    error.expect_reply().await;
    data.expect_reply().await;
    let message = String::from_utf8(error.read_to_end().await.unwrap()).unwrap();
    assert!(
        message.contains(&format!(
            "error forwarding port {closed_port} to pod sandbox-1"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn websocket_forwards_each_queried_port() {
    let (server, backend) = default_server().await;
    let (first, second) = (echo_server().await, echo_server().await);
    let url = format!("{}?ports={first},{second}", forward_url(&server, first));
    let (mut ws, protocol) = ws_client::connect(&url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    // Each channel opens with the port it serves, little-endian.
    let mut prefixes = Vec::new();
    for _ in 0..4 {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(data) => prefixes.push(data.to_vec()),
            other => panic!("{other:?}"),
        }
    }
    let [lo1, hi1] = first.to_le_bytes();
    let [lo2, hi2] = second.to_le_bytes();
    assert_eq!(
        prefixes,
        [
            vec![0, lo1, hi1],
            vec![1, lo1, hi1],
            vec![2, lo2, hi2],
            vec![3, lo2, hi2]
        ]
    );

    ws_client::send(&mut ws, 0, b"to first").await;
    ws_client::send(&mut ws, 2, b"to second").await;
    let (mut got_first, mut got_second) = (Vec::new(), Vec::new());
    while got_first != b"to first" || got_second != b"to second" {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(data) if data[0] == 0 => got_first.extend_from_slice(&data[1..]),
            Message::Binary(data) if data[0] == 2 => got_second.extend_from_slice(&data[1..]),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(backend.forwarded_ports.lock().unwrap().len(), 2);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_port_forward_checks_ports_and_protocols() {
    let (server, _) = default_server().await;
    let url = forward_url(&server, 80);
    assert_eq!(
        ws_client::connect(&url, &["v4.channel.k8s.io"]).await.err(),
        Some(400),
        "no ports"
    );
    let url = format!("{}?port=80", forward_url(&server, 80));
    assert_eq!(
        ws_client::connect(&url, &["v5.channel.k8s.io"]).await.err(),
        Some(403)
    );
    let url = format!("{}?port=80", forward_url(&server, 80));
    let (reply, _) = http_request(
        &url,
        "POST",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        reply.status, 403,
        "SPDY port-forward speaks only portforward.k8s.io"
    );
}

#[tokio::test]
async fn websocket_base64_port_forward_reports_errors_on_the_error_channel() {
    use base64::Engine;
    let (server, _) = default_server().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("{}?port={closed_port}", forward_url(&server, closed_port));
    let (mut ws, protocol) = ws_client::connect(&url, &["v4.base64.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut error = Vec::new();
    let mut first = [true, true];
    while let Some(Ok(message)) = ws.next().await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => break,
            other => panic!("{other:?}"),
        };
        let channel = usize::from(text.as_bytes()[0] - b'0');
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&text[1..])
            .unwrap();
        if first[channel] {
            assert_eq!(
                payload,
                closed_port.to_le_bytes(),
                "channel {channel} starts with the port"
            );
            first[channel] = false;
        } else if channel == 1 {
            error.extend_from_slice(&payload);
        }
    }
    let message = String::from_utf8(error).unwrap();
    assert!(
        message.contains(&format!("error forwarding port {closed_port}")),
        "{message}"
    );
}
