//! ADD+DEL of bridge with host-local, ours against the reference plugins in
//! /usr/lib/cni, same config, same run, in test-made namespaces.
//!
//! `cargo bench -p berth-cni --bench add_del [-- ITERATIONS [PARALLEL]]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn conf(data: &Path, masq: bool, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": bridge,
        "isGateway": true, "ipMasq": masq,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]]}
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

/// One serial ADD+DEL cycle; returns its wall time.
fn cycle(bin: &Path, host: &TestNetns, pod: &TestNetns, conf: &Value, id: &str) -> Duration {
    let inv = Invocation::new("ADD", id, &pod.path(), bin, Some(host));
    let t = Instant::now();
    inv.run("bridge", conf).ok();
    inv.with_command("DEL").run("bridge", conf).ok();
    t.elapsed()
}

/// ADDs `n` pods at once; returns the time until the last finished. DELs afterwards (untimed).
fn parallel(bin: &Path, host: &TestNetns, pods: &[TestNetns], conf: &Value, tag: &str) -> Duration {
    let conf = Arc::new(conf.clone());
    let invs: Vec<Invocation> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| Invocation::new("ADD", &format!("{tag}-{i}"), &p.path(), bin, Some(host)))
        .collect();
    let t = Instant::now();
    let handles: Vec<_> = invs
        .iter()
        .cloned()
        .map(|inv| {
            let conf = Arc::clone(&conf);
            std::thread::spawn(move || inv.run("bridge", &conf).ok().clone())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let took = t.elapsed();
    for inv in invs {
        inv.with_command("DEL").run("bridge", &conf).ok();
    }
    took
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let iterations: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let n_parallel: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let ours = our_bin_dir();
    let reference = PathBuf::from(REFERENCE_BIN_DIR);
    let host = TestNetns::new("bh");
    let pod = TestNetns::new("bp");
    let data = TempDir::new("bench");

    println!("bridge+host-local ADD+DEL, {iterations} iterations each, interleaved");
    for masq in [false, true] {
        let (mut t_ours, mut t_ref) = (Vec::new(), Vec::new());
        let c_ours = conf(&data.path().join("ours"), masq, "br-ours", "10.77.0.0/16");
        let c_ref = conf(&data.path().join("ref"), masq, "br-ref", "10.78.0.0/16");
        // Warm up: creates the bridges and page-caches the binaries.
        cycle(&ours, &host, &pod, &c_ours, "warm");
        cycle(&reference, &host, &pod, &c_ref, "warm");
        for i in 0..iterations {
            t_ours.push(cycle(&ours, &host, &pod, &c_ours, &format!("o{i}")));
            t_ref.push(cycle(&reference, &host, &pod, &c_ref, &format!("r{i}")));
        }
        let (mo, mr) = (median(&mut t_ours), median(&mut t_ref));
        println!(
            "  ipMasq={masq:<5} berth median {:>7.2} ms (p90 {:>7.2})   reference median {:>7.2} ms (p90 {:>7.2})   ratio {:.2}",
            mo.as_secs_f64() * 1e3,
            p90(&mut t_ours).as_secs_f64() * 1e3,
            mr.as_secs_f64() * 1e3,
            p90(&mut t_ref).as_secs_f64() * 1e3,
            mo.as_secs_f64() / mr.as_secs_f64()
        );
    }

    println!("{n_parallel} parallel ADDs (bridge+host-local, ipMasq=false)");
    let pods: Vec<TestNetns> = (0..n_parallel).map(|_| TestNetns::new("pp")).collect();
    let c_ours = conf(
        &data.path().join("ours-par"),
        false,
        "br-ours",
        "10.77.0.0/16",
    );
    let c_ref = conf(
        &data.path().join("ref-par"),
        false,
        "br-ref",
        "10.78.0.0/16",
    );
    let po = parallel(&ours, &host, &pods, &c_ours, "po");
    let pr = parallel(&reference, &host, &pods, &c_ref, "pr");
    println!(
        "  berth {:>8.1} ms   reference {:>8.1} ms   ratio {:.2}",
        po.as_secs_f64() * 1e3,
        pr.as_secs_f64() * 1e3,
        po.as_secs_f64() / pr.as_secs_f64()
    );
}
