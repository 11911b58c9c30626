//! The planned IPVS state and its diff; the ipset and iptables parts are applied for
//! real in proxy/tests/ipvs_sets.rs.

use super::netlink::{RealServer, SVC_F_PERSISTENT};
use super::plan::{IpvsOp, ipset_restore, plan};
use crate::model::{ChangeTracker, SERVICE_NAME_LABEL};
use serde_json::json;

fn tracker(eps: &[&str]) -> ChangeTracker {
    let mut t = ChangeTracker::new("node-a");
    let svc = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "externalIPs": ["192.0.2.7"],
                 "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}))
    .unwrap();
    t.apply_service(&svc);
    let endpoints: Vec<_> = eps
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node-b"}))
        .collect();
    let slice = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web-1", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap();
    t.apply_slice(&slice);
    t
}

#[test]
fn plan_has_a_virtual_server_per_address_and_node_port() {
    let state = tracker(&["10.244.1.2", "10.244.1.3"]).snapshot().state;
    let p = plan(&state, &["198.51.100.1".parse().unwrap()], "rr");
    let keys: Vec<String> = p
        .services
        .keys()
        .map(|(a, proto, port)| format!("{a}/{proto}/{port}"))
        .collect();
    assert_eq!(
        keys,
        ["10.96.0.10/6/80", "192.0.2.7/6/80", "198.51.100.1/6/30080"]
    );
    let (vs, reals) = &p.services[&("10.96.0.10".parse().unwrap(), 6, 80)];
    assert_eq!(
        (vs.flags, vs.timeout, vs.scheduler.as_str()),
        (SVC_F_PERSISTENT, 10800, "rr")
    );
    assert_eq!(reals.len(), 2);
    assert!(
        p.addresses.contains(&"10.96.0.10".parse().unwrap())
            && p.addresses.contains(&"192.0.2.7".parse().unwrap())
    );
    let script = ipset_restore(&p, false);
    assert!(script.contains("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment -exist\nflush KUBE-CLUSTER-IP\n"));
    assert!(script.contains("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80 comment"));
    assert!(script.contains("add KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2 comment"));
    assert!(script.contains("add KUBE-NODE-PORT-TCP 30080 comment"));
}

#[test]
fn diff_moves_real_servers_only() {
    let node = ["198.51.100.1".parse().unwrap()];
    let before = plan(
        &tracker(&["10.244.1.2", "10.244.1.3"]).snapshot().state,
        &node,
        "rr",
    );
    let after = plan(
        &tracker(&["10.244.1.3", "10.244.1.4"]).snapshot().state,
        &node,
        "rr",
    );
    let ops = super::plan::diff(&before, &after);
    let gone = RealServer {
        addr: "10.244.1.2".parse().unwrap(),
        port: 8080,
        weight: 1,
    };
    let new = RealServer {
        addr: "10.244.1.4".parse().unwrap(),
        port: 8080,
        weight: 1,
    };
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, IpvsOp::DeleteDest(_, r) if *r == gone))
            .count(),
        3,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, IpvsOp::AddDest(_, r) if *r == new))
            .count(),
        3
    );
    assert_eq!(ops.len(), 6, "no service-level changes: {ops:?}");
    let removed = super::plan::diff(&after, &plan(&Default::default(), &node, "rr"));
    assert!(
        removed
            .iter()
            .all(|o| matches!(o, IpvsOp::DeleteService(_)))
            && removed.len() == 3
    );
    assert!(super::plan::diff(&after, &after).is_empty());
}
