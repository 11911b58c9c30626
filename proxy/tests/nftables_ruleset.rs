//! The nftables table the proxy programs, compared with a reference listing, and its
//! repair after tampering and a restart. Each test runs in a network namespace of its own.
//!
//! The reference (`nftables_ruleset/*.nft`) is `nft list table` output with its sets
//! and chains sorted; it was first recorded from the `nft -f` implementation, so the
//! netlink one must program the same table. Regenerate it with `BERTH_UPDATE_GOLDEN=1`
//! only after an intended change.

mod common;

use berth_proxy::backend::Backend;
use berth_proxy::config::{LocalDetector, NodePortAddresses};
use berth_proxy::model::{ChangeTracker, SERVICE_NAME_LABEL, Snapshot};
use berth_proxy::net::Cidr;
use berth_proxy::nftables::{NftOptions, NftProxier, SystemNft};
use common::NetNs;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn service(name: &str, ips: &[&str], spec: Value) -> Service {
    let mut full = json!({"clusterIP": ips[0], "clusterIPs": ips,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    json_patch::merge(&mut full, &spec);
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": full}))
        .unwrap()
}

fn slice(svc: &str, suffix: &str, v6: bool, eps: &[(&str, &str)]) -> EndpointSlice {
    let eps: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": format!("{svc}-{suffix}"), "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": if v6 { "IPv6" } else { "IPv4" }, "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap()
}

/// Services covering every rule shape: ClusterIP, NodePort, LoadBalancer with source
/// ranges, external IPs, local traffic policies, ClientIP affinity, no endpoints, and
/// a dual-stack Service.
fn tracker() -> ChangeTracker {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("plain", &["198.19.0.10"], json!({})));
    t.apply_slice(&slice(
        "plain",
        "a",
        false,
        &[("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")],
    ));
    t.apply_service(&service(
        "nodeport",
        &["198.19.0.11"],
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    ));
    t.apply_slice(&slice("nodeport", "a", false, &[("10.244.1.3", "node-b")]));
    let mut lb = service(
        "lb",
        &["198.19.0.12"],
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["203.0.113.0/24", "198.51.100.0/25"],
            "externalIPs": ["192.0.2.7"], "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30081}]}),
    );
    lb.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.8"}]}}))
        .unwrap();
    t.apply_service(&lb);
    t.apply_slice(&slice(
        "lb",
        "a",
        false,
        &[("10.244.1.4", "node-a"), ("10.244.2.4", "node-b")],
    ));
    t.apply_service(&service(
        "sticky",
        &["198.19.0.13"],
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    ));
    t.apply_slice(&slice(
        "sticky",
        "a",
        false,
        &[("10.244.1.5", "node-a"), ("10.244.2.5", "node-b")],
    ));
    t.apply_service(&service(
        "internal-local",
        &["198.19.0.14"],
        json!({"internalTrafficPolicy": "Local"}),
    ));
    t.apply_slice(&slice(
        "internal-local",
        "a",
        false,
        &[("10.244.2.6", "node-b")],
    ));
    t.apply_service(&service(
        "empty",
        &["198.19.0.15"],
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30082}]}),
    ));
    t.apply_service(&service(
        "dual",
        &["198.19.0.16", "fd00:96::16"],
        json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
    ));
    t.apply_slice(&slice("dual", "a", false, &[("10.244.1.7", "node-a")]));
    t.apply_slice(&slice("dual", "b", true, &[("fd00:244::7", "node-a")]));
    t
}

fn options() -> NftOptions {
    NftOptions {
        families: vec![false, true],
        masquerade_all: false,
        masquerade_bit: 14,
        local: LocalDetector::Cidrs(vec![
            Cidr::parse("10.244.0.0/16").unwrap(),
            Cidr::parse("fd00:244::/64").unwrap(),
        ]),
        node_port_addresses: NodePortAddresses::All,
    }
}

/// `nft list table`, its sets, maps and chains sorted by their text: the kernel lists
/// them in creation order, which differs between a full and an incremental sync.
/// Elements are listed sorted and rules keep their order inside their chain.
fn listing(ns: &NetNs, family: &str) -> String {
    let text = ns.exec("nft", &["list", "table", family, "kube-proxy"]);
    let mut blocks = Vec::new();
    let mut block = String::new();
    for line in text.lines() {
        let table_level = line.starts_with('\t') && !line.starts_with("\t\t");
        if line.starts_with("table ")
            || line == "}"
            || (table_level && line.trim().starts_with("comment "))
        {
            continue;
        }
        if line.trim().is_empty() {
            blocks.push(std::mem::take(&mut block));
            continue;
        }
        block.push_str(line);
        block.push('\n');
    }
    blocks.push(block);
    blocks.retain(|b| !b.is_empty());
    blocks.sort();
    blocks.join("\n")
}

