//! berth-proxy in nftables mode, inside test network namespaces, with real traffic.

mod common;

use common::scenarios::{self, Mode};

#[test]
fn cluster_ip_and_node_port_reach_every_backend() {
    scenarios::cluster_ip_and_node_port_reach_every_backend(Mode::Nftables);
}

#[test]
fn service_without_endpoints_rejects_and_endpoint_removal_stops_new_connections() {
    scenarios::service_without_endpoints_rejects_and_endpoint_removal_stops_new_connections(
        Mode::Nftables,
    );
}

#[test]
fn client_ip_affinity_sticks() {
    scenarios::client_ip_affinity_sticks(Mode::Nftables);
}

#[test]
fn external_traffic_policy_local_stays_local_and_health_check_port_answers() {
    scenarios::external_traffic_policy_local_stays_local_and_health_check_port_answers(
        Mode::Nftables,
    );
}

#[test]
fn restart_removes_stale_service_rules_and_tampering_is_repaired() {
    scenarios::restart_removes_stale_service_rules_and_tampering_is_repaired(Mode::Nftables);
}

#[test]
fn hairpin_traffic_is_masqueraded() {
    scenarios::hairpin_traffic_is_masqueraded(Mode::Nftables);
}

#[test]
fn topology_hints_keep_traffic_in_the_nodes_zone() {
    scenarios::topology_hints_keep_traffic_in_the_nodes_zone(Mode::Nftables);
}

#[test]
fn udp_flow_moves_to_the_new_endpoint_when_its_endpoint_is_removed() {
    scenarios::udp_flow_moves_to_the_new_endpoint_when_its_endpoint_is_removed(Mode::Nftables);
}

#[test]
fn ipv6_cluster_ip_reaches_an_ipv6_backend() {
    scenarios::ipv6_cluster_ip_reaches_an_ipv6_backend(Mode::Nftables);
}
