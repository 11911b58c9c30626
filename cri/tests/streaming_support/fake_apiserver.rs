//! Just enough of kube-apiserver for `kubectl exec/attach/port-forward` against one
//! running pod: it answers the pod GET and, like apiserver + kubelet, turns the exec /
//! attach / portforward subresource request into a CRI request, asks the streaming
//! server for its URL and splices the client's connection onto that URL.

use std::sync::{Arc, Mutex};

use berth_cri::streaming::{AttachRequest, ExecRequest, PortForwardRequest, StreamingServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::split_url;

pub const POD: &str = "web";

const POD_JSON: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"1"},"spec":{"containers":[{"name":"app","image":"busybox","stdin":true}]},"status":{"phase":"Running","containerStatuses":[{"name":"app","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}}]}}"#;

const API_VERSIONS: &str = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}"#;
const API_GROUPS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const CORE_RESOURCES: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

/// The `Upgrade` header of every streaming request the fixture passed on.
pub type Upgrades = Arc<Mutex<Vec<String>>>;

/// Starts the fixture; returns its base URL.
pub async fn start(server: Arc<StreamingServer>) -> (String, Upgrades) {
    let upgrades = Upgrades::default();
    let seen = upgrades.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (server, seen) = (server.clone(), seen.clone());
            tokio::spawn(async move {
                let _ = serve(socket, server, seen).await;
            });
        }
    });
    (url, upgrades)
}

fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

async fn serve(
    mut client: TcpStream,
    server: Arc<StreamingServer>,
    upgrades: Upgrades,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let pod_path = format!("/api/v1/namespaces/default/pods/{POD}");
    let flag = |name: &str| {
        query_values(query, name)
            .iter()
            .any(|v| v == "true" || v == "1")
    };

    let streaming_url = if path == format!("{pod_path}/exec") {
        server.get_exec(ExecRequest {
            container_id: "app".into(),
            cmd: query_values(query, "command"),
            tty: flag("tty"),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
        })
    } else if path == format!("{pod_path}/attach") {
        server.get_attach(AttachRequest {
            container_id: "app".into(),
            tty: flag("tty"),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
        })
    } else if path == format!("{pod_path}/portforward") {
        server.get_port_forward(PortForwardRequest {
            pod_sandbox_id: POD.into(),
            port: vec![],
        })
    } else {
        let (status, body) = if method == "GET" && path == pod_path {
            ("200 OK", POD_JSON.to_owned())
        } else if method == "GET" && path == "/api" {
            ("200 OK", API_VERSIONS.to_owned())
        } else if method == "GET" && path == "/apis" {
            ("200 OK", API_GROUPS.to_owned())
        } else if method == "GET" && path == "/api/v1" {
            ("200 OK", CORE_RESOURCES.to_owned())
        } else {
            ("404 Not Found", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    };
    let streaming_url = streaming_url.expect("streaming URL");
    let upgrade = head
        .split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    upgrades.lock().unwrap().push(upgrade);
    let (authority, streaming_path) = split_url(&streaming_url);
    let forwarded_query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let mut upstream = TcpStream::connect(&authority).await?;
    let mut forwarded = format!("{method} {streaming_path}{forwarded_query} HTTP/1.1\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("host:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str(&format!("Host: {authority}\r\n\r\n"));
    upstream.write_all(forwarded.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A kubeconfig pointing kubectl at the fixture.
pub fn kubeconfig(dir: &std::path::Path, api_url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {api_url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}
