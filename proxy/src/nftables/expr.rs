//! nf_tables rule expressions (the kernel's virtual machine: loads into registers,
//! compares, lookups, verdicts) and the matches this table is built from, each
//! encoded the way `nft` encodes the same text, so `nft list` shows the usual syntax.

use super::netlink::Writer;
use crate::net::Cidr;
use std::net::IpAddr;

/// Registers: 1 is the first 16-byte register; 8.. address 4-byte words.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

/// The register holding the 4-byte word `word` of a value that starts in REG_1.
fn reg_at(word: u32) -> u32 {
    if word == 0 { REG_1 } else { 8 + word }
}

const NFT_DATA_VALUE: u16 = 1;
const NFT_DATA_VERDICT: u16 = 2;

/// A rule's verdict or a verdict map's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Return => -5,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
        }
    }

    /// Writes struct nft_verdict attributes (inside NFTA_DATA_VERDICT).
    pub fn encode(&self, w: &mut Writer) {
        let n = w.begin_nest(NFT_DATA_VERDICT);
        w.u32(1, self.code() as u32); // NFTA_VERDICT_CODE
        if let Verdict::Jump(c) | Verdict::Goto(c) = self {
            w.str(2, c); // NFTA_VERDICT_CHAIN
        }
        w.end_nest(n);
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Drop => write!(f, "drop"),
            Verdict::Return => write!(f, "return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

pub(super) fn value(w: &mut Writer, ty: u16, bytes: &[u8]) {
    let n = w.begin_nest(ty);
    w.attr(NFT_DATA_VALUE, bytes);
    w.end_nest(n);
}

/// nft's data types (for set keys), 6 bits each when concatenated.
pub mod types {
    /// A map's data type when its values are verdicts (NFT_DATA_VERDICT).
    pub const VERDICT_DATA: u32 = 0xffff_ff00;
    pub const INTEGER: u32 = 4;
    pub const IPV4: u32 = 7;
    pub const IPV6: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;

    pub fn concat(parts: &[u32]) -> u32 {
        parts.iter().fold(0, |t, p| (t << 6) | p)
    }

    pub fn addr(v6: bool) -> u32 {
        if v6 { IPV6 } else { IPV4 }
    }
}

/// Set flags (NFT_SET_*).
pub mod set_flags {
    pub const ANONYMOUS: u32 = 0x1;
    pub const CONSTANT: u32 = 0x2;
    pub const INTERVAL: u32 = 0x4;
    pub const MAP: u32 = 0x8;
    pub const TIMEOUT: u32 = 0x10;
    pub const EVAL: u32 = 0x20;
}

/// An element's value in a map: a verdict or plain data (a DNAT destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// An element of a set built with its rule (`{ ... }` in nft syntax).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnonElement {
    pub key: Vec<u8>,
    pub data: Option<Data>,
    /// Closes an interval (the first address past a range).
    pub interval_end: bool,
}

/// A constant set or map that belongs to one rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnonSet {
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// Data type and length for maps.
    pub data: Option<(u32, u32)>,
    pub elements: Vec<AnonElement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetRef {
    Named(String),
    Anonymous(Box<AnonSet>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmp {
    Eq = 0,
    Neq = 1,
}

/// One expression; a rule is a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Loads `len` bytes at `offset` of the network (1) or transport (2) header.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Ct {
        key: u32,
    },
    /// `fib saddr|daddr type`; `flags` picks the address.
    FibType {
        flags: u32,
    },
    Cmp {
        op: Cmp,
        data: Vec<u8>,
    },
    /// reg1 = (reg1 & mask) ^ xor
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        set: SetRef,
        /// Register for a map's value (0 for a verdict map).
        dreg: Option<u32>,
    },
    /// Adds the key in reg1 to a dynamic set (or refreshes its timeout).
    DynsetUpdate {
        set: String,
    },
    /// `numgen random mod <modulus> offset <offset>`
    NumgenRandom {
        modulus: u32,
        offset: u32,
    },
    Verdict(Verdict),
    /// Loads constant data into registers from `reg`.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Dnat {
        v6: bool,
        addr_reg: u32,
        proto_reg: u32,
        flags: Option<u32>,
    },
    MasqueradeFullyRandom,
    Reject {
        v6: bool,
    },
}

