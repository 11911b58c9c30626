//! The sysctls IPVS mode sets, as upstream: in the proxy's network namespace (net
//! sysctls are per namespace; /proc/sys/net follows the calling thread's).

const VS_CONNTRACK: &str = "net/ipv4/vs/conntrack";
const VS_CONN_REUSE_MODE: &str = "net/ipv4/vs/conn_reuse_mode";
const VS_EXPIRE_NODEST_CONN: &str = "net/ipv4/vs/expire_nodest_conn";
const VS_EXPIRE_QUIESCENT_TEMPLATE: &str = "net/ipv4/vs/expire_quiescent_template";
const IP_FORWARD: &str = "net/ipv4/ip_forward";
const ARP_IGNORE: &str = "net/ipv4/conf/all/arp_ignore";
const ARP_ANNOUNCE: &str = "net/ipv4/conf/all/arp_announce";

#[derive(Debug, thiserror::Error)]
#[error("setting sysctl {name} to {value}: {source}")]
pub struct SysctlError {
    pub name: &'static str,
    pub value: u32,
    pub source: std::io::Error,
}

/// Writes `value` unless it is there already.
fn ensure(name: &'static str, value: u32) -> Result<(), SysctlError> {
    let path = format!("/proc/sys/{name}");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == value.to_string() {
        return Ok(());
    }
    std::fs::write(&path, value.to_string()).map_err(|source| SysctlError {
        name,
        value,
        source,
    })
}

/// Kernel release as (major, minor), from /proc/sys/kernel/osrelease.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The sysctls of the ip_vs module: conntrack for masquerading, dropping flows of
/// deleted real servers and stale persistence templates. conn_reuse_mode is set to 0
/// only on kernels 4.1 to 5.8, where 1 made reused ports stall; later kernels fixed it.
pub fn prepare_ipvs_sysctls() -> Result<(), SysctlError> {
    ensure(VS_CONNTRACK, 1)?;
    if kernel_version().is_some_and(|v| ((4, 1)..(5, 9)).contains(&v)) {
        ensure(VS_CONN_REUSE_MODE, 0)?;
    }
    ensure(VS_EXPIRE_NODEST_CONN, 1)?;
    ensure(VS_EXPIRE_QUIESCENT_TEMPLATE, 1)
}

/// Forwarding, and with `strict_arp` ARP replies only for addresses on the asking
/// interface, so the node does not answer ARP for the addresses on kube-ipvs0.
pub fn prepare_node_sysctls(strict_arp: bool) -> Result<(), SysctlError> {
    ensure(IP_FORWARD, 1)?;
    if strict_arp {
        ensure(ARP_IGNORE, 1)?;
        ensure(ARP_ANNOUNCE, 2)?;
    }
    Ok(())
}
