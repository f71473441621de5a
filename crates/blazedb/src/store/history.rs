//! The change history: an append-only audit trail of every cell change (local or from a
//! peer), kept apart from sync state. It serves `history(collection, id)` and time-travel
//! reads, and is compacted by a retention policy. Sync never depends on it (decision 6): the
//! one reader on the sync path, [`Inner::past_visibility`], only narrows who is sent a delete,
//! and where history is gone it answers "unknown" and the delete goes as it would without it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use rusqlite::{params, OptionalExtension};

use super::{Database, Inner};
use crate::crdt::encoding::{key_from_bytes, value_from_bytes};
use crate::crdt::{Cell, CellKey, CellValue, RecordState, Seen};
use crate::error::{Error, Result};
use crate::store::read::Record;
use crate::types::{Hlc, Seq, Timestamp, Version};
use crate::{RecordId, Value};

/// How much history to keep. Entries older than `max_age_ms`, and the oldest entries beyond
/// `max_entries`, are removed by compaction (which also runs by itself as history grows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRetention {
    /// Keep entries at most this old (by the time they were recorded here). `None`: no limit.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many entries: those of the last `max_entries` changes recorded
    /// here (entries GC removed with their deleted record count among them, so fewer may be
    /// kept). `None`: no limit.
    pub max_entries: Option<u64>,
}

impl Default for HistoryRetention {
    /// 30 days, at most 10 million entries.
    fn default() -> Self {
        HistoryRetention {
            max_age_ms: Some(30 * 24 * 3600 * 1000),
            max_entries: Some(10_000_000),
        }
    }
}

impl HistoryRetention {
    /// After how many new history rows compaction runs by itself.
    pub(crate) fn check_every_rows(&self) -> u64 {
        self.max_entries
            .map_or(100_000, |m| (m / 10).clamp(100, 100_000))
    }
}

/// One change of one cell.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Which cell: a field name, `field[counter:node]`, `field[element:value]` or `$record`.
    pub cell: String,
    /// The field it belongs to (`None` for the record's insert/delete cell).
    pub field: Option<String>,
    /// The value before (`None`: the cell did not exist).
    pub old: Option<Value>,
    /// The value after (`None`: the cell was removed by a delete or a reset).
    pub new: Option<Value>,
    /// What the change did: `set`, `unset`, `insert`, `delete`, `count`, `add`, `remove`,
    /// `reset` (dropped by a newer delete, insert or plain write).
    pub op: &'static str,
    /// When and where it was written.
    pub version: Version,
    /// Local feed position of the commit that stored it; `Seq(0)` (never a position) when
    /// it is not known: the creation of a cell rebuilt from the value its overwrite replaced.
    pub seq: Seq,
    /// When this node recorded it (ms since the epoch).
    pub recorded_ms: u64,
}

impl HistoryEntry {
    /// The time of the change at its origin.
    pub fn time(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.version.hlc.wall_ms() as i64)
    }
}

/// How a walk down a record's history chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkEnd {
    /// At the record's first entry (or it has none): every entry was seen.
    Start,
    /// Retention (or a stale pointer) cut the chain: older entries are unknown.
    Cut,
    /// The caller stopped it.
    Stopped,
}

/// The cell a history entry replaced (see `Inner::replaced_cell`).
enum Replaced {
    Cell(Cell),
    /// The entry replaced no cell.
    Nothing,
    /// The cell's writer is not in the node dictionary.
    UnknownNode,
    /// Written before format 5: the replaced cell's seq is not known.
    SeqUnknown,
}

/// What a record's history says about a peer's copy of it (see `Inner::past_visibility`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PastVisibility {
    /// One of the record's live states from the peer's position on was visible to it: the
    /// peer may hold the record.
    Seen,
    /// None was, and the record was live here at some time: the peer cannot hold it through
    /// this node.
    NeverSeen,
    /// History cannot tell: the peer's position is older than what history still tells
    /// (entries removed by retention, written before format 5, or more than 1,000 entries
    /// back), or the record was never live here (the tombstone of a refused insert, a delete
    /// of a record this node never held).
    Unknown,
}

/// A record's past as its history tells it: the live states it had, each with the positions
/// (local seqs) it held for — as a peer that had received this node's changes through such a
/// position would have been sent it. Rebuilt from the stored record by undoing history
/// entries newest first; a cell created after a position (not a history row of its own) is
/// left out of the state at that position (`old_seq`, format 5).
///
/// The sender's feed reads states after whole commits, so the state it last judged for a
/// peer at `since` is one of those held from `since` on; the judgement errs only towards
/// [`PastVisibility::Seen`].
#[derive(Debug)]
pub(crate) struct PastStates {
    /// The states are exact for positions from here on.
    exact_from: Seq,
    /// Whether the record was live here at some time.
    was_live: bool,
    /// History cannot be read (an unknown node).
    unknown: bool,
    /// (from, until, fields): the live fields it had at every position in `from..until`.
    states: Vec<(Seq, Seq, BTreeMap<String, Value>)>,
}

impl PastStates {
    fn judge(
        &self,
        since: Seq,
        visible: &mut dyn FnMut(&BTreeMap<String, Value>) -> bool,
    ) -> PastVisibility {
        if self.unknown || !self.was_live || since < self.exact_from {
            return PastVisibility::Unknown;
        }
        let seen = self
            .states
            .iter()
            .filter(|(_, until, _)| *until > since)
            .any(|(_, _, fields)| visible(fields));
        if seen {
            PastVisibility::Seen
        } else {
            PastVisibility::NeverSeen
        }
    }
}

/// Rebuilt pasts kept for reuse (see [`Inner::past_visibility`]): a delete is judged once
/// per peer that may read its collection, and each judgement of the same tombstone reuses
/// one walk through history. Keyed by the record's current seq, so a record that changes is
/// rebuilt; what a kept past says stays true (compaction only forgets).
#[derive(Debug, Default)]
pub(crate) struct PastCache {
    map: std::collections::HashMap<(i64, RecordId, Seq), std::sync::Arc<PastStates>>,
    order: std::collections::VecDeque<(i64, RecordId, Seq)>,
    /// Live states held by all kept pasts (memory is bounded by this, not by records: one
    /// record's past may hold up to `PAST_ENTRIES_MAX` states).
    states: usize,
}

/// Rebuilt pasts [`PastCache`] keeps at most.
const PAST_CACHE_RECORDS: usize = 4096;
/// Live states (field maps) [`PastCache`] keeps at most, over all its pasts.
const PAST_CACHE_STATES: usize = 16_384;

impl PastCache {
    fn get(&self, key: &(i64, RecordId, Seq)) -> Option<std::sync::Arc<PastStates>> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: (i64, RecordId, Seq), past: std::sync::Arc<PastStates>) {
        let n = past.states.len();
        if n > PAST_CACHE_STATES / 4 || self.map.contains_key(&key) {
            // A past this long is rebuilt when asked again rather than crowding out the rest.
            return;
        }
        self.map.insert(key, past);
        self.order.push_back(key);
        self.states += n;
        while self.order.len() > PAST_CACHE_RECORDS || self.states > PAST_CACHE_STATES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.map.remove(&old) {
                self.states -= p.states.len();
            }
        }
    }
}

