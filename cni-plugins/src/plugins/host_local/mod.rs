//! The `host-local` IPAM plugin: hands out addresses from configured ranges,
//! remembering leases on the local disk.

mod range;
mod resolv;
mod store;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

pub use range::{Range, RangeSet};
pub use store::{DEFAULT_DATA_DIR, Lease, Store};

use crate::skel::{CmdArgs, Plugin};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode, IpConfig, Route, parse_config};

/// The `ipam` section host-local understands.
#[derive(Debug, Clone, Deserialize)]
struct IpamSection {
    #[serde(default)]
    ranges: Vec<Vec<Range>>,
    // The pre-`ranges` single-range form.
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<PathBuf>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct StaticIps {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsSection {
    #[serde(default)]
    cni: Option<StaticIps>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Debug, Deserialize)]
struct HostLocalConf {
    name: String,
    ipam: IpamSection,
    #[serde(default)]
    args: Option<ArgsSection>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<StaticIps>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Vec<Attachment>,
}

/// Parsed and validated configuration.
pub struct Config {
    pub network: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    resolv_conf: Option<PathBuf>,
    requested: Vec<IpAddr>,
    valid_attachments: Vec<Attachment>,
}

impl Config {
    pub fn parse(args: &CmdArgs) -> CniResult<Self> {
        let conf: HostLocalConf = parse_config(&args.stdin)?;
        let ipam = conf.ipam;
        let mut raw_sets = ipam.ranges;
        if let Some(subnet) = ipam.subnet {
            raw_sets.insert(
                0,
                vec![Range {
                    subnet,
                    range_start: ipam.range_start,
                    range_end: ipam.range_end,
                    gateway: ipam.gateway,
                }],
            );
        }
        if raw_sets.is_empty() {
            return Err(CniError::invalid_config(
                "field \"ipam.ranges\": no IP ranges specified",
            ));
        }
        let mut range_sets = Vec::with_capacity(raw_sets.len());
        for (i, raw) in raw_sets.into_iter().enumerate() {
            let mut set = RangeSet(raw);
            set.canonicalize(&format!("ipam.ranges[{i}]"))?;
            if let Some(j) = range_sets.iter().position(|s: &RangeSet| s.overlaps(&set)) {
                return Err(CniError::invalid_config(format!(
                    "field \"ipam.ranges[{i}]\": overlaps ipam.ranges[{j}]"
                )));
            }
            range_sets.push(set);
        }
        let mut requested = Vec::new();
        let from_cni_args = args
            .cni_arg("IP")
            .map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        let from_args = conf
            .args
            .and_then(|a| a.cni)
            .map(|c| c.ips)
            .unwrap_or_default();
        let from_runtime = conf.runtime_config.map(|c| c.ips).unwrap_or_default();
        for (field, list) in [
            ("CNI_ARGS IP", from_cni_args),
            ("args.cni.ips", from_args),
            ("runtimeConfig.ips", from_runtime),
        ] {
            for s in list {
                let ip = s
                    .split('/')
                    .next()
                    .and_then(|a| a.trim().parse::<IpAddr>().ok())
                    .ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "field \"{field}\": {s:?} is not an IP address"
                        ))
                    })?;
                if !requested.contains(&ip) {
                    requested.push(ip);
                }
            }
        }
        Ok(Config {
            network: conf.name,
            range_sets,
            routes: ipam.routes,
            data_dir: ipam
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            resolv_conf: ipam.resolv_conf,
            requested,
            valid_attachments: conf.valid_attachments,
        })
    }
}

