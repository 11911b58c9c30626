//! What the proxy remembers of the rules it applied, between syncs.
//!
//! At 10,000 Services the rule text of every Service chain is tens of megabytes, yet a
//! partial sync only needs to know whether a chain changed: so each chain is kept as
//! its name and a hash of its rules, and the text is generated again for the Service
//! ports a sync looks at. Rules in the shared chains are kept as text, since removing
//! one (`-D`) takes its exact text; there are one or two per Service port.

use super::rules::{ServiceRules, SharedRule};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The longest chain name iptables accepts (XT_EXTENSION_MAXNAMELEN without its NUL).
const CHAIN_NAME_MAX: usize = 28;

/// A chain name stored inline: no allocation per chain for the ~100,000 of a large cluster.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainName([u8; CHAIN_NAME_MAX]);

impl ChainName {
    /// None for a name iptables would not accept (too long, or with a NUL).
    pub fn new(name: &str) -> Option<ChainName> {
        if name.len() > CHAIN_NAME_MAX || name.contains('\0') {
            return None;
        }
        // Zero padding keeps the order of the names as strings.
        let mut bytes = [0; CHAIN_NAME_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(ChainName(bytes))
    }

    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(CHAIN_NAME_MAX);
        // Built from a &str cut at a char boundary (the NUL padding), so always UTF-8.
        std::str::from_utf8(&self.0[..len]).unwrap_or_default()
    }
}

impl std::fmt::Display for ChainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ChainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A 64-bit hash of a chain's rules. Only compared within one process, against the hash
/// of the same chain's rules at the last sync: a change goes unnoticed only when both
/// hashes collide (odds 2^-64 per changed chain), and the next full rewrite repairs it.
pub fn chain_hash(rules: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    rules.hash(&mut h);
    h.finish()
}

/// The applied rules of one Service port, in compact form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgrammedRules {
    pub shared: Box<[SharedRule]>,
    /// Its own chains and the hashes of their rules, sorted by name.
    chains: Box<[(ChainName, u64)]>,
    rules: usize,
}

impl ProgrammedRules {
    /// The hash of `chain`'s rules, if the port has that chain.
    pub fn chain(&self, chain: &ChainName) -> Option<u64> {
        self.chains
            .binary_search_by(|(c, _)| c.cmp(chain))
            .ok()
            .map(|i| self.chains[i].1)
    }

    pub fn chain_names(&self) -> impl Iterator<Item = &ChainName> {
        self.chains.iter().map(|(c, _)| c)
    }

    pub fn rule_count(&self) -> usize {
        self.rules
    }
}

impl From<&ServiceRules> for ProgrammedRules {
    fn from(rules: &ServiceRules) -> Self {
        ProgrammedRules {
            shared: rules.shared.clone().into_boxed_slice(),
            // A BTreeMap iterates in name order, and ChainName keeps that order.
            chains: rules
                .chains
                .iter()
                .map(|(name, body)| (name_of(name), chain_hash(body)))
                .collect(),
            rules: rules.rule_count(),
        }
    }
}

/// Our own chain names are KUBE-XXX- and 16 characters of a hash: they always fit.
pub fn name_of(chain: &str) -> ChainName {
    ChainName::new(chain).unwrap_or_else(|| unreachable!("generated chain name {chain:?} fits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_keep_their_text_and_order() {
        let names = [
            "KUBE-SEP-AAAA",
            "KUBE-SEP-AAAAB",
            "KUBE-SVC-0123456789ABCDEF",
        ];
        let compact: Vec<ChainName> = names.iter().filter_map(|n| ChainName::new(n)).collect();
        assert_eq!(
            compact.iter().map(ChainName::as_str).collect::<Vec<_>>(),
            names
        );
        assert!(compact.windows(2).all(|w| w[0] < w[1]));
        assert!(ChainName::new(&"K".repeat(29)).is_none(), "too long");
        assert!(ChainName::new(&"K".repeat(28)).is_some());
    }

    #[test]
    fn the_hash_tells_rule_lists_apart() {
        let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(chain_hash(&rules(&["-j A"])), chain_hash(&rules(&["-j A"])));
        assert_ne!(
            chain_hash(&rules(&["-j A", "-j B"])),
            chain_hash(&rules(&["-j B", "-j A"]))
        );
        assert_ne!(
            chain_hash(&rules(&["-j A-j B"])),
            chain_hash(&rules(&["-j A", "-j B"]))
        );
    }
}
