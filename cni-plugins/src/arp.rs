//! Gratuitous ARP: announces a container's IPv4 addresses so neighbours drop
//! stale entries for an address that moved to a new MAC. Written by hand
//! over an AF_PACKET socket because no maintained crate sends one.
//!
//! The announcements go out from a detached helper: the bridge port only
//! starts forwarding once the kernel's link watcher has seen the carrier
//! (asynchronously, right after the link comes up), and closing a packet
//! socket waits for an RCU grace period the plugin should not wait for.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::netns::NetNs;
use crate::types::{CniError, CniResult};

const ETH_P_ARP: u16 = 0x0806;
/// Like `arping -U -c 3`, spaced so that at least one lands after the port forwards.
const ANNOUNCEMENTS: u32 = 3;
const SPACING: Duration = Duration::from_millis(20);

/// The 42-byte Ethernet + ARP frame announcing `ip` at `mac` (sender and
/// target protocol address both `ip`, broadcast).
pub fn frame(mac: &[u8; 6], ip: Ipv4Addr, op: u16) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends the announcements from interface `ifindex` of the calling thread's netns.
fn announce(ifindex: u32, mac: &[u8; 6], ips: &[Ipv4Addr]) -> std::io::Result<()> {
    // SAFETY: socket/sendto on a descriptor we own, with a sockaddr_ll that
    // lives across each call; the descriptor is closed at process exit.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for round in 0..ANNOUNCEMENTS {
            if round > 0 {
                std::thread::sleep(SPACING);
            }
            for ip in ips {
                for op in [1u16, 2u16] {
                    let f = frame(mac, *ip, op);
                    let sent = libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    if sent < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Announces `ips` from a detached helper inside `ns`.
pub fn announce_detached(
    ns: &NetNs,
    ifindex: u32,
    mac: [u8; 6],
    ips: Vec<Ipv4Addr>,
) -> CniResult<()> {
    crate::detach::spawn(move || {
        let sent = ns.enter().ok().map(|_in| announce(ifindex, &mac, &ips));
        i32::from(!matches!(sent, Some(Ok(()))))
    })
    .map(|_| ())
    .map_err(|e| CniError {
        msg: format!("cannot start gratuitous ARP helper: {}", e.msg),
        ..e
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_announces_the_address() {
        let f = super::frame(&[2, 0, 0, 0, 0, 1], "10.0.0.5".parse().unwrap(), 2);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[28..32], &[10, 0, 0, 5]);
        assert_eq!(&f[38..42], &[10, 0, 0, 5]);
    }
}
