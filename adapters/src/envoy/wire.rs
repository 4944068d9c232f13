//! Hand-written protobuf framing, for the two places prost's own encoding does not fit:
//! maps with several entries (prost writes a `HashMap` in its random iteration order) and
//! messages assembled from pieces that are already encoded (cached virtual hosts).
//!
//! A length-delimited field is `key, length, bytes`, whether it holds a string, bytes or an
//! embedded message, and a map is a repeated embedded message `{1: key, 2: value}`; parsers
//! accept fields in any order, but everything here keeps field-number order as prost does.

use std::collections::BTreeMap;

use prost::Message;

/// Wire type 2: length-delimited.
const LEN: u64 = 2;

/// Appends a length-delimited field (a string, bytes or an encoded embedded message).
pub(super) fn put_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_varint(buf, (u64::from(tag) << 3) | LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends a `map<string, V>` field in key order.
pub(super) fn put_sorted_map<V: Message>(buf: &mut Vec<u8>, tag: u32, map: &BTreeMap<String, V>) {
    let mut entry = Vec::new();
    for (key, value) in map {
        entry.clear();
        put_field(&mut entry, 1, key.as_bytes());
        put_field(&mut entry, 2, &value.encode_to_vec());
        put_field(buf, tag, &entry);
    }
}

/// Encodes `head` (whose field `tag` must be empty), with `field` as field `tag` placed
/// before the fields of `head`. Only for a `tag` lower than every field set in `head`, which
/// keeps field-number order.
pub(super) fn with_leading_field<M: Message>(tag: u32, field: &[u8], head: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(field.len() + 8 + head.encoded_len());
    put_field(&mut buf, tag, field);
    buf.extend_from_slice(&head.encode_to_vec());
    buf
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}
