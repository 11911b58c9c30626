//! Interoperability with the upstream client: kubectl exec (SPDY and WebSocket v5) and
//! kubectl port-forward (SPDY) through a minimal apiserver stand-in. Skipped, loudly,
//! where kubectl is not installed.

mod streaming_support;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streaming_support::fake_apiserver::{self, kubeconfig};
use streaming_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

fn kubectl_installed() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: kubectl is not installed");
    }
    found
}

/// The streaming server behind the apiserver stand-in, and a kubeconfig for it.
struct Cluster {
    backend: Arc<ProcessBackend>,
    upgrades: fake_apiserver::Upgrades,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let (server, backend) = default_server().await;
    let (api, upgrades) = fake_apiserver::start(Arc::new(server)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api);
    Cluster {
        backend,
        upgrades,
        config,
        _dir: dir,
    }
}

/// `kubectl exec`/`attach` with piped stdio, over WebSocket v5 or SPDY.
fn remote_command(cluster: &Cluster, args: &[&str], websockets: bool) -> Child {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.config)
        .args(args)
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn finished(kubectl: Child, limit: Duration) -> Output {
    tokio::time::timeout(limit, kubectl.wait_with_output())
        .await
        .expect("kubectl finished")
        .unwrap()
}

async fn kubectl_exec(websockets: bool) {
    if !kubectl_installed() {
        return;
    }
    let cluster = cluster().await;
    let mut kubectl = remote_command(
        &cluster,
        &[
            "exec",
            "-i",
            fake_apiserver::POD,
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "cat; echo to-stderr >&2; exit 3",
        ],
        websockets,
    );
    let mut stdin = kubectl.stdin.take().unwrap();
    stdin.write_all(b"through kubectl\n").await.unwrap();
    drop(stdin);
    let output = finished(kubectl, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "through kubectl\n",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(3),
        "kubectl passes the exit code on; stderr: {stderr}"
    );
    let expected = if websockets { "websocket" } else { "SPDY/3.1" };
    assert_eq!(
        *cluster.upgrades.lock().unwrap(),
        [expected],
        "the transport kubectl used"
    );
}

#[tokio::test]
async fn kubectl_exec_over_spdy() {
    kubectl_exec(false).await;
}

#[tokio::test]
async fn kubectl_exec_over_websocket() {
    kubectl_exec(true).await;
}

/// The upgrades kubectl asked for; `None` without kubectl.
async fn kubectl_port_forward(websockets: bool) -> Option<Vec<String>> {
    if !kubectl_installed() {
        return None;
    }
    let echo_port = echo_server().await;
    let cluster = cluster().await;
    let mut kubectl = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.config)
        .args([
            "port-forward",
            "--address",
            "127.0.0.1",
            fake_apiserver::POD,
            &format!(":{echo_port}"),
        ])
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kubectl.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("kubectl announced the local port")
        .unwrap()
        .expect("a line");
    // "Forwarding from 127.0.0.1:41234 -> 5678"
    let local: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"));
    for round in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        let sent = payload(256 * 1024 + round);
        socket.write_all(&sent).await.unwrap();
        let mut echoed = vec![0u8; sent.len()];
        socket.read_exact(&mut echoed).await.unwrap();
        assert_eq!(sha256(&echoed), sha256(&sent), "round {round}");
    }
    kubectl.kill().await.unwrap();
    let upgrades = cluster.upgrades.lock().unwrap().clone();
    Some(upgrades)
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    let Some(upgrades) = kubectl_port_forward(false).await else {
        return;
    };
    assert!(upgrades.iter().all(|u| u == "SPDY/3.1"), "{upgrades:?}");
}

#[tokio::test]
async fn kubectl_port_forward_falls_back_to_spdy_from_websocket_tunnels() {
    // kubectl first asks for SPDY tunnelled over WebSocket, which kubelet does not serve
    // either (kube-apiserver translates it); the refusal makes kubectl use SPDY.
    let Some(upgrades) = kubectl_port_forward(true).await else {
        return;
    };
    assert_eq!(
        upgrades.first().map(String::as_str),
        Some("websocket"),
        "{upgrades:?}"
    );
    assert!(
        upgrades[1..].iter().all(|u| u == "SPDY/3.1"),
        "{upgrades:?}"
    );
}

#[tokio::test]
async fn kubectl_attach_over_spdy() {
    if !kubectl_installed() {
        return;
    }
    let cluster = cluster().await;
    let mut kubectl = remote_command(
        &cluster,
        &["attach", "-i", fake_apiserver::POD, "-c", "app"],
        false,
    );
    let mut stdin = kubectl.stdin.take().unwrap();
    stdin.write_all(b"attached via kubectl\n").await.unwrap();
    drop(stdin);
    let output = finished(kubectl, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("attached via kubectl\n"),
        "stderr: {stderr}"
    );
    assert!(output.status.success(), "{stderr}");
    assert_eq!(*cluster.upgrades.lock().unwrap(), ["SPDY/3.1"]);
}

async fn kubectl_exec_large_transfer(websockets: bool) {
    if !kubectl_installed() {
        return;
    }
    let cluster = cluster().await;
    let mut kubectl = remote_command(
        &cluster,
        &["exec", "-i", fake_apiserver::POD, "--", "cat"],
        websockets,
    );
    let data = payload(16 * 1024 * 1024);
    let expected = sha256(&data);
    let mut stdin = kubectl.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.unwrap();
    });
    let output = finished(kubectl, Duration::from_secs(120)).await;
    writer.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout.len(), 16 * 1024 * 1024);
    assert_eq!(sha256(&output.stdout), expected);
}

#[tokio::test]
async fn kubectl_exec_carries_16_mib_over_spdy() {
    kubectl_exec_large_transfer(false).await;
}

#[tokio::test]
async fn kubectl_exec_carries_16_mib_over_websocket() {
    kubectl_exec_large_transfer(true).await;
}

async fn kubectl_terminal_size(websockets: bool) {
    if !kubectl_installed() {
        return;
    }
    let cluster = cluster().await;
    // `script` gives kubectl a terminal of a known size.
    let inner = format!(
        "stty cols 123 rows 45; exec kubectl --kubeconfig {} exec -it {} -- sleep 1000",
        cluster.config.display(),
        fake_apiserver::POD
    );
    let mut kubectl = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("the terminal size", || {
        !cluster.backend.resizes.lock().unwrap().is_empty()
    })
    .await;
    let size = cluster.backend.resizes.lock().unwrap()[0];
    assert_eq!((size.width, size.height), (123, 45));
    kubectl.kill().await.unwrap();
}

#[tokio::test]
async fn kubectl_exec_with_a_terminal_sends_its_size_over_spdy() {
    kubectl_terminal_size(false).await;
}

#[tokio::test]
async fn kubectl_exec_with_a_terminal_sends_its_size_over_websocket() {
    kubectl_terminal_size(true).await;
}
