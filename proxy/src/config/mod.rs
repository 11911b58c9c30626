//! Configuration: upstream kube-proxy flags and the KubeProxyConfiguration file,
//! resolved into one `ProxyConfig`. Flags given explicitly override the file.

pub mod duration;
pub mod file;

use crate::net::{Cidr, parse_bind_address};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

fn go_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
}

/// kube-proxy's command line, same names and meanings.
#[derive(Debug, Default, Parser)]
#[command(
    name = "berth-proxy",
    about = "Network proxy for Kubernetes Services (kube-proxy compatible).",
    version
)]
pub struct Flags {
    /// Path to a KubeProxyConfiguration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Path to a kubeconfig file with authorization and API server location.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long)]
    pub master: Option<String>,
    /// Which proxy mode to use: 'iptables', 'nftables' or 'ipvs'.
    #[arg(long = "proxy-mode")]
    pub proxy_mode: Option<String>,
    /// If non-empty, use this string as the node name instead of the hostname.
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
    /// Comma-separated pod CIDRs of the cluster, used to tell pod traffic from external traffic.
    #[arg(long = "cluster-cidr")]
    pub cluster_cidr: Option<String>,
    /// Comma-separated CIDRs (or 'primary') of node addresses that accept NodePort traffic.
    #[arg(long = "nodeport-addresses")]
    pub nodeport_addresses: Option<String>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long = "masquerade-all", num_args = 0..=1, default_missing_value = "true")]
    pub masquerade_all: Option<bool>,
    /// Bit of the fwmark space to mark packets requiring SNAT (0-31).
    #[arg(long = "iptables-masquerade-bit")]
    pub iptables_masquerade_bit: Option<u32>,
    /// In iptables mode, NodePorts also answer on 127.0.0.1 (sets route_localnet).
    #[arg(long = "iptables-localhost-nodeports", num_args = 0..=1, default_missing_value = "true")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// Maximum period between full syncs of the rules, e.g. '30s'.
    #[arg(long = "iptables-sync-period", value_parser = go_duration)]
    pub iptables_sync_period: Option<Duration>,
    /// Minimum period between syncs; changes in between are coalesced, e.g. '1s'.
    #[arg(long = "iptables-min-sync-period", value_parser = go_duration)]
    pub iptables_min_sync_period: Option<Duration>,
    /// IPVS maximum period between full syncs.
    #[arg(long = "ipvs-sync-period", value_parser = go_duration)]
    pub ipvs_sync_period: Option<Duration>,
    /// IPVS minimum period between syncs.
    #[arg(long = "ipvs-min-sync-period", value_parser = go_duration)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh); rr if unset.
    #[arg(long = "ipvs-scheduler")]
    pub ipvs_scheduler: Option<String>,
    /// Enable strict ARP (arp_ignore=1, arp_announce=2) in IPVS mode.
    #[arg(long = "ipvs-strict-arp", num_args = 0..=1, default_missing_value = "true")]
    pub ipvs_strict_arp: Option<bool>,
    /// Comma-separated CIDRs whose IPVS virtual servers the proxy leaves alone.
    #[arg(long = "ipvs-exclude-cidrs")]
    pub ipvs_exclude_cidrs: Option<String>,
    /// IPVS timeout for idle TCP connections, e.g. '900s' (0 keeps the kernel's).
    #[arg(long = "ipvs-tcp-timeout", value_parser = go_duration)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// IPVS timeout for TCP connections after FIN (0 keeps the kernel's).
    #[arg(long = "ipvs-tcpfin-timeout", value_parser = go_duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// IPVS timeout for UDP packets (0 keeps the kernel's).
    #[arg(long = "ipvs-udp-timeout", value_parser = go_duration)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// ip:port of the health check server; empty disables it.
    #[arg(long = "healthz-bind-address")]
    pub healthz_bind_address: Option<String>,
    /// ip:port of the metrics server; empty disables it.
    #[arg(long = "metrics-bind-address")]
    pub metrics_bind_address: Option<String>,
    /// Conntrack entries to allocate per CPU (0 leaves the limit as it is).
    #[arg(long = "conntrack-max-per-core")]
    pub conntrack_max_per_core: Option<i32>,
    /// Minimum conntrack entries regardless of conntrack-max-per-core.
    #[arg(long = "conntrack-min")]
    pub conntrack_min: Option<i32>,
    /// How to tell local (pod) traffic: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix.
    #[arg(long = "detect-local-mode")]
    pub detect_local_mode: Option<String>,
    /// Bridge interface name for --detect-local-mode=BridgeInterface.
    #[arg(long = "pod-bridge-interface")]
    pub pod_bridge_interface: Option<String>,
    /// Interface name prefix for --detect-local-mode=InterfaceNamePrefix.
    #[arg(long = "pod-interface-name-prefix")]
    pub pod_interface_name_prefix: Option<String>,
    /// Remove the rules of every mode and exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Log verbosity (accepted for compatibility; use RUST_LOG for filters).
    #[arg(short = 'v', long = "v")]
    pub verbosity: Option<u8>,
    /// Log format: 'text' or 'json'.
    #[arg(long = "logging-format", default_value = "text")]
    pub logging_format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
    Ipvs,
}

