//! The messages of a transaction on the `kube-proxy` table: tables, chains, sets,
//! elements and rules, appended to a [`Batch`].

use super::expr::{self, AnonSet, Data, Expr, SetRef, set_flags, types, value};
use super::netlink::{Batch, MsgType};
use super::ruleset::{
    Element, ElementKey, EndpointKeys, ProgrammedKeys, SharedSet, endpoint_map_name,
};

/// Elements per message are bounded by the 64 KiB length of a netlink attribute.
const MAX_ELEMENTS_BYTES: usize = 60_000;

/// `add table <family> <name> { comment "..." ; }`
pub fn add_table(batch: &mut Batch, table: &str, comment: &str) {
    let m = batch.begin(MsgType::NewTable);
    batch.w.str(1, table);
    batch.w.u32(2, 0);
    // NFTA_TABLE_USERDATA: nft's comment record (type 0, length, NUL-terminated text).
    let mut udata = vec![0u8, comment.len() as u8 + 1];
    udata.extend_from_slice(comment.as_bytes());
    udata.push(0);
    batch.w.attr(6, &udata);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add table {table}"));
}

pub fn delete_table(batch: &mut Batch, table: &str) {
    let m = batch.begin(MsgType::DelTable);
    batch.w.str(1, table);
    batch.end(m);
}

/// A base chain's hook: type, hook number and priority.
pub struct Hook {
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
}

/// `add chain`, a base chain if `hook` is given.
pub fn add_chain(batch: &mut Batch, table: &str, chain: &str, hook: Option<&Hook>) {
    let m = batch.begin(MsgType::NewChain);
    batch.w.str(1, table);
    batch.w.str(3, chain);
    if let Some(h) = hook {
        let n = batch.w.begin_nest(4);
        batch.w.u32(1, h.hook);
        batch.w.u32(2, h.priority as u32);
        batch.w.end_nest(n);
        batch.w.str(7, h.kind);
    }
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add chain {chain}"));
}

/// `flush chain`: a rule deletion naming only the chain removes all its rules.
pub fn flush_chain(batch: &mut Batch, table: &str, chain: &str) {
    let m = batch.begin(MsgType::DelRule);
    batch.w.str(1, table);
    batch.w.str(2, chain);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("flush chain {chain}"));
}

pub fn delete_chain(batch: &mut Batch, table: &str, chain: &str) {
    let m = batch.begin(MsgType::DelChain);
    batch.w.str(1, table);
    batch.w.str(3, chain);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("delete chain {chain}"));
}

/// `add set|map` for one of the shared sets.
pub fn add_shared_set(batch: &mut Batch, table: &str, set: SharedSet, v6: bool) {
    let (key_type, key_len, verdicts) = set.key(v6);
    let m = batch.begin(MsgType::NewSet);
    batch.w.str(1, table);
    batch.w.str(2, set.name());
    batch.w.u32(3, if verdicts { set_flags::MAP } else { 0 });
    batch.w.u32(4, key_type);
    batch.w.u32(5, key_len);
    if verdicts {
        batch.w.u32(6, types::VERDICT_DATA);
        batch.w.u32(7, 0);
    }
    let id = batch.set_id();
    batch.w.u32(10, id);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add set {}", set.name()));
}

/// `add set <name> { type ipv4_addr ; flags dynamic,timeout ; timeout <t>s ; }`
pub fn add_affinity_set(batch: &mut Batch, table: &str, name: &str, v6: bool, timeout_s: u32) {
    let m = batch.begin(MsgType::NewSet);
    batch.w.str(1, table);
    batch.w.str(2, name);
    batch.w.u32(3, set_flags::TIMEOUT | set_flags::EVAL);
    batch.w.u32(4, types::addr(v6));
    batch.w.u32(5, if v6 { 16 } else { 4 });
    let id = batch.set_id();
    batch.w.u32(10, id);
    batch.w.u64(11, timeout_s as u64 * 1000);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add set {name} timeout {timeout_s}s"));
}

