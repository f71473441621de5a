//! Self-contained byte encodings of a cell key and a cell value (node ids inline), used by the
//! history table and the wire protocol.
//!
//! ```text
//! key   := 0x00 (record) | 0x01 str (field) | 0x02 str node[16] (counter) | 0x03 str bytes (element)
//! value := 0x00 value (plain) | 0x01 (absent) | 0x02 (present) | 0x03 zigzag (count)
//! str, bytes := varint length, bytes
//! ```

use super::{CellKey, CellValue};
use crate::codec::varint::{read_i64, write_i64, write_u64};
use crate::codec::{value, DecodeError, Reader};
use crate::limits::{FIELD_NAME_BYTES_MAX, VALUE_BYTES_MAX};
use crate::NodeId;

/// Append a cell key.
pub fn encode_key(out: &mut Vec<u8>, k: &CellKey) {
    let str = |out: &mut Vec<u8>, s: &[u8]| {
        write_u64(out, s.len() as u64);
        out.extend_from_slice(s);
    };
    match k {
        CellKey::Record => out.push(0),
        CellKey::Field(f) => {
            out.push(1);
            str(out, f.as_bytes());
        }
        CellKey::Counter(f, n) => {
            out.push(2);
            str(out, f.as_bytes());
            out.extend_from_slice(&n.0);
        }
        CellKey::Element(f, e) => {
            out.push(3);
            str(out, f.as_bytes());
            str(out, e);
        }
    }
}

/// Read a cell key.
pub fn decode_key(r: &mut Reader<'_>) -> Result<CellKey, DecodeError> {
    let at = r.pos();
    Ok(match r.u8()? {
        0 => CellKey::Record,
        1 => CellKey::Field(r.str("field name", FIELD_NAME_BYTES_MAX)?.into()),
        2 => {
            let f = r.str("field name", FIELD_NAME_BYTES_MAX)?.into();
            CellKey::Counter(f, NodeId(r.array()?))
        }
        3 => {
            let f = r.str("field name", FIELD_NAME_BYTES_MAX)?.into();
            CellKey::Element(f, r.blob("set element", VALUE_BYTES_MAX)?.to_vec())
        }
        tag => return Err(DecodeError::BadTag { tag, offset: at }),
    })
}

/// Append a cell value.
pub fn encode_value(out: &mut Vec<u8>, v: &CellValue) {
    match v {
        CellValue::Value(x) => {
            out.push(0);
            value::encode(out, x);
        }
        CellValue::Absent => out.push(1),
        CellValue::Present => out.push(2),
        CellValue::Count(n) => {
            out.push(3);
            write_i64(out, *n);
        }
    }
}

/// Read a cell value.
pub fn decode_value(r: &mut Reader<'_>) -> Result<CellValue, DecodeError> {
    let at = r.pos();
    Ok(match r.u8()? {
        0 => CellValue::Value(value::decode(r)?),
        1 => CellValue::Absent,
        2 => CellValue::Present,
        3 => CellValue::Count(read_i64(r)?),
        tag => return Err(DecodeError::BadTag { tag, offset: at }),
    })
}

/// A key as a new buffer.
pub fn key_bytes(k: &CellKey) -> Vec<u8> {
    let mut v = Vec::new();
    encode_key(&mut v, k);
    v
}

/// A value as a new buffer.
pub fn value_bytes(v: &CellValue) -> Vec<u8> {
    let mut b = Vec::new();
    encode_value(&mut b, v);
    b
}

/// Decode a buffer holding exactly one key.
pub fn key_from_bytes(b: &[u8]) -> Result<CellKey, DecodeError> {
    let mut r = Reader::new(b);
    let k = decode_key(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after cell key".into(),
        ));
    }
    Ok(k)
}

/// Decode a buffer holding exactly one value.
pub fn value_from_bytes(b: &[u8]) -> Result<CellValue, DecodeError> {
    let mut r = Reader::new(b);
    let v = decode_value(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after cell value".into(),
        ));
    }
    Ok(v)
}

/// Decode a buffer holding exactly one value of a whole record, as a conflict over a record's
/// `Record` cell keeps its winner and loser: absent (a delete), present (an insert, as kept
/// before inserts were shown as their records), or a plain map of the record's fields. The
/// map's values are each held to the depth limit as a field's value is
/// ([`value::decode_fields`]): a record whose fields are nested as deep as allowed is listed.
pub fn record_value_from_bytes(b: &[u8]) -> Result<CellValue, DecodeError> {
    let Some((&0, map)) = b.split_first() else {
        return value_from_bytes(b);
    };
    let mut r = Reader::new(map);
    let fields = value::decode_fields(&mut r)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after a record's fields".into(),
        ));
    }
    Ok(CellValue::Value(crate::Value::Map(fields)))
}

impl CellValue {
    /// What the value means, for display: plain values as they are, absent as null,
    /// present as true, a counter contribution as its int.
    pub fn to_value(&self) -> crate::Value {
        match self {
            CellValue::Value(v) => v.clone(),
            CellValue::Absent => crate::Value::Null,
            CellValue::Present => crate::Value::Bool(true),
            CellValue::Count(n) => crate::Value::Int(*n),
        }
    }
}
