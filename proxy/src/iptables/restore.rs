//! iptables-restore input: a full rewrite of everything the proxy owns, or a partial
//! update that touches only the chains and shared rules of changed Service ports.
//! Both are meant for `iptables-restore --noflush`, so chains we do not own are kept.
//! Both take the Service ports' rules one at a time, as they are generated, and keep
//! only the text still to be sent: at most one run of a batched rewrite.

use super::programmed::{ChainName, ProgrammedRules, name_of};
use super::rules::{ServiceRules, SharedRule, Table};
use std::collections::BTreeSet;
use std::fmt::{Display, Write};

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

/// One table's part of an iptables-restore input: chain declarations (which create or
/// flush), rules, and chain deletions, written in that order.
#[derive(Default)]
struct Section {
    declare: String,
    body: String,
    delete: String,
}

impl Section {
    fn declare(&mut self, chain: impl Display) {
        let _ = writeln!(self.declare, ":{chain} - [0:0]");
    }

    fn rule(&mut self, line: impl Display) {
        let _ = writeln!(self.body, "{line}");
    }

    fn delete(&mut self, chain: impl Display) {
        let _ = writeln!(self.delete, "-X {chain}");
    }

    /// The rules of one of our own chains.
    fn chain(&mut self, chain: &str, rules: &[String]) {
        self.declare(chain);
        for r in rules {
            self.rule(format_args!("-A {chain} {r}"));
        }
    }

    fn is_empty(&self) -> bool {
        self.declare.is_empty() && self.body.is_empty() && self.delete.is_empty()
    }

    fn write(&self, out: &mut String, table: Table) {
        let _ = writeln!(out, "*{}", table.name());
        out.push_str(&self.declare);
        out.push_str(&self.body);
        out.push_str(&self.delete);
        out.push_str("COMMIT\n");
    }
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
/// chains are flushed and refilled, every Service chain rewritten, and stale chains
/// (Service chains in the kernel but no longer wanted) flushed and deleted. Batched,
/// each Service port's chains stay in one run (so each is self-contained), the nat
/// static chains they jump to come first, and the shared chains that jump to them come
/// last, after which the stale chains are unreferenced and deleted.
pub struct FullRewrite<'a> {
    statics: &'a StaticRules,
    batching: Batching,
    /// Service chains not handed out in a run yet.
    chains: Section,
    chain_count: usize,
}

impl<'a> FullRewrite<'a> {
    /// A rewrite, and the run to apply before any other (batched only).
    pub fn new(statics: &'a StaticRules, batching: Batching) -> (Self, Option<String>) {
        let first = (batching != Batching::Single).then(|| {
            // KUBE-MARK-MASQ and KUBE-POSTROUTING: refilled with the same rules, atomically.
            let mut nat = Section::default();
            nat.declare("KUBE-POSTROUTING");
            nat.declare("KUBE-MARK-MASQ");
            statics.rules(Table::Nat).iter().for_each(|r| nat.rule(r));
            let mut run = String::new();
            nat.write(&mut run, Table::Nat);
            run
        });
        let rewrite = FullRewrite {
            statics,
            batching,
            chains: Section::default(),
            chain_count: 0,
        };
        (rewrite, first)
    }

    /// Adds the chains of one Service port; returns a run to apply when a batch is full.
    pub fn add(&mut self, rules: &ServiceRules) -> Option<String> {
        for (chain, body) in &rules.chains {
            self.chains.chain(chain, body);
        }
        self.chain_count += rules.chains.len();
        match self.batching {
            Batching::ChainsPerRun(limit) if self.chain_count >= limit => Some(self.take_batch()),
            _ => None,
        }
    }

    fn take_batch(&mut self) -> String {
        let mut run = String::new();
        std::mem::take(&mut self.chains).write(&mut run, Table::Nat);
        self.chain_count = 0;
        run
    }