pub fn delete_set(batch: &mut Batch, table: &str, name: &str) {
    let m = batch.begin(MsgType::DelSet);
    batch.w.str(1, table);
    batch.w.str(2, name);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("delete set {name}"));
}

/// `flush set|map`: an element deletion naming only the set removes all elements.
pub fn flush_set(batch: &mut Batch, table: &str, set: &str) {
    let m = batch.begin(MsgType::DelSetElem);
    batch.w.str(1, table);
    batch.w.str(2, set);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("flush set {set}"));
}

/// Adds elements of one shared set, in as many messages as their size needs.
pub fn add_elements<'a>(
    batch: &mut Batch,
    table: &str,
    set: SharedSet,
    elements: impl IntoIterator<Item = &'a Element> + Clone,
) {
    #[cfg(test)]
    for e in elements.clone() {
        batch.note(format!("add element {e}"));
    }
    let items = elements.into_iter().map(|e| {
        (
            e.key.bytes(),
            e.verdict.as_ref().map(|v| Data::Verdict(v.clone())),
        )
    });
    element_messages(batch, table, set.name(), true, items);
}

/// Deletes elements of one shared set by key.
pub fn delete_elements<'a>(
    batch: &mut Batch,
    table: &str,
    set: SharedSet,
    keys: impl IntoIterator<Item = &'a ElementKey> + Clone,
) {
    #[cfg(test)]
    for k in keys.clone() {
        batch.note(format!("delete element {} {{ {k} }}", set.name()));
    }
    let items = keys.into_iter().map(|k| (k.bytes(), None));
    element_messages(batch, table, set.name(), false, items);
}

/// Keys and values (for `add`) of elements in messages of at most
/// `MAX_ELEMENTS_BYTES` each.
fn element_messages(
    batch: &mut Batch,
    table: &str,
    set: &str,
    add: bool,
    items: impl Iterator<Item = (Vec<u8>, Option<Data>)>,
) {
    let ty = if add {
        MsgType::NewSetElem
    } else {
        MsgType::DelSetElem
    };
    let mut open: Option<(super::netlink::Msg, usize)> = None;
    for (key, data) in items {
        let (m, list) = match open.take() {
            Some(o) => o,
            None => {
                let m = batch.begin(ty);
                batch.w.str(1, table);
                batch.w.str(2, set);
                let list = batch.w.begin_nest(3);
                (m, list)
            }
        };
        let el = batch.w.begin_nest(1);
        value(&mut batch.w, 1, &key);
        match data {
            Some(Data::Verdict(v)) => {
                let n = batch.w.begin_nest(2);
                v.encode(&mut batch.w);
                batch.w.end_nest(n);
            }
            Some(Data::Value(d)) => value(&mut batch.w, 2, &d),
            None => {}
        }
        batch.w.end_nest(el);
        if batch.w.since(list) > MAX_ELEMENTS_BYTES {
            batch.w.end_nest(list);
            batch.end(m);
        } else {
            open = Some((m, list));
        }
    }
    if let Some((m, list)) = open {
        batch.w.end_nest(list);
        batch.end(m);
    }
}

/// `add map endpoints-<n> { typeof numgen random mod 1 : ip daddr . tcp dport ; }`
pub fn add_endpoint_map(batch: &mut Batch, table: &str, map: u32, v6: bool) {
    let name = endpoint_map_name(map);
    let (data_type, data_len) = expr::destination_type(v6);
    let m = batch.begin(MsgType::NewSet);
    batch.w.str(1, table);
    batch.w.str(2, &name);
    batch.w.u32(3, set_flags::MAP);
    batch.w.u32(4, types::INTEGER);
    batch.w.u32(5, 4);
    batch.w.u32(6, data_type);
    batch.w.u32(7, data_len);
    let id = batch.set_id();
    batch.w.u32(10, id);
    batch.w.attr(13, &endpoint_map_userdata(v6));
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add map {name}"));
}

