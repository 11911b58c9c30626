//! The nftables rules of one Service port, in the structure of upstream's nftables mode:
//! one `kube-proxy` table per family, verdict maps keyed by address . protocol . port
//! (O(1) dispatch however many Services) and a chain per Service port and policy that
//! DNATs to a random endpoint. Unlike upstream there is no chain per endpoint (except
//! for ClientIP affinity, which needs a dynamic set per endpoint): nf_tables
//! transactions slow down with the number of chains in the table, and at 10,000
//! Services the per-endpoint chains made every sync several times slower. The
//! destinations are elements of shared endpoint maps (see [`ENDPOINT_MAPS`]).

use super::expr::{self, Cmp, Expr, Verdict, ip_bytes, padded};
use crate::config::LocalDetector;
use crate::iptables::names::hash;
use crate::model::{Endpoint, Protocol, ServiceEntry, ServicePortName};
use crate::net::Cidr;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// The table's shared sets and maps that Service ports add elements to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SharedSet {
    HairpinEndpoints,
    ClusterIps,
    ServiceIps,
    ServiceNodeports,
    NoEndpointServices,
    NoEndpointNodeports,
}

impl SharedSet {
    pub const ALL: [SharedSet; 6] = [
        SharedSet::HairpinEndpoints,
        SharedSet::ClusterIps,
        SharedSet::ServiceIps,
        SharedSet::ServiceNodeports,
        SharedSet::NoEndpointServices,
        SharedSet::NoEndpointNodeports,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SharedSet::HairpinEndpoints => "hairpin-endpoints",
            SharedSet::ClusterIps => "cluster-ips",
            SharedSet::ServiceIps => "service-ips",
            SharedSet::ServiceNodeports => "service-nodeports",
            SharedSet::NoEndpointServices => "no-endpoint-services",
            SharedSet::NoEndpointNodeports => "no-endpoint-nodeports",
        }
    }

    /// Key type (nft data types) and length in bytes, and whether values are verdicts.
    pub fn key(self, v6: bool) -> (u32, u32, bool) {
        use expr::types::{INET_PROTO, INET_SERVICE, addr, concat};
        let alen = if v6 { 16 } else { 4 };
        match self {
            SharedSet::HairpinEndpoints => (concat(&[addr(v6), addr(v6)]), 2 * alen, false),
            SharedSet::ClusterIps => (addr(v6), alen, false),
            SharedSet::ServiceIps | SharedSet::NoEndpointServices => (
                concat(&[addr(v6), INET_PROTO, INET_SERVICE]),
                alen + 8,
                true,
            ),
            SharedSet::ServiceNodeports | SharedSet::NoEndpointNodeports => {
                (concat(&[INET_PROTO, INET_SERVICE]), 8, true)
            }
        }
    }
}

/// The key of a shared set element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementKey {
    /// `10.96.0.1`
    Addr(IpAddr),
    /// `10.244.1.2 . 10.244.1.2` (an endpoint reaching itself)
    SameAddrPair(IpAddr),
    /// `10.96.0.1 . tcp . 80`
    AddrProtoPort(IpAddr, Protocol, u16),
    /// `tcp . 30080`
    ProtoPort(Protocol, u16),
}

pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

impl ElementKey {
    /// The key as the kernel stores it: each concatenated part padded to 4 bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            ElementKey::Addr(ip) => ip_bytes(*ip),
            ElementKey::SameAddrPair(ip) => [ip_bytes(*ip), ip_bytes(*ip)].concat(),
            ElementKey::AddrProtoPort(ip, p, port) => {
                padded(&[&ip_bytes(*ip), &[proto_number(*p)], &port.to_be_bytes()])
            }
            ElementKey::ProtoPort(p, port) => padded(&[&[proto_number(*p)], &port.to_be_bytes()]),
        }
    }
}

