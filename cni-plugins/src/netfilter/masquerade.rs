//! Source NAT for traffic leaving a container network (bridge `ipMasq`).
//!
//! iptables: a per-attachment chain in `nat` that accepts traffic to the
//! container's own subnet and masquerades the rest (but not multicast), with
//! a POSTROUTING jump per container address.
//! nftables: one rule per container address in `inet cni_plugins_masquerade`,
//! tagged with the attachment's chain name as comment.

use ipnet::IpNet;

use super::{
    Backend, chain_name, comment, iptables_remove_attachment_chain, iptables_restore, nft,
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
    match backend {
        Backend::Iptables => {
            for v6 in [false, true] {
                let family: Vec<&IpNet> =
                    addrs.iter().filter(|a| a.addr().is_ipv6() == v6).collect();
                if family.is_empty() {
                    continue;
                }
                let comment = format!(
                    "\"{}\"",
                    comment(network, container_id).replace('"', "\\\"")
                );
                let mut script = format!("*nat\n:{chain} - [0:0]\n");
                for addr in &family {
                    script.push_str(&format!(
                        "-A {chain} -d {} -m comment --comment {comment} -j ACCEPT\n",
                        addr.trunc()
                    ));
                }
                script.push_str(&format!(
                    "-A {chain} ! -d {} -m comment --comment {comment} -j MASQUERADE\n",
                    multicast(v6)
                ));
                for addr in &family {
                    script.push_str(&format!(
                        "-A POSTROUTING -s {} -m comment --comment {comment} -j {chain}\n",
                        IpNet::from(addr.addr())
                    ));
                }
                script.push_str("COMMIT\n");
                iptables_restore(v6, &script)?;
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

/// Removes whatever [`setup`] made for the attachment; missing rules are
/// fine. `families` limits the iptables work to (v4, v6) when known.
pub fn teardown(
    backend: Backend,
    network: &str,
    container_id: &str,
    families: (bool, bool),
) -> CniResult<()> {
    let chain = chain_name("CNI-", network, container_id);
    match backend {
        Backend::Iptables => {
            for (v6, wanted) in [(false, families.0), (true, families.1)] {
                if wanted {
                    iptables_remove_attachment_chain(v6, "nat", &["POSTROUTING"], &chain)?;
                }
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
