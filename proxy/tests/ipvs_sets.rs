//! IPVS mode's ipset and iptables parts, applied for real inside a test namespace
//! (this machine has no IPVS module, so virtual servers are tested at the netlink seam).

mod common;

use berth_proxy::ipvs::plan::{self, IpvsPlan};
use berth_proxy::model::{ChangeTracker, SERVICE_NAME_LABEL};
use common::NetNs;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn plan_for(endpoint: &str) -> IpvsPlan {
    let mut t = ChangeTracker::new("node-a");
    let svc = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web"},
        "spec": {"type": "NodePort", "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}))
    .unwrap();
    t.apply_service(&svc);
    let slice = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web-1", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": [endpoint]}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap();
    t.apply_slice(&slice);
    plan::plan(&t.snapshot().state, &["198.18.1.1".parse().unwrap()], "rr")
}

fn feed(ns: &NetNs, cmd: &str, args: &[&str], input: &str) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipsets_and_rules_apply_and_follow_changes() {
    let ns = NetNs::new("i");
    feed(
        &ns,
        "ipset",
        &["restore"],
        &plan::ipset_restore(&plan_for("198.18.2.11"), false),
    );
    feed(
        &ns,
        "iptables-restore",
        &["--noflush"],
        &plan::iptables_restore("0x4000", Some("! -s 198.18.2.0/24")),
    );
    let sets = ns.exec("ipset", &["list", "KUBE-CLUSTER-IP"]);
    assert!(sets.contains("198.19.0.10,tcp:80"), "{sets}");
    assert!(
        ns.exec("ipset", &["list", "KUBE-LOOP-BACK"])
            .contains("198.18.2.11,tcp:8080,198.18.2.11")
    );
    assert!(
        ns.exec("ipset", &["list", "KUBE-NODE-PORT-TCP"])
            .contains("30080")
    );
    let rules = ns.exec("iptables-save", &["-t", "nat"]);
    assert!(
        rules.contains("-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"),
        "{rules}"
    );
    assert!(rules.contains("-m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"));

    // The endpoint moves: the restore replaces set contents rather than adding to them.
    feed(
        &ns,
        "ipset",
        &["restore"],
        &plan::ipset_restore(&plan_for("198.18.2.12"), false),
    );
    let loopback = ns.exec("ipset", &["list", "KUBE-LOOP-BACK"]);
    assert!(
        loopback.contains("198.18.2.12,tcp:8080,198.18.2.12") && !loopback.contains("198.18.2.11"),
        "{loopback}"
    );
}
