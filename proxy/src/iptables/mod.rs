//! iptables mode: the upstream chain structure applied with `iptables-restore --noflush`.
//!
//! The proxier keeps the rules it last applied per Service port, in compact form (a hash
//! per chain, see `programmed`). A partial sync generates the changed ports' rules and
//! sends only the chains and shared-chain rules that differ, so its cost follows the
//! change, not the cluster size. A full sync rewrites every owned chain and
//! deletes stale Service chains left by an earlier run; it runs at start, on the sync
//! timer, after a failed partial sync, and when the canary chain shows tampering.
//!
//! On the nf_tables backend a full sync whose kernel state is proven untouched sends
//! only the differences too: the kernel bumps the ruleset generation on every commit,
//! so when it still reads what our own last change left, nothing (ours or anyone
//! else's) changed since, and rewriting every chain would reproduce what is there.
//! Any foreign commit in between makes the next full sync a complete rewrite, which
//! repairs tampering as upstream's periodic full sync does.

mod exec;
mod generation;
pub(crate) mod names;
mod programmed;
mod restore;
mod rules;

pub use exec::{ExecError, IptablesVariant, Netfilter, SystemNetfilter};
pub use names::{endpoint_chain, external_chain, firewall_chain, local_chain, service_chain};
pub use rules::{RuleContext, ServiceRules, SharedRule, Table, service_rules};

use crate::backend::{Backend, SyncError, SyncReport};
use crate::config::{LocalDetector, NodePortAddresses};
use crate::model::{ServicePortName, Snapshot, entries, port_names, ports_of_service};
use programmed::{ChainName, ProgrammedRules};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Chains per iptables-restore run in a full rewrite on the nf_tables backend.
/// iptables-nft-restore 1.8.9 spends time superlinear in the chains one run declares
/// (its chain cache is a sorted list that lives as long as the process, over all of
/// its transactions), so a rewrite is cut into runs of one transaction each. Every
/// transaction costs the kernel a walk over all chains of the table and, once our
/// chains are reachable from the built-in ones (a restart or repair over rules in
/// place), a validation of every reachable rule (~0.3 s of CPU at 10,000 Services):
/// then fewer, larger transactions win. Measured at 10,000 Services x 10 endpoints:
/// into an empty table 500 per run cost 10.9 s of CPU, 2,000 per run 11.6 s; over
/// the rules in place 500 per run cost 74 s, 2,000 per run 27 s.
const NFT_CHAINS_PER_RUN: usize = 500;
const NFT_CHAINS_PER_RUN_IN_PLACE: usize = 2000;

/// A jump from a built-in chain into ours: (table, chain, rule).
type Jump = (&'static str, &'static str, &'static [&'static str]);

/// With localhost NodePorts, KUBE-FIREWALL guards route_localnet (as upstream and kubelet).
const LOCALNET_JUMPS: &[Jump] = &[
    ("filter", "INPUT", &["-j", restore::LOCALNET_FIREWALL]),
    ("filter", "OUTPUT", &["-j", restore::LOCALNET_FIREWALL]),
];

/// Jumps from the built-in chains into ours.
const JUMPS: &[Jump] = &[
    (
        "filter",
        "INPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes load balancer firewall",
            "-j",
            "KUBE-PROXY-FIREWALL",
        ],
    ),
    (
        "filter",
        "INPUT",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes health check service ports",
            "-j",
            "KUBE-NODEPORTS",
        ],
    ),
    (
        "filter",
        "INPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
            "-j",
            "KUBE-EXTERNAL-SERVICES",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes load balancer firewall",
            "-j",
            "KUBE-PROXY-FIREWALL",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes forwarding rules",
            "-j",
            "KUBE-FORWARD",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
            "-j",
            "KUBE-EXTERNAL-SERVICES",
        ],
    ),
    (
        "filter",
        "OUTPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes load balancer firewall",
            "-j",
            "KUBE-PROXY-FIREWALL",
        ],
    ),
    (
        "filter",
        "OUTPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "nat",
        "PREROUTING",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "nat",
        "OUTPUT",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "nat",
        "POSTROUTING",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes postrouting rules",
            "-j",
            "KUBE-POSTROUTING",
        ],
    ),
];