impl Expr {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::FibType { .. } => "fib",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Verdict(_) | Expr::Immediate { .. } => "immediate",
            Expr::Dnat { .. } => "nat",
            Expr::MasqueradeFullyRandom => "masq",
            Expr::Reject { .. } => "reject",
        }
    }

    /// Writes NFTA_EXPR_DATA's attributes. `anon` is the batch id of this rule's
    /// anonymous set, already added to the batch.
    pub(super) fn encode_data(&self, w: &mut Writer, anon: Option<u32>) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.u32(1, *dreg);
                w.u32(2, *base);
                w.u32(3, *offset);
                w.u32(4, *len);
            }
            Expr::Meta { key, dreg } => {
                w.u32(2, *key);
                w.u32(1, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                w.u32(2, *key);
                w.u32(3, *sreg);
            }
            Expr::Ct { key } => {
                w.u32(2, *key);
                w.u32(1, REG_1);
            }
            Expr::FibType { flags } => {
                w.u32(1, REG_1);
                w.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
                w.u32(3, *flags);
            }
            Expr::Cmp { op, data } => {
                w.u32(1, REG_1);
                w.u32(2, *op as u32);
                value(w, 3, data);
            }
            Expr::Bitwise { mask, xor } => {
                w.u32(1, REG_1);
                w.u32(2, REG_1);
                w.u32(3, mask.len() as u32);
                value(w, 4, mask);
                value(w, 5, xor);
            }
            Expr::Lookup { set, dreg } => {
                match set {
                    SetRef::Named(name) => w.str(1, name),
                    SetRef::Anonymous(a) => {
                        w.str(1, super::ops::anon_name(a));
                        w.u32(4, anon.unwrap_or(0));
                    }
                }
                w.u32(2, REG_1);
                if let Some(d) = dreg {
                    w.u32(3, *d);
                }
            }
            Expr::DynsetUpdate { set } => {
                w.str(1, set);
                w.u32(3, 1); // NFT_DYNSET_OP_UPDATE
                w.u32(4, REG_1);
            }
            Expr::NumgenRandom { modulus, offset } => {
                w.u32(1, REG_1);
                w.u32(2, *modulus);
                w.u32(3, 1); // NFT_NG_RANDOM
                w.u32(4, *offset);
            }
            Expr::Verdict(v) => {
                w.u32(1, REG_VERDICT);
                let n = w.begin_nest(2);
                v.encode(w);
                w.end_nest(n);
            }
            Expr::Immediate { dreg, data } => {
                w.u32(1, *dreg);
                value(w, 2, data);
            }
            Expr::Dnat {
                v6,
                addr_reg,
                proto_reg,
                flags,
            } => {
                w.u32(1, 1); // NFT_NAT_DNAT
                w.u32(2, if *v6 { 10 } else { 2 });
                w.u32(3, *addr_reg);
                w.u32(5, *proto_reg);
                if let Some(f) = flags {
                    w.u32(7, *f);
                }
            }
            Expr::MasqueradeFullyRandom => w.u32(1, 0x10), // NF_NAT_RANGE_PROTO_RANDOM_FULLY
            Expr::Reject { v6 } => {
                w.u32(1, 0); // NFT_REJECT_ICMP_UNREACH
                w.attr(2, &[if *v6 { 4 } else { 3 }]); // port unreachable
            }
        }
    }
}

// Matches and statements, each as `nft` would encode its text form.

const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_STATUS: u32 = 2;

pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `ip saddr` / `ip6 daddr` ... into reg1 (or `dreg`).
fn load_addr(v6: bool, source: bool, dreg: u32) -> Expr {
    let offset = match (v6, source) {
        (false, true) => 12,
        (false, false) => 16,
        (true, true) => 8,
        (true, false) => 24,
    };
    Expr::Payload {
        base: NETWORK,
        offset,
        len: if v6 { 16 } else { 4 },
        dreg,
    }
}

