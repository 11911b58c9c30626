//! `macspoofchk`: drops frames entering the bridge from the container's
//! veth whose source MAC is not the container interface's.

use crate::netfilter::{chain_name, nft, nft_delete_matching};
use crate::types::CniResult;

const TABLE: &str = "cni_plugins_macspoofchk";
const CHAIN: &str = "prerouting";

pub fn setup(network: &str, container_id: &str, host_veth: &str, mac: &str) -> CniResult<()> {
    let tag = chain_name("macspoofchk-", network, container_id);
    nft(&format!(
        "add table bridge {TABLE}\n\
         add chain bridge {TABLE} {CHAIN} {{ type filter hook prerouting priority -300; }}\n\
         add rule bridge {TABLE} {CHAIN} iifname \"{host_veth}\" ether saddr != {mac} drop comment \"{tag}\"\n"
    ))
}

pub fn teardown(network: &str, container_id: &str) -> CniResult<()> {
    let tag = chain_name("macspoofchk-", network, container_id);
    nft_delete_matching("bridge", TABLE, CHAIN, &format!("comment \"{tag}\""))
}
