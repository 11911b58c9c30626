//! The `loopback` plugin: brings `lo` up in the container on ADD, down on DEL.

use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::skel::{CmdArgs, Plugin};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode, Interface, IpConfig};

pub struct Loopback;

impl Plugin for Loopback {
    fn add(&self, args: &CmdArgs) -> CniResult<CniOutput> {
        let ns = NetNs::open(&args.netns)?;
        let nl = Netlink::in_netns(&ns)?;
        let lo = nl.link_by_name("lo")?.ok_or_else(|| {
            CniError::new(ErrorCode::Internal, "no lo interface in the namespace")
        })?;
        nl.set_up(lo.index, true)?;
        // In a chain, pass the previous result through untouched.
        if let Some(prev) = &args.conf.prev_result {
            return CniOutput::from_value(prev.clone());
        }
        let ips: Vec<IpConfig> = nl
            .addresses(lo.index)?
            .into_iter()
            .map(|address| IpConfig {
                version: None,
                address,
                gateway: None,
                interface: Some(0),
            })
            .collect();
        Ok(CniOutput {
            cni_version: args.conf.cni_version.clone(),
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: args.netns.clone(),
                ..Default::default()
            }],
            ips,
            ..Default::default()
        })
    }

    fn del(&self, args: &CmdArgs) -> CniResult<()> {
        let Some(ns) = NetNs::open_for_del(&args.netns)? else {
            return Ok(());
        };
        let nl = Netlink::in_netns(&ns)?;
        if let Some(lo) = nl.link_by_name("lo")? {
            nl.set_up(lo.index, false)?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> CniResult<()> {
        let ns = NetNs::open(&args.netns)?;
        let nl = Netlink::in_netns(&ns)?;
        match nl.link_by_name("lo")? {
            Some(lo) if lo.up => Ok(()),
            _ => Err(CniError::new(
                ErrorCode::Internal,
                "loopback interface is down",
            )),
        }
    }
}
