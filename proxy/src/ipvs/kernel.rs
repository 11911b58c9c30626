//! The seam to the kernel's IPVS table: a narrow trait the proxier drives, and its
//! implementation over a NETLINK_GENERIC socket speaking the "IPVS" family.

use super::netlink::{
    self, Command, Destination, NLMSG_DONE, NLMSG_ERROR, RealServer, Timeouts, VirtualServer,
};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error(
        "the kernel has no IPVS support: generic netlink family \"IPVS\" is not registered \
         (load the ip_vs kernel module, e.g. `modprobe ip_vs`, or use --proxy-mode iptables or nftables)"
    )]
    Unavailable,
    #[error("IPVS netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("IPVS: {what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IPVS: {0}")]
    Decode(#[from] netlink::DecodeError),
    #[error("IPVS: {0}")]
    Protocol(String),
}

/// What the proxier needs from IPVS. Implemented over netlink for real, and by a
/// recording table in tests (this seam is what lets the whole sync run without the
/// ip_vs module).
pub trait IpvsKernel: Send {
    /// Every virtual server in the kernel (of this network namespace).
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError>;
    /// The real servers of `vs`, with their connection counts.
    fn destinations(&mut self, vs: &VirtualServer) -> Result<Vec<Destination>, IpvsError>;
    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError>;
    fn update_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError>;
    fn delete_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError>;
    fn add_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError>;
    fn update_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError>;
    fn delete_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError>;
    /// `ipvsadm --set`: connection timeouts, 0 keeps the kernel's value.
    fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), IpvsError>;
    /// Removes every virtual server (`--cleanup`).
    fn flush(&mut self) -> Result<(), IpvsError>;
}

/// Replies are read with this timeout, so a kernel that never answers cannot hang a sync.
const REPLY_TIMEOUT_S: i64 = 30;
const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;

fn sock_err(e: nix::Error) -> IpvsError {
    IpvsError::Socket(std::io::Error::from(e))
}

/// A NETLINK_GENERIC socket: requests out, their answers (dump parts or the
/// acknowledgement) back, errors as the kernel's errno.
pub struct GenlSocket {
    fd: OwnedFd,
    seq: u32,
}

impl GenlSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, IpvsError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkGeneric,
        )
        .map_err(sock_err)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sock_err)?;
        setsockopt(&fd, sockopt::RcvBuf, &(4 << 20)).map_err(sock_err)?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT_S, 0),
        )
        .map_err(sock_err)?;
        Ok(GenlSocket { fd, seq: 0 })
    }

    /// The id of generic netlink family `name`; `None` when the kernel has no such
    /// family. Asking loads the family's module when the kernel can (for IPVS the
    /// alias net-pf-16-proto-16-family-IPVS names ip_vs).
    pub fn resolve(&mut self, name: &str) -> Result<Option<u16>, IpvsError> {
        let answer = match self.exchange(&format!("resolving family {name:?}"), false, |seq| {
            netlink::get_family(seq, name)
        }) {
            Ok(answer) => answer,
            Err(IpvsError::Kernel { source, .. }) if source.raw_os_error() == Some(ENOENT) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let first = answer.first().ok_or_else(|| {
            IpvsError::Protocol(format!("no answer to the lookup of family {name:?}"))
        })?;
        Ok(Some(netlink::parse_family_id(first)?))
    }

    /// Sends one request and collects the answer's messages: for a dump everything
    /// up to NLMSG_DONE, otherwise up to the acknowledgement.
    pub fn exchange(
        &mut self,
        what: &str,
        dump: bool,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, IpvsError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        let n = send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).map_err(sock_err)?;
        if n != msg.len() {
            return Err(IpvsError::Protocol(format!(
                "sent {n} of {} bytes",
                msg.len()
            )));
        }
        let kernel_err = |errno: i32| IpvsError::Kernel {
            what: what.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(sock_err)?;
            for reply in netlink::replies(&buf[..n])? {
                if reply.seq != seq {
                    continue;
                }
                match reply.ty {
                    NLMSG_ERROR if reply.errno() != 0 => return Err(kernel_err(reply.errno())),
                    NLMSG_ERROR if !dump => return Ok(out),
                    NLMSG_DONE if reply.errno() > 0 => return Err(kernel_err(reply.errno())),
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {}
                    _ => out.push(reply.msg.to_vec()),
                }
            }
        }
    }
}

/// IPVS over generic netlink, in the network namespace the socket was opened in.
pub struct NetlinkIpvs {
    sock: GenlSocket,
    family: u16,
}

