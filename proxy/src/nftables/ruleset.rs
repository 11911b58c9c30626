//! The nftables rules of one Service port, in the structure of upstream's nftables mode:
//! one `kube-proxy` table per family, verdict maps keyed by address . protocol . port
//! (O(1) dispatch however many Services) and a chain per Service port and policy that
//! DNATs through a numgen map. Unlike upstream there is no chain per endpoint (except
//! for ClientIP affinity, which needs a dynamic set per endpoint): nft transactions
//! slow down with the number of chains in the table, and at 10,000 Services the
//! per-endpoint chains made every sync several times slower.

use crate::config::LocalDetector;
use crate::iptables::names::hash;
use crate::model::{Endpoint, ServiceEntry};
use crate::net::Cidr;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A shared set or map element a Service port contributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub set: &'static str,
    /// `key` or `key : verdict`.
    pub element: String,
}

/// What one Service port programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRuleset {
    pub elements: Vec<Element>,
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets: name -> timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
}

impl ServiceRuleset {
    pub fn rule_count(&self) -> usize {
        self.elements.len() + self.chains.values().map(Vec::len).sum::<usize>()
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

    fn addr_kw(&self) -> &'static str {
        if self.v6 { "ip6" } else { "ip" }
    }

    /// Match for traffic not from local pods, if local traffic can be told apart.
    fn not_local(&self) -> Option<String> {
        match &self.local {
            LocalDetector::None => None,
            LocalDetector::Cidrs(c) => c
                .iter()
                .find(|c| c.is_ipv6() == self.v6)
                .map(|c| format!("{} saddr != {c}", self.addr_kw())),
            LocalDetector::BridgeInterface(b) => Some(format!("iifname != \"{b}\"")),
            LocalDetector::InterfaceNamePrefix(p) => Some(format!("iifname != \"{p}*\"")),
        }
    }

    fn is_local(&self) -> Option<String> {
        self.not_local().map(|m| m.replace(" != ", " "))
    }
}

fn base(entry: &ServiceEntry) -> String {
    let n = &entry.port.name;
    let proto = n.protocol.lower();
    let port = if n.port.is_empty() {
        entry.port.port.to_string()
    } else {
        n.port.clone()
    };
    format!(
        "{}-{}/{}/{proto}/{port}",
        &hash(&format!("{n}{proto}"))[..8],
        n.namespace,
        n.name
    )
}

fn endpoint_base(entry: &ServiceEntry, ep: SocketAddr) -> String {
    let n = &entry.port.name;
    let proto = n.protocol.lower();
    let port = if n.port.is_empty() {
        entry.port.port.to_string()
    } else {
        n.port.clone()
    };
    format!(
        "{}-{}/{}/{proto}/{port}__{}/{}",
        &hash(&format!("{n}{proto}{ep}"))[..8],
        n.namespace,
        n.name,
        ep.ip(),
        ep.port()
    )
}

pub fn service_chain(entry: &ServiceEntry) -> String {
    format!("service-{}", base(entry))
}

