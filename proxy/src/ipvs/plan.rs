//! The IPVS mode's planned state, computed from the model: virtual servers with their
//! real servers, the addresses bound to the kube-ipvs0 dummy device, and the ipset
//! entries the (small, fixed) iptables rules match on. Diffing two plans gives the
//! netlink operations that move the kernel from one to the other.

use super::netlink::{RealServer, SVC_F_PERSISTENT, VirtualServer};
use crate::model::{DesiredState, Protocol, entries};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// ipsets and their types, as upstream names them.
pub const IPSETS: &[(&str, &str, &str)] = &[
    (
        "KUBE-CLUSTER-IP",
        "hash:ip,port",
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        "KUBE-LOOP-BACK",
        "hash:ip,port,ip",
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        "KUBE-EXTERNAL-IP",
        "hash:ip,port",
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        "KUBE-LOAD-BALANCER",
        "hash:ip,port",
        "Kubernetes service lb portal",
    ),
    (
        "KUBE-NODE-PORT-TCP",
        "bitmap:port",
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-UDP",
        "bitmap:port",
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-TCP",
        "bitmap:port",
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-UDP",
        "bitmap:port",
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsPlan {
    /// Keyed by (address, protocol, port).
    pub services: BTreeMap<(IpAddr, u16, u16), (VirtualServer, BTreeSet<RealServer>)>,
    /// Addresses on kube-ipvs0.
    pub addresses: BTreeSet<IpAddr>,
    pub ipsets: BTreeMap<&'static str, BTreeSet<String>>,
}

fn proto_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

impl IpvsPlan {
    fn add(&mut self, vs: VirtualServer, reals: BTreeSet<RealServer>) {
        self.services
            .insert((vs.addr, vs.protocol, vs.port), (vs, reals));
    }

    fn set(&mut self, name: &'static str, entry: String) {
        self.ipsets.entry(name).or_default().insert(entry);
    }
}

/// Plans every Service port: ClusterIP, externalIPs, LoadBalancer IPs and one virtual
/// server per node address for NodePorts.
pub fn plan(state: &DesiredState, node_ips: &[IpAddr], scheduler: &str) -> IpvsPlan {
    let mut p = IpvsPlan::default();
    for e in entries(state) {
        let port = &e.port;
        let proto = port.name.protocol;
        let proto_name = proto.lower();
        let (flags, timeout) = match port.affinity_timeout {
            Some(t) => (SVC_F_PERSISTENT, t),
            None => (0, 0),
        };
        let reals = |local_only: bool| -> BTreeSet<RealServer> {
            let eps = if local_only {
                &e.categorized.local
            } else {
                &e.categorized.cluster
            };
            eps.iter()
                .map(|ep| RealServer {
                    addr: ep.addr.ip(),
                    port: ep.addr.port(),
                    weight: 1,
                })
                .collect()
        };
        let vs = |addr: IpAddr, port_number: u16| VirtualServer {
            addr,
            protocol: proto_number(proto),
            port: port_number,
            scheduler: scheduler.to_string(),
            flags,
            timeout,
        };
        for ip in &port.cluster_ips {
            let family_reals: BTreeSet<RealServer> = reals(port.internal_policy_local)
                .into_iter()
                .filter(|r| r.addr.is_ipv6() == ip.is_ipv6())
                .collect();
            p.add(vs(*ip, port.port), family_reals);
            p.addresses.insert(*ip);
            p.set(
                "KUBE-CLUSTER-IP",
                format!("{ip},{proto_name}:{}", port.port),
            );
        }
        for ep in e.categorized.cluster.iter().chain(&e.categorized.local) {
            p.set(
                "KUBE-LOOP-BACK",
                format!(
                    "{},{proto_name}:{},{}",
                    ep.addr.ip(),
                    ep.addr.port(),
                    ep.addr.ip()
                ),
            );
        }
        let external = reals(port.external_policy_local);
        for ip in &port.external_ips {
            p.add(
                vs(*ip, port.port),
                external
                    .iter()
                    .filter(|r| r.addr.is_ipv6() == ip.is_ipv6())
                    .cloned()
                    .collect(),
            );
            p.addresses.insert(*ip);
            p.set(
                "KUBE-EXTERNAL-IP",
                format!("{ip},{proto_name}:{}", port.port),
            );
        }
        for ip in &port.load_balancer_ips {
            p.add(
                vs(*ip, port.port),
                external
                    .iter()
                    .filter(|r| r.addr.is_ipv6() == ip.is_ipv6())
                    .cloned()
                    .collect(),
            );
            p.addresses.insert(*ip);
            p.set(
                "KUBE-LOAD-BALANCER",
                format!("{ip},{proto_name}:{}", port.port),
            );
        }
        if port.node_port != 0 {
            for ip in node_ips {
                p.add(
                    vs(*ip, port.node_port),
                    external
                        .iter()
                        .filter(|r| r.addr.is_ipv6() == ip.is_ipv6())
                        .cloned()
                        .collect(),
                );
            }
            let set = match (proto, port.external_policy_local) {
                (Protocol::Tcp, false) => Some("KUBE-NODE-PORT-TCP"),
                (Protocol::Udp, false) => Some("KUBE-NODE-PORT-UDP"),
                (Protocol::Tcp, true) => Some("KUBE-NODE-PORT-LOCAL-TCP"),
                (Protocol::Udp, true) => Some("KUBE-NODE-PORT-LOCAL-UDP"),
                (Protocol::Sctp, _) => None,
            };
            if let Some(set) = set {
                p.set(set, port.node_port.to_string());
            }
        }
    }
    p
}

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOp {
    AddService(VirtualServer),
    UpdateService(VirtualServer),
    DeleteService(VirtualServer),
    AddDest(VirtualServer, RealServer),
    DeleteDest(VirtualServer, RealServer),
}

/// The operations from `old` to `new`: deletes of real servers before their service,
/// services before their real servers.
pub fn diff(old: &IpvsPlan, new: &IpvsPlan) -> Vec<IpvsOp> {
    let mut ops = Vec::new();
    for (key, (vs, reals)) in &old.services {
        match new.services.get(key) {
            None => ops.push(IpvsOp::DeleteService(vs.clone())),
            Some((_, new_reals)) => ops.extend(
                reals
                    .difference(new_reals)
                    .map(|r| IpvsOp::DeleteDest(vs.clone(), r.clone())),
            ),
        }
    }
    for (key, (vs, reals)) in &new.services {
        let previous = old.services.get(key);
        match previous {
            None => ops.push(IpvsOp::AddService(vs.clone())),
            Some((old_vs, _)) if old_vs != vs => ops.push(IpvsOp::UpdateService(vs.clone())),
            Some(_) => {}
        }
        let before = previous.map(|(_, r)| r.clone()).unwrap_or_default();
        ops.extend(
            reals
                .difference(&before)
                .map(|r| IpvsOp::AddDest(vs.clone(), r.clone())),
        );
    }
    ops
}

/// `ipset restore` input making the sets equal to the plan's.
pub fn ipset_restore(plan: &IpvsPlan, v6: bool) -> String {
    let family = if v6 { "inet6" } else { "inet" };
    let mut out = String::new();
    for (name, ty, comment) in IPSETS {
        let opts = if ty.starts_with("bitmap") {
            "range 0-65535".to_string()
        } else {
            format!("family {family} hashsize 1024 maxelem 65536")
        };
        out.push_str(&format!(
            "create {name} {ty} {opts} comment -exist\nflush {name}\n"
        ));
        for entry in plan.ipsets.get(name).into_iter().flatten() {
            let is_v6_entry =
                entry.contains(':') && entry.split(',').next().is_some_and(|ip| ip.contains(':'));
            if ty.starts_with("bitmap") || is_v6_entry == v6 {
                out.push_str(&format!(
                    "add {name} {entry} comment \"{comment}\" -exist\n"
                ));
            }
        }
    }
    out
}

/// The fixed iptables rules of IPVS mode (nat table), matching on the ipsets.
pub fn iptables_restore(masq_mark: &str, not_local: Option<&str>) -> String {
    let masq_cluster = match not_local {
        Some(m) => format!(
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst {m} -j KUBE-MARK-MASQ\n"
        ),
        None => String::new(),
    };
    format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE\n\
-A KUBE-POSTROUTING -m mark ! --mark {masq_mark}/{masq_mark} -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --xor-mark {masq_mark}\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
-A KUBE-MARK-MASQ -j MARK --or-mark {masq_mark}\n\
{masq_cluster}\
-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ\n\
-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-MARK-MASQ\n\
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n\
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n\
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN\n\
-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ\n\
-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-UDP dst -j RETURN\n\
-A KUBE-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ\n\
COMMIT\n"
    )
}