/// Chains whose disappearance from these tables means someone flushed our rules.
const CANARY: &str = "KUBE-PROXY-CANARY";
const CANARY_TABLES: &[&str] = &["mangle", "nat", "filter"];

/// Settings of the iptables proxier.
#[derive(Debug, Clone)]
pub struct IptablesOptions {
    pub families: Vec<bool>,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    pub local: LocalDetector,
    pub node_port_addresses: NodePortAddresses,
    /// NodePorts also answer on 127.0.0.1 (IPv4; upstream's default true). Sets
    /// route_localnet in the proxy's network namespace.
    pub localhost_node_ports: bool,
}

struct Family {
    ctx: RuleContext,
    /// What each Service port has in the kernel, in compact form.
    programmed: BTreeMap<ServicePortName, ProgrammedRules>,
    /// Set until a full sync has succeeded (start, errors, tampering).
    needs_full: bool,
    /// Service chains that may be in the kernel though no port in `programmed` owns
    /// them: leftovers a read of the kernel found, and the chains of an unfinished full
    /// sync. The next full sync deletes them without listing the (big) nat table again.
    unowned_chains: BTreeSet<ChainName>,
    /// Whether `unowned_chains`, the jumps from the built-in chains and the canary are
    /// known to be in place; cleared at start, on tampering and on failures.
    verified: bool,
}

pub struct IptablesProxier<N: Netfilter> {
    nf: N,
    options: IptablesOptions,
    node_ips: Vec<IpAddr>,
    families: Vec<Family>,
    /// The nf_tables generation our last change left, while nobody else is known to
    /// have committed since the kernel last held exactly what `families` record.
    generation: Option<u32>,
}

fn sync_error(e: impl std::fmt::Display) -> SyncError {
    SyncError {
        mode: "iptables",
        message: e.to_string(),
    }
}

impl<N: Netfilter> IptablesProxier<N> {
    pub fn new(nf: N, options: IptablesOptions) -> Self {
        let families = options
            .families
            .iter()
            .map(|&v6| Family {
                ctx: RuleContext {
                    v6,
                    masquerade_all: options.masquerade_all,
                    local: options.local.clone(),
                    endpoint_comments: true,
                },
                programmed: BTreeMap::new(),
                needs_full: true,
                unowned_chains: BTreeSet::new(),
                verified: false,
            })
            .collect();
        IptablesProxier {
            nf,
            options,
            node_ips: Vec::new(),
            families,
            generation: None,
        }
    }

    /// The current nf_tables generation; None when unknown (legacy backend, errors).
    fn current_generation(&mut self) -> Option<u32> {
        self.nf
            .generation()
            .inspect_err(|e| tracing::debug!(error = %e, "nf_tables generation unknown"))
            .ok()
            .flatten()
    }

    /// Runs `input` through iptables-restore and keeps track of whether the kernel
    /// still holds only what we wrote: it does when the generation advanced by exactly
    /// our transactions and either it did before or `rewrites_all` repaired it.
    fn restore(&mut self, v6: bool, input: &str, rewrites_all: bool) -> Result<(), ExecError> {
        let before = self.current_generation();
        let result = self.nf.restore(v6, input);
        let after = self.current_generation();
        let commits = input.lines().filter(|l| *l == "COMMIT").count() as u32;
        let clean_before = rewrites_all || (before.is_some() && before == self.generation);
        self.generation = match (before, after) {
            (Some(b), Some(a))
                if result.is_ok() && clean_before && a == b.wrapping_add(commits) =>
            {
                Some(a)
            }
            _ => None,
        };
        result
    }

    pub fn netfilter(&mut self) -> &mut N {
        &mut self.nf
    }

    /// Whether NodePorts answer on 127.0.0.1 in family `v6`: never for IPv6 (the kernel
    /// cannot route ::1 elsewhere), for IPv4 when enabled and the NodePort addresses
    /// include loopback.
    fn localhost_node_ports(&self, v6: bool) -> bool {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        !v6 && self.options.localhost_node_ports
            && match &self.options.node_port_addresses {
                NodePortAddresses::All => true,
                NodePortAddresses::Primary => self.node_ips.contains(&loopback),
                NodePortAddresses::Cidrs(c) => c.iter().any(|c| c.contains(loopback)),
            }
    }

