//! portmap rules for nftables, all in table `inet cni_hostport`: nat hooks
//! send local destinations to the `hostports` chain, which holds one DNAT
//! rule per mapping; `masquerading` handles hairpin and localhost sources.
//! Rules carry the attachment's tag as comment so DEL finds them.

use std::net::IpAddr;

use super::config::PortMapConf;
use crate::netfilter::{chain_name, nft, nft_delete_matching, nft_list_chain};
use crate::types::{CniError, CniResult, ErrorCode};

const TABLE: &str = "cni_hostport";

fn tag(conf: &PortMapConf, container_id: &str) -> String {
    chain_name("portmap-", &conf.net.name, container_id)
}

fn base() -> String {
    format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} hostports\n\
         add chain inet {TABLE} prerouting {{ type nat hook prerouting priority -100; }}\n\
         add chain inet {TABLE} output {{ type nat hook output priority -100; }}\n\
         add chain inet {TABLE} masquerading {{ type nat hook postrouting priority 100; }}\n\
         flush chain inet {TABLE} prerouting\n\
         flush chain inet {TABLE} output\n\
         add rule inet {TABLE} prerouting fib daddr type local jump hostports\n\
         add rule inet {TABLE} output fib daddr type local jump hostports\n"
    )
}

fn rules(conf: &PortMapConf, container_id: &str, cip: IpAddr) -> String {
    let tag = tag(conf, container_id);
    let (fam, nfproto) = if cip.is_ipv6() {
        ("ip6", "ipv6")
    } else {
        ("ip", "ipv4")
    };
    let dest = if cip.is_ipv6() {
        format!("[{cip}]")
    } else {
        cip.to_string()
    };
    let mut out = String::new();
    for m in conf
        .mappings()
        .iter()
        .filter(|m| m.host_ip.is_none_or(|ip| ip.is_ipv6() == cip.is_ipv6()))
    {
        let daddr = m
            .host_ip
            .map(|ip| format!("{fam} daddr {ip} "))
            .unwrap_or_default();
        out.push_str(&format!(
            "add rule inet {TABLE} hostports meta nfproto {nfproto} {daddr}meta l4proto {p} th dport {hp} dnat {fam} to {dest}:{cp} comment \"{tag}\"\n",
            p = m.protocol.as_str(),
            hp = m.host_port,
            cp = m.container_port
        ));
    }
    if conf.snat && !out.is_empty() {
        out.push_str(&format!("add rule inet {TABLE} masquerading {fam} saddr {cip} {fam} daddr {cip} masquerade comment \"{tag}\"\n"));
        if !cip.is_ipv6() {
            out.push_str(&format!("add rule inet {TABLE} masquerading ip saddr 127.0.0.1 ip daddr {cip} masquerade comment \"{tag}\"\n"));
        }
    }
    out
}

pub fn add(conf: &PortMapConf, container_id: &str, ips: &[IpAddr]) -> CniResult<()> {
    let body: String = ips
        .iter()
        .map(|ip| rules(conf, container_id, *ip))
        .collect();
    if body.is_empty() {
        return Ok(());
    }
    del(conf, container_id)?;
    nft(&(base() + &body))
}

pub fn del(conf: &PortMapConf, container_id: &str) -> CniResult<()> {
    let needle = format!("comment \"{}\"", tag(conf, container_id));
    nft_delete_matching("inet", TABLE, "hostports", &needle)?;
    nft_delete_matching("inet", TABLE, "masquerading", &needle)
}

pub fn check(conf: &PortMapConf, container_id: &str, ips: &[IpAddr]) -> CniResult<()> {
    let listing = nft_list_chain("inet", TABLE, "hostports").unwrap_or_default();
    let tag = tag(conf, container_id);
    for ip in ips {
        for m in conf
            .mappings()
            .iter()
            .filter(|m| m.host_ip.is_none_or(|h| h.is_ipv6() == ip.is_ipv6()))
        {
            let found = listing
                .lines()
                .any(|l| l.contains(&tag) && l.contains(&format!("dport {} ", m.host_port)));
            if !found {
                return Err(CniError::new(
                    ErrorCode::Internal,
                    format!("DNAT rule for host port {} is missing", m.host_port),
                ));
            }
        }
    }
    Ok(())
}
