//! The on-disk encoding of a record's cells (the `body` column of `records`).
//!
//! ```text
//! body    := u8 (format << 4 | min(n_versions, 15)) | [varint (n_versions - 15)] | version*
//!            | varint n_cells | cell*
//! version := u64 LE hlc | varint node_index        -- node ids live once in `nodes`
//! cell    := u8 flags | [varint field_index] | [sub] | [value]
//!            | [varint version_index] | [varint prev_index] | [seen]
//!            | [varint (row_seq - cell_seq)]
//! flags   := key kind (bits 0-1: 0 record, 1 field, 2 counter, 3 element)
//!          | value kind (bits 2-3: 0 value, 1 absent, 2 present, 3 count)
//!          | 0x10 SAME_VERSION: no version_index: the previous cell's version (the first
//!            cell: version 0)
//!          | 0x20 HAS_PREV: prev_index follows
//!          | 0x40 SEQ_DELTA: the seq delta follows (else the cell's seq is the row's)
//!          | 0x80 HAS_SEEN: a reset's `seen` list follows (only with HAS_PREV; format 11)
//! seen    := varint n | varint version_index * n    -- the list's entries but prev's node's,
//!            which is prev
//! sub     := counter: varint node_index | element: varint length, bytes
//! value   := value: tagged value (codec::value) | count: zigzag varint | absent/present: -
//! ```
//! Field names live once in the `fields` table. A five-field record inserted in one write
//! carries one version (9–10 bytes) and two bytes per cell besides its values.

use super::nodes::{FieldTable, NodeTable};
use crate::codec::varint::{read_i64, write_i64, write_u64};
use crate::codec::{value, DecodeError, Reader};
use crate::crdt::{Cell, CellKey, CellValue, FieldName, RecordState, Seen};
use crate::limits::{RECORD_BYTES_MAX, VALUE_BYTES_MAX};
use crate::types::{Hlc, Seq, Version};

const BODY_FORMAT: u8 = 2;
const SAME_VERSION: u8 = 0x10;
const HAS_PREV: u8 = 0x20;
const SEQ_DELTA: u8 = 0x40;
const HAS_SEEN: u8 = 0x80;

/// Encode a record's cells. `row_seq` must be the record's max cell seq.
pub fn encode(
    state: &RecordState,
    row_seq: Seq,
    nodes: &mut NodeTable,
    fields: &mut FieldTable,
) -> Vec<u8> {
    let mut out = Vec::new();
    // A single record: nothing to remember the field numbers for.
    let mut memo = FieldMemo {
        entries: Vec::new(),
        keep: false,
    };
    encode_into(
        &mut out,
        &mut Vec::new(),
        &mut memo,
        state,
        row_seq,
        nodes,
        fields,
    );
    out
}

/// Field numbers already looked up, in the order the last record used them: records of one
/// collection usually have the same fields, which then match in place, cheaper than hashing
/// each name again.
#[derive(Debug)]
pub struct FieldMemo {
    entries: Vec<(FieldName, u64)>,
    /// Whether to remember new numbers (false when encoding a single record).
    keep: bool,
}

impl Default for FieldMemo {
    fn default() -> FieldMemo {
        FieldMemo {
            entries: Vec::new(),
            keep: true,
        }
    }
}

impl FieldMemo {
    /// The local number of field `f`, the `k`-th field of the record being encoded.
    fn index(&mut self, fields: &mut FieldTable, f: &FieldName, k: usize) -> u64 {
        if let Some((name, i)) = self.entries.get(k) {
            if name == f {
                return *i;
            }
        }
        if let Some((_, i)) = self.entries.iter().find(|(name, _)| name == f) {
            return *i;
        }
        let i = fields.index(f);
        // Bounded: a record has at most RECORD_FIELDS_MAX fields, but many records may
        // name many different ones; keep the memo to the size of a typical record.
        if self.keep && self.entries.len() < FIELD_MEMO_MAX {
            self.entries.push((f.clone(), i));
        }
        i
    }
}

/// Entries a [`FieldMemo`] keeps.
const FIELD_MEMO_MAX: usize = 32;