/// `ip daddr 198.51.100.1`, `ip saddr != 10.0.0.0/8` ...
pub fn addr_match(source: bool, cidr: &Cidr, op: Cmp) -> Vec<Expr> {
    let v6 = cidr.is_ipv6();
    let bytes = ip_bytes(cidr.addr);
    let prefix = cidr.prefix as usize;
    let full = bytes.len() * 8;
    let mut load = load_addr(v6, source, REG_1);
    if prefix == full {
        return vec![load, Expr::Cmp { op, data: bytes }];
    }
    if prefix % 8 == 0 {
        // A byte-aligned prefix loads only its bytes.
        if let Expr::Payload { len, .. } = &mut load {
            *len = (prefix / 8) as u32;
        }
        return vec![
            load,
            Expr::Cmp {
                op,
                data: bytes[..prefix / 8].to_vec(),
            },
        ];
    }
    let mask: Vec<u8> = (0..bytes.len())
        .map(|i| {
            let bits = prefix.saturating_sub(i * 8).min(8);
            if bits == 0 { 0 } else { 0xffu8 << (8 - bits) }
        })
        .collect();
    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    vec![
        load,
        Expr::Bitwise {
            xor: vec![0; mask.len()],
            mask,
        },
        Expr::Cmp { op, data: net },
    ]
}

/// `ip saddr { 192.0.2.0/24, ... }`: an anonymous interval set of `cidrs`.
pub fn addr_in(source: bool, v6: bool, cidrs: &[Cidr]) -> Vec<Expr> {
    let of_family: Vec<&Cidr> = cidrs.iter().filter(|c| c.is_ipv6() == v6).collect();
    // A set of one is a plain match, as nft writes it.
    if let [only] = of_family.as_slice() {
        return addr_match(source, only, Cmp::Eq);
    }
    let len = if v6 { 16 } else { 4 };
    let to_int = |b: &[u8]| b.iter().fold(0u128, |n, x| (n << 8) | *x as u128);
    let from_int = |n: u128| n.to_be_bytes()[16 - len..].to_vec();
    let bits = len as u32 * 8;
    let mut ranges: Vec<(u128, u128)> = of_family
        .iter()
        .map(|c| {
            let start = to_int(&ip_bytes(c.addr));
            let host = if c.prefix as u32 >= bits {
                0
            } else {
                (1u128 << (bits - c.prefix as u32)) - 1
            };
            (start & !host, (start & !host) | host)
        })
        .collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some((_, le)) if s <= le.saturating_add(1) => *le = (*le).max(e),
            _ => merged.push((s, e)),
        }
    }
    let max = if v6 { u128::MAX } else { u32::MAX as u128 };
    let mut elements = Vec::new();
    // The interval set starts closed: everything below the first range is outside.
    if merged.first().is_some_and(|(s, _)| *s > 0) {
        elements.push(AnonElement {
            key: from_int(0),
            data: None,
            interval_end: true,
        });
    }
    for (s, e) in merged {
        elements.push(AnonElement {
            key: from_int(s),
            data: None,
            interval_end: false,
        });
        if e < max {
            elements.push(AnonElement {
                key: from_int(e + 1),
                data: None,
                interval_end: true,
            });
        }
    }
    vec![
        load_addr(v6, source, REG_1),
        Expr::Lookup {
            set: SetRef::Anonymous(Box::new(AnonSet {
                flags: set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::INTERVAL,
                key_type: types::addr(v6),
                key_len: len as u32,
                data: None,
                elements,
            })),
            dreg: None,
        },
    ]
}

/// `meta l4proto tcp`
pub fn l4proto(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: META_L4PROTO,
            dreg: REG_1,
        },
        Expr::Cmp {
            op: Cmp::Eq,
            data: vec![proto],
        },
    ]
}

/// `th dport 80` (after an l4proto match, printed as `tcp dport 80`)
pub fn dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: TRANSPORT,
            offset: 2,
            len: 2,
            dreg: REG_1,
        },
        Expr::Cmp {
            op: Cmp::Eq,
            data: port.to_be_bytes().to_vec(),
        },
    ]
}

