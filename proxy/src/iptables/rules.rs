//! The rules of one Service port, in the upstream chain structure.
//!
//! nat: KUBE-SERVICES dispatches on ClusterIP/externalIP/LB IP to KUBE-SVC-* (or
//! KUBE-SVL-* for internalTrafficPolicy Local), KUBE-EXT-* and KUBE-FW-*; KUBE-NODEPORTS
//! dispatches NodePorts to KUBE-EXT-*; KUBE-SVC-* picks a KUBE-SEP-* per endpoint by
//! probability (with `recent` for ClientIP affinity); KUBE-SEP-* DNATs. filter: REJECT
//! or DROP for Services without (local) endpoints, health check node port ACCEPTs.

use crate::config::LocalDetector;
use crate::model::{Endpoint, Protocol, ServiceEntry};
use crate::net::Cidr;
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Filter,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// A rule in one of the chains that all Services share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedRule {
    pub table: Table,
    pub chain: &'static str,
    pub rule: String,
}

/// Everything one Service port contributes: rules in shared chains and its own nat chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    pub shared: Vec<SharedRule>,
    pub chains: BTreeMap<String, Vec<String>>,
}

impl ServiceRules {
    pub fn rule_count(&self) -> usize {
        self.shared.len() + self.chains.values().map(Vec::len).sum::<usize>()
    }
}

/// Node-wide settings that shape every Service's rules, for one IP family.
#[derive(Debug, Clone)]
pub struct RuleContext {
    pub v6: bool,
    pub masquerade_all: bool,
    pub local: LocalDetector,
    /// Whether KUBE-SVC/KUBE-SEP rules carry a comment. Upstream drops them once the
    /// family has more than [`LARGE_CLUSTER_ENDPOINTS`] endpoints: they are most of
    /// the restore input's size there and nothing reads them.
    pub endpoint_comments: bool,
}

/// Above this many endpoints (in one family) endpoint rules go without comments.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

impl RuleContext {
    /// `-m comment --comment <text> ` for an endpoint rule, or nothing in a large cluster.
    fn endpoint_comment(&self, text: &str) -> String {
        if self.endpoint_comments {
            format!("-m comment --comment {} ", quote(text))
        } else {
            String::new()
        }
    }

