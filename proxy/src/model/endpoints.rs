//! Endpoints of a Service port, from its EndpointSlices, and the choice of which ones
//! cluster-wide and node-local traffic may use.

use super::service::{Protocol, ServicePort, TrafficDistribution};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

/// An endpoint's topology hints, shared between a slice's record and the endpoints
/// built from it. Most endpoints have none, so they cost one pointer each.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopologyHints {
    pub zones: Option<BTreeSet<String>>,
    pub nodes: Option<BTreeSet<String>>,
}

/// One backend address:port with its conditions and topology.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this proxy's node.
    pub local: bool,
    /// None when the endpoint has neither zone nor node hints.
    pub hints: Option<Arc<TopologyHints>>,
}

impl Endpoint {
    pub fn zone_hints(&self) -> Option<&BTreeSet<String>> {
        self.hints.as_ref()?.zones.as_ref()
    }

    pub fn node_hints(&self) -> Option<&BTreeSet<String>> {
        self.hints.as_ref()?.nodes.as_ref()
    }
}

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the proxy keeps of an EndpointSlice: its ports and the first address and
/// conditions of each endpoint of the right family (much smaller than the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    ports: Box<[SlicePort]>,
    endpoints: Box<[SliceEndpoint]>,
}

/// A port of an EndpointSlice; an unknown protocol or port matches no Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlicePort {
    name: String,
    protocol: Option<Protocol>,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// On this proxy's node.
    local: bool,
    hints: Option<Arc<TopologyHints>>,
}

impl SliceInfo {
    /// The slice as the proxy on node `node_name` sees it.
    pub fn from_slice(slice: &EndpointSlice, node_name: &str) -> Self {
        let family_v6 = match slice.address_type.as_str() {
            "IPv4" => Some(false),
            "IPv6" => Some(true),
            // FQDN slices carry no addresses the proxy can use.
            _ => None,
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: Protocol::parse(p.protocol.as_deref()),
                port: p.port.and_then(|p| u16::try_from(p).ok()),
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .filter_map(|ep| {
                // Only the first address is used, as upstream does.
                let ip: IpAddr = ep.addresses.first()?.parse().ok()?;
                if Some(ip.is_ipv6()) != family_v6 {
                    return None;
                }
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let hints = ep.hints.as_ref().map(|h| TopologyHints {
                    zones: h
                        .for_zones
                        .as_ref()
                        .map(|z| z.iter().map(|z| z.name.clone()).collect()),
                    nodes: h
                        .for_nodes
                        .as_ref()
                        .map(|n| n.iter().map(|n| n.name.clone()).collect()),
                });
                Some(SliceEndpoint {
                    ip,
                    ready,
                    serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                    local: ep.node_name.as_deref() == Some(node_name),
                    hints: hints
                        .filter(|h| h.zones.is_some() || h.nodes.is_some())
                        .map(Arc::new),
                })
            })
            .collect();
        SliceInfo { ports, endpoints }
    }
}

/// Endpoints in `slice` for the port named `port_name` with `protocol`.
pub fn slice_endpoints(slice: &SliceInfo, port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let Some(port) = slice
        .ports
        .iter()
        .find(|p| p.name == port_name && p.protocol == Some(protocol))
        .and_then(|p| p.port)
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .map(|ep| Endpoint {
            addr: SocketAddr::new(ep.ip, port),
            ready: ep.ready,
            serving: ep.serving,
            terminating: ep.terminating,
            local: ep.local,
            hints: ep.hints.clone(),
        })
        .collect()
}

/// Where this proxy's node sits, for topology decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTopology {
    pub name: String,
    pub zone: Option<String>,
}

/// An immutable list of endpoints. The categorized lists of a Service port share
/// the allocation of its full list when they hold all of it (the common case), so
/// a large cluster's endpoints are kept once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints(Arc<[Endpoint]>);

impl Deref for Endpoints {
    type Target = [Endpoint];

    fn deref(&self) -> &[Endpoint] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Endpoints {
    type Item = &'a Endpoint;
    type IntoIter = std::slice::Iter<'a, Endpoint>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<Endpoint>> for Endpoints {
    fn from(v: Vec<Endpoint>) -> Self {
        Endpoints(v.into())
    }
}

impl Endpoints {
    /// `subset`, which holds some of `self`'s endpoints in `self`'s order, as a list
    /// that shares `self`'s allocation when it holds all of them.
    fn sharing(&self, subset: Vec<Endpoint>) -> Endpoints {
        if subset.len() == self.len() {
            self.clone()
        } else {
            subset.into()
        }
    }
}

/// The endpoints each kind of traffic may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorizedEndpoints {
    /// For traffic under the Cluster policy (after topology filtering).
    pub cluster: Endpoints,
    /// For traffic under a Local policy: endpoints on this node.
    pub local: Endpoints,
    /// Whether any endpoint is ready or usable at all (else traffic is rejected).
    pub any_usable: bool,
}

/// Topology filter: hints apply only when every ready endpoint carries them and one
/// is meant for this node's zone (or node), so hints can never black-hole traffic.
fn topology_filter(port: &ServicePort, ready: Vec<Endpoint>, node: &NodeTopology) -> Vec<Endpoint> {
    match port.traffic_distribution {
        Some(TrafficDistribution::PreferSameNode) => {
            let usable = ready.iter().all(|e| e.node_hints().is_some())
                && ready
                    .iter()
                    .any(|e| e.node_hints().is_some_and(|h| h.contains(&node.name)));
            if usable {
                return ready
                    .into_iter()
                    .filter(|e| e.node_hints().is_some_and(|h| h.contains(&node.name)))
                    .collect();
            }
            // PreferSameNode falls back to zone hints when node hints do not fit.
            zone_filter(ready, node)
        }
        Some(TrafficDistribution::Hints) => zone_filter(ready, node),
        None => ready,
    }
}

