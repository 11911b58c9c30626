//! iptables-restore input: a full rewrite of everything the proxy owns, or a partial
//! update that touches only the chains and shared rules of changed Service ports.
//! Both are meant for `iptables-restore --noflush`, so chains we do not own are kept.

use super::rules::{ServiceRules, SharedRule, Table};
use std::collections::BTreeSet;
use std::fmt::Write;

/// The shared chains, per table, in declaration order.
const SHARED_CHAINS: &[(Table, &str)] = &[
    (Table::Filter, "KUBE-SERVICES"),
    (Table::Filter, "KUBE-EXTERNAL-SERVICES"),
    (Table::Filter, "KUBE-FORWARD"),
    (Table::Filter, "KUBE-NODEPORTS"),
    (Table::Filter, "KUBE-PROXY-FIREWALL"),
    (Table::Nat, "KUBE-SERVICES"),
    (Table::Nat, "KUBE-NODEPORTS"),
    (Table::Nat, "KUBE-POSTROUTING"),
    (Table::Nat, "KUBE-MARK-MASQ"),
];

/// The chain that, with localhost NodePorts, drops outside packets to 127.0.0.0/8
/// (route_localnet would otherwise accept them); kubelet writes the same rule.
pub const LOCALNET_FIREWALL: &str = "KUBE-FIREWALL";

/// Node-wide rules that do not depend on any Service.
pub struct StaticRules {
    pub masq_mark: String,
    /// Matches (e.g. `-m addrtype --dst-type LOCAL`, `-d 192.0.2.0/24`) sending traffic to KUBE-NODEPORTS.
    pub node_port_matches: Vec<String>,
    /// NodePorts answer on 127.0.0.1 (route_localnet is on): guard it with KUBE-FIREWALL.
    pub localhost_node_ports: bool,
}

impl StaticRules {
    fn chains(&self, table: Table) -> Vec<String> {
        let mut out: Vec<String> = SHARED_CHAINS
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, c)| c.to_string())
            .collect();
        if table == Table::Filter && self.localhost_node_ports {
            out.push(LOCALNET_FIREWALL.to_string());
        }
        out
    }

    fn rules(&self, table: Table) -> Vec<String> {
        let m = &self.masq_mark;
        match table {
            Table::Filter => {
                let mut rules = vec![
                    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".to_string(),
                    format!("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT"),
                    "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
                ];
                if self.localhost_node_ports {
                    rules.push(format!("-A {LOCALNET_FIREWALL} -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"));
                }
                rules
            }
            Table::Nat => vec![
                format!("-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN"),
                format!("-A KUBE-POSTROUTING -j MARK --xor-mark {m}"),
                "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".to_string(),
                format!("-A KUBE-MARK-MASQ -j MARK --or-mark {m}"),
            ],
        }
    }

    /// The NodePort jump must stay last in nat KUBE-SERVICES: Service rules are inserted before it.
    fn node_port_jumps(&self) -> Vec<String> {
        self.node_port_matches
            .iter()
            .map(|m| format!("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" {m} -j KUBE-NODEPORTS"))
            .collect()
    }
}

fn section(
    out: &mut String,
    table: Table,
    declare: &[String],
    body: &[String],
    delete_chains: &[String],
) {
    let _ = writeln!(out, "*{}", table.name());
    for c in declare {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for line in body {
        out.push_str(line);
        out.push('\n');
    }
    for c in delete_chains {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
}

/// How a full rewrite is cut into iptables-restore runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One run, one transaction per table.
    Single,
    /// The Service chains in runs of one transaction declaring about this many chains
    /// each, between a run of the static nat chains (first) and one of the shared
    /// chains (last).
    ChainsPerRun(usize),
}

/// Everything, from scratch, as the inputs of consecutive iptables-restore runs: shared
/// chains are flushed and refilled, every Service chain rewritten, and `stale_chains`
/// (Service chains in the kernel but no longer wanted) flushed and deleted. Batched,
/// each Service port's chains stay in one run (so each is self-contained), the nat
/// static chains they jump to come first, and the shared chains that jump to them come
/// last, after which the stale chains are unreferenced and deleted.
pub fn full<'a>(
    all: impl Iterator<Item = &'a ServiceRules> + Clone,
    statics: &StaticRules,
    stale_chains: &[String],
    batching: Batching,
) -> Vec<String> {
    let Batching::ChainsPerRun(limit) = batching else {
        return vec![full_input(all, statics, stale_chains, true)];
    };
    // KUBE-MARK-MASQ and KUBE-POSTROUTING: refilled with the same rules, atomically.
    let mut run = String::new();
    section(
        &mut run,
        Table::Nat,
        &["KUBE-POSTROUTING".into(), "KUBE-MARK-MASQ".into()],
        &statics.rules(Table::Nat),
        &[],
    );
    let mut runs = vec![run];
    let mut batch = |declare: &mut Vec<String>, body: &mut Vec<String>| {
        let mut run = String::new();
        section(&mut run, Table::Nat, declare, body, &[]);
        runs.push(run);
        declare.clear();
        body.clear();
    };
    let (mut declare, mut body) = (Vec::new(), Vec::new());
    for s in all.clone() {
        for (chain, rules) in &s.chains {
            declare.push(chain.clone());
            body.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
        }
        if declare.len() >= limit {
            batch(&mut declare, &mut body);
        }
    }
    if !declare.is_empty() {
        batch(&mut declare, &mut body);
    }
    runs.push(full_input(all, statics, stale_chains, false));
    runs
}

/// The full input, with or without the Service chains.
fn full_input<'a>(
    all: impl Iterator<Item = &'a ServiceRules> + Clone,
    statics: &StaticRules,
    stale_chains: &[String],
    with_service_chains: bool,
) -> String {
    let mut out = String::new();
    for table in [Table::Filter, Table::Nat] {
        let mut declare = statics.chains(table);
        let mut body = statics.rules(table);
        let shared = |r: &&SharedRule| r.table == table;
        body.extend(
            all.clone()
                .flat_map(|s| s.shared.iter())
                .filter(shared)
                .map(|r| format!("-A {} {}", r.chain, r.rule)),
        );
        let mut deleted = Vec::new();
        if table == Table::Nat {
            body.extend(statics.node_port_jumps());
            for s in all.clone().filter(|_| with_service_chains) {
                for (chain, rules) in &s.chains {
                    declare.push(chain.clone());
                    body.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
                }
            }
            declare.extend(stale_chains.iter().cloned());
            deleted.extend(stale_chains.iter().cloned());
        }
        section(&mut out, table, &declare, &body, &deleted);
    }
    out
}

