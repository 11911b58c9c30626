//! Streaming: Exec, Attach and PortForward URLs driven over WebSocket as
//! kubectl does, and over SPDY/3.1 as kubectl did before WebSockets.

use std::path::{Path, PathBuf};

use berth_proto::runtime::v1::{
    AttachRequest, ContainerConfig, ContainerState, ExecRequest, NamespaceMode, PodSandboxConfig,
    PortForwardRequest,
};
use berth_tests::cri::spdy::{self, open_command_streams, send_resize};
use berth_tests::cri::{self, CriEnv, websocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SPDY_V4: &str = "v4.channel.k8s.io";

fn exec_request(id: &str, cmd: &str, stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.to_owned(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
        ..Default::default()
    }
}

async fn exec_url(env: &mut CriEnv, request: ExecRequest) -> anyhow::Result<String> {
    Ok(env.runtime.exec(request).await?.into_inner().url)
}

async fn attach_url(env: &mut CriEnv, id: &str, stdin: bool, tty: bool) -> anyhow::Result<String> {
    let request = AttachRequest {
        container_id: id.to_owned(),
        stdin,
        tty,
        stdout: true,
        stderr: !tty,
        ..Default::default()
    };
    Ok(env.runtime.attach(request).await?.into_inner().url)
}

/// Everything an exec/attach URL sends over WebSocket until the stream ends.
async fn websocket_output(url: &str) -> anyhow::Result<websocket::CommandOutput> {
    let mut socket = websocket::connect(url, websocket::CHANNEL_V4).await?;
    websocket::collect(&mut socket, |_| false).await
}

async fn port_forward_url(env: &mut CriEnv, pod: String, port: u16) -> anyhow::Result<String> {
    let request = PortForwardRequest {
        pod_sandbox_id: pod,
        port: vec![i32::from(port)],
    };
    Ok(env.runtime.port_forward(request).await?.into_inner().url)
}

/// A WebSocket port-forward session to `port`, as kubectl opens one.
async fn websocket_port_forward(url: &str, port: u16) -> anyhow::Result<websocket::Socket> {
    let separator = if url.contains('?') { '&' } else { '?' };
    websocket::connect(
        &format!("{url}{separator}port={port}"),
        websocket::CHANNEL_V4,
    )
    .await
}

/// A pod whose container serves `body` over HTTP on port 8080; returns the pod
/// id once the server listens.
async fn http_server_pod(env: &mut CriEnv, pod_name: &str, body: &str) -> anyhow::Result<String> {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && httpd -f -p 8080 -h /www");
    let config = env.container_config("server", &["sh", "-c", &script]);
    let (pod, _, id) = env.pod_with_container(pod_name, config).await?;
    // Port 8080 is 1F90 in /proc/net/tcp*.
    let listening = "cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F90 '";
    env.exec_until_ok(&id, &["sh", "-c", listening]).await?;
    Ok(pod)
}

/// Attaches to `id`'s stdin and output over SPDY, as `kubectl attach -i` did.
async fn spdy_attach_stdin(
    env: &mut CriEnv,
    id: &str,
) -> anyhow::Result<(spdy::SpdyClient, spdy::CommandStreams)> {
    let url = attach_url(env, id, true, false).await?;
    let (client, _) = spdy::connect(&url, &[SPDY_V4], false).await?;
    let streams = open_command_streams(&client, true, true, false).await;
    Ok((client, streams))
}

/// A container reading its stdin (kept open for attach) and, with `tty`, on a terminal.
fn interactive(
    env: &CriEnv,
    name: &str,
    script: &str,
    tty: bool,
    stdin_once: bool,
) -> ContainerConfig {
    let mut config = env.container_config(name, &["sh", "-c", script]);
    config.tty = tty;
    config.stdin = true;
    config.stdin_once = stdin_once;
    config
}

/// The CRI log file of a container made by `interactive`/`container_config`.
fn log_file(pod_config: &PodSandboxConfig, config_name: &str) -> PathBuf {
    PathBuf::from(&pod_config.log_directory).join(format!("{config_name}_0.log"))
}

/// Waits until the container's CRI log has a line of `stream` containing `text`.
async fn wait_for_log(path: &Path, stream: &str, text: &str) -> anyhow::Result<String> {
    let (path, stream, text) = (path.to_owned(), stream.to_owned(), text.to_owned());
    tokio::task::spawn_blocking(move || {
        berth_tests::wait_for(std::time::Duration::from_secs(30), "the log line", || {
            std::fs::read_to_string(&path).ok().filter(|log| {
                log.lines()
                    .any(|l| l.split(' ').nth(1) == Some(stream.as_str()) && l.contains(&text))
            })
        })
    })
    .await?
}

#[test]
fn exec_over_websocket_streams_output_and_exit_status() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("exec", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("ws-exec", config).await?;
        let exec = |cmd| exec_request(&id, cmd, false, false);
        let url = exec_url(&mut env, exec("echo out; echo err >&2")).await?;
        let output = websocket_output(&url).await?;
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.exit_code(), Some(0), "{:?}", output.status);

        let url = exec_url(&mut env, exec("exit 3")).await?;
        let output = websocket_output(&url).await?;
        assert_eq!(output.exit_code(), Some(3), "{:?}", output.status);
        Ok(())
    })
}