/// `listing` with each endpoint map lookup replaced by the destinations it picks
/// from, and without the endpoint maps: where a Service port's keys lie in the shared
/// maps depends on the order of syncs, the destinations it picks from do not.
fn endpoint_maps_resolved(listing: &str) -> String {
    let mut destinations: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut kept = Vec::new();
    for block in listing.split("\n\n") {
        let head = block.lines().next().unwrap_or("").trim();
        let Some(map) = head
            .strip_prefix("map ")
            .and_then(|h| h.strip_suffix(" {"))
            .filter(|m| m.starts_with("endpoints-"))
        else {
            kept.push(block);
            continue;
        };
        let text: String = block.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        let elements = text.split("elements = {").nth(1).unwrap_or("");
        let elements = elements.split('}').next().unwrap_or("");
        for element in elements.split(',').filter(|e| !e.trim().is_empty()) {
            let (key, destination) = element.split_once(" : ").unwrap();
            destinations.insert(
                (map.to_string(), key.trim().parse().unwrap()),
                destination.trim().to_string(),
            );
        }
    }
    let resolve = |line: &str| -> String {
        let Some((before, lookup)) = line.split_once("numgen random mod ") else {
            return line.to_string();
        };
        let Some((choice, map)) = lookup.split_once(" map @endpoints-") else {
            return line.to_string();
        };
        let mut words = choice.split(' ');
        let n: u64 = words.next().unwrap().parse().unwrap();
        let offset: u64 = match (words.next(), words.next()) {
            (Some("offset"), Some(o)) => o.parse().unwrap(),
            _ => 0,
        };
        let map = format!("endpoints-{map}");
        let picks: Vec<&str> = (offset..offset + n)
            .map(|k| destinations[&(map.clone(), k)].as_str())
            .collect();
        format!(
            "{before}numgen random mod {n} map {{ {} }}",
            picks.join(", ")
        )
    };
    let mut blocks: Vec<String> = kept
        .iter()
        .map(|b| b.lines().map(resolve).collect::<Vec<_>>().join("\n"))
        .collect();
    blocks.sort();
    blocks.join("\n\n")
}

fn check_golden(name: &str, actual: &str) {
    let path = format!(
        "{}/tests/nftables_ruleset/{name}.nft",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        actual, expected,
        "{name}: the programmed table differs from {path}"
    );
}

fn sync(ns: &NetNs, snapshot: Snapshot, full: bool) {
    ns.enter(move || {
        let mut p = NftProxier::new(SystemNft, options());
        p.sync(&snapshot, full).unwrap();
    });
}

#[test]
fn full_sync_programs_the_reference_table() {
    let ns = NetNs::new("nftgold");
    sync(&ns, tracker().snapshot(), true);
    check_golden("full-ip", &listing(&ns, "ip"));
    check_golden("full-ip6", &listing(&ns, "ip6"));
    assert_listing_loads_back(&ns);
}

/// What `nft list ruleset` prints of the table (an operator's saved ruleset) is
/// valid input for `nft -f`.
fn assert_listing_loads_back(ns: &NetNs) {
    let saved = std::env::temp_dir().join(format!("berth-nft-saved-{}", std::process::id()));
    std::fs::write(&saved, ns.exec("nft", &["list", "ruleset"])).unwrap();
    let fresh = NetNs::new("nftload");
    let loaded = fresh.try_exec("nft", &["-f", saved.to_str().unwrap()]);
    std::fs::remove_file(&saved).unwrap();
    assert!(loaded, "nft -f cannot load the listed table back");
}

