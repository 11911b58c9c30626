//! Sync time and rule count at scale, in a network namespace of its own.
//!
//!   cargo bench -p berth-proxy --bench sync_scale -- <mode> [services] [endpoints] [runs]
//!
//! `mode`: iptables (the host's iptables-restore), iptables-legacy, iptables-nft, nftables.
//! Builds the model for `services` Services (the first 1000 NodePort, the rest ClusterIP)
//! with `endpoints` ready endpoints each, times the first full sync, then `runs` times
//! (default 3) a one-endpoint change (a partial sync), a syncPeriod timer tick without
//! changes (also partial) and a full resync as done hourly or after a failure, and prints
//! medians, the rule count and the process's peak RSS. Each run also adds an endpoint
//! to another Service and then removes it again (two partial syncs that change how
//! many endpoints the Service balances over, so its rule is replaced). In the iptables modes it then times
//! the full sync of a restarted proxy (a new proxier over the rules already in place, as
//! after a crash or upgrade), and gives the CPU time of the first full sync and of the
//! restart split into the bench's own and that of the tools it ran (iptables-restore and
//! friends), and in every mode the CPU time of the resyncs. Runs as root in a network namespace of its own, deleted at the end.

use berth_proxy::backend::Backend;
use berth_proxy::config::{LocalDetector, NodePortAddresses};
use berth_proxy::iptables::IptablesVariant;
use berth_proxy::model::{ChangeTracker, SERVICE_NAME_LABEL};
use berth_proxy::net::Cidr;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Instant;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Services 0..1000 are NodePorts (the NodePort range holds 2768), the rest ClusterIPs.
fn service(i: usize) -> Service {
    let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
    let mut port = json!({"name": "http", "port": 80, "protocol": "TCP"});
    let ty = if i < 1000 {
        port["nodePort"] = json!(30000 + i);
        "NodePort"
    } else {
        "ClusterIP"
    };
    serde_json::from_value(json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"type": ty, "clusterIP": ip, "clusterIPs": [ip], "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster", "ports": [port]}}))
    .expect("valid Service")
}

fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e + generation;
            json!({"addresses": [format!("10.{}.{}.{}", 128 + n / 62500 % 64, n / 250 % 250, n % 250 + 1)], "conditions": {"ready": true}, "nodeName": "other"})
        })
        .collect();
    serde_json::from_value(json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}-abcde"), "labels": {SERVICE_NAME_LABEL: format!("svc-{i}")}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .expect("valid EndpointSlice")
}

/// CPU seconds (user+sys) of this process and of its waited-for children, from
/// /proc/self/stat (clock ticks of 10 ms).
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is the 14th field overall.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let tick = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    (tick(11) + tick(12), tick(13) + tick(14))
}

/// Wall time and CPU seconds (own, children's) of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration, f64, f64) {
    let (own, children) = cpu_times();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed();
    let (own2, children2) = cpu_times();
    (out, wall, own2 - own, children2 - children)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Chains, rules and set elements in `family`'s kube-proxy table, as `nft` lists them
