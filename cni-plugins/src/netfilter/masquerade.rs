//! Source NAT for traffic leaving a container network (bridge `ipMasq`).
//!
//! iptables: a per-attachment chain in `nat` that accepts traffic to the
//! container's own subnet and masquerades the rest (but not multicast), with
//! a POSTROUTING jump per container address.
//! nftables: one rule per container address in `inet cni_plugins_masquerade`,
//! tagged with the attachment's chain name as comment.

use ipnet::IpNet;

use super::{
    Backend, chain_name, comment, iptables, iptables_delete_matching, iptables_remove_chain, nft,
    nft_delete_matching,
};
use crate::types::CniResult;

const NFT_TABLE: &str = "cni_plugins_masquerade";
const NFT_CHAIN: &str = "postrouting";

fn multicast(v6: bool) -> &'static str {
    if v6 { "ff00::/8" } else { "224.0.0.0/4" }
}

/// Installs masquerading for the container's addresses.
pub fn setup(
    backend: Backend,
    addrs: &[IpNet],
    network: &str,
    container_id: &str,
) -> CniResult<()> {
    let chain = chain_name("CNI-", network, container_id);
    let comment = comment(network, container_id);
    match backend {
        Backend::Iptables => {
            for addr in addrs {
                let v6 = addr.addr().is_ipv6();
                if !super::iptables_chain_exists(v6, "nat", &chain) {
                    iptables(v6, &["-t", "nat", "-N", &chain])?;
                }
                let subnet = addr.trunc().to_string();
                iptables(
                    v6,
                    &[
                        "-t",
                        "nat",
                        "-A",
                        &chain,
                        "-d",
                        &subnet,
                        "-m",
                        "comment",
                        "--comment",
                        &comment,
                        "-j",
                        "ACCEPT",
                    ],
                )?;
                iptables(
                    v6,
                    &[
                        "-t",
                        "nat",
                        "-A",
                        &chain,
                        "!",
                        "-d",
                        multicast(v6),
                        "-m",
                        "comment",
                        "--comment",
                        &comment,
                        "-j",
                        "MASQUERADE",
                    ],
                )?;
                let src = IpNet::from(addr.addr()).to_string();
                iptables(
                    v6,
                    &[
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-s",
                        &src,
                        "-m",
                        "comment",
                        "--comment",
                        &comment,
                        "-j",
                        &chain,
                    ],
                )?;
            }
            Ok(())
        }
        Backend::Nftables => {
            let mut script = format!(
                "add table inet {NFT_TABLE}\nadd chain inet {NFT_TABLE} {NFT_CHAIN} {{ type nat hook postrouting priority srcnat; }}\n"
            );
            for addr in addrs {
                let fam = if addr.addr().is_ipv6() { "ip6" } else { "ip" };
                script.push_str(&format!(
                    "add rule inet {NFT_TABLE} {NFT_CHAIN} {fam} saddr {} {fam} daddr != {} {fam} daddr != {} masquerade comment \"{chain}\"\n",
                    addr.addr(),
                    addr.trunc(),
                    multicast(addr.addr().is_ipv6())
                ));
            }
            nft(&script)
        }
    }
}

/// Removes whatever [`setup`] made for the attachment; missing rules are fine.
pub fn teardown(backend: Backend, network: &str, container_id: &str) -> CniResult<()> {
    let chain = chain_name("CNI-", network, container_id);
    match backend {
        Backend::Iptables => {
            for v6 in [false, true] {
                iptables_delete_matching(v6, "nat", "POSTROUTING", &format!("-j {chain}"))?;
                iptables_remove_chain(v6, "nat", &chain)?;
            }
            Ok(())
        }
        Backend::Nftables => nft_delete_matching(
            "inet",
            NFT_TABLE,
            NFT_CHAIN,
            &format!("comment \"{chain}\""),
        ),
    }
}
