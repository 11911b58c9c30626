//! Exec and attach over SPDY/3.1 against real processes, every protocol version.

mod streaming_support;

use std::time::Duration;

use berth_cri::streaming::{AttachRequest, Status, StreamingConfig, StreamingServer};
use streaming_support::spdy_client::{
    ClientStream, CommandStreams as Streams, SpdyClient, connect,
    open_command_streams as open_streams,
};
use streaming_support::*;

const V4: &str = "v4.channel.k8s.io";

/// An exec of `cmd` over SPDY v4, its streams opened like kubectl's (a
/// terminal also gets the resize stream).
async fn exec_session(
    server: &StreamingServer,
    cmd: &[&str],
    stdin: bool,
    stderr: bool,
    tty: bool,
) -> (SpdyClient, Streams) {
    let url = exec_url(server, cmd, stdin, stderr, tty);
    let (client, _) = connect(&url, &[V4], false).await.unwrap();
    let streams = open_streams(&client, stdin, stderr, tty).await;
    (client, streams)
}

/// An exec of a command that sleeps until killed, stdin open; with its pid.
async fn sleeper_session(
    server: &StreamingServer,
    backend: &ProcessBackend,
) -> (SpdyClient, Streams, u32) {
    let cmd = ["sh", "-c", "exec sleep 1000"];
    let (client, streams) = exec_session(server, &cmd, true, false, false).await;
    (client, streams, first_pid(backend).await)
}

async fn status_of(error: &mut ClientStream) -> Status {
    let report = error.read_to_end().await.expect("error stream finished");
    serde_json::from_slice(&report)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&report)))
}

#[tokio::test]
async fn exec_echoes_stdin_and_reports_success() {
    let (server, _) = default_server().await;
    let (client, reply) = connect(
        &exec_url(&server, &["cat"], true, false, false),
        &[V4],
        false,
    )
    .await
    .unwrap();
    assert_eq!(reply.header("X-Stream-Protocol-Version"), Some(V4));
    assert_eq!(reply.header("Upgrade"), Some("SPDY/3.1"));
    let mut s = open_streams(&client, true, false, false).await;
    let stdin = s.stdin.as_ref().unwrap();
    stdin.write(b"hello over spdy\n").await;
    stdin.close();
    assert_eq!(s.stdout.read_to_end().await.unwrap(), b"hello over spdy\n");
    let status = status_of(&mut s.error).await;
    assert_eq!(status.status, "Success");
    assert_eq!(status.exit_code(), Some(0));
}

#[tokio::test]
async fn exit_code_and_stderr_are_reported_separately() {
    let (server, _) = default_server().await;
    let (client, mut s) = exec_session(
        &server,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        true,
        false,
    )
    .await;
    assert_eq!(s.stdout.read_to_end().await.unwrap(), b"out\n");
    assert_eq!(
        s.stderr.as_mut().unwrap().read_to_end().await.unwrap(),
        b"err\n"
    );
    let status = status_of(&mut s.error).await;
    assert_eq!(status.status, "Failure");
    assert_eq!(status.reason, "NonZeroExitCode");
    assert_eq!(
        status.details.as_ref().unwrap().causes[0].reason,
        "ExitCode"
    );
    assert_eq!(status.exit_code(), Some(3));
    // Then the server says GOAWAY and closes the connection.
    assert_eq!(s.error.read_to_end().await, None);
    assert!(client.got_goaway());
}

#[tokio::test]
async fn every_protocol_version_reports_exit_status_its_way() {
    let (server, _) = default_server().await;
    for version in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let url = exec_url(
            &server,
            &["sh", "-c", "echo $0; exit 5"],
            false,
            false,
            false,
        );
        let (client, reply) = connect(&url, &[version], false).await.unwrap();
        assert_eq!(reply.header("X-Stream-Protocol-Version"), Some(version));
        let mut s = open_streams(&client, false, false, false).await;
        assert_eq!(s.stdout.read_to_end().await.unwrap(), b"sh\n", "{version}");
        // Before v4 the error stream carries only the failure message, not JSON.
        let report = String::from_utf8(s.error.read_to_end().await.unwrap()).unwrap();
        assert!(report.contains("exit code 5"), "{version}: {report}");
        assert!(!report.starts_with('{'), "{version}: {report}");

        let url = exec_url(&server, &["true"], false, false, false);
        let (client, _) = connect(&url, &[version], false).await.unwrap();
        let mut s = open_streams(&client, false, false, false).await;
        assert_eq!(s.stdout.read_to_end().await.unwrap(), b"");
        assert_eq!(
            s.error.read_to_end().await.unwrap(),
            b"",
            "{version}: success is silent"
        );
    }
}

