//! Blocking helpers over rtnetlink for the short-lived plugin binaries.
//!
//! Each [`Netlink`] owns a current-thread tokio runtime and one rtnetlink
//! socket. A netlink socket talks to the namespace it was created in, so a
//! handle for a container is made while the thread is inside its netns and
//! keeps working after the thread returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{
    Error as NlError, Handle, LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkMessageBuilder,
    LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use tokio::runtime::Runtime;

use crate::netns::NetNs;
use crate::types::{CniError, CniResult, ErrorCode};

pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;

/// The errno a netlink request failed with, if the kernel sent one.
pub fn errno(err: &CniError) -> Option<i32> {
    err.errno
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(NlError) -> CniError {
    let what = what.into();
    move |e| match &e {
        NlError::NetlinkError(m) => {
            let mut err = CniError::new(ErrorCode::Internal, what).with_details(m.to_io());
            err.errno = Some(m.raw_code().abs());
            err
        }
        _ => CniError::internal(what, e),
    }
}

/// Bridge creation fails with EOPNOTSUPP on kernels built without VLAN
/// filtering; say which option needs it.
fn vlan_filtering_error(e: NlError, bridge: &str, vlan_filtering: bool) -> CniError {
    let unsupported = matches!(&e, NlError::NetlinkError(m) if m.raw_code().abs() == nix::errno::Errno::EOPNOTSUPP as i32);
    if vlan_filtering && unsupported {
        return CniError::invalid_config(format!(
            "field \"vlan\"/\"vlanTrunk\": the kernel does not support VLAN filtering on bridge {bridge}"
        ));
    }
    nl_err(format!("cannot configure bridge {bridge}"))(e)
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub promisc: bool,
    pub controller: Option<u32>,
    pub kind: Option<InfoKind>,
    pub vlan_filtering: Option<bool>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            controller: None,
            kind: None,
            vlan_filtering: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = format_mac(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                link.vlan_filtering = opts.iter().find_map(|o| match o {
                                    InfoBridge::VlanFiltering(v) => Some(*v),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    (bytes.len() == 6).then_some(bytes)
}

/// A route as read back from the kernel (main table).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

pub struct Netlink {
    rt: Runtime,
    handle: Handle,
}

impl Netlink {
    /// A handle on the namespace the thread is in now.
    pub fn current() -> CniResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| CniError::io("cannot start the netlink runtime", e))?;
        let (conn, handle, _) = {
            let _enter = rt.enter();
            rtnetlink::new_connection()
                .map_err(|e| CniError::io("cannot open a netlink socket", e))?
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// A handle on `ns`.
    pub fn in_netns(ns: &NetNs) -> CniResult<Self> {
        ns.run(Self::current)
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn link_by_name(&self, name: &str) -> CniResult<Option<Link>> {
        let res = self.block(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next(),
        );
        match res {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(NlError::NetlinkError(m)) if m.raw_code().abs() == ENODEV => Ok(None),
            Err(e) => Err(nl_err(format!("cannot look up link {name}"))(e)),
        }
    }

    pub fn link_by_index(&self, index: u32) -> CniResult<Option<Link>> {
        let res = self.block(
            self.handle
                .link()
                .get()
                .match_index(index)
                .execute()
                .try_next(),
        );
        match res {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(NlError::NetlinkError(m)) if m.raw_code().abs() == ENODEV => Ok(None),
            Err(e) => Err(nl_err(format!("cannot look up link {index}"))(e)),
        }
    }

    pub fn links(&self) -> CniResult<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .block(self.handle.link().get().execute().try_collect())
            .map_err(nl_err("cannot list links"))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    fn set_link(&self, msg: LinkMessage, what: String) -> CniResult<()> {
        self.block(self.handle.link().set(msg).execute())
            .map_err(nl_err(what))
    }

    pub fn set_up(&self, index: u32, up: bool) -> CniResult<()> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.set_link(
            msg,
            format!("cannot set link {index} {}", if up { "up" } else { "down" }),
        )
    }

    pub fn set_promisc(&self, index: u32, on: bool) -> CniResult<()> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.set_link(msg, format!("cannot set promiscuous mode on link {index}"))
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> CniResult<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(msg, format!("cannot set mtu {mtu} on link {index}"))
    }

    pub fn set_controller(&self, index: u32, controller: u32) -> CniResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(controller)
            .build();
        self.set_link(
            msg,
            format!("cannot attach link {index} to bridge {controller}"),
        )
    }

    pub fn set_mac(&self, index: u32, mac: &[u8]) -> CniResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.set_link(msg, format!("cannot set mac on link {index}"))
    }

    /// Creates a bridge (down; callers bring it up once configured).
    pub fn add_bridge(&self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> CniResult<()> {
        let mut b = LinkBridge::new(name).down();
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        if vlan_filtering {
            b = b.append_info_data(InfoBridge::VlanFiltering(true));
        }
        self.block(self.handle.link().add(b.build()).execute())
            .map_err(|e| vlan_filtering_error(e, name, vlan_filtering))
    }

    pub fn set_vlan_filtering(&self, bridge: &Link) -> CniResult<()> {
        let msg = LinkMessageBuilder::<LinkBridge>::new(&bridge.name)
            .index(bridge.index)
            .append_info_data(InfoBridge::VlanFiltering(true))
            .build();
        self.block(self.handle.link().set(msg).execute())
            .map_err(|e| vlan_filtering_error(e, &bridge.name, true))
    }

    /// Creates a veth pair whose peer is born inside `peer_ns` under `peer_name`.
    pub fn add_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &NetNs,
        mtu: Option<u32>,
        peer_mac: Option<&[u8]>,
    ) -> CniResult<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .setns_by_fd(peer_ns.raw_fd());
        let mut host = LinkVeth::new(host_name, peer_name);
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.block(self.handle.link().add(msg).execute())
            .map_err(nl_err(format!(
                "cannot create veth pair {host_name}/{peer_name}"
            )))
    }

    /// Deletes a link in `ns` (this handle's namespace) and returns once the
    /// kernel has unlisted it. The deleting syscall goes on to wait for an
    /// RCU barrier (~15-20 ms); a detached helper does that waiting.
    pub fn del_link_detached(&self, ns: &NetNs, index: u32) -> CniResult<()> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let helper = crate::detach::spawn(|| {
            match Netlink::in_netns(ns).and_then(|nl| nl.del_link(index)) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        })?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if self.link_by_index(index)?.is_none() {
                return Ok(());
            }
            if let Ok(WaitStatus::Exited(..)) = waitpid(helper, Some(WaitPidFlag::WNOHANG)) {
                // The helper is done but the link survived: delete it here
                // to report the kernel's error.
                return self.del_link(index);
            }
            if std::time::Instant::now() > deadline {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!("link {index} is still present after deletion"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    pub fn del_link(&self, index: u32) -> CniResult<()> {
        match self.block(self.handle.link().del(index).execute()) {
            Err(NlError::NetlinkError(m)) if m.raw_code().abs() == ENODEV => Ok(()),
            r => r.map_err(nl_err(format!("cannot delete link {index}"))),
        }
    }

    pub fn set_hairpin(&self, index: u32, on: bool) -> CniResult<()> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.block(self.handle.link().set_port(msg).execute())
            .map_err(nl_err(format!("cannot set hairpin mode on port {index}")))
    }

    /// Adds `vid` to a bridge port (untagged + PVID when `pvid`).
    pub fn add_port_vlan(&self, index: u32, vid: u16, pvid: bool) -> CniResult<()> {
        let flags = if pvid {
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        let msg = LinkBridgeVlan::new(index).vlan(vid, flags).build();
        // RTM_SETLINK with AF_BRIDGE and a VLAN_INFO spec adds the vlan to the port.
        self.block(self.handle.link().set(msg).execute())
            .map_err(nl_err(format!("cannot add vlan {vid} to port {index}")))
    }

    /// Removes `vid` from a bridge port.
    pub fn del_port_vlan(&self, index: u32, vid: u16) -> CniResult<()> {
        let msg = LinkBridgeVlan::new(index)
            .vlan(vid, BridgeVlanInfoFlags::empty())
            .build();
        // RTM_DELLINK with AF_BRIDGE removes only the vlan, not the link.
        self.block(self.handle.link().del_with_message(msg).execute())
            .map_err(nl_err(format!(
                "cannot remove vlan {vid} from port {index}"
            )))
    }

    /// Adds an address; with `replace` an existing identical one is not an error.
    /// Adds an address; `nodad` skips IPv6 duplicate address detection so
    /// the address is usable at once instead of tentative for seconds.
    pub fn add_address(&self, index: u32, addr: IpNet, nodad: bool) -> CniResult<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if nodad && addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.block(req.execute())
            .map_err(nl_err(format!("cannot add address {addr} to link {index}")))
    }

    pub fn del_address(&self, index: u32, addr: IpNet) -> CniResult<()> {
        let found = self.address_messages(index)?.into_iter().find(|m| {
            m.header.prefix_len == addr.prefix_len()
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == addr.addr()))
        });
        match found {
            Some(m) => self
                .block(self.handle.address().del(m).execute())
                .map_err(nl_err(format!("cannot remove address {addr}"))),
            None => Ok(()),
        }
    }

    fn address_messages(
        &self,
        index: u32,
    ) -> CniResult<Vec<rtnetlink::packet_route::address::AddressMessage>> {
        self.block(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect(),
        )
        .map_err(nl_err(format!("cannot list addresses of link {index}")))
    }

    /// Addresses on the link, with their prefix length.
    pub fn addresses(&self, index: u32) -> CniResult<Vec<IpNet>> {
        Ok(self
            .address_messages(index)?
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len).ok(),
                    _ => None,
                })
            })
            .collect())
    }

    fn route_message(&self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> CniResult<RouteMessage> {
        let bad = |e: &dyn std::fmt::Display| CniError::invalid_config(format!("route {dst}: {e}"));
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| bad(&e))?;
        if let Some(gw) = gw {
            b = b.gateway(gw).map_err(|e| bad(&e))?;
        } else {
            b = b.scope(RouteScope::Link);
        }
        Ok(b.output_interface(oif).build())
    }

    pub fn add_route(&self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> CniResult<()> {
        let msg = self.route_message(dst, gw, oif)?;
        self.block(self.handle.route().add(msg).execute())
            .map_err(nl_err(format!(
                "cannot add route to {dst}{}",
                gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )))
    }

    pub fn del_route(&self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> CniResult<()> {
        let msg = self.route_message(dst, gw, oif)?;
        match self.block(self.handle.route().del(msg).execute()) {
            Err(NlError::NetlinkError(m)) if m.raw_code().abs() == ESRCH => Ok(()),
            r => r.map_err(nl_err(format!("cannot remove route to {dst}"))),
        }
    }

    /// Routes of the main table for one family.
    pub fn routes(&self, v4: bool) -> CniResult<Vec<KernelRoute>> {
        let query = if v4 {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .block(self.handle.route().get(query).execute().try_collect())
            .map_err(nl_err("cannot list routes"))?;
        let mut out = Vec::new();
        for m in msgs {
            let table = m
                .attributes
                .iter()
                .find_map(|a| {
                    if let RouteAttribute::Table(t) = a {
                        Some(*t)
                    } else {
                        None
                    }
                })
                .unwrap_or(m.header.table as u32);
            if table != 254 {
                continue;
            }
            let addr = |a: &RouteAddress| match a {
                RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
                RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
                _ => None,
            };
            let zero = if v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let mut route = KernelRoute {
                dst: IpNet::new(zero, 0).unwrap_or_default(),
                gateway: None,
                oif: None,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => {
                        if let Some(ip) = addr(d) {
                            route.dst = IpNet::new(ip, m.header.destination_prefix_length)
                                .unwrap_or(route.dst);
                        }
                    }
                    RouteAttribute::Gateway(g) => route.gateway = addr(g),
                    RouteAttribute::Oif(o) => route.oif = Some(*o),
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }
}
