//! Generic netlink messages for the kernel's IPVS family (linux/ip_vs.h), encoded and
//! decoded by hand: no Rust crate carries the IPVS message types (the rust-netlink
//! family has generic-netlink framing and the controller only), and the few framing
//! bytes such a crate would save are not worth a second message model.

use std::net::IpAddr;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;
/// Netlink header (16 bytes) plus generic netlink header (4 bytes).
const HEADERS: usize = 20;

/// IPVS generic netlink commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    NewService = 1,
    SetService = 2,
    DelService = 3,
    GetService = 4,
    NewDest = 5,
    SetDest = 6,
    DelDest = 7,
    GetDest = 8,
    SetConfig = 12,
    Flush = 17,
}

const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// IP_VS_SVC_F_PERSISTENT: ClientIP session affinity.
pub const SVC_F_PERSISTENT: u32 = 0x1;
/// IP_VS_SVC_F_HASHED: set by the kernel on every listed service, never by us.
const SVC_F_HASHED: u32 = 0x2;
/// IP_VS_SVC_F_SCHED_SH_PORT (IP_VS_SVC_F_SCHED2): the "mh" scheduler hashes on
/// source address and port, as upstream asks for it.
pub const SVC_F_SOURCE_HASH: u32 = 0x10;
/// IP_VS_CONN_F_MASQ: NAT forwarding, as kube-proxy uses.
const CONN_F_MASQ: u32 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A virtual server as IPVS keys it, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualServer {
    pub addr: IpAddr,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17) or IPPROTO_SCTP (132).
    pub protocol: u16,
    pub port: u16,
    pub scheduler: String,
    pub flags: u32,
    /// Persistence timeout in seconds (affinity), 0 for none.
    pub timeout: u32,
}

/// What identifies a virtual server in the kernel: address, protocol, port.
pub type ServiceKey = (IpAddr, u16, u16);

impl VirtualServer {
    pub fn key(&self) -> ServiceKey {
        (self.addr, self.protocol, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// A real server as the kernel lists it, with its connection counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub server: RealServer,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// IPVS connection timeouts in seconds (`ipvsadm --set`); 0 leaves one unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

fn family(ip: &IpAddr) -> u16 {
    if ip.is_ipv6() { AF_INET6 } else { AF_INET }
}

/// `union nf_inet_addr`: 16 bytes, IPv4 in the first four.
fn inet_addr(ip: &IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

/// Netlink attributes: 4-byte header (length, type), payload, padding to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }

    fn u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    /// Ports travel in network byte order.
    fn be16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    fn string(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(ty, &b)
    }

    fn nested(&mut self, ty: u16, inner: Attrs) -> &mut Self {
        self.put(ty | NLA_F_NESTED, &inner.0)
    }
}

fn service_attrs(vs: &VirtualServer, full: bool) -> Attrs {
    let mut a = Attrs::default();
    a.u16(SVC_ATTR_AF, family(&vs.addr))
        .u16(SVC_ATTR_PROTOCOL, vs.protocol)
        .put(SVC_ATTR_ADDR, &inet_addr(&vs.addr))
        .be16(SVC_ATTR_PORT, vs.port);
    if full {
        let mut flags = Vec::with_capacity(8);
        flags.extend_from_slice(&vs.flags.to_ne_bytes());
        flags.extend_from_slice(&u32::MAX.to_ne_bytes());
        let netmask: u32 = if vs.addr.is_ipv6() { 128 } else { 0xffff_ffff };
        a.string(SVC_ATTR_SCHED_NAME, &vs.scheduler)
            .put(SVC_ATTR_FLAGS, &flags)
            .u32(SVC_ATTR_TIMEOUT, vs.timeout)
            .u32(SVC_ATTR_NETMASK, netmask);
    }
    a
}

fn dest_attrs(rs: &RealServer, full: bool) -> Attrs {
    let mut a = Attrs::default();
    a.put(DEST_ATTR_ADDR, &inet_addr(&rs.addr))
        .be16(DEST_ATTR_PORT, rs.port);
    if full {
        a.u32(DEST_ATTR_FWD_METHOD, CONN_F_MASQ)
            .u32(DEST_ATTR_WEIGHT, rs.weight)
            .u32(DEST_ATTR_U_THRESH, 0)
            .u32(DEST_ATTR_L_THRESH, 0)
            .u16(DEST_ATTR_ADDR_FAMILY, family(&rs.addr));
    }
    a
}

fn message(family_id: u16, seq: u32, cmd: u8, version: u8, flags: u16, attrs: &Attrs) -> Vec<u8> {
    let len = HEADERS + attrs.0.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family_id.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(&attrs.0);
    m
}

fn ipvs_request(family_id: u16, seq: u32, cmd: Command, attrs: &Attrs) -> Vec<u8> {
    message(
        family_id,
        seq,
        cmd as u8,
        IPVS_GENL_VERSION,
        NLM_F_REQUEST | NLM_F_ACK,
        attrs,
    )
}

/// CTRL_CMD_GETFAMILY for family `name` ("IPVS"): its answer carries the id that
/// the family's messages are sent with.
pub fn get_family(seq: u32, name: &str) -> Vec<u8> {
    let mut a = Attrs::default();
    a.string(CTRL_ATTR_FAMILY_NAME, name);
    message(
        GENL_ID_CTRL,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        NLM_F_REQUEST | NLM_F_ACK,
        &a,
    )
}

/// A service command (new/set/delete).
pub fn service(family_id: u16, seq: u32, cmd: Command, vs: &VirtualServer) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nested(
        CMD_ATTR_SERVICE,
        service_attrs(vs, cmd != Command::DelService),
    );
    ipvs_request(family_id, seq, cmd, &a)
}

/// A destination command (new/set/delete) for a real server of `vs`.
pub fn dest(
    family_id: u16,
    seq: u32,
    cmd: Command,
    vs: &VirtualServer,
    rs: &RealServer,
) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nested(CMD_ATTR_SERVICE, service_attrs(vs, false))
        .nested(CMD_ATTR_DEST, dest_attrs(rs, cmd != Command::DelDest));
    ipvs_request(family_id, seq, cmd, &a)
}

/// Dump of every virtual server.
pub fn list_services(family_id: u16, seq: u32) -> Vec<u8> {
    message(
        family_id,
        seq,
        Command::GetService as u8,
        IPVS_GENL_VERSION,
        NLM_F_REQUEST | NLM_F_DUMP,
        &Attrs::default(),
    )
}

/// Dump of the real servers of `vs`.
pub fn list_dests(family_id: u16, seq: u32, vs: &VirtualServer) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nested(CMD_ATTR_SERVICE, service_attrs(vs, false));
    message(
        family_id,
        seq,
        Command::GetDest as u8,
        IPVS_GENL_VERSION,
        NLM_F_REQUEST | NLM_F_DUMP,
        &a,
    )
}

