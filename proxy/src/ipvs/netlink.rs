//! Generic netlink messages for the kernel's IPVS family (linux/ip_vs.h), encoded by
//! hand: the netlink-packet crates have no IPVS message types.

use std::net::IpAddr;

pub const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLA_F_NESTED: u16 = 0x8000;
pub const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;

/// IPVS generic netlink commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    NewService = 1,
    SetService = 2,
    DelService = 3,
    NewDest = 5,
    SetDest = 6,
    DelDest = 7,
    Flush = 17,
}

const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
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
const DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// IP_VS_SVC_F_PERSISTENT: ClientIP session affinity.
pub const SVC_F_PERSISTENT: u32 = 0x1;
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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
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

fn dest_attrs(rs: &RealServer) -> Attrs {
    let mut a = Attrs::default();
    a.put(DEST_ATTR_ADDR, &inet_addr(&rs.addr))
        .be16(DEST_ATTR_PORT, rs.port)
        .u32(DEST_ATTR_FWD_METHOD, CONN_F_MASQ)
        .u32(DEST_ATTR_WEIGHT, rs.weight)
        .u32(DEST_ATTR_U_THRESH, 0)
        .u32(DEST_ATTR_L_THRESH, 0)
        .u16(DEST_ATTR_ADDR_FAMILY, family(&rs.addr));
    a
}

fn message(family_id: u16, seq: u32, cmd: u8, version: u8, attrs: &Attrs) -> Vec<u8> {
    let len = 16 + 4 + attrs.0.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family_id.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(&attrs.0);
    m
}

/// CTRL_CMD_GETFAMILY for "IPVS": its answer carries the family id used below.
pub fn get_family(seq: u32) -> Vec<u8> {
    let mut a = Attrs::default();
    a.string(CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME);
    message(GENL_ID_CTRL, seq, CTRL_CMD_GETFAMILY, 1, &a)
}

/// A service command (new/set/delete).
pub fn service(family_id: u16, seq: u32, cmd: Command, vs: &VirtualServer) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nested(
        CMD_ATTR_SERVICE,
        service_attrs(vs, cmd != Command::DelService),
    );
    message(family_id, seq, cmd as u8, IPVS_GENL_VERSION, &a)
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
        .nested(CMD_ATTR_DEST, dest_attrs(rs));
    message(family_id, seq, cmd as u8, IPVS_GENL_VERSION, &a)
}

pub fn flush(family_id: u16, seq: u32) -> Vec<u8> {
    message(
        family_id,
        seq,
        Command::Flush as u8,
        IPVS_GENL_VERSION,
        &Attrs::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs() -> VirtualServer {
        VirtualServer {
            addr: "10.96.0.10".parse().unwrap(),
            protocol: 6,
            port: 80,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        }
    }

    #[test]
    fn new_service_message_layout() {
        let m = service(0x1c, 7, Command::NewService, &vs());
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len(),
            "nlmsg_len"
        );
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            0x1c,
            "family id"
        );
        assert_eq!(
            u16::from_ne_bytes(m[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7, "seq");
        assert_eq!(
            &m[16..20],
            &[1, 1, 0, 0],
            "genl header: IPVS_CMD_NEW_SERVICE, version 1"
        );
        // Nested IPVS_CMD_ATTR_SERVICE spanning the rest of the message.
        assert_eq!(
            u16::from_ne_bytes(m[20..22].try_into().unwrap()) as usize,
            m.len() - 20
        );
        assert_eq!(
            u16::from_ne_bytes(m[22..24].try_into().unwrap()),
            CMD_ATTR_SERVICE | NLA_F_NESTED
        );
        let inner = &m[24..];
        // AF (u16, padded), protocol, 16-byte address, port in network order.
        assert_eq!(&inner[..8], &[6, 0, 1, 0, 2, 0, 0, 0]);
        assert_eq!(&inner[8..16], &[6, 0, 2, 0, 6, 0, 0, 0]);
        assert_eq!(&inner[16..20], &[20, 0, 3, 0]);
        assert_eq!(
            &inner[20..36],
            &[10, 96, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&inner[36..42], &[6, 0, 4, 0, 0, 80]);
        // Scheduler name, NUL-terminated and padded: "rr\0" in an 8-byte attribute.
        assert_eq!(&inner[44..52], &[7, 0, 6, 0, b'r', b'r', 0, 0]);
        assert_eq!(m.len() % 4, 0);
    }

    #[test]
    fn dest_and_delete_messages() {
        let rs = RealServer {
            addr: "fd00::5".parse().unwrap(),
            port: 8080,
            weight: 1,
        };
        let v6 = VirtualServer {
            addr: "fd00::a".parse().unwrap(),
            ..vs()
        };
        let m = dest(0x1c, 1, Command::NewDest, &v6, &rs);
        assert_eq!(m[16], Command::NewDest as u8);
        let port = 8080u16.to_be_bytes();
        assert!(
            m.windows(6)
                .any(|w| w == [6, 0, DEST_ATTR_PORT as u8, 0, port[0], port[1]])
        );
        assert!(
            m.windows(6)
                .any(|w| w == [6, 0, DEST_ATTR_ADDR_FAMILY as u8, 0, AF_INET6 as u8, 0])
        );
        let del = service(0x1c, 2, Command::DelService, &vs());
        assert!(
            del.len() < service(0x1c, 2, Command::NewService, &vs()).len(),
            "delete carries only the key"
        );
        let fam = get_family(3);
        assert_eq!(
            u16::from_ne_bytes(fam[4..6].try_into().unwrap()),
            GENL_ID_CTRL
        );
        assert!(fam.windows(5).any(|w| w == b"IPVS\0"));
    }
}