/// (anonymous sets inside rules are not counted as elements).
fn kernel_counts(family: &str) -> anyhow::Result<(usize, usize, usize)> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", family, "kube-proxy"])
        .output()?;
    anyhow::ensure!(out.status.success(), "nft -j list table failed");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let objects = json["nftables"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| objects.iter().filter(|o| o.get(kind).is_some()).count();
    let elements: usize = objects
        .iter()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .filter_map(|s| s["elem"].as_array())
        .map(Vec::len)
        .sum();
    Ok((count("chain"), count("rule"), elements))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args
        .first()
        .map(String::as_str)
        .unwrap_or("nftables")
        .to_string();
    let services: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let endpoints: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3).max(1);

    let name = format!("bpxbench{}", std::process::id());
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success(),
        "ip netns add {name} failed"
    );
    // Errors are returned, not panicked (release builds abort on panic), so this guard runs.
    let ns = Netns(name);
    // The bench is single-threaded: after this, it and every command it runs live in the namespace.
    let file = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;

    let started = Instant::now();
    let mut tracker = ChangeTracker::new("node-a");
    for i in 0..services {
        tracker.apply_service(&service(i));
        tracker.apply_slice(&slice(i, endpoints, 0));
    }
    let snapshot = tracker.snapshot();
    let model_time = started.elapsed();

    let mut backend = proxier(&mode)?;
    let (report, full, full_own_cpu, full_tool_cpu) = timed(|| backend.sync(&snapshot, true));
    let report = report?;

    let mut partials = Vec::new();
    let mut ticks = Vec::new();
    let mut fulls = Vec::new();
    let mut full_cpus = Vec::new();
    let mut grown = Vec::new();
    let mut shrunk = Vec::new();
    for run in 0..runs {
        // One endpoint of one Service changes address (and back, on the next run).
        let mut changed = slice(services / 2, endpoints, 0);
        if let Some(eps) = changed.endpoints.as_mut() {
            if run % 2 == 0 {
                eps[0].addresses = vec!["10.255.255.1".to_string()];
            }
        }
        tracker.apply_slice(&changed);
        let snapshot = tracker.snapshot();
        let t = Instant::now();
        let partial = backend.sync(&snapshot, false)?;
        partials.push(t.elapsed());
        anyhow::ensure!(
            !partial.full,
            "the change did not go through a partial sync"
        );
        let snapshot = tracker.snapshot();
        let t = Instant::now();
        let tick = backend.sync(&snapshot, false)?;
        ticks.push(t.elapsed());
        anyhow::ensure!(!tick.full, "the timer tick went through a full sync");
        let snapshot = tracker.snapshot();
        let (report, wall, own, _) = timed(|| backend.sync(&snapshot, true));
        report?;
        fulls.push(wall);
        full_cpus.push(own);

        // Another Service gains an endpoint, then loses it again.
        let resized = services / 3;
        let mut more = slice(resized, endpoints, 0);
        if let Some(eps) = more.endpoints.as_mut() {
            let mut extra = eps[0].clone();
            extra.addresses = vec!["10.255.254.1".to_string()];
            eps.push(extra);
        }
        for (s, times) in [
            (more, &mut grown),
            (slice(resized, endpoints, 0), &mut shrunk),
        ] {
            tracker.apply_slice(&s);
            let snapshot = tracker.snapshot();
            let t = Instant::now();
            let report = backend.sync(&snapshot, false)?;
            times.push(t.elapsed());
            anyhow::ensure!(!report.full, "the resize did not go through a partial sync");
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let one = median(&mut partials);
    let resync = median(&mut fulls);
    full_cpus.sort_by(f64::total_cmp);
    let resync_cpu = full_cpus[full_cpus.len() / 2];
    let tick = median(&mut ticks);
    let added = median(&mut grown);
    let removed = median(&mut shrunk);

    // A restarted proxy finds every rule in place and knows nothing of them.
    let restart = if mode.starts_with("iptables") {
        let mut restarted = proxier(&mode)?;
        let snapshot = tracker.snapshot();
        let (report, wall, own, tools) = timed(|| restarted.sync(&snapshot, true));
        report?;
        format!(
            " restart_full_sync={:.3}s restart_cpu_own={own:.2}s restart_cpu_tools={tools:.2}s",
            wall.as_secs_f64()
        )
    } else {
        String::new()
    };

    // Taken before the listing below, whose JSON is far larger than the proxy's state.
    let peak_rss = peak_rss_mib();
    let kernel = if mode == "nftables" {
        let (chains, rules, elements) = kernel_counts("ip")?;
        format!(" kernel_chains={chains} kernel_rules={rules} kernel_elements={elements}")
    } else {
        String::new()
    };
    println!(
        "mode={mode} services={services} endpoints_per_service={endpoints} rules={}{kernel} model_build={:.3}s first_full_sync={:.3}s first_cpu_own={full_own_cpu:.2}s first_cpu_tools={full_tool_cpu:.2}s runs={runs} median_full_resync={:.3}s median_resync_cpu_own={resync_cpu:.2}s median_one_endpoint_change={:.1}ms median_endpoint_added={:.1}ms median_endpoint_removed={:.1}ms median_timer_tick={:.1}ms{restart} peak_rss={:.1}MiB",
        report.rules,
        model_time.as_secs_f64(),
        full.as_secs_f64(),
        resync.as_secs_f64(),
        one.as_secs_f64() * 1000.0,
        added.as_secs_f64() * 1000.0,
        removed.as_secs_f64() * 1000.0,
        tick.as_secs_f64() * 1000.0,
        peak_rss
    );
    Ok(())
}

fn proxier(mode: &str) -> anyhow::Result<Box<dyn Backend>> {
    let local = LocalDetector::Cidrs(vec![
        Cidr::parse("10.128.0.0/10").map_err(anyhow::Error::msg)?,
    ]);
    Ok(match mode {
        "iptables" | "iptables-legacy" | "iptables-nft" => {
            Box::new(berth_proxy::iptables::IptablesProxier::new(
                berth_proxy::iptables::SystemNetfilter::new(match mode {
                    "iptables-legacy" => IptablesVariant::Legacy,
                    "iptables-nft" => IptablesVariant::Nft,
                    _ => IptablesVariant::System,
                }),
                berth_proxy::iptables::IptablesOptions {
                    families: vec![false],
                    masquerade_all: false,
                    masquerade_bit: 14,
                    local,
                    node_port_addresses: NodePortAddresses::All,
                    localhost_node_ports: true,
                },
            ))
        }
        "nftables" => Box::new(berth_proxy::nftables::NftProxier::new(
            berth_proxy::nftables::SystemNft,
            berth_proxy::nftables::NftOptions {
                families: vec![false],
                masquerade_all: false,
                masquerade_bit: 14,
                local,
                node_port_addresses: NodePortAddresses::All,
            },
        )),
        other => anyhow::bail!(
            "unknown mode {other}: iptables, iptables-legacy, iptables-nft or nftables"
        ),
    })
}
