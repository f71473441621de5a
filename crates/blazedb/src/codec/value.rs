//! The binary encoding of a [`Value`]: one tag byte, then the payload.
//!
//! | tag  | type      | payload                                             |
//! |------|-----------|-----------------------------------------------------|
//! | 0x00 | null      | —                                                   |
//! | 0x01 | false     | —                                                   |
//! | 0x02 | true      | —                                                   |
//! | 0x03 | int       | zigzag varint                                       |
//! | 0x04 | float     | 8 bytes, IEEE 754 little-endian                     |
//! | 0x05 | text      | varint length, UTF-8 bytes                          |
//! | 0x06 | bytes     | varint length, bytes                                |
//! | 0x07 | uuid      | 16 bytes                                            |
//! | 0x08 | timestamp | zigzag varint, microseconds since the Unix epoch   |
//! | 0x09 | list      | varint count, then each value                       |
//! | 0x0a | map       | varint count, then (varint key length, UTF-8 key, value), keys strictly ascending |

use std::collections::BTreeMap;

use super::varint::{read_i64, write_i64, write_u64};
use super::{DecodeError, Reader};
use crate::limits::{VALUE_BYTES_MAX, VALUE_DEPTH_MAX};
use crate::types::Timestamp;
use crate::Value;

const NULL: u8 = 0x00;
const FALSE: u8 = 0x01;
const TRUE: u8 = 0x02;
const INT: u8 = 0x03;
const FLOAT: u8 = 0x04;
const TEXT: u8 = 0x05;
const BYTES: u8 = 0x06;
const UUID: u8 = 0x07;
const TIMESTAMP: u8 = 0x08;
const LIST: u8 = 0x09;
const MAP: u8 = 0x0a;

/// Append the encoding of `v`.
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Int(i) => {
            out.push(INT);
            write_i64(out, *i);
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Text(s) => {
            out.push(TEXT);
            write_u64(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(BYTES);
            write_u64(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Uuid(u) => {
            out.push(UUID);
            out.extend_from_slice(u.as_bytes());
        }
        Value::Timestamp(t) => {
            out.push(TIMESTAMP);
            write_i64(out, t.0);
        }
        Value::List(l) => {
            out.push(LIST);
            write_u64(out, l.len() as u64);
            for x in l {
                encode(out, x);
            }
        }
        Value::Map(m) => {
            out.push(MAP);
            write_u64(out, m.len() as u64);
            for (k, x) in m {
                write_u64(out, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                encode(out, x);
            }
        }
    }
}

/// The length of `v`'s encoding, without encoding it.
pub fn encoded_len(v: &Value) -> usize {
    use super::varint::{len_u64, zigzag};
    1 + match v {
        Value::Null | Value::Bool(_) => 0,
        Value::Int(i) => len_u64(zigzag(*i)),
        Value::Float(_) => 8,
        Value::Text(s) => len_u64(s.len() as u64) + s.len(),
        Value::Bytes(b) => len_u64(b.len() as u64) + b.len(),
        Value::Uuid(_) => 16,
        Value::Timestamp(t) => len_u64(zigzag(t.0)),
        Value::List(l) => len_u64(l.len() as u64) + l.iter().map(encoded_len).sum::<usize>(),
        Value::Map(m) => {
            len_u64(m.len() as u64)
                + m.iter()
                    .map(|(k, x)| len_u64(k.len() as u64) + k.len() + encoded_len(x))
                    .sum::<usize>()
        }
    }
}

/// The encoding of `v` as a new buffer.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, v);
    out
}

/// Decode one value, enforcing the depth and size limits.
pub fn decode(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    decode_at(r, 0)
}

/// Decode a buffer that must hold exactly one value.
pub fn from_bytes(b: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(b);
    let v = decode(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after value",
            r.remaining()
        )));
    }
    Ok(v)
}

/// Step over one value without building it (nothing is allocated): the structure and the
/// limits are checked as `decode` checks them, the content (UTF-8, map key order) is not.
pub fn skip(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    skip_at(r, 0)
}

fn skip_at(r: &mut Reader<'_>, depth: usize) -> Result<(), DecodeError> {
    let at = r.pos();
    match r.u8()? {
        NULL | FALSE | TRUE => {}
        INT | TIMESTAMP => {
            read_i64(r)?;
        }
        FLOAT => {
            r.bytes(8)?;
        }
        TEXT | BYTES => {
            r.blob("value length", VALUE_BYTES_MAX)?;
        }
        UUID => {
            r.bytes(16)?;
        }
        LIST | MAP if depth >= VALUE_DEPTH_MAX => {
            return Err(DecodeError::TooDeep {
                max: VALUE_DEPTH_MAX,
            })
        }
        LIST => {
            for _ in 0..r.count("list length", VALUE_BYTES_MAX, 1)? {
                skip_at(r, depth + 1)?;
            }
        }
        MAP => {
            for _ in 0..r.count("map length", VALUE_BYTES_MAX, 2)? {
                r.blob("map key length", VALUE_BYTES_MAX)?;
                skip_at(r, depth + 1)?;
            }
        }
        tag => return Err(DecodeError::BadTag { tag, offset: at }),
    }
    Ok(())
}

fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<Value, DecodeError> {
    let at = r.pos();
    let tag = r.u8()?;
    Ok(match tag {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        INT => Value::Int(read_i64(r)?),
        FLOAT => Value::Float(f64::from_le_bytes(r.array()?)),
        TEXT => Value::Text(r.str("text length", VALUE_BYTES_MAX)?.to_owned()),
        BYTES => Value::Bytes(r.blob("bytes length", VALUE_BYTES_MAX)?.to_vec()),
        UUID => Value::Uuid(uuid::Uuid::from_bytes(r.array()?)),
        TIMESTAMP => Value::Timestamp(Timestamp(read_i64(r)?)),
        LIST | MAP if depth >= VALUE_DEPTH_MAX => {
            return Err(DecodeError::TooDeep {
                max: VALUE_DEPTH_MAX,
            })
        }
        LIST => {
            let n = r.count("list length", VALUE_BYTES_MAX, 1)?;
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                l.push(decode_at(r, depth + 1)?);
            }
            Value::List(l)
        }
        MAP => Value::Map(decode_map_entries(r, depth + 1)?),
        tag => return Err(DecodeError::BadTag { tag, offset: at }),
    })
}

/// Decode a map encoded as [`encode`] encodes `Value::Map`, whose values are a record's
/// fields: each is held to the depth limit on its own, as a field's value is, so the map
/// around them does not count as a level (a record whose fields are nested as deep as
/// allowed still decodes as one map).
pub fn decode_fields(r: &mut Reader<'_>) -> Result<BTreeMap<String, Value>, DecodeError> {
    let at = r.pos();
    match r.u8()? {
        MAP => decode_map_entries(r, 0),
        tag => Err(DecodeError::BadTag { tag, offset: at }),
    }
}

/// A map's entries after its tag, their values decoded at `depth`.
fn decode_map_entries(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<BTreeMap<String, Value>, DecodeError> {
    let n = r.count("map length", VALUE_BYTES_MAX, 2)?;
    let mut m = BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let k = r.str("map key length", VALUE_BYTES_MAX)?.to_owned();
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(DecodeError::Malformed(format!(
                "map keys not strictly ascending at {k:?}"
            )));
        }
        let v = decode_at(r, depth)?;
        last = Some(k.clone());
        m.insert(k, v);
    }
    Ok(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary values, nested a few levels, for property tests across the crate.
    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,12}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
            any::<[u8; 16]>().prop_map(|b| Value::Uuid(uuid::Uuid::from_bytes(b))),
            any::<i64>().prop_map(|t| Value::Timestamp(Timestamp(t))),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::btree_map("[a-z]{0,4}", inner, 0..4).prop_map(Value::Map),
            ]
        })
    }

    /// Bitwise equality (distinguishes Int 1 from Float 1.0, and NaN payloads).
    pub(crate) fn same(a: &Value, b: &Value) -> bool {
        to_bytes(a) == to_bytes(b)
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let b = to_bytes(&v);
            prop_assert_eq!(b.len(), encoded_len(&v));
            let back = from_bytes(&b).unwrap();
            prop_assert!(same(&v, &back));
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = from_bytes(&b);
        }
    }

    #[test]
    fn hostile_inputs_are_errors() {
        // A list claiming 2^40 elements in a 6-byte buffer must not allocate.
        let mut b = vec![LIST];
        write_u64(&mut b, 1 << 40);
        assert!(from_bytes(&b).is_err());
        // Nesting past the depth limit.
        let b = [LIST, 1].repeat(VALUE_DEPTH_MAX + 2);
        assert!(matches!(from_bytes(&b), Err(DecodeError::TooDeep { .. })));
        // Unknown tag.
        assert!(matches!(
            from_bytes(&[0x7f]),
            Err(DecodeError::BadTag { tag: 0x7f, .. })
        ));
        // Invalid UTF-8.
        assert!(matches!(
            from_bytes(&[TEXT, 1, 0xff]),
            Err(DecodeError::BadUtf8 { .. })
        ));
        // Duplicate map keys.
        assert!(from_bytes(&[MAP, 2, 1, b'a', NULL, 1, b'a', NULL]).is_err());
    }

    /// A record's fields as one map: each value may be nested as deep as a value may, the
    /// map around them does not count (a whole record with a field that deep is listed as
    /// a conflict's loser); past that, and anything but a map, is an error.
    #[test]
    fn fields_decode_as_a_map_each_value_held_to_the_depth_limit() {
        let mut deepest = Value::Int(1);
        for _ in 0..VALUE_DEPTH_MAX {
            deepest = Value::List(vec![deepest]);
        }
        assert!(from_bytes(&to_bytes(&deepest)).is_ok());
        let fields = BTreeMap::from([("a".to_owned(), deepest.clone()), ("b".into(), 2.into())]);
        let b = to_bytes(&Value::Map(fields.clone()));
        assert!(matches!(from_bytes(&b), Err(DecodeError::TooDeep { .. })));
        assert_eq!(decode_fields(&mut Reader::new(&b)).unwrap(), fields);
        let too_deep = to_bytes(&Value::Map(BTreeMap::from([(
            "a".to_owned(),
            Value::List(vec![deepest]),
        )])));
        assert!(matches!(
            decode_fields(&mut Reader::new(&too_deep)),
            Err(DecodeError::TooDeep { .. })
        ));
        assert!(matches!(
            decode_fields(&mut Reader::new(&to_bytes(&Value::Int(1)))),
            Err(DecodeError::BadTag { tag: INT, .. })
        ));
    }
}
