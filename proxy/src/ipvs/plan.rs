//! The IPVS mode's planned state for one IP family, computed from the model as
//! upstream's proxier does: virtual servers with their real servers, the addresses
//! bound to kube-ipvs0, the ipset members the fixed iptables rules match on, and the
//! LoadBalancer addresses the node itself must not reach.

use super::ipset::{self, SetContents};
use super::netlink::{SVC_F_PERSISTENT, SVC_F_SOURCE_HASH, ServiceKey, VirtualServer};
use crate::model::{DesiredState, Endpoint, Protocol, ServiceEntry, entries};
use crate::net::Cidr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyPlan {
    pub services: BTreeMap<ServiceKey, (VirtualServer, BTreeSet<SocketAddr>)>,
    /// Addresses on kube-ipvs0.
    pub bound: BTreeSet<IpAddr>,
    pub sets: SetContents,
    /// (LoadBalancer IP, protocol, port) whose source ranges do not admit the node.
    pub lb_no_node_access: BTreeSet<(IpAddr, &'static str, u16)>,
}

/// What the plan depends on besides the Services.
pub struct PlanInputs<'a> {
    pub v6: bool,
    pub scheduler: &'a str,
    /// Addresses that get a virtual server per NodePort.
    pub node_port_ips: &'a [IpAddr],
    /// Every address on the node outside kube-ipvs0: external and LoadBalancer IPs
    /// that are one of them are not bound to the dummy device.
    pub node_addresses: &'a BTreeSet<IpAddr>,
    /// The node's primary address: LoadBalancer source ranges containing it let the
    /// node itself through.
    pub node_ip: Option<IpAddr>,
}

pub fn proto_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// Real servers for one kind of traffic, as upstream's syncEndpoint picks them: the
/// node's own endpoints under a Local policy, falling back to the cluster-wide ones
/// when there is none here and the Service uses cluster endpoints at all.
fn real_servers(e: &ServiceEntry, local_only: bool, v6: bool) -> BTreeSet<SocketAddr> {
    let p = &e.port;
    let uses_cluster =
        !p.internal_policy_local || (p.externally_accessible() && !p.external_policy_local);
    let pick: &[Endpoint] = match (local_only, e.categorized.local.is_empty()) {
        (true, false) => &e.categorized.local,
        (true, true) if !uses_cluster => &[],
        _ => &e.categorized.cluster,
    };
    pick.iter()
        .map(|ep| ep.addr)
        .filter(|a| a.is_ipv6() == v6)
        .collect()
}

struct Builder<'a> {
    inputs: &'a PlanInputs<'a>,
    plan: FamilyPlan,
}

