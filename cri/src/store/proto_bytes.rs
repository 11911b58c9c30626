//! Serde for CRI messages kept in records: protobuf bytes, base64 in JSON
//! (the messages have no serde of their own and protobuf stays compatible
//! across API additions).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde::Deserialize;

pub fn serialize<M: Message, S: serde::Serializer>(message: &M, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(message.encode_to_vec()))
}

pub fn deserialize<'de, M: Message + Default, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<M, D::Error> {
    let text = String::deserialize(d)?;
    let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
    M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
}