/// Dates a record's history entries by the cell each wrote, along a walk newest first,
/// undoing each entry as it goes. An entry's own `seq` column is its record row's, which
/// every transaction of one received unit that touched the record shares (the last one's);
/// each cell keeps the seq of its own transaction. Dated by the row, the reset of a record
/// by one transaction of a unit was undone as if a later one had made it (simulation seed
/// 5754).
struct EntryDating {
    /// The record as the walk has undone it so far.
    cells: BTreeMap<CellKey, Cell>,
    /// Where the cells met so far were stored, by version: the current ones and every one
    /// undone. An entry's own cell is in `cells` under its key; an entry that names another
    /// cell (a field a record's reset removed) is dated by the reset's own cell, whose
    /// entry comes right before it (newest first) and was undone.
    stored_at: std::collections::HashMap<Version, Seq>,
}

impl EntryDating {
    fn new(current: &RecordState) -> EntryDating {
        EntryDating {
            cells: current
                .cells()
                .iter()
                .map(|c| (c.key.clone(), c.clone()))
                .collect(),
            stored_at: current.cells().iter().map(|c| (c.version, c.seq)).collect(),
        }
    }

    /// The seq of the commit that made the change of `key` written as `version`, if the
    /// cell it wrote was met. Never past the entry's own row seq (`row_seq`, the record's
    /// seq once the entry was written): the cell met may be a later copy of the one the
    /// entry wrote. GC drops a removal cell every peer has seen, and a peer may send that
    /// same cell back (a restatement), stored then under a new seq; dated by that seq, the
    /// entry of the original removal was undone for positions long after it, and a record
    /// with a field unset years before looked as it was before the unset (simulation seed
    /// 7037058: a partial replica was never sent a counter change, its record judged
    /// outside the replica's filter by a field value GC had long removed).
    fn date(&self, key: &CellKey, version: Version, row_seq: Seq) -> Option<Seq> {
        let met = match self.cells.get(key) {
            Some(c) if c.version == version => Some(c.seq),
            _ => self.stored_at.get(&version).copied(),
        };
        met.map(|seq| seq.min(row_seq))
    }

    /// Undo an entry: `key` goes back to `replaced` (or goes, if it replaced nothing).
    fn undo(&mut self, key: CellKey, replaced: Option<Cell>) {
        let removed = match replaced {
            Some(c) => {
                self.stored_at.insert(c.version, c.seq);
                self.cells.insert(key, c)
            }
            None => self.cells.remove(&key),
        };
        if let Some(c) = removed {
            self.stored_at.insert(c.version, c.seq);
        }
    }
}

/// History entries a record's rebuilt past reads at most: a past older than that counts as
/// unknown. (Each is one row read.)
const PAST_ENTRIES_MAX: usize = 1_000;

struct Row {
    key: CellKey,
    old: Option<(CellValue, Version)>,
    new: Option<CellValue>,
    version: Version,
    seq: Seq,
    recorded_ms: u64,
}

fn entry(
    key: &CellKey,
    old: Option<&CellValue>,
    new: Option<&CellValue>,
    version: Version,
    seq: Seq,
    recorded_ms: u64,
) -> HistoryEntry {
    let op = match (key, new) {
        (_, None) => "reset",
        (CellKey::Record, Some(CellValue::Present)) => "insert",
        (CellKey::Record, Some(_)) => "delete",
        (CellKey::Field(_), Some(CellValue::Absent)) => "unset",
        (CellKey::Field(_), Some(_)) => "set",
        (CellKey::Counter(..), _) => "count",
        (CellKey::Element(..), Some(CellValue::Present)) => "add",
        (CellKey::Element(..), Some(_)) => "remove",
    };
    HistoryEntry {
        cell: key.display_name(),
        field: key.field().map(str::to_owned),
        old: old.map(CellValue::to_value),
        new: new.map(CellValue::to_value),
        op,
        version,
        seq,
        recorded_ms,
    }
}