    /// The runs left: the last batch of Service chains, if any, and the shared chains
    /// refilled with `shared` (every Service port's rules there), which also deletes
    /// `stale`. Single, one run with everything.
    pub fn finish<'r>(
        mut self,
        shared: impl Iterator<Item = &'r SharedRule> + Clone,
        stale: &[ChainName],
    ) -> Vec<String> {
        let mut runs = Vec::new();
        if self.batching != Batching::Single && self.chain_count > 0 {
            runs.push(self.take_batch());
        }
        let mut out = String::new();
        for table in [Table::Filter, Table::Nat] {
            let mut section = Section::default();
            self.statics
                .chains(table)
                .iter()
                .for_each(|c| section.declare(c));
            self.statics
                .rules(table)
                .iter()
                .for_each(|r| section.rule(r));
            shared
                .clone()
                .filter(|r| r.table == table)
                .for_each(|r| section.rule(format_args!("-A {} {}", r.chain, r.rule)));
            if table == Table::Nat {
                self.statics
                    .node_port_jumps()
                    .iter()
                    .for_each(|r| section.rule(r));
                // Single: the Service chains go here (empty when batched).
                let chains = std::mem::take(&mut self.chains);
                section.declare.push_str(&chains.declare);
                section.body.push_str(&chains.body);
                for c in stale {
                    section.declare(c);
                    section.delete(c);
                }
            }
            section.write(&mut out, table);
        }
        runs.push(out);
        runs
    }
}

/// Only the differences between the applied and the new rules of changed Service ports.
#[derive(Default)]
pub struct PartialUpdate {
    filter_deletes: Section,
    filter_inserts: Section,
    nat_deletes: Section,
    /// Changed and removed Service chains.
    nat_chains: Section,
    nat_inserts: Section,
}

impl PartialUpdate {
    /// Adds the differences of one Service port: `old` as applied (None: it had no
    /// rules), `new` as now generated, with its compact form (None: it has no rules).
    pub fn add(
        &mut self,
        old: Option<&ProgrammedRules>,
        new: Option<(&ServiceRules, &ProgrammedRules)>,
    ) {
        let old_shared: BTreeSet<&SharedRule> = old.iter().flat_map(|o| o.shared.iter()).collect();
        let new_shared: BTreeSet<&SharedRule> =
            new.iter().flat_map(|(n, _)| n.shared.iter()).collect();
        for r in old_shared.difference(&new_shared) {
            let line = format_args!("-D {} {}", r.chain, r.rule);
            match r.table {
                Table::Filter => self.filter_deletes.rule(line),
                Table::Nat => self.nat_deletes.rule(line),
            }
        }
        for r in new_shared.difference(&old_shared) {
            let line = format_args!("-I {} 1 {}", r.chain, r.rule);
            match r.table {
                Table::Filter => self.filter_inserts.rule(line),
                Table::Nat => self.nat_inserts.rule(line),
            }
        }
        if let Some((text, compact)) = new {
            for (chain, rules) in &text.chains {
                let name = name_of(chain);
                if old.and_then(|o| o.chain(&name)) != compact.chain(&name) {
                    self.nat_chains.chain(chain, rules);
                }
            }
        }
        let kept = |c: &ChainName| new.is_some_and(|(_, n)| n.chain(c).is_some());
        for chain in old
            .iter()
            .flat_map(|o| o.chain_names())
            .filter(|c| !kept(c))
        {
            self.nat_chains.declare(chain);
            self.nat_chains.delete(chain);
        }
    }

    /// The iptables-restore input; None when nothing differs.
    pub fn finish(self) -> Option<String> {
        let mut out = String::new();
        // Deletions first, so a rule that changes is removed before its new form is added.
        let mut filter = self.filter_deletes;
        filter.body.push_str(&self.filter_inserts.body);
        if !filter.is_empty() {
            filter.write(&mut out, Table::Filter);
        }
        // References go before the chains they point to are deleted.
        let mut nat = self.nat_deletes;
        nat.declare = self.nat_chains.declare;
        nat.body.push_str(&self.nat_chains.body);
        nat.body.push_str(&self.nat_inserts.body);
        nat.delete = self.nat_chains.delete;
        if !nat.is_empty() {
            nat.write(&mut out, Table::Nat);
        }
        (!out.is_empty()).then_some(out)
    }
}