/// `iifname "cni0"`, or `iifname "veth*"` for a prefix; `op` negates.
pub fn iifname(name: &str, op: Cmp) -> Vec<Expr> {
    let data = match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut d = name.as_bytes().to_vec();
            d.resize(16, 0); // IFNAMSIZ
            d
        }
    };
    vec![
        Expr::Meta {
            key: META_IIFNAME,
            dreg: REG_1,
        },
        Expr::Cmp { op, data },
    ]
}

/// `fib saddr type local` / `fib daddr type local`
pub fn fib_local(source: bool) -> Vec<Expr> {
    vec![
        Expr::FibType {
            flags: if source { 1 } else { 2 },
        },
        Expr::Cmp {
            op: Cmp::Eq,
            data: 2u32.to_ne_bytes().to_vec(), // RTN_LOCAL
        },
    ]
}

/// `ct state new` / `ct status dnat`: a bit of a conntrack field is set.
fn ct_bit(key: u32, bit: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key },
        Expr::Bitwise {
            mask: bit.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op: Cmp::Neq,
            data: vec![0; 4],
        },
    ]
}

pub fn ct_state_new() -> Vec<Expr> {
    ct_bit(CT_STATE, 8)
}

pub fn ct_status_dnat() -> Vec<Expr> {
    ct_bit(CT_STATUS, 0x20)
}

fn load_mark() -> Expr {
    Expr::Meta {
        key: META_MARK,
        dreg: REG_1,
    }
}

/// `mark set mark or|xor <bits>`
pub fn set_mark(or: bool, bits: u32) -> Vec<Expr> {
    let mask = if or { !bits } else { u32::MAX };
    vec![
        load_mark(),
        Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: META_MARK,
            sreg: REG_1,
        },
    ]
}

/// `mark and <bits> == 0`
pub fn mark_clear(bits: u32) -> Vec<Expr> {
    vec![
        load_mark(),
        Expr::Bitwise {
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op: Cmp::Eq,
            data: vec![0; 4],
        },
    ]
}

/// A concatenation of loads (`ip daddr . meta l4proto . th dport`) into consecutive
/// registers, for a lookup in a set keyed by it.
pub struct Concat {
    exprs: Vec<Expr>,
    words: u32,
}

impl Concat {
    pub fn new() -> Self {
        Concat {
            exprs: Vec::new(),
            words: 0,
        }
    }

    pub fn addr(mut self, v6: bool, source: bool) -> Self {
        self.exprs.push(load_addr(v6, source, reg_at(self.words)));
        self.words += if v6 { 4 } else { 1 };
        self
    }

    pub fn l4proto(mut self) -> Self {
        self.exprs.push(Expr::Meta {
            key: META_L4PROTO,
            dreg: reg_at(self.words),
        });
        self.words += 1;
        self
    }

    pub fn dport(mut self) -> Self {
        self.exprs.push(Expr::Payload {
            base: TRANSPORT,
            offset: 2,
            len: 2,
            dreg: reg_at(self.words),
        });
        self.words += 1;
        self
    }

    /// `... @set` or `... vmap @set`
    pub fn lookup(mut self, set: &str, vmap: bool) -> Vec<Expr> {
        self.exprs.push(Expr::Lookup {
            set: SetRef::Named(set.to_string()),
            dreg: vmap.then_some(REG_VERDICT),
        });
        self.exprs
    }
}

/// `ip saddr @set`
pub fn saddr_in_set(v6: bool, set: &str) -> Vec<Expr> {
    vec![
        load_addr(v6, true, REG_1),
        Expr::Lookup {
            set: SetRef::Named(set.to_string()),
            dreg: None,
        },
    ]
}

/// `update @set { ip saddr }`
pub fn update_saddr(v6: bool, set: &str) -> Vec<Expr> {
    vec![
        load_addr(v6, true, REG_1),
        Expr::DynsetUpdate {
            set: set.to_string(),
        },
    ]
}