    fn jumps(&self, v6: bool) -> Vec<Jump> {
        let localnet = if self.localhost_node_ports(v6) {
            LOCALNET_JUMPS
        } else {
            &[]
        };
        JUMPS.iter().chain(localnet).copied().collect()
    }

    fn statics(&self, v6: bool) -> restore::StaticRules {
        let localhost = self.localhost_node_ports(v6);
        let node_port_matches = match &self.options.node_port_addresses {
            // Loopback NodePorts are refused unless route_localnet makes them work.
            NodePortAddresses::All if v6 => {
                vec!["-m addrtype --dst-type LOCAL ! -d ::1/128".to_string()]
            }
            NodePortAddresses::All if !localhost => {
                vec!["-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8".to_string()]
            }
            NodePortAddresses::All => vec!["-m addrtype --dst-type LOCAL".to_string()],
            NodePortAddresses::Primary => {
                let len = if v6 { 128 } else { 32 };
                self.node_ips
                    .iter()
                    .filter(|ip| ip.is_ipv6() == v6)
                    .map(|ip| format!("-d {ip}/{len}"))
                    .collect()
            }
            NodePortAddresses::Cidrs(c) => c
                .iter()
                .filter(|c| c.is_ipv6() == v6)
                .filter(|c| localhost || !c.addr.is_loopback())
                .map(|c| format!("-d {c}"))
                .collect(),
        };
        restore::StaticRules {
            masq_mark: format!("{:#x}", 1u32 << self.options.masquerade_bit),
            node_port_matches,
            localhost_node_ports: localhost,
        }
    }

    fn sync_family(
        &mut self,
        index: usize,
        snapshot: &Snapshot,
        full: bool,
    ) -> Result<SyncReport, SyncError> {
        let v6 = self.families[index].ctx.v6;
        let fam = &mut self.families[index];
        // Like upstream, decided on every sync; Service ports not rewritten now keep
        // their comments (or lack of them) until they change or the next full sync.
        let endpoints = entries(&snapshot.state)
            .flat_map(|e| &e.endpoints)
            .filter(|ep| ep.addr.is_ipv6() == v6)
            .count();
        fam.ctx.endpoint_comments = endpoints <= rules::LARGE_CLUSTER_ENDPOINTS;
        if !(full || fam.needs_full) {
            match self.partial_sync(index, snapshot) {
                Ok(()) => return Ok(self.report(index, false)),
                Err(e) => {
                    // The kernel is not what we think it is: rewrite everything.
                    tracing::warn!(error = %e, ipv6 = v6, "partial iptables sync failed; doing a full sync");
                    self.families[index].verified = false;
                }
            }
        }
        // On a full sync, rebuild every port: node-wide settings may have changed.
        let fam = &mut self.families[index];
        fam.needs_full = true;
        let verified = std::mem::take(&mut fam.verified);
        let current = self.current_generation();
        let untouched = self.generation.is_some() && current == self.generation;
        if verified && untouched {
            // Nothing committed since our last change: the kernel holds `programmed`
            // exactly, so only the differences need sending.
            self.send_differences(index, snapshot)?;
        } else {
            // A foreign commit may have touched anything (a jump, a chain): re-check it all.
            let verified = verified && current.is_none();
            self.rewrite_family(index, snapshot, verified)?;
        }
        let fam = &mut self.families[index];
        fam.unowned_chains.clear();
        fam.needs_full = false;
        fam.verified = true;
        Ok(self.report(index, true))
    }

    fn report(&self, index: usize, full: bool) -> SyncReport {
        let programmed = &self.families[index].programmed;
        let rules = programmed.values().map(ProgrammedRules::rule_count).sum();
        SyncReport { full, rules }
    }

    fn apply(&mut self, v6: bool, input: &str, rewrites_all: bool) -> Result<(), SyncError> {
        self.restore(v6, input, rewrites_all).map_err(sync_error)
    }

