//! A Service, reduced to what the proxy programs: one `ServicePort` per spec.ports entry.

use k8s_openapi::api::core::v1::Service;
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name, as iptables and nft spell it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name:portName`, the identity upstream hashes into chain names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// The `namespace/name` a set of EndpointSlices belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficDistribution {
    /// Only what topology hints say (PreferClose and hints-annotated services).
    Hints,
    PreferSameNode,
}

/// One port of one Service, with everything that decides its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ips: Vec<IpAddr>,
    pub port: u16,
    /// 0 when the Service has no NodePort.
    pub node_port: u16,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<String>,
    /// Session affinity ClientIP timeout in seconds.
    pub affinity_timeout: Option<u32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// 0 unless externalTrafficPolicy Local on a LoadBalancer.
    pub health_check_node_port: u16,
    pub traffic_distribution: Option<TrafficDistribution>,
}

impl ServicePort {
    /// Whether traffic from outside the cluster reaches this port (NodePort, externalIPs, LB).
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    pub fn service_name(&self) -> ServiceName {
        ServiceName {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
        }
    }
}

fn parse_ips(list: Option<&Vec<String>>) -> Vec<IpAddr> {
    list.map(|l| l.iter().filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_default()
}

/// The ports the proxy programs for a Service; empty for headless and ExternalName
/// Services, which the proxy skips.
pub fn service_ports(svc: &Service) -> Vec<ServicePort> {
    let (Some(namespace), Some(name), Some(spec)) =
        (&svc.metadata.namespace, &svc.metadata.name, &svc.spec)
    else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => parse_ips(Some(ips)),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
    };
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    let load_balancer_ips: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let traffic_distribution = match spec.traffic_distribution.as_deref() {
        Some("PreferSameNode") => Some(TrafficDistribution::PreferSameNode),
        Some("PreferClose") | Some("PreferSameZone") => Some(TrafficDistribution::Hints),
        _ => {
            let annotations = svc.metadata.annotations.as_ref();
            let hinted = [
                "service.kubernetes.io/topology-mode",
                "service.kubernetes.io/topology-aware-hints",
            ]
            .iter()
            .any(|k| {
                annotations
                    .and_then(|a| a.get(*k))
                    .is_some_and(|v| v == "Auto" || v == "auto")
            });
            hinted.then_some(TrafficDistribution::Hints)
        }
    };
    let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            Some(ServicePort {
                name: ServicePortName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: p.name.clone().unwrap_or_default(),
                    protocol,
                },
                cluster_ips: cluster_ips.clone(),
                port: u16::try_from(p.port).ok()?,
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
                external_ips: parse_ips(spec.external_ips.as_ref()),
                load_balancer_ips: if is_lb {
                    load_balancer_ips.clone()
                } else {
                    Vec::new()
                },
                load_balancer_source_ranges: if is_lb {
                    spec.load_balancer_source_ranges.clone().unwrap_or_default()
                } else {
                    Vec::new()
                },
                affinity_timeout,
                external_policy_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_policy_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                health_check_node_port: spec
                    .health_check_node_port
                    .and_then(|n| u16::try_from(n).ok())
                    .unwrap_or(0),
                traffic_distribution: traffic_distribution.clone(),
            })
        })
        .collect()
}