impl std::fmt::Display for ElementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElementKey::Addr(ip) => write!(f, "{ip}"),
            ElementKey::SameAddrPair(ip) => write!(f, "{ip} . {ip}"),
            ElementKey::AddrProtoPort(ip, p, port) => write!(f, "{ip} . {} . {port}", p.lower()),
            ElementKey::ProtoPort(p, port) => write!(f, "{} . {port}", p.lower()),
        }
    }
}

/// A shared set or map element a Service port contributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub set: SharedSet,
    pub key: ElementKey,
    pub verdict: Option<Verdict>,
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {{ {}", self.set.name(), self.key)?;
        if let Some(v) = &self.verdict {
            write!(f, " : {v}")?;
        }
        write!(f, " }}")
    }
}

pub type Rule = Vec<Expr>;

/// Endpoint maps shared by all Service ports: a Service port's policy chain picks a
/// destination with `numgen random mod N offset O map @endpoints-<k>`, so an endpoint
/// that changes address is an element replaced in a map. Replacing a DNAT rule
/// instead makes the kernel validate the whole table (every chain reachable from the
/// base chains) in that commit. The maps are split because the kernel checks every
/// rule bound to a map when an element is added, and every element when a rule binds.
pub const ENDPOINT_MAPS: u32 = 256;

/// Keys per Service port in its endpoint map: the cluster policy chain's endpoints
/// from `base * KEYS_PER_SERVICE`, the local one's from half-way.
const KEYS_PER_SERVICE: u32 = 256;

pub fn endpoint_map_name(map: u32) -> String {
    format!("endpoints-{map}")
}

/// The endpoint map number named `name`, if it is one.
pub fn endpoint_map_number(name: &str) -> Option<u32> {
    name.strip_prefix("endpoints-")?
        .parse()
        .ok()
        .filter(|n| *n < ENDPOINT_MAPS)
}

/// Destinations of one policy chain, stored in endpoint map `map` under keys
/// `first..first + targets.len()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointKeys {
    pub map: u32,
    pub first: u32,
    pub targets: Vec<(IpAddr, u16)>,
}

impl EndpointKeys {
    fn programmed(&self) -> ProgrammedKeys {
        ProgrammedKeys {
            map: self.map,
            first: self.first,
            count: self.targets.len() as u32,
            fingerprint: fingerprint(&self.targets),
        }
    }
}

/// What is remembered of [`EndpointKeys`]: enough to delete them or tell a change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgrammedKeys {
    pub map: u32,
    pub first: u32,
    pub count: u32,
    pub fingerprint: u64,
}

/// A chain of one Service port, by its purpose; [`PortNames`] gives its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainId {
    /// `service-…`: balances over all ready endpoints.
    Service,
    /// `local-…`: balances over the node's own endpoints.
    Local,
    /// `external-…`: NodePorts, external and load-balancer IPs.
    External,
    /// `firewall-…`: loadBalancerSourceRanges.
    Firewall,
    /// `endpoint-…`: one endpoint of a ClientIP-affinity Service.
    Endpoint(SocketAddr),
}

/// The names of a Service port's chains and affinity sets, upstream's
/// `<kind>-<HASH8>-<namespace>/<name>/<protocol>/<port>`. They are derived again
/// when needed rather than kept: at 10,000 Services the names alone are megabytes.
pub struct PortNames<'a> {
    name: &'a ServicePortName,
    /// `<namespace>/<name>/<protocol>/<port>`
    path: String,
    hash: String,
}

impl<'a> PortNames<'a> {
    /// `port` (the Service port's number) names ports that have no name.
    pub fn new(name: &'a ServicePortName, port: u16) -> Self {
        let proto = name.protocol.lower();
        let label = if name.port.is_empty() {
            port.to_string()
        } else {
            name.port.clone()
        };
        PortNames {
            name,
            path: format!("{}/{}/{proto}/{label}", name.namespace, name.name),
            hash: hash(&format!("{name}{proto}"))[..8].to_string(),
        }
    }