    fn host_len(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// Match for traffic that does not come from a local pod, if local traffic can be told.
    fn not_local(&self) -> Option<String> {
        match &self.local {
            LocalDetector::None => None,
            LocalDetector::Cidrs(c) => c
                .iter()
                .find(|c| c.is_ipv6() == self.v6)
                .map(|c| format!("! -s {c}")),
            LocalDetector::BridgeInterface(b) => Some(format!("! -i {b}")),
            LocalDetector::InterfaceNamePrefix(p) => Some(format!("! -i {p}+")),
        }
    }

    fn is_local(&self) -> Option<String> {
        self.not_local()
            .map(|m| m.trim_start_matches("! ").to_string())
    }
}

pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";

fn quote(comment: &str) -> String {
    if comment.contains(' ') {
        format!("\"{comment}\"")
    } else {
        comment.to_string()
    }
}

fn proto_match(p: Protocol) -> String {
    format!("-m {0} -p {0}", p.lower())
}

/// Rules for `entry` in family `ctx.v6`; empty when the Service has no ClusterIP of that family.
pub fn service_rules(entry: &ServiceEntry, ctx: &RuleContext) -> ServiceRules {
    let mut out = ServiceRules::default();
    let port = &entry.port;
    let Some(cluster_ip) = port
        .cluster_ips
        .iter()
        .find(|ip| ip.is_ipv6() == ctx.v6)
        .copied()
    else {
        return out;
    };
    let name = &port.name;
    let svc_name = name.to_string();
    let proto = proto_match(name.protocol);
    let family = |eps: &[Endpoint]| {
        eps.iter()
            .filter(|e| e.addr.is_ipv6() == ctx.v6)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cluster_eps = family(&entry.categorized.cluster);
    let local_eps = family(&entry.categorized.local);
    let svc_chain = names::service_chain(name);
    let local_chain = names::local_chain(name);
    let ext_chain = names::external_chain(name);
    let fw_chain = names::firewall_chain(name);
    let host = |ip: IpAddr| format!("{ip}/{}", ctx.host_len());

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
    // KUBE-SVC-* serves Cluster-policy traffic, and with externalTrafficPolicy Local it
    // still serves pod and node-local sources of external traffic.
    let uses_cluster = !cluster_eps.is_empty() && (!port.internal_policy_local || has_external);
    let uses_local = !local_eps.is_empty()
        && (port.internal_policy_local || (has_external && port.external_policy_local));
    let no_endpoints = cluster_eps.is_empty() && local_eps.is_empty();

    // Internal (ClusterIP) traffic.
    let (internal_ok, internal_target, internal_filter) = if port.internal_policy_local {
        (
            !local_eps.is_empty(),
            local_chain.clone(),
            if no_endpoints { "REJECT" } else { "DROP" },
        )
    } else {
        (!cluster_eps.is_empty(), svc_chain.clone(), "REJECT")
    };
    let ip_match = format!("{proto} -d {} --dport {}", host(cluster_ip), port.port);
    if internal_ok {
        out.shared.push(SharedRule {
            table: Table::Nat,
            chain: "KUBE-SERVICES",
            rule: format!(
                "-m comment --comment {} {ip_match} -j {internal_target}",
                quote(&format!("{svc_name} cluster IP"))
            ),
        });
    } else {
        let why = if internal_filter == "DROP" {
            "has no local endpoints"
        } else {
            "has no endpoints"
        };
        out.shared.push(SharedRule {
            table: Table::Filter,
            chain: "KUBE-SERVICES",
            rule: format!(
                "-m comment --comment {} {ip_match} -j {internal_filter}",
                quote(&format!("{svc_name} {why}"))
            ),
        });
    }

    // External traffic (NodePort, externalIPs, LoadBalancer IPs) all goes through KUBE-EXT-*.
    let (external_ok, external_filter) = if port.external_policy_local {
        (
            !local_eps.is_empty(),
            if no_endpoints { "REJECT" } else { "DROP" },
        )
    } else {
        (!cluster_eps.is_empty(), "REJECT")
    };
    let external_why = if external_filter == "DROP" {
        "has no local endpoints"
    } else {
        "has no endpoints"
    };
    for ip in &ext_ips {
        let m = format!("{proto} -d {} --dport {}", host(*ip), port.port);
        if external_ok {
            out.shared.push(SharedRule {
                table: Table::Nat,
                chain: "KUBE-SERVICES",
                rule: format!(
                    "-m comment --comment {} {m} -j {ext_chain}",
                    quote(&format!("{svc_name} external IP"))
                ),
            });
        } else {
            out.shared.push(SharedRule {
                table: Table::Filter,
                chain: "KUBE-EXTERNAL-SERVICES",
                rule: format!(
                    "-m comment --comment {} {m} -j {external_filter}",
                    quote(&format!("{svc_name} {external_why}"))
                ),
            });
        }
    }
    let source_ranges: Vec<Cidr> = port
        .load_balancer_source_ranges
        .iter()
        .filter_map(|r| Cidr::parse(r).ok())
        .filter(|c| c.is_ipv6() == ctx.v6)
        .collect();
    for ip in &lb_ips {
        let m = format!("{proto} -d {} --dport {}", host(*ip), port.port);
        if external_ok {
            let target = if source_ranges.is_empty() {
                &ext_chain
            } else {
                &fw_chain
            };
            out.shared.push(SharedRule {
                table: Table::Nat,
                chain: "KUBE-SERVICES",
                rule: format!(
                    "-m comment --comment {} {m} -j {target}",
                    quote(&format!("{svc_name} loadbalancer IP"))
                ),
            });
            if !source_ranges.is_empty() {
                out.shared.push(SharedRule {
                    table: Table::Filter,
                    chain: "KUBE-PROXY-FIREWALL",
                    rule: format!(
                        "-m comment --comment {} {m} -j DROP",
                        quote(&format!("{svc_name} traffic not accepted by {fw_chain}"))
                    ),
                });
            }
        } else {
            out.shared.push(SharedRule {
                table: Table::Filter,
                chain: "KUBE-EXTERNAL-SERVICES",
                rule: format!(
                    "-m comment --comment {} {m} -j {external_filter}",
                    quote(&format!("{svc_name} {external_why}"))
                ),
            });
        }
    }
    if port.node_port != 0 {
        if external_ok {
            out.shared.push(SharedRule {
                table: Table::Nat,
                chain: "KUBE-NODEPORTS",
                rule: format!(
                    "-m comment --comment {} {proto} --dport {} -j {ext_chain}",
                    quote(&svc_name),
                    port.node_port
                ),
            });
        } else {
            out.shared.push(SharedRule { table: Table::Filter, chain: "KUBE-EXTERNAL-SERVICES", rule: format!("-m comment --comment {} -m addrtype --dst-type LOCAL {proto} --dport {} -j {external_filter}", quote(&format!("{svc_name} {external_why}")), port.node_port) });
        }
    }
    if port.health_check_node_port != 0 {
        out.shared.push(SharedRule {
            table: Table::Filter,
            chain: "KUBE-NODEPORTS",
            rule: format!(
                "-m comment --comment {} -m tcp -p tcp --dport {} -j ACCEPT",
                quote(&format!("{svc_name} health check node port")),
                port.health_check_node_port
            ),
        });
    }

    let masq_match = if ctx.masquerade_all {
        Some(String::new())
    } else {
        ctx.not_local().map(|m| format!(" {m}"))
    };
    if uses_cluster {
        let masq = masq_match.map(|m| {
            format!(
                "-m comment --comment {} {ip_match}{m} -j {MARK_MASQ}",
                quote(&format!("{svc_name} cluster IP"))
            )
        });
        out.chains.insert(
            svc_chain.clone(),
            balancing_rules(entry, &cluster_eps, masq, ctx),
        );
    }
    if uses_local {
        out.chains.insert(
            local_chain.clone(),
            balancing_rules(entry, &local_eps, None, ctx),
        );
    }
    let mut endpoint_set: Vec<&Endpoint> = Vec::new();
    if uses_cluster {
        endpoint_set.extend(cluster_eps.iter());
    }
    if uses_local {
        endpoint_set.extend(local_eps.iter());
    }
    for ep in endpoint_set {
        out.chains
            .entry(names::endpoint_chain(name, ep.addr))
            .or_insert_with(|| endpoint_rules(entry, ep, ctx));
    }

    if has_external && external_ok {
        let mut rules = Vec::new();
        if port.external_policy_local {
            if let Some(local) = ctx.is_local() {
                rules.push(format!(
                    "-m comment --comment {} {local} -j {svc_chain}",
                    quote(&format!("pod traffic for {svc_name} external destinations"))
                ));
            }
            rules.push(format!(
                "-m comment --comment {} -m addrtype --src-type LOCAL -j {MARK_MASQ}",
                quote(&format!(
                    "masquerade LOCAL traffic for {svc_name} external destinations"
                ))
            ));
            rules.push(format!(
                "-m comment --comment {} -m addrtype --src-type LOCAL -j {svc_chain}",
                quote(&format!(
                    "route LOCAL traffic for {svc_name} external destinations"
                ))
            ));
            rules.push(format!("-j {local_chain}"));
        } else {
            rules.push(format!(
                "-m comment --comment {} -j {MARK_MASQ}",
                quote(&format!(
                    "masquerade traffic for {svc_name} external destinations"
                ))
            ));
            rules.push(format!("-j {svc_chain}"));
        }
        out.chains.insert(ext_chain.clone(), rules);
        if !lb_ips.is_empty() && !source_ranges.is_empty() {
            let mut rules: Vec<String> = source_ranges
                .iter()
                .map(|r| {
                    format!(
                        "-m comment --comment {} -s {r} -j {ext_chain}",
                        quote(&format!("{svc_name} loadbalancer IP"))
                    )
                })
                .collect();
            rules.push(format!(
                "-m comment --comment {}",
                quote(&format!(
                    "other traffic to {svc_name} will be dropped by KUBE-PROXY-FIREWALL"
                ))
            ));
            out.chains.insert(fw_chain, rules);
        }
    }
    out
}

/// KUBE-SVC-*/KUBE-SVL-*: optional masquerade rule, affinity checks, then a random pick.
fn balancing_rules(
    entry: &ServiceEntry,
    eps: &[Endpoint],
    masq: Option<String>,
    ctx: &RuleContext,
) -> Vec<String> {
    let name = &entry.port.name;
    let svc_name = name.to_string();
    let comment = |ep: &Endpoint| ctx.endpoint_comment(&format!("{svc_name} -> {}", ep.addr));
    let mut rules: Vec<String> = masq.into_iter().collect();
    if let Some(timeout) = entry.port.affinity_timeout {
        for ep in eps {
            let sep = names::endpoint_chain(name, ep.addr);
            rules.push(format!(
                "{}-m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                comment(ep)
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = names::endpoint_chain(name, ep.addr);
        if i + 1 < n {
            rules.push(format!(
                "{}-m statistic --mode random --probability {:.10} -j {sep}",
                comment(ep),
                1.0 / (n - i) as f64
            ));
        } else {
            rules.push(format!("{}-j {sep}", comment(ep)));
        }
    }
    rules
}

/// KUBE-SEP-*: masquerade hairpin traffic (an endpoint reaching itself), then DNAT.
fn endpoint_rules(entry: &ServiceEntry, ep: &Endpoint, ctx: &RuleContext) -> Vec<String> {
    let name = &entry.port.name;
    let sep = names::endpoint_chain(name, ep.addr);
    let comment = ctx.endpoint_comment(&name.to_string());
    let recent = if entry.port.affinity_timeout.is_some() {
        format!("-m recent --name {sep} --set ")
    } else {
        String::new()
    };
    vec![
        format!(
            "{comment}-s {}/{} -j {MARK_MASQ}",
            ep.addr.ip(),
            ctx.host_len()
        ),
        format!(
            "{comment}{recent}{} -j DNAT --to-destination {}",
            proto_match(name.protocol),
            ep.addr
        ),
    ]
}