/// NFTA_SET_USERDATA: nft's key byte order record (type 0, 4 bytes, host endian = 1).
/// Without it `nft list` shows numgen keys byte-swapped.
const KEY_HOST_BYTE_ORDER: [u8; 6] = {
    let one = 1u32.to_ne_bytes();
    [0, 4, one[0], one[1], one[2], one[3]]
};

/// NFTA_SET_USERDATA of an endpoint map: what nft records for
/// `typeof numgen random mod 1 : ip daddr . tcp dport`. The kernel only stores it;
/// without it nft cannot name the integer key type, so `nft list` would print a
/// map that `nft -f` does not load back. The records are nft's type-length-value
/// pairs (one byte each, values in host order); the numbers are nft's own ids for
/// expressions (numgen 23, concat 13, payload 7), protocol headers (ip 12, ip6 13,
/// tcp 8) and header fields (ip daddr 12, ip6 daddr 9, tcp dport 2).
fn endpoint_map_userdata(v6: bool) -> Vec<u8> {
    fn tlv(ty: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![ty, value.len() as u8];
        out.extend_from_slice(value);
        out
    }
    fn u32_tlv(ty: u8, v: u32) -> Vec<u8> {
        tlv(ty, &v.to_ne_bytes())
    }
    fn expr(kind: u32, fields: &[Vec<u8>]) -> Vec<u8> {
        [u32_tlv(0, kind), tlv(1, &fields.concat())].concat()
    }
    let payload = |header: u32, field: u32| expr(7, &[u32_tlv(0, header), u32_tlv(1, field)]);
    let daddr = if v6 { payload(13, 9) } else { payload(12, 12) };
    let numgen = expr(23, &[u32_tlv(0, 1), u32_tlv(1, 1), u32_tlv(2, 0)]);
    let destination = expr(13, &[tlv(0, &daddr), tlv(1, &payload(8, 2))]);
    [
        KEY_HOST_BYTE_ORDER.to_vec(),
        u32_tlv(1, 0), // data byte order: none for a concatenation
        tlv(3, &numgen),
        tlv(4, &destination),
        u32_tlv(6, 0), // no automatic merging of elements
    ]
    .concat()
}

/// Adds the destinations of `keys`, all of one endpoint map, to the map.
pub fn add_endpoint_keys(batch: &mut Batch, table: &str, keys: &[EndpointKeys]) {
    let Some(map) = keys.first().map(|k| k.map) else {
        return;
    };
    #[cfg(test)]
    for k in keys {
        batch.note(format!(
            "add {} endpoint keys from {} to {}",
            k.targets.len(),
            k.first,
            endpoint_map_name(map)
        ));
    }
    let items = keys.iter().flat_map(|k| {
        (k.first..).zip(&k.targets).map(|(key, (ip, port))| {
            (
                key.to_ne_bytes().to_vec(),
                Some(Data::Value(expr::destination(*ip, *port))),
            )
        })
    });
    element_messages(batch, table, &endpoint_map_name(map), true, items);
}

/// Deletes programmed endpoint keys from their map.
pub fn delete_endpoint_keys(batch: &mut Batch, table: &str, keys: &ProgrammedKeys) {
    #[cfg(test)]
    batch.note(format!(
        "delete {} endpoint keys from {} in {}",
        keys.count,
        keys.first,
        endpoint_map_name(keys.map)
    ));
    let items = (keys.first..keys.first + keys.count).map(|k| (k.to_ne_bytes().to_vec(), None));
    element_messages(batch, table, &endpoint_map_name(keys.map), false, items);
}

pub fn anon_name(a: &AnonSet) -> &'static str {
    if a.data.is_some() {
        "__map%d"
    } else {
        "__set%d"
    }
}