/// IPVS_CMD_SET_CONFIG with the connection timeouts.
pub fn set_timeouts(family_id: u16, seq: u32, t: Timeouts) -> Vec<u8> {
    let mut a = Attrs::default();
    a.u32(CMD_ATTR_TIMEOUT_TCP, t.tcp)
        .u32(CMD_ATTR_TIMEOUT_TCP_FIN, t.tcp_fin)
        .u32(CMD_ATTR_TIMEOUT_UDP, t.udp);
    ipvs_request(family_id, seq, Command::SetConfig, &a)
}

pub fn flush(family_id: u16, seq: u32) -> Vec<u8> {
    ipvs_request(family_id, seq, Command::Flush, &Attrs::default())
}

/// A reply the kernel sent that does not have the shape linux/ip_vs.h gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed IPVS netlink reply: {0}")]
pub struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// One netlink message of a reply buffer.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub ty: u16,
    pub seq: u32,
    pub msg: &'a [u8],
}

impl Reply<'_> {
    /// The (positive) errno of an NLMSG_ERROR or of a failed dump's NLMSG_DONE;
    /// 0 for an acknowledgement.
    pub fn errno(&self) -> i32 {
        self.msg
            .get(16..20)
            .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }
}

/// Splits a datagram into its netlink messages.
pub fn replies(buf: &[u8]) -> Result<Vec<Reply<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            return Err(bad(format!("message length {len} at offset {at}")));
        }
        out.push(Reply {
            ty: u16::from_ne_bytes([buf[at + 4], buf[at + 5]]),
            seq: u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]),
            msg: &buf[at..at + len],
        });
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// Attributes in `data`: (type without flags, payload).
fn attrs(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > data.len() {
            return None;
        }
        let len = u16::from_ne_bytes([data[at], data[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([data[at + 2], data[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > data.len() {
            return None;
        }
        let payload = &data[at + 4..at + len];
        at += (len + 3) & !3;
        Some((ty, payload))
    })
}

fn genl_attrs(msg: &[u8]) -> Result<impl Iterator<Item = (u16, &[u8])>, DecodeError> {
    if msg.len() < HEADERS {
        return Err(bad(format!(
            "{} bytes, shorter than its headers",
            msg.len()
        )));
    }
    Ok(attrs(&msg[HEADERS..]))
}

fn get_u16(what: &str, b: &[u8]) -> Result<u16, DecodeError> {
    b.get(..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(|| bad(format!("{what}: {} bytes", b.len())))
}

fn get_u32(what: &str, b: &[u8]) -> Result<u32, DecodeError> {
    b.get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| bad(format!("{what}: {} bytes", b.len())))
}

fn get_be16(what: &str, b: &[u8]) -> Result<u16, DecodeError> {
    b.get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| bad(format!("{what}: {} bytes", b.len())))
}

fn get_addr(what: &str, af: u16, b: &[u8]) -> Result<IpAddr, DecodeError> {
    match af {
        AF_INET => b.get(..4).map(|b| IpAddr::from([b[0], b[1], b[2], b[3]])),
        AF_INET6 => b
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(IpAddr::from),
        _ => None,
    }
    .ok_or_else(|| {
        bad(format!(
            "{what}: address family {af} with {} bytes",
            b.len()
        ))
    })
}

/// The family id in a CTRL_CMD_NEWFAMILY answer.
pub fn parse_family_id(msg: &[u8]) -> Result<u16, DecodeError> {
    genl_attrs(msg)?
        .find(|(ty, _)| *ty == CTRL_ATTR_FAMILY_ID)
        .ok_or_else(|| bad("family answer without CTRL_ATTR_FAMILY_ID"))
        .and_then(|(_, b)| get_u16("CTRL_ATTR_FAMILY_ID", b))
}

fn nested<'a>(msg: &'a [u8], ty: u16, name: &str) -> Result<&'a [u8], DecodeError> {
    genl_attrs(msg)?
        .find(|(t, _)| *t == ty)
        .map(|(_, b)| b)
        .ok_or_else(|| bad(format!("reply without {name}")))
}

/// A virtual server from a service dump; `None` for firewall-mark services, which
/// have no address and are never ours.
pub fn parse_service(msg: &[u8]) -> Result<Option<VirtualServer>, DecodeError> {
    let svc = nested(msg, CMD_ATTR_SERVICE, "IPVS_CMD_ATTR_SERVICE")?;
    let (mut af, mut protocol, mut addr, mut port) = (None, None, None, None);
    let (mut scheduler, mut flags, mut timeout) = (String::new(), 0, 0);
    for (ty, b) in attrs(svc) {
        match ty {
            SVC_ATTR_AF => af = Some(get_u16("IPVS_SVC_ATTR_AF", b)?),
            SVC_ATTR_PROTOCOL => protocol = Some(get_u16("IPVS_SVC_ATTR_PROTOCOL", b)?),
            SVC_ATTR_ADDR => addr = Some(b),
            SVC_ATTR_PORT => port = Some(get_be16("IPVS_SVC_ATTR_PORT", b)?),
            SVC_ATTR_FWMARK if get_u32("IPVS_SVC_ATTR_FWMARK", b)? != 0 => return Ok(None),
            SVC_ATTR_SCHED_NAME => {
                scheduler =
                    String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or(&[])).into_owned()
            }
            SVC_ATTR_FLAGS => flags = get_u32("IPVS_SVC_ATTR_FLAGS", b)? & !SVC_F_HASHED,
            SVC_ATTR_TIMEOUT => timeout = get_u32("IPVS_SVC_ATTR_TIMEOUT", b)?,
            _ => {}
        }
    }
    let af = af.ok_or_else(|| bad("service without IPVS_SVC_ATTR_AF"))?;
    let addr = addr.ok_or_else(|| bad("service without IPVS_SVC_ATTR_ADDR"))?;
    Ok(Some(VirtualServer {
        addr: get_addr("IPVS_SVC_ATTR_ADDR", af, addr)?,
        protocol: protocol.ok_or_else(|| bad("service without IPVS_SVC_ATTR_PROTOCOL"))?,
        port: port.ok_or_else(|| bad("service without IPVS_SVC_ATTR_PORT"))?,
        scheduler,
        flags,
        timeout,
    }))
}