#[test]
fn partial_syncs_end_in_the_same_table_as_a_full_sync() {
    // One proxier lives through a series of changes, synced incrementally...
    let changing = NetNs::new("nftinc");
    let snapshots = changing.enter(|| {
        let mut t = tracker();
        let mut p = NftProxier::new(SystemNft, options());
        p.sync(&t.snapshot(), true).unwrap();
        // An endpoint moves, a Service loses its endpoints, one is deleted, one gains
        // affinity, and a new one appears.
        t.apply_slice(&slice(
            "plain",
            "a",
            false,
            &[("10.244.1.2", "node-a"), ("10.244.2.9", "node-b")],
        ));
        t.apply_slice(&slice("nodeport", "a", false, &[]));
        t.delete_service(&service("internal-local", &["198.19.0.14"], json!({})));
        t.apply_service(&service(
            "plain",
            &["198.19.0.10"],
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        ));
        t.apply_service(&service("new", &["198.19.0.17"], json!({})));
        t.apply_slice(&slice("new", "a", false, &[("10.244.1.2", "node-a")]));
        let report = p.sync(&t.snapshot(), false).unwrap();
        assert!(!report.full, "the changes went through a partial sync");
        t.apply_slice(&slice("sticky", "a", false, &[("10.244.2.5", "node-b")]));
        assert!(!p.sync(&t.snapshot(), false).unwrap().full);
        // The final state, for a fresh proxier.
        let mut fresh = tracker();
        fresh.apply_slice(&slice(
            "plain",
            "a",
            false,
            &[("10.244.1.2", "node-a"), ("10.244.2.9", "node-b")],
        ));
        fresh.apply_slice(&slice("nodeport", "a", false, &[]));
        fresh.delete_service(&service("internal-local", &["198.19.0.14"], json!({})));
        fresh.apply_service(&service(
            "plain",
            &["198.19.0.10"],
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        ));
        fresh.apply_service(&service("new", &["198.19.0.17"], json!({})));
        fresh.apply_slice(&slice("new", "a", false, &[("10.244.1.2", "node-a")]));
        fresh.apply_slice(&slice("sticky", "a", false, &[("10.244.2.5", "node-b")]));
        fresh.snapshot()
    });
    // ...and a fresh one programs the final state at once.
    let fresh = NetNs::new("nftfresh");
    sync(&fresh, snapshots, true);
    for family in ["ip", "ip6"] {
        assert_eq!(
            endpoint_maps_resolved(&listing(&changing, family)),
            endpoint_maps_resolved(&listing(&fresh, family)),
            "{family}: incremental and full syncs differ"
        );
    }
}

#[test]
fn restart_and_tampering_are_repaired_by_a_full_sync() {
    let ns = NetNs::new("nfttamper");
    sync(&ns, tracker().snapshot(), true);
    // Leftovers of a Service deleted while the proxy was down, and a chain emptied by hand.
    let chains = ns.exec("nft", &["list", "chains", "ip"]);
    let plain = chains
        .lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix("chain ")
                .filter(|c| c.starts_with("service-") && c.contains("ns/plain/"))
        })
        .unwrap()
        .trim_end_matches(" {")
        .to_string();
    ns.exec("nft", &["flush", "chain", "ip", "kube-proxy", &plain]);
    ns.exec(
        "nft",
        &[
            "add",
            "chain",
            "ip",
            "kube-proxy",
            "service-AAAAAAAA-ns/gone/tcp/http",
        ],
    );
    ns.exec(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "kube-proxy",
            "service-AAAAAAAA-ns/gone/tcp/http",
            "jump",
            "mark-for-masquerade",
        ],
    );
    // A restarted proxy starts with a full sync.
    sync(&ns, tracker().snapshot(), true);
    check_golden("full-ip", &listing(&ns, "ip"));

    // The table is deleted behind a running proxy's back: it notices and rewrites it.
    let table_gone = ns.enter(|| {
        let mut t = tracker();
        let mut p = NftProxier::new(SystemNft, options());
        p.sync(&t.snapshot(), true).unwrap();
        assert!(!p.tampered(), "nothing changed yet");
        let deleted = std::process::Command::new("nft")
            .args(["delete", "table", "ip", "kube-proxy"])
            .status()
            .unwrap();
        assert!(deleted.success());
        assert!(p.tampered());
        p.sync(&t.snapshot(), false).unwrap().full
    });
    assert!(table_gone, "a tampered table gets a full sync");
    check_golden("full-ip", &listing(&ns, "ip"));
    check_golden("full-ip6", &listing(&ns, "ip6"));
}

#[test]
fn interface_detection_and_node_port_addresses_program_the_reference_table() {
    let variants = [
        (
            "iface-prefix",
            NftOptions {
                local: LocalDetector::InterfaceNamePrefix("veth".into()),
                node_port_addresses: NodePortAddresses::Cidrs(vec![
                    Cidr::parse("198.18.1.0/24").unwrap(),
                    Cidr::parse("192.0.2.9/32").unwrap(),
                    Cidr::parse("fd00:1::/64").unwrap(),
                ]),
                ..options()
            },
        ),
        (
            "bridge-masquerade-all",
            NftOptions {
                local: LocalDetector::BridgeInterface("cni0".into()),
                masquerade_all: true,
                ..options()
            },
        ),
    ];
    for (name, opts) in variants {
        let ns = NetNs::new("nftvar");
        let snapshot = tracker().snapshot();
        ns.enter(move || {
            let mut p = NftProxier::new(SystemNft, opts);
            p.sync(&snapshot, true).unwrap();
        });
        check_golden(&format!("{name}-ip"), &listing(&ns, "ip"));
        check_golden(&format!("{name}-ip6"), &listing(&ns, "ip6"));
    }
}
