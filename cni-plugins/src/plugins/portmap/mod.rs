//! The `portmap` plugin: forwards host ports to the container
//! (`portMappings` capability) with DNAT, masquerading hairpin and
//! localhost connections.

mod config;
mod iptables;
mod nftables;

use std::net::IpAddr;

pub use config::{PortMapConf, PortMapping, Protocol};

use crate::netfilter::{Backend, conntrack};
use crate::netlink::Netlink;
use crate::skel::{CmdArgs, Plugin};
use crate::sysctl;
use crate::types::{CniError, CniOutput, CniResult};

pub struct PortMap;

fn addresses(conf: &PortMapConf) -> CniResult<Vec<IpAddr>> {
    let (v4, v6) = conf.container_ips()?;
    Ok(v4.into_iter().chain(v6).collect())
}

/// Lets connections to 127.0.0.1:hostPort be routed out of the interface
/// that leads to the container (the kernel drops 127/8 sources otherwise).
fn enable_localnet_routing(cip: IpAddr) -> CniResult<()> {
    let nl = Netlink::current()?;
    let Some(oif) = nl
        .routes(true)?
        .into_iter()
        .filter(|r| r.dst.contains(&cip) && r.oif.is_some())
        .max_by_key(|r| r.dst.prefix_len())
        .and_then(|r| r.oif)
    else {
        return Ok(());
    };
    if let Some(link) = nl.link_by_index(oif)? {
        sysctl::set(
            &sysctl::iface_key("ipv4", &link.name, "route_localnet"),
            "1",
        )?;
    }
    Ok(())
}

/// Once the DNAT rules are in place, drops the UDP flows already tracked
/// towards the mapped host ports, so their packets meet the new rules instead
/// of following an old entry (to nowhere or to a previous pod). Like the
/// reference plugin, a failure here is only reported: the mapping works for
/// every new flow.
fn delete_stale_udp_flows(conf: &PortMapConf, ips: &[IpAddr]) {
    for mapping in conf
        .mappings()
        .iter()
        .filter(|m| m.protocol == Protocol::Udp)
    {
        for v6 in [false, true] {
            if !ips.iter().any(|ip| ip.is_ipv6() == v6) {
                continue;
            }
            if let Err(e) = conntrack::delete_udp_to_port(v6, mapping.host_port) {
                eprintln!(
                    "portmap: cannot delete stale UDP conntrack entries for host port {}: {e}",
                    mapping.host_port
                );
            }
        }
    }
}

impl Plugin for PortMap {
    fn add(&self, args: &CmdArgs) -> CniResult<CniOutput> {
        let conf = PortMapConf::parse(&args.stdin)?;
        let prev = conf.net.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "field \"prevResult\": portmap must be called as a chained plugin",
            )
        })?;
        let out = CniOutput::from_value(prev)?;
        if conf.mappings().is_empty() {
            return Ok(out);
        }
        let ips = addresses(&conf)?;
        let result = (|| {
            match conf.backend() {
                Backend::Iptables => {
                    for ip in &ips {
                        iptables::add(&conf, &args.container_id, *ip)?;
                    }
                }
                Backend::Nftables => nftables::add(&conf, &args.container_id, &ips)?,
            }
            if conf.snat {
                for ip in ips.iter().filter(|ip| ip.is_ipv4()) {
                    enable_localnet_routing(*ip)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.remove(&conf, &args.container_id);
            return Err(e);
        }
        delete_stale_udp_flows(&conf, &ips);
        Ok(out)
    }

    fn del(&self, args: &CmdArgs) -> CniResult<()> {
        let conf = PortMapConf::parse(&args.stdin)?;
        self.remove(&conf, &args.container_id)
    }

    fn check(&self, args: &CmdArgs) -> CniResult<()> {
        let conf = PortMapConf::parse(&args.stdin)?;
        if conf.mappings().is_empty() {
            return Ok(());
        }
        let ips = addresses(&conf)?;
        match conf.backend() {
            Backend::Iptables => ips
                .iter()
                .try_for_each(|ip| iptables::check(&conf, &args.container_id, *ip)),
            Backend::Nftables => nftables::check(&conf, &args.container_id, &ips),
        }
    }
}

impl PortMap {
    /// Removes every rule made for the attachment; needs no prevResult, so
    /// DEL works after a restart lost the cached result.
    fn remove(&self, conf: &PortMapConf, container_id: &str) -> CniResult<()> {
        match conf.backend() {
            Backend::Iptables => {
                // Only the families of the cached result, both without one.
                let (v4, v6) = match conf.container_ips() {
                    Ok((None, None)) | Err(_) => (true, true),
                    Ok((v4, v6)) => (v4.is_some(), v6.is_some()),
                };
                if v4 {
                    iptables::del(conf, container_id, false)?;
                }
                if v6 {
                    iptables::del(conf, container_id, true)?;
                }
                Ok(())
            }
            Backend::Nftables => nftables::del(conf, container_id),
        }
    }
}
