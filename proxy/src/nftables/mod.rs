//! nftables mode: one `kube-proxy` table per IP family, applied with `nft -f` as one
//! transaction per sync. Like the iptables mode, the proxier remembers what it applied
//! per Service port and sends only differences; a full sync (start, timer, failure, or
//! the table found missing) rewrites everything and removes leftovers.

mod exec;
mod ruleset;
mod script;

pub use exec::{Nft, SystemNft};
pub use ruleset::{Element, NftContext, ServiceRuleset, service_chain, service_ruleset};

use crate::backend::{Backend, SyncError, SyncReport};
use crate::config::{LocalDetector, NodePortAddresses};
use crate::model::{ServicePortName, Snapshot, entries, port_names};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const TABLE: &str = "kube-proxy";

/// Whether `name` is a per-Service chain or set (`<kind>-<HASH8>-...`), as opposed to
/// the skeleton's fixed names such as `service-endpoints-check`.
fn is_per_service(name: &str) -> bool {
    [
        "service-",
        "local-",
        "external-",
        "firewall-",
        "endpoint-",
        "affinity-",
    ]
    .iter()
    .any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            let b = rest.as_bytes();
            b.len() > 9
                && b[8] == b'-'
                && b[..8]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c))
        })
    })
}

#[derive(Debug, Clone)]
pub struct NftOptions {
    pub families: Vec<bool>,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    pub local: LocalDetector,
    pub node_port_addresses: NodePortAddresses,
}

struct Family {
    ctx: NftContext,
    programmed: BTreeMap<ServicePortName, ServiceRuleset>,
    counts: script::ElementCounts,
    needs_full: bool,
}

pub struct NftProxier<N: Nft> {
    nft: N,
    options: NftOptions,
    node_ips: Vec<IpAddr>,
    families: Vec<Family>,
}

fn sync_error(e: impl std::fmt::Display) -> SyncError {
    SyncError {
        mode: "nftables",
        message: e.to_string(),
    }
}

impl<N: Nft> NftProxier<N> {
    pub fn new(nft: N, options: NftOptions) -> Self {
        let families = options
            .families
            .iter()
            .map(|&v6| Family {
                ctx: NftContext {
                    v6,
                    masquerade_all: options.masquerade_all,
                    local: options.local.clone(),
                },
                programmed: BTreeMap::new(),
                counts: Default::default(),
                needs_full: true,
            })
            .collect();
        NftProxier {
            nft,
            options,
            node_ips: Vec::new(),
            families,
        }
    }

    pub fn nft(&mut self) -> &mut N {
        &mut self.nft
    }

    fn skeleton(&self, v6: bool) -> String {
        let kw = if v6 { "ip6" } else { "ip" };
        let node_port_match = match &self.options.node_port_addresses {
            NodePortAddresses::All => "fib daddr type local".to_string(),
            NodePortAddresses::Primary => {
                let ips: Vec<String> = self
                    .node_ips
                    .iter()
                    .filter(|ip| ip.is_ipv6() == v6)
                    .map(IpAddr::to_string)
                    .collect();
                if ips.is_empty() {
                    "fib daddr type local".to_string()
                } else {
                    format!("{kw} daddr {{ {} }}", ips.join(", "))
                }
            }
            NodePortAddresses::Cidrs(c) => {
                let c: Vec<String> = c
                    .iter()
                    .filter(|c| c.is_ipv6() == v6)
                    .map(|c| c.to_string())
                    .collect();
                if c.is_empty() {
                    "fib daddr type local".to_string()
                } else {
                    format!("{kw} daddr {{ {} }}", c.join(", "))
                }
            }
        };
        script::skeleton(
            kw,
            TABLE,
            &format!("{:#x}", 1u32 << self.options.masquerade_bit),
            &node_port_match,
        )
    }