#[tokio::test]
async fn client_preference_picks_the_version() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["true"], false, false, false);
    let (_, reply) = connect(&url, &["v9.channel.k8s.io", "v2.channel.k8s.io", V4], false)
        .await
        .unwrap();
    assert_eq!(
        reply.header("X-Stream-Protocol-Version"),
        Some("v2.channel.k8s.io")
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_internal_error() {
    let (server, _) = default_server().await;
    let (_client, mut s) = exec_session(&server, &["no-such-command"], false, false, false).await;
    let status = status_of(&mut s.error).await;
    assert_eq!(status.reason, "InternalError");
    assert_eq!(status.code, Some(500));
    assert!(
        status.message.contains("executable file not found"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn tty_resize_events_reach_the_backend() {
    let (server, backend) = default_server().await;
    let (_client, mut s) = exec_session(&server, &["cat"], true, false, true).await;
    let resize = s.resize.as_ref().unwrap();
    resize.write(br#"{"Width":80,"Height":24}"#).await;
    resize.write(b"\n{\"Width\":132,\"Height\":43}\n").await;
    wait_for("two resize events", || {
        backend.resizes.lock().unwrap().len() == 2
    })
    .await;
    let sizes = backend.resizes.lock().unwrap().clone();
    assert_eq!((sizes[0].width, sizes[0].height), (80, 24));
    assert_eq!((sizes[1].width, sizes[1].height), (132, 43));
    s.stdin.as_ref().unwrap().close();
    assert_eq!(s.stdout.read_to_end().await.unwrap(), b"");
    assert_eq!(status_of(&mut s.error).await.exit_code(), Some(0));
}

#[tokio::test]
async fn attach_connects_to_the_container_process() {
    let (server, _) = default_server().await;
    let url = server
        .get_attach(AttachRequest {
            container_id: "ctr".into(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .unwrap();
    assert!(url.contains("/attach/"), "{url}");
    let (client, _) = connect(&url, &[V4], false).await.unwrap();
    let mut s = open_streams(&client, true, false, false).await;
    s.stdin.as_ref().unwrap().write(b"attached\n").await;
    s.stdin.as_ref().unwrap().close();
    assert_eq!(s.stdout.read_to_end().await.unwrap(), b"attached\n");
    assert_eq!(status_of(&mut s.error).await.status, "Success");
}

#[tokio::test]
async fn no_common_protocol_is_forbidden_and_lists_ours() {
    let (server, _) = default_server().await;
    // A fresh URL for each attempt: a refused upgrade may have used up its token.
    let refused = async |headers: &[(&str, &str)]| {
        let url = exec_url(&server, &["true"], false, false, false);
        let (reply, mut socket) = http_request(&url, "POST", headers).await.unwrap();
        let body = read_body(&reply, &mut socket).await.unwrap();
        (reply, body)
    };
    let (reply, body) = refused(&[
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
    ])
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.headers_named("X-Accepted-Stream-Protocol-Versions"),
        [
            V4,
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io"
        ]
    );
    assert!(body.contains("unable to negotiate protocol"), "{body}");

    let (reply, body) = refused(&[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]).await;
    assert_eq!(reply.status, 400);
    assert!(
        body.contains("X-Stream-Protocol-Version is required"),
        "{body}"
    );

    let url = exec_url(&server, &["true"], false, false, false);
    let (reply, _) = http_request(&url, "POST", &[("X-Stream-Protocol-Version", V4)])
        .await
        .unwrap();
    assert_eq!(reply.status, 400, "no upgrade headers");
}

#[tokio::test]
async fn tokens_are_one_time_and_unknown_ones_are_not_found() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["true"], false, false, false);
    connect(&url, &[V4], false).await.unwrap();
    let second = connect(&url, &[V4], false).await.unwrap_err();
    assert!(second.to_string().contains("404"), "{second}");

    let unknown = format!("{}/exec/AAAAAAAAAAA", server.base_url());
    assert!(
        connect(&unknown, &[V4], false)
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );

    // A token is bound to its kind of request.
    let url = exec_url(&server, &["true"], false, false, false);
    let as_attach = url.replace("/exec/", "/attach/");
    assert!(
        connect(&as_attach, &[V4], false)
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );
}

#[tokio::test]
async fn expired_tokens_are_not_found() {
    let config = StreamingConfig {
        token_ttl: Duration::ZERO,
        ..Default::default()
    };
    let (server, _) = start_server(config).await;
    let url = exec_url(&server, &["true"], false, false, false);
    assert!(
        connect(&url, &[V4], false)
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );
}

async fn large_transfer(flow_control: bool) {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["cat"], true, false, false);
    let (client, _) = connect(&url, &[V4], flow_control).await.unwrap();
    let mut s = open_streams(&client, true, false, false).await;
    let data = payload(8 * 1024 * 1024);
    let expected = sha256(&data);
    let stdin = s.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write(&data).await;
        stdin.close();
    });
    let echoed = s.stdout.read_to_end().await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), 8 * 1024 * 1024);
    assert_eq!(sha256(&echoed), expected);
    assert_eq!(status_of(&mut s.error).await.exit_code(), Some(0));
    assert!(
        !client.window_violated(),
        "server sent beyond the granted window"
    );
}

