//! Clearing stale UDP conntrack entries. UDP has no connection teardown, so a flow to a
//! removed endpoint (or one that was rejected while the Service had no endpoints) would
//! otherwise keep its old NAT mapping for as long as packets keep flowing.

use crate::model::{DesiredState, Protocol, ServiceEntry, Snapshot};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// One `conntrack -D` invocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleFlow {
    /// Flows to a Service address (and port) that now has endpoints.
    ToService { dst: IpAddr, port: u16 },
    /// Flows to a NodePort that now has endpoints.
    ToNodePort { port: u16 },
    /// Flows to a Service address that were NATed to a removed endpoint.
    ToEndpoint { dst: IpAddr, endpoint: IpAddr },
    /// NodePort flows that were NATed to a removed endpoint.
    NodePortToEndpoint { port: u16, endpoint: IpAddr },
}

fn service_ips(e: &ServiceEntry) -> impl Iterator<Item = IpAddr> + '_ {
    e.port
        .cluster_ips
        .iter()
        .chain(&e.port.external_ips)
        .chain(&e.port.load_balancer_ips)
        .copied()
}

fn used_endpoints(e: &ServiceEntry) -> BTreeSet<IpAddr> {
    e.categorized
        .cluster
        .iter()
        .chain(&e.categorized.local)
        .map(|ep| ep.addr.ip())
        .collect()
}

/// The UDP flows that the change from `old` to `snapshot` made stale.
pub fn stale_flows(old: &DesiredState, snapshot: &Snapshot) -> Vec<StaleFlow> {
    let mut out = BTreeSet::new();
    for svc in &snapshot.changed {
        let before = old.get(svc).map(|v| v.as_slice()).unwrap_or(&[]);
        let after = snapshot.state.get(svc).map(|v| v.as_slice()).unwrap_or(&[]);
        for prev in before
            .iter()
            .filter(|e| e.port.name.protocol == Protocol::Udp)
        {
            let now = after.iter().find(|e| e.port.name == prev.port.name);
            let now_used = now.map(used_endpoints).unwrap_or_default();
            for gone in used_endpoints(prev).difference(&now_used) {
                for dst in service_ips(prev) {
                    out.insert(StaleFlow::ToEndpoint {
                        dst,
                        endpoint: *gone,
                    });
                }
                if prev.port.node_port != 0 {
                    out.insert(StaleFlow::NodePortToEndpoint {
                        port: prev.port.node_port,
                        endpoint: *gone,
                    });
                }
            }
        }
        for now in after
            .iter()
            .filter(|e| e.port.name.protocol == Protocol::Udp)
        {
            let had = before
                .iter()
                .find(|e| e.port.name == now.port.name)
                .is_some_and(|e| !used_endpoints(e).is_empty());
            if !had && !used_endpoints(now).is_empty() {
                for dst in service_ips(now) {
                    out.insert(StaleFlow::ToService {
                        dst,
                        port: now.port.port,
                    });
                }
                if now.port.node_port != 0 {
                    out.insert(StaleFlow::ToNodePort {
                        port: now.port.node_port,
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

pub fn conntrack_args(flow: &StaleFlow) -> Vec<String> {
    let family = |ip: &IpAddr| if ip.is_ipv6() { "ipv6" } else { "ipv4" };
    let mut args: Vec<String> = vec!["-D".into(), "-p".into(), "udp".into()];
    match flow {
        StaleFlow::ToService { dst, port } => {
            args.extend([
                "-f".into(),
                family(dst).into(),
                "--orig-dst".into(),
                dst.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ]);
        }
        StaleFlow::ToNodePort { port } => args.extend(["--orig-port-dst".into(), port.to_string()]),
        StaleFlow::ToEndpoint { dst, endpoint } => {
            args.extend([
                "-f".into(),
                family(dst).into(),
                "--orig-dst".into(),
                dst.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]);
        }
        StaleFlow::NodePortToEndpoint { port, endpoint } => {
            args.extend([
                "-f".into(),
                family(endpoint).into(),
                "--orig-port-dst".into(),
                port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]);
        }
    }
    args
}

/// Deletes the flows; "no entries found" is not an error.
pub fn clear(flows: &[StaleFlow]) {
    for flow in flows {
        let args = conntrack_args(flow);
        match Command::new("conntrack")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(out)
                if out.status.success()
                    || String::from_utf8_lossy(&out.stderr).contains("0 flow entries") => {}
            Ok(out) => {
                tracing::warn!(?flow, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "conntrack cleanup failed")
            }
            Err(e) => tracing::warn!(?flow, error = %e, "cannot run conntrack"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeTracker, SERVICE_NAME_LABEL};
    use serde_json::json;

    #[test]
    fn removed_udp_endpoints_and_first_endpoints_clear_flows() {
        let svc = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "dns"},
            "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}})).unwrap();
        let slice = |ips: &[&str]| -> k8s_openapi::api::discovery::v1::EndpointSlice {
            let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
            serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "dns-1", "labels": {SERVICE_NAME_LABEL: "dns"}},
                "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]})).unwrap()
        };
        let mut t = ChangeTracker::new("n");
        t.apply_service(&svc);
        let s0 = t.snapshot();
        t.apply_slice(&slice(&["10.0.0.1", "10.0.0.2"]));
        let s1 = t.snapshot();
        assert_eq!(
            stale_flows(&s0.state, &s1),
            [StaleFlow::ToService {
                dst: "198.19.0.10".parse().unwrap(),
                port: 53
            }]
        );
        t.apply_slice(&slice(&["10.0.0.2"]));
        let s2 = t.snapshot();
        assert_eq!(
            stale_flows(&s1.state, &s2),
            [StaleFlow::ToEndpoint {
                dst: "198.19.0.10".parse().unwrap(),
                endpoint: "10.0.0.1".parse().unwrap()
            }]
        );
        assert_eq!(
            conntrack_args(&stale_flows(&s1.state, &s2)[0]).join(" "),
            "-D -p udp -f ipv4 --orig-dst 198.19.0.10 --dst-nat 10.0.0.1"
        );
    }
}
