//! The planned IPVS state; the kernel parts are applied for real in proxy/tests/ipvs_*.rs.

use super::ipset;
use super::netlink::{SVC_F_PERSISTENT, SVC_F_SOURCE_HASH};
use super::plan::{PlanInputs, plan};
use super::rules::{RuleInputs, restore_input};
use crate::model::{ChangeTracker, SERVICE_NAME_LABEL};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

fn tracker(spec: Value, eps: Value) -> ChangeTracker {
    let mut t = ChangeTracker::new("node-a");
    let svc = serde_json::from_value(
        json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}),
    )
    .unwrap();
    t.apply_service(&svc);
    let slice = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web-1", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap();
    t.apply_slice(&slice);
    t
}

fn node_port_spec(policy: &str) -> Value {
    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "externalIPs": ["192.0.2.7"],
           "externalTrafficPolicy": policy, "healthCheckNodePort": if policy == "Local" { 32000 } else { 0 },
           "sessionAffinity": "ClientIP", "loadBalancerSourceRanges": ["203.0.113.0/24"],
           "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]})
}

fn with_lb(mut t: ChangeTracker, spec: Value) -> ChangeTracker {
    let svc = serde_json::from_value(
        json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}}}),
    )
    .unwrap();
    t.apply_service(&svc);
    t
}

fn state(mut t: ChangeTracker) -> crate::model::DesiredState {
    t.snapshot().state
}

fn eps(list: &[(&str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
            .collect(),
    )
}

fn addrs(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn inputs<'a>(
    node_port_ips: &'a [IpAddr],
    node_addresses: &'a BTreeSet<IpAddr>,
    scheduler: &'a str,
) -> PlanInputs<'a> {
    PlanInputs {
        v6: false,
        scheduler,
        node_port_ips,
        node_addresses,
        node_ip: node_port_ips.first().copied(),
    }
}

#[test]
fn cluster_policy_plan_matches_upstream_sets_and_servers() {
    let t = with_lb(
        tracker(
            node_port_spec("Cluster"),
            eps(&[("10.244.1.2", "node-b"), ("10.244.1.3", "node-a")]),
        ),
        node_port_spec("Cluster"),
    );
    let node = ["198.18.0.1".parse().unwrap()];
    let node_addrs = addrs(&["198.18.0.1"]);
    let p = plan(&state(t), &inputs(&node, &node_addrs, "rr"));
    let keys: Vec<String> = p
        .services
        .keys()
        .map(|(a, proto, port)| format!("{a}/{proto}/{port}"))
        .collect();
    assert_eq!(
        keys,
        [
            "10.96.0.10/6/80",
            "192.0.2.7/6/80",
            "198.18.0.1/6/30080",
            "198.51.100.20/6/80"
        ]
    );
    for (vs, reals) in p.services.values() {
        assert_eq!((vs.flags, vs.timeout), (SVC_F_PERSISTENT, 10800));
        assert_eq!(reals.len(), 2, "{vs:?}");
    }
    assert_eq!(
        p.bound,
        addrs(&["10.96.0.10", "192.0.2.7", "198.51.100.20"])
    );
    let set = |n: &str| -> Vec<&str> {
        p.sets
            .get(n)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default()
    };
    assert_eq!(set(ipset::CLUSTER_IP), ["10.96.0.10,tcp:80"]);
    assert_eq!(set(ipset::EXTERNAL_IP), ["192.0.2.7,tcp:80"]);
    assert_eq!(set(ipset::LOAD_BALANCER), ["198.51.100.20,tcp:80"]);
    assert_eq!(set(ipset::LOAD_BALANCER_FW), ["198.51.100.20,tcp:80"]);
    assert_eq!(
        set(ipset::LOAD_BALANCER_SOURCE_CIDR),
        ["198.51.100.20,tcp:80,203.0.113.0/24"]
    );
    assert_eq!(set(ipset::NODE_PORT_TCP), ["30080"]);
    assert!(set(ipset::NODE_PORT_LOCAL_TCP).is_empty());
    assert_eq!(
        set(ipset::LOOP_BACK),
        ["10.244.1.3,tcp:8080,10.244.1.3"],
        "hairpin only for endpoints on this node"
    );
    assert_eq!(
        set(ipset::IPVS_IPS),
        ["10.96.0.10", "192.0.2.7", "198.51.100.20"]
    );
    // The node is not in the source ranges: it must not reach the LB address itself.
    assert_eq!(
        p.lb_no_node_access.iter().collect::<Vec<_>>(),
        [&("198.51.100.20".parse().unwrap(), "tcp", 80)]
    );
}