    fn endpoint_base(&self, ep: SocketAddr) -> String {
        let proto = self.name.protocol.lower();
        format!(
            "{}-{}__{}/{}",
            &hash(&format!("{}{proto}{ep}", self.name))[..8],
            self.path,
            ep.ip(),
            ep.port()
        )
    }

    pub fn chain(&self, id: ChainId) -> String {
        let kind = match id {
            ChainId::Service => "service",
            ChainId::Local => "local",
            ChainId::External => "external",
            ChainId::Firewall => "firewall",
            ChainId::Endpoint(ep) => return format!("endpoint-{}", self.endpoint_base(ep)),
        };
        format!("{kind}-{}-{}", self.hash, self.path)
    }

    /// The set of clients recently sent to endpoint `ep` (ClientIP affinity).
    pub fn affinity_set(&self, ep: SocketAddr) -> String {
        format!("affinity-{}", self.endpoint_base(ep))
    }
}

/// What one Service port programs (built for a sync, then summarized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRuleset {
    /// The Service port's number, which places its keys in the endpoint maps.
    pub base: u32,
    /// The Service's port (part of the names of ports without a name).
    pub port: u16,
    pub elements: Vec<Element>,
    pub chains: BTreeMap<ChainId, Vec<Rule>>,
    /// Affinity sets, by endpoint: timeout in seconds.
    pub affinity_sets: BTreeMap<SocketAddr, u32>,
    pub endpoint_keys: Vec<EndpointKeys>,
}

/// What is remembered of an [`Element`]: its key, to delete it, and a fingerprint of
/// its verdict (a chain name), to tell a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgrammedElement {
    pub set: SharedSet,
    pub key: ElementKey,
    pub verdict: u64,
}

impl ProgrammedElement {
    /// A fingerprint of the whole element, under which the proxier counts the Service
    /// ports that add it.
    pub fn id(&self) -> u64 {
        fingerprint(self)
    }
}

impl Element {
    pub fn programmed(&self) -> ProgrammedElement {
        ProgrammedElement {
            set: self.set,
            key: self.key.clone(),
            verdict: fingerprint(&self.verdict),
        }
    }
}

fn fingerprint(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// What the proxier remembers of a programmed Service port: enough to tell what
/// changed and to remove it, without names or rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub base: u32,
    pub port: u16,
    pub elements: Box<[ProgrammedElement]>,
    /// Chains and a fingerprint of their rules.
    pub chains: Box<[(ChainId, u64)]>,
    pub affinity_sets: Box<[(SocketAddr, u32)]>,
    pub endpoint_keys: Box<[ProgrammedKeys]>,
}

impl ServiceRuleset {
    pub fn rule_count(&self) -> usize {
        self.elements.len()
            + self.chains.values().map(Vec::len).sum::<usize>()
            + self
                .endpoint_keys
                .iter()
                .map(|k| k.targets.len())
                .sum::<usize>()
    }

    pub fn summary(&self) -> Programmed {
        Programmed {
            base: self.base,
            port: self.port,
            endpoint_keys: self
                .endpoint_keys
                .iter()
                .map(EndpointKeys::programmed)
                .collect(),
            elements: self.elements.iter().map(Element::programmed).collect(),
            chains: self
                .chains
                .iter()
                .map(|(id, rules)| (*id, fingerprint(rules)))
                .collect(),
            affinity_sets: self.affinity_sets.iter().map(|(e, t)| (*e, *t)).collect(),
        }
    }
}

impl Programmed {
    pub fn rule_count(&self) -> usize {
        self.elements.len()
            + self.chains.len()
            + self
                .endpoint_keys
                .iter()
                .map(|k| k.count as usize)
                .sum::<usize>()
    }
}

/// Node-wide settings, for one family (`ip` or `ip6` table).
#[derive(Debug, Clone)]
pub struct NftContext {
    pub v6: bool,
    pub masquerade_all: bool,
    pub local: LocalDetector,
}