/// A real server from a destination dump of the service at `service_addr`
/// (destinations without their own family attribute share the service's family).
pub fn parse_dest(msg: &[u8], service_addr: &IpAddr) -> Result<Destination, DecodeError> {
    let d = nested(msg, CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST")?;
    let (mut addr, mut port, mut weight, mut af) = (None, None, 0, family(service_addr));
    let (mut active, mut inactive) = (0, 0);
    for (ty, b) in attrs(d) {
        match ty {
            DEST_ATTR_ADDR => addr = Some(b),
            DEST_ATTR_PORT => port = Some(get_be16("IPVS_DEST_ATTR_PORT", b)?),
            DEST_ATTR_WEIGHT => weight = get_u32("IPVS_DEST_ATTR_WEIGHT", b)?,
            DEST_ATTR_ACTIVE_CONNS => active = get_u32("IPVS_DEST_ATTR_ACTIVE_CONNS", b)?,
            DEST_ATTR_INACT_CONNS => inactive = get_u32("IPVS_DEST_ATTR_INACT_CONNS", b)?,
            DEST_ATTR_ADDR_FAMILY => af = get_u16("IPVS_DEST_ATTR_ADDR_FAMILY", b)?,
            _ => {}
        }
    }
    let addr = addr.ok_or_else(|| bad("destination without IPVS_DEST_ATTR_ADDR"))?;
    Ok(Destination {
        server: RealServer {
            addr: get_addr("IPVS_DEST_ATTR_ADDR", af, addr)?,
            port: port.ok_or_else(|| bad("destination without IPVS_DEST_ATTR_PORT"))?,
            weight,
        },
        active_conns: active,
        inactive_conns: inactive,
    })
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
