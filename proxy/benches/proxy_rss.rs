//! The berth-proxy binary at scale against the API server fixture, in a network
//! namespace of its own: time from start to the first programmed ruleset, and the
//! proxy process's resident memory.
//!
//!   cargo bench -p berth-proxy --bench proxy_rss -- <iptables|nftables> [services] [endpoints]

use berth_tests::apiserver::{ApiServer, ENDPOINT_SLICES, NODES, SERVICES};
use serde_json::json;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The proxy's last successful sync time from its metrics, if it has synced.
fn last_sync(metrics: &str) -> Option<f64> {
    let mut s =
        std::net::TcpStream::connect_timeout(&metrics.parse().ok()?, Duration::from_secs(1))
            .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_last_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .filter(|v: &f64| *v > 0.0)
}

fn wait_for_sync(metrics: &str, after: f64, limit: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(t) = last_sync(metrics).filter(|t| *t > after) {
            return Ok(t);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("no sync within {limit:?}")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().cloned().unwrap_or_else(|| "nftables".into());
    let services: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);

    let name = format!("bpxrss{}", std::process::id());
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success(),
        "ip netns add {name} failed"
    );
    let ns = Netns(name);
    // Everything from here on (fixture threads, the proxy) lives in the namespace.
    let file = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    anyhow::ensure!(
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?
            .success(),
        "lo up failed"
    );

    let api = ApiServer::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    api.create(&NODES, "", json!({"metadata": {"name": "node-a"}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}))
        .map_err(|e| anyhow::anyhow!(e.message))?;
    for i in 0..services {
        let mut port = json!({"name": "http", "port": 80, "protocol": "TCP"});
        let ty = if i < 1000 { "NodePort" } else { "ClusterIP" };
        if i < 1000 {
            port["nodePort"] = json!(30000 + i);
        }
        api.create(&SERVICES, "default", json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"type": ty, "ports": [port]}}))
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let eps: Vec<_> = (0..endpoints)
            .map(|e| {
                let n = i * endpoints + e;
                json!({"addresses": [format!("10.{}.{}.{}", 128 + n / 62500 % 64, n / 250 % 250, n % 250 + 1)], "conditions": {"ready": true}, "nodeName": "other"})
            })
            .collect();
        api.create(&ENDPOINT_SLICES, "default", json!({"metadata": {"name": format!("svc-{i}-abcde"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }

    let metrics = "127.0.0.1:10249";
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_berth-proxy"))
        .args([
            "--kubeconfig",
            api.kubeconfig_path().to_str().unwrap_or_default(),
            "--hostname-override",
            "node-a",
            "--proxy-mode",
            &mode,
        ])
        .args([
            "--cluster-cidr",
            "10.128.0.0/10",
            "--conntrack-max-per-core",
            "0",
            "--healthz-bind-address",
            "",
            "--metrics-bind-address",
            metrics,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            std::env::temp_dir().join(format!("berth-proxy-bench-{}.log", std::process::id())),
        )?)
        .spawn()?;
    let proxy = Proxy(child);
    let first = wait_for_sync(metrics, 0.0, Duration::from_secs(1200))?;
    let to_first_sync = started.elapsed();
    let pid = proxy.0.id();
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));

    // One endpoint of one Service changes; time until the proxy reports the sync.
    let mut slice = api
        .get(
            &ENDPOINT_SLICES,
            "default",
            &format!("svc-{}-abcde", services / 2),
        )
        .map_err(|e| anyhow::anyhow!(e.message))?;
    slice["endpoints"][0]["addresses"] = json!(["10.255.255.1"]);
    let changed = Instant::now();
    api.update(&ENDPOINT_SLICES, "default", slice)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    wait_for_sync(metrics, first, Duration::from_secs(600))?;
    let change = changed.elapsed();

    println!(
        "binary mode={mode} services={services} endpoints_per_service={endpoints} start_to_first_sync={:.1}s endpoint_change_to_synced={:.0}ms proxy_rss={:.1}MiB proxy_peak_rss={:.1}MiB",
        to_first_sync.as_secs_f64(),
        change.as_secs_f64() * 1000.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    drop(proxy);
    drop(api);
    drop(ns);
    Ok(())
}
