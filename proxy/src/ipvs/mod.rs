//! IPVS mode, at its seams: the generic netlink encoding of virtual/real server
//! commands (`netlink`), and the planned state with its diff, ipsets and iptables rules
//! (`plan`). The transport that sends the messages and the kube-ipvs0 device handling
//! are not wired up yet, so `--proxy-mode ipvs` is refused at start.

pub mod netlink;
pub mod plan;

#[cfg(test)]
mod tests;
