//! berth-proxy: Services on the node, as kube-proxy programs them (iptables, nftables, IPVS).

pub mod backend;
mod command;
pub mod config;
pub mod conntrack;
pub mod healthcheck;
mod http;
pub mod iptables;
pub mod ipvs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod net;
pub mod nftables;
pub mod run;
