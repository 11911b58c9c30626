//! What a sync sends: everything (a full sync) or the difference since the last sync,
//! as messages appended to one transaction.

use super::netlink::Batch;
use super::ops;
use super::ruleset::{
    Element, EndpointKeys, Programmed, ProgrammedKeys, ServiceRuleset, SharedSet, endpoint_map_name,
};
use std::collections::{BTreeMap, BTreeSet};

/// Element counts: several Service ports can share one element (a ClusterIP, or an
/// endpoint's hairpin entry).
pub type ElementCounts = BTreeMap<Element, usize>;

fn add_elements(batch: &mut Batch, t: &str, add: bool, all: &[&Element]) {
    for set in SharedSet::ALL {
        let of_set = all.iter().copied().filter(|e| e.set == set);
        if of_set.clone().next().is_some() {
            ops::elements(batch, t, set, add, of_set);
        }
    }
}

/// Declares the chains and affinity sets of `r` (chains emptied), then adds its rules.
fn write_service(batch: &mut Batch, t: &str, v6: bool, r: &ServiceRuleset) {
    for (set, timeout) in &r.affinity_sets {
        ops::add_affinity_set(batch, t, set, v6, *timeout);
    }
    declare_chains(batch, t, r.chains.keys());
    fill_chains(batch, t, r, None);
}

/// Adds the chains, emptied.
fn declare_chains<'a>(batch: &mut Batch, t: &str, chains: impl Iterator<Item = &'a String>) {
    for chain in chains {
        ops::add_chain(batch, t, chain, None);
        ops::flush_chain(batch, t, chain);
    }
}