/// Only the differences between `old` and `new` rules of the changed Service ports.
/// Returns None when nothing differs.
pub fn partial<'a>(
    changes: impl Iterator<Item = (Option<&'a ServiceRules>, Option<&'a ServiceRules>)>,
) -> Option<String> {
    let empty = ServiceRules::default();
    let mut filter_body = Vec::new();
    let mut nat_declare = Vec::new();
    let mut nat_deletes = Vec::new();
    let mut nat_inserts = Vec::new();
    let mut nat_chain_rules = Vec::new();
    let mut nat_removed = Vec::new();
    for (old, new) in changes {
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let old_shared: BTreeSet<&SharedRule> = old.shared.iter().collect();
        let new_shared: BTreeSet<&SharedRule> = new.shared.iter().collect();
        for r in old_shared.difference(&new_shared) {
            let line = format!("-D {} {}", r.chain, r.rule);
            match r.table {
                Table::Filter => filter_body.push(line),
                Table::Nat => nat_deletes.push(line),
            }
        }
        for r in new_shared.difference(&old_shared) {
            let line = format!("-I {} 1 {}", r.chain, r.rule);
            match r.table {
                Table::Filter => filter_body.push(line),
                Table::Nat => nat_inserts.push(line),
            }
        }
        for (chain, rules) in &new.chains {
            if old.chains.get(chain) != Some(rules) {
                nat_declare.push(chain.clone());
                nat_chain_rules.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
            }
        }
        for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
            nat_declare.push(chain.clone());
            nat_removed.push(chain.clone());
        }
    }
    if filter_body.is_empty()
        && nat_declare.is_empty()
        && nat_deletes.is_empty()
        && nat_inserts.is_empty()
    {
        return None;
    }
    let mut out = String::new();
    if !filter_body.is_empty() {
        // Deletions first, so a rule that changes is removed before its new form is added.
        filter_body.sort_by_key(|l| !l.starts_with("-D"));
        section(&mut out, Table::Filter, &[], &filter_body, &[]);
    }
    let mut nat_body = nat_deletes;
    nat_body.extend(nat_chain_rules);
    nat_body.extend(nat_inserts);
    if !nat_body.is_empty() || !nat_declare.is_empty() {
        section(&mut out, Table::Nat, &nat_declare, &nat_body, &nat_removed);
    }
    Some(out)
}
