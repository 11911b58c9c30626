//! berth-proxy in iptables mode, inside test network namespaces, with real traffic.

mod common;

use common::scenarios::{self, Mode};

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