    /// Sends the new rules of the Service ports changed since the last sync, and the
    /// removal of the ports that went away; `programmed` follows only once applied.
    fn partial_sync(&mut self, index: usize, snapshot: &Snapshot) -> Result<(), ExecError> {
        let fam = &self.families[index];
        let mut update = restore::PartialUpdate::default();
        let mut updates: Vec<(ServicePortName, Option<ProgrammedRules>)> = Vec::new();
        for svc in &snapshot.changed {
            let wanted = port_names(&snapshot.state, svc);
            for (k, old) in
                ports_of_service(&fam.programmed, svc).filter(|(k, _)| !wanted.contains(k))
            {
                update.add(Some(old), None);
                updates.push((k.clone(), None));
            }
            for entry in snapshot.state.get(svc).into_iter().flat_map(|v| v.iter()) {
                let rules = service_rules(entry, &fam.ctx);
                let new = (rules.rule_count() > 0).then(|| ProgrammedRules::from(&rules));
                let old = fam.programmed.get(&entry.port.name);
                update.add(old, new.as_ref().map(|n| (&rules, n)));
                updates.push((entry.port.name.clone(), new));
            }
        }
        if let Some(text) = update.finish() {
            self.restore(self.families[index].ctx.v6, &text, false)?;
        }
        let fam = &mut self.families[index];
        for (k, new) in updates {
            match new {
                Some(r) => {
                    for c in r.chain_names() {
                        fam.unowned_chains.remove(c);
                    }
                    fam.programmed.insert(k, r)
                }
                None => fam.programmed.remove(&k),
            };
        }
        Ok(())
    }

    /// A full sync over a ruleset known to be exactly `programmed`: every port's rules
    /// are generated again and only those that differ are sent.
    fn send_differences(&mut self, index: usize, snapshot: &Snapshot) -> Result<(), SyncError> {
        let fam = &mut self.families[index];
        let v6 = fam.ctx.v6;
        let mut old = std::mem::take(&mut fam.programmed);
        let mut update = restore::PartialUpdate::default();
        for entry in entries(&snapshot.state) {
            let rules = service_rules(entry, &fam.ctx);
            let previous = old.remove(&entry.port.name);
            let new = (rules.rule_count() > 0).then(|| ProgrammedRules::from(&rules));
            if previous != new {
                update.add(previous.as_ref(), new.as_ref().map(|n| (&rules, n)));
            }
            // Until the restore succeeds, the kernel may still hold the chains dropped.
            let kept = |c: &&ChainName| new.as_ref().is_some_and(|n| n.chain(c).is_some());
            let dropped = previous.iter().flat_map(|p| p.chain_names());
            fam.unowned_chains
                .extend(dropped.filter(|c| !kept(c)).copied());
            if let Some(new) = new {
                fam.programmed.insert(entry.port.name.clone(), new);
            }
        }
        for gone in old.values() {
            update.add(Some(gone), None);
            fam.unowned_chains.extend(gone.chain_names().copied());
        }
        match update.finish() {
            Some(text) => self.apply(v6, &text, false),
            None => Ok(()),
        }
    }

