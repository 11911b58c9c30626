//! `nft -f` input: the table skeleton, a full rewrite, or the difference since the last
//! sync. Each script is applied as one transaction.

use super::ruleset::{Element, ServiceRuleset};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Sets and maps of the skeleton, with their types (by family).
fn shared_sets(v6: bool) -> [(&'static str, String); 6] {
    let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    [
        ("hairpin-endpoints", format!("type {addr} . {addr} ;")),
        ("cluster-ips", format!("type {addr} ;")),
        (
            "service-ips",
            format!("type {addr} . inet_proto . inet_service : verdict ;"),
        ),
        (
            "service-nodeports",
            "type inet_proto . inet_service : verdict ;".to_string(),
        ),
        (
            "no-endpoint-services",
            format!("type {addr} . inet_proto . inet_service : verdict ;"),
        ),
        (
            "no-endpoint-nodeports",
            "type inet_proto . inet_service : verdict ;".to_string(),
        ),
    ]
}

/// The fixed part of the table: base chains hooked into netfilter, masquerading,
/// dispatch through the verdict maps, and the no-endpoint checks. `node_port_match`
/// restricts NodePorts to some destinations (e.g. `ip daddr { 192.0.2.0/24 }`).
/// Priorities are numeric (-100 is dstnat, 100 srcnat): nft 1.0.6 accepts those names
/// only on some hooks.
pub fn skeleton(family: &str, table: &str, masq_mark: &str, node_port_match: &str) -> String {
    let v6 = family == "ip6";
    let addr_kw = if v6 { "ip6" } else { "ip" };
    let loopback = if v6 { "::1" } else { "127.0.0.0/8" };
    let t = format!("{family} {table}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t} {{ comment \"rules for kube-proxy\" ; }}");
    for (name, ty) in shared_sets(v6) {
        let kind = if ty.contains("verdict") { "map" } else { "set" };
        let _ = writeln!(s, "add {kind} {t} {name} {{ {ty} }}");
    }
    let chains: &[(&str, &str, &[String])] = &[
        (
            "mark-for-masquerade",
            "",
            &[format!("mark set mark or {masq_mark}")],
        ),
        (
            "masquerading",
            "",
            &[
                format!(
                    "ct status dnat {addr_kw} saddr . {addr_kw} daddr @hairpin-endpoints masquerade fully-random"
                ),
                format!("mark and {masq_mark} == 0 return"),
                format!("mark set mark xor {masq_mark}"),
                "masquerade fully-random".to_string(),
            ],
        ),
        (
            "services",
            "",
            &[
                format!("{addr_kw} daddr . meta l4proto . th dport vmap @service-ips"),
                format!(
                    "{node_port_match} {addr_kw} daddr != {loopback} meta l4proto . th dport vmap @service-nodeports"
                ),
            ],
        ),
        ("reject-chain", "", &["reject".to_string()]),
        (
            "service-endpoints-check",
            "",
            &[format!(
                "{addr_kw} daddr . meta l4proto . th dport vmap @no-endpoint-services"
            )],
        ),
        (
            "nodeport-endpoints-check",
            "",
            &[format!(
                "{node_port_match} meta l4proto . th dport vmap @no-endpoint-nodeports"
            )],
        ),
        (
            "cluster-ips-check",
            "",
            &[format!("{addr_kw} daddr @cluster-ips reject")],
        ),
        (
            "nat-prerouting",
            "type nat hook prerouting priority -100 ;",
            &["jump services".to_string()],
        ),
        (
            "nat-output",
            "type nat hook output priority -100 ;",
            &["jump services".to_string()],
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority 100 ;",
            &["jump masquerading".to_string()],
        ),
        (
            "filter-input",
            "type filter hook input priority -110 ;",
            &[
                "ct state new jump nodeport-endpoints-check".to_string(),
                "ct state new jump service-endpoints-check".to_string(),
            ],
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110 ;",
            &[
                "ct state new jump service-endpoints-check".to_string(),
                "ct state new jump cluster-ips-check".to_string(),
            ],
        ),
        (
            "filter-output",
            "type filter hook output priority -110 ;",
            &["ct state new jump service-endpoints-check".to_string()],
        ),
        (
            "filter-output-post-dnat",
            "type filter hook output priority -90 ;",
            &["ct state new jump cluster-ips-check".to_string()],
        ),
    ];
    for (name, hook, rules) in chains {
        if hook.is_empty() {
            let _ = writeln!(s, "add chain {t} {name}");
        } else {
            let _ = writeln!(s, "add chain {t} {name} {{ {hook} }}");
        }
        let _ = writeln!(s, "flush chain {t} {name}");
        for r in rules.iter() {
            let _ = writeln!(s, "add rule {t} {name} {}", r.trim_start());
        }
    }
    s
}

/// Element counts: several Service ports can share one element (a ClusterIP).
pub type ElementCounts = BTreeMap<Element, usize>;

pub fn count_elements<'a>(all: impl Iterator<Item = &'a ServiceRuleset>) -> ElementCounts {
    let mut counts = ElementCounts::new();
    for r in all {
        for e in &r.elements {
            *counts.entry(e.clone()).or_insert(0) += 1;
        }
    }
    counts
}

