//! The iptables rules of IPVS mode: a small fixed set per family that matches on the
//! ipsets, so their number does not grow with the Services. Written whole on every
//! sync (declaring a chain in `iptables-restore --noflush` input flushes it).

use super::ipset::{self, comment, set_name};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

/// Our chains, per table.
pub const NAT_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
];
pub const FILTER_CHAINS: &[&str] = &[
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

/// Jumps from the built-in chains: (table, from, comment, to), each prepended.
pub const JUMPS: &[(&str, &str, &str, &str)] = &[
    (
        "nat",
        "OUTPUT",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "PREROUTING",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "kubernetes postrouting rules",
        "KUBE-POSTROUTING",
    ),
    (
        "filter",
        "FORWARD",
        "kubernetes forwarding rules",
        "KUBE-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        "kubernetes health check rules",
        "KUBE-NODE-PORT",
    ),
    (
        "filter",
        "INPUT",
        "kube-proxy firewall rules",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "kube-proxy firewall rules",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "INPUT",
        "kubernetes ipvs access filter",
        "KUBE-IPVS-FILTER",
    ),
    (
        "filter",
        "OUTPUT",
        "kubernetes ipvs access filter",
        "KUBE-IPVS-OUT-FILTER",
    ),
];

/// The arguments of a jump rule.
pub fn jump_args<'a>(comment: &'a str, to: &'a str) -> [&'a str; 6] {
    ["-m", "comment", "--comment", comment, "-j", to]
}

/// A rule added when its set has members: `-A from [-p protocol] -m set … -j to`.
struct SetRule {
    set: &'static str,
    table: &'static str,
    from: &'static str,
    to: &'static str,
    matches: &'static str,
    protocol: Option<&'static str>,
}

/// The Local sets come before their catch-all twins, so RETURN wins.
const SET_RULES: &[SetRule] = &[
    SetRule {
        set: ipset::LOOP_BACK,
        table: "nat",
        from: "KUBE-POSTROUTING",
        to: "MASQUERADE",
        matches: "dst,dst,src",
        protocol: None,
    },
    SetRule {
        set: ipset::LOAD_BALANCER,
        table: "nat",
        from: "KUBE-SERVICES",
        to: "KUBE-LOAD-BALANCER",
        matches: "dst,dst",
        protocol: None,
    },
    SetRule {
        set: ipset::LOAD_BALANCER_LOCAL,
        table: "nat",
        from: "KUBE-LOAD-BALANCER",
        to: "RETURN",
        matches: "dst,dst",
        protocol: None,
    },
    SetRule {
        set: ipset::NODE_PORT_LOCAL_TCP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "RETURN",
        matches: "dst",
        protocol: Some("tcp"),
    },
    SetRule {
        set: ipset::NODE_PORT_TCP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "KUBE-MARK-MASQ",
        matches: "dst",
        protocol: Some("tcp"),
    },
    SetRule {
        set: ipset::NODE_PORT_LOCAL_UDP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "RETURN",
        matches: "dst",
        protocol: Some("udp"),
    },
    SetRule {
        set: ipset::NODE_PORT_UDP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "KUBE-MARK-MASQ",
        matches: "dst",
        protocol: Some("udp"),
    },
    SetRule {
        set: ipset::NODE_PORT_LOCAL_SCTP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "RETURN",
        matches: "dst,dst",
        protocol: Some("sctp"),
    },
    SetRule {
        set: ipset::NODE_PORT_SCTP,
        table: "nat",
        from: "KUBE-NODE-PORT",
        to: "KUBE-MARK-MASQ",
        matches: "dst,dst",
        protocol: Some("sctp"),
    },
    SetRule {
        set: ipset::LOAD_BALANCER_FW,
        table: "filter",
        from: "KUBE-PROXY-FIREWALL",
        to: "KUBE-SOURCE-RANGES-FIREWALL",
        matches: "dst,dst",
        protocol: None,
    },
    SetRule {
        set: ipset::LOAD_BALANCER_SOURCE_CIDR,
        table: "filter",
        from: "KUBE-SOURCE-RANGES-FIREWALL",
        to: "RETURN",
        matches: "dst,dst,src",
        protocol: None,
    },
    SetRule {
        set: ipset::LOAD_BALANCER_SOURCE_IP,
        table: "filter",
        from: "KUBE-SOURCE-RANGES-FIREWALL",
        to: "RETURN",
        matches: "dst,dst,src",
        protocol: None,
    },
];

/// What the rules depend on, per family.
pub struct RuleInputs<'a> {
    pub v6: bool,
    pub masq_mark: &'a str,
    pub masquerade_all: bool,
    /// Match for traffic not from a local pod, when local traffic can be told.
    pub not_local: Option<String>,
    /// Sets that have members (base names).
    pub non_empty: &'a BTreeSet<&'static str>,
    /// LoadBalancer (ip, protocol, port) whose source ranges exclude the node itself.
    pub lb_no_node_access: &'a BTreeSet<(IpAddr, &'static str, u16)>,
}

