//! The host side: the bridge, its ports, gateway addresses and forwarding.

use ipnet::IpNet;

use super::BridgeConf;
use crate::netlink::{EEXIST, Link, Netlink, errno};
use crate::sysctl;
use crate::types::{CniError, CniResult, ErrorCode, IpConfig};

pub(super) fn random_veth_name() -> CniResult<String> {
    let mut bytes = [0u8; 4];
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| CniError::io("cannot open /dev/urandom", e))?;
    std::io::Read::read_exact(&mut f, &mut bytes)
        .map_err(|e| CniError::io("cannot read /dev/urandom", e))?;
    Ok(format!(
        "veth{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Finds or creates the bridge and brings it into the configured state.
pub(super) fn ensure_bridge(nl: &Netlink, conf: &BridgeConf) -> CniResult<Link> {
    let existing = nl.link_by_name(&conf.bridge)?;
    let link = match existing {
        Some(link) => {
            if link.kind != Some(rtnetlink::packet_route::link::InfoKind::Bridge) {
                return Err(CniError::invalid_config(format!(
                    "field \"bridge\": {} exists and is not a bridge",
                    conf.bridge
                )));
            }
            if conf.vlan_filtering() && link.vlan_filtering != Some(true) {
                nl.set_vlan_filtering(&link)?;
            }
            link
        }
        None => {
            match nl.add_bridge(&conf.bridge, conf.mtu, conf.vlan_filtering()) {
                // Another ADD created it in the meantime.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                r => r?,
            }
            nl.link_by_name(&conf.bridge)?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::Internal,
                    format!("bridge {} vanished after creation", conf.bridge),
                )
            })?
        }
    };
    if conf.promisc_mode && !link.promisc {
        nl.set_promisc(link.index, true)?;
    }
    if !link.up {
        nl.set_up(link.index, true)?;
    }
    Ok(link)
}

/// Refuses container subnets of which the host already routes all or part
/// through another interface: the connected route of the bridge would not
/// win for those addresses. Broader routes (a 10.0.0.0/8 via a VPN) are fine.
pub(super) fn check_host_route_overlap(
    nl: &Netlink,
    ips: &[IpConfig],
    bridge: Option<u32>,
) -> CniResult<()> {
    for ip in ips {
        let subnet = ip.address.trunc();
        for route in nl.routes(subnet.addr().is_ipv4())? {
            if route.oif.is_none() || route.oif == bridge {
                continue;
            }
            if route.dst.prefix_len() >= subnet.prefix_len()
                && subnet.contains(&route.dst.network())
            {
                return Err(CniError::invalid_config(format!(
                    "field \"ipam\": subnet {subnet} overlaps host route {} on interface {}",
                    route.dst,
                    route.oif.unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// Puts each IP's gateway on the bridge (with the subnet's prefix).
pub(super) fn ensure_gateway_addresses(
    nl: &Netlink,
    bridge: &Link,
    ips: &[IpConfig],
    force: bool,
) -> CniResult<()> {
    let present = nl.addresses(bridge.index)?;
    for ip in ips {
        let Some(gw) = ip.gateway else { continue };
        let gw_net = IpNet::new(gw, ip.address.prefix_len())
            .map_err(|e| CniError::internal("bad gateway prefix", e))?;
        if present.contains(&gw_net) {
            continue;
        }
        for other in present
            .iter()
            .filter(|a| a.addr().is_ipv4() == gw.is_ipv4() && a.trunc() == gw_net.trunc())
        {
            if !force {
                return Err(CniError::invalid_config(format!(
                    "bridge {} already has an IP address {other} different from the gateway {gw_net}; set \"forceAddress\" to replace it",
                    bridge.name
                )));
            }
            nl.del_address(bridge.index, *other)?;
        }
        // The gateway is authoritative for its subnet: no DAD delay.
        match nl.add_address(bridge.index, gw_net, true) {
            Err(e) if errno(&e) == Some(EEXIST) => {}
            r => r?,
        }
    }
    Ok(())
}

pub(super) fn enable_forwarding(ips: &[IpConfig]) -> CniResult<()> {
    if ips.iter().any(|i| i.address.addr().is_ipv4()) {
        sysctl::set("net.ipv4.ip_forward", "1")?;
    }
    if ips.iter().any(|i| i.address.addr().is_ipv6()) {
        sysctl::set("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}

/// Attaches the host end to the bridge with the port options.
pub(super) fn configure_port(
    nl: &Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    port: u32,
) -> CniResult<()> {
    nl.set_controller(port, bridge.index)?;
    if conf.hairpin_mode {
        nl.set_hairpin(port, true)?;
    }
    if conf.vlan_filtering() {
        if !conf.preserve_default_vlan {
            nl.del_port_vlan(port, 1)?;
        }
        if conf.vlan != 0 {
            nl.add_port_vlan(port, conf.vlan, true)?;
        }
        for id in conf.trunk_ids()? {
            nl.add_port_vlan(port, id, false)?;
        }
    }
    nl.set_up(port, true)
}

/// Where the gateway addresses live: the bridge itself, or with an access
/// `vlan` a `<bridge>.<vlan>` veth whose peer is a port of that VLAN (the
/// bridge device itself only sees untagged VLAN 1 traffic).
pub(super) fn gateway_link(nl: &Netlink, conf: &BridgeConf, bridge: &Link) -> CniResult<Link> {
    if conf.vlan == 0 {
        return Ok(bridge.clone());
    }
    let name = format!("{}.{}", conf.bridge, conf.vlan);
    if name.len() > 15 {
        return Err(CniError::invalid_config(format!(
            "field \"bridge\": {name} (the gateway interface of vlan {}) is longer than 15 characters",
            conf.vlan
        )));
    }
    if let Some(link) = nl.link_by_name(&name)? {
        return Ok(link);
    }
    let peer = random_veth_name()?;
    let here = crate::netns::NetNs::current()?;
    match nl.add_veth(&name, &peer, &here, Some(bridge.mtu), None) {
        // A parallel ADD made it first.
        Err(e) if errno(&e) == Some(EEXIST) => {}
        r => r?,
    }
    let missing =
        |n: &str| CniError::new(ErrorCode::Internal, format!("{n} vanished after creation"));
    let port = nl.link_by_name(&peer)?.ok_or_else(|| missing(&peer))?;
    let gateway = nl.link_by_name(&name)?.ok_or_else(|| missing(&name))?;
    configure_port(nl, conf, bridge, port.index)?;
    nl.set_up(gateway.index, true)?;
    Ok(gateway)
}
