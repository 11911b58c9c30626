//! CNI 1.1.0 types, plugin skeleton and the bridge, host-local, loopback and portmap plugins.

pub mod arp;
pub mod detach;
pub mod ipam;
pub mod netfilter;
pub mod netlink;
pub mod netns;
pub mod plugins;
pub mod skel;
pub mod sysctl;
pub mod types;
