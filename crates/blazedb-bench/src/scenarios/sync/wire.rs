//! Reading what sessions send: frames split out of a byte stream, the bytes of a CHANGES
//! payload attributed to the parts of the format (docs/PROTOCOL.md §4 and §6), and the JSON
//! form the wire sizes are compared with.

use anyhow::{ensure, Result};
use blazedb::codec::{value, DecodeError, Reader};
use blazedb::crdt::{Cell, CellKey, CellValue};
use blazedb::sync::frame::FLAG_LZ4;
use blazedb::sync::message::kind;
use blazedb::{Change, Database, RecordId, Seq};
use serde_json::json;

/// Cell flag bits (docs/PROTOCOL.md §6.4; private in the core's encoder).
const CELL_SAME_VERSION: u8 = 0x10;
const CELL_HAS_PREV: u8 = 0x20;
const CELL_SAME_PREV: u8 = 0x40;
const CELL_HAS_SEEN: u8 = 0x80;

/// The JSON the wire sizes are compared with, in words (it goes into the report).
pub(super) const JSON_FORM: &str =
    "compact JSON array (serde_json, no whitespace) with one object \
     per field cell: {\"collection\":\"bugs\",\"id\":\"<hyphenated UUID>\",\"field\":\"<name>\",\
     \"value\":<BlazeDB JSON form of the value: string, number, {\"$date\":\"<RFC 3339>\"}>,\
     \"hlc\":<u64>,\"node\":\"<32 hex digits>\"}; a single change is one such object without \
     the array. The record-existence cells of inserts have no field and are left out (which \
     favours JSON)";

pub(super) fn kind_name(k: u8) -> &'static str {
    match k {
        kind::HELLO => "HELLO",
        kind::SUBSCRIBE => "SUBSCRIBE",
        kind::CHANGES => "CHANGES",
        kind::ACK => "ACK",
        kind::CAUGHT_UP => "CAUGHT_UP",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::ERROR => "ERROR",
        kind::REJECT => "REJECT",
        _ => "unknown",
    }
}

/// One frame of a byte stream (docs/PROTOCOL.md §4).
#[derive(Debug)]
pub(super) struct FrameView<'a> {
    /// The message type.
    pub(super) kind: u8,
    flags: u8,
    /// Length prefix, body and checksum.
    pub(super) wire_bytes: usize,
    /// The payload as transmitted (compressed when the LZ4 flag is set).
    payload: &'a [u8],
}

/// Split a stream into frames (the checksums are the session's business, not checked here).
pub(super) fn frames(stream: &[u8]) -> Result<Vec<FrameView<'_>>> {
    let mut r = Reader::new(stream);
    let mut out = Vec::new();
    while !r.is_empty() {
        let start = r.pos();
        let len = r.len("frame body", stream.len())?;
        ensure!(len >= 2, "frame body of {len} bytes");
        let body = r.bytes(len)?;
        r.bytes(4)?;
        out.push(FrameView {
            kind: body[0],
            flags: body[1],
            wire_bytes: r.pos() - start,
            payload: &body[2..],
        });
    }
    Ok(out)
}

/// Bytes of the CHANGES frames among `sent`.
pub(super) fn changes_bytes(sent: &[Vec<u8>]) -> Result<usize> {
    let mut n = 0;
    for f in sent {
        n += frames(f)?
            .iter()
            .filter(|f| f.kind == kind::CHANGES)
            .map(|f| f.wire_bytes)
            .sum::<usize>();
    }
    Ok(n)
}

/// Where the bytes of CHANGES frames go, by part of the format (docs/PROTOCOL.md §6).
#[derive(Clone, Debug, Default)]
pub(super) struct Parts {
    frames: usize,
    /// Length prefix, type, flags, checksum.
    framing: usize,
    /// Group, record and cell counts; sequence deltas; the end delta.
    counts: usize,
    /// Collection references (inline names on first use).
    collections: usize,
    /// 16 bytes per record.
    ids: usize,
    /// One flags byte per cell.
    cell_flags: usize,
    /// Field references (inline names on first use), counter nodes, set elements.
    keys: usize,
    /// Encoded values.
    values: usize,
    /// Version timestamps (deltas) and node references.
    versions: usize,
    /// Replaced-version timestamps and node references, and resets' `seen` lists.
    prevs: usize,
    records: usize,
    cells: usize,
}

