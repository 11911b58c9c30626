//! Gratuitous ARP: announces a new IPv4 address so neighbours drop stale
//! entries for an address that moved to a new MAC. Written by hand over an
//! AF_PACKET socket because no maintained crate sends one.

use std::net::Ipv4Addr;

use crate::types::{CniError, CniResult};

const ETH_P_ARP: u16 = 0x0806;

/// The 42-byte Ethernet + ARP reply frame announcing `ip` at `mac`.
pub fn frame(mac: &[u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&2u16.to_be_bytes()); // reply
    f[22..28].copy_from_slice(mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends one gratuitous ARP reply out of interface `ifindex` (in the
/// namespace of the calling thread).
pub fn announce(ifindex: u32, mac: &[u8; 6], ip: Ipv4Addr) -> CniResult<()> {
    let frame = frame(mac, ip);
    // SAFETY: plain socket/sendto/close on a descriptor we own, with a
    // sockaddr_ll that lives across the call.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(CniError::io(
                "cannot open packet socket for gratuitous ARP",
                std::io::Error::last_os_error(),
            ));
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(CniError::io(
                format!("cannot send gratuitous ARP for {ip}"),
                err,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_is_an_arp_reply_for_the_address() {
        let f = super::frame(&[2, 0, 0, 0, 0, 1], "10.0.0.5".parse().unwrap());
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[28..32], &[10, 0, 0, 5]);
        assert_eq!(&f[38..42], &[10, 0, 0, 5]);
    }
}
