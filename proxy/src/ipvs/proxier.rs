//! The IPVS proxier: moves the kernel (virtual servers, kube-ipvs0 addresses, ipsets,
//! iptables rules) to the plan of each IP family.
//!
//! It keeps a model of what it programmed. A full sync (start, failures, tampering,
//! hourly) reads the kernel back first — virtual servers with their real servers,
//! kube-ipvs0's addresses, the sets' members — so leftovers of an earlier run are
//! removed and nothing is added twice; a partial sync diffs against the model only.

use super::dummy::{LinkError, Links};
use super::graceful::{self, Draining};
use super::ipset::{self, IpsetError, SetContents};
use super::kernel::{IpvsError, IpvsKernel};
use super::netlink::{Destination, RealServer, ServiceKey, Timeouts, VirtualServer};
use super::plan::{FamilyPlan, PlanInputs, plan};
use super::rules::{self, JUMPS, RuleInputs, jump_args};
use super::sysctl::{self, SysctlError};
use crate::backend::{Backend, SyncError, SyncReport};
use crate::config::{LocalDetector, NodePortAddresses};
use crate::iptables::{ExecError, Netfilter};
use crate::model::Snapshot;
use crate::net::Cidr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IpvsOptions {
    pub families: Vec<bool>,
    /// ipvs.scheduler, "rr" unless set.
    pub scheduler: String,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    pub local: LocalDetector,
    pub node_port_addresses: NodePortAddresses,
    /// ipvs.strictARP.
    pub strict_arp: bool,
    /// ipvs.tcpTimeout, tcpFinTimeout, udpTimeout.
    pub timeouts: Timeouts,
    /// ipvs.excludeCIDRs: virtual servers there are never deleted by the proxy.
    pub exclude_cidrs: Vec<Cidr>,
    /// How long a terminating TCP real server may drain at most.
    pub drain_max_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Ipset(#[from] IpsetError),
    #[error(transparent)]
    Iptables(#[from] ExecError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}

fn sync_err(e: impl Into<Failure>) -> SyncError {
    SyncError {
        mode: "ipvs",
        message: e.into().to_string(),
    }
}

/// A virtual server as programmed, with its real servers and their weights.
type Programmed = BTreeMap<ServiceKey, (VirtualServer, BTreeMap<SocketAddr, u32>)>;

#[derive(Default)]
struct Family {
    v6: bool,
    /// What the kernel has, as far as we know; rebuilt from the kernel on full syncs.
    services: Programmed,
    bound: BTreeSet<IpAddr>,
    sets: SetContents,
}

pub struct IpvsProxier<K: IpvsKernel, N: Netfilter> {
    ipvs: K,
    nf: N,
    links: Links,
    options: IpvsOptions,
    node_ips: Vec<IpAddr>,
    families: Vec<Family>,
    draining: Draining,
    /// Set until a full sync has succeeded.
    needs_full: bool,
}

fn dest_addr(d: &Destination) -> SocketAddr {
    SocketAddr::new(d.server.addr, d.server.port)
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

fn real(addr: SocketAddr, weight: u32) -> RealServer {
    RealServer {
        addr: addr.ip(),
        port: addr.port(),
        weight,
    }
}

impl<K: IpvsKernel, N: Netfilter> IpvsProxier<K, N> {
    /// Sets the node sysctls (forwarding, strict ARP) and the IPVS timeouts, and
    /// opens rtnetlink, all in the calling thread's network namespace.
    pub fn new(mut ipvs: K, nf: N, options: IpvsOptions) -> Result<Self, SyncError> {
        sysctl::prepare_node_sysctls(options.strict_arp).map_err(sync_err)?;
        let t = options.timeouts;
        if t.tcp > 0 || t.tcp_fin > 0 || t.udp > 0 {
            // As upstream: the proxy works with the kernel's timeouts too.
            if let Err(e) = ipvs.set_timeouts(t) {
                tracing::error!(error = %e, "cannot set the IPVS timeouts (ipvs.tcpTimeout, tcpFinTimeout, udpTimeout)");
            }
        }
        let links = Links::open().map_err(sync_err)?;
        Ok(IpvsProxier {
            ipvs,
            nf,
            links,
            families: options
                .families
                .iter()
                .map(|v6| Family {
                    v6: *v6,
                    ..Default::default()
                })
                .collect(),
            draining: Draining::new(options.drain_max_wait),
            options,
            node_ips: Vec::new(),
            needs_full: true,
        })
    }

    fn excluded(&self, ip: IpAddr) -> bool {
        self.options.exclude_cidrs.iter().any(|c| c.contains(ip))
    }

    /// What IPVS has for this family, read back from the kernel.
    fn read_services(&mut self, v6: bool) -> Result<Programmed, IpvsError> {
        let mut out = Programmed::new();
        for vs in self.ipvs.services()? {
            if vs.addr.is_ipv6() != v6 || self.excluded(vs.addr) {
                continue;
            }
            let dests = self
                .ipvs
                .destinations(&vs)?
                .iter()
                .map(|d| (dest_addr(d), d.server.weight))
                .collect();
            out.insert(vs.key(), (vs, dests));
        }
        Ok(out)
    }

    /// Node addresses of the family (outside kube-ipvs0, no loopback or link-local).
    fn node_addresses(&self, dummy: u32, v6: bool) -> Result<BTreeSet<IpAddr>, LinkError> {
        Ok(self
            .links
            .node_addresses(Some(dummy))?
            .into_iter()
            .filter(|ip| ip.is_ipv6() == v6 && !ip.is_loopback() && !is_link_local(ip))
            .collect())
    }

    fn node_port_ips(&self, v6: bool, node_addresses: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
        match &self.options.node_port_addresses {
            NodePortAddresses::All => node_addresses.iter().copied().collect(),
            NodePortAddresses::Primary => self
                .node_ips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .copied()
                .collect(),
            NodePortAddresses::Cidrs(cidrs) => node_addresses
                .iter()
                .filter(|ip| cidrs.iter().any(|c| c.contains(**ip)))
                .copied()
                .collect(),
        }
    }

    fn not_local(&self, v6: bool) -> Option<String> {
        match &self.options.local {
            LocalDetector::None => None,
            LocalDetector::Cidrs(c) => c
                .iter()
                .find(|c| c.is_ipv6() == v6)
                .map(|c| format!("! -s {c}")),
            LocalDetector::BridgeInterface(b) => Some(format!("! -i {b}")),
            LocalDetector::InterfaceNamePrefix(p) => Some(format!("! -i {p}+")),
        }
    }

    /// Moves IPVS from `have` to `want`; returns the new programmed state.
    fn sync_ipvs(&mut self, have: Programmed, want: &FamilyPlan) -> Result<Programmed, IpvsError> {
        let now = Instant::now();
        let mut programmed = Programmed::new();
        for (key, (vs, _)) in &have {
            if !want.services.contains_key(key) {
                self.ipvs.delete_service(vs)?;
                self.draining.forget_service(key);
            }
        }
        for (key, (vs, wanted)) in &want.services {
            let mut reals = match have.get(key) {
                None => {
                    self.ipvs.add_service(vs)?;
                    BTreeMap::new()
                }
                Some((old, reals)) => {
                    if old != vs {
                        self.ipvs.update_service(vs)?;
                    }
                    reals.clone()
                }
            };
            for rs in wanted {
                match reals.get(rs) {
                    None => self.ipvs.add_destination(vs, &real(*rs, 1))?,
                    // Draining, or left with another weight by an earlier run.
                    Some(w) if *w != 1 => {
                        self.ipvs.update_destination(vs, &real(*rs, 1))?;
                        self.draining.stop(key, rs);
                    }
                    Some(_) => {}
                }
                reals.insert(*rs, 1);
            }
            let leaving: Vec<SocketAddr> = reals
                .keys()
                .filter(|rs| !wanted.contains(rs))
                .copied()
                .collect();
            for rs in leaving {
                if !graceful::drains(vs.protocol) {
                    self.ipvs.delete_destination(vs, &real(rs, 0))?;
                    reals.remove(&rs);
                    continue;
                }
                if reals.get(&rs) != Some(&0) {
                    self.ipvs.update_destination(vs, &real(rs, 0))?;
                    reals.insert(rs, 0);
                }
                self.draining.start(vs, rs, now);
            }
            programmed.insert(*key, (vs.clone(), reals));
        }
        for (key, rs) in self.draining.reap(&mut self.ipvs, now)? {
            if let Some((_, reals)) = programmed.get_mut(&key) {
                reals.remove(&rs);
            }
        }
        Ok(programmed)
    }

    fn sync_family(
        &mut self,
        i: usize,
        snapshot: &Snapshot,
        full: bool,
        dummy: u32,
    ) -> Result<usize, Failure> {
        let v6 = self.families[i].v6;
        let node_addresses = self.node_addresses(dummy, v6)?;
        let node_port_ips = self.node_port_ips(v6, &node_addresses);
        let node_ip = self.node_ips.iter().find(|ip| ip.is_ipv6() == v6).copied();
        let want = plan(
            &snapshot.state,
            &PlanInputs {
                v6,
                scheduler: &self.options.scheduler,
                node_port_ips: &node_port_ips,
                node_addresses: &node_addresses,
                node_ip,
            },
        );

        // Sets and addresses first, so the rules and virtual servers that follow
        // never point at something missing.
        let have_sets = if full {
            ipset::read(v6)?
        } else {
            std::mem::take(&mut self.families[i].sets)
        };
        if full || have_sets != want.sets {
            ipset::restore(&ipset::restore_input(v6, &have_sets, &want.sets))?;
        }
        self.families[i].sets = want.sets.clone();

        let have_bound = if full {
            self.links
                .addresses(dummy)?
                .into_iter()
                // The kernel's own link-local address is not ours to remove.
                .filter(|ip| ip.is_ipv6() == v6 && !is_link_local(ip))
                .collect()
        } else {
            std::mem::take(&mut self.families[i].bound)
        };
        for ip in want.bound.difference(&have_bound) {
            self.links.bind(dummy, *ip)?;
        }
        // Virtual servers before their addresses go, as upstream unbinds last.
        let have = if full {
            self.read_services(v6)?
        } else {
            std::mem::take(&mut self.families[i].services)
        };
        let programmed = self.sync_ipvs(have, &want)?;
        for ip in have_bound.difference(&want.bound) {
            self.links.unbind(dummy, *ip)?;
        }
        self.families[i].bound = want.bound.clone();

        let non_empty: BTreeSet<&'static str> = want
            .sets
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(n, _)| *n)
            .collect();
        let masq_mark = format!("{:#x}", 1u32 << self.options.masquerade_bit);
        let input = rules::restore_input(&RuleInputs {
            v6,
            masq_mark: &masq_mark,
            masquerade_all: self.options.masquerade_all,
            not_local: self.not_local(v6),
            non_empty: &non_empty,
            lb_no_node_access: &want.lb_no_node_access,
        });
        self.nf.restore(v6, &input)?;
        if full {
            // Prepend each jump; reversed so they end up in table order.
            for (table, from, comment, to) in JUMPS.iter().rev() {
                self.nf
                    .ensure_rule(v6, table, from, &jump_args(comment, to))?;
            }
        }
        let count = programmed.values().map(|(_, r)| 1 + r.len()).sum();
        self.families[i].services = programmed;
        Ok(count)
    }

    fn sync_all(&mut self, snapshot: &Snapshot, full: bool) -> Result<usize, Failure> {
        let dummy = self.links.ensure_dummy()?;
        let mut count = 0;
        for i in 0..self.families.len() {
            count += self.sync_family(i, snapshot, full, dummy)?;
        }
        Ok(count)
    }
}

impl<K: IpvsKernel, N: Netfilter> Backend for IpvsProxier<K, N> {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncReport, SyncError> {
        let full = full || self.needs_full;
        match self.sync_all(snapshot, full) {
            Ok(rules) => {
                if full {
                    self.needs_full = false;
                }
                Ok(SyncReport { full, rules })
            }
            Err(e) => {
                self.needs_full = true;
                Err(sync_err(e))
            }
        }
    }

    fn tampered(&mut self) -> bool {
        let mut tampered = false;
        for f in &self.families {
            let ours = self
                .nf
                .chain_exists(f.v6, "nat", "KUBE-SERVICES")
                .unwrap_or(false)
                && self
                    .nf
                    .chain_exists(f.v6, "filter", "KUBE-IPVS-FILTER")
                    .unwrap_or(false);
            tampered |= !ours;
        }
        if tampered {
            self.needs_full = true;
        }
        tampered
    }

    fn set_node_ips(&mut self, ips: Vec<IpAddr>) {
        if self.node_ips != ips {
            self.node_ips = ips;
            self.needs_full = true;
        }
    }

    fn cleanup(&mut self) -> Result<(), SyncError> {
        let v6s: Vec<bool> = self.families.iter().map(|f| f.v6).collect();
        cleanup(Some(&mut self.ipvs), &mut self.nf, &self.links, &v6s)
    }
}

/// Removes everything IPVS mode programs: virtual servers (when the kernel has IPVS
/// at all), the jumps and chains in both tables of `families`, the ipsets, kube-ipvs0.
pub fn cleanup(
    ipvs: Option<&mut dyn IpvsKernel>,
    nf: &mut dyn Netfilter,
    links: &Links,
    families: &[bool],
) -> Result<(), SyncError> {
    if let Some(ipvs) = ipvs {
        ipvs.flush().map_err(sync_err)?;
    }
    for v6 in families {
        for (table, from, comment, to) in JUMPS {
            nf.delete_rule(*v6, table, from, &jump_args(comment, to))
                .map_err(sync_err)?;
        }
        nf.restore(*v6, &rules::flush_input()).map_err(sync_err)?;
    }
    ipset::destroy_all().map_err(sync_err)?;
    links.delete_dummy().map_err(sync_err)
}