impl Parts {
    /// The breakdown of the CHANGES frames among `sent` (which must be uncompressed).
    pub(super) fn of(sent: &[Vec<u8>]) -> Result<Parts> {
        let mut p = Parts::default();
        for f in sent {
            for v in frames(f)? {
                if v.kind == kind::CHANGES {
                    p.add(&v)?;
                }
            }
        }
        Ok(p)
    }

    pub(super) fn total(&self) -> usize {
        self.framing
            + self.counts
            + self.collections
            + self.ids
            + self.cell_flags
            + self.keys
            + self.values
            + self.versions
            + self.prevs
    }

    fn add(&mut self, f: &FrameView<'_>) -> Result<()> {
        ensure!(
            f.flags & FLAG_LZ4 == 0,
            "a breakdown needs uncompressed frames"
        );
        self.frames += 1;
        self.framing += f.wire_bytes - f.payload.len();
        let r = &mut Reader::new(f.payload);
        let groups = measured(r, &mut self.counts, |r| r.varint())?;
        for _ in 0..groups {
            let records = measured(r, &mut self.counts, |r| {
                r.varint()?;
                r.varint()
            })?;
            for _ in 0..records {
                self.records += 1;
                measured(r, &mut self.collections, skip_name)?;
                measured(r, &mut self.ids, |r| r.bytes(16).map(drop))?;
                let cells = measured(r, &mut self.counts, |r| r.varint())?;
                for _ in 0..cells {
                    self.cells += 1;
                    let flags = measured(r, &mut self.cell_flags, |r| r.u8())?;
                    measured(r, &mut self.keys, |r| match flags & 0x03 {
                        0 => Ok(()),
                        1 => skip_name(r),
                        2 => skip_name(r).and_then(|()| skip_node(r)),
                        _ => skip_name(r).and_then(|()| r.blob("element", usize::MAX).map(drop)),
                    })?;
                    measured(r, &mut self.values, |r| match (flags >> 2) & 0x03 {
                        0 => value::decode(r).map(drop),
                        3 => r.varint().map(drop),
                        _ => Ok(()),
                    })?;
                    if flags & CELL_SAME_VERSION == 0 {
                        measured(r, &mut self.versions, |r| {
                            r.varint()?;
                            skip_node(r)
                        })?;
                    }
                    if flags & CELL_HAS_PREV != 0 && flags & CELL_SAME_PREV == 0 {
                        measured(r, &mut self.prevs, |r| {
                            r.varint()?;
                            skip_node(r)
                        })?;
                    }
                    if flags & CELL_HAS_SEEN != 0 {
                        measured(r, &mut self.prevs, |r| {
                            for _ in 0..r.varint()? {
                                r.varint()?;
                                skip_node(r)?;
                            }
                            Ok(())
                        })?;
                    }
                }
            }
        }
        measured(r, &mut self.counts, |r| r.varint())?;
        ensure!(r.is_empty(), "trailing bytes in a CHANGES payload");
        Ok(())
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({
            "total": self.total(),
            "frames": self.frames,
            "records": self.records,
            "cells": self.cells,
            "framing": self.framing,
            "counts_and_seq_deltas": self.counts,
            "collection_refs": self.collections,
            "record_ids": self.ids,
            "cell_flags": self.cell_flags,
            "field_refs": self.keys,
            "values": self.values,
            "versions": self.versions,
            "prev_versions": self.prevs,
        })
    }
}

/// Run `f` on the reader and add the bytes it consumed to `into`.
fn measured<'a, T>(
    r: &mut Reader<'a>,
    into: &mut usize,
    f: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let start = r.pos();
    let v = f(r)?;
    *into += r.pos() - start;
    Ok(v)
}

/// A name reference: 0 or 1 → an inline string follows; n ≥ 2 → a dictionary entry.
fn skip_name(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    if r.varint()? < 2 {
        r.blob("name", usize::MAX)?;
    }
    Ok(())
}

/// A node reference: 0 or 1 → 16 inline bytes follow; n ≥ 2 → a dictionary entry.
fn skip_node(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    if r.varint()? < 2 {
        r.bytes(16)?;
    }
    Ok(())
}

/// The field cells of `changes` in [`JSON_FORM`], and how many record cells were left out.
pub(super) fn cells_json(changes: &[Change]) -> (Vec<serde_json::Value>, usize) {
    let (mut out, mut skipped) = (Vec::new(), 0);
    for ch in changes {
        for c in &ch.cells {
            match cell_json(&ch.collection, ch.id, c) {
                Some(j) => out.push(j),
                None => skipped += 1,
            }
        }
    }
    (out, skipped)
}

