//! The streaming server over TLS with an operator-supplied key pair.

mod streaming_support;

use std::sync::Arc;

use berth_cri::streaming::{ExecRequest, Status, StreamingConfig, TlsConfig};
use futures_util::StreamExt;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use streaming_support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn exec_over_websocket_on_https() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, generated.cert.pem()).unwrap();
    std::fs::write(&key_file, generated.key_pair.serialize_pem()).unwrap();
    let config = StreamingConfig {
        tls: Some(TlsConfig {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
        }),
        ..Default::default()
    };
    let (server, _) = start_server(config).await;
    let url = server
        .get_exec(ExecRequest {
            container_id: "ctr".into(),
            cmd: vec!["sh".into(), "-c".into(), "echo secret; exit 4".into()],
            stdout: true,
            ..Default::default()
        })
        .unwrap();
    assert!(url.starts_with("https://"), "{url}");

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(generated.cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = TcpStream::connect(server.local_addr()).await.unwrap();
    let name = ServerName::IpAddress(server.local_addr().ip().into());
    let tls = TlsConnector::from(Arc::new(client))
        .connect(name, socket)
        .await
        .unwrap();

    let mut request = url
        .replacen("https://", "wss://", 1)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = client_async(request, tls).await.unwrap();
    let (mut stdout, mut report) = (Vec::new(), Vec::new());
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Binary(data) if data[0] == 1 => stdout.extend_from_slice(&data[1..]),
            Message::Binary(data) if data[0] == 3 => report.extend_from_slice(&data[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    assert_eq!(stdout, b"secret\n");
    let status: Status = serde_json::from_slice(&report).unwrap();
    assert_eq!(status.exit_code(), Some(4));
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_nowhere() {
    let config = StreamingConfig {
        tls: Some(TlsConfig::default()),
        ..Default::default()
    };
    let (server, _) = start_server(config).await;
    let url = format!("http://{}/exec/whatever", server.local_addr());
    assert!(
        http_request(&url, "GET", &[]).await.is_err(),
        "no HTTP answer without TLS"
    );
}
