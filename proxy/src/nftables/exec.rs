//! The seam to the kernel for nftables mode: transactions and small listings over a
//! NETLINK_NETFILTER socket. Unlike `nft -f`, nothing of the existing ruleset is read
//! before a change, so a sync costs the size of the change, not of the table.

use super::netlink::{
    self, Batch, MsgType, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, Writer,
};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the kernel rejected the transaction at {what}: {source}")]
    Rejected {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
}

/// Families of nf_tables tables (NFPROTO_*).
pub const FAMILY_IP: u8 = 2;
pub const FAMILY_IP6: u8 = 10;

pub trait Nft: Send {
    /// Applies `batch` as one transaction: all of it or nothing.
    fn commit(&mut self, batch: Batch) -> Result<(), NftError>;
    /// Names of the chains (or sets and maps, with `sets`) in `table`; empty if there
    /// is no such table.
    fn list(&mut self, family: u8, table: &str, sets: bool) -> Result<Vec<String>, NftError>;
    /// Whether `table` exists.
    fn table_exists(&mut self, family: u8, table: &str) -> bool;
}

#[derive(Default)]
pub struct SystemNft;

/// Replies are read with this timeout, so a kernel that never answers cannot hang a sync.
const REPLY_TIMEOUT_S: i64 = 60;

fn io(e: nix::Error) -> NftError {
    NftError::Socket(std::io::Error::from(e))
}

fn open(send_size: usize) -> Result<OwnedFd, NftError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(io)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(io)?;
    // The kernel takes a batch only from one write, so the buffer must hold all of it.
    setsockopt(&fd, sockopt::SndBufForce, &(send_size + 65536)).map_err(io)?;
    setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20)).map_err(io)?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(REPLY_TIMEOUT_S, 0),
    )
    .map_err(io)?;
    Ok(fd)
}

fn send_all(fd: &OwnedFd, buf: &[u8]) -> Result<(), NftError> {
    let n = send(fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(io)?;
    if n != buf.len() {
        return Err(NftError::Protocol(format!(
            "sent {n} of {} bytes of a transaction",
            buf.len()
        )));
    }
    Ok(())
}

/// One received netlink message: type, sequence number, whole message bytes.
struct Reply<'a> {
    ty: u16,
    seq: u32,
    msg: &'a [u8],
}

impl Reply<'_> {
    /// The error code of an NLMSG_ERROR (0 for an acknowledgement).
    fn errno(&self) -> i32 {
        self.msg
            .get(16..20)
            .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }
}

/// Reads datagrams and hands each message to `f` until it returns `Some`.
fn read_replies<T>(
    fd: &OwnedFd,
    mut f: impl FnMut(Reply<'_>) -> Result<Option<T>, NftError>,
) -> Result<T, NftError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io)?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if len < 16 || at + len > n {
                return Err(NftError::Protocol(format!(
                    "malformed netlink reply (length {len})"
                )));
            }
            let reply = Reply {
                ty: u16::from_ne_bytes([buf[at + 4], buf[at + 5]]),
                seq: u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]),
                msg: &buf[at..at + len],
            };
            if let Some(done) = f(reply)? {
                return Ok(done);
            }
            at += (len + 3) & !3;
        }
    }
}

impl Nft for SystemNft {
    fn commit(&mut self, batch: Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (buf, offsets, last) = batch.finish();
        let fd = open(buf.len())?;
        send_all(&fd, &buf)?;
        let mut first_error: Option<NftError> = None;
        // Errors arrive for each failing message; the last message's acknowledgement
        // (or error) closes the exchange. An error on BATCH_BEGIN (seq 0) means the
        // batch was not processed at all.
        read_replies(&fd, |r| {
            if r.ty != NLMSG_ERROR {
                return Ok(None);
            }
            let errno = r.errno();
            if errno != 0 && first_error.is_none() {
                let what = offsets
                    .get(r.seq as usize)
                    .map(|&o| netlink::describe(&buf[o as usize..]))
                    .unwrap_or_else(|| format!("message {}", r.seq));
                first_error = Some(NftError::Rejected {
                    what,
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            Ok((r.seq == last || r.seq == 0).then_some(()))
        })?;
        first_error.map_or(Ok(()), Err)
    }

    fn list(&mut self, family: u8, table: &str, sets: bool) -> Result<Vec<String>, NftError> {
        let (ty, name_attr) = if sets {
            (MsgType::GetSet, 2)
        } else {
            (MsgType::GetChain, 3)
        };
        let mut w = Writer::default();
        let m = w.begin_msg(ty.wire(), NLM_F_REQUEST | NLM_F_DUMP, 1, family, 0);
        if sets {
            w.str(1, table); // sets are dumped per table
        }
        w.end_msg(m);
        let fd = open(w.buf.len())?;
        send_all(&fd, &w.buf)?;
        let mut names = Vec::new();
        read_replies(&fd, |r| {
            match r.ty {
                NLMSG_DONE => return Ok(Some(())),
                NLMSG_ERROR if r.errno() == libc_enoent() => return Ok(Some(())),
                NLMSG_ERROR if r.errno() != 0 => {
                    return Err(NftError::Rejected {
                        what: format!("listing table {table}"),
                        source: std::io::Error::from_raw_os_error(r.errno()),
                    });
                }
                _ => {}
            }
            let mut in_table = false;
            let mut name = None;
            for (a, d) in netlink::attrs(r.msg) {
                if a == 1 {
                    in_table = netlink::attr_str(d) == table;
                } else if a == name_attr {
                    name = Some(netlink::attr_str(d));
                }
            }
            if let (true, Some(n)) = (in_table, name) {
                names.push(n);
            }
            Ok(None)
        })?;
        Ok(names)
    }

    fn table_exists(&mut self, family: u8, table: &str) -> bool {
        let mut w = Writer::default();
        let m = w.begin_msg(
            MsgType::GetTable.wire(),
            NLM_F_REQUEST | NLM_F_ACK,
            1,
            family,
            0,
        );
        w.str(1, table);
        w.end_msg(m);
        let Ok(fd) = open(w.buf.len()) else {
            return false;
        };
        if send_all(&fd, &w.buf).is_err() {
            return false;
        }
        let mut found = false;
        read_replies(&fd, |r| {
            if r.ty == NLMSG_ERROR {
                return Ok(Some(r.errno() == 0 || found));
            }
            found |= r.ty == MsgType::NewTable.wire();
            Ok(None)
        })
        .unwrap_or(false)
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}