/// Adds the rules of `r`'s chains (those in `only`, if given).
fn fill_chains(batch: &mut Batch, t: &str, r: &ServiceRuleset, only: Option<&BTreeSet<&str>>) {
    let wanted = |c: &str| only.is_none_or(|o| o.contains(c));
    for (chain, rules) in r.chains.iter().filter(|(c, _)| wanted(c)) {
        for rule in rules {
            ops::add_rule(batch, t, chain, rule);
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

/// Everything after the skeleton: the shared sets emptied and refilled, every Service
/// port's chains rewritten, and `stale_chains` / `stale_sets` (in the kernel but no
/// longer wanted) removed. Returns what was programmed and the element counts.
pub fn full<'a>(
    batch: &mut Batch,
    t: &str,
    v6: bool,
    rulesets: impl Iterator<Item = (&'a crate::model::ServicePortName, ServiceRuleset)>,
    stale: impl Fn(&BTreeMap<crate::model::ServicePortName, Programmed>) -> (Vec<String>, Vec<String>),
    kernel_maps: &[u32],
) -> (
    BTreeMap<crate::model::ServicePortName, Programmed>,
    ElementCounts,
) {
    for set in SharedSet::ALL {
        ops::flush_set(batch, t, set.name());
    }
    let mut programmed = BTreeMap::new();
    let mut counts = ElementCounts::new();
    let mut maps = BTreeSet::new();
    let mut keys: Vec<EndpointKeys> = Vec::new();
    for (name, r) in rulesets {
        for k in &r.endpoint_keys {
            if maps.insert(k.map) {
                ops::add_endpoint_map(batch, t, k.map, v6);
                ops::flush_set(batch, t, &endpoint_map_name(k.map));
            }
        }
        write_service(batch, t, v6, &r);
        for e in &r.elements {
            *counts.entry(e.clone()).or_insert(0) += 1;
        }
        programmed.insert(name.clone(), r.summary());
        keys.extend(r.endpoint_keys);
    }
    let (stale_chains, stale_sets) = stale(&programmed);
    // Stale chains may still be referenced by rules of other stale chains: flush first.
    for c in &stale_chains {
        ops::flush_chain(batch, t, c);
    }
    let all: Vec<&Element> = counts.keys().collect();
    add_elements(batch, t, true, &all);
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
    // No rule uses them any more: every per-Service chain was flushed above.
    for m in kernel_maps.iter().filter(|m| !maps.contains(m)) {
        ops::delete_set(batch, t, &endpoint_map_name(*m));
    }
    (programmed, counts)
}

/// One Service port's change: what was programmed and what is wanted now.
pub struct Change<'a> {
    pub old: Option<&'a Programmed>,
    pub new: Option<&'a ServiceRuleset>,
}

/// How the element counts change with a partial sync, applied once it is committed
/// (so a failed transaction leaves the counts as programmed, and no copy of all
/// counts is made per sync).
#[derive(Debug, Default)]
pub struct CountChanges(BTreeMap<Element, isize>);

impl CountChanges {
    pub fn apply(self, counts: &mut ElementCounts) {
        for (e, delta) in self.0 {
            let n = counts.get(&e).copied().unwrap_or(0) as isize + delta;
            if n > 0 {
                counts.insert(e, n as usize);
            } else {
                counts.remove(&e);
            }
        }
    }
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
    let (mut removed, mut added): (Vec<Element>, Vec<Element>) = (Vec::new(), Vec::new());
    let mut gone_chains: Vec<String> = Vec::new();
    let mut gone_sets: Vec<String> = Vec::new();
    let mut declared: Vec<(&ServiceRuleset, BTreeSet<&str>)> = Vec::new();
    let mut gone_keys: Vec<&ProgrammedKeys> = Vec::new();
    let mut new_keys: Vec<&EndpointKeys> = Vec::new();
    let mut maps: BTreeSet<u32> = BTreeSet::new();
    let mut deltas: BTreeMap<Element, isize> = BTreeMap::new();
    let mut count = |e: &Element, by: isize| -> (usize, usize) {
        let before = counts.get(e).copied().unwrap_or(0) as isize;
        let delta = deltas.entry(e.clone()).or_insert(0);
        let old = before + *delta;
        *delta += by;
        (old.max(0) as usize, (old + by).max(0) as usize)
    };
    for c in changes {
        let (old, new) = (c.old.unwrap_or(&empty_old), c.new.unwrap_or(&empty_new));
        for e in &old.elements {
            if let (1, 0) = count(e, -1) {
                removed.push(e.clone());
            }
        }
        for e in &new.elements {
            if let (0, 1) = count(e, 1) {
                added.push(e.clone());
            }
        }
        let summary = new.summary();
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
        let changed: BTreeSet<&str> = summary
            .chains
            .iter()
            .filter(|c| !old.chains.contains(c))
            .filter_map(|(name, _)| new.chains.get_key_value(name).map(|(k, _)| k.as_str()))
            .collect();
        let new_sets: Vec<(String, u32)> = summary
            .affinity_sets
            .iter()
            .filter(|s| !old.affinity_sets.contains(s))
            .cloned()
            .collect();
        for (set, _) in &new_sets {
            ops::add_affinity_set(batch, t, set, v6, new.affinity_sets[set]);
        }
        gone_chains.extend(
            old.chains
                .iter()
                .filter(|(n, _)| !new.chains.contains_key(n))
                .map(|(n, _)| n.clone()),
        );
        gone_sets.extend(
            old.affinity_sets
                .iter()
                .filter(|(n, _)| !new.affinity_sets.contains_key(n))
                .map(|(n, _)| n.clone()),
        );
        declare_chains(
            batch,
            t,
            new.chains.keys().filter(|c| changed.contains(c.as_str())),
        );
        declared.push((new, changed));
    }
    // An element both removed and re-added (same key and value) needs nothing.
    let readded: BTreeSet<Element> = removed
        .iter()
        .filter(|e| added.contains(e))
        .cloned()
        .collect();
    removed.retain(|e| !readded.contains(e));
    added.retain(|e| !readded.contains(e));
    // Elements go before the chains they point to are deleted, and after new chains exist.
    let removed: Vec<&Element> = removed.iter().collect();
    add_elements(batch, t, false, &removed);
    // Keys are deleted before they are added again with new destinations.
    for k in gone_keys {
        ops::delete_endpoint_keys(batch, t, k);
    }
    for (r, changed) in &declared {
        fill_chains(batch, t, r, Some(changed));
    }
    let added: Vec<&Element> = added.iter().collect();
    add_elements(batch, t, true, &added);
    for k in new_keys {
        ops::add_endpoint_keys(batch, t, std::slice::from_ref(k));
    }
    delete_chains(batch, t, &gone_chains);
    for s in &gone_sets {
        ops::delete_set(batch, t, s);
    }
    CountChanges(deltas)
}
