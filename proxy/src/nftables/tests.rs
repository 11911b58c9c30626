//! nftables script generation and sync planning against a recording double.

use super::*;
use crate::iptables::ExecError;
use crate::model::{ChangeTracker, SERVICE_NAME_LABEL};
use crate::net::Cidr;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

#[derive(Default)]
struct Recorder {
    scripts: Vec<String>,
    kernel_chains: Vec<String>,
    fail_next: bool,
}

impl Nft for Recorder {
    fn apply(&mut self, script: &str) -> Result<(), ExecError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(ExecError::Failed {
                program: "nft".into(),
                status: "1".into(),
                stderr: "Error".into(),
            });
        }
        self.scripts.push(script.to_string());
        Ok(())
    }
    fn list(&mut self, _: &str, _: &str, sets: bool) -> Result<Vec<String>, ExecError> {
        Ok(if sets {
            vec![]
        } else {
            self.kernel_chains.clone()
        })
    }
    fn table_exists(&mut self, _: &str, _: &str) -> bool {
        true
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

fn lines<'a>(script: &'a str, needle: &str) -> Vec<&'a str> {
    script.lines().filter(|l| l.contains(needle)).collect()
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
    let s = p.nft().scripts[0].clone();
    assert!(s.starts_with("add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n"));
    assert!(s.contains("add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }"));
    assert!(s.contains(
        "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"
    ));
    assert!(s.contains(
        "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }"
    ));
    let svc_chain = lines(
        &s,
        "add element ip kube-proxy service-ips { 198.19.0.10 . tcp . 80 : goto service-",
    );
    assert_eq!(svc_chain.len(), 1, "{s}");
    let chain = svc_chain[0]
        .split("goto ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" }");
    assert!(chain.ends_with("-ns/web/tcp/http"), "{chain}");
    let rules = lines(&s, &format!("add rule ip kube-proxy {chain} "));
    assert_eq!(
        rules[0],
        format!(
            "add rule ip kube-proxy {chain} ip daddr 198.19.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
        )
    );
    assert_eq!(
        rules[1],
        format!(
            "add rule ip kube-proxy {chain} meta l4proto tcp dnat ip addr . port to numgen random mod 2 map {{ 0 : 10.244.1.2 . 8080, 1 : 10.244.1.3 . 8080 }}"
        )
    );
    assert!(
        !s.contains("chain ip kube-proxy endpoint-"),
        "no per-endpoint chains without affinity"
    );
    assert!(s.contains("add element ip kube-proxy hairpin-endpoints { 10.244.1.2 . 10.244.1.2 }"));
    assert!(s.contains("add rule ip kube-proxy masquerading ct status dnat ip saddr . ip daddr @hairpin-endpoints masquerade fully-random"));
    assert!(
        s.contains("add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-")
    );
    assert!(s.contains("add element ip kube-proxy no-endpoint-services { 198.19.0.11 . tcp . 80 : goto reject-chain }"));
    assert!(s.contains("add element ip kube-proxy cluster-ips { 198.19.0.11 }"));
    assert!(
        s.contains("delete chain ip kube-proxy service-OLDAAAAA-ns/gone/tcp/http"),
        "leftover chains are removed"
    );
    assert!(!s.contains("delete chain ip kube-proxy services"));
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
    let s = p.nft().scripts.last().unwrap().clone();
    assert!(!s.contains("ns/b/"), "b untouched:\n{s}");
    assert_eq!(
        lines(&s, "element"),
        ["add element ip kube-proxy hairpin-endpoints { 10.244.1.9 . 10.244.1.9 }"],
        "only the new endpoint's hairpin entry; the dispatch did not change:\n{s}"
    );
    assert!(s.contains("numgen random mod 2 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.1.9 . 8080 }"));

    // One port loses its endpoints... the ClusterIP stays in cluster-ips (shared with "alt").
    t.apply_slice(&slice("a", &[]));
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.nft().scripts.last().unwrap().clone();
    assert!(
        s.contains("delete element ip kube-proxy service-ips { 198.19.0.10 . tcp . 80 }"),
        "{s}"
    );
    assert!(s.contains("add element ip kube-proxy no-endpoint-services { 198.19.0.10 . tcp . 80 : goto reject-chain }"));
    assert!(!s.contains("cluster-ips"), "{s}");
    assert!(
        s.find("delete element").unwrap() < s.find("delete chain").unwrap(),
        "references go before chains"
    );

    t.delete_service(&service("a", "198.19.0.10", json!({})));
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.nft().scripts.last().unwrap().clone();
    assert_eq!(
        lines(&s, "cluster-ips").len(),
        1,
        "the shared ClusterIP goes once both ports are gone:\n{s}"
    );
}

#[test]
fn affinity_uses_dynamic_sets_and_failure_falls_back_to_full() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("s", "198.19.0.10", json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}})));
    t.apply_slice(&slice("s", &["10.244.1.2"]));
    let mut p = NftProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let s = p.nft().scripts[0].clone();
    let set_line = lines(&s, "add set ip kube-proxy affinity-")[0].to_string();
    assert!(
        set_line.ends_with("{ type ipv4_addr ; flags dynamic,timeout ; timeout 30s ; }"),
        "{set_line}"
    );
    let set = set_line.split_whitespace().nth(4).unwrap();
    assert!(s.contains(&format!("update @{set} {{ ip saddr }}")));
    assert!(s.contains(&format!("ip saddr @{set} goto endpoint-")));

    t.apply_slice(&slice("s", &["10.244.1.3"]));
    p.nft().fail_next = true;
    assert!(p.sync(&t.snapshot(), false).unwrap().full);
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
fn ipv6_table_uses_ip6_syntax() {
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
    let s = p.nft().scripts[0].clone();
    assert!(s.starts_with("add table ip6 kube-proxy"));
    assert!(s.contains("add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }"));
    assert!(s.contains(
        "add element ip6 kube-proxy service-ips { fd00:96::10 . udp . 80 : goto service-"
    ));
    assert!(s.contains("ip6 saddr != fd00:244::/64 jump mark-for-masquerade"));
    assert!(s.contains("meta l4proto udp dnat ip6 addr . port to numgen random mod 1 map { 0 : fd00:244::5 . 5353 }"), "{s}");
}