/// The key of an element: each part is padded to 4 bytes, as registers are.
pub fn padded(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// `numgen random mod N 0`: true once in N times.
pub fn one_in(n: u32) -> Vec<Expr> {
    vec![
        Expr::NumgenRandom {
            modulus: n,
            offset: 0,
        },
        Expr::Cmp {
            op: Cmp::Eq,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// `numgen random mod N map { 0 : <values[0]>, ... }` into `dreg`: picks one of
/// `values` at random.
fn numgen_lookup(values: Vec<Data>, data_type: (u32, u32), dreg: u32) -> [Expr; 2] {
    let elements: Vec<AnonElement> = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| AnonElement {
            key: (i as u32).to_ne_bytes().to_vec(),
            data: Some(value),
            interval_end: false,
        })
        .collect();
    [
        Expr::NumgenRandom {
            modulus: elements.len() as u32,
            offset: 0,
        },
        Expr::Lookup {
            set: SetRef::Anonymous(Box::new(AnonSet {
                flags: set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP,
                key_type: types::INTEGER,
                key_len: 4,
                data: Some(data_type),
                elements,
            })),
            dreg: Some(dreg),
        },
    ]
}

/// `numgen random mod N vmap { 0 : goto a, 1 : goto b }`
pub fn numgen_vmap(targets: Vec<Verdict>) -> Vec<Expr> {
    let verdicts = targets.into_iter().map(Data::Verdict).collect();
    numgen_lookup(verdicts, (types::VERDICT_DATA, 0), REG_VERDICT).into()
}

/// The data type and length of a DNAT destination (address . port) in a map.
pub fn destination_type(v6: bool) -> (u32, u32) {
    (
        types::concat(&[types::addr(v6), types::INET_SERVICE]),
        if v6 { 20 } else { 8 },
    )
}

/// A DNAT destination as a map value: the address, then the port, each padded.
pub fn destination(ip: IpAddr, port: u16) -> Vec<u8> {
    padded(&[&ip_bytes(ip), &port.to_be_bytes()])
}

/// `dnat ip addr . port to <map lookup of reg1>`, after the lookup expressions.
fn dnat_looked_up(v6: bool, lookup: [Expr; 2]) -> Vec<Expr> {
    let mut exprs: Vec<Expr> = lookup.into();
    exprs.push(Expr::Dnat {
        v6,
        addr_reg: REG_1,
        proto_reg: reg_at(if v6 { 4 } else { 1 }),
        flags: None,
    });
    exprs
}

/// `dnat ip addr . port to numgen random mod N map { 0 : a . p, ... }`
pub fn dnat_numgen(v6: bool, targets: &[(IpAddr, u16)]) -> Vec<Expr> {
    let addresses = targets
        .iter()
        .map(|(ip, port)| Data::Value(destination(*ip, *port)))
        .collect();
    dnat_looked_up(v6, numgen_lookup(addresses, destination_type(v6), REG_1))
}

/// `dnat ip addr . port to numgen random mod N offset O map @<map>`: picks one of
/// the N destinations stored in the named map under keys O..O+N.
pub fn dnat_numgen_map(v6: bool, modulus: u32, offset: u32, map: &str) -> Vec<Expr> {
    dnat_looked_up(
        v6,
        [
            Expr::NumgenRandom { modulus, offset },
            Expr::Lookup {
                set: SetRef::Named(map.to_string()),
                dreg: Some(REG_1),
            },
        ],
    )
}

/// `dnat to 10.0.0.1:8080`
pub fn dnat_to(ip: IpAddr, port: u16) -> Vec<Expr> {
    let v6 = ip.is_ipv6();
    // The port goes into the second 16-byte register, after an address of either family.
    let port_reg = 2;
    vec![
        Expr::Immediate {
            dreg: REG_1,
            data: ip_bytes(ip),
        },
        Expr::Immediate {
            dreg: port_reg,
            data: port.to_be_bytes().to_vec(),
        },
        Expr::Dnat {
            v6,
            addr_reg: REG_1,
            proto_reg: port_reg,
            flags: Some(0x2), // NF_NAT_RANGE_PROTO_SPECIFIED
        },
    ]
}

pub fn verdict(v: Verdict) -> Expr {
    Expr::Verdict(v)
}
