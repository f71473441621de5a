//! The on-disk encoding of a record's cells (the `body` column of `records`).
//!
//! ```text
//! body    := 0x01 (body format) | varint n_versions | version* | varint n_cells | cell*
//! version := u64 LE hlc | varint node_index        -- node ids live once in the `nodes` table
//! cell    := u8 flags | key | value | varint version_index
//!            | varint prev (0 = none, else 1 + version_index) | varint (row_seq - cell_seq)
//! flags   := key kind (bits 0-1: 0 record, 1 field, 2 counter, 3 element)
//!          | value kind (bits 2-3: 0 value, 1 absent, 2 present, 3 count)
//! key     := record: - | field: str | counter: str varint node_index | element: str bytes
//! value   := value: tagged value (codec::value) | count: zigzag varint | absent/present: -
//! ```
//! Versions are shared by the cells written in one commit, so a five-field record inserted in
//! one transaction carries one version (9 bytes) and 4 bytes of metadata per cell.

use super::nodes::NodeTable;
use crate::codec::varint::{read_i64, write_i64, write_u64};
use crate::codec::{value, DecodeError, Reader};
use crate::crdt::{Cell, CellKey, CellValue, RecordState};
use crate::limits::{FIELD_NAME_BYTES_MAX, RECORD_BYTES_MAX, VALUE_BYTES_MAX};
use crate::types::{Hlc, Seq, Version};

const BODY_FORMAT: u8 = 1;

/// Encode a record's cells. `row_seq` must be the record's max cell seq.
pub fn encode(state: &RecordState, row_seq: Seq, nodes: &mut NodeTable) -> Vec<u8> {
    let mut versions: Vec<Version> = Vec::new();
    let index_of = |v: Version, versions: &mut Vec<Version>| -> u64 {
        match versions.iter().position(|x| *x == v) {
            Some(i) => i as u64,
            None => {
                versions.push(v);
                (versions.len() - 1) as u64
            }
        }
    };
    let mut cells = Vec::with_capacity(64);
    write_u64(&mut cells, state.cells().len() as u64);
    for c in state.cells() {
        let (key_kind, value_kind) = (
            match c.key {
                CellKey::Record => 0u8,
                CellKey::Field(_) => 1,
                CellKey::Counter(..) => 2,
                CellKey::Element(..) => 3,
            },
            match c.value {
                CellValue::Value(_) => 0u8,
                CellValue::Absent => 1,
                CellValue::Present => 2,
                CellValue::Count(_) => 3,
            },
        );
        cells.push(key_kind | (value_kind << 2));
        match &c.key {
            CellKey::Record => {}
            CellKey::Field(f) => write_str(&mut cells, f),
            CellKey::Counter(f, n) => {
                write_str(&mut cells, f);
                write_u64(&mut cells, nodes.index(*n));
            }
            CellKey::Element(f, e) => {
                write_str(&mut cells, f);
                write_u64(&mut cells, e.len() as u64);
                cells.extend_from_slice(e);
            }
        }
        match &c.value {
            CellValue::Value(v) => value::encode(&mut cells, v),
            CellValue::Count(n) => write_i64(&mut cells, *n),
            CellValue::Absent | CellValue::Present => {}
        }
        let vi = index_of(c.version, &mut versions);
        write_u64(&mut cells, vi);
        let pi = c.prev.map_or(0, |p| 1 + index_of(p, &mut versions));
        write_u64(&mut cells, pi);
        write_u64(&mut cells, row_seq.0.saturating_sub(c.seq.0));
    }
    let mut out = Vec::with_capacity(cells.len() + 2 + versions.len() * 10);
    out.push(BODY_FORMAT);
    write_u64(&mut out, versions.len() as u64);
    for v in &versions {
        out.extend_from_slice(&v.hlc.0.to_le_bytes());
        write_u64(&mut out, nodes.index(v.node));
    }
    out.extend_from_slice(&cells);
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Decode a record's cells.
pub fn decode(bytes: &[u8], row_seq: Seq, nodes: &NodeTable) -> Result<RecordState, DecodeError> {
    let mut r = Reader::new(bytes);
    let format = r.u8()?;
    if format != BODY_FORMAT {
        return Err(DecodeError::Malformed(format!(
            "unknown record body format {format}"
        )));
    }
    let node = |i: u64| {
        nodes
            .id(i)
            .ok_or_else(|| DecodeError::Malformed(format!("unknown node index {i}")))
    };
    let n_versions = r.count("version count", RECORD_BYTES_MAX, 9)?;
    let mut versions = Vec::with_capacity(n_versions);
    for _ in 0..n_versions {
        let hlc = Hlc(u64::from_le_bytes(r.array()?));
        versions.push(Version {
            hlc,
            node: node(r.varint()?)?,
        });
    }
    let version = |i: u64| {
        versions
            .get(i as usize)
            .copied()
            .ok_or_else(|| DecodeError::Malformed(format!("bad version index {i}")))
    };
    let n_cells = r.count("cell count", RECORD_BYTES_MAX, 4)?;
    let mut cells = Vec::with_capacity(n_cells);
    for _ in 0..n_cells {
        let flags = r.u8()?;
        let key = match flags & 0b11 {
            0 => CellKey::Record,
            1 => CellKey::Field(r.str("field name", FIELD_NAME_BYTES_MAX)?.to_owned()),
            2 => {
                let f = r.str("field name", FIELD_NAME_BYTES_MAX)?.to_owned();
                CellKey::Counter(f, node(r.varint()?)?)
            }
            _ => {
                let f = r.str("field name", FIELD_NAME_BYTES_MAX)?.to_owned();
                CellKey::Element(f, r.blob("element", VALUE_BYTES_MAX)?.to_vec())
            }
        };
        let value = match (flags >> 2) & 0b11 {
            0 => CellValue::Value(value::decode(&mut r)?),
            1 => CellValue::Absent,
            2 => CellValue::Present,
            _ => CellValue::Count(read_i64(&mut r)?),
        };
        let v = version(r.varint()?)?;
        let prev = match r.varint()? {
            0 => None,
            i => Some(version(i - 1)?),
        };
        let delta = r.varint()?;
        let seq = Seq(row_seq.0.checked_sub(delta).ok_or_else(|| {
            DecodeError::Malformed(format!("cell seq delta {delta} exceeds row seq {row_seq}"))
        })?);
        cells.push(Cell {
            key,
            value,
            version: v,
            prev,
            seq,
        });
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after record body".to_owned(),
        ));
    }
    RecordState::from_cells(cells).map_err(DecodeError::Malformed)
}
