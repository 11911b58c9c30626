//! Sync planning against a recording double: which objects and elements each
//! transaction touches. What the rules look like in the kernel is checked by the
//! integration tests against `nft list` output.

use super::ruleset::SharedSet;
use super::*;
use crate::model::{ChangeTracker, SERVICE_NAME_LABEL};
use crate::net::Cidr;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

#[derive(Default)]
struct Recorder {
    transactions: Vec<Vec<String>>,
    kernel_chains: Vec<String>,
    fail_next: bool,
}

impl Nft for Recorder {
    fn commit(&mut self, batch: Batch) -> Result<(), NftError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(NftError::Protocol("refused".into()));
        }
        if !batch.is_empty() {
            self.transactions.push(batch.log.clone());
        }
        Ok(())
    }
    fn list(&mut self, _: u8, _: &str, sets: bool) -> Result<Vec<String>, NftError> {
        Ok(if sets {
            vec![]
        } else {
            self.kernel_chains.clone()
        })
    }
    fn table_exists(&mut self, _: u8, _: &str) -> bool {
        true
    }
}

impl NftProxier<Recorder> {
    fn last(&mut self) -> Vec<String> {
        self.nft().transactions.last().cloned().unwrap_or_default()
    }
}

fn options() -> NftOptions {
    NftOptions {
        families: vec![false],
        masquerade_all: false,
        masquerade_bit: 14,
        local: LocalDetector::Cidrs(vec![Cidr::parse("10.244.0.0/16").unwrap()]),
        node_port_addresses: NodePortAddresses::All,
    }
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    json_patch::merge(&mut spec, &extra);
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": format!("{svc}-1"), "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap()
}

fn with<'a>(log: &'a [String], needle: &str) -> Vec<&'a str> {
    log.iter()
        .map(String::as_str)
        .filter(|l| l.contains(needle))
        .collect()
}

fn position(log: &[String], prefix: &str) -> usize {
    log.iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {log:#?}"))
}

#[test]
fn full_sync_builds_the_table_with_verdict_maps() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("web", "198.19.0.10", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]})));
    t.apply_slice(&slice("web", &["10.244.1.2", "10.244.1.3"]));
    t.apply_service(&service("empty", "198.19.0.11", json!({})));
    let mut p = NftProxier::new(
        Recorder {
            kernel_chains: vec![
                "service-OLDAAAAA-ns/gone/tcp/http".into(),
                "services".into(),
            ],
            ..Default::default()
        },
        options(),
    );
    assert!(p.sync(&t.snapshot(), false).unwrap().full);
    let s = p.last();
    assert_eq!(s[0], "add table kube-proxy");
    for set in SharedSet::ALL {
        assert!(s.contains(&format!("add set {}", set.name())), "{s:#?}");
        assert!(s.contains(&format!("flush set {}", set.name())), "{s:#?}");
    }
    for chain in ["services", "nat-prerouting", "masquerading", "filter-input"] {
        assert!(s.contains(&format!("add chain {chain}")));
        assert!(s.contains(&format!("flush chain {chain}")));
    }
    let dispatch = with(
        &s,
        "add element service-ips { 198.19.0.10 . tcp . 80 : goto service-",
    );
    assert_eq!(dispatch.len(), 1, "{s:#?}");
    let chain = dispatch[0]
        .split("goto ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" }");
    assert!(chain.ends_with("-ns/web/tcp/http"), "{chain}");
    assert_eq!(
        with(&s, &format!("add rule {chain} ")).len(),
        2,
        "masquerade check and a DNAT to a destination from an endpoint map"
    );
    let keys = with(&s, "add 2 endpoint keys from ");
    assert_eq!(keys.len(), 1, "{s:#?}");
    let map = keys[0].rsplit(' ').next().unwrap();
    assert!(position(&s, &format!("add map {map}")) < position(&s, &format!("add rule {chain}")));
    assert!(
        position(&s, &format!("add rule {chain}")) < position(&s, keys[0]),
        "map elements come after the rules that bind the map"
    );
    assert!(
        with(&s, "Anonymous").is_empty(),
        "no map per Service: {s:#?}"
    );
    assert!(
        position(&s, &format!("add chain {chain}")) < position(&s, &format!("add rule {chain}"))
    );
    assert!(
        position(&s, &format!("add rule {chain}")) < position(&s, "add element service-ips"),
        "chains exist before elements point to them"
    );
    assert!(
        with(&s, "chain endpoint-").is_empty(),
        "no per-endpoint chains without affinity"
    );
    assert!(s.contains(&"add element hairpin-endpoints { 10.244.1.2 . 10.244.1.2 }".to_string()));
    assert_eq!(
        with(
            &s,
            "add element service-nodeports { tcp . 30080 : goto external-"
        )
        .len(),
        1
    );
    assert!(
        s.contains(
            &"add element no-endpoint-services { 198.19.0.11 . tcp . 80 : goto reject-chain }"
                .to_string()
        )
    );
    assert!(s.contains(&"add element cluster-ips { 198.19.0.11 }".to_string()));
    assert!(
        s.contains(&"delete chain service-OLDAAAAA-ns/gone/tcp/http".to_string()),
        "leftover chains are removed"
    );
    assert!(
        position(&s, "flush chain service-OLDAAAAA")
            < position(&s, "delete chain service-OLDAAAAA")
    );
    assert!(!s.contains(&"delete chain services".to_string()));
}