/// An address from TEST-NET-2 that no node uses, as upstream's probe does.
const PROBE_ADDR: [u8; 4] = [198, 51, 100, 0];

impl NetlinkIpvs {
    /// Opens the socket and resolves the "IPVS" family; a kernel without it cannot
    /// do IPVS at all (no ip_vs module). Upstream's failure mode, minus its bug of
    /// mistaking a missing family for an empty table.
    pub fn open() -> Result<Self, IpvsError> {
        let mut sock = GenlSocket::open()?;
        let family = sock
            .resolve(netlink::IPVS_GENL_NAME)?
            .ok_or(IpvsError::Unavailable)?;
        Ok(NetlinkIpvs { sock, family })
    }

    /// Upstream's startup check: IPVS can be listed, and a virtual server with
    /// `scheduler` can be made (which loads the scheduler's module), unless one
    /// using it exists already.
    pub fn check_scheduler(&mut self, scheduler: &str) -> Result<(), IpvsError> {
        if self.services()?.iter().any(|vs| vs.scheduler == scheduler) {
            return Ok(());
        }
        let probe = VirtualServer {
            addr: PROBE_ADDR.into(),
            protocol: 6,
            port: 20000,
            scheduler: scheduler.to_string(),
            flags: 0,
            timeout: 0,
        };
        self.add_service(&probe).map_err(|e| match e {
            IpvsError::Kernel { source, .. } => IpvsError::Kernel {
                what: format!("scheduler {scheduler:?} (ipvs.scheduler) cannot be used"),
                source,
            },
            e => e,
        })?;
        self.delete_service(&probe)
    }

    fn exchange(
        &mut self,
        what: &str,
        dump: bool,
        build: impl FnOnce(u16, u32) -> Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, IpvsError> {
        let family = self.family;
        self.sock.exchange(what, dump, |seq| build(family, seq))
    }

    fn command(
        &mut self,
        what: String,
        build: impl FnOnce(u16, u32) -> Vec<u8>,
    ) -> Result<(), IpvsError> {
        self.exchange(&what, false, build).map(|_| ())
    }
}

fn describe(vs: &VirtualServer) -> String {
    let proto = match vs.protocol {
        6 => "TCP",
        17 => "UDP",
        132 => "SCTP",
        _ => "?",
    };
    let addr = match vs.addr {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    };
    format!("{proto} {addr}:{}", vs.port)
}

impl IpvsKernel for NetlinkIpvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        let msgs = self.exchange("listing virtual servers", true, netlink::list_services)?;
        let mut out = Vec::with_capacity(msgs.len());
        for m in &msgs {
            out.extend(netlink::parse_service(m)?);
        }
        Ok(out)
    }

    fn destinations(&mut self, vs: &VirtualServer) -> Result<Vec<Destination>, IpvsError> {
        let msgs = self.exchange(
            &format!("listing real servers of {}", describe(vs)),
            true,
            |f, seq| netlink::list_dests(f, seq, vs),
        )?;
        msgs.iter()
            .map(|m| netlink::parse_dest(m, &vs.addr).map_err(IpvsError::from))
            .collect()
    }

    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        self.command(format!("adding virtual server {}", describe(vs)), |f, s| {
            netlink::service(f, s, Command::NewService, vs)
        })
    }

    fn update_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        self.command(
            format!("updating virtual server {}", describe(vs)),
            |f, s| netlink::service(f, s, Command::SetService, vs),
        )
    }

    fn delete_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        self.command(
            format!("deleting virtual server {}", describe(vs)),
            |f, s| netlink::service(f, s, Command::DelService, vs),
        )
    }

    fn add_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        self.command(
            format!(
                "adding real server {}:{} to {}",
                rs.addr,
                rs.port,
                describe(vs)
            ),
            |f, s| netlink::dest(f, s, Command::NewDest, vs, rs),
        )
    }

    fn update_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        self.command(
            format!(
                "updating real server {}:{} of {}",
                rs.addr,
                rs.port,
                describe(vs)
            ),
            |f, s| netlink::dest(f, s, Command::SetDest, vs, rs),
        )
    }

    fn delete_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        self.command(
            format!(
                "deleting real server {}:{} of {}",
                rs.addr,
                rs.port,
                describe(vs)
            ),
            |f, s| netlink::dest(f, s, Command::DelDest, vs, rs),
        )
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), IpvsError> {
        self.command("setting connection timeouts".into(), |f, s| {
            netlink::set_timeouts(f, s, timeouts)
        })
    }

    fn flush(&mut self) -> Result<(), IpvsError> {
        self.command("flushing virtual servers".into(), netlink::flush)
    }
}
