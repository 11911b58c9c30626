//! CHECK: the bridge, the veth attached to it, and the container's
//! interface, addresses and routes as prevResult describes them.

use super::{BridgeConf, Sides};
use crate::skel::CmdArgs;
use crate::types::{CniError, CniOutput, CniResult, ErrorCode};

/// Verifies that what ADD made (as told by prevResult) is still in place.
pub(super) fn attachment(args: &CmdArgs, conf: &BridgeConf) -> CniResult<()> {
    let prev = conf
        .net
        .prev_result
        .clone()
        .ok_or_else(|| CniError::invalid_config("field \"prevResult\" is required for CHECK"))
        .and_then(CniOutput::from_value)?;
    let sides = Sides::open(&args.netns)?;
    let bridge = sides.host.link_by_name(&conf.bridge)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::Internal,
            format!("bridge {} does not exist", conf.bridge),
        )
    })?;
    let container = sides.container.link_by_name(&args.ifname)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::Internal,
            format!("container interface {} does not exist", args.ifname),
        )
    })?;
    let expected = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && i.sandbox == args.netns)
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "field \"prevResult.interfaces\": no entry for {} in {}",
                args.ifname, args.netns
            ))
        })?;
    let want = &prev.interfaces[expected];
    if !want.mac.is_empty() && !want.mac.eq_ignore_ascii_case(&container.mac) {
        return Err(CniError::new(
            ErrorCode::Internal,
            format!(
                "interface {} has MAC {}, expected {}",
                args.ifname, container.mac, want.mac
            ),
        ));
    }
    let host_peer = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name != conf.bridge)
        .and_then(|i| sides.host.link_by_name(&i.name).ok().flatten());
    match host_peer {
        Some(peer) if peer.controller == Some(bridge.index) => {}
        _ => {
            return Err(CniError::new(
                ErrorCode::Internal,
                format!(
                    "host end of {} is not attached to bridge {}",
                    args.ifname, conf.bridge
                ),
            ));
        }
    }
    let present = sides.container.addresses(container.index)?;
    for ip in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|n| n == expected))
    {
        if !present.contains(&ip.address) {
            return Err(CniError::new(
                ErrorCode::Internal,
                format!("address {} is missing on {}", ip.address, args.ifname),
            ));
        }
    }
    for route in &prev.routes {
        let routes = sides.container.routes(route.dst.addr().is_ipv4())?;
        if !routes
            .iter()
            .any(|r| r.dst == route.dst && (route.gw.is_none() || r.gateway == route.gw))
        {
            return Err(CniError::new(
                ErrorCode::Internal,
                format!("route to {} is missing in the container", route.dst),
            ));
        }
    }
    Ok(())
}
