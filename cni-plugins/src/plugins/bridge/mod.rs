//! The `bridge` plugin: a Linux bridge on the host side, a veth pair into
//! the container, addresses from the IPAM plugin.

mod config;
mod spoofcheck;

use ipnet::IpNet;

pub use config::BridgeConf;

use crate::netfilter::masquerade;
use crate::netlink::{EEXIST, Link, Netlink, errno};
use crate::netns::NetNs;
use crate::skel::{CmdArgs, Command, Plugin};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode, Interface, IpConfig, Route};
use crate::{arp, ipam, sysctl};

pub struct Bridge;

/// Handles on both sides of the attachment.
struct Sides {
    ns: NetNs,
    host: Netlink,
    container: Netlink,
}

impl Sides {
    fn open(netns: &str) -> CniResult<Self> {
        let ns = NetNs::open(netns)?;
        let container = Netlink::in_netns(&ns)?;
        Ok(Sides {
            ns,
            host: Netlink::current()?,
            container,
        })
    }
}

fn random_veth_name() -> CniResult<String> {
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
fn ensure_bridge(nl: &Netlink, conf: &BridgeConf) -> CniResult<Link> {
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
fn check_host_route_overlap(nl: &Netlink, ips: &[IpConfig], bridge: Option<u32>) -> CniResult<()> {
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
fn ensure_gateway_addresses(
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
        match nl.add_address(bridge.index, gw_net, false) {
            Err(e) if errno(&e) == Some(EEXIST) => {}
            r => r?,
        }
    }
    Ok(())
}

fn enable_forwarding(ips: &[IpConfig]) -> CniResult<()> {
    if ips.iter().any(|i| i.address.addr().is_ipv4()) {
        sysctl::set("net.ipv4.ip_forward", "1")?;
    }
    if ips.iter().any(|i| i.address.addr().is_ipv6()) {
        sysctl::set("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}

/// Attaches the host end to the bridge with the port options.
fn configure_port(nl: &Netlink, conf: &BridgeConf, bridge: &Link, port: u32) -> CniResult<()> {
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

/// Addresses, routes and link state inside the container.
fn configure_container(
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
        nl.add_address(ifindex, ip.address, false)?;
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

/// Address families of the cached result (both when there is none), so DEL
/// touches only the netfilter families ADD used.
fn prev_families(conf: &BridgeConf) -> (bool, bool) {
    match conf.net.prev_result.clone().map(CniOutput::from_value) {
        Some(Ok(prev)) if !prev.ips.is_empty() => (
            prev.ips.iter().any(|i| i.address.addr().is_ipv4()),
            prev.ips.iter().any(|i| i.address.addr().is_ipv6()),
        ),
        _ => (true, true),
    }
}

fn default_routes(ips: &[IpConfig]) -> Vec<Route> {
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

/// The veth made for an attachment, attached to its bridge.
struct Port {
    bridge: Link,
    host: Link,
    container: Link,
}

impl Bridge {
    /// Creates the bridge (if needed) and the veth pair; removes its own
    /// veth again if a later step fails.
    fn make_port(
        &self,
        args: &CmdArgs,
        conf: &BridgeConf,
        sides: &Sides,
        mac: Option<&[u8]>,
    ) -> CniResult<Port> {
        let bridge = ensure_bridge(&sides.host, conf)?;
        let veth_name = random_veth_name()?;
        sides.host.add_veth(
            &veth_name,
            &args.ifname,
            &sides.ns,
            conf.mtu.or(Some(bridge.mtu)),
            mac,
        )?;
        let made = (|| {
            let host = sides.host.link_by_name(&veth_name)?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::Internal,
                    format!("veth {veth_name} vanished after creation"),
                )
            })?;
            configure_port(&sides.host, conf, &bridge, host.index)?;
            let container = sides.container.link_by_name(&args.ifname)?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::Internal,
                    format!("{} did not appear in the container", args.ifname),
                )
            })?;
            Ok(Port {
                bridge: bridge.clone(),
                host,
                container,
            })
        })();
        if made.is_err() {
            if let Ok(Some(link)) = sides.host.link_by_name(&veth_name) {
                let _ = sides.host.del_link(link.index);
            }
        }
        made
    }

    /// Everything after the port exists and IPAM handed out addresses.
    fn finish_add(
        &self,
        args: &CmdArgs,
        conf: &BridgeConf,
        sides: &Sides,
        port: &Port,
        mut out: CniOutput,
    ) -> CniResult<CniOutput> {
        if out.ips.is_empty() {
            return Err(CniError::new(
                ErrorCode::Internal,
                "IPAM plugin returned no IP configuration",
            ));
        }
        if conf.is_gateway {
            check_host_route_overlap(&sides.host, &out.ips, Some(port.bridge.index))?;
        }
        if conf.is_default_gateway {
            out.routes.extend(default_routes(&out.ips));
        }
        for ip in &mut out.ips {
            ip.interface = Some(2);
        }
        configure_container(sides, conf, args, port.container.index, &out)?;
        if conf.is_gateway {
            ensure_gateway_addresses(&sides.host, &port.bridge, &out.ips, conf.force_address)?;
            enable_forwarding(&out.ips)?;
        }
        if conf.ip_masq {
            let addrs: Vec<IpNet> = out.ips.iter().map(|i| i.address).collect();
            masquerade::setup(
                conf.masq_backend(),
                &addrs,
                &conf.net.name,
                &args.container_id,
            )?;
        }
        if conf.mac_spoof_check {
            spoofcheck::setup(
                &conf.net.name,
                &args.container_id,
                &port.host.name,
                &port.container.mac,
            )?;
        }
        // Re-read: a new bridge takes its MAC from its first port.
        let bridge = sides
            .host
            .link_by_index(port.bridge.index)?
            .unwrap_or_else(|| port.bridge.clone());
        out.interfaces = vec![
            Interface {
                name: bridge.name,
                mac: bridge.mac,
                ..Default::default()
            },
            Interface {
                name: port.host.name.clone(),
                mac: port.host.mac.clone(),
                ..Default::default()
            },
            Interface {
                name: port.container.name.clone(),
                mac: port.container.mac.clone(),
                sandbox: args.netns.clone(),
                ..Default::default()
            },
        ];
        out.cni_version = conf.net.cni_version.clone();
        Ok(out)
    }

    /// Undoes a failed ADD; best effort, the original error is what the
    /// runtime needs to see.
    fn undo(&self, args: &CmdArgs, conf: &BridgeConf, sides: &Sides, port: Option<&Port>) {
        if let Some(port) = port {
            let _ = sides.host.del_link(port.host.index);
        }
        if conf.ip_masq {
            let _ = masquerade::teardown(
                conf.masq_backend(),
                &conf.net.name,
                &args.container_id,
                (true, true),
            );
        }
        if conf.mac_spoof_check {
            let _ = spoofcheck::teardown(&conf.net.name, &args.container_id);
        }
        let _ = ipam::del(args);
    }

    /// Deletes the container's interface (and so its veth peer).
    fn remove_interface(&self, args: &CmdArgs) -> CniResult<()> {
        if args.netns.is_empty() {
            return Ok(());
        }
        let ns = match NetNs::open(&args.netns) {
            Ok(ns) => ns,
            // The namespace is gone, and the veth with it.
            Err(e) if e.code == ErrorCode::UnknownContainer as u32 => return Ok(()),
            Err(e) => return Err(e),
        };
        let nl = Netlink::in_netns(&ns)?;
        match nl.link_by_name(&args.ifname)? {
            Some(link) => nl.del_link_detached(&ns, link.index),
            None => Ok(()),
        }
    }
}

impl Plugin for Bridge {
    fn add(&self, args: &CmdArgs) -> CniResult<CniOutput> {
        let conf = BridgeConf::parse(&args.stdin)?;
        if conf.net.ipam.is_none() {
            return Err(CniError::invalid_config("field \"ipam\" is missing"));
        }
        let mac = conf.requested_mac(args.cni_arg("MAC"))?;
        let sides = Sides::open(&args.netns)?;
        if sides.container.link_by_name(&args.ifname)?.is_some() {
            return Err(CniError::invalid_config(format!(
                "container interface {} already exists",
                args.ifname
            )));
        }
        // IPAM runs while the bridge and veth are made.
        let running = ipam::spawn(args, Command::Add)?;
        let port = self.make_port(args, &conf, &sides, mac.as_deref());
        let addresses = running.wait_result();
        let (port, out) = match (port, addresses) {
            (Ok(port), Ok(out)) => (port, out),
            (Ok(port), Err(e)) => {
                self.undo(args, &conf, &sides, Some(&port));
                return Err(e);
            }
            (Err(e), _) => {
                self.undo(args, &conf, &sides, None);
                return Err(e);
            }
        };
        self.finish_add(args, &conf, &sides, &port, out)
            .inspect_err(|_| self.undo(args, &conf, &sides, Some(&port)))
    }

    fn del(&self, args: &CmdArgs) -> CniResult<()> {
        let conf = BridgeConf::parse(&args.stdin)?;
        // IPAM releases while the interface goes away.
        let running = conf
            .net
            .ipam
            .as_ref()
            .map(|_| ipam::spawn(args, Command::Del))
            .transpose()?;
        let removed = self.remove_interface(args);
        let released = running.map(|r| r.wait().map(|_| ())).unwrap_or(Ok(()));
        removed?;
        released?;
        if conf.ip_masq {
            masquerade::teardown(
                conf.masq_backend(),
                &conf.net.name,
                &args.container_id,
                prev_families(&conf),
            )?;
        }
        if conf.mac_spoof_check {
            spoofcheck::teardown(&conf.net.name, &args.container_id)?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> CniResult<()> {
        let conf = BridgeConf::parse(&args.stdin)?;
        if conf.net.ipam.is_some() {
            ipam::check(args)?;
        }
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

    fn gc(&self, args: &CmdArgs) -> CniResult<()> {
        match args.conf.ipam {
            Some(_) => ipam::gc(args),
            None => Ok(()),
        }
    }

    fn status(&self, args: &CmdArgs) -> CniResult<()> {
        match args.conf.ipam {
            Some(_) => ipam::status(args),
            None => Ok(()),
        }
    }
}
