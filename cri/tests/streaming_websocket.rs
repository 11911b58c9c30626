//! Exec and attach over WebSocket channels: v5 (close signal), v4, base64 and v1 framing.

mod streaming_support;

use berth_cri::streaming::Status;
use futures_util::{SinkExt, StreamExt};
use streaming_support::ws_client::{collect, connect, send};
use streaming_support::*;
use tokio_tungstenite::tungstenite::Message;

const STDIN: u8 = 0;
const STDOUT: usize = 1;
const STDERR: usize = 2;
const ERROR: usize = 3;

fn status(report: &[u8]) -> Status {
    serde_json::from_slice(report)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(report)))
}

#[tokio::test]
async fn v5_half_closes_stdin_with_the_close_signal() {
    let (server, _) = default_server().await;
    let url = exec_url(
        &server,
        &["sh", "-c", "cat; echo err >&2; exit 7"],
        true,
        true,
        false,
    );
    let (mut ws, protocol) = connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("v5.channel.k8s.io"));
    // The server first announces itself with an empty stdout message.
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8])
    );
    send(&mut ws, STDIN, b"hello\n").await;
    ws.send(Message::binary(vec![255u8, STDIN])).await.unwrap();
    let channels = collect(&mut ws, false, 5).await;
    assert_eq!(channels[STDOUT], b"hello\n");
    assert_eq!(channels[STDERR], b"err\n");
    assert_eq!(status(&channels[ERROR]).exit_code(), Some(7));
}

#[tokio::test]
async fn v4_reports_json_status() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["echo", "hi"], false, false, false);
    let (mut ws, protocol) = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    let channels = collect(&mut ws, false, 5).await;
    assert_eq!(channels[STDOUT], b"hi\n");
    assert_eq!(status(&channels[ERROR]).status, "Success");
}

#[tokio::test]
async fn base64_protocols_use_text_frames() {
    let (server, _) = default_server().await;
    for (protocol, json) in [
        ("v4.base64.channel.k8s.io", true),
        ("base64.channel.k8s.io", false),
    ] {
        let url = exec_url(
            &server,
            &["sh", "-c", "echo hi; exit 2"],
            false,
            false,
            false,
        );
        let (mut ws, chosen) = connect(&url, &[protocol]).await.unwrap();
        assert_eq!(chosen.as_deref(), Some(protocol));
        match ws.next().await.unwrap().unwrap() {
            Message::Text(text) => assert_eq!(text.as_str(), "1", "{protocol}: ready message"),
            other => panic!("{protocol}: {other:?}"),
        }
        let channels = collect(&mut ws, true, 5).await;
        assert_eq!(channels[STDOUT], b"hi\n", "{protocol}");
        if json {
            assert_eq!(status(&channels[ERROR]).exit_code(), Some(2));
        } else {
            let message = String::from_utf8(channels[ERROR].clone()).unwrap();
            assert!(message.contains("exit code 2"), "{message}");
        }
    }
}

#[tokio::test]
async fn v1_binary_framing_with_or_without_a_subprotocol() {
    let (server, _) = default_server().await;
    for offered in [&["channel.k8s.io"][..], &[]] {
        let url = exec_url(&server, &["sh", "-c", "cat; exit 1"], true, false, false);
        let (mut ws, chosen) = connect(&url, offered).await.unwrap();
        assert_eq!(chosen.as_deref(), offered.first().copied());
        send(&mut ws, STDIN, b"abc").await;
        // v1 has no half-close: read until the echo arrives, then close the connection.
        let mut echoed = Vec::new();
        while echoed != b"abc" {
            if let Message::Binary(data) = ws.next().await.unwrap().unwrap() {
                if data[0] == 1 {
                    echoed.extend_from_slice(&data[1..]);
                }
            }
        }
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn unsupported_subprotocols_are_forbidden() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["true"], false, false, false);
    assert_eq!(connect(&url, &["v9.channel.k8s.io"]).await.err(), Some(403));
    let unknown = format!("{}/exec/unknown", server.base_url());
    assert_eq!(
        connect(&unknown, &["v5.channel.k8s.io"]).await.err(),
        Some(404)
    );
}

#[tokio::test]
async fn resize_channel_reaches_the_backend() {
    let (server, backend) = default_server().await;
    let url = exec_url(&server, &["cat"], true, false, true);
    let (mut ws, _) = connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    send(&mut ws, 4, br#"{"Width":100,"Height":30}"#).await;
    wait_for("the resize event", || {
        backend.resizes.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(backend.resizes.lock().unwrap()[0].width, 100);
    ws.send(Message::binary(vec![255u8, STDIN])).await.unwrap();
    let channels = collect(&mut ws, false, 5).await;
    assert_eq!(status(&channels[ERROR]).exit_code(), Some(0));
}

#[tokio::test]
async fn large_transfer_over_v5() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["cat"], true, false, false);
    let (ws, _) = connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    let data = payload(4 * 1024 * 1024);
    let expected = sha256(&data);
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(30 * 1024) {
            let mut frame = vec![STDIN];
            frame.extend_from_slice(chunk);
            sink.send(Message::binary(frame)).await.unwrap();
        }
        sink.send(Message::binary(vec![255u8, STDIN]))
            .await
            .unwrap();
        sink
    });
    let mut echoed = Vec::new();
    let mut report = Vec::new();
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Binary(data) if data[0] == 1 => echoed.extend_from_slice(&data[1..]),
            Message::Binary(data) if data[0] == 3 => report.extend_from_slice(&data[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    drop(writer.await.unwrap());
    assert_eq!(echoed.len(), 4 * 1024 * 1024);
    assert_eq!(sha256(&echoed), expected);
    assert_eq!(status(&report).exit_code(), Some(0));
}

#[tokio::test]
async fn a_dropped_websocket_ends_the_command() {
    let (server, backend) = default_server().await;
    let idle_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let url = exec_url(
        &server,
        &["sh", "-c", "exec sleep 1000"],
        true,
        false,
        false,
    );
    let (ws, _) = connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    let pid = first_pid(&backend).await;
    drop(ws);
    assert_session_cleaned_up(server, pid, idle_tasks).await;
}