impl Inner {
    /// A record's cells and revision, live or not.
    pub(crate) fn record_state(
        &self,
        coll: i64,
        id: RecordId,
    ) -> Result<Option<(RecordState, u64)>> {
        let row: Option<(u64, u64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT rev, seq, body FROM records WHERE coll = ?1 AND id = ?2")?
            .query_row(params![coll, &id.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        match row {
            Some((rev, seq, bytes)) => Ok(Some((
                super::body::decode(&bytes, Seq(seq), &self.nodes, &self.fields)?,
                rev,
            ))),
            None => Ok(None),
        }
    }

    /// Walk a record's history entries, newest first: its chain from `records.hist` through
    /// each entry's `prev`, calling `each(hid, row)` with the entry's columns (`cell, old,
    /// old_hlc, old_node, new, hlc, node, seq, recorded_ms, old_seq`, from index 3 on) until
    /// it returns `Break`. The walk stops where retention cut the chain (a `prev` that is
    /// gone), and also at a `prev` that does not go down or an entry of another record:
    /// `hid`s can be reused once the newest rows are deleted, so a stale pointer must never
    /// lead into another record's entries. Returns how the walk ended.
    fn walk_history(
        &self,
        coll: i64,
        id: RecordId,
        mut each: impl FnMut(i64, &rusqlite::Row<'_>) -> Result<ControlFlow<()>>,
    ) -> Result<WalkEnd> {
        let head: Option<i64> = self
            .conn
            .prepare_cached("SELECT hist FROM records WHERE coll = ?1 AND id = ?2")?
            .query_row(params![coll, &id.0[..]], |r| r.get(0))
            .optional()?
            .flatten();
        let mut stmt = self.conn.prepare_cached(
            "SELECT coll, id, prev, cell, old, old_hlc, old_node, new, hlc, node, seq, recorded_ms,
                    old_seq, old_prev_age, old_prev_node, old_seen
             FROM history WHERE hid = ?1",
        )?;
        let mut next = head;
        while let Some(hid) = next {
            let mut rows = stmt.query([hid])?;
            let Some(r) = rows.next()? else {
                return Ok(WalkEnd::Cut);
            };
            let owner = r.get::<_, i64>(0)? == coll
                && r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)? == &id.0[..];
            if !owner {
                return Ok(WalkEnd::Cut);
            }
            if each(hid, r)?.is_break() {
                return Ok(WalkEnd::Stopped);
            }
            next = match r.get::<_, Option<i64>>(2)? {
                None => None,
                Some(p) if p < hid => Some(p),
                Some(_) => return Ok(WalkEnd::Cut),
            };
        }
        Ok(WalkEnd::Start)
    }

    /// Whether a peer that has received this node's changes through `since` may hold the
    /// record: did `visible` accept one of its live states from `since` on? `current` is the
    /// record as stored now. See [`PastStates`]; the rebuilt past is kept in a small cache
    /// shared by every caller, so a delete sent to many peers walks history once.
    pub(crate) fn past_visibility(
        &self,
        coll: i64,
        id: RecordId,
        current: &RecordState,
        since: Seq,
        visible: &mut dyn FnMut(&BTreeMap<String, Value>) -> bool,
    ) -> Result<PastVisibility> {
        let key = (coll, id, current.max_seq());
        let cached = self.past_cache.borrow().get(&key);
        let past = match cached {
            Some(p) => p,
            None => {
                let p = std::sync::Arc::new(self.past_states(coll, id, current)?);
                self.past_cache.borrow_mut().insert(key, p.clone());
                p
            }
        };
        Ok(past.judge(since, visible))
    }

    /// Rebuild a record's past from `current` by undoing its history entries newest first
    /// (see [`PastStates`]).
    fn past_states(&self, coll: i64, id: RecordId, current: &RecordState) -> Result<PastStates> {
        // Entries newest first: (seq of the commit, key, the cell it replaced).
        let mut entries: Vec<(Seq, CellKey, Option<Cell>)> = Vec::new();
        let mut was_live = current.is_live();
        let mut unknown = false;
        // The seq of the entry the walk stopped at, unread: the past is exact above it.
        let mut stopped_at = Seq(u64::MAX);
        let mut dating = EntryDating::new(current);
        let end = self.walk_history(coll, id, |_, r| {
            let key = key_from_bytes(&r.get::<_, Vec<u8>>(3)?)?;
            // Dated by the cell it wrote (see `EntryDating`); by its row where that cell
            // is not known.
            let row_seq = Seq(r.get::<_, i64>(10)? as u64);
            let seq = match self
                .entry_version(r)?
                .and_then(|v| dating.date(&key, v, row_seq))
            {
                Some(seq) => seq,
                None => row_seq,
            };
            if entries.len() >= PAST_ENTRIES_MAX {
                stopped_at = seq;
                return Ok(ControlFlow::Break(()));
            }
            let new = r.get::<_, Option<Vec<u8>>>(7)?;
            let old = match self.replaced_cell(&key, r)? {
                Replaced::Cell(c) => Some(c),
                Replaced::Nothing => None,
                Replaced::UnknownNode => {
                    unknown = true;
                    return Ok(ControlFlow::Break(()));
                }
                // Written before format 5: the replaced cell's seq is not known, so the
                // past is told only down to here.
                Replaced::SeqUnknown => {
                    stopped_at = seq;
                    return Ok(ControlFlow::Break(()));
                }
            };
            // Any field cell, or a record cell saying present, means the record was live.
            let present = |v: &CellValue| *v == CellValue::Present;
            was_live |= key != CellKey::Record
                || old.as_ref().is_some_and(|c| present(&c.value))
                || new
                    .as_deref()
                    .map(value_from_bytes)
                    .transpose()?
                    .is_some_and(|v| present(&v));
            dating.undo(key.clone(), old.clone());
            entries.push((seq, key, old));
            Ok(ControlFlow::Continue(()))
        })?;
        // The states are exact from the start when the walk reached the record's first
        // entry; from the oldest entry read when retention cut the chain below it; from the
        // entry it stopped at otherwise (every entry newer than a position is undone).
        let exact_from = match end {
            WalkEnd::Start => Seq(0),
            WalkEnd::Cut => entries.last().map_or(Seq(u64::MAX), |e| e.0),
            WalkEnd::Stopped => stopped_at,
        };
        let mut past = PastStates {
            exact_from,
            was_live,
            unknown,
            states: Vec::new(),
        };
        if unknown {
            return Ok(past);
        }
        // The state changes only where a cell appears (its seq) or an entry applies (its
        // commit's seq): it is constant from each such point up to the next one.
        let mut cells: BTreeMap<CellKey, Cell> = current
            .cells()
            .iter()
            .map(|c| (c.key.clone(), c.clone()))
            .collect();
        let mut points: Vec<Seq> = cells.values().map(|c| c.seq).collect();
        for (seq, _, old) in &entries {
            points.push(*seq);
            points.extend(old.as_ref().map(|c| c.seq));
        }
        points.retain(|p| *p >= exact_from);
        points.push(exact_from);
        points.sort_unstable_by(|a, b| b.cmp(a));
        points.dedup();
        let mut undo = entries.into_iter().peekable();
        let mut until = Seq(u64::MAX);
        for at in points {
            while let Some((_, key, old)) = undo.next_if(|(seq, _, _)| *seq > at) {
                match old {
                    Some(c) => cells.insert(key, c),
                    None => cells.remove(&key),
                };
            }
            let state =
                RecordState::from_cells(cells.values().filter(|c| c.seq <= at).cloned().collect())
                    .map_err(|e| Error::Corrupted(crate::codec::DecodeError::Malformed(e)))?;
            if state.is_live() {
                past.states.push((at, until, state.fields()));
            }
            until = at;
        }
        Ok(past)
    }

    /// The version a history entry wrote (its row as `walk_history` hands it); `None` if
    /// its node is not in the dictionary.
    fn entry_version(&self, r: &rusqlite::Row<'_>) -> Result<Option<Version>> {
        let Some(node) = self.nodes.id(r.get::<_, i64>(9)? as u64) else {
            return Ok(None);
        };
        Ok(Some(Version {
            hlc: Hlc(r.get::<_, i64>(8)? as u64),
            node,
        }))
    }

    /// The cell a history entry replaced (its row as `walk_history` hands it), rebuilt
    /// with the seq it had here (`old_seq`) and the `prev` it carried (format 9; an older
    /// entry does not keep it, and the cell comes back with `prev: None`).
    fn replaced_cell(&self, key: &CellKey, r: &rusqlite::Row<'_>) -> Result<Replaced> {
        Ok(
            match (
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(12)?,
            ) {
                (Some(v), Some(hlc), Some(n), Some(old_seq)) => {
                    let Some(node) = self.nodes.id(n as u64) else {
                        return Ok(Replaced::UnknownNode);
                    };
                    // Format 9: the prev's HLC as an age behind the cell's own, its writer
                    // when not the cell's (see `schema::HISTORY_OLD_PREV`).
                    let prev = match (r.get::<_, Option<i64>>(13)?, r.get::<_, Option<i64>>(14)?) {
                        (None, _) => None,
                        (Some(age), writer) => {
                            let writer = match writer {
                                None => Some(node),
                                Some(n) => self.nodes.id(n as u64),
                            };
                            let Some(writer) = writer else {
                                return Ok(Replaced::UnknownNode);
                            };
                            Some(Version {
                                hlc: Hlc(hlc.wrapping_sub(age) as u64),
                                node: writer,
                            })
                        }
                    };
                    // Format 11: a replaced reset's `seen` list (see `encode_old_seen` in
                    // write.rs); NULL for other cells and older entries.
                    let seen = match (prev, r.get::<_, Option<Vec<u8>>>(15)?) {
                        (Some(prev), Some(blob)) => {
                            let mut others = Vec::new();
                            let mut b = crate::codec::Reader::new(&blob);
                            while !b.is_empty() {
                                let back = crate::codec::varint::unzigzag(b.varint()?);
                                let Some(writer) = self.nodes.id(b.varint()?) else {
                                    return Ok(Replaced::UnknownNode);
                                };
                                others.push(Version {
                                    hlc: Hlc((hlc as u64).wrapping_sub(back as u64)),
                                    node: writer,
                                });
                            }
                            Seen::with_prev(prev, others)
                        }
                        _ => Seen::default(),
                    };
                    Replaced::Cell(Cell {
                        key: key.clone(),
                        value: value_from_bytes(&v)?,
                        version: Version {
                            hlc: Hlc(hlc as u64),
                            node,
                        },
                        prev,
                        seen,
                        seq: Seq(old_seq as u64),
                    })
                }
                (Some(_), _, _, None) => Replaced::SeqUnknown,
                _ => Replaced::Nothing,
            },
        )
    }

    /// The record as it was at position `at` (after every commit here up to `at`, none
    /// after), rebuilt from `current` (its stored state) by undoing the history entries of
    /// later commits newest first; a cell created after `at` has no entry of its own and is
    /// left out by its seq. `None` when history cannot tell: an entry it needs was removed
    /// by retention or written before format 5, or more than `PAST_ENTRIES_MAX` are
    /// needed. Undone cells carry the `prev` they had (entries written before format 9 do not
    /// keep it: such a cell comes back without, and a receiver it overwrites may list a
    /// spurious conflict).
    /// Entries are dated by the cells they wrote (see [`EntryDating`]).
    pub(crate) fn state_at(
        &self,
        coll: i64,
        id: RecordId,
        current: &RecordState,
        at: Seq,
    ) -> Result<Option<RecordState>> {
        let mut dating = EntryDating::new(current);
        let mut undone = 0usize;
        // Whether every entry newer than `at` was undone.
        let mut exact = true;
        let end = self.walk_history(coll, id, |_, r| {
            let key = key_from_bytes(&r.get::<_, Vec<u8>>(3)?)?;
            let row_seq = Seq(r.get::<_, i64>(10)? as u64);
            let written = self
                .entry_version(r)?
                .and_then(|v| dating.date(&key, v, row_seq));
            let Some(written) = written else {
                exact = false;
                return Ok(ControlFlow::Break(()));
            };
            if written <= at {
                return Ok(ControlFlow::Break(()));
            }
            undone += 1;
            let replaced = match self.replaced_cell(&key, r)? {
                _ if undone > PAST_ENTRIES_MAX => None,
                Replaced::Cell(c) => Some(Some(c)),
                Replaced::Nothing => Some(None),
                Replaced::UnknownNode | Replaced::SeqUnknown => None,
            };
            let Some(replaced) = replaced else {
                exact = false;
                return Ok(ControlFlow::Break(()));
            };
            dating.undo(key, replaced);
            Ok(ControlFlow::Continue(()))
        })?;
        // A chain cut by retention while still above `at` may have lost entries above it.
        if !exact || end == WalkEnd::Cut {
            return Ok(None);
        }
        RecordState::from_cells(dating.cells.into_values().filter(|c| c.seq <= at).collect())
            .map(Some)
            .map_err(|e| Error::Corrupted(crate::codec::DecodeError::Malformed(e)))
    }

    /// The `hid`s of a record's history entries, newest first (see `walk_history`).
    pub(crate) fn history_chain(&self, coll: i64, id: RecordId) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        self.walk_history(coll, id, |hid, _| {
            out.push(hid);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Delete the entries of a record's history whose cell `remove` picks (inside the
    /// caller's transaction), and link the chain around them: every entry older than a
    /// removed one is reached only through it, so deleting it alone would cut the record's
    /// history there, silently losing the other cells' older changes. The oldest entry left
    /// keeps the chain's original end (a start, or a cut by retention stays a cut). Returns
    /// how many entries were deleted.
    pub(crate) fn remove_history_entries(
        &self,
        coll: i64,
        id: RecordId,
        mut remove: impl FnMut(&CellKey) -> bool,
    ) -> Result<u64> {
        // (hid, prev, kept), newest first.
        let mut chain: Vec<(i64, Option<i64>, bool)> = Vec::new();
        self.walk_history(coll, id, |hid, r| {
            let key = key_from_bytes(&r.get::<_, Vec<u8>>(3)?)?;
            chain.push((hid, r.get(2)?, !remove(&key)));
            Ok(ControlFlow::Continue(()))
        })?;
        if chain.iter().all(|&(_, _, kept)| kept) {
            return Ok(0);
        }
        let end = chain.last().and_then(|&(_, prev, _)| prev);
        let kept: Vec<(i64, Option<i64>)> = chain
            .iter()
            .filter(|&&(_, _, kept)| kept)
            .map(|&(hid, prev, _)| (hid, prev))
            .collect();
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM history WHERE hid = ?1")?;
        for &(hid, _, _) in chain.iter().filter(|&&(_, _, kept)| !kept) {
            delete.execute([hid])?;
        }
        let mut relink = self
            .conn
            .prepare_cached("UPDATE history SET prev = ?2 WHERE hid = ?1")?;
        for (i, &(hid, prev)) in kept.iter().enumerate() {
            let older = kept.get(i + 1).map_or(end, |&(h, _)| Some(h));
            if older != prev {
                relink.execute(params![hid, older])?;
            }
        }
        let head = kept.first().map_or(end, |&(hid, _)| Some(hid));
        self.conn
            .prepare_cached("UPDATE records SET hist = ?3 WHERE coll = ?1 AND id = ?2")?
            .execute(params![coll, &id.0[..], head])?;
        Ok((chain.len() - kept.len()) as u64)
    }

    /// A record's history entries, oldest first.
    fn history_rows(&self, coll: i64, id: RecordId) -> Result<Vec<Row>> {
        let node = |i: i64| {
            self.nodes.id(i as u64).ok_or_else(|| {
                Error::Corrupted(crate::codec::DecodeError::Malformed(format!(
                    "unknown node index {i}"
                )))
            })
        };
        let mut out = Vec::new();
        self.walk_history(coll, id, |_, r| {
            let key = key_from_bytes(&r.get::<_, Vec<u8>>(3)?)?;
            let old = match (
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ) {
                (Some(v), Some(h), Some(n)) => Some((
                    value_from_bytes(&v)?,
                    Version {
                        hlc: Hlc(h as u64),
                        node: node(n)?,
                    },
                )),
                _ => None,
            };
            let new = match r.get::<_, Option<Vec<u8>>>(7)? {
                Some(v) => Some(value_from_bytes(&v)?),
                None => None,
            };
            out.push(Row {
                key,
                old,
                new,
                version: Version {
                    hlc: Hlc(r.get::<_, i64>(8)? as u64),
                    node: node(r.get(9)?)?,
                },
                seq: Seq(r.get::<_, i64>(10)? as u64),
                recorded_ms: r.get::<_, i64>(11)? as u64,
            });
            Ok(ControlFlow::Continue(()))
        })?;
        out.reverse();
        Ok(out)
    }
}

impl Database {
    /// Whether a peer that has received this node's changes through `since` may hold the
    /// record, judged by `visible` on each live state the record had from `since` on (see
    /// [`PastVisibility`]). A sender uses it to keep deletes from peers that never could
    /// read the record: a tombstone carries no values, but its id and time are still not
    /// theirs to learn.
    pub fn past_visibility(
        &self,
        collection: &str,
        id: RecordId,
        since: Seq,
        visible: &mut dyn FnMut(&BTreeMap<String, Value>) -> bool,
    ) -> Result<PastVisibility> {
        match self.record_state(collection, id)? {
            Some(state) => self.past_visibility_of(collection, id, &state, since, visible),
            None => Ok(PastVisibility::Unknown),
        }
    }

    /// A record as stored now and, when it has changed since position `at` and history can
    /// tell (see `Inner::state_at`), as it was at `at`; read together. `None` if there is no
    /// such record. A sender that is behind its head sends a record moving into a partial
    /// peer's view as it was where the peer will be, not with cells of later commits whose
    /// other records the peer has not been sent yet.
    pub(crate) fn record_state_now_and_at(
        &self,
        collection: &str,
        id: RecordId,
        at: Seq,
    ) -> Result<Option<(RecordState, Option<RecordState>)>> {
        let inner = self.lock()?;
        let Some(coll) = inner.collection_id(collection) else {
            return Ok(None);
        };
        let Some((now, _)) = inner.record_state(coll, id)? else {
            return Ok(None);
        };
        let then = if now.max_seq() > at {
            inner.state_at(coll, id, &now, at)?
        } else {
            None
        };
        Ok(Some((now, then)))
    }

    /// [`Database::past_visibility`] of a record whose stored state the caller has just
    /// read (`current`), without reading it again. (Should the record change in between,
    /// the newer history entries can only add states to the past judged, so the judgement
    /// errs towards sending, like every other doubt here.)
    pub(crate) fn past_visibility_of(
        &self,
        collection: &str,
        id: RecordId,
        current: &RecordState,
        since: Seq,
        visible: &mut dyn FnMut(&BTreeMap<String, Value>) -> bool,
    ) -> Result<PastVisibility> {
        let inner = self.lock()?;
        let Some(coll) = inner.collection_id(collection) else {
            return Ok(PastVisibility::Unknown);
        };
        inner.past_visibility(coll, id, current, since, visible)
    }

    /// Every change of a record this node knows, oldest first (by version). Creations of
    /// cells (an insert's fields, a first set) are not stored as rows — their values live in
    /// the record or in the `old` side of the change that replaced them — and are listed
    /// here with `old: None`.
    pub fn history(&self, collection: &str, id: RecordId) -> Result<Vec<HistoryEntry>> {
        let inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(Vec::new());
        };
        let rows = inner.history_rows(coll, id)?;
        let current = inner.record_state(coll, id)?;
        let stored: std::collections::HashSet<(CellKey, Version)> = rows
            .iter()
            .filter(|r| r.new.is_some())
            .map(|r| (r.key.clone(), r.version))
            .collect();
        let mut entries: Vec<HistoryEntry> = Vec::new();
        let mut created = std::collections::HashSet::new();
        let mut creation =
            |key: &CellKey, value: &CellValue, version: Version, seq: Seq, recorded_ms: u64| {
                if !stored.contains(&(key.clone(), version))
                    && created.insert((key.clone(), version))
                {
                    Some(entry(key, None, Some(value), version, seq, recorded_ms))
                } else {
                    None
                }
            };
        for r in &rows {
            if let Some((v, ver)) = &r.old {
                entries.extend(creation(&r.key, v, *ver, Seq(0), ver.hlc.wall_ms()));
            }
        }
        if let Some((state, _)) = &current {
            for c in state.cells() {
                entries.extend(creation(
                    &c.key,
                    &c.value,
                    c.version,
                    c.seq,
                    c.version.hlc.wall_ms(),
                ));
            }
        }
        for r in &rows {
            entries.push(entry(
                &r.key,
                r.old.as_ref().map(|(v, _)| v),
                r.new.as_ref(),
                r.version,
                r.seq,
                r.recorded_ms,
            ));
        }
        // Oldest first. Within one write: an insert before the fields it set, a delete after
        // the fields it removed.
        let rank = |e: &HistoryEntry| match e.op {
            "insert" => 0,
            "delete" => 2,
            _ => 1,
        };
        entries.sort_by(|a, b| a.version.cmp(&b.version).then(rank(a).cmp(&rank(b))));
        Ok(entries)
    }

    /// The record as it was at time `at` (by the writers' clocks), or `None` if it did not
    /// exist then. Fails with `HistoryCompacted` when `at` is before what retention kept.
    ///
    /// To the millisecond: versions carry their writer's wall clock in milliseconds, so a
    /// write made within the millisecond of `at` counts as made at or before it. The
    /// returned `rev` is the record's *current* revision (history keeps values by time, not
    /// revision numbers): do not use it as the revision of the past state.
    pub fn get_at(&self, collection: &str, id: RecordId, at: Timestamp) -> Result<Option<Record>> {
        let inner = self.lock()?;
        let horizon_ms = inner.meta_i64("history_horizon_ms")?;
        if horizon_ms > 0 && at.unix_ms() < horizon_ms {
            return Err(Error::HistoryCompacted {
                horizon: Timestamp::from_unix_ms(horizon_ms).to_rfc3339(),
            });
        }
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(None);
        };
        let at_ms = at.unix_ms().max(0) as u64;
        // Every (version, value) this node knows a cell to have had: from history (both sides
        // of each change) and from the current state. The value at `at` is the newest one
        // written no later than `at`.
        let mut best: BTreeMap<CellKey, (Version, Option<CellValue>)> = BTreeMap::new();
        let mut offer = |key: &CellKey, version: Version, value: Option<CellValue>| {
            if version.hlc.wall_ms() > at_ms {
                return;
            }
            match best.get(key) {
                Some((v, _)) if *v >= version => {}
                _ => {
                    best.insert(key.clone(), (version, value));
                }
            }
        };
        for r in inner.history_rows(coll, id)? {
            if let Some((v, ver)) = r.old {
                offer(&r.key, ver, Some(v));
            }
            offer(&r.key, r.version, r.new);
        }
        let current = inner.record_state(coll, id)?;
        let rev = current.as_ref().map_or(0, |c| c.1);
        if let Some((state, _)) = &current {
            for c in state.cells() {
                offer(&c.key, c.version, Some(c.value.clone()));
            }
        }
        // Rebuild through merge, oldest first, so resets apply as they did.
        let mut cells: Vec<Cell> = best
            .into_iter()
            .filter_map(|(key, (version, value))| {
                value.map(|value| Cell {
                    key,
                    value,
                    version,
                    prev: None,
                    seen: Seen::default(),
                    seq: Seq(0),
                })
            })
            .collect();
        cells.sort_by_key(|c| c.version);
        let mut state = RecordState::new();
        for c in cells {
            state.merge(c);
        }
        if !state.is_live() {
            return Ok(None);
        }
        Ok(Some(Record {
            collection: collection.to_owned(),
            id,
            rev,
            fields: state.into_fields(),
        }))
    }

    /// Apply the retention policy now. Returns how many entries were removed.
    pub fn compact_history(&self) -> Result<u64> {
        // `compact` runs its own write transaction and needs no cache.
        let mut inner = self.lock_bare()?;
        compact(&mut inner, &self.options.history, self.now_ms())
    }

    /// Number of history entries.
    pub fn history_len(&self) -> Result<u64> {
        let inner = self.lock()?;
        Ok(inner
            .conn
            .query_row("SELECT count(*) FROM history", [], |r| r.get(0))?)
    }
}

/// Remove entries beyond the retention policy and move the time-travel horizon past them.
///
/// It runs with the store locked (after every `check_every_rows` new entries, inside the
/// commit that crossed the mark, and after GC), so it finds its cut without reading the
/// entries it keeps: entries are appended in `hid` order as they are recorded, so the old
/// ones are a prefix, found by walking from the oldest to the first one recent enough; and
/// the `max_entries` newest are those within `max_entries` positions of the newest `hid`
/// (entries removed since, with their record by GC or eviction, leave gaps there: the
/// limit counts positions, a bound on the table that never reads it). Before, counting
/// from the newest walked every entry kept, each time: ~0.35 s per million entries
/// encrypted, seconds for a relay near its 10 million.
pub(crate) fn compact(inner: &mut Inner, policy: &HistoryRetention, now_ms: u64) -> Result<u64> {
    // IMMEDIATE: it reads, then deletes. A deferred transaction would fail to upgrade
    // (SQLITE_BUSY_SNAPSHOT) when another process committed in between.
    let tx = rusqlite::Transaction::new_unchecked(
        &inner.conn,
        rusqlite::TransactionBehavior::Immediate,
    )?;
    // Each a lookup at one end of the `hid` b-tree (SQLite's min/max optimisation).
    let newest: Option<i64> = tx.query_row("SELECT max(hid) FROM history", [], |r| r.get(0))?;
    let oldest: Option<i64> = tx.query_row("SELECT min(hid) FROM history", [], |r| r.get(0))?;
    let (Some(newest), Some(oldest)) = (newest, oldest) else {
        return Ok(0);
    };
    let mut cutoff_hid: i64 = 0;
    if let Some(age) = policy.max_age_ms {
        let before = now_ms.saturating_sub(age) as i64;
        // Walks the old entries only. (A clock that went back can leave an older entry after
        // a newer one: it goes once the newer one is old enough.)
        let first_kept: Option<i64> = tx
            .query_row(
                "SELECT hid FROM history WHERE recorded_ms >= ?1 ORDER BY hid LIMIT 1",
                [before],
                |r| r.get(0),
            )
            .optional()?;
        cutoff_hid = cutoff_hid.max(first_kept.map_or(newest, |h| h - 1));
    }
    if let Some(max) = policy.max_entries {
        cutoff_hid = cutoff_hid.max(newest.saturating_sub(max.min(i64::MAX as u64) as i64));
    }
    if cutoff_hid < oldest {
        return Ok(0);
    }
    // Time travel to before the newest removed change would miss it: move the horizon.
    let newest_removed: Option<i64> = tx.query_row(
        "SELECT max(hlc) FROM history WHERE hid <= ?1",
        [cutoff_hid],
        |r| r.get(0),
    )?;
    let removed = tx.execute("DELETE FROM history WHERE hid <= ?1", [cutoff_hid])? as u64;
    if let Some(h) = newest_removed {
        let horizon = (Hlc(h as u64).wall_ms() + 1) as i64;
        tx.execute(
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'history_horizon_ms'",
            [horizon],
        )?;
    }
    tx.commit()?;
    Ok(removed)
}

#[cfg(test)]
mod past_cache_tests {
    use super::*;

    fn past(states: usize) -> std::sync::Arc<PastStates> {
        std::sync::Arc::new(PastStates {
            exact_from: Seq(0),
            was_live: true,
            unknown: false,
            states: (0..states)
                .map(|i| (Seq(i as u64), Seq(i as u64 + 1), BTreeMap::new()))
                .collect(),
        })
    }

    /// The cache is bounded by records and by the states they hold; a past too long to keep
    /// is not kept; the oldest go first.
    #[test]
    fn the_past_cache_stays_within_its_bounds() {
        let mut c = PastCache::default();
        let key = |i: u64| (1, RecordId([0; 16]), Seq(i));
        for i in 0..(PAST_CACHE_RECORDS as u64 * 2) {
            c.insert(key(i), past(1));
        }
        assert_eq!(c.map.len(), PAST_CACHE_RECORDS);
        assert!(c.get(&key(0)).is_none());
        assert!(c.get(&key(PAST_CACHE_RECORDS as u64 * 2 - 1)).is_some());
        let mut c = PastCache::default();
        for i in 0..100 {
            c.insert(key(i), past(PAST_CACHE_STATES / 8));
        }
        assert!(c.states <= PAST_CACHE_STATES, "{}", c.states);
        assert_eq!(
            c.states,
            c.map.values().map(|p| p.states.len()).sum::<usize>()
        );
        c.insert(key(1000), past(PAST_CACHE_STATES));
        assert!(c.get(&key(1000)).is_none(), "too long to keep");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpenOptions, Patch};

    fn open(dir: &tempfile::TempDir, name: &str) -> Database {
        Database::open(
            dir.path().join(format!("{name}.db")),
            OpenOptions::default(),
        )
        .unwrap()
    }

    /// Apply everything `a`'s feed holds at `b`, in one unit (one SQLite transaction).
    fn apply_all(a: &Database, b: &Database) {
        let batch = a.changes_since(Seq(0), 10_000, None).unwrap();
        b.apply_changes(a.node_id(), &batch.changes, Some(batch.next))
            .unwrap();
    }

    /// One write of a test.
    type Step = Box<dyn Fn(&Database)>;

    /// The fields `record_state_now_and_at` gives for position `at`.
    fn fields_at(db: &Database, id: RecordId, at: Seq) -> Option<BTreeMap<String, Value>> {
        let (now, then) = db.record_state_now_and_at("c", id, at).unwrap()?;
        let state = then.unwrap_or(now);
        state.is_live().then(|| state.fields())
    }

    /// Every state the record had, after each commit, is rebuilt for that commit's seq:
    /// overwritten fields come back, fields added later are left out, counters and sets
    /// count back, a delete and a revival are undone.
    #[test]
    fn a_record_is_rebuilt_as_it_was_after_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir, "h");
        let other = db.insert("c", [("n", Value::Int(0))]).unwrap();
        let id = db
            .insert("c", [("a", Value::Int(1)), ("b", Value::from("x"))])
            .unwrap();
        let mut seen = vec![(db.last_seq().unwrap(), db.get("c", id).unwrap())];
        let writes: Vec<Step> = vec![
            Box::new(move |db| {
                db.update("c", id, Patch::new().set("a", 2))
                    .map(drop)
                    .unwrap()
            }),
            Box::new(move |db| {
                db.update("c", id, Patch::new().set("c", true))
                    .map(drop)
                    .unwrap()
            }),
            Box::new(move |db| db.increment("c", id, "votes", 3).map(drop).unwrap()),
            Box::new(move |db| {
                db.update("c", other, Patch::new().set("n", 1))
                    .map(drop)
                    .unwrap()
            }),
            Box::new(move |db| db.increment("c", id, "votes", 2).map(drop).unwrap()),
            Box::new(move |db| {
                let tags = vec![Value::from("t1"), Value::from("t2")];
                db.update("c", id, Patch::new().add("tags", tags)).unwrap()
            }),
            Box::new(move |db| {
                let tags = vec![Value::from("t1")];
                db.update("c", id, Patch::new().remove("tags", tags))
                    .unwrap()
            }),
            Box::new(move |db| {
                db.update("c", id, Patch::new().unset("b"))
                    .map(drop)
                    .unwrap()
            }),
            Box::new(move |db| db.delete("c", id).map(drop).unwrap()),
            Box::new(move |db| {
                db.upsert("c", id, [("a", Value::Int(9))])
                    .map(drop)
                    .unwrap()
            }),
            Box::new(move |db| {
                db.update("c", id, Patch::new().set("a", 10).set("b", "y"))
                    .map(drop)
                    .unwrap()
            }),
        ];
        let mut cells = vec![live_cells(&db, id)];
        for w in &writes {
            w(&db);
            seen.push((db.last_seq().unwrap(), db.get("c", id).unwrap()));
            cells.push(live_cells(&db, id));
        }
        for ((at, record), cells) in seen.iter().zip(&cells) {
            assert_eq!(
                fields_at(&db, id, *at),
                record.as_ref().map(|r| r.fields.clone()),
                "at {at:?}"
            );
            // Cell by cell: the versions, the seqs and the `prev` each cell's writer had
            // seen (format 9) are those the record held then.
            let (now, then) = db.record_state_now_and_at("c", id, *at).unwrap().unwrap();
            let rebuilt = then.unwrap_or(now);
            assert_eq!(&rebuilt.cells().to_vec(), cells, "cells at {at:?}");
        }
    }

    /// An entry written before format 9 does not keep the replaced cell's `prev`: the cell
    /// is rebuilt without it (the rest as before), and the file stays readable.
    #[test]
    fn an_entry_from_before_format_9_rebuilds_its_cell_without_prev() {
        let dir = tempfile::tempdir().unwrap();
        let (id, at, then) = {
            let db = open(&dir, "old");
            let id = db.insert("c", [("a", Value::Int(1))]).unwrap();
            db.update("c", id, Patch::new().set("a", 2)).unwrap();
            let at = db.last_seq().unwrap();
            let then = live_cells(&db, id);
            db.update("c", id, Patch::new().set("a", 3)).unwrap();
            (id, at, then)
        };
        let a = |cells: &[Cell]| {
            cells
                .iter()
                .find(|c| c.key == CellKey::Field("a".into()))
                .cloned()
                .unwrap()
        };
        assert!(a(&then).prev.is_some(), "a = 2 was written over a = 1");
        {
            let conn = rusqlite::Connection::open(dir.path().join("old.db")).unwrap();
            conn.execute_batch("UPDATE history SET old_prev_age = NULL, old_prev_node = NULL")
                .unwrap();
        }
        let db = open(&dir, "old");
        let (_, rebuilt) = db.record_state_now_and_at("c", id, at).unwrap().unwrap();
        let rebuilt: Vec<Cell> = rebuilt.unwrap().cells().to_vec();
        let expected = Cell {
            prev: None,
            seen: crate::crdt::Seen::default(),
            ..a(&then)
        };
        assert_eq!(a(&rebuilt), expected);
        assert_eq!(rebuilt.len(), then.len());
    }

    /// A receiver holding the record as it was before a change gets the record rebuilt as
    /// of that change (a later change of the same field undone, as a move-in or a
    /// restatement sends it): the rebuilt cell carries the `prev` its writer had seen, so
    /// the receiver, whose copy that writer had seen, lists no conflict.
    #[test]
    fn a_rebuilt_cell_over_the_copy_its_writer_saw_is_no_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let id = a.insert("c", [("f", Value::Int(1))]).unwrap();
        apply_all(&a, &b);
        a.update("c", id, Patch::new().set("f", 2)).unwrap();
        let at = a.last_seq().unwrap();
        a.update("c", id, Patch::new().set("f", 3)).unwrap();
        let (_, then) = a.record_state_now_and_at("c", id, at).unwrap().unwrap();
        let change = crate::store::feed::Change {
            seq: at,
            collection: "c".into(),
            id,
            cells: then.unwrap().cells().to_vec(),
        };
        b.apply_changes(a.node_id(), &[change], None).unwrap();
        assert_eq!(b.get("c", id).unwrap().unwrap().fields["f"], Value::Int(2));
        assert_eq!(b.conflicts(None).unwrap(), vec![]);
    }

