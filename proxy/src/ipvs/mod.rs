//! IPVS mode, as upstream kube-proxy's `--proxy-mode ipvs`: every Service address is
//! an IPVS virtual server whose real servers are the endpoints; the addresses sit on
//! the kube-ipvs0 dummy device so the node accepts packets for them; a small fixed
//! set of iptables rules matching on ipsets does masquerading and filtering.
//!
//! Modules: `netlink` (IPVS generic netlink messages), `kernel` (the IPVS seam and
//! its netlink implementation), `dummy` (kube-ipvs0 over rtnetlink), `ipset`,
//! `rules` (iptables), `plan` (the wanted state), `graceful` (draining real servers),
//! `sysctl`, `proxier` (the sync). The iptables rules go through the iptables
//! backend's `Netfilter` (iptables-restore --noflush), not a copy of it.

pub mod dummy;
pub mod graceful;
pub mod ipset;
pub mod kernel;
pub mod netlink;
pub mod plan;
mod proxier;
pub mod rules;
mod sysctl;

pub use kernel::{GenlSocket, IpvsError, IpvsKernel, NetlinkIpvs};
pub use netlink::{Destination, RealServer, Timeouts, VirtualServer};
pub use proxier::{IpvsOptions, IpvsProxier, cleanup};
pub use sysctl::{SysctlError, prepare_ipvs_sysctls};

/// Upstream's startup check for IPVS mode, against the real kernel: the "IPVS" family
/// resolves, virtual servers can be listed, the scheduler works; then the IPVS
/// sysctls are set. Fails with an error naming the missing kernel module otherwise.
pub fn open_kernel(scheduler: &str) -> Result<NetlinkIpvs, IpvsError> {
    let mut ipvs = NetlinkIpvs::open()?;
    ipvs.check_scheduler(scheduler)?;
    prepare_ipvs_sysctls().map_err(|e| IpvsError::Protocol(e.to_string()))?;
    Ok(ipvs)
}

/// `--cleanup` for IPVS mode on this node: also works (minus the virtual servers)
/// when the kernel has no IPVS. Runs on its own thread (same network namespace), as
/// rtnetlink blocks on a runtime of its own and the caller may be async.
pub fn cleanup_system() -> Result<(), crate::backend::SyncError> {
    std::thread::scope(|s| {
        s.spawn(cleanup_system_blocking).join().unwrap_or_else(|_| {
            Err(crate::backend::SyncError {
                mode: "ipvs",
                message: "the cleanup thread panicked".into(),
            })
        })
    })
}

fn cleanup_system_blocking() -> Result<(), crate::backend::SyncError> {
    let err = |e: &dyn std::fmt::Display| crate::backend::SyncError {
        mode: "ipvs",
        message: e.to_string(),
    };
    let mut kernel = match NetlinkIpvs::open() {
        Ok(k) => Some(k),
        Err(IpvsError::Unavailable) => None,
        Err(e) => return Err(err(&e)),
    };
    let links = dummy::Links::open().map_err(|e| err(&e))?;
    cleanup(
        kernel.as_mut().map(|k| k as &mut dyn IpvsKernel),
        &mut crate::iptables::SystemNetfilter::default(),
        &links,
        &[false, true],
    )
}

#[cfg(test)]
mod tests;