impl Builder<'_> {
    fn set(&mut self, name: &'static str, entry: String) {
        self.plan.sets.entry(name).or_default().insert(entry);
    }

    fn service(&mut self, e: &ServiceEntry, addr: IpAddr, port: u16, reals: BTreeSet<SocketAddr>) {
        let p = &e.port;
        let mut flags = 0;
        let mut timeout = 0;
        if let Some(t) = p.affinity_timeout {
            flags |= SVC_F_PERSISTENT;
            timeout = t;
        }
        if self.inputs.scheduler == "mh" {
            flags |= SVC_F_SOURCE_HASH;
        }
        let vs = VirtualServer {
            addr,
            protocol: proto_number(p.name.protocol),
            port,
            scheduler: self.inputs.scheduler.to_string(),
            flags,
            timeout,
        };
        self.plan.services.insert(vs.key(), (vs, reals));
    }

    fn entry(&mut self, e: &ServiceEntry) {
        let v6 = self.inputs.v6;
        let p = &e.port;
        let proto = p.name.protocol.lower();
        let ip_port = |ip: &IpAddr| format!("{ip},{proto}:{}", p.port);
        let ours = |ip: &&IpAddr| ip.is_ipv6() == v6;
        for ep in e.endpoints.iter().filter(|ep| ep.local) {
            if ep.addr.is_ipv6() == v6 {
                let ip = ep.addr.ip();
                self.set(
                    ipset::LOOP_BACK,
                    format!("{ip},{proto}:{},{ip}", ep.addr.port()),
                );
            }
        }
        let internal = real_servers(e, p.internal_policy_local, v6);
        let external = real_servers(e, p.external_policy_local, v6);
        for ip in p.cluster_ips.iter().filter(ours) {
            self.set(ipset::CLUSTER_IP, ip_port(ip));
            self.service(e, *ip, p.port, internal.clone());
            self.plan.bound.insert(*ip);
        }
        for ip in p.external_ips.iter().filter(ours) {
            let set = if p.external_policy_local {
                ipset::EXTERNAL_IP_LOCAL
            } else {
                ipset::EXTERNAL_IP
            };
            self.set(set, ip_port(ip));
            self.service(e, *ip, p.port, external.clone());
            if !self.inputs.node_addresses.contains(ip) {
                self.plan.bound.insert(*ip);
            }
        }
        for ip in p.load_balancer_ips.iter().filter(ours) {
            self.set(ipset::LOAD_BALANCER, ip_port(ip));
            if p.external_policy_local {
                self.set(ipset::LOAD_BALANCER_LOCAL, ip_port(ip));
            }
            let ranges: Vec<Cidr> = p
                .load_balancer_source_ranges
                .iter()
                .filter_map(|r| Cidr::parse(r).ok())
                .filter(|c| c.is_ipv6() == v6)
                .collect();
            if !ranges.is_empty() {
                self.set(ipset::LOAD_BALANCER_FW, ip_port(ip));
                for c in &ranges {
                    self.set(
                        ipset::LOAD_BALANCER_SOURCE_CIDR,
                        format!("{ip},{proto}:{},{c}", p.port),
                    );
                }
                let node_allowed = self
                    .inputs
                    .node_ip
                    .is_some_and(|n| ranges.iter().any(|c| c.contains(n)));
                if node_allowed {
                    self.set(
                        ipset::LOAD_BALANCER_SOURCE_IP,
                        format!("{ip},{proto}:{},{ip}", p.port),
                    );
                } else {
                    self.plan.lb_no_node_access.insert((*ip, proto, p.port));
                }
            }
            self.service(e, *ip, p.port, external.clone());
            if !self.inputs.node_addresses.contains(ip) {
                self.plan.bound.insert(*ip);
            }
        }
        if p.node_port != 0 && !self.inputs.node_port_ips.is_empty() {
            let np = p.node_port;
            let (all, local) = match p.name.protocol {
                Protocol::Tcp => (ipset::NODE_PORT_TCP, ipset::NODE_PORT_LOCAL_TCP),
                Protocol::Udp => (ipset::NODE_PORT_UDP, ipset::NODE_PORT_LOCAL_UDP),
                Protocol::Sctp => (ipset::NODE_PORT_SCTP, ipset::NODE_PORT_LOCAL_SCTP),
            };
            // bitmap:port for TCP/UDP; hash:ip,port per node address for SCTP.
            let members: Vec<String> = match p.name.protocol {
                Protocol::Sctp => self
                    .inputs
                    .node_port_ips
                    .iter()
                    .map(|ip| format!("{ip},sctp:{np}"))
                    .collect(),
                _ => vec![np.to_string()],
            };
            for m in &members {
                self.set(all, m.clone());
                if p.external_policy_local {
                    self.set(local, m.clone());
                }
            }
            for ip in self.inputs.node_port_ips {
                self.service(e, *ip, np, external.clone());
            }
        }
        if p.health_check_node_port != 0 {
            self.set(
                ipset::HEALTH_CHECK_NODE_PORT,
                p.health_check_node_port.to_string(),
            );
        }
    }
}

pub fn plan(state: &DesiredState, inputs: &PlanInputs) -> FamilyPlan {
    let mut b = Builder {
        inputs,
        plan: FamilyPlan::default(),
    };
    for e in entries(state) {
        b.entry(e);
    }
    let bound: BTreeSet<String> = b.plan.bound.iter().map(IpAddr::to_string).collect();
    if !bound.is_empty() {
        b.plan.sets.insert(ipset::IPVS_IPS, bound);
    }
    b.plan
}