impl NftContext {
    pub fn family(&self) -> &'static str {
        if self.v6 { "ip6" } else { "ip" }
    }

    /// Match for traffic (not) from local pods, if local traffic can be told apart.
    fn local_match(&self, op: Cmp) -> Option<Rule> {
        match &self.local {
            LocalDetector::None => None,
            LocalDetector::Cidrs(c) => c
                .iter()
                .find(|c| c.is_ipv6() == self.v6)
                .map(|c| expr::addr_match(true, c, op)),
            LocalDetector::BridgeInterface(b) => Some(expr::iifname(b, op)),
            LocalDetector::InterfaceNamePrefix(p) => Some(expr::iifname(&format!("{p}*"), op)),
        }
    }
}

pub fn service_chain(entry: &ServiceEntry) -> String {
    PortNames::new(&entry.port.name, entry.port.port).chain(ChainId::Service)
}

fn goto(chain: &str) -> Verdict {
    Verdict::Goto(chain.to_string())
}

fn jump_masquerade() -> Expr {
    expr::verdict(Verdict::Jump("mark-for-masquerade".to_string()))
}

/// The rules of one Service port; `base` is a number no other programmed Service port
/// of the family has (`number` places the port's keys in the endpoint maps).
pub fn service_ruleset(entry: &ServiceEntry, ctx: &NftContext, number: u32) -> ServiceRuleset {
    let mut out = ServiceRuleset {
        base: number,
        port: entry.port.port,
        ..Default::default()
    };
    let port = &entry.port;
    let Some(cluster_ip) = port
        .cluster_ips
        .iter()
        .find(|ip| ip.is_ipv6() == ctx.v6)
        .copied()
    else {
        return out;
    };
    let family = |eps: &[Endpoint]| {
        eps.iter()
            .filter(|e| e.addr.is_ipv6() == ctx.v6)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cluster_eps = family(&entry.categorized.cluster);
    let local_eps = family(&entry.categorized.local);
    let names = PortNames::new(&port.name, port.port);
    let (svc_chain, local_chain, ext_chain, fw_chain) = (
        names.chain(ChainId::Service),
        names.chain(ChainId::Local),
        names.chain(ChainId::External),
        names.chain(ChainId::Firewall),
    );
    let proto = port.name.protocol;
    let key = |ip: IpAddr| ElementKey::AddrProtoPort(ip, proto, port.port);
    let ext_ips: Vec<IpAddr> = port
        .external_ips
        .iter()
        .filter(|ip| ip.is_ipv6() == ctx.v6)
        .copied()
        .collect();
    let lb_ips: Vec<IpAddr> = port
        .load_balancer_ips
        .iter()
        .filter(|ip| ip.is_ipv6() == ctx.v6)
        .copied()
        .collect();
    let has_external = port.node_port != 0 || !ext_ips.is_empty() || !lb_ips.is_empty();
    let uses_cluster = !cluster_eps.is_empty() && (!port.internal_policy_local || has_external);
    let uses_local = !local_eps.is_empty()
        && (port.internal_policy_local || (has_external && port.external_policy_local));
    let no_endpoints = cluster_eps.is_empty() && local_eps.is_empty();
    let blocked = |policy_local: bool| {
        if policy_local && !no_endpoints {
            Verdict::Drop
        } else {
            goto("reject-chain")
        }
    };
    let mut element = |set, key, verdict| {
        out.elements.push(Element { set, key, verdict });
    };

    element(SharedSet::ClusterIps, ElementKey::Addr(cluster_ip), None);
    let (internal_ok, internal_chain) = if port.internal_policy_local {
        (!local_eps.is_empty(), &local_chain)
    } else {
        (!cluster_eps.is_empty(), &svc_chain)
    };
    if internal_ok {
        element(
            SharedSet::ServiceIps,
            key(cluster_ip),
            Some(goto(internal_chain)),
        );
    } else {
        element(
            SharedSet::NoEndpointServices,
            key(cluster_ip),
            Some(blocked(port.internal_policy_local)),
        );
    }

    let external_ok = if port.external_policy_local {
        !local_eps.is_empty()
    } else {
        !cluster_eps.is_empty()
    };
    let source_ranges: Vec<Cidr> = port
        .load_balancer_source_ranges
        .iter()
        .filter_map(|r| Cidr::parse(r).ok())
        .filter(|c| c.is_ipv6() == ctx.v6)
        .collect();
    for (ip, via_firewall) in ext_ips
        .iter()
        .map(|ip| (*ip, false))
        .chain(lb_ips.iter().map(|ip| (*ip, !source_ranges.is_empty())))
    {
        if external_ok {
            let target = if via_firewall { &fw_chain } else { &ext_chain };
            element(SharedSet::ServiceIps, key(ip), Some(goto(target)));
        } else {
            element(
                SharedSet::NoEndpointServices,
                key(ip),
                Some(blocked(port.external_policy_local)),
            );
        }
    }
    if port.node_port != 0 {
        let k = ElementKey::ProtoPort(proto, port.node_port);
        if external_ok {
            element(SharedSet::ServiceNodeports, k, Some(goto(&ext_chain)));
        } else {
            element(
                SharedSet::NoEndpointNodeports,
                k,
                Some(blocked(port.external_policy_local)),
            );
        }
    }

    let masq = if ctx.masquerade_all {
        Some(Vec::new())
    } else {
        ctx.local_match(Cmp::Neq)
    };
    if uses_cluster {
        // ip daddr <cluster IP> <proto> dport <port> [not local] jump mark-for-masquerade
        let masq_rule = masq.map(|m| {
            let mut r = expr::addr_match(false, &host(cluster_ip), Cmp::Eq);
            r.extend(expr::l4proto(proto_number(proto)));
            r.extend(expr::dport(port.port));
            r.extend(m);
            r.push(jump_masquerade());
            r
        });
        let keys = number * KEYS_PER_SERVICE;
        let rules = balancing_rules(entry, &names, &cluster_eps, masq_rule, ctx, keys, &mut out);
        out.chains.insert(ChainId::Service, rules);
    }
    if uses_local {
        let keys = number * KEYS_PER_SERVICE + KEYS_PER_SERVICE / 2;
        let rules = balancing_rules(entry, &names, &local_eps, None, ctx, keys, &mut out);
        out.chains.insert(ChainId::Local, rules);
    }
    let mut used: Vec<&Endpoint> = Vec::new();
    if uses_cluster {
        used.extend(cluster_eps.iter());
    }
    if uses_local {
        used.extend(
            local_eps
                .iter()
                .filter(|l| !cluster_eps.contains(l) || !uses_cluster),
        );
    }
    for ep in used {
        // Hairpin (an endpoint reaching itself through the Service) is masqueraded in
        // postrouting by source . destination lookup, so no per-endpoint chain is needed.
        out.elements.push(Element {
            set: SharedSet::HairpinEndpoints,
            key: ElementKey::SameAddrPair(ep.addr.ip()),
            verdict: None,
        });
        // Per-endpoint chains exist only for ClientIP affinity, which needs a set per
        // endpoint. Tens of thousands of chains make every transaction slow.
        let Some(timeout) = port.affinity_timeout else {
            continue;
        };
        let set = names.affinity_set(ep.addr);
        let mut dnat = expr::l4proto(proto_number(proto));
        dnat.extend(expr::dnat_to(ep.addr.ip(), ep.addr.port()));
        let rules = vec![expr::update_saddr(ctx.v6, &set), dnat];
        out.affinity_sets.insert(ep.addr, timeout);
        out.chains.insert(ChainId::Endpoint(ep.addr), rules);
    }
    if has_external && external_ok {
        let rules = if port.external_policy_local {
            let mut r = Vec::new();
            if let Some(mut local) = ctx.local_match(Cmp::Eq) {
                local.push(expr::verdict(goto(&svc_chain)));
                r.push(local);
            }
            let mut masq = expr::fib_local(true);
            masq.push(jump_masquerade());
            r.push(masq);
            let mut to_svc = expr::fib_local(true);
            to_svc.push(expr::verdict(goto(&svc_chain)));
            r.push(to_svc);
            r.push(vec![expr::verdict(goto(&local_chain))]);
            r
        } else {
            vec![
                vec![jump_masquerade()],
                vec![expr::verdict(goto(&svc_chain))],
            ]
        };
        out.chains.insert(ChainId::External, rules);
        if !lb_ips.is_empty() && !source_ranges.is_empty() {
            let mut allowed = expr::addr_in(true, ctx.v6, &source_ranges);
            allowed.push(expr::verdict(goto(&ext_chain)));
            out.chains.insert(
                ChainId::Firewall,
                vec![allowed, vec![expr::verdict(Verdict::Drop)]],
            );
        }
    }
    out
}

fn host(ip: IpAddr) -> Cidr {
    Cidr {
        addr: ip,
        prefix: if ip.is_ipv6() { 128 } else { 32 },
    }
}

/// Up to this many endpoints, a policy chain picks one from the shared endpoint maps
/// (see [`ENDPOINT_MAPS`]); above it, from a `numgen` map of its own, for the few
/// Services that big. A map per Service for all would be a set per Service, and the
/// kernel looks sets up and numbers anonymous ones by scanning the table's list of
/// sets, which makes a sync quadratic in the number of Services (12.7 s at 10,000).
/// Must stay below half of `KEYS_PER_SERVICE`.
const MAX_SHARED_MAP_ENDPOINTS: usize = 100;

/// The policy chain: masquerade check, affinity lookups, then a random endpoint.
/// Destinations kept in an endpoint map from key `first` are added to `out`.
fn balancing_rules(
    entry: &ServiceEntry,
    names: &PortNames<'_>,
    eps: &[Endpoint],
    masq: Option<Rule>,
    ctx: &NftContext,
    first: u32,
    out: &mut ServiceRuleset,
) -> Vec<Rule> {
    let mut rules: Vec<Rule> = masq.into_iter().collect();
    let proto = proto_number(entry.port.name.protocol);
    if entry.port.affinity_timeout.is_some() {
        let mut targets = Vec::new();
        for ep in eps {
            let chain = names.chain(ChainId::Endpoint(ep.addr));
            let mut sticky = expr::saddr_in_set(ctx.v6, &names.affinity_set(ep.addr));
            sticky.push(expr::verdict(goto(&chain)));
            rules.push(sticky);
            targets.push(goto(&chain));
        }
        if targets.len() > MAX_SHARED_MAP_ENDPOINTS {
            rules.push(expr::numgen_vmap(targets));
        } else {
            rules.extend(one_of(targets.into_iter().map(|t| vec![expr::verdict(t)])));
        }
    } else {
        let targets: Vec<(IpAddr, u16)> = eps
            .iter()
            .map(|ep| (ep.addr.ip(), ep.addr.port()))
            .collect();
        let mut r = expr::l4proto(proto);
        if targets.len() > MAX_SHARED_MAP_ENDPOINTS {
            r.extend(expr::dnat_numgen(ctx.v6, &targets));
        } else {
            let map = (first / KEYS_PER_SERVICE) % ENDPOINT_MAPS;
            let n = targets.len() as u32;
            r.extend(expr::dnat_numgen_map(
                ctx.v6,
                n,
                first,
                &endpoint_map_name(map),
            ));
            out.endpoint_keys.push(EndpointKeys {
                map,
                first,
                targets,
            });
        }
        rules.push(r);
    }
    rules
}

/// Rules that take one of `actions` at random, each as likely: the first with
/// probability 1/N, else the second with 1/(N-1), ..., the last one unconditionally.
fn one_of(actions: impl ExactSizeIterator<Item = Rule>) -> Vec<Rule> {
    let n = actions.len();
    actions
        .enumerate()
        .map(|(i, action)| {
            let mut rule = if i + 1 < n {
                expr::one_in((n - i) as u32)
            } else {
                Vec::new()
            };
            rule.extend(action);
            rule
        })
        .collect()
}
