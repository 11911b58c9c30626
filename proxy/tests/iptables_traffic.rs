//! berth-proxy in iptables mode, inside test network namespaces, with real traffic.

mod common;

use common::scenarios::{self, Mode};
use common::{Cluster, NODE_IP};
use serde_json::json;

#[test]
fn cluster_ip_and_node_port_reach_every_backend() {
    scenarios::cluster_ip_and_node_port_reach_every_backend(Mode::Iptables);
}

#[test]
fn service_without_endpoints_rejects_and_endpoint_removal_stops_new_connections() {
    scenarios::service_without_endpoints_rejects_and_endpoint_removal_stops_new_connections(
        Mode::Iptables,
    );
}

#[test]
fn client_ip_affinity_sticks() {
    scenarios::client_ip_affinity_sticks(Mode::Iptables);
}

#[test]
fn external_traffic_policy_local_stays_local_and_health_check_port_answers() {
    scenarios::external_traffic_policy_local_stays_local_and_health_check_port_answers(
        Mode::Iptables,
    );
}

#[test]
fn restart_removes_stale_service_rules_and_tampering_is_repaired() {
    scenarios::restart_removes_stale_service_rules_and_tampering_is_repaired(Mode::Iptables);
}

#[test]
fn hairpin_traffic_is_masqueraded() {
    scenarios::hairpin_traffic_is_masqueraded(Mode::Iptables);
}

#[test]
fn topology_hints_keep_traffic_in_the_nodes_zone() {
    scenarios::topology_hints_keep_traffic_in_the_nodes_zone(Mode::Iptables);
}

#[test]
fn udp_flow_moves_to_the_new_endpoint_when_its_endpoint_is_removed() {
    scenarios::udp_flow_moves_to_the_new_endpoint_when_its_endpoint_is_removed(Mode::Iptables);
}

#[test]
fn ipv6_cluster_ip_reaches_an_ipv6_backend() {
    scenarios::ipv6_cluster_ip_reaches_an_ipv6_backend(Mode::Iptables);
}

#[test]
fn node_ports_answer_on_localhost_unless_disabled() {
    let mut c = Cluster::new();
    c.serve_backend("198.18.2.11", 8080);
    let svc = c.create_service(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    c.set_endpoints("web", 8080, &[("198.18.2.11", true, "node-b")]);
    c.start_proxy(&["--proxy-mode", "iptables"]);
    let target = format!("127.0.0.1:{node_port}");
    c.wait_for("the NodePort to answer on 127.0.0.1", || {
        c.connect_from(&c.node, None, &target).is_ok()
    });
    let (backend, source) = c.connect_from(&c.node, None, &target).unwrap();
    assert_eq!(backend, "198.18.2.11:8080");
    assert_eq!(source, "198.18.2.1", "loopback sources are masqueraded");
    assert_eq!(
        c.node
            .exec("sysctl", &["-n", "net.ipv4.conf.all.route_localnet"])
            .trim(),
        "1"
    );

    c.stop_proxy();
    c.start_proxy(&[
        "--proxy-mode",
        "iptables",
        "--iptables-localhost-nodeports=false",
    ]);
    c.wait_for("the NodePort to be refused on 127.0.0.1", || {
        c.connect_from(&c.node, None, &target).is_err()
    });
    assert!(
        c.connect(&format!("{NODE_IP}:{node_port}")).is_ok(),
        "the node's own address still serves it"
    );
}
