//! Streaming over TLS (`enable_tls_streaming` with the operator's certificate
//! and key): Exec returns an https:// URL, and a client that trusts the
//! certificate's CA runs the command through it.

use berth_proto::runtime::v1::ExecRequest;
use berth_tests::cri::tls::StreamingPki;
use berth_tests::cri::{self, EndpointKind, websocket};

#[test]
fn exec_through_the_tls_streaming_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = StreamingPki::write(dir.path())?;
    let cert = pki.cert_file.display().to_string();
    let key = pki.key_file.display().to_string();
    let flags = [
        "--enable-tls-streaming",
        "--stream-tls-cert-file",
        cert.as_str(),
        "--stream-tls-key-file",
        key.as_str(),
    ];
    cri::run_with_flags(&flags, |mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: the reference daemon's config has no TLS streaming");
            return Ok(());
        }
        let config = env.container_config("tls-exec", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("tls-stream", config).await?;
        let url = env
            .runtime
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), "echo secret; exit 7".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .url;
        assert!(url.starts_with("https://"), "{url}");
        // A plain-text client gets nowhere.
        assert!(
            websocket::connect(
                &url.replacen("https://", "http://", 1),
                websocket::CHANNEL_V4
            )
            .await
            .is_err()
        );
        let mut socket = websocket::connect_tls(&url, websocket::CHANNEL_V4, pki.roots).await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert_eq!(output.stdout, b"secret\n");
        assert_eq!(output.exit_code(), Some(7), "{:?}", output.status);
        Ok(())
    })
}