#[test]
fn partial_sync_sends_only_the_difference() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("a", "198.19.0.10", json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "alt", "port": 81, "protocol": "TCP"}]})));
    t.apply_service(&service("b", "198.19.0.11", json!({})));
    t.apply_slice(&slice("a", &["10.244.1.2"]));
    t.apply_slice(&slice("b", &["10.244.2.2"]));
    let mut p = NftProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();

    t.apply_slice(&slice("a", &["10.244.1.2", "10.244.1.9"]));
    assert!(!p.sync(&t.snapshot(), false).unwrap().full);
    let s = p.last();
    assert!(with(&s, "ns/b/").is_empty(), "b untouched:\n{s:#?}");
    assert!(with(&s, "add table").is_empty() && with(&s, "flush set").is_empty());
    assert_eq!(
        with(&s, " element "),
        ["add element hairpin-endpoints { 10.244.1.9 . 10.244.1.9 }"],
        "only the new endpoint's hairpin entry; the dispatch did not change:\n{s:#?}"
    );
    assert_eq!(
        with(&s, "add rule service-").len(),
        2,
        "only the changed chain is rewritten (masquerade check and the DNAT):\n{s:#?}"
    );
    let keys = with(&s, "endpoint keys");
    assert_eq!(keys.len(), 2, "{s:#?}");
    assert!(
        keys[0].starts_with("delete 1 endpoint keys from "),
        "{s:#?}"
    );
    assert!(keys[1].starts_with("add 2 endpoint keys from "), "{s:#?}");

    // Nothing changed: nothing is sent.
    t.apply_slice(&slice("a", &["10.244.1.2", "10.244.1.9"]));
    let before = p.nft().transactions.len();
    p.sync(&t.snapshot(), false).unwrap();
    assert_eq!(p.nft().transactions.len(), before);

    // An endpoint changes address: its key gets the new destination and no rule is
    // sent, so the kernel has no rules to validate.
    t.apply_slice(&slice("a", &["10.244.1.2", "10.244.1.8"]));
    assert!(!p.sync(&t.snapshot(), false).unwrap().full);
    let s = p.last();
    assert!(with(&s, "rule").is_empty(), "{s:#?}");
    assert!(with(&s, "chain").is_empty(), "{s:#?}");
    let keys = with(&s, "endpoint keys");
    assert_eq!(keys.len(), 2, "{s:#?}");
    assert!(
        keys[0].starts_with("delete 2 endpoint keys from "),
        "{s:#?}"
    );
    assert!(
        keys[1].starts_with("add 2 endpoint keys from "),
        "keys are freed before they are added again: {s:#?}"
    );

    // The Service loses its endpoints; the ClusterIP stays in cluster-ips.
    t.apply_slice(&slice("a", &[]));
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.last();
    assert_eq!(
        with(&s, "delete element service-ips { 198.19.0.10 . tcp . 80 }").len(),
        1,
        "{s:#?}"
    );
    assert!(
        s.contains(
            &"add element no-endpoint-services { 198.19.0.10 . tcp . 80 : goto reject-chain }"
                .to_string()
        )
    );
    assert!(with(&s, "cluster-ips").is_empty(), "{s:#?}");
    assert!(
        position(&s, "delete element") < position(&s, "delete chain"),
        "references go before chains"
    );
    assert!(position(&s, "flush chain") < position(&s, "delete chain"));

    t.delete_service(&service("a", "198.19.0.10", json!({})));
    p.sync(&t.snapshot(), false).unwrap();
    assert_eq!(
        with(&p.last(), "cluster-ips"),
        ["delete element cluster-ips { 198.19.0.10 }"],
        "the shared ClusterIP goes once both ports are gone"
    );
}