fn cell_json(collection: &str, id: RecordId, c: &Cell) -> Option<serde_json::Value> {
    let (CellKey::Field(field), CellValue::Value(v)) = (&c.key, &c.value) else {
        return None;
    };
    Some(json!({
        "collection": collection,
        "id": id.to_string(),
        "field": &**field,
        "value": blazedb::codec::json::to_json(v),
        "hlc": c.version.hlc.0,
        "node": c.version.node.to_string(),
    }))
}

/// Bytes of the single field cell A committed after `before`, as one JSON object.
pub(super) fn one_cell_json_bytes(a: &Database, before: Seq) -> Result<usize> {
    let feed = a.changes_since(before, usize::MAX, None)?;
    let (cells, _) = cells_json(&feed.changes);
    ensure!(
        cells.len() == 1,
        "expected one changed cell, found {}",
        cells.len()
    );
    Ok(serde_json::to_vec(&cells[0])?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `changes-update` of docs/PROTOCOL.md §14.2: frame 1 of a direction, one field update.
    const CHANGES_UPDATE: &str = "3c 03 00 01 03 01 02 01 90 f3 a2 6b 00 7c 4e 8a 6f 0c 1d 2e 3f \
        40 51 01 21 04 05 14 43 72 61 73 68 20 6f 6e 20 73 61 76 65 20 61 73 20 50 44 46 82 80 d0 \
        89 02 02 82 80 d0 89 02 02 00 6d dd d6 99";

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect()
    }

    #[test]
    fn breakdown_of_the_protocol_vector_accounts_for_every_byte() {
        let frame = hex(CHANGES_UPDATE);
        assert_eq!(frame.len(), 65);
        let p = Parts::of(&[frame]).expect("a valid frame");
        assert_eq!((p.frames, p.records, p.cells), (1, 1, 1));
        assert_eq!(p.framing, 7, "length, type, flags, CRC");
        assert_eq!(p.counts, 5, "groups, seq delta, records, cells, end");
        assert_eq!((p.collections, p.ids, p.cell_flags, p.keys), (1, 16, 1, 1));
        assert_eq!(p.values, 22, "tag, length, 20 bytes of text");
        assert_eq!((p.versions, p.prevs), (6, 6));
        assert_eq!(p.total(), 65);
    }

    #[test]
    fn frames_split_a_stream_and_keep_their_kinds() {
        let mut enc = blazedb::sync::frame::FrameEncoder::default();
        let mut stream = enc.encode(0x04, false, &[7]);
        stream.extend(enc.encode(0x03, true, &[0; 300]));
        stream.extend(hex(CHANGES_UPDATE));
        let f = frames(&stream).expect("valid frames");
        let kinds: Vec<&str> = f.iter().map(|f| kind_name(f.kind)).collect();
        assert_eq!(kinds, ["ACK", "CHANGES", "CHANGES"]);
        assert_eq!(f[0].wire_bytes, 1 + 2 + 1 + 4);
        assert_eq!(f[1].wire_bytes, 2 + 2 + 300 + 4, "a two-byte length prefix");
        assert_eq!(f.iter().map(|f| f.wire_bytes).sum::<usize>(), stream.len());
        assert!(frames(&stream[..stream.len() - 1]).is_err(), "a cut frame");
    }

    #[test]
    fn cells_become_the_documented_json() {
        let node = blazedb::NodeId([0xab; 16]);
        let id = RecordId([1; 16]);
        let cell = |key, value| Cell {
            key,
            value,
            version: blazedb::Version {
                hlc: blazedb::Hlc(42),
                node,
            },
            prev: None,
            seen: blazedb::crdt::Seen::default(),
            seq: Seq(1),
        };
        let change = Change {
            seq: Seq(1),
            collection: "bugs".into(),
            id,
            cells: vec![
                cell(CellKey::Record, CellValue::Present),
                cell(
                    CellKey::Field("status".into()),
                    CellValue::Value("open".into()),
                ),
            ],
        };
        let (cells, skipped) = cells_json(&[change]);
        assert_eq!(skipped, 1, "the record cell is left out");
        assert_eq!(
            serde_json::to_string(&cells[0]).expect("json"),
            format!(
                "{{\"collection\":\"bugs\",\"id\":\"{id}\",\"field\":\"status\",\
                 \"value\":\"open\",\"hlc\":42,\"node\":\"{}\"}}",
                "ab".repeat(16)
            )
        );
    }
}