/// `iptables-restore --noflush` input with the nat and filter tables of IPVS mode.
pub fn restore_input(r: &RuleInputs) -> String {
    let name = |base: &str| set_name(base, r.v6);
    let has = |base: &str| r.non_empty.contains(base);
    let m = r.masq_mark;
    let mut nat = String::from("*nat\n");
    let mut filter = String::from("*filter\n");
    for c in NAT_CHAINS {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    for c in FILTER_CHAINS {
        let _ = writeln!(filter, ":{c} - [0:0]");
    }
    for rule in SET_RULES {
        if !has(rule.set) {
            continue;
        }
        let out = if rule.table == "nat" {
            &mut nat
        } else {
            &mut filter
        };
        let proto = rule
            .protocol
            .map(|p| format!("-p {p} "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "-A {} {proto}-m comment --comment \"{}\" -m set --match-set {} {} -j {}",
            rule.from,
            comment(rule.set),
            name(rule.set),
            rule.matches,
            rule.to
        );
    }
    if has(ipset::CLUSTER_IP) {
        let head = format!(
            "-A KUBE-SERVICES -m comment --comment \"{}\" -m set --match-set {}",
            comment(ipset::CLUSTER_IP),
            name(ipset::CLUSTER_IP)
        );
        let _ = match (&r.not_local, r.masquerade_all) {
            (_, true) => writeln!(nat, "{head} dst,dst -j KUBE-MARK-MASQ"),
            (Some(not_local), false) => {
                writeln!(nat, "{head} dst,dst {not_local} -j KUBE-MARK-MASQ")
            }
            // Without a way to tell pod traffic, masquerade what the node itself sends
            // from a Service address (the VIP is picked as source on kube-ipvs0).
            (None, false) => writeln!(nat, "{head} src,dst -j KUBE-MARK-MASQ"),
        };
    }
    // External IPs: masquerade (not for the Local set), and accept traffic from off
    // the machine or to addresses that are local anyway.
    for (set, masquerade) in [
        (ipset::EXTERNAL_IP, true),
        (ipset::EXTERNAL_IP_LOCAL, false),
    ] {
        if !has(set) {
            continue;
        }
        let head = format!(
            "-A KUBE-SERVICES -m comment --comment \"{}\" -m set --match-set {} dst,dst",
            comment(set),
            name(set)
        );
        if masquerade {
            let _ = writeln!(nat, "{head} -j KUBE-MARK-MASQ");
        }
        let _ = writeln!(
            nat,
            "{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        );
        let _ = writeln!(nat, "{head} -m addrtype --dst-type LOCAL -j ACCEPT");
    }
    nat.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n");
    nat.push_str("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\n");
    filter.push_str("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP\n");
    for (ip, proto, port) in r.lb_no_node_access {
        let _ = writeln!(
            filter,
            "-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP"
        );
    }
    // Accept what IPVS will take, so other rules cannot drop it; last in KUBE-SERVICES.
    for set in [ipset::CLUSTER_IP, ipset::LOAD_BALANCER] {
        if has(set) {
            let _ = writeln!(
                nat,
                "-A KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
                name(set)
            );
        }
    }
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT"
    );
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    let _ = writeln!(
        filter,
        "-A KUBE-NODE-PORT -m comment --comment \"{}\" -m set --match-set {} dst -j ACCEPT",
        comment(ipset::HEALTH_CHECK_NODE_PORT),
        name(ipset::HEALTH_CHECK_NODE_PORT)
    );
    // Host ports must not be reachable through Service addresses on kube-ipvs0.
    for (set, matches) in [
        (ipset::LOAD_BALANCER, "dst,dst"),
        (ipset::CLUSTER_IP, "dst,dst"),
        (ipset::EXTERNAL_IP, "dst,dst"),
        (ipset::EXTERNAL_IP_LOCAL, "dst,dst"),
        (ipset::HEALTH_CHECK_NODE_PORT, "dst"),
    ] {
        let _ = writeln!(
            filter,
            "-A KUBE-IPVS-FILTER -m set --match-set {} {matches} -j RETURN",
            name(set)
        );
    }
    let _ = writeln!(
        filter,
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        name(ipset::IPVS_IPS)
    );
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN"
    );
    let _ = writeln!(nat, "-A KUBE-POSTROUTING -j MARK --xor-mark {m}");
    nat.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {m}");
    filter.push_str("COMMIT\n");
    nat.push_str("COMMIT\n");
    nat + &filter
}

/// Input that empties our chains (cleanup, before deleting them).
pub fn flush_input() -> String {
    let mut out = String::from("*nat\n");
    for c in NAT_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in NAT_CHAINS {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for c in FILTER_CHAINS {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}
