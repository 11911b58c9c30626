//! nftables mode: one `kube-proxy` table per IP family, programmed over nf_tables
//! netlink as one transaction per sync. Like the iptables mode, the proxier remembers
//! what it applied per Service port and sends only differences; a full sync (start,
//! timer, failure, or the table found missing) rewrites everything and removes
//! leftovers.

mod exec;
mod expr;
mod netlink;
mod ops;
mod plan;
mod ruleset;
mod skeleton;

pub use exec::{FAMILY_IP, FAMILY_IP6, Nft, NftError, SystemNft};
pub use netlink::Batch;
pub use ruleset::{Element, NftContext, ServiceRuleset, service_chain, service_ruleset};

use crate::backend::{Backend, SyncError, SyncReport};
use crate::config::{LocalDetector, NodePortAddresses};
use crate::model::{ServicePortName, Snapshot, entries, port_names, ports_of_service};
use crate::net::Cidr;
use ruleset::Programmed;
use skeleton::NodePortMatch;
use std::collections::BTreeMap;
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
    programmed: BTreeMap<ServicePortName, Programmed>,
    counts: plan::ElementCounts,
    bases: Bases,
    needs_full: bool,
}

/// Hands out [`ServiceRuleset::base`] numbers, unique among a family's programmed
/// Service ports. A full sync numbers them afresh.
#[derive(Debug, Default)]
struct Bases {
    next: u32,
    free: Vec<u32>,
}

impl Bases {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give_back(&mut self, base: u32) {
        self.free.push(base);
    }
}

impl Family {
    fn nfproto(&self) -> u8 {
        if self.ctx.v6 { FAMILY_IP6 } else { FAMILY_IP }
    }

    fn rule_count(&self) -> usize {
        self.programmed.values().map(Programmed::rule_count).sum()
    }
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
                bases: Bases::default(),
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

    /// Where NodePorts answer, for one family: the configured addresses of that
    /// family, or any local address if there are none.
    fn node_port_match(&self, v6: bool) -> NodePortMatch {
        let cidrs: Vec<Cidr> = match &self.options.node_port_addresses {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Primary => self
                .node_ips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(|&addr| Cidr {
                    addr,
                    prefix: if v6 { 128 } else { 32 },
                })
                .collect(),
            NodePortAddresses::Cidrs(c) => {
                c.iter().filter(|c| c.is_ipv6() == v6).copied().collect()
            }
        };
        if cidrs.is_empty() {
            NodePortMatch::Local
        } else {
            NodePortMatch::Cidrs(cidrs)
        }
    }

    /// Sends only what changed since the last sync. Err means the family needs a
    /// full sync.
    fn sync_partial(&mut self, index: usize, snapshot: &Snapshot) -> Result<(), NftError> {
        let fam = &mut self.families[index];
        let mut updates: Vec<(ServicePortName, Option<(ServiceRuleset, Programmed)>)> = Vec::new();
        for svc in &snapshot.changed {
            let wanted = port_names(&snapshot.state, svc);
            updates.extend(
                ports_of_service(&fam.programmed, svc)
                    .filter(|(k, _)| !wanted.contains(k))
                    .map(|(k, _)| (k.clone(), None)),
            );
            for entry in snapshot.state.get(svc).into_iter().flat_map(|v| v.iter()) {
                // A failed commit leads to a full sync, which numbers all anew.
                let programmed = fam.programmed.get(&entry.port.name);
                let base = programmed.map_or_else(|| fam.bases.take(), |p| p.base);
                let r = service_ruleset(entry, &fam.ctx, base);
                let wanted = r.rule_count() > 0;
                if !wanted && programmed.is_none() {
                    fam.bases.give_back(base);
                }
                updates.push((
                    entry.port.name.clone(),
                    wanted.then(|| {
                        let summary = r.summary();
                        (r, summary)
                    }),
                ));
            }
        }
        let fam = &self.families[index];
        let changes: Vec<plan::Change> = updates
            .iter()
            .map(|(k, new)| plan::Change {
                name: k,
                old: fam.programmed.get(k),
                new: new.as_ref().map(|(r, summary)| (r, summary)),
            })
            .collect();
        let mut batch = Batch::new(fam.nfproto());
        let counted = plan::partial(&mut batch, TABLE, fam.ctx.v6, &fam.counts, &changes);
        self.nft.commit(batch)?;
        let fam = &mut self.families[index];
        counted.apply(&mut fam.counts);
        for (k, new) in updates {
            match new {
                Some((_, summary)) => {
                    fam.programmed.insert(k, summary);
                }
                None => {
                    if let Some(p) = fam.programmed.remove(&k) {
                        fam.bases.give_back(p.base);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync_full(&mut self, index: usize, snapshot: &Snapshot) -> Result<(), NftError> {
        let v6 = self.families[index].ctx.v6;
        let node_ports = self.node_port_match(v6);
        let nfproto = self.families[index].nfproto();
        let kernel_chains = self.nft.list(nfproto, TABLE, false)?;
        let kernel_sets = self.nft.list(nfproto, TABLE, true)?;
        let fam = &mut self.families[index];
        fam.needs_full = true;
        let mut batch = Batch::new(nfproto);
        skeleton::add(
            &mut batch,
            TABLE,
            v6,
            1u32 << self.options.masquerade_bit,
            &node_ports,
        );
        let ctx = &fam.ctx;
        let rulesets = entries(&snapshot.state)
            .zip(0u32..)
            .filter_map(|(e, base)| {
                let r = service_ruleset(e, ctx, base);
                (r.rule_count() > 0).then_some((&e.port.name, r))
            });
        let existing = plan::Existing {
            chains: &kernel_chains,
            sets: &kernel_sets,
        };
        let (programmed, counts) = plan::full(&mut batch, TABLE, v6, rulesets, existing);
        self.nft.commit(batch)?;
        let fam = &mut self.families[index];
        fam.bases = Bases {
            next: programmed.values().map(|p| p.base + 1).max().unwrap_or(0),
            free: Vec::new(),
        };
        fam.programmed = programmed;
        fam.counts = counts;
        fam.needs_full = false;
        Ok(())
    }

    fn sync_family(
        &mut self,
        index: usize,
        snapshot: &Snapshot,
        full: bool,
    ) -> Result<SyncReport, SyncError> {
        if !(full || self.families[index].needs_full) {
            match self.sync_partial(index, snapshot) {
                Ok(()) => {
                    return Ok(SyncReport {
                        full: false,
                        rules: self.families[index].rule_count(),
                    });
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    ipv6 = self.families[index].ctx.v6,
                    "partial nftables sync failed; doing a full sync"
                ),
            }
        }
        self.sync_full(index, snapshot).map_err(sync_error)?;
        Ok(SyncReport {
            full: true,
            rules: self.families[index].rule_count(),
        })
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
            let family = self.families[i].nfproto();
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
            let family = self.families[i].nfproto();
            // Adding first makes the delete succeed whether or not the table exists.
            let mut batch = Batch::new(family);
            ops::add_table(&mut batch, TABLE, "rules for kube-proxy");
            ops::delete_table(&mut batch, TABLE);
            self.nft.commit(batch).map_err(sync_error)?;
            let f = &mut self.families[i];
            f.programmed.clear();
            f.counts.clear();
            f.bases = Bases::default();
            f.needs_full = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