fn zone_filter(ready: Vec<Endpoint>, node: &NodeTopology) -> Vec<Endpoint> {
    let Some(zone) = &node.zone else { return ready };
    let usable = ready.iter().all(|e| e.zone_hints().is_some())
        && ready
            .iter()
            .any(|e| e.zone_hints().is_some_and(|h| h.contains(zone)));
    if !usable {
        return ready;
    }
    ready
        .into_iter()
        .filter(|e| e.zone_hints().is_some_and(|h| h.contains(zone)))
        .collect()
}

/// Ready endpoints, or if none is ready, those still serving while terminating.
fn ready_or_terminating(endpoints: impl Iterator<Item = Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = endpoints.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|e| e.serving && e.terminating).collect()
}

pub fn categorize(
    port: &ServicePort,
    endpoints: &Endpoints,
    node: &NodeTopology,
) -> CategorizedEndpoints {
    // Both lists are filters of `endpoints` that keep its order.
    let cluster = topology_filter(port, ready_or_terminating(endpoints.iter().cloned()), node);
    let local = ready_or_terminating(endpoints.iter().filter(|e| e.local).cloned());
    let any_usable = !cluster.is_empty() || !local.is_empty();
    CategorizedEndpoints {
        cluster: endpoints.sharing(cluster),
        local: endpoints.sharing(local),
        any_usable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(
        ip: &str,
        ready: bool,
        terminating: bool,
        local: bool,
        zones: Option<&[&str]>,
    ) -> Endpoint {
        Endpoint {
            addr: SocketAddr::new(ip.parse().unwrap(), 80),
            ready,
            serving: ready || terminating,
            terminating,
            local,
            hints: zones.map(|z| {
                Arc::new(TopologyHints {
                    zones: Some(z.iter().map(|s| s.to_string()).collect()),
                    nodes: None,
                })
            }),
        }
    }

    fn port(td: Option<TrafficDistribution>) -> ServicePort {
        ServicePort {
            name: super::super::ServicePortName {
                namespace: "ns".into(),
                name: "s".into(),
                port: String::new(),
                protocol: Protocol::Tcp,
            },
            cluster_ips: vec!["198.19.0.1".parse().unwrap()],
            port: 80,
            node_port: 0,
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: 0,
            traffic_distribution: td,
        }
    }

    #[test]
    fn terminating_endpoints_are_a_fallback_only() {
        let node = NodeTopology {
            name: "n".into(),
            zone: None,
        };
        let eps: Endpoints = vec![
            ep("10.0.0.1", true, false, false, None),
            ep("10.0.0.2", false, true, true, None),
        ]
        .into();
        let c = categorize(&port(None), &eps, &node);
        assert_eq!(*c.cluster, [eps[0].clone()]);
        assert_eq!(
            *c.local,
            [eps[1].clone()],
            "no ready local endpoint: the serving terminating one is used"
        );
        let none_ready: Endpoints = vec![
            ep("10.0.0.2", false, true, false, None),
            ep("10.0.0.3", false, false, false, None),
        ]
        .into();
        let c = categorize(&port(None), &none_ready, &node);
        assert_eq!(*c.cluster, [none_ready[0].clone()]);
    }

    #[test]
    fn lists_holding_every_endpoint_share_its_allocation() {
        let node = NodeTopology {
            name: "n".into(),
            zone: None,
        };
        let eps: Endpoints = vec![
            ep("10.0.0.1", true, false, true, None),
            ep("10.0.0.2", true, false, true, None),
        ]
        .into();
        let c = categorize(&port(None), &eps, &node);
        assert!(Arc::ptr_eq(&c.cluster.0, &eps.0));
        assert!(Arc::ptr_eq(&c.local.0, &eps.0));
        assert_eq!(*c.cluster, *eps);
    }

    #[test]
    fn zone_hints_apply_only_when_complete_and_matching() {
        let node = NodeTopology {
            name: "n".into(),
            zone: Some("a".into()),
        };
        let hinted: Endpoints = vec![
            ep("10.0.0.1", true, false, false, Some(&["a"])),
            ep("10.0.0.2", true, false, false, Some(&["b"])),
        ]
        .into();
        let c = categorize(&port(Some(TrafficDistribution::Hints)), &hinted, &node);
        assert_eq!(*c.cluster, [hinted[0].clone()]);
        let partial: Endpoints = vec![
            ep("10.0.0.1", true, false, false, Some(&["a"])),
            ep("10.0.0.2", true, false, false, None),
        ]
        .into();
        assert_eq!(
            categorize(&port(Some(TrafficDistribution::Hints)), &partial, &node)
                .cluster
                .len(),
            2
        );
        let elsewhere: Endpoints = vec![ep("10.0.0.2", true, false, false, Some(&["b"]))].into();
        assert_eq!(
            categorize(&port(Some(TrafficDistribution::Hints)), &elsewhere, &node)
                .cluster
                .len(),
            1
        );
        assert_eq!(
            categorize(&port(None), &hinted, &node).cluster.len(),
            2,
            "hints are ignored unless asked for"
        );
    }
}
