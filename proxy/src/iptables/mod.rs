//! iptables mode: the upstream chain structure applied with `iptables-restore --noflush`.
//!
//! The proxier keeps the rules it last applied per Service port. A partial sync sends
//! only the changed ports' chains and the shared-chain rules that differ, so its cost
//! follows the change, not the cluster size. A full sync rewrites every owned chain and
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
mod restore;
mod rules;

pub use exec::{ExecError, IptablesVariant, Netfilter, SystemNetfilter};
pub use names::{endpoint_chain, external_chain, firewall_chain, local_chain, service_chain};
pub use rules::{RuleContext, ServiceRules, SharedRule, Table, service_rules};

use crate::backend::{Backend, SyncError, SyncReport};
use crate::config::{LocalDetector, NodePortAddresses};
use crate::model::{ServicePortName, Snapshot, entries, port_names};
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
    programmed: BTreeMap<ServicePortName, ServiceRules>,
    /// Set until a full sync has succeeded (start, errors, tampering).
    needs_full: bool,
    /// Service chains believed to be in the kernel: what we programmed, plus what a
    /// read of the kernel found. Full syncs delete those no longer wanted without
    /// listing the (big) nat table each time.
    kernel_chains: BTreeSet<String>,
    /// Whether `kernel_chains`, the jumps from the built-in chains and the canary are
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
                kernel_chains: BTreeSet::new(),
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
        let statics = self.statics(v6);
        let fam = &mut self.families[index];
        // Like upstream, decided on every sync; Service ports not rewritten now keep
        // their comments (or lack of them) until they change or the next full sync.
        let endpoints = entries(&snapshot.state)
            .flat_map(|e| &e.endpoints)
            .filter(|ep| ep.addr.is_ipv6() == v6)
            .count();
        fam.ctx.endpoint_comments = endpoints <= rules::LARGE_CLUSTER_ENDPOINTS;
        // New rules of every changed Service port, and the ports that went away.
        let mut updates: Vec<(ServicePortName, Option<ServiceRules>)> = Vec::new();
        for svc in &snapshot.changed {
            let wanted = port_names(&snapshot.state, svc);
            let stale: Vec<ServicePortName> = fam
                .programmed
                .keys()
                .filter(|k| {
                    k.namespace == svc.namespace && k.name == svc.name && !wanted.contains(k)
                })
                .cloned()
                .collect();
            updates.extend(stale.into_iter().map(|k| (k, None)));
            for entry in snapshot.state.get(svc).into_iter().flat_map(|v| v.iter()) {
                let rules = service_rules(entry, &fam.ctx);
                updates.push((
                    entry.port.name.clone(),
                    (rules.rule_count() > 0).then_some(rules),
                ));
            }
        }
        let full = full || fam.needs_full;
        if !full {
            let input = restore::partial(
                updates
                    .iter()
                    .map(|(k, new)| (fam.programmed.get(k), new.as_ref())),
            );
            let applied = match input {
                None => Ok(()),
                Some(text) => self.restore(v6, &text, false),
            };
            let fam = &mut self.families[index];
            match applied {
                Ok(()) => {
                    for (k, new) in &updates {
                        if let Some(old) = fam.programmed.get(k) {
                            for chain in old.chains.keys() {
                                fam.kernel_chains.remove(chain);
                            }
                        }
                        if let Some(new) = new {
                            fam.kernel_chains.extend(new.chains.keys().cloned());
                        }
                    }
                    for (k, new) in updates {
                        match new {
                            Some(r) => fam.programmed.insert(k, r),
                            None => fam.programmed.remove(&k),
                        };
                    }
                    let rules = fam.programmed.values().map(ServiceRules::rule_count).sum();
                    return Ok(SyncReport { full: false, rules });
                }
                Err(e) => {
                    // The kernel is not what we think it is: rewrite everything.
                    tracing::warn!(error = %e, ipv6 = v6, "partial iptables sync failed; doing a full sync");
                    fam.verified = false;
                }
            }
        }
        // On a full sync, rebuild every port: node-wide settings may have changed.
        let fam = &mut self.families[index];
        let programmed: BTreeMap<ServicePortName, ServiceRules> = entries(&snapshot.state)
            .filter_map(|e| {
                let r = service_rules(e, &fam.ctx);
                (r.rule_count() > 0).then(|| (e.port.name.clone(), r))
            })
            .collect();
        let old = std::mem::replace(&mut fam.programmed, programmed);
        fam.needs_full = true;
        let verified = std::mem::take(&mut fam.verified);
        let current = self.current_generation();
        let untouched = self.generation.is_some() && current == self.generation;
        if verified && untouched {
            // Nothing committed since our last change: the kernel holds `old` exactly.
            let fam = &self.families[index];
            let keys: BTreeSet<&ServicePortName> =
                old.keys().chain(fam.programmed.keys()).collect();
            let input = restore::partial(
                keys.into_iter()
                    .map(|k| (old.get(k), fam.programmed.get(k)))
                    .filter(|(old, new)| old != new),
            );
            if let Some(text) = input {
                self.restore(v6, &text, false).map_err(sync_error)?;
            }
        } else {
            // A foreign commit may have touched anything (a jump, a chain): re-check it all.
            let verified = verified && current.is_none();
            self.rewrite_family(index, &statics, verified)?;
        }
        let fam = &mut self.families[index];
        fam.kernel_chains = fam
            .programmed
            .values()
            .flat_map(|r| r.chains.keys().cloned())
            .collect();
        fam.needs_full = false;
        fam.verified = true;
        let rules = fam.programmed.values().map(ServiceRules::rule_count).sum();
        Ok(SyncReport { full: true, rules })
    }

    /// Rewrites everything family `index` owns from `programmed`, deleting stale Service
    /// chains. Without `verified`, first learns the kernel's Service chains and ensures
    /// the jumps from the built-in chains (into chains created empty if missing, as
    /// upstream does) and the canary, so that the restore is our last change.
    fn rewrite_family(
        &mut self,
        index: usize,
        statics: &restore::StaticRules,
        verified: bool,
    ) -> Result<(), SyncError> {
        let v6 = self.families[index].ctx.v6;
        if !verified {
            // Leftovers of an earlier run, or chains someone else changed.
            let found = self.nf.chains(v6, "nat").map_err(sync_error)?;
            self.families[index]
                .kernel_chains
                .extend(found.into_iter().filter(|c| names::is_service_chain(c)));
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
        let nft = self.nf.is_nf_tables_backend(v6);
        let fam = &mut self.families[index];
        // The legacy backend reads and replaces the whole table per transaction: one it is.
        let batching = match (nft, fam.kernel_chains.is_empty()) {
            (false, _) => restore::Batching::Single,
            (true, true) => restore::Batching::ChainsPerRun(NFT_CHAINS_PER_RUN),
            (true, false) => restore::Batching::ChainsPerRun(NFT_CHAINS_PER_RUN_IN_PLACE),
        };
        let owned: BTreeSet<String> = fam
            .programmed
            .values()
            .flat_map(|r| r.chains.keys().cloned())
            .collect();
        let stale: Vec<String> = fam.kernel_chains.difference(&owned).cloned().collect();
        let inputs = restore::full(fam.programmed.values(), statics, &stale, batching);
        // Until the last restore succeeds, the kernel may hold old and new chains.
        fam.kernel_chains.extend(owned);
        for (i, input) in inputs.iter().enumerate() {
            // The first run starts the rewrite; a foreign commit between two runs is
            // noticed by the generation check of the next.
            self.restore(v6, input, i == 0).map_err(sync_error)?;
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
            f.kernel_chains.clear();
            f.needs_full = true;
            f.verified = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