#[test]
fn exec_over_websocket_forwards_stdin() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("stdin", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("ws-stdin", config).await?;
        let url = exec_url(&mut env, exec_request(&id, "head -n1", true, false)).await?;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        websocket::send(&mut socket, websocket::STDIN, b"typed line\n").await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert_eq!(output.stdout, b"typed line\n");
        Ok(())
    })
}

#[test]
fn attach_over_websocket_receives_the_container_output() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config(
            "ticker",
            &["sh", "-c", "while true; do echo tick; usleep 20000; done"],
        );
        let (_, _, id) = env.pod_with_container("ws-attach", config).await?;
        let url = attach_url(&mut env, &id, false, false).await?;
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
fn port_forward_over_websocket_reaches_a_port_in_the_pod() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let pod = http_server_pod(&mut env, "ws-port-forward", "hello-from-pod").await?;
        let url = port_forward_url(&mut env, pod, 8080).await?;
        let mut socket = websocket_port_forward(&url, 8080).await?;
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

#[test]
fn exec_over_spdy_forwards_stdin_and_reports_exit_codes() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("exec", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("spdy-exec", config).await?;

        let url = exec_url(
            &mut env,
            exec_request(&id, "cat; echo done >&2", true, false),
        )
        .await?;
        let (client, _) = spdy::connect(&url, &[SPDY_V4], true).await?;
        let mut streams = open_command_streams(&client, true, true, false).await;
        let stdin = streams.stdin.take().expect("stdin stream");
        stdin.write(b"through stdin\n").await;
        stdin.close();
        assert_eq!(
            streams.stdout.read_to_end().await.as_deref(),
            Some(&b"through stdin\n"[..])
        );
        let stderr = streams.stderr.as_mut().expect("stderr stream");
        assert_eq!(stderr.read_to_end().await.as_deref(), Some(&b"done\n"[..]));
        let status = streams.error.read_to_end().await.expect("error stream");
        let status: serde_json::Value = serde_json::from_slice(&status)?;
        assert_eq!(status["status"], "Success", "{status}");

        for (script, code) in [("exit 7", 7), ("kill -9 $$", 137)] {
            let url = exec_url(&mut env, exec_request(&id, script, false, false)).await?;
            let (client, _) = spdy::connect(&url, &[SPDY_V4], false).await?;
            let mut streams = open_command_streams(&client, false, true, false).await;
            let status = streams.error.read_to_end().await.expect("error stream");
            let output = websocket::CommandOutput {
                status: Some(serde_json::from_slice(&status)?),
                ..Default::default()
            };
            assert_eq!(output.exit_code(), Some(code), "{:?}", output.status);
            assert_eq!(output.status.as_ref().unwrap()["reason"], "NonZeroExitCode");
        }
        Ok(())
    })
}

/// A tty exec that waits for two terminal sizes in turn, then reads a line.
const RESIZE_SCRIPT: &str = "until [ \"$(stty size)\" = \"30 100\" ]; do usleep 10000; done; \
     echo first-size-ok; until [ \"$(stty size)\" = \"40 120\" ]; do usleep 10000; done; \
     echo second-size-ok; read line; echo \"got $line\"";