#[test]
fn affinity_uses_dynamic_sets_and_failure_falls_back_to_full() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("s", "198.19.0.10", json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}})));
    t.apply_slice(&slice("s", &["10.244.1.2"]));
    let mut p = NftProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.last();
    let set_line = with(&s, "add set affinity-")[0].to_string();
    assert!(set_line.ends_with(" timeout 30s"), "{set_line}");
    assert!(set_line.contains("__10.244.1.2/8080"), "{set_line}");
    assert_eq!(with(&s, "add rule endpoint-").len(), 2, "{s:#?}");

    t.apply_slice(&slice("s", &["10.244.1.3"]));
    p.nft().fail_next = true;
    assert!(p.sync(&t.snapshot(), false).unwrap().full);
    let s = p.last();
    assert_eq!(with(&s, "add set affinity-").len(), 1);
    assert!(with(&s, "add set affinity-")[0].contains("__10.244.1.3/8080"));
}

#[test]
fn only_per_service_names_count_as_leftovers() {
    assert!(is_per_service("service-ULMVA6XW-ns1/svc1/tcp/p80"));
    assert!(is_per_service(
        "affinity-ABCDEFGH-ns/s/tcp/http__10.0.0.1/80"
    ));
    assert!(!is_per_service("service-endpoints-check"));
    assert!(!is_per_service("services"));
}

#[test]
fn ipv6_elements_use_ipv6_keys() {
    let svc: Service = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "v6"},
        "spec": {"clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"], "ports": [{"name": "http", "port": 80, "protocol": "UDP"}]}}))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "v6-1", "labels": {SERVICE_NAME_LABEL: "v6"}},
        "addressType": "IPv6", "endpoints": [{"addresses": ["fd00:244::5"]}], "ports": [{"name": "http", "port": 5353, "protocol": "UDP"}]}))
    .unwrap();
    let mut t = ChangeTracker::new("n");
    t.apply_service(&svc);
    t.apply_slice(&slice);
    let mut opts = options();
    opts.families = vec![true];
    opts.local = LocalDetector::Cidrs(vec![Cidr::parse("fd00:244::/64").unwrap()]);
    let mut p = NftProxier::new(Recorder::default(), opts);
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.last();
    assert_eq!(
        with(
            &s,
            "add element service-ips { fd00:96::10 . udp . 80 : goto service-"
        )
        .len(),
        1,
        "{s:#?}"
    );
    assert!(s.contains(&"add element hairpin-endpoints { fd00:244::5 . fd00:244::5 }".to_string()));
}

#[test]
fn many_elements_are_split_across_messages() {
    let mut t = ChangeTracker::new("node-a");
    let ips: Vec<String> = (0..5000)
        .map(|i| format!("10.244.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    t.apply_service(&service("big", "198.19.0.10", json!({})));
    t.apply_slice(&slice("big", &refs));
    let mut batch = Batch::new(FAMILY_IP);
    let snapshot = t.snapshot();
    let ctx = NftContext {
        v6: false,
        masquerade_all: false,
        local: LocalDetector::None,
    };
    let r = service_ruleset(entries(&snapshot.state).next().unwrap(), &ctx, 0);
    let hairpin: Vec<&Element> = r
        .elements
        .iter()
        .filter(|e| e.set == SharedSet::HairpinEndpoints)
        .collect();
    assert_eq!(hairpin.len(), 5000);
    let dnat = r.chains.values().flatten().filter(|rule| {
        rule.iter()
            .any(|e| matches!(e, expr::Expr::NumgenRandom { modulus: 5000, .. }))
    });
    assert_eq!(dnat.count(), 1, "many endpoints are picked from one map");
    ops::add_elements(&mut batch, TABLE, SharedSet::HairpinEndpoints, hairpin);
    assert!(batch.messages > 1, "one attribute holds at most 64 KiB");
    let (bytes, offsets, _) = batch.finish();
    for &o in &offsets[1..] {
        let o = o as usize;
        let len = u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        for (ty, data) in netlink::attrs(&bytes[o..o + len]) {
            assert!(
                data.len() < 65_535,
                "attribute {ty} of {} bytes",
                data.len()
            );
        }
    }
}