/// Picks one address per range set for the attachment and records the leases.
pub fn allocate(
    config: &Config,
    store: &Store,
    container_id: &str,
    ifname: &str,
) -> CniResult<Vec<IpConfig>> {
    let existing = store.leases_of(container_id, ifname)?;
    let mut requested = config.requested.clone();
    let mut granted: Vec<IpConfig> = Vec::new();
    let result = (|| {
        for (idx, set) in config.range_sets.iter().enumerate() {
            if let Some(dup) = existing.iter().find(|l| set.range_for(l.ip).is_some()) {
                return Err(CniError::invalid_config(format!(
                    "{} has been allocated to {container_id}, duplicate allocation is not allowed",
                    dup.ip
                )));
            }
            let wanted = requested
                .iter()
                .position(|ip| set.range_for(*ip).is_some())
                .map(|i| requested.remove(i));
            let (ip, range) = match wanted {
                Some(ip) => {
                    let range = set
                        .range_for(ip)
                        .ok_or_else(|| CniError::invalid_config("requested IP left its range"))?;
                    if !store.reserve(ip, container_id, ifname, idx)? {
                        return Err(CniError::invalid_config(format!(
                            "requested IP address {ip} is not available in range set {set}"
                        )));
                    }
                    (ip, range)
                }
                None => {
                    let mut found = None;
                    for (ip, range) in set.candidates(store.last_reserved(idx)) {
                        if Some(ip) == range.gateway {
                            continue;
                        }
                        if store.reserve(ip, container_id, ifname, idx)? {
                            found = Some((ip, range));
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        CniError::new(
                            ErrorCode::TryAgainLater,
                            format!("no IP addresses available in range set: {set}"),
                        )
                    })?
                }
            };
            let address = IpNet::new(ip, range.subnet.prefix_len())
                .map_err(|e| CniError::internal("cannot build address", e))?;
            granted.push(IpConfig {
                version: None,
                address,
                gateway: range.gateway,
                interface: None,
            });
        }
        if let Some(ip) = requested.first() {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is not in any configured range"
            )));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for ip in &granted {
            store.release(ip.address.addr())?;
        }
        return Err(e);
    }
    Ok(granted)
}

pub struct HostLocal;

impl Plugin for HostLocal {
    fn known_cni_args(&self) -> Option<&'static [&'static str]> {
        Some(&["IP"])
    }

    fn add(&self, args: &CmdArgs) -> CniResult<CniOutput> {
        let config = Config::parse(args)?;
        let dns = match &config.resolv_conf {
            Some(path) => resolv::parse_file(path)?,
            None => Default::default(),
        };
        let store = Store::open(&config.data_dir, &config.network)?;
        let ips = allocate(&config, &store, &args.container_id, &args.ifname)?;
        Ok(CniOutput {
            cni_version: args.conf.cni_version.clone(),
            interfaces: Vec::new(),
            ips,
            routes: config.routes,
            dns,
        })
    }

    fn del(&self, args: &CmdArgs) -> CniResult<()> {
        let config = Config::parse(args)?;
        let store = Store::open(&config.data_dir, &config.network)?;
        store
            .release_attachment(&args.container_id, &args.ifname)
            .map(|_| ())
    }

    fn check(&self, args: &CmdArgs) -> CniResult<()> {
        let config = Config::parse(args)?;
        let store = Store::open(&config.data_dir, &config.network)?;
        if store
            .leases_of(&args.container_id, &args.ifname)?
            .is_empty()
        {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "host-local: no address is allocated to container {} interface {}",
                    args.container_id, args.ifname
                ),
            ));
        }
        Ok(())
    }

    /// Ready when the lease directory can be opened and locked.
    fn status(&self, args: &CmdArgs) -> CniResult<()> {
        let config = Config::parse(args)?;
        Store::open(&config.data_dir, &config.network)
            .map(|_| ())
            .map_err(|e| {
                CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!("host-local cannot use its lease directory: {}", e.msg),
                )
                .with_details(e.details)
            })
    }

    /// Releases every lease whose attachment the runtime no longer lists.
    fn gc(&self, args: &CmdArgs) -> CniResult<()> {
        let config = Config::parse(args)?;
        let store = Store::open(&config.data_dir, &config.network)?;
        let valid: BTreeSet<(&str, &str)> = config
            .valid_attachments
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        for lease in store.leases()? {
            let kept = valid.contains(&(lease.container_id.as_str(), lease.ifname.as_str()))
                || (lease.ifname.is_empty() && valid.iter().any(|(c, _)| *c == lease.container_id));
            if !kept {
                store.release(lease.ip)?;
            }
        }
        Ok(())
    }
}