/// How traffic from pods on this node is told apart from other traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDetector {
    /// No way to tell: nothing is treated as local.
    None,
    Cidrs(Vec<Cidr>),
    BridgeInterface(String),
    InterfaceNamePrefix(String),
}

/// NodePort listening addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// All local addresses (the default, `nodePortAddresses` unset).
    All,
    /// The node's primary addresses (from the Node object).
    Primary,
    Cidrs(Vec<Cidr>),
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub kubeconfig: Option<PathBuf>,
    pub master: Option<String>,
    pub mode: Mode,
    pub hostname: String,
    pub cluster_cidrs: Vec<Cidr>,
    pub node_port_addresses: NodePortAddresses,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    /// iptables mode: NodePorts on 127.0.0.1 (iptables.localhostNodePorts).
    pub localhost_node_ports: bool,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub conntrack_max_per_core: i32,
    pub conntrack_min: i32,
    pub detect_local: LocalDetector,
    /// NodeCIDR detection waits for the Node's podCIDRs.
    pub detect_local_from_node: bool,
    pub ipvs: IpvsConfig,
    pub cleanup: bool,
}

/// IPVS mode settings (KubeProxyConfiguration `ipvs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsConfig {
    pub scheduler: String,
    pub strict_arp: bool,
    pub exclude_cidrs: Vec<Cidr>,
    /// Whole seconds; 0 leaves the kernel's value.
    pub tcp_timeout: u32,
    pub tcp_fin_timeout: u32,
    pub udp_timeout: u32,
}

/// The schedulers upstream accepts for ipvs.scheduler.
const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh",
];