/// Adds a rule (and first its anonymous set, if any) to `batch`.
pub fn add_rule(batch: &mut Batch, table: &str, chain: &str, exprs: &[Expr]) {
    let anon = exprs.iter().find_map(|e| match e {
        Expr::Lookup {
            set: SetRef::Anonymous(a),
            ..
        } => Some(a),
        _ => None,
    });
    let anon_id = anon.map(|a| add_anon_set(batch, table, a));
    let m = batch.begin(MsgType::NewRule);
    batch.w.str(1, table);
    batch.w.str(2, chain);
    let list = batch.w.begin_nest(4);
    for e in exprs {
        let el = batch.w.begin_nest(1);
        batch.w.str(1, e.name());
        let data = batch.w.begin_nest(2);
        e.encode_data(&mut batch.w, anon_id);
        batch.w.end_nest(data);
        batch.w.end_nest(el);
    }
    batch.w.end_nest(list);
    batch.end(m);
    #[cfg(test)]
    batch.note(format!("add rule {chain} {exprs:?}"));
}

fn add_anon_set(batch: &mut Batch, table: &str, a: &AnonSet) -> u32 {
    let id = batch.set_id();
    let name = anon_name(a);
    let m = batch.begin(MsgType::NewSet);
    batch.w.str(1, table);
    batch.w.str(2, name);
    batch.w.u32(3, a.flags);
    batch.w.u32(4, a.key_type);
    batch.w.u32(5, a.key_len);
    if let Some((ty, len)) = a.data {
        batch.w.u32(6, ty);
        batch.w.u32(7, len);
    }
    let desc = batch.w.begin_nest(9);
    batch.w.u32(1, a.elements.len() as u32); // NFTA_SET_DESC_SIZE
    batch.w.end_nest(desc);
    batch.w.u32(10, id);
    if a.key_type == types::INTEGER {
        batch.w.attr(13, &KEY_HOST_BYTE_ORDER);
    }
    batch.end(m);
    let m = batch.begin(MsgType::NewSetElem);
    batch.w.str(1, table);
    batch.w.str(2, name);
    batch.w.u32(4, id);
    let list = batch.w.begin_nest(3);
    for e in &a.elements {
        let el = batch.w.begin_nest(1);
        value(&mut batch.w, 1, &e.key);
        match &e.data {
            Some(Data::Verdict(v)) => {
                let n = batch.w.begin_nest(2);
                v.encode(&mut batch.w);
                batch.w.end_nest(n);
            }
            Some(Data::Value(d)) => value(&mut batch.w, 2, d),
            None => {}
        }
        if e.interval_end {
            batch.w.u32(3, 1); // NFT_SET_ELEM_INTERVAL_END
        }
        batch.w.end_nest(el);
    }
    batch.w.end_nest(list);
    batch.end(m);
    id
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::endpoint_map_userdata;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The bytes nft 1.0.6 sends for `map m { typeof numgen random mod 1 : ip daddr .
    /// tcp dport ; }` (and ip6 daddr), read with `nft --debug=mnl`.
    #[test]
    fn endpoint_map_userdata_is_what_nft_writes_for_its_typeof() {
        let common = "00 04 01 00 00 00 01 04 00 00 00 00 03 1a 00 04 17 00 00 00 01 12 00 04 \
                      01 00 00 00 01 04 01 00 00 00 02 04 00 00 00 00 04 34 00 04 0d 00 00 00 \
                      01 2c 00 14 00 04 07 00 00 00 01 0c";
        let tail = "01 14 00 04 07 00 00 00 01 0c 00 04 08 00 00 00 01 04 02 00 00 00 \
                    06 04 00 00 00 00";
        let v4 = format!("{common} 00 04 0c 00 00 00 01 04 0c 00 00 00 {tail}");
        let v6 = format!("{common} 00 04 0d 00 00 00 01 04 09 00 00 00 {tail}");
        assert_eq!(endpoint_map_userdata(false), hex(&v4));
        assert_eq!(endpoint_map_userdata(true), hex(&v6));
    }
}
