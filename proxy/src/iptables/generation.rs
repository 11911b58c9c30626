//! The nf_tables ruleset generation of the current network namespace.
//!
//! The kernel bumps it on every committed nf_tables transaction (any table, any
//! family, anyone's), so an unchanged generation proves that nothing in netfilter
//! changed. iptables-nft reads it the same way (NFT_MSG_GETGEN); no maintained crate
//! offers this one request without wrapping all of libnftnl, so it is written here.

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::os::fd::AsRawFd;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
/// struct nfgenmsg: family, version, resource id.
const NFGENMSG_LEN: usize = 4;

/// Reads the generation id with one netlink request.
pub fn read() -> std::io::Result<u32> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    let mut request = Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN);
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN) as u32;
    request.extend_from_slice(&len.to_ne_bytes());
    request.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN).to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns ours
    request.extend_from_slice(&[0, 0, 0, 0]); // AF_UNSPEC, NFNETLINK_V0, resource 0
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 8192];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    parse_reply(&buf[..n])
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("nf_tables generation reply: {what}"),
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The generation from a NEWGEN reply, or the error a NLMSG_ERROR reply carries.
fn parse_reply(reply: &[u8]) -> std::io::Result<u32> {
    let len = u32_at(reply, 0).ok_or_else(|| invalid("truncated header"))? as usize;
    let kind = u16_at(reply, 4).ok_or_else(|| invalid("truncated header"))?;
    let msg = reply
        .get(..len)
        .filter(|_| len >= NLMSG_HDRLEN)
        .ok_or_else(|| invalid("bad length"))?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(msg, NLMSG_HDRLEN).ok_or_else(|| invalid("truncated error"))? as i32;
        return Err(std::io::Error::from_raw_os_error(-errno));
    }
    if kind != (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN) {
        return Err(invalid(&format!("unexpected message type {kind:#x}")));
    }
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    while let (Some(attr_len), Some(attr_type)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let attr_len = attr_len as usize;
        if attr_len < 4 {
            break;
        }
        // The top bits flag nesting and byte order; the id is big-endian.
        if attr_type & 0x3fff == NFTA_GEN_ID && attr_len == 8 {
            let id = msg
                .get(at + 4..at + 8)
                .ok_or_else(|| invalid("truncated id"))?;
            return Ok(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
        }
        at += (attr_len + 3) & !3;
    }
    Err(invalid("no generation id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn reads_the_id_among_the_attributes() {
        let mut payload = vec![0, 0, 0, 0];
        // NFTA_GEN_PROC_PID first, then NFTA_GEN_ID.
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&2u16.to_ne_bytes());
        payload.extend_from_slice(&77u32.to_be_bytes());
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        payload.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        let reply = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN, &payload);
        assert_eq!(parse_reply(&reply).unwrap(), 0x0102_0304);
    }

    #[test]
    fn error_replies_and_garbage_are_errors() {
        let reply = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        assert_eq!(parse_reply(&reply).unwrap_err().raw_os_error(), Some(1));
        assert!(parse_reply(&[1, 2, 3]).is_err());
        let no_id = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN, &[0, 0, 0, 0]);
        assert!(parse_reply(&no_id).is_err());
    }

    /// Root only: in a network namespace of this test thread's own, every `nft`
    /// transaction bumps the generation by one.
    #[test]
    fn commits_bump_the_generation() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let before = read().unwrap();
        let nft = |args: &[&str]| {
            let status = std::process::Command::new("nft")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "nft {args:?}");
        };
        nft(&["add", "table", "ip", "gentest"]);
        nft(&["add", "chain", "ip", "gentest", "c"]);
        assert_eq!(read().unwrap(), before.wrapping_add(2));
    }
}