    /// Rewrites everything family `index` owns from the snapshot, deleting stale Service
    /// chains. Without `verified`, first learns the kernel's Service chains and ensures
    /// the jumps from the built-in chains (into chains created empty if missing, as
    /// upstream does) and the canary, so that the restore is our last change.
    fn rewrite_family(
        &mut self,
        index: usize,
        snapshot: &Snapshot,
        verified: bool,
    ) -> Result<(), SyncError> {
        let v6 = self.families[index].ctx.v6;
        // Every chain applied so far may be stale now; those still wanted are taken
        // out again as the ports are generated.
        let fam = &mut self.families[index];
        let old = std::mem::take(&mut fam.programmed);
        fam.unowned_chains
            .extend(old.values().flat_map(|p| p.chain_names()).copied());
        drop(old);
        if !verified {
            // Leftovers of an earlier run, or chains someone else changed.
            let found = self.nf.chains(v6, "nat").map_err(sync_error)?;
            self.families[index].unowned_chains.extend(
                found
                    .iter()
                    .filter(|c| names::is_service_chain(c))
                    .filter_map(|c| ChainName::new(c)),
            );
            if self.localhost_node_ports(v6) {
                self.nf.enable_route_localnet().map_err(sync_error)?;
            }
            let jumps = self.jumps(v6);
            let targets: BTreeSet<(&str, &str)> = jumps
                .iter()
                .filter_map(|(table, _, rule)| rule.last().map(|target| (*table, *target)))
                .collect();
            for (table, chain) in targets {
                self.nf.create_chain(v6, table, chain).map_err(sync_error)?;
            }
            for (table, chain, rule) in jumps {
                self.nf
                    .ensure_rule(v6, table, chain, rule)
                    .map_err(sync_error)?;
            }
            for table in CANARY_TABLES {
                self.nf
                    .create_chain(v6, table, CANARY)
                    .map_err(sync_error)?;
            }
        }
        let statics = self.statics(v6);
        let nft = self.nf.is_nf_tables_backend(v6);
        // The legacy backend reads and replaces the whole table per transaction: one it is.
        let batching = match (nft, self.families[index].unowned_chains.is_empty()) {
            (false, _) => restore::Batching::Single,
            (true, true) => restore::Batching::ChainsPerRun(NFT_CHAINS_PER_RUN),
            (true, false) => restore::Batching::ChainsPerRun(NFT_CHAINS_PER_RUN_IN_PLACE),
        };
        let (mut rewrite, first) = restore::FullRewrite::new(&statics, batching);
        // The first run starts the rewrite; a foreign commit between two runs is
        // noticed by the generation check of the next.
        let mut rewrites_all = true;
        if let Some(run) = first {
            self.apply(v6, &run, std::mem::take(&mut rewrites_all))?;
        }
        for entry in entries(&snapshot.state) {
            let fam = &mut self.families[index];
            let rules = service_rules(entry, &fam.ctx);
            if rules.rule_count() == 0 {
                continue;
            }
            // Recorded before it is applied: a failed run may have left it in place.
            let new = ProgrammedRules::from(&rules);
            for c in new.chain_names() {
                fam.unowned_chains.remove(c);
            }
            fam.programmed.insert(entry.port.name.clone(), new);
            if let Some(run) = rewrite.add(&rules) {
                self.apply(v6, &run, std::mem::take(&mut rewrites_all))?;
            }
        }
        let fam = &self.families[index];
        let stale: Vec<ChainName> = fam.unowned_chains.iter().copied().collect();
        let shared = fam.programmed.values().flat_map(|p| p.shared.iter());
        for run in rewrite.finish(shared, &stale) {
            self.apply(v6, &run, std::mem::take(&mut rewrites_all))?;
        }
        Ok(())
    }
}

impl<N: Netfilter> Backend for IptablesProxier<N> {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        for i in 0..self.families.len() {
            report += self.sync_family(i, snapshot, full)?;
        }
        Ok(report)
    }

    fn tampered(&mut self) -> bool {
        let v6s: Vec<bool> = self.families.iter().map(|f| f.ctx.v6).collect();
        let mut tampered = false;
        for (i, v6) in v6s.into_iter().enumerate() {
            if !self.nf.chain_exists(v6, "mangle", CANARY).unwrap_or(false) {
                self.families[i].needs_full = true;
                self.families[i].verified = false;
                tampered = true;
            }
        }
        tampered
    }

    fn set_node_ips(&mut self, ips: Vec<IpAddr>) {
        if self.node_ips != ips {
            self.node_ips = ips;
            for f in &mut self.families {
                f.needs_full = true;
                // NodePort addresses may now include loopback: re-check jumps and sysctl.
                f.verified = false;
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), SyncError> {
        let v6s: Vec<bool> = self.families.iter().map(|f| f.ctx.v6).collect();
        for v6 in v6s {
            for (table, chain, rule) in JUMPS.iter().chain(LOCALNET_JUMPS) {
                self.nf
                    .delete_rule(v6, table, chain, rule)
                    .map_err(sync_error)?;
            }
            let mut input = String::new();
            for table in ["filter", "nat", "mangle"] {
                let ours: Vec<String> = self
                    .nf
                    .chains(v6, table)
                    .map_err(sync_error)?
                    .into_iter()
                    .filter(|c| c.starts_with("KUBE-"))
                    .collect();
                input.push_str(&format!("*{table}\n"));
                for c in &ours {
                    input.push_str(&format!(":{c} - [0:0]\n"));
                }
                for c in &ours {
                    input.push_str(&format!("-X {c}\n"));
                }
                input.push_str("COMMIT\n");
            }
            self.nf.restore(v6, &input).map_err(sync_error)?;
        }
        for f in &mut self.families {
            f.programmed.clear();
            f.unowned_chains.clear();
            f.needs_full = true;
            f.verified = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
