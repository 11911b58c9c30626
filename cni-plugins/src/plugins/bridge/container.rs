//! The container side: addresses, routes and announcements.

use super::{BridgeConf, Sides};
use crate::skel::CmdArgs;
use crate::types::{CniOutput, CniResult, IpConfig, Route};
use crate::{arp, sysctl};

/// Addresses, routes and link state inside the container.
pub(super) fn configure_container(
    sides: &Sides,
    conf: &BridgeConf,
    args: &CmdArgs,
    ifindex: u32,
    out: &CniOutput,
) -> CniResult<()> {
    if conf.disable_container_interface {
        return Ok(());
    }
    let nl = &sides.container;
    {
        let _in = sides.ns.enter()?;
        if out.ips.iter().any(|i| i.address.addr().is_ipv6()) && !conf.enable_dad {
            // DAD would keep the addresses unusable for seconds; IPAM already
            // guarantees they are unique on the bridge.
            sysctl::set(&sysctl::iface_key("ipv6", &args.ifname, "accept_dad"), "0")?;
        }
    }
    for ip in &out.ips {
        nl.add_address(ifindex, ip.address, !conf.enable_dad)?;
    }
    nl.set_up(ifindex, true)?;
    for route in &out.routes {
        let gw = route.gw.or_else(|| {
            out.ips
                .iter()
                .find(|i| i.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
                .and_then(|i| i.gateway)
        });
        nl.add_route(route.dst, gw, ifindex)?;
    }
    let v4: Vec<std::net::Ipv4Addr> = out
        .ips
        .iter()
        .filter_map(|i| {
            if let std::net::IpAddr::V4(a) = i.address.addr() {
                Some(a)
            } else {
                None
            }
        })
        .collect();
    let mac = nl
        .link_by_index(ifindex)?
        .and_then(|l| crate::netlink::parse_mac(&l.mac))
        .and_then(|m| <[u8; 6]>::try_from(m).ok());
    if let (Some(mac), false) = (mac, v4.is_empty()) {
        arp::announce_detached(&sides.ns, ifindex, mac, v4)?;
    }
    Ok(())
}

pub(super) fn default_routes(ips: &[IpConfig]) -> Vec<Route> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        if let Some(gw) = ips
            .iter()
            .filter(|i| i.address.addr().is_ipv4() == v4)
            .find_map(|i| i.gateway)
        {
            let dst = if v4 { "0.0.0.0/0" } else { "::/0" };
            if let Ok(dst) = dst.parse() {
                out.push(Route::new(dst, Some(gw)));
            }
        }
    }
    out
}