/// [`encode`] into `out` (cleared first), with `versions` as scratch space: a bulk write
/// reuses both for every record instead of allocating them each time.
pub fn encode_into(
    out: &mut Vec<u8>,
    versions: &mut Vec<Version>,
    memo: &mut FieldMemo,
    state: &RecordState,
    row_seq: Seq,
    nodes: &mut NodeTable,
    fields: &mut FieldTable,
) {
    // The version table comes first, so collect it in a first pass, in order of first use
    // over (version, prev) of each cell: the first cell's version is then always index 0.
    versions.clear();
    let index_of = |v: Version, versions: &[Version]| -> u64 {
        versions
            .iter()
            .position(|x| *x == v)
            .expect("collected in the first pass") as u64
    };
    for c in state.cells() {
        for v in std::iter::once(c.version)
            .chain(c.prev)
            .chain(c.seen_beyond_prev())
        {
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
    }
    out.clear();
    out.reserve(16 + versions.len() * 10 + state.cells().len() * 16);
    // Format and version count share the first byte: most records have 1–3 versions.
    let n = versions.len();
    out.push((BODY_FORMAT << 4) | n.min(15) as u8);
    if n >= 15 {
        write_u64(out, (n - 15) as u64);
    }
    for v in versions.iter() {
        out.extend_from_slice(&v.hlc.0.to_le_bytes());
        write_u64(out, nodes.index(&v.node));
    }
    write_u64(out, state.cells().len() as u64);
    let mut previous: Option<Version> = None;
    // The number of fields seen so far: the position of this cell's field in the memo.
    let mut k = 0;
    for (n, c) in state.cells().iter().enumerate() {
        let mut flags = match c.key {
            CellKey::Record => 0u8,
            CellKey::Field(_) => 1,
            CellKey::Counter(..) => 2,
            CellKey::Element(..) => 3,
        } | (match c.value {
            CellValue::Value(_) => 0u8,
            CellValue::Absent => 1,
            CellValue::Present => 2,
            CellValue::Count(_) => 3,
        } << 2);
        // The first cell's version is always version 0 of the table, so it needs no index.
        if n == 0 || previous == Some(c.version) {
            flags |= SAME_VERSION;
        }
        if c.prev.is_some() {
            flags |= HAS_PREV;
        }
        if c.seq != row_seq {
            flags |= SEQ_DELTA;
        }
        // A list is only ever made with a prev (its newest entry); without one it says
        // nothing a missing list does not.
        let has_seen = c.prev.is_some() && !c.seen.is_empty();
        if has_seen {
            flags |= HAS_SEEN;
        }
        out.push(flags);
        match &c.key {
            CellKey::Record => {}
            CellKey::Field(f) => {
                write_u64(out, memo.index(fields, f, k));
                k += 1;
            }
            CellKey::Counter(f, n) => {
                write_u64(out, fields.index(f));
                write_u64(out, nodes.index(n));
            }
            CellKey::Element(f, e) => {
                write_u64(out, fields.index(f));
                write_u64(out, e.len() as u64);
                out.extend_from_slice(e);
            }
        }
        match &c.value {
            CellValue::Value(v) => value::encode(out, v),
            CellValue::Count(n) => write_i64(out, *n),
            CellValue::Absent | CellValue::Present => {}
        }
        if flags & SAME_VERSION == 0 {
            write_u64(out, index_of(c.version, versions));
        }
        if let Some(p) = c.prev {
            write_u64(out, index_of(p, versions));
        }
        if has_seen {
            write_u64(out, c.seen_beyond_prev().count() as u64);
            for v in c.seen_beyond_prev() {
                write_u64(out, index_of(v, versions));
            }
        }
        if flags & SEQ_DELTA != 0 {
            write_u64(out, row_seq.0.saturating_sub(c.seq.0));
        }
        previous = Some(c.version);
    }
}

/// Decode a record's cells.
pub fn decode(
    bytes: &[u8],
    row_seq: Seq,
    nodes: &NodeTable,
    fields: &FieldTable,
) -> Result<RecordState, DecodeError> {
    let cells = decode_since(bytes, row_seq, Seq(0), nodes, fields)?;
    RecordState::from_cells(cells).map_err(DecodeError::Malformed)
}

/// A cell value of the kind its flags give (bits 2-3).
fn read_cell_value(r: &mut Reader<'_>, kind: u8) -> Result<CellValue, DecodeError> {
    Ok(match kind {
        0 => CellValue::Value(value::decode(r)?),
        1 => CellValue::Absent,
        2 => CellValue::Present,
        _ => CellValue::Count(read_i64(r)?),
    })
}

/// A cell key as stored: dictionary indexes, not yet looked up.
enum StoredKey<'a> {
    Record,
    Field(u64),
    Counter(u64, u64),
    Element(u64, &'a [u8]),
}

/// Decode only the cells stored at `min_seq` or later, in stored order: what a feed reader
/// needs from a record of which one field changed. The other cells are stepped over without
/// building their keys or values; the body's structure is checked all the same. With
/// `min_seq` 0 it decodes every cell (see [`decode`]).
pub fn decode_since(
    bytes: &[u8],
    row_seq: Seq,
    min_seq: Seq,
    nodes: &NodeTable,
    fields: &FieldTable,
) -> Result<Vec<Cell>, DecodeError> {
    let mut r = Reader::new(bytes);
    let first = r.u8()?;
    let format = first >> 4;
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
    let field = |i: u64| {
        fields
            .get(i)
            .cloned()
            .ok_or_else(|| DecodeError::Malformed(format!("unknown field index {i}")))
    };
    let mut n_versions = usize::from(first & 0x0f);
    if n_versions == 15 {
        n_versions = 15 + r.count("version count", RECORD_BYTES_MAX, 9)?;
        if n_versions.saturating_mul(9) > r.remaining() {
            return Err(DecodeError::Truncated {
                offset: r.pos(),
                needed: n_versions * 9 - r.remaining(),
            });
        }
    }
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
    let n_cells = r.count("cell count", RECORD_BYTES_MAX, 1)?;
    let full = min_seq.0 == 0;
    let mut cells: Vec<Cell> = Vec::with_capacity(if full { n_cells } else { 1 });
    // The version of the cell before (kept or not): what SAME_VERSION refers to.
    let mut previous: Option<Version> = None;
    for _ in 0..n_cells {
        let flags = r.u8()?;
        if flags & HAS_SEEN != 0 && flags & HAS_PREV == 0 {
            return Err(DecodeError::Malformed(format!(
                "cell flags 0x{flags:02x}: a seen list without a prev"
            )));
        }
        let key = match flags & 0b11 {
            0 => StoredKey::Record,
            1 => StoredKey::Field(r.varint()?),
            2 => StoredKey::Counter(r.varint()?, r.varint()?),
            _ => StoredKey::Element(r.varint()?, r.blob("element", VALUE_BYTES_MAX)?),
        };
        let value_kind = (flags >> 2) & 0b11;
        let value_at = r.pos();
        // A full decode builds every value on the way; a partial one steps over them and
        // builds only those of the cells it keeps.
        let value = if full {
            Some(read_cell_value(&mut r, value_kind)?)
        } else {
            if value_kind == 0 {
                value::skip(&mut r)?;
            } else if value_kind == 3 {
                read_i64(&mut r)?;
            }
            None
        };
        let value_bytes = &bytes[value_at..r.pos()];
        let v = if flags & SAME_VERSION != 0 {
            match previous {
                Some(v) => v,
                None => version(0)?,
            }
        } else {
            version(r.varint()?)?
        };
        previous = Some(v);
        let prev = if flags & HAS_PREV != 0 {
            Some(version(r.varint()?)?)
        } else {
            None
        };
        let seen = match prev {
            Some(p) if flags & HAS_SEEN != 0 => {
                // Each entry names a distinct version of the table.
                let n = r.count("seen list length", n_versions, 1)?;
                let mut others = Vec::with_capacity(n);
                for _ in 0..n {
                    others.push(version(r.varint()?)?);
                }
                Seen::with_prev(p, others)
            }
            _ => Seen::default(),
        };
        let seq = if flags & SEQ_DELTA != 0 {
            let delta = r.varint()?;
            Seq(row_seq.0.checked_sub(delta).ok_or_else(|| {
                DecodeError::Malformed(format!("cell seq delta {delta} exceeds row seq {row_seq}"))
            })?)
        } else {
            row_seq
        };
        if seq < min_seq {
            continue;
        }
        let key = match key {
            StoredKey::Record => CellKey::Record,
            StoredKey::Field(f) => CellKey::Field(field(f)?),
            StoredKey::Counter(f, n) => CellKey::Counter(field(f)?, node(n)?),
            StoredKey::Element(f, e) => CellKey::Element(field(f)?, e.to_vec()),
        };
        let value = match value {
            Some(v) => v,
            None => read_cell_value(&mut Reader::new(value_bytes), value_kind)?,
        };
        cells.push(Cell {
            key,
            value,
            version: v,
            prev,
            seen,
            seq,
        });
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed(
            "trailing bytes after record body".to_owned(),
        ));
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Hlc;
    use crate::{NodeId, Value};

    fn record(fields: &[(&str, i64)], t: u64) -> RecordState {
        let version = Version {
            hlc: Hlc::new(t, 0),
            node: NodeId([1; 16]),
        };
        let mut cells = vec![Cell {
            key: CellKey::Record,
            value: CellValue::Present,
            version,
            prev: None,
            seen: Seen::default(),
            seq: Seq(t),
        }];
        cells.extend(fields.iter().map(|(f, v)| Cell {
            key: CellKey::Field((*f).into()),
            value: CellValue::Value(Value::Int(*v)),
            version,
            prev: None,
            seen: Seen::default(),
            seq: Seq(t),
        }));
        RecordState::from_cells(cells).unwrap()
    }

    #[test]
    fn reused_buffers_encode_every_record_as_alone() {
        let (mut nodes, mut fields) = (NodeTable::default(), FieldTable::default());
        let (mut out, mut versions, mut memo) = (Vec::new(), Vec::new(), FieldMemo::default());
        // Same fields, then other fields (the memo's positions no longer match), then a
        // subset.
        let records = [
            record(&[("a", 1), ("b", 2)], 5),
            record(&[("a", 3), ("b", 4)], 6),
            record(&[("c", 5), ("a", 6), ("z", 7)], 7),
            record(&[("b", 8)], 8),
        ];
        for r in &records {
            let seq = r.max_seq();
            encode_into(
                &mut out,
                &mut versions,
                &mut memo,
                r,
                seq,
                &mut nodes,
                &mut fields,
            );
            assert_eq!(out, encode(r, seq, &mut nodes, &mut fields));
            assert_eq!(&decode(&out, seq, &nodes, &fields).unwrap(), r);
        }
    }

    proptest::proptest! {
        /// A partial decode is the full one filtered by seq, whatever the cells: kinds,
        /// values, versions shared with the cell before (SAME_VERSION across skipped cells),
        /// earlier versions, seqs.
        #[test]
        fn decode_since_is_decode_filtered(
            cells in proptest::collection::btree_map(
                (0u8..4, 0u8..4, 0u8..3),
                (
                    0u8..4,
                    crate::codec::value::tests::arb_value(),
                    0u64..3,
                    proptest::option::of(0u64..3),
                    1u64..6,
                ),
                1..12,
            ),
        ) {
            let versions: Vec<Version> = (0..3)
                .map(|i| Version { hlc: Hlc::new(100 + i, 0), node: NodeId([i as u8 + 1; 16]) })
                .collect();
            let cells: Vec<Cell> = cells
                .into_iter()
                .map(|((kind, f, e), (vk, v, ver, prev, seq))| {
                    let field: crate::crdt::FieldName = format!("f{f}").as_str().into();
                    let key = match kind {
                        0 => CellKey::Record,
                        1 => CellKey::Field(field),
                        2 => CellKey::Counter(field, NodeId([e + 1; 16])),
                        _ => CellKey::Element(field, crate::codec::value::to_bytes(&Value::Int(e.into()))),
                    };
                    let value = match vk {
                        0 => CellValue::Value(v),
                        1 => CellValue::Absent,
                        2 => CellValue::Present,
                        _ => CellValue::Count(i64::from(e) - 1),
                    };
                    Cell {
                        key,
                        value,
                        version: versions[ver as usize],
                        prev: prev.map(|p| versions[p as usize]),
                        // A reset's list: every node's version (each node has one), so
                        // prev's node's entry is prev, as a writer makes it.
                        seen: if prev.is_some() && seq % 2 == 1 {
                            Seen::from_versions(versions.iter().copied())
                        } else {
                            Seen::default()
                        },
                        seq: Seq(seq),
                    }
                })
                .collect();
            // Several generated keys map to one cell key (the record cell, a field): keep one.
            let mut cells = cells;
            cells.sort_by(|a, b| a.key.cmp(&b.key));
            cells.dedup_by(|a, b| a.key == b.key);
            let state = RecordState::from_cells(cells).unwrap();
            let (mut nodes, mut fields) = (NodeTable::default(), FieldTable::default());
            let row_seq = state.max_seq();
            let bytes = encode(&state, row_seq, &mut nodes, &mut fields);
            let all = decode(&bytes, row_seq, &nodes, &fields).unwrap();
            proptest::prop_assert_eq!(&all, &state);
            for min in 0..8 {
                let want: Vec<Cell> = all
                    .cells()
                    .iter()
                    .filter(|c| c.seq >= Seq(min))
                    .cloned()
                    .collect();
                let got = decode_since(&bytes, row_seq, Seq(min), &nodes, &fields).unwrap();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