    /// A cell whose writer overwrote another node's version keeps that version, node
    /// included, as its `prev` when rebuilt (stored as an age and a writer, format 9).
    #[test]
    fn a_rebuilt_prev_keeps_another_writers_version() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let id = a.insert("c", [("f", Value::Int(1))]).unwrap();
        apply_all(&a, &b);
        let from_a = live_cells(&b, id)
            .into_iter()
            .find(|c| c.key == CellKey::Field("f".into()))
            .unwrap()
            .version;
        b.update("c", id, Patch::new().set("f", 2)).unwrap();
        let at = b.last_seq().unwrap();
        let then = live_cells(&b, id);
        b.update("c", id, Patch::new().set("f", 3)).unwrap();
        let (_, rebuilt) = b.record_state_now_and_at("c", id, at).unwrap().unwrap();
        let rebuilt = rebuilt.unwrap().cells().to_vec();
        assert_eq!(rebuilt, then);
        let f = rebuilt
            .iter()
            .find(|c| c.key == CellKey::Field("f".into()))
            .unwrap();
        assert_eq!(f.prev, Some(from_a));
        assert_ne!(f.version.node, from_a.node);
    }

    /// A reset replaced later keeps its `seen` list when rebuilt (format 11, `old_seen`):
    /// B deletes a record holding A's insert and its own edit, then inserts it again; the
    /// record as it was between the two is the tombstone, list included.
    #[test]
    fn a_rebuilt_reset_keeps_its_seen_list() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let id = a.insert("c", [("f", Value::Int(1))]).unwrap();
        apply_all(&a, &b);
        b.update("c", id, Patch::new().set("g", 2)).unwrap();
        b.delete("c", id).unwrap();
        let at = b.last_seq().unwrap();
        let then = live_cells(&b, id);
        let seen = then[0].seen.versions().to_vec();
        assert_eq!(seen.len(), 2, "A's and B's newest: {then:?}");
        assert!(seen.iter().any(|v| v.node == a.node_id()));
        b.insert_with_id("c", id, [("f", Value::Int(3))]).unwrap();
        let (_, rebuilt) = b.record_state_now_and_at("c", id, at).unwrap().unwrap();
        assert_eq!(rebuilt.unwrap().cells(), then);
    }

    /// The record's cells as stored now.
    fn live_cells(db: &Database, id: RecordId) -> Vec<Cell> {
        let state = db.record_state("c", id).unwrap().unwrap();
        state.cells().to_vec()
    }

    /// Received in one unit, two transactions that each change the record are applied in
    /// one SQLite transaction, and their history entries share the record row's seq (the
    /// second's). The rebuild dates each entry by the cell it wrote: the state between the
    /// two is the first's, its reset of the record included (simulation seed 5754).
    #[test]
    fn transactions_applied_together_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let sync = || apply_all(&a, &b);
        let id = a
            .insert("c", [("a", Value::Int(1)), ("c", Value::Int(4))])
            .unwrap();
        sync();
        let before = b.last_seq().unwrap();
        // Deleted and written again (a reset: `a` and `c` go), then `b` unset: b gets the
        // second and third commits in one unit (the delete's own cell was overwritten).
        a.delete("c", id).unwrap();
        a.upsert("c", id, [("n", Value::Int(0)), ("b", Value::Int(4))])
            .unwrap();
        a.update("c", id, Patch::new().unset("b")).unwrap();
        sync();
        let at_b: Vec<Seq> = b
            .record_state("c", id)
            .unwrap()
            .unwrap()
            .cells()
            .iter()
            .map(|c| c.seq)
            .collect();
        let reset = Seq(before.0 + 1);
        assert!(
            at_b.contains(&reset) && at_b.contains(&Seq(reset.0 + 1)),
            "two local commits at b: {at_b:?}"
        );
        assert_eq!(
            fields_at(&b, id, reset),
            Some(BTreeMap::from([("n".to_string(), Value::Int(0))])),
            "as the reset left it (b's value 4 never reached b)"
        );
        assert_eq!(
            fields_at(&b, id, before),
            Some(BTreeMap::from([
                ("a".to_string(), Value::Int(1)),
                ("c".to_string(), Value::Int(4))
            ]))
        );
    }

    /// The same for the past a delete is judged on: a record that one transaction of a
    /// received unit moved into a view and the next moved out again was in the view at
    /// the position between them, so a peer there may hold it and must get its delete.
    /// Dated by their row, both changes looked like the later one's, and the delete was
    /// held back from that peer.
    #[test]
    fn past_states_of_transactions_applied_together_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let sync = || apply_all(&a, &b);
        let id = a.insert("c", [("a", Value::Int(3))]).unwrap();
        sync();
        let before = b.last_seq().unwrap();
        a.update("c", id, Patch::new().set("a", 0)).unwrap();
        a.update("c", id, Patch::new().set("hidden", true)).unwrap();
        sync();
        let between = Seq(before.0 + 1);
        b.delete("c", id).unwrap();
        let mut visible = |f: &BTreeMap<String, Value>| {
            f.get("a") != Some(&Value::Int(3)) && f.get("hidden") != Some(&Value::Bool(true))
        };
        assert_eq!(
            b.past_visibility("c", id, between, &mut visible).unwrap(),
            PastVisibility::Seen
        );
        assert_eq!(
            b.past_visibility("c", id, Seq(between.0 + 1), &mut visible)
                .unwrap(),
            PastVisibility::NeverSeen
        );
    }

    /// GC drops an unset field's removal cell once every peer has it, and a peer may send
    /// the very same cell back later (a restatement), stored then under a new seq. The
    /// unset's history entry is dated by its own commit, not by that later copy: the record
    /// between the two has no `a`, never the value the unset removed long before (simulation
    /// seed 7037058: judged by that value, the record looked outside a partial replica's
    /// filter, and a counter change never reached it).
    #[test]
    fn a_removal_cell_collected_and_received_again_dates_its_entry_by_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir, "a"), open(&dir, "b"));
        let id = a.insert("c", [("a", Value::Int(3))]).unwrap();
        a.update("c", id, Patch::new().unset("a")).unwrap();
        let unset = a.last_seq().unwrap();
        // A later write, so the removal is not the record's newest cell (GC keeps that one).
        a.update("c", id, Patch::new().set("c", 0)).unwrap();
        apply_all(&a, &b);
        let report = a.gc(&crate::GcOptions::default()).unwrap();
        assert_eq!(report.cells_pruned, 1, "{report:?}");
        let collected = a.last_seq().unwrap();
        let state = a.record_state("c", id).unwrap().unwrap();
        assert!(state.cells().iter().all(|c| c.key.field() != Some("a")));
        // `b` sends its copy of the removal back: stored here at a new seq.
        apply_all(&b, &a);
        let again = a.record_state("c", id).unwrap().unwrap();
        let cell = again
            .cells()
            .iter()
            .find(|c| c.key.field() == Some("a"))
            .expect("the removal is back");
        assert!(cell.seq > collected, "{cell:?}");
        let no_a = BTreeMap::from([("c".to_string(), Value::Int(0))]);
        assert_eq!(fields_at(&a, id, collected), Some(no_a.clone()));
        assert_eq!(fields_at(&a, id, Seq(unset.0 + 1)), Some(no_a));
        assert_eq!(
            fields_at(&a, id, Seq(unset.0 - 1)),
            Some(BTreeMap::from([("a".to_string(), Value::Int(3))]))
        );
        // And the past a filter on `a` is judged on: in view from the unset on.
        let mut visible = |f: &BTreeMap<String, Value>| f.get("a") != Some(&Value::Int(3));
        assert_eq!(
            a.past_visibility("c", id, collected, &mut visible).unwrap(),
            PastVisibility::Seen
        );
    }

    /// Once retention has removed an entry the rebuild needs, it says it cannot tell.
    #[test]
    fn history_cut_by_retention_cannot_tell() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            history: HistoryRetention {
                max_age_ms: None,
                max_entries: Some(2),
            },
            ..OpenOptions::default()
        };
        let db = Database::open(dir.path().join("h.db"), opts).unwrap();
        let id = db.insert("c", [("a", Value::Int(0))]).unwrap();
        let first = db.last_seq().unwrap();
        for i in 1..=5 {
            db.update("c", id, Patch::new().set("a", i)).unwrap();
        }
        db.compact_history().unwrap();
        let (_, then) = db.record_state_now_and_at("c", id, first).unwrap().unwrap();
        assert!(then.is_none(), "{then:?}");
        // A position the kept entries reach is still rebuilt.
        let late = Seq(db.last_seq().unwrap().0 - 1);
        let (_, then) = db.record_state_now_and_at("c", id, late).unwrap().unwrap();
        assert_eq!(then.unwrap().fields()["a"], Value::Int(4));
    }
}