fn element_key(e: &Element) -> &str {
    e.element.split(" : ").next().unwrap_or(&e.element)
}

/// Everything from scratch: skeleton, emptied maps, every Service chain rewritten, and
/// `stale_chains` / `stale_sets` (found in the kernel, no longer wanted) removed.
pub fn full<'a>(
    t: &str,
    skeleton: &str,
    all: impl Iterator<Item = &'a ServiceRuleset> + Clone,
    stale_chains: &[String],
    stale_sets: &[String],
) -> String {
    let mut s = skeleton.to_string();
    for (name, ty) in shared_sets(t.starts_with("ip6 ")) {
        let kind = if ty.contains("verdict") { "map" } else { "set" };
        let _ = writeln!(s, "flush {kind} {t} {name}");
    }
    for r in all.clone() {
        for (set, timeout) in &r.affinity_sets {
            let _ = writeln!(
                s,
                "add set {t} {set} {{ type {} ; flags dynamic,timeout ; timeout {timeout}s ; }}",
                if t.starts_with("ip6 ") {
                    "ipv6_addr"
                } else {
                    "ipv4_addr"
                }
            );
        }
        for chain in r.chains.keys() {
            let _ = writeln!(s, "add chain {t} {chain}\nflush chain {t} {chain}");
        }
    }
    for c in stale_chains {
        let _ = writeln!(s, "flush chain {t} {c}");
    }
    for r in all.clone() {
        for (chain, rules) in &r.chains {
            for rule in rules {
                let _ = writeln!(s, "add rule {t} {chain} {rule}");
            }
        }
    }
    for (e, _) in count_elements(all) {
        let _ = writeln!(s, "add element {t} {} {{ {} }}", e.set, e.element);
    }
    for c in stale_chains {
        let _ = writeln!(s, "delete chain {t} {c}");
    }
    for set in stale_sets {
        let _ = writeln!(s, "delete set {t} {set}");
    }
    s
}

/// The difference for changed Service ports; `counts` is updated to the new state.
/// Returns None when nothing differs.
pub fn partial<'a>(
    t: &str,
    v6: bool,
    counts: &mut ElementCounts,
    changes: &[(Option<&'a ServiceRuleset>, Option<&'a ServiceRuleset>)],
) -> Option<String> {
    let empty = ServiceRuleset::default();
    let (mut add_sets, mut declare, mut fill, mut delete_chains, mut delete_sets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for (old, new) in changes {
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        for e in &old.elements {
            if let Some(c) = counts.get_mut(e) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(e);
                    removed.push(e.clone());
                }
            }
        }
        for e in &new.elements {
            let c = counts.entry(e.clone()).or_insert(0);
            *c += 1;
            if *c == 1 {
                added.push(e.clone());
            }
        }
        for (set, timeout) in &new.affinity_sets {
            if !old.affinity_sets.contains_key(set) {
                add_sets.push(format!("add set {t} {set} {{ type {} ; flags dynamic,timeout ; timeout {timeout}s ; }}", if v6 { "ipv6_addr" } else { "ipv4_addr" }));
            }
        }
        for (chain, rules) in &new.chains {
            if old.chains.get(chain) != Some(rules) {
                declare.push(format!("add chain {t} {chain}\nflush chain {t} {chain}"));
                fill.extend(rules.iter().map(|r| format!("add rule {t} {chain} {r}")));
            }
        }
        for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
            delete_chains.push(chain.clone());
        }
        for set in old
            .affinity_sets
            .keys()
            .filter(|s| !new.affinity_sets.contains_key(*s))
        {
            delete_sets.push(format!("delete set {t} {set}"));
        }
    }
    // An element that is both removed and re-added (same key and verdict) needs nothing.
    let readded: Vec<Element> = removed
        .iter()
        .filter(|e| added.contains(e))
        .cloned()
        .collect();
    removed.retain(|e| !readded.contains(e));
    added.retain(|e| !readded.contains(e));
    if removed.is_empty()
        && added.is_empty()
        && declare.is_empty()
        && delete_chains.is_empty()
        && add_sets.is_empty()
        && delete_sets.is_empty()
    {
        return None;
    }
    let mut s = String::new();
    for l in add_sets.iter().chain(&declare) {
        let _ = writeln!(s, "{l}");
    }
    // Elements go before the chains they point to are deleted, and after new chains exist.
    for e in &removed {
        let _ = writeln!(s, "delete element {t} {} {{ {} }}", e.set, element_key(e));
    }
    for l in &fill {
        let _ = writeln!(s, "{l}");
    }
    for e in &added {
        let _ = writeln!(s, "add element {t} {} {{ {} }}", e.set, e.element);
    }
    // Chains being deleted may jump to each other: empty them all before deleting any.
    for c in &delete_chains {
        let _ = writeln!(s, "flush chain {t} {c}");
    }
    for c in &delete_chains {
        let _ = writeln!(s, "delete chain {t} {c}");
    }
    for l in &delete_sets {
        let _ = writeln!(s, "{l}");
    }
    Some(s)
}
