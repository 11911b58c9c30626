//! Streaming: Exec, Attach and PortForward URLs driven over WebSocket as
//! kubectl does (SPDY clients are not part of this suite yet).

use berth_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use berth_tests::cri::{self, websocket};

#[test]
#[ignore = "berth-cri does not serve Exec/Attach/PortForward yet (issue 6); passes against containerd with --run-ignored"]
fn exec_over_websocket_streams_output_and_exit_status() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("exec", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("ws-exec", config).await?;
        let exec = |cmd: &str| ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), cmd.into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let url = env
            .runtime
            .exec(exec("echo out; echo err >&2"))
            .await?
            .into_inner()
            .url;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.exit_code(), Some(0), "{:?}", output.status);

        let url = env.runtime.exec(exec("exit 3")).await?.into_inner().url;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert_eq!(output.exit_code(), Some(3), "{:?}", output.status);
        Ok(())
    })
}

#[test]
#[ignore = "berth-cri does not serve Exec/Attach/PortForward yet (issue 6); passes against containerd with --run-ignored"]
fn exec_over_websocket_forwards_stdin() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("stdin", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("ws-stdin", config).await?;
        let url = env
            .runtime
            .exec(ExecRequest {
                container_id: id,
                cmd: vec!["head".into(), "-n1".into()],
                tty: false,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .url;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        websocket::send(&mut socket, websocket::STDIN, b"typed line\n").await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert_eq!(output.stdout, b"typed line\n");
        Ok(())
    })
}

#[test]
#[ignore = "berth-cri does not serve Exec/Attach/PortForward yet (issue 6); passes against containerd with --run-ignored"]
fn attach_over_websocket_receives_the_container_output() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config(
            "ticker",
            &["sh", "-c", "while true; do echo tick; usleep 20000; done"],
        );
        let (_, _, id) = env.pod_with_container("ws-attach", config).await?;
        let url = env
            .runtime
            .attach(AttachRequest {
                container_id: id,
                stdin: false,
                tty: false,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .url;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        let output =
            websocket::collect(&mut socket, |o| o.stdout.windows(5).any(|w| w == b"tick\n"))
                .await?;
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("tick\n"),
            "{output:?}"
        );
        Ok(())
    })
}

#[test]
#[ignore = "berth-cri does not serve Exec/Attach/PortForward yet (issue 6); passes against containerd with --run-ignored"]
fn port_forward_over_websocket_reaches_a_port_in_the_pod() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config(
            "server",
            &["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && httpd -f -p 8080 -h /www"],
        );
        let (pod, _, id) = env.pod_with_container("ws-port-forward", config).await?;
        // Wait until the server listens (port 8080 is 1F90 in /proc/net/tcp*).
        let listening = "cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F90 '";
        env.exec_until_ok(&id, &["sh", "-c", listening]).await?;
        let url = env
            .runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![8080],
            })
            .await?
            .into_inner()
            .url;
        let separator = if url.contains('?') { '&' } else { '?' };
        let mut socket =
            websocket::connect(&format!("{url}{separator}port=8080"), websocket::CHANNEL_V4)
                .await?;
        // Each channel opens with the port number, little endian.
        assert_eq!(
            websocket::next_on(&mut socket, 0).await?,
            8080u16.to_le_bytes()
        );
        websocket::send(&mut socket, 0, b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).contains("hello-from-pod") {
            answer.extend(websocket::next_on(&mut socket, 0).await?);
        }
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    })
}
