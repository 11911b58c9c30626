//! The ipsets of IPVS mode, named and typed as upstream's, kept equal to the plan by
//! `ipset restore` inputs that add and delete only the difference (upstream execs
//! the ipset binary too; there is no stable library interface to the kernel's sets).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
}

impl SetType {
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
pub const NODE_PORT_SCTP: &str = "KUBE-NODE-PORT-SCTP-HASH";
pub const NODE_PORT_LOCAL_SCTP: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";

/// Every set: base name, type, the comment its iptables rules carry.
pub const SETS: &[(&str, SetType, &str)] = &[
    (
        LOOP_BACK,
        SetType::HashIpPortIp,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        CLUSTER_IP,
        SetType::HashIpPort,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        EXTERNAL_IP,
        SetType::HashIpPort,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        EXTERNAL_IP_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (
        LOAD_BALANCER,
        SetType::HashIpPort,
        "Kubernetes service lb portal",
    ),
    (
        LOAD_BALANCER_FW,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        LOAD_BALANCER_LOCAL,
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        LOAD_BALANCER_SOURCE_IP,
        SetType::HashIpPortIp,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        LOAD_BALANCER_SOURCE_CIDR,
        SetType::HashIpPortNet,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (
        NODE_PORT_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        NODE_PORT_LOCAL_TCP,
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        NODE_PORT_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        NODE_PORT_LOCAL_UDP,
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        NODE_PORT_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        NODE_PORT_LOCAL_SCTP,
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (
        HEALTH_CHECK_NODE_PORT,
        SetType::BitmapPort,
        "Kubernetes health check node port",
    ),
    (IPVS_IPS, SetType::HashIp, "Addresses on the ipvs interface"),
];

/// The comment of set `base`.
pub fn comment(base: &str) -> &'static str {
    SETS.iter()
        .find(|(n, _, _)| *n == base)
        .map(|(_, _, c)| *c)
        .unwrap_or("")
}

/// The kernel name of set `base` for a family: IPv6 sets are "KUBE-6-…", cut to the
/// 31 characters ipset allows, as upstream names them.
pub fn set_name(base: &str, v6: bool) -> String {
    if !v6 {
        return base.to_string();
    }
    let mut name = base.replacen("KUBE-", "KUBE-6-", 1);
    name.truncate(31);
    name
}

/// Set contents by base name.
pub type SetContents = BTreeMap<&'static str, BTreeSet<String>>;

/// `ipset restore` input turning `current` into `wanted` for one family: every set is
/// declared (-exist), stale members deleted, missing ones added.
pub fn restore_input(v6: bool, current: &SetContents, wanted: &SetContents) -> String {
    let family = if v6 { "inet6" } else { "inet" };
    let empty = BTreeSet::new();
    let mut out = String::new();
    for (base, ty, _) in SETS {
        let name = set_name(base, v6);
        let opts = match ty {
            SetType::BitmapPort => "range 0-65535".to_string(),
            _ => format!("family {family} hashsize 1024 maxelem 65536"),
        };
        out.push_str(&format!("create {name} {} {opts} -exist\n", ty.name()));
        let have = current.get(base).unwrap_or(&empty);
        let want = wanted.get(base).unwrap_or(&empty);
        for stale in have.difference(want) {
            out.push_str(&format!("del {name} {stale} -exist\n"));
        }
        for new in want.difference(have) {
            out.push_str(&format!("add {name} {new} -exist\n"));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error("running ipset {verb}: {source}")]
    Spawn {
        verb: &'static str,
        source: std::io::Error,
    },
    #[error("ipset {verb} failed: {stderr}")]
    Failed { verb: &'static str, stderr: String },
}

fn ipset(verb: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, IpsetError> {
    let out = crate::command::run_with_input("ipset", args, stdin)
        .map_err(|source| IpsetError::Spawn { verb, source })?;
    if !out.status.success() {
        return Err(IpsetError::Failed {
            verb,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn restore(input: &str) -> Result<(), IpsetError> {
    ipset("restore", &["restore"], Some(input)).map(|_| ())
}

/// Members of our sets of one family as the kernel has them (`ipset save`).
pub fn read(v6: bool) -> Result<SetContents, IpsetError> {
    let names: BTreeMap<String, &'static str> =
        SETS.iter().map(|(b, _, _)| (set_name(b, v6), *b)).collect();
    let text = ipset("save", &["save"], None)?;
    let mut out = SetContents::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") {
            continue;
        }
        let (Some(name), Some(entry)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(base) = names.get(name) {
            out.entry(base).or_default().insert(entry.to_string());
        }
    }
    Ok(out)
}

/// Destroys our sets of both families; absent ones are fine. Must follow the removal
/// of the iptables rules that reference them.
pub fn destroy_all() -> Result<(), IpsetError> {
    let existing = ipset("list", &["list", "-n"], None)?;
    let existing: BTreeSet<&str> = existing.lines().map(str::trim).collect();
    let mut input = String::new();
    for v6 in [false, true] {
        for (base, _, _) in SETS {
            let name = set_name(base, v6);
            if existing.contains(name.as_str()) {
                input.push_str(&format!("destroy {name}\n"));
            }
        }
    }
    if input.is_empty() {
        return Ok(());
    }
    restore(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_names_are_prefixed_and_cut_to_31() {
        assert_eq!(set_name(CLUSTER_IP, false), "KUBE-CLUSTER-IP");
        assert_eq!(set_name(CLUSTER_IP, true), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            set_name(LOAD_BALANCER_SOURCE_CIDR, true),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert!(SETS.iter().all(|(b, _, _)| set_name(b, true).len() <= 31));
    }

    #[test]
    fn restore_input_carries_only_the_difference() {
        let current: SetContents = [(CLUSTER_IP, ["10.96.0.1,tcp:443", "10.96.0.9,tcp:80"])]
            .into_iter()
            .map(|(k, v)| (k, v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let wanted: SetContents = [(CLUSTER_IP, ["10.96.0.1,tcp:443", "10.96.0.10,tcp:53"])]
            .into_iter()
            .map(|(k, v)| (k, v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let input = restore_input(false, &current, &wanted);
        assert!(input.contains(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             del KUBE-CLUSTER-IP 10.96.0.9,tcp:80 -exist\n\
             add KUBE-CLUSTER-IP 10.96.0.10,tcp:53 -exist\n"
        ));
        assert!(!input.contains("10.96.0.1,tcp:443"));
        assert!(input.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist\n"));
        assert_eq!(input.lines().count(), SETS.len() + 2);
    }
}
