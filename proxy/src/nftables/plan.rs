//! What a sync sends: everything (a full sync) or the difference since the last sync,
//! as messages appended to one transaction.

use super::is_per_service;
use super::netlink::Batch;
use super::ops;
use super::ruleset::{
    ChainId, Element, EndpointKeys, PortNames, Programmed, ProgrammedElement, ProgrammedKeys,
    ServiceRuleset, SharedSet, endpoint_map_number,
};
use crate::model::ServicePortName;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How many programmed Service ports add each element, by [`ProgrammedElement::id`]:
/// several can share one (a ClusterIP, or an endpoint's hairpin entry).
pub type ElementCounts = BTreeMap<u64, u32>;

fn add_elements(batch: &mut Batch, t: &str, all: &[&Element]) {
    for set in SharedSet::ALL {
        let of_set = all.iter().copied().filter(|e| e.set == set);
        if of_set.clone().next().is_some() {
            ops::add_elements(batch, t, set, of_set);
        }
    }
}

fn delete_elements(batch: &mut Batch, t: &str, all: &[ProgrammedElement]) {
    for set in SharedSet::ALL {
        let of_set = all.iter().filter(|e| e.set == set).map(|e| &e.key);
        if of_set.clone().next().is_some() {
            ops::delete_elements(batch, t, set, of_set);
        }
    }
}

/// Adds the rules of `r`'s chains (those in `only`, if given).
fn fill_chains(
    batch: &mut Batch,
    t: &str,
    names: &PortNames<'_>,
    r: &ServiceRuleset,
    only: Option<&BTreeSet<ChainId>>,
) {
    let wanted = |c: &ChainId| only.is_none_or(|o| o.contains(c));
    for (id, rules) in r.chains.iter().filter(|(c, _)| wanted(c)) {
        let chain = names.chain(*id);
        for rule in rules {
            ops::add_rule(batch, t, &chain, rule);
        }
    }
}

/// Chains being deleted may jump to each other: empty them all before deleting any.
fn delete_chains(batch: &mut Batch, t: &str, chains: &[String]) {
    for c in chains {
        ops::flush_chain(batch, t, c);
    }
    for c in chains {
        ops::delete_chain(batch, t, c);
    }
}

/// Names of the chains and sets in the table before a full sync.
pub struct Existing<'a> {
    pub chains: &'a [String],
    pub sets: &'a [String],
}

/// Everything after the skeleton: the shared sets emptied and refilled, the endpoint
/// maps made anew, every Service port's chains rewritten, and the per-Service chains
/// and sets of `existing` that are no longer wanted removed. Returns what was
/// programmed and the element counts.
pub fn full<'a>(
    batch: &mut Batch,
    t: &str,
    v6: bool,
    rulesets: impl Iterator<Item = (&'a ServicePortName, ServiceRuleset)>,
    existing: Existing<'_>,
) -> (BTreeMap<ServicePortName, Programmed>, ElementCounts) {
    for set in SharedSet::ALL {
        ops::flush_set(batch, t, set.name());
    }
    // Every Service port's chains are emptied first, which unbinds the endpoint maps;
    // the maps are then deleted and made anew, empty. A rule binding to a map checks
    // each element in it, flushed ones included, so rules bound to the old, flushed
    // maps made a resync much slower than the first sync.
    let mut stale_chains = per_service(existing.chains);
    for c in &stale_chains {
        ops::flush_chain(batch, t, c);
    }
    for m in existing
        .sets
        .iter()
        .filter(|s| endpoint_map_number(s).is_some())
    {
        ops::delete_set(batch, t, m);
    }
    let mut stale_sets = per_service(existing.sets);
    let mut programmed = BTreeMap::new();
    let mut elements: Vec<(u64, Element)> = Vec::new();
    let mut maps = BTreeSet::new();
    let mut keys: Vec<EndpointKeys> = Vec::new();
    for (name, r) in rulesets {
        for k in &r.endpoint_keys {
            if maps.insert(k.map) {
                ops::add_endpoint_map(batch, t, k.map, v6);
            }
        }
        let names = PortNames::new(name, r.port);
        for (ep, timeout) in &r.affinity_sets {
            let set = names.affinity_set(*ep);
            stale_sets.remove(set.as_str());
            ops::add_affinity_set(batch, t, &set, v6, *timeout);
        }
        // Chains that existed were emptied above.
        for id in r.chains.keys() {
            let chain = names.chain(*id);
            stale_chains.remove(chain.as_str());
            ops::add_chain(batch, t, &chain, None);
        }
        fill_chains(batch, t, &names, &r, None);
        let summary = r.summary();
        elements.extend(summary.elements.iter().map(|e| e.id()).zip(r.elements));
        keys.extend(r.endpoint_keys);
        programmed.insert(name.clone(), summary);
    }
    elements.sort_unstable_by_key(|(id, _)| *id);
    let mut counts = Vec::new();
    let mut unique: Vec<&Element> = Vec::new();
    for same in elements.chunk_by(|a, b| a.0 == b.0) {
        counts.push((same[0].0, same.len() as u32));
        unique.push(&same[0].1);
    }
    // After the chains their verdicts point to.
    add_elements(batch, t, &unique);
    // After the rules: a rule binding to a map checks each element already in it.
    keys.sort_by_key(|k| k.map);
    for of_map in keys.chunk_by(|a, b| a.map == b.map) {
        ops::add_endpoint_keys(batch, t, of_map);
    }
    for c in &stale_chains {
        ops::delete_chain(batch, t, c);
    }
    for s in &stale_sets {
        ops::delete_set(batch, t, s);
    }
    (programmed, counts.into_iter().collect())
}

