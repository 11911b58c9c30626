//! CNI plugin execution for pod sandboxes, with the semantics of libcni and
//! containerd's CRI plugin: configuration from a conf dir, plugins from bin
//! dirs, results cached on disk, pod IPs picked from the results.
//!
//! Entry point: [`CniManager`]. [`CniRunner`] runs single operations on one
//! network list for callers that manage configurations themselves.

mod cache;
mod config;
mod error;
mod exec;
mod loader;
mod manager;
mod pod_ips;
mod quantity;
mod runner;
mod runtime_config;

/// Results of every CNI version in one model, and the spec versions.
pub use berth_cni::types::{CniOutput, Dns, Interface, IpConfig, KNOWN_VERSIONS, Route, Version};
pub use cache::{CacheEntry, ResultCache};
pub use config::{ConfigError, NetworkConfigList, PluginConfig};
pub use error::{CniError, PluginFailure};
pub use exec::{Invocation, PluginExec};
pub use loader::{ConfDirScan, SkippedConfig, scan_conf_dir};
pub use manager::{
    CniManager, CniSettings, LoadReport, NETWORK_NOT_READY_REASON, NetworkStatus, PodNetwork,
    PodNetworkSetup,
};
pub use pod_ips::PodIps;
pub use quantity::parse_quantity;
pub use runner::{Attachment, CniRunner, PluginVersions, plugin_stdin};
pub use runtime_config::{
    Bandwidth, DnsCapability, EGRESS_BANDWIDTH_ANNOTATION, INGRESS_BANDWIDTH_ANNOTATION, IpRange,
    POD_ANNOTATIONS_CAPABILITY, PortMapping, RuntimeConfig, bandwidth_from_annotations,
    dns_from_cri, port_mappings_from_cri, runtime_config_for,
};