#[test]
fn local_policy_uses_local_endpoints_and_local_sets() {
    let t = with_lb(
        tracker(
            node_port_spec("Local"),
            eps(&[("10.244.1.2", "node-b"), ("10.244.1.3", "node-a")]),
        ),
        node_port_spec("Local"),
    );
    let node = ["198.18.0.1".parse().unwrap()];
    // The external IP is one of the node's own: it is not bound to kube-ipvs0.
    let node_addrs = addrs(&["198.18.0.1", "192.0.2.7"]);
    let p = plan(&state(t), &inputs(&node, &node_addrs, "mh"));
    let reals = |k: (&str, u16)| -> Vec<String> {
        p.services[&(k.0.parse().unwrap(), 6, k.1)]
            .1
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    assert_eq!(
        reals(("10.96.0.10", 80)),
        ["10.244.1.2:8080", "10.244.1.3:8080"]
    );
    for external in [
        ("192.0.2.7", 80),
        ("198.18.0.1", 30080),
        ("198.51.100.20", 80),
    ] {
        assert_eq!(reals(external), ["10.244.1.3:8080"], "{external:?}");
    }
    let (vs, _) = &p.services[&("10.96.0.10".parse().unwrap(), 6, 80)];
    assert_eq!(vs.flags, SVC_F_PERSISTENT | SVC_F_SOURCE_HASH, "mh hashes");
    assert_eq!(p.bound, addrs(&["10.96.0.10", "198.51.100.20"]));
    for (set, member) in [
        (ipset::EXTERNAL_IP_LOCAL, "192.0.2.7,tcp:80"),
        (ipset::LOAD_BALANCER_LOCAL, "198.51.100.20,tcp:80"),
        (ipset::NODE_PORT_LOCAL_TCP, "30080"),
        (ipset::NODE_PORT_TCP, "30080"),
        (ipset::HEALTH_CHECK_NODE_PORT, "32000"),
    ] {
        assert!(p.sets[set].contains(member), "{set}: {:?}", p.sets.get(set));
    }
    assert!(!p.sets.contains_key(ipset::EXTERNAL_IP));

    // No endpoint here: external traffic falls back to the cluster's endpoints.
    let remote_only = with_lb(
        tracker(node_port_spec("Local"), eps(&[("10.244.1.2", "node-b")])),
        node_port_spec("Local"),
    );
    let p = plan(&state(remote_only), &inputs(&node, &node_addrs, "rr"));
    assert_eq!(
        p.services[&("198.18.0.1".parse().unwrap(), 6, 30080)]
            .1
            .len(),
        1
    );
}

#[test]
fn internal_local_policy_without_local_endpoints_has_no_real_servers() {
    let spec = json!({"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"], "internalTrafficPolicy": "Local",
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    let t = tracker(spec, eps(&[("10.244.1.2", "node-b")]));
    let none = BTreeSet::new();
    let p = plan(&state(t), &inputs(&[], &none, "rr"));
    assert!(
        p.services[&("10.96.0.11".parse().unwrap(), 6, 80)]
            .1
            .is_empty()
    );
}

#[test]
fn rules_match_the_non_empty_sets() {
    let non_empty: BTreeSet<&'static str> = [
        ipset::CLUSTER_IP,
        ipset::NODE_PORT_LOCAL_TCP,
        ipset::NODE_PORT_TCP,
    ]
    .into_iter()
    .collect();
    let none = BTreeSet::new();
    let text = restore_input(&RuleInputs {
        v6: true,
        masq_mark: "0x4000",
        masquerade_all: false,
        not_local: Some("! -s fd00:244::/64".into()),
        non_empty: &non_empty,
        lb_no_node_access: &none,
    });
    assert!(text.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:244::/64 -j KUBE-MARK-MASQ\n"), "{text}");
    let local = text
        .find("--match-set KUBE-6-NODE-PORT-LOCAL-TCP dst -j RETURN")
        .unwrap();
    let all = text
        .find("--match-set KUBE-6-NODE-PORT-TCP dst -j KUBE-MARK-MASQ")
        .unwrap();
    assert!(
        local < all,
        "Local NodePorts return before the masquerade rule"
    );
    assert!(
        !text.contains("KUBE-6-LOOP-BACK dst,dst,src"),
        "empty sets add no rule"
    );
    assert!(text.contains("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-6-IPVS-IPS dst -j REJECT\n"));
    assert!(text.ends_with("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-6-IPVS-IPS dst -j REJECT\nCOMMIT\n"));
}