fn resolve_ipvs(flags: &Flags, file: &file::SyncConfig) -> Result<IpvsConfig, ConfigError> {
    let scheduler = flags
        .ipvs_scheduler
        .clone()
        .or(file.scheduler.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rr".into());
    if !IPVS_SCHEDULERS.contains(&scheduler.as_str()) {
        return Err(invalid(
            "ipvs.scheduler",
            format!(
                "unknown scheduler {scheduler:?}: must be one of {}",
                IPVS_SCHEDULERS.join(", ")
            ),
        ));
    }
    let exclude: Vec<String> = match &flags.ipvs_exclude_cidrs {
        Some(s) => split_list(s),
        None => file.exclude_cidrs.clone().unwrap_or_default(),
    };
    let seconds = |field: &'static str, d: Option<Duration>| -> Result<u32, ConfigError> {
        u32::try_from(d.unwrap_or_default().as_secs()).map_err(|_| invalid(field, "too large"))
    };
    Ok(IpvsConfig {
        scheduler,
        strict_arp: flags.ipvs_strict_arp.or(file.strict_arp).unwrap_or(false),
        exclude_cidrs: parse_cidrs("ipvs.excludeCIDRs", &exclude)?,
        tcp_timeout: seconds(
            "ipvs.tcpTimeout",
            flags.ipvs_tcp_timeout.or(file.tcp_timeout),
        )?,
        tcp_fin_timeout: seconds(
            "ipvs.tcpFinTimeout",
            flags.ipvs_tcpfin_timeout.or(file.tcp_fin_timeout),
        )?,
        udp_timeout: seconds(
            "ipvs.udpTimeout",
            flags.ipvs_udp_timeout.or(file.udp_timeout),
        )?,
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_cidrs(field: &'static str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    list.iter()
        .map(|c| Cidr::parse(c).map_err(|m| invalid(field, m)))
        .collect()
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_default()
}

impl ProxyConfig {
    pub fn resolve(flags: &Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let cfg = file::KubeProxyConfiguration::parse(&text).map_err(|message| {
                    ConfigError::File {
                        path: path.clone(),
                        message,
                    }
                })?;
                for f in cfg.ignored_fields() {
                    tracing::warn!(field = %f, "config field not supported by berth-proxy; ignored");
                }
                cfg
            }
            None => file::KubeProxyConfiguration::default(),
        };
        let mode = match flags
            .proxy_mode
            .as_deref()
            .or(file.mode.as_deref())
            .unwrap_or("")
        {
            "" | "iptables" => Mode::Iptables,
            "nftables" => Mode::Nftables,
            "ipvs" => Mode::Ipvs,
            other => {
                return Err(invalid(
                    "mode",
                    format!("unknown proxy mode {other:?}: must be iptables, nftables or ipvs"),
                ));
            }
        };
        let mode_cfg = match mode {
            Mode::Iptables => &file.iptables,
            Mode::Nftables => &file.nftables,
            Mode::Ipvs => &file.ipvs,
        };
        let (flag_sync, flag_min) = match mode {
            Mode::Ipvs => (flags.ipvs_sync_period, flags.ipvs_min_sync_period),
            _ => (flags.iptables_sync_period, flags.iptables_min_sync_period),
        };
        let sync_period = flag_sync
            .or(file.sync_period)
            .or(mode_cfg.sync_period)
            .unwrap_or(Duration::from_secs(30));
        let min_sync_period = flag_min
            .or(file.min_sync_period)
            .or(mode_cfg.min_sync_period)
            .unwrap_or(Duration::from_secs(1));
        if sync_period.is_zero() {
            return Err(invalid("syncPeriod", "must be greater than 0"));
        }
        if min_sync_period > sync_period {
            return Err(invalid(
                "minSyncPeriod",
                format!("must be less than or equal to syncPeriod ({sync_period:?})"),
            ));
        }
        let masquerade_bit = flags
            .iptables_masquerade_bit
            .or(mode_cfg.masquerade_bit)
            .unwrap_or(14);
        if masquerade_bit > 31 {
            return Err(invalid(
                "masqueradeBit",
                format!("{masquerade_bit} must be in the range [0, 31]"),
            ));
        }
        let cluster_cidrs = parse_cidrs(
            "clusterCIDR",
            &split_list(
                flags
                    .cluster_cidr
                    .as_deref()
                    .or(file.cluster_cidr.as_deref())
                    .unwrap_or(""),
            ),
        )?;
        let npa: Vec<String> = match &flags.nodeport_addresses {
            Some(s) => split_list(s),
            None => file.node_port_addresses.clone().unwrap_or_default(),
        };
        let node_port_addresses = match npa.as_slice() {
            [] => NodePortAddresses::All,
            [p] if p == "primary" => NodePortAddresses::Primary,
            list => NodePortAddresses::Cidrs(parse_cidrs("nodePortAddresses", list)?),
        };
        let bridge = flags
            .pod_bridge_interface
            .clone()
            .or(file.detect_local.bridge_interface.clone());
        let prefix = flags
            .pod_interface_name_prefix
            .clone()
            .or(file.detect_local.interface_name_prefix.clone());
        let mut detect_local_from_node = false;
        let detect_local = match flags
            .detect_local_mode
            .as_deref()
            .or(file.detect_local_mode.as_deref())
            .unwrap_or("ClusterCIDR")
        {
            "" | "ClusterCIDR" if cluster_cidrs.is_empty() => LocalDetector::None,
            "" | "ClusterCIDR" => LocalDetector::Cidrs(cluster_cidrs.clone()),
            "NodeCIDR" => {
                detect_local_from_node = true;
                LocalDetector::None
            }
            "BridgeInterface" => LocalDetector::BridgeInterface(
                bridge.filter(|b| !b.is_empty()).ok_or_else(|| {
                    invalid(
                        "detectLocal.bridgeInterface",
                        "required for detectLocalMode BridgeInterface",
                    )
                })?,
            ),
            "InterfaceNamePrefix" => LocalDetector::InterfaceNamePrefix(
                prefix.filter(|p| !p.is_empty()).ok_or_else(|| {
                    invalid(
                        "detectLocal.interfaceNamePrefix",
                        "required for detectLocalMode InterfaceNamePrefix",
                    )
                })?,
            ),
            other => {
                return Err(invalid(
                    "detectLocalMode",
                    format!("unknown mode {other:?}"),
                ));
            }
        };
        let healthz = flags
            .healthz_bind_address
            .clone()
            .or(file.healthz_bind_address.clone())
            .unwrap_or_else(|| "0.0.0.0:10256".into());
        let metrics = flags
            .metrics_bind_address
            .clone()
            .or(file.metrics_bind_address.clone())
            .unwrap_or_else(|| "127.0.0.1:10249".into());
        let hostname = flags
            .hostname_override
            .clone()
            .or(file.hostname_override.clone())
            .filter(|h| !h.is_empty())
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(system_hostname);
        if hostname.is_empty() {
            return Err(invalid(
                "hostnameOverride",
                "no node name: set --hostname-override",
            ));
        }
        Ok(ProxyConfig {
            kubeconfig: flags.kubeconfig.clone().or(file
                .client_connection
                .kubeconfig
                .clone()
                .filter(|k| !k.is_empty())
                .map(PathBuf::from)),
            master: flags.master.clone(),
            mode,
            hostname,
            cluster_cidrs,
            node_port_addresses,
            masquerade_all: flags
                .masquerade_all
                .or(mode_cfg.masquerade_all)
                .unwrap_or(false),
            masquerade_bit,
            localhost_node_ports: flags
                .iptables_localhost_nodeports
                .or(file.iptables.localhost_node_ports)
                .unwrap_or(true),
            sync_period,
            min_sync_period,
            healthz_bind_address: parse_bind_address(&healthz, 10256)
                .map_err(|m| invalid("healthzBindAddress", m))?,
            metrics_bind_address: parse_bind_address(&metrics, 10249)
                .map_err(|m| invalid("metricsBindAddress", m))?,
            conntrack_max_per_core: flags
                .conntrack_max_per_core
                .or(file.conntrack.max_per_core)
                .unwrap_or(32768),
            conntrack_min: flags.conntrack_min.or(file.conntrack.min).unwrap_or(131072),
            detect_local,
            detect_local_from_node,
            // As upstream, the ipvs section is validated only when it is used.
            ipvs: if mode == Mode::Ipvs {
                resolve_ipvs(flags, &file.ipvs)?
            } else {
                IpvsConfig::default()
            },
            cleanup: flags.cleanup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn file_values_with_flag_overrides() {
        let f = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\nclusterCIDR: 10.244.0.0/16\n\
             hostnameOverride: Node-A\nnftables:\n  syncPeriod: 1m0s\n  minSyncPeriod: 250ms\nconntrack:\n  maxPerCore: 0\nnodePortAddresses: [\"primary\"]\n",
        );
        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--config",
            f.path().to_str().unwrap(),
            "--masquerade-all",
        ])
        .unwrap();
        let cfg = ProxyConfig::resolve(&flags).unwrap();
        assert_eq!(cfg.mode, Mode::Nftables);
        assert_eq!(cfg.hostname, "node-a");
        assert_eq!(cfg.sync_period, Duration::from_secs(60));
        assert_eq!(cfg.min_sync_period, Duration::from_millis(250));
        assert_eq!(cfg.conntrack_max_per_core, 0);
        assert!(cfg.masquerade_all);
        assert_eq!(cfg.node_port_addresses, NodePortAddresses::Primary);
        assert_eq!(
            cfg.detect_local,
            LocalDetector::Cidrs(vec![Cidr::parse("10.244.0.0/16").unwrap()])
        );

        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--config",
            f.path().to_str().unwrap(),
            "--proxy-mode",
            "iptables",
            "--iptables-min-sync-period",
            "2s",
        ])
        .unwrap();
        let cfg = ProxyConfig::resolve(&flags).unwrap();
        assert_eq!(cfg.mode, Mode::Iptables);
        assert_eq!(cfg.min_sync_period, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_the_field() {
        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--hostname-override",
            "n",
            "--cluster-cidr",
            "10.0.0.0/99",
        ])
        .unwrap();
        let err = ProxyConfig::resolve(&flags).unwrap_err().to_string();
        assert!(err.starts_with("clusterCIDR:"), "{err}");
        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--hostname-override",
            "n",
            "--proxy-mode",
            "userspace",
        ])
        .unwrap();
        assert!(
            ProxyConfig::resolve(&flags)
                .unwrap_err()
                .to_string()
                .starts_with("mode:")
        );
        let f = write("apiVersion: v1\nkind: KubeProxyConfiguration\n");
        let flags =
            Flags::try_parse_from(["berth-proxy", "--config", f.path().to_str().unwrap()]).unwrap();
        assert!(
            ProxyConfig::resolve(&flags)
                .unwrap_err()
                .to_string()
                .contains("apiVersion")
        );
    }

    #[test]
    fn ipvs_section_and_flags() {
        let f = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nhostnameOverride: n\n\
             ipvs:\n  scheduler: wlc\n  strictARP: true\n  excludeCIDRs: [\"10.200.0.0/16\"]\n  tcpTimeout: 15m0s\n  tcpFinTimeout: 2m\n  udpTimeout: 5m\n  minSyncPeriod: 2s\n",
        );
        let path = f.path().to_str().unwrap();
        let cfg = ProxyConfig::resolve(
            &Flags::try_parse_from(["berth-proxy", "--config", path]).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.mode, Mode::Ipvs);
        assert_eq!(cfg.min_sync_period, Duration::from_secs(2));
        assert_eq!(
            cfg.ipvs,
            IpvsConfig {
                scheduler: "wlc".into(),
                strict_arp: true,
                exclude_cidrs: vec![Cidr::parse("10.200.0.0/16").unwrap()],
                tcp_timeout: 900,
                tcp_fin_timeout: 120,
                udp_timeout: 300,
            }
        );
        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--config",
            path,
            "--ipvs-scheduler",
            "sh",
            "--ipvs-udp-timeout",
            "30s",
            "--ipvs-strict-arp=false",
        ])
        .unwrap();
        let cfg = ProxyConfig::resolve(&flags).unwrap();
        assert_eq!(
            (
                cfg.ipvs.scheduler.as_str(),
                cfg.ipvs.udp_timeout,
                cfg.ipvs.strict_arp
            ),
            ("sh", 30, false)
        );
        // Defaults: rr, no strict ARP, kernel timeouts kept.
        let cfg = ProxyConfig::resolve(
            &Flags::try_parse_from([
                "berth-proxy",
                "--hostname-override",
                "n",
                "--proxy-mode",
                "ipvs",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            cfg.ipvs,
            IpvsConfig {
                scheduler: "rr".into(),
                ..Default::default()
            }
        );
        for (flag, value, field) in [
            ("--ipvs-scheduler", "fastest", "ipvs.scheduler:"),
            ("--ipvs-exclude-cidrs", "10.0.0.0/40", "ipvs.excludeCIDRs:"),
        ] {
            let flags = Flags::try_parse_from([
                "berth-proxy",
                "--hostname-override",
                "n",
                "--proxy-mode",
                "ipvs",
                flag,
                value,
            ])
            .unwrap();
            let err = ProxyConfig::resolve(&flags).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        // Outside IPVS mode the section is not looked at.
        let flags = Flags::try_parse_from([
            "berth-proxy",
            "--hostname-override",
            "n",
            "--ipvs-scheduler",
            "fastest",
        ])
        .unwrap();
        assert!(ProxyConfig::resolve(&flags).is_ok());
    }
}
