//! The nf_tables netlink wire format (linux/netfilter/nf_tables.h, nfnetlink.h):
//! attribute encoding and batches of messages applied as one transaction.
//!
//! Written by hand: the Rust nf_tables crates either wrap the C libnftnl or carry a GPL
//! licence, and none covers what this table needs (numgen, fib, dynset, concatenated
//! verdict maps, anonymous maps created in the same transaction).

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

/// nf_tables message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    GetSet = 10,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
}

impl MsgType {
    pub fn wire(self) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | self as u16
    }

    fn from_wire(t: u16) -> Option<Self> {
        use MsgType::*;
        if t >> 8 != NFNL_SUBSYS_NFTABLES {
            return None;
        }
        [
            NewTable, GetTable, DelTable, NewChain, GetChain, DelChain, NewRule, DelRule, NewSet,
            GetSet, DelSet, NewSetElem, DelSetElem,
        ]
        .into_iter()
        .find(|m| *m as u16 == t & 0xff)
    }

    /// Creating messages are idempotent ("add", not "create"); rules append.
    fn flags(self) -> u16 {
        match self {
            MsgType::NewRule => NLM_F_CREATE | NLM_F_APPEND,
            MsgType::NewTable | MsgType::NewChain | MsgType::NewSet | MsgType::NewSetElem => {
                NLM_F_CREATE
            }
            _ => 0,
        }
    }

    fn verb(self) -> &'static str {
        use MsgType::*;
        match self {
            NewTable => "adding table",
            GetTable => "reading table",
            DelTable => "deleting table",
            NewChain => "adding chain",
            GetChain => "listing chains",
            DelChain => "deleting chain",
            NewRule => "adding a rule to chain",
            DelRule => "flushing chain",
            NewSet => "adding set",
            GetSet => "listing sets",
            DelSet => "deleting set",
            NewSetElem => "adding elements to set",
            DelSetElem => "deleting elements from set",
        }
    }
}

/// The attribute that names a message's object (chain for rules, set for elements).
fn object_attr(t: MsgType) -> u16 {
    use MsgType::*;
    match t {
        NewTable | GetTable | DelTable => 1, // NFTA_TABLE_NAME
        NewChain | GetChain | DelChain => 3, // NFTA_CHAIN_NAME
        NewRule | DelRule => 2,              // NFTA_RULE_CHAIN
        NewSet | GetSet | DelSet => 2,       // NFTA_SET_NAME
        NewSetElem | DelSetElem => 2,        // NFTA_SET_ELEM_LIST_SET
    }
}

/// Netlink messages and attributes appended to one buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Writer {
    /// Starts a message; returns its offset for [`Writer::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched at the end
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        // struct nfgenmsg: family, version (NFNETLINK_V0), resource id (big endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) {
        self.buf
            .extend_from_slice(&((5 + s.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Starts a nested attribute; returns its offset for [`Writer::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn end_nest(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Bytes written since `start` (to keep a nested attribute under 64 KiB).
    pub fn since(&self, start: usize) -> usize {
        self.buf.len() - start
    }
}

/// One transaction: messages between BATCH_BEGIN and BATCH_END, in one buffer that is
/// sent with a single write (the kernel applies a batch only from one write).
#[derive(Debug)]
pub struct Batch {
    pub(super) w: Writer,
    family: u8,
    /// Offsets of the messages, so an error's sequence number names its message.
    offsets: Vec<u32>,
    /// Messages of the transaction proper (between BEGIN and END).
    pub(super) messages: usize,
    next_set_id: u32,
    /// What each message does, for tests that look at what would be sent.
    #[cfg(test)]
    pub log: Vec<String>,
}

/// A message being filled in; finished by [`Batch::end`].
pub struct Msg(usize);

impl Batch {
    pub fn new(family: u8) -> Self {
        let mut b = Batch {
            w: Writer::default(),
            family,
            offsets: Vec::new(),
            messages: 0,
            next_set_id: 1,
            #[cfg(test)]
            log: Vec::new(),
        };
        let m = b.w.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        b.w.end_msg(m);
        b.offsets.push(0);
        b
    }

    /// Starts a message of `ty`; attributes follow through [`Batch::w`].
    pub fn begin(&mut self, ty: MsgType) -> Msg {
        let seq = self.offsets.len() as u32;
        self.offsets.push(self.w.buf.len() as u32);
        self.messages += 1;
        Msg(self
            .w
            .begin_msg(ty.wire(), NLM_F_REQUEST | ty.flags(), seq, self.family, 0))
    }

    pub fn end(&mut self, m: Msg) {
        self.w.end_msg(m.0);
    }

    /// A batch-unique id for a set created in this transaction (anonymous sets are
    /// referred to by id, as their name is only chosen by the kernel).
    pub fn set_id(&mut self) -> u32 {
        self.next_set_id += 1;
        self.next_set_id
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    #[cfg(test)]
    pub fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// The wire bytes, closed with BATCH_END; the last message asks for an
    /// acknowledgement, which tells that the whole transaction was committed.
    pub fn finish(mut self) -> (Vec<u8>, Vec<u32>, u32) {
        if let Some(&last) = self.offsets.last() {
            let at = last as usize + 6;
            let flags = u16::from_ne_bytes([self.w.buf[at], self.w.buf[at + 1]]) | NLM_F_ACK;
            self.w.buf[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
        }
        let seq = self.offsets.len() as u32 - 1;
        let m = self.w.begin_msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq + 1,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.w.end_msg(m);
        (self.w.buf, self.offsets, seq)
    }
}

/// Top-level attributes of one message (after the nfgenmsg header).
pub fn attrs(msg: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 20.min(msg.len());
    std::iter::from_fn(move || {
        if at + 4 > msg.len() {
            return None;
        }
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if len < 4 || at + len > msg.len() {
            return None;
        }
        let data = &msg[at + 4..at + len];
        at += align4(len);
        Some((ty, data))
    })
}

pub fn attr_str(data: &[u8]) -> String {
    String::from_utf8_lossy(data.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
}

/// "adding chain service-…" for the message at the start of `msg`.
pub fn describe(msg: &[u8]) -> String {
    if msg.len() < 20 {
        return "a truncated message".to_string();
    }
    let ty = u16::from_ne_bytes([msg[4], msg[5]]);
    let Some(t) = MsgType::from_wire(ty) else {
        return format!("message type {ty:#x}");
    };
    let len = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    let name = attrs(&msg[..len])
        .find(|(a, _)| *a == object_attr(t))
        .map(|(_, d)| attr_str(d))
        .unwrap_or_default();
    format!("{} {name}", t.verb())
}