#[test]
fn tty_exec_over_spdy_applies_resizes() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("tty", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("spdy-tty", config).await?;
        let url = exec_url(&mut env, exec_request(&id, RESIZE_SCRIPT, true, true)).await?;
        let (client, _) = spdy::connect(&url, &[SPDY_V4], false).await?;
        let mut streams = open_command_streams(&client, true, false, true).await;
        let resize = streams.resize.take().expect("resize stream");
        send_resize(&resize, 100, 30).await;
        streams.stdout.read_until("first-size-ok").await?;
        send_resize(&resize, 120, 40).await;
        streams.stdout.read_until("second-size-ok").await?;
        streams
            .stdin
            .as_ref()
            .expect("stdin")
            .write(b"typed\r")
            .await;
        // The terminal echoes the input and turns \n into \r\n.
        streams.stdout.read_until("got typed\r\n").await?;
        let status = streams.error.read_to_end().await.expect("error stream");
        let status: serde_json::Value = serde_json::from_slice(&status)?;
        assert_eq!(status["status"], "Success", "{status}");
        Ok(())
    })
}

#[test]
fn tty_exec_over_websocket_applies_resizes_and_reports_exit_codes() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("tty", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("ws-tty", config).await?;
        let script = format!("{RESIZE_SCRIPT}; exit 4");
        let url = exec_url(&mut env, exec_request(&id, &script, true, true)).await?;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        let resize = |w: u16, h: u16| serde_json::json!({"Width": w, "Height": h}).to_string();
        websocket::send(&mut socket, websocket::RESIZE, resize(100, 30).as_bytes()).await?;
        let seen = |needle: &'static str| {
            move |o: &websocket::CommandOutput| String::from_utf8_lossy(&o.stdout).contains(needle)
        };
        websocket::collect(&mut socket, seen("first-size-ok")).await?;
        websocket::send(&mut socket, websocket::RESIZE, resize(120, 40).as_bytes()).await?;
        websocket::collect(&mut socket, seen("second-size-ok")).await?;
        websocket::send(&mut socket, websocket::STDIN, b"typed\r").await?;
        let output = websocket::collect(&mut socket, |_| false).await?;
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("got typed"),
            "{output:?}"
        );
        assert!(
            output.stderr.is_empty(),
            "a terminal has no stderr: {output:?}"
        );
        assert_eq!(output.exit_code(), Some(4), "{:?}", output.status);
        Ok(())
    })
}

#[test]
fn attach_to_a_tty_container_sends_input_and_resizes_and_logs_stdout_only() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let script = "until [ \"$(stty size)\" = \"25 90\" ]; do usleep 10000; done; \
             echo size-ok; while read line; do echo \"got $line\"; done";
        let config = interactive(&env, "tty", script, true, false);
        let (_, pod_config, id) = env.pod_with_container("attach-tty", config).await?;
        let url = attach_url(&mut env, &id, true, true).await?;
        let mut socket = websocket::connect(&url, websocket::CHANNEL_V4).await?;
        let size = serde_json::json!({"Width": 90, "Height": 25}).to_string();
        websocket::send(&mut socket, websocket::RESIZE, size.as_bytes()).await?;
        websocket::collect(&mut socket, |o| {
            String::from_utf8_lossy(&o.stdout).contains("size-ok")
        })
        .await?;
        websocket::send(&mut socket, websocket::STDIN, b"hello\r").await?;
        websocket::collect(&mut socket, |o| {
            String::from_utf8_lossy(&o.stdout).contains("got hello")
        })
        .await?;
        // The output also went to the CRI log, all of it as stdout.
        let log = wait_for_log(&log_file(&pod_config, "tty"), "stdout", "got hello").await?;
        assert!(
            log.lines().all(|l| l.split(' ').nth(1) == Some("stdout")),
            "{log}"
        );
        Ok(())
    })
}

#[test]
fn attach_with_stdin_once_closes_the_containers_stdin_when_it_ends() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = interactive(&env, "once", "cat; echo cat-ended", false, true);
        let (_, pod_config, id) = env.pod_with_container("stdin-once", config).await?;
        let (_client, mut streams) = spdy_attach_stdin(&mut env, &id).await?;
        streams
            .stdin
            .as_ref()
            .expect("stdin")
            .write(b"first\n")
            .await;
        streams.stdout.read_until("first\n").await?;
        // Closing stdin closes the container's: cat ends, the container exits.
        streams.stdin.as_ref().expect("stdin").close();
        streams.stdout.read_until("cat-ended").await?;
        let status = env
            .wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        assert_eq!(status.exit_code, 0);
        let log = std::fs::read_to_string(log_file(&pod_config, "once"))?;
        assert!(log.contains(" stdout F first\n"), "{log}");
        assert!(log.contains(" stdout F cat-ended\n"), "{log}");
        Ok(())
    })
}