fn dnat_target(ep: SocketAddr) -> String {
    match ep {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

pub fn service_ruleset(entry: &ServiceEntry, ctx: &NftContext) -> ServiceRuleset {
    let mut out = ServiceRuleset::default();
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
    let b = base(entry);
    let (svc_chain, local_chain, ext_chain, fw_chain) = (
        format!("service-{b}"),
        format!("local-{b}"),
        format!("external-{b}"),
        format!("firewall-{b}"),
    );
    let proto = port.name.protocol.lower();
    let key = |ip: IpAddr, p: u16| format!("{ip} . {proto} . {p}");
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
            "drop"
        } else {
            "goto reject-chain"
        }
    };

    out.elements.push(Element {
        set: "cluster-ips",
        element: cluster_ip.to_string(),
    });
    let (internal_ok, internal_chain) = if port.internal_policy_local {
        (!local_eps.is_empty(), &local_chain)
    } else {
        (!cluster_eps.is_empty(), &svc_chain)
    };
    if internal_ok {
        out.elements.push(Element {
            set: "service-ips",
            element: format!("{} : goto {internal_chain}", key(cluster_ip, port.port)),
        });
    } else {
        out.elements.push(Element {
            set: "no-endpoint-services",
            element: format!(
                "{} : {}",
                key(cluster_ip, port.port),
                blocked(port.internal_policy_local)
            ),
        });
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
            out.elements.push(Element {
                set: "service-ips",
                element: format!("{} : goto {target}", key(ip, port.port)),
            });
        } else {
            out.elements.push(Element {
                set: "no-endpoint-services",
                element: format!(
                    "{} : {}",
                    key(ip, port.port),
                    blocked(port.external_policy_local)
                ),
            });
        }
    }
    if port.node_port != 0 {
        let k = format!("{proto} . {}", port.node_port);
        if external_ok {
            out.elements.push(Element {
                set: "service-nodeports",
                element: format!("{k} : goto {ext_chain}"),
            });
        } else {
            out.elements.push(Element {
                set: "no-endpoint-nodeports",
                element: format!("{k} : {}", blocked(port.external_policy_local)),
            });
        }
    }

    let masq = if ctx.masquerade_all {
        Some(String::new())
    } else {
        ctx.not_local().map(|m| format!(" {m}"))
    };
    if uses_cluster {
        let masq_rule = masq.map(|m| {
            format!(
                "{} daddr {cluster_ip} {proto} dport {}{m} jump mark-for-masquerade",
                ctx.addr_kw(),
                port.port
            )
        });
        out.chains.insert(
            svc_chain.clone(),
            balancing_rules(entry, &cluster_eps, masq_rule, ctx),
        );
    }
    if uses_local {
        out.chains.insert(
            local_chain.clone(),
            balancing_rules(entry, &local_eps, None, ctx),
        );
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
            set: "hairpin-endpoints",
            element: format!("{0} . {0}", ep.addr.ip()),
        });
        // Per-endpoint chains exist only for ClientIP affinity, which needs a set per
        // endpoint. Tens of thousands of chains make every nft transaction slow.
        let Some(timeout) = port.affinity_timeout else {
            continue;
        };
        let eb = endpoint_base(entry, ep.addr);
        let set = format!("affinity-{eb}");
        let rules = vec![
            format!("update @{set} {{ {} saddr }}", ctx.addr_kw()),
            format!("meta l4proto {proto} dnat to {}", dnat_target(ep.addr)),
        ];
        out.affinity_sets.insert(set, timeout);
        out.chains.insert(format!("endpoint-{eb}"), rules);
    }
    if has_external && external_ok {
        let rules = if port.external_policy_local {
            let mut r = Vec::new();
            if let Some(local) = ctx.is_local() {
                r.push(format!("{local} goto {svc_chain}"));
            }
            r.push("fib saddr type local jump mark-for-masquerade".to_string());
            r.push(format!("fib saddr type local goto {svc_chain}"));
            r.push(format!("goto {local_chain}"));
            r
        } else {
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {svc_chain}"),
            ]
        };
        out.chains.insert(ext_chain.clone(), rules);
        if !lb_ips.is_empty() && !source_ranges.is_empty() {
            let ranges: Vec<String> = source_ranges.iter().map(Cidr::to_string).collect();
            out.chains.insert(
                fw_chain,
                vec![
                    format!(
                        "{} saddr {{ {} }} goto {ext_chain}",
                        ctx.addr_kw(),
                        ranges.join(", ")
                    ),
                    "drop".to_string(),
                ],
            );
        }
    }
    out
}

/// The policy chain: masquerade check, affinity lookups, then a random endpoint.
fn balancing_rules(
    entry: &ServiceEntry,
    eps: &[Endpoint],
    masq: Option<String>,
    ctx: &NftContext,
) -> Vec<String> {
    let mut rules: Vec<String> = masq.into_iter().collect();
    if entry.port.affinity_timeout.is_some() {
        for ep in eps {
            let eb = endpoint_base(entry, ep.addr);
            rules.push(format!(
                "{} saddr @affinity-{eb} goto endpoint-{eb}",
                ctx.addr_kw()
            ));
        }
    }
    if entry.port.affinity_timeout.is_some() {
        let targets: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : goto endpoint-{}", endpoint_base(entry, ep.addr)))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            eps.len(),
            targets.join(", ")
        ));
    } else {
        let targets: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : {} . {}", ep.addr.ip(), ep.addr.port()))
            .collect();
        rules.push(format!(
            "meta l4proto {} dnat {} addr . port to numgen random mod {} map {{ {} }}",
            entry.port.name.protocol.lower(),
            ctx.addr_kw(),
            eps.len(),
            targets.join(", ")
        ));
    }
    rules
}
