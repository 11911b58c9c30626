//! The `bridge` plugin: a Linux bridge on the host side, a veth pair into
//! the container, addresses from the IPAM plugin.

mod check;
mod config;
mod container;
mod host;
mod spoofcheck;

use ipnet::IpNet;

pub use config::BridgeConf;
use container::{configure_container, default_routes};
use host::{
    check_host_route_overlap, configure_port, enable_forwarding, ensure_bridge,
    ensure_gateway_addresses, gateway_link, random_veth_name,
};

use crate::ipam;
use crate::netfilter::masquerade;
use crate::netlink::{Link, Netlink};
use crate::netns::NetNs;
use crate::skel::{CmdArgs, Command, Plugin};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode, Interface};

pub struct Bridge;

/// Handles on both sides of the attachment.
struct Sides {
    pub(super) ns: NetNs,
    pub(super) host: Netlink,
    pub(super) container: Netlink,
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
        let gateway_link = if conf.is_gateway {
            let link = gateway_link(&sides.host, conf, &port.bridge)?;
            check_host_route_overlap(&sides.host, &out.ips, Some(link.index))?;
            Some(link)
        } else {
            None
        };
        if conf.is_default_gateway {
            out.routes.extend(default_routes(&out.ips));
        }
        for ip in &mut out.ips {
            ip.interface = Some(2);
        }
        configure_container(sides, conf, args, port.container.index, &out)?;
        if let Some(link) = &gateway_link {
            ensure_gateway_addresses(&sides.host, link, &out.ips, conf.force_address)?;
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
        // Without the namespace there is no veth left either.
        let Some(ns) = NetNs::open_for_del(&args.netns)? else {
            return Ok(());
        };
        let nl = Netlink::in_netns(&ns)?;
        match nl.link_by_name(&args.ifname)? {
            Some(link) => nl.del_link_detached(&ns, link.index),
            None => Ok(()),
        }
    }
}

impl Plugin for Bridge {
    fn known_cni_args(&self) -> Option<&'static [&'static str]> {
        Some(&["MAC"])
    }

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
        check::attachment(args, &conf)
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