#[test]
fn attach_without_stdin_once_keeps_stdin_open_across_attaches() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let script = "while read line; do echo \"got $line\"; done; echo stdin-closed";
        let config = interactive(&env, "many", script, false, false);
        let (_, _, id) = env.pod_with_container("stdin-many", config).await?;
        for word in ["one", "two"] {
            let (client, mut streams) = spdy_attach_stdin(&mut env, &id).await?;
            let stdin = streams.stdin.as_ref().expect("stdin");
            stdin.write(format!("{word}\n").as_bytes()).await;
            streams.stdout.read_until(&format!("got {word}")).await?;
            stdin.close();
            client.disconnect();
        }
        let status = env.container_status(&id).await?;
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        Ok(())
    })
}

#[test]
fn port_forward_over_spdy_reaches_a_port_in_the_pod() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let pod = http_server_pod(&mut env, "spdy-port-forward", "spdy-pod").await?;
        let url = port_forward_url(&mut env, pod, 8080).await?;
        let (client, _) = spdy::connect(&url, &["portforward.k8s.io"], false).await?;
        let headers = |kind| [("streamType", kind), ("port", "8080"), ("requestID", "0")];
        let mut error = client.open(&headers("error"));
        let mut data = client.open(&headers("data"));
        error.expect_reply().await;
        data.expect_reply().await;
        data.write(b"GET / HTTP/1.0\r\n\r\n").await;
        let answer = data.read_until("spdy-pod").await?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        Ok(())
    })
}

#[test]
fn port_forward_reaches_host_network_pods() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        // A host-network pod's localhost is the node's: here, the test's netns.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut line = [0u8; 5];
            socket.read_exact(&mut line).await?;
            socket.write_all(b"pong:").await?;
            socket.write_all(&line).await?;
            anyhow::Ok(())
        });
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let mut pod_config = env.pod_config("host-port-forward");
        pod_config.hostname.clear();
        let options = pod_config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .namespace_options
            .get_or_insert_default();
        options.network = NamespaceMode::Node as i32;
        let pod = env.run_pod(&pod_config).await?;
        let url = port_forward_url(&mut env, pod, port).await?;
        let mut socket = websocket_port_forward(&url, port).await?;
        assert_eq!(
            websocket::next_on(&mut socket, 0).await?,
            port.to_le_bytes()
        );
        websocket::send(&mut socket, 0, b"ping!").await?;
        let mut answer = Vec::new();
        while answer.len() < 10 {
            answer.extend(websocket::next_on(&mut socket, 0).await?);
        }
        assert_eq!(answer, b"pong:ping!");
        server.await??;
        Ok(())
    })
}

#[test]
fn streaming_requests_are_checked_and_urls_work_once() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("checked", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("streaming-checks", config).await?;
        let mut tty_with_stderr = exec_request(&id, "true", false, true);
        tty_with_stderr.stderr = true;
        let code = env.runtime.exec(tty_with_stderr).await.unwrap_err().code();
        assert_eq!(code, tonic::Code::InvalidArgument);
        let no_streams = AttachRequest {
            container_id: id.clone(),
            ..Default::default()
        };
        let code = env.runtime.attach(no_streams).await.unwrap_err().code();
        assert_eq!(code, tonic::Code::InvalidArgument);
        let missing = exec_request("no-such-container", "true", false, false);
        assert!(env.runtime.exec(missing).await.is_err());

        let url = exec_url(&mut env, exec_request(&id, "echo once", false, false)).await?;
        let output = websocket_output(&url).await?;
        assert_eq!(output.stdout, b"once\n");
        assert!(
            websocket::connect(&url, websocket::CHANNEL_V4)
                .await
                .is_err(),
            "a streaming URL must not work twice"
        );
        Ok(())
    })
}

#[test]
fn attach_works_after_a_daemon_restart() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != cri::EndpointKind::Berth {
            eprintln!("SKIP: restart with running pods is a berth-cri guarantee");
            return Ok(());
        }
        let script = "while read line; do echo \"got $line\"; done";
        let config = interactive(&env, "restart", script, false, false);
        let (_, _, id) = env.pod_with_container("attach-restart", config).await?;
        // The pod supervisor, not the daemon, holds the container's stdin.
        env.daemon.kill()?;
        env.daemon.restart().await?;
        let channel = env.daemon.connect().await?;
        env.runtime = berth_proto::runtime_client(channel);
        let (_client, mut streams) = spdy_attach_stdin(&mut env, &id).await?;
        streams
            .stdin
            .as_ref()
            .expect("stdin")
            .write(b"after\n")
            .await;
        streams.stdout.read_until("got after").await?;
        Ok(())
    })
}