    fn sync_family(
        &mut self,
        index: usize,
        snapshot: &Snapshot,
        full: bool,
    ) -> Result<SyncReport, SyncError> {
        let v6 = self.families[index].ctx.v6;
        let skeleton = self.skeleton(v6);
        let fam = &mut self.families[index];
        let t = format!("{} {TABLE}", fam.ctx.family());
        let mut updates: Vec<(ServicePortName, Option<ServiceRuleset>)> = Vec::new();
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
                let r = service_ruleset(entry, &fam.ctx);
                updates.push((entry.port.name.clone(), (r.rule_count() > 0).then_some(r)));
            }
        }
        if !(full || fam.needs_full) {
            let mut counts = fam.counts.clone();
            let changes: Vec<(Option<&ServiceRuleset>, Option<&ServiceRuleset>)> = updates
                .iter()
                .map(|(k, new)| (fam.programmed.get(k), new.as_ref()))
                .collect();
            let applied = match script::partial(&t, v6, &mut counts, &changes) {
                None => Ok(()),
                Some(text) => self.nft.apply(&text),
            };
            match applied {
                Ok(()) => {
                    fam.counts = counts;
                    for (k, new) in updates {
                        match new {
                            Some(r) => fam.programmed.insert(k, r),
                            None => fam.programmed.remove(&k),
                        };
                    }
                    let rules = fam
                        .programmed
                        .values()
                        .map(ServiceRuleset::rule_count)
                        .sum();
                    return Ok(SyncReport { full: false, rules });
                }
                Err(e) => {
                    tracing::warn!(error = %e, ipv6 = v6, "partial nftables sync failed; doing a full sync")
                }
            }
        }
        fam.needs_full = true;
        fam.programmed = entries(&snapshot.state)
            .filter_map(|e| {
                let r = service_ruleset(e, &fam.ctx);
                (r.rule_count() > 0).then(|| (e.port.name.clone(), r))
            })
            .collect();
        let family = fam.ctx.family();
        let owned_chains: BTreeSet<&String> = fam
            .programmed
            .values()
            .flat_map(|r| r.chains.keys())
            .collect();
        let owned_sets: BTreeSet<&String> = fam
            .programmed
            .values()
            .flat_map(|r| r.affinity_sets.keys())
            .collect();
        let per_service = |n: &String| is_per_service(n);
        let stale_chains: Vec<String> = self
            .nft
            .list(family, TABLE, false)
            .map_err(sync_error)?
            .into_iter()
            .filter(|c| per_service(c) && !owned_chains.contains(c))
            .collect();
        let stale_sets: Vec<String> = self
            .nft
            .list(family, TABLE, true)
            .map_err(sync_error)?
            .into_iter()
            .filter(|s| per_service(s) && !owned_sets.contains(s))
            .collect();
        let text = script::full(
            &t,
            &skeleton,
            fam.programmed.values(),
            &stale_chains,
            &stale_sets,
        );
        self.nft.apply(&text).map_err(sync_error)?;
        fam.counts = script::count_elements(fam.programmed.values());
        fam.needs_full = false;
        let rules = fam
            .programmed
            .values()
            .map(ServiceRuleset::rule_count)
            .sum();
        Ok(SyncReport { full: true, rules })
    }
}

impl<N: Nft> Backend for NftProxier<N> {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        for i in 0..self.families.len() {
            report += self.sync_family(i, snapshot, full)?;
        }
        Ok(report)
    }

    fn tampered(&mut self) -> bool {
        let mut tampered = false;
        for i in 0..self.families.len() {
            let family = self.families[i].ctx.family();
            if !self.nft.table_exists(family, TABLE) {
                self.families[i].needs_full = true;
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
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), SyncError> {
        for i in 0..self.families.len() {
            let family = self.families[i].ctx.family();
            // `add` first makes the delete succeed whether or not the table exists.
            self.nft
                .apply(&format!(
                    "add table {family} {TABLE}\ndelete table {family} {TABLE}\n"
                ))
                .map_err(sync_error)?;
            self.families[i].programmed.clear();
            self.families[i].counts.clear();
            self.families[i].needs_full = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