#[tokio::test]
async fn large_transfer_keeps_spdy_flow_control_windows() {
    large_transfer(true).await;
}

#[tokio::test]
async fn large_transfer_works_with_peers_that_ignore_windows() {
    large_transfer(false).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_ends_the_command() {
    let (server, backend) = default_server().await;
    let idle_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let (client, mut s) = exec_session(
        &server,
        &["sh", "-c", "read line; echo got $line; exec sleep 1000"],
        true,
        false,
        false,
    )
    .await;
    s.stdin.as_ref().unwrap().write(b"x\n").await;
    let mut seen = Vec::new();
    while seen != b"got x\n" {
        match s.stdout.next().await {
            Some(streaming_support::spdy_client::Event::Data(d)) => seen.extend_from_slice(&d),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pid = backend.pids.lock().unwrap()[0];
    client.disconnect();
    assert_session_cleaned_up(server, pid, idle_tasks).await;
}

#[tokio::test]
async fn pings_are_answered() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["cat"], true, false, false);
    let (client, _) = connect(&url, &[V4], false).await.unwrap();
    client.send_raw(berth_cri::streaming::spdy::Frame::Ping { id: 1 });
    client.send_raw(berth_cri::streaming::spdy::Frame::Ping { id: 3 });
    wait_for("two ping replies", || client.ping_replies() == 2).await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let config = StreamingConfig {
        stream_idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (server, backend) = start_server(config).await;
    let (_client, mut s, pid) = sleeper_session(&server, &backend).await;
    // No traffic: the server gives up on the connection and the command with it.
    assert_eq!(s.stdout.read_to_end().await, None);
    wait_killed(pid).await;
}

#[tokio::test]
async fn clients_that_do_not_open_their_streams_are_dropped() {
    let config = StreamingConfig {
        stream_creation_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (server, backend) = start_server(config).await;
    let url = exec_url(&server, &["true"], true, false, false);
    let (client, _) = connect(&url, &[V4], false).await.unwrap();
    // Only the error stream of the three expected.
    let mut error = client.open(&[("streamType", "error")]);
    error.expect_reply().await;
    assert_eq!(
        error.read_to_end().await,
        None,
        "connection closed without a status"
    );
    assert!(backend.pids.lock().unwrap().is_empty(), "nothing ran");
}

#[tokio::test]
async fn unknown_and_duplicate_streams_are_refused() {
    let (server, _) = default_server().await;
    let url = exec_url(&server, &["cat"], true, false, false);
    let (client, _) = connect(&url, &[V4], false).await.unwrap();
    let mut bogus = client.open(&[("streamType", "video")]);
    assert!(matches!(
        bogus.next().await,
        Some(streaming_support::spdy_client::Event::Reset(_))
    ));
    let mut error = client.open(&[("streamType", "error")]);
    error.expect_reply().await;
    let mut again = client.open(&[("streamType", "error")]);
    assert!(matches!(
        again.next().await,
        Some(streaming_support::spdy_client::Event::Reset(_))
    ));
    let stdin = client.open(&[("streamType", "stdin")]);
    let mut stdout = client.open(&[("streamType", "stdout")]);
    stdin.write(b"still works\n").await;
    stdin.close();
    stdout.expect_reply().await;
    assert_eq!(stdout.read_to_end().await.unwrap(), b"still works\n");
    assert_eq!(status_of(&mut error).await.exit_code(), Some(0));
}

#[tokio::test]
async fn output_stops_at_the_window_the_client_granted() {
    let (server, _) = default_server().await;
    let url = exec_url(
        &server,
        &["head", "-c", "1048576", "/dev/zero"],
        false,
        false,
        false,
    );
    let (client, _) = connect(&url, &[V4], true).await.unwrap();
    let mut s = open_streams(&client, false, false, false).await;
    // Not reading yet: the server fills the 64 KiB window and must stop there.
    wait_for("a full window of output", || {
        client.unacknowledged(s.stdout.id) >= 64 * 1024
    })
    .await;
    assert!(
        !client.window_violated(),
        "server sent beyond the granted window"
    );
    assert_eq!(s.stdout.read_to_end().await.unwrap().len(), 1024 * 1024);
    assert_eq!(status_of(&mut s.error).await.exit_code(), Some(0));
    assert!(
        !client.window_violated(),
        "server sent beyond the granted window"
    );
}

#[tokio::test]
async fn shutdown_ends_active_sessions() {
    let (server, backend) = default_server().await;
    let (_client, mut s, pid) = sleeper_session(&server, &backend).await;
    shut_down(server).await;
    assert_eq!(s.stdout.read_to_end().await, None, "connection closed");
    wait_killed(pid).await;
}