/// One Service port's change: what was programmed and what is wanted now.
pub struct Change<'a> {
    pub name: &'a ServicePortName,
    pub old: Option<&'a Programmed>,
    /// The new rules with their summary, which the proxier keeps once committed.
    pub new: Option<(&'a ServiceRuleset, &'a Programmed)>,
}

/// How the element counts change with a partial sync, applied once it is committed
/// (so a failed transaction leaves the counts as programmed, and no copy of all
/// counts is made per sync).
#[derive(Debug, Default)]
pub struct CountChanges(BTreeMap<u64, i64>);

impl CountChanges {
    pub fn apply(self, counts: &mut ElementCounts) {
        for (id, delta) in self.0 {
            let n = counts.get(&id).copied().unwrap_or(0) as i64 + delta;
            if n > 0 {
                counts.insert(id, n as u32);
            } else {
                counts.remove(&id);
            }
        }
    }
}

/// The per-Service chains or sets among `names` (those a full sync replaces).
fn per_service(names: &[String]) -> BTreeSet<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| is_per_service(n))
        .collect()
}

/// The difference for changed Service ports, given the element `counts` as programmed.
pub fn partial(
    batch: &mut Batch,
    t: &str,
    v6: bool,
    counts: &ElementCounts,
    changes: &[Change<'_>],
) -> CountChanges {
    let empty_old = Programmed::default();
    let empty_new = ServiceRuleset::default();
    let mut removed: Vec<&ProgrammedElement> = Vec::new();
    let mut added: Vec<(u64, &Element)> = Vec::new();
    let mut gone_chains: Vec<String> = Vec::new();
    let mut gone_sets: Vec<String> = Vec::new();
    let mut declared: Vec<(&ServiceRuleset, PortNames<'_>, BTreeSet<ChainId>)> = Vec::new();
    let mut gone_keys: Vec<&ProgrammedKeys> = Vec::new();
    let mut new_keys: Vec<&EndpointKeys> = Vec::new();
    let mut maps: BTreeSet<u32> = BTreeSet::new();
    let mut deltas: BTreeMap<u64, i64> = BTreeMap::new();
    let mut count = |id: u64, by: i64| -> (i64, i64) {
        let before = counts.get(&id).copied().unwrap_or(0) as i64;
        let delta = deltas.entry(id).or_insert(0);
        let old = before + *delta;
        *delta += by;
        (old.max(0), (old + by).max(0))
    };
    for c in changes {
        let old = c.old.unwrap_or(&empty_old);
        let (new, summary) = c.new.unwrap_or((&empty_new, &empty_old));
        for e in &old.elements {
            if let (1, 0) = count(e.id(), -1) {
                removed.push(e);
            }
        }
        for (e, programmed) in new.elements.iter().zip(&summary.elements) {
            let id = programmed.id();
            if let (0, 1) = count(id, 1) {
                added.push((id, e));
            }
        }
        gone_keys.extend(
            old.endpoint_keys
                .iter()
                .filter(|k| !summary.endpoint_keys.contains(k)),
        );
        for (k, programmed) in new.endpoint_keys.iter().zip(&summary.endpoint_keys) {
            if !old.endpoint_keys.contains(programmed) {
                if maps.insert(k.map) {
                    ops::add_endpoint_map(batch, t, k.map, v6);
                }
                new_keys.push(k);
            }
        }
        // Compared by name: a port without a name is renamed when its number changes.
        let (old_names, new_names) = (
            PortNames::new(c.name, old.port),
            PortNames::new(c.name, new.port),
        );
        let old_chains: Vec<(String, u64)> = old
            .chains
            .iter()
            .map(|(id, h)| (old_names.chain(*id), *h))
            .collect();
        let new_chains: Vec<(ChainId, String, u64)> = summary
            .chains
            .iter()
            .map(|(id, h)| (*id, new_names.chain(*id), *h))
            .collect();
        let changed: BTreeSet<ChainId> = new_chains
            .iter()
            .filter(|(_, name, h)| !old_chains.iter().any(|(n, oh)| n == name && oh == h))
            .map(|(id, _, _)| *id)
            .collect();
        gone_chains.extend(
            old_chains
                .into_iter()
                .filter(|(n, _)| !new_chains.iter().any(|(_, name, _)| name == n))
                .map(|(n, _)| n),
        );
        let old_sets: Vec<(String, u32)> = old
            .affinity_sets
            .iter()
            .map(|(ep, timeout)| (old_names.affinity_set(*ep), *timeout))
            .collect();
        let new_sets: Vec<(String, u32)> = new
            .affinity_sets
            .iter()
            .map(|(ep, timeout)| (new_names.affinity_set(*ep), *timeout))
            .collect();
        for (set, timeout) in new_sets.iter().filter(|s| !old_sets.contains(s)) {
            ops::add_affinity_set(batch, t, set, v6, *timeout);
        }
        gone_sets.extend(
            old_sets
                .into_iter()
                .filter(|(n, _)| !new_sets.iter().any(|(name, _)| name == n))
                .map(|(n, _)| n),
        );
        for (_, chain, _) in new_chains.iter().filter(|(id, _, _)| changed.contains(id)) {
            ops::add_chain(batch, t, chain, None);
            ops::flush_chain(batch, t, chain);
        }
        declared.push((new, new_names, changed));
    }
    // An element both removed and re-added (same key and value) needs nothing.
    let added_ids: HashSet<u64> = added.iter().map(|(id, _)| *id).collect();
    let removed_ids: HashSet<u64> = removed.iter().map(|e| e.id()).collect();
    let removed: Vec<ProgrammedElement> = removed
        .into_iter()
        .filter(|e| !added_ids.contains(&e.id()))
        .cloned()
        .collect();
    added.retain(|(id, _)| !removed_ids.contains(id));
    // Elements go before the chains they point to are deleted, and after new chains exist.
    delete_elements(batch, t, &removed);
    // Keys are deleted before they are added again with new destinations.
    for k in gone_keys {
        ops::delete_endpoint_keys(batch, t, k);
    }
    for (r, names, changed) in &declared {
        fill_chains(batch, t, names, r, Some(changed));
    }
    let added: Vec<&Element> = added.into_iter().map(|(_, e)| e).collect();
    add_elements(batch, t, &added);
    for k in new_keys {
        ops::add_endpoint_keys(batch, t, std::slice::from_ref(k));
    }
    delete_chains(batch, t, &gone_chains);
    for s in &gone_sets {
        ops::delete_set(batch, t, s);
    }
    CountChanges(deltas)
}
