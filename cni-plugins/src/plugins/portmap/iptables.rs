//! portmap rules for iptables, in the reference plugin's chain layout:
//! PREROUTING/OUTPUT (local destinations) -> CNI-HOSTPORT-DNAT -> one
//! CNI-DN-<hash> chain per attachment doing the DNAT; hairpin and localhost
//! connections are marked in CNI-HOSTPORT-SETMARK and masqueraded by
//! CNI-HOSTPORT-MASQ from POSTROUTING.

use std::net::IpAddr;

use super::config::{PortMapConf, PortMapping};
use crate::netfilter::{
    chain_name, comment, iptables, iptables_remove_attachment_chain, iptables_restore,
};
use crate::types::{CniError, CniResult, ErrorCode};

const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";

fn dn_chain(conf: &PortMapConf, container_id: &str) -> String {
    chain_name("CNI-DN-", &conf.net.name, container_id)
}

fn host_prefix(ip: IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
}

/// Adds `spec` to `chain` unless it is there (as printed by -S) already.
fn ensure_rule(v6: bool, listing: &str, chain: &str, spec: &[&str]) -> CniResult<()> {
    if listing
        .lines()
        .any(|l| l == format!("-A {chain} {}", quote_args(spec)))
    {
        return Ok(());
    }
    let mut check = vec!["-t", "nat", "-C", chain];
    check.extend_from_slice(spec);
    if iptables(v6, &check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", "nat", "-A", chain];
    add.extend_from_slice(spec);
    iptables(v6, &add).map(|_| ())
}

/// Renders arguments the way `iptables -S` prints them.
fn quote_args(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') || a.contains('"') {
                format!("\"{}\"", a.replace('"', "\\\""))
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chains and jumps shared by all attachments.
fn ensure_top_level(conf: &PortMapConf, v6: bool) -> CniResult<()> {
    let listing = iptables(v6, &["-t", "nat", "-S"])?;
    let has_chain = |c: &str| listing.lines().any(|l| l == format!("-N {c}"));
    let mark = format!("{:#x}/{:#x}", conf.mark(), conf.mark());
    for chain in [DNAT_CHAIN, SETMARK_CHAIN, MASQ_CHAIN] {
        if chain == SETMARK_CHAIN && conf.external_set_mark_chain.is_some() {
            continue;
        }
        if !has_chain(chain) {
            // Another plugin may have created it since the listing.
            let _ = iptables(v6, &["-t", "nat", "-N", chain]);
        }
    }
    if conf.external_set_mark_chain.is_none() {
        ensure_rule(
            v6,
            &listing,
            SETMARK_CHAIN,
            &[
                "-m",
                "comment",
                "--comment",
                "CNI portfwd masquerade mark",
                "-j",
                "MARK",
                "--set-xmark",
                &mark,
            ],
        )?;
    }
    ensure_rule(
        v6,
        &listing,
        MASQ_CHAIN,
        &[
            "-m",
            "comment",
            "--comment",
            MASQ_COMMENT,
            "-m",
            "mark",
            "--mark",
            &mark,
            "-j",
            "MASQUERADE",
        ],
    )?;
    ensure_rule(
        v6,
        &listing,
        "POSTROUTING",
        &["-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN],
    )?;
    let conditions = if v6 {
        &conf.conditions_v6
    } else {
        &conf.conditions_v4
    };
    let mut jump: Vec<&str> = conditions
        .iter()
        .flat_map(|c| c.split_whitespace())
        .collect();
    jump.extend_from_slice(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN]);
    ensure_rule(v6, &listing, "PREROUTING", &jump)?;
    ensure_rule(v6, &listing, "OUTPUT", &jump)?;
    Ok(())
}

fn mappings_for(conf: &PortMapConf, v6: bool) -> Vec<&PortMapping> {
    conf.mappings()
        .iter()
        .filter(|m| m.host_ip.is_none_or(|ip| ip.is_ipv6() == v6))
        .collect()
}

/// The iptables-restore input for one attachment in one family.
fn attachment_rules(conf: &PortMapConf, container_id: &str, cip: IpAddr) -> String {
    let v6 = cip.is_ipv6();
    let chain = dn_chain(conf, container_id);
    let comment = quote_args(&[&comment(&conf.net.name, container_id)]);
    let setmark = conf
        .external_set_mark_chain
        .clone()
        .unwrap_or_else(|| SETMARK_CHAIN.to_string());
    let mut out = format!("*nat\n:{chain} - [0:0]\n");
    let mappings = mappings_for(conf, v6);
    let mut protocols: Vec<_> = mappings.iter().map(|m| m.protocol).collect();
    protocols.dedup();
    for proto in protocols {
        let ports: Vec<String> = mappings
            .iter()
            .filter(|m| m.protocol == proto)
            .map(|m| m.host_port.to_string())
            .collect();
        for group in ports.chunks(15) {
            out.push_str(&format!(
                "-A {DNAT_CHAIN} -p {p} -m comment --comment {comment} -m multiport --dports {} -j {chain}\n",
                group.join(","),
                p = proto.as_str()
            ));
        }
    }
    let dest = if v6 {
        format!("[{cip}]")
    } else {
        cip.to_string()
    };
    for m in mappings {
        let p = m.protocol.as_str();
        let daddr = m
            .host_ip
            .map(|ip| format!(" -d {}", host_prefix(ip)))
            .unwrap_or_default();
        let mat = format!("-p {p}{daddr} -m {p} --dport {}", m.host_port);
        if conf.snat {
            out.push_str(&format!(
                "-A {chain} -s {} {mat} -j {setmark}\n",
                host_prefix(cip)
            ));
            if !v6 {
                out.push_str(&format!("-A {chain} -s 127.0.0.1/32 {mat} -j {setmark}\n"));
            }
        }
        out.push_str(&format!(
            "-A {chain} {mat} -j DNAT --to-destination {dest}:{}\n",
            m.container_port
        ));
    }
    out.push_str("COMMIT\n");
    out
}

pub fn add(conf: &PortMapConf, container_id: &str, cip: IpAddr) -> CniResult<()> {
    let v6 = cip.is_ipv6();
    if mappings_for(conf, v6).is_empty() {
        return Ok(());
    }
    ensure_top_level(conf, v6)?;
    // A retried ADD replaces what an earlier attempt made.
    del(conf, container_id, v6)?;
    iptables_restore(v6, &attachment_rules(conf, container_id, cip))
}

pub fn del(conf: &PortMapConf, container_id: &str, v6: bool) -> CniResult<()> {
    let chain = dn_chain(conf, container_id);
    iptables_remove_attachment_chain(v6, "nat", &[DNAT_CHAIN], &chain)
}

pub fn check(conf: &PortMapConf, container_id: &str, cip: IpAddr) -> CniResult<()> {
    let v6 = cip.is_ipv6();
    let mappings = mappings_for(conf, v6);
    if mappings.is_empty() {
        return Ok(());
    }
    let chain = dn_chain(conf, container_id);
    let listing = iptables(v6, &["-t", "nat", "-S", &chain]).map_err(|e| {
        CniError::new(
            ErrorCode::Internal,
            format!("portmap chain {chain} is missing"),
        )
        .with_details(e)
    })?;
    let dest = if v6 {
        format!("[{cip}]")
    } else {
        cip.to_string()
    };
    for m in mappings {
        if !listing.lines().any(|l| {
            l.contains(&format!("--dport {} ", m.host_port))
                && l.ends_with(&format!("--to-destination {dest}:{}", m.container_port))
        }) {
            return Err(CniError::new(
                ErrorCode::Internal,
                format!(
                    "DNAT rule for host port {} is missing from {chain}",
                    m.host_port
                ),
            ));
        }
    }
    Ok(())
}
