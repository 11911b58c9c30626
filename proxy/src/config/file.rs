//! The KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1).

use super::duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncConfig {
    pub masquerade_bit: Option<u32>,
    pub masquerade_all: Option<bool>,
    pub localhost_node_ports: Option<bool>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub sync_period: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub min_sync_period: Option<Duration>,
    pub scheduler: Option<String>,
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "strictARP")]
    pub strict_arp: Option<bool>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_fin_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub udp_timeout: Option<Duration>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackConfig {
    pub max_per_core: Option<i32>,
    pub min: Option<i32>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_established_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_close_wait_timeout: Option<Duration>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocal {
    pub bridge_interface: Option<String>,
    pub interface_name_prefix: Option<String>,
}

/// The fields berth-proxy acts on; others are accepted and reported as ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub client_connection: ClientConnection,
    pub hostname_override: Option<String>,
    pub bind_address: Option<String>,
    pub healthz_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub mode: Option<String>,
    #[serde(default)]
    pub iptables: SyncConfig,
    #[serde(default)]
    pub nftables: SyncConfig,
    #[serde(default)]
    pub ipvs: SyncConfig,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub sync_period: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub min_sync_period: Option<Duration>,
    pub detect_local_mode: Option<String>,
    #[serde(default)]
    pub detect_local: DetectLocal,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub node_port_addresses: Option<Vec<String>>,
    pub oom_score_adj: Option<i32>,
    #[serde(default)]
    pub conntrack: ConntrackConfig,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";

impl KubeProxyConfiguration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: KubeProxyConfiguration = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if cfg.kind.as_deref() != Some("KubeProxyConfiguration") {
            return Err(format!(
                "kind: expected \"KubeProxyConfiguration\", got {:?}",
                cfg.kind.as_deref().unwrap_or("")
            ));
        }
        if cfg.api_version.as_deref() != Some(API_VERSION) {
            return Err(format!(
                "apiVersion: expected {API_VERSION:?}, got {:?}",
                cfg.api_version.as_deref().unwrap_or("")
            ));
        }
        Ok(cfg)
    }

    /// Names of fields present in the file that berth-proxy does not act on.
    pub fn ignored_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self.other.keys().cloned().collect();
        for (section, cfg) in [
            ("iptables", &self.iptables),
            ("nftables", &self.nftables),
            ("ipvs", &self.ipvs),
        ] {
            out.extend(cfg.other.keys().map(|k| format!("{section}.{k}")));
        }
        out.extend(
            self.conntrack
                .other
                .keys()
                .map(|k| format!("conntrack.{k}")),
        );
        out
    }
}
