//! Local writes. Every write goes through [`Tx`]: the cells it produces are merged into the
//! record with the same [`RecordState::merge`] that applies a peer's changes, so local and
//! remote writes follow one set of rules.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, OptionalExtension};

use super::body;
use super::read::Record;
use super::{Database, Inner};
use crate::codec::value;
use crate::crdt::encoding::{key_bytes, value_bytes};
use crate::crdt::{Cell, CellKey, CellValue, MergeOutcome, RecordState};
use crate::error::{Result, WriteError};
use crate::limits::{
    FIELD_NAME_BYTES_MAX, RECORD_BYTES_MAX, RECORD_FIELDS_MAX, SET_ELEMENTS_MAX,
    TRANSACTION_CELLS_MAX, TRANSACTION_WRITES_MAX, VALUE_BYTES_MAX, VALUE_DEPTH_MAX,
};
use crate::types::{Seq, Version};
use crate::watch::{Event, EventKind};
use crate::{RecordId, Value};

/// One change to one field in an update.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldOp {
    /// Replace the field's value.
    Set(Value),
    /// Remove the field.
    Unset,
    /// Add to a counter (negative to decrement).
    Increment(i64),
    /// Add elements to a set.
    Add(Vec<Value>),
    /// Remove elements from a set.
    Remove(Vec<Value>),
}

/// The changes of an update: only the named fields change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch {
    /// The changes, applied in order.
    pub ops: Vec<(String, FieldOp)>,
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Patch {
        Patch::default()
    }
    /// Set a field.
    pub fn set(mut self, field: impl Into<String>, v: impl Into<Value>) -> Patch {
        self.ops.push((field.into(), FieldOp::Set(v.into())));
        self
    }
    /// Remove a field.
    pub fn unset(mut self, field: impl Into<String>) -> Patch {
        self.ops.push((field.into(), FieldOp::Unset));
        self
    }
    /// Add to a counter.
    pub fn increment(mut self, field: impl Into<String>, by: i64) -> Patch {
        self.ops.push((field.into(), FieldOp::Increment(by)));
        self
    }
    /// Add set elements.
    pub fn add(mut self, field: impl Into<String>, elems: Vec<Value>) -> Patch {
        self.ops.push((field.into(), FieldOp::Add(elems)));
        self
    }
    /// Remove set elements.
    pub fn remove(mut self, field: impl Into<String>, elems: Vec<Value>) -> Patch {
        self.ops.push((field.into(), FieldOp::Remove(elems)));
        self
    }
}

/// A record touched by the transaction.
pub(crate) struct Pending {
    pub coll: i64,
    pub collection: String,
    pub id: RecordId,
    /// State and revision as stored before the transaction (`None`: no row).
    pub before: Option<(RecordState, u64)>,
    pub state: RecordState,
    pub changed: bool,
    /// (key, old cell, new cell or None when dropped by a reset, reset version), for the
    /// history table. Creations (no old cell) are not kept: see `write_record`.
    pub history: Vec<(CellKey, Option<Cell>, Option<Cell>, Version)>,
    /// Cells this transaction changed in the record (for the transaction size limit).
    pub cells_changed: usize,
    /// (winner, loser)
    pub conflicts: Vec<(Cell, Cell)>,
    /// Peer the change came from (1 + its node index; 0 = written here).
    pub src: u64,
    /// (s, t): a cell of commit `s` was overwritten by commit `t`, so a peer must receive
    /// `s` together with `t` (see `feed_links` in schema.rs).
    pub links: Vec<(Seq, Seq)>,
}

/// A write transaction. Everything it does becomes visible at once when
/// [`Database::transaction`] returns `Ok`, or not at all.
pub struct Tx<'a> {
    pub(crate) db: &'a Database,
    pub(crate) inner: &'a mut Inner,
    pub(crate) pending: HashMap<(i64, RecordId), usize>,
    pub(crate) records: Vec<Pending>,
    /// The last committed seq when the transaction began.
    pub(crate) base_seq: Seq,
    /// The seq the transaction's next group of cells gets.
    pub(crate) seq: Seq,
    pub(crate) seq_used: bool,
    pub(crate) writes: usize,
    pub(crate) now_ms: u64,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("seq", &self.seq)
            .field("records", &self.records.len())
            .finish()
    }
}

impl Database {
    /// Run `f` as one atomic transaction: all its writes commit together, or none does (on
    /// `Err`, or a panic).
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut inner = self.lock()?;
        inner.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            inner.refresh()?;
            let mut tx = Tx::begin(self, &mut inner)?;
            let v = f(&mut tx)?;
            let committed = tx.commit()?;
            Ok((v, committed))
        })();
        match result {
            Ok((v, (events, changed))) => {
                drop(inner);
                self.watchers.publish(&events);
                if changed {
                    self.notify_commit();
                }
                Ok(v)
            }
            Err(e) => {
                let _ = inner.conn.execute_batch("ROLLBACK");
                inner.rollback_caches();
                Err(e)
            }
        }
    }

    /// Insert a new record with a fresh UUIDv7 id.
    pub fn insert<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<RecordId> {
        self.transaction(|tx| tx.insert(collection, fields))
    }

    /// Insert a new record with the caller's id; fails if a live record has it.
    pub fn insert_with_id<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.transaction(|tx| tx.insert_with_id(collection, id, fields))
    }

    /// Insert or, if the record exists, set the given fields (others stay).
    pub fn upsert<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.transaction(|tx| tx.upsert(collection, id, fields))
    }

    /// Change only the fields named in `patch`. Fails with `NotFound` if the record does not
    /// exist.
    pub fn update(&self, collection: &str, id: RecordId, patch: Patch) -> Result<()> {
        self.transaction(|tx| tx.update(collection, id, patch))
    }

    /// Delete a record. Returns false if there was none.
    pub fn delete(&self, collection: &str, id: RecordId) -> Result<bool> {
        self.transaction(|tx| tx.delete(collection, id))
    }

    /// Add `by` to a counter field; returns the new total.
    pub fn increment(&self, collection: &str, id: RecordId, field: &str, by: i64) -> Result<i64> {
        self.transaction(|tx| tx.increment(collection, id, field, by))
    }

    /// Add elements to a set field.
    pub fn set_add(
        &self,
        collection: &str,
        id: RecordId,
        field: &str,
        elems: Vec<Value>,
    ) -> Result<()> {
        self.update(collection, id, Patch::new().add(field, elems))
    }

    /// Remove elements from a set field.
    pub fn set_remove(
        &self,
        collection: &str,
        id: RecordId,
        field: &str,
        elems: Vec<Value>,
    ) -> Result<()> {
        self.update(collection, id, Patch::new().remove(field, elems))
    }
}

impl<'a> Tx<'a> {
    pub(crate) fn begin(db: &'a Database, inner: &'a mut Inner) -> Result<Tx<'a>> {
        let base_seq = inner.clock_row()?.0;
        let now_ms = db.now_ms();
        Ok(Tx {
            db,
            inner,
            pending: HashMap::new(),
            records: Vec::new(),
            base_seq,
            seq: Seq(base_seq.0 + 1),
            seq_used: false,
            writes: 0,
            now_ms,
        })
    }

    /// Insert a new record with a fresh UUIDv7 id.
    pub fn insert<K: Into<String>, V: Into<Value>>(
        &mut self,
        collection: &str,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<RecordId> {
        let fields = collect_fields(fields)?;
        let id = RecordId::new_v7();
        // A fresh UUIDv7 cannot name an existing record: skip the lookup.
        let i = self.load_new(collection, id)?;
        self.write_fields(i, fields, true)?;
        Ok(id)
    }

    /// Insert a new record with the caller's id; fails if a live record has it.
    pub fn insert_with_id<K: Into<String>, V: Into<Value>>(
        &mut self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let fields = collect_fields(fields)?;
        let i = self.load(collection, id, true)?.expect("created");
        if self.records[i].state.is_live() {
            return Err(WriteError::AlreadyExists {
                collection: collection.to_owned(),
                id: id.to_string(),
            }
            .into());
        }
        self.write_fields(i, fields, true)
    }

    /// Insert or, if the record exists, set the given fields (others stay).
    pub fn upsert<K: Into<String>, V: Into<Value>>(
        &mut self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let fields = collect_fields(fields)?;
        let i = self.load(collection, id, true)?.expect("created");
        let live = self.records[i].state.is_live();
        self.write_fields(i, fields, !live)
    }

    /// Change only the fields named in `patch`.
    pub fn update(&mut self, collection: &str, id: RecordId, patch: Patch) -> Result<()> {
        let i = self.live(collection, id)?;
        for (field, op) in patch.ops {
            validate_field_name(&field)?;
            self.apply_op(i, &field, op)?;
        }
        self.check_field_count(i)
    }

    /// Delete a record. Returns false if there was none.
    pub fn delete(&mut self, collection: &str, id: RecordId) -> Result<bool> {
        let Some(i) = self.load(collection, id, false)? else {
            return Ok(false);
        };
        if !self.records[i].state.is_live() {
            return Ok(false);
        }
        let prev = self.records[i].state.newest_version();
        let version = self.next_version()?;
        let cell = self.cell(CellKey::Record, CellValue::Absent, version, prev);
        self.merge_local(i, cell);
        Ok(true)
    }

    /// Add `by` to a counter field; returns the new total.
    pub fn increment(
        &mut self,
        collection: &str,
        id: RecordId,
        field: &str,
        by: i64,
    ) -> Result<i64> {
        let i = self.live(collection, id)?;
        validate_field_name(field)?;
        self.apply_op(i, field, FieldOp::Increment(by))?;
        self.check_field_count(i)?;
        match self.records[i].state.field(field) {
            Some(Value::Int(n)) => Ok(n),
            _ => unreachable!("a counter reads as an int"),
        }
    }

    /// Write this node's copy of a record again with new versions: every field, as an insert
    /// (which resets older cells everywhere), or a new tombstone when there is no live copy.
    pub(crate) fn restate(&mut self, collection: &str, id: RecordId) -> Result<()> {
        let i = self.load(collection, id, true)?.expect("created");
        if self.records[i].state.is_live() {
            let fields: Vec<(String, Value)> = self.records[i].state.fields().into_iter().collect();
            self.write_fields(i, fields, true)
        } else {
            let prev = self.records[i].state.newest_version();
            let version = self.next_version()?;
            let cell = self.cell(CellKey::Record, CellValue::Absent, version, prev);
            self.merge_local(i, cell);
            Ok(())
        }
    }

    /// Read a record, seeing this transaction's own writes.
    pub fn get(&mut self, collection: &str, id: RecordId) -> Result<Option<Record>> {
        let Some(i) = self.load(collection, id, false)? else {
            return Ok(None);
        };
        let p = &self.records[i];
        if !p.state.is_live() {
            return Ok(None);
        }
        let rev = p.before.as_ref().map_or(0, |b| b.1) + u64::from(p.changed);
        Ok(Some(Record {
            collection: p.collection.clone(),
            id,
            rev,
            fields: p.state.fields(),
        }))
    }

    fn live(&mut self, collection: &str, id: RecordId) -> Result<usize> {
        match self.load(collection, id, false)? {
            Some(i) if self.records[i].state.is_live() => Ok(i),
            _ => Err(WriteError::NotFound {
                collection: collection.to_owned(),
                id: id.to_string(),
            }
            .into()),
        }
    }

    /// Add a record known not to exist yet (a freshly generated id).
    fn load_new(&mut self, collection: &str, id: RecordId) -> Result<usize> {
        let coll = self.inner.collection_id_or_create(collection)?;
        if let Some(i) = self.pending.get(&(coll, id)) {
            return Ok(*i);
        }
        Ok(self.track(coll, collection, id, None))
    }

    /// Find or load a record into the transaction. With `create`, a missing record (and
    /// collection) is created empty; without it, `None` when absent.
    pub(crate) fn load(
        &mut self,
        collection: &str,
        id: RecordId,
        create: bool,
    ) -> Result<Option<usize>> {
        let coll = if create {
            self.inner.collection_id_or_create(collection)?
        } else {
            match self.inner.collection_id(collection) {
                Some(c) => c,
                None => return Ok(None),
            }
        };
        if let Some(i) = self.pending.get(&(coll, id)) {
            return Ok(Some(*i));
        }
        let row: Option<(u64, u64, Vec<u8>)> = self
            .inner
            .conn
            .prepare_cached("SELECT rev, seq, body FROM records WHERE coll = ?1 AND id = ?2")?
            .query_row(params![coll, &id.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let before = match row {
            Some((rev, seq, bytes)) => Some((
                body::decode(&bytes, Seq(seq), &self.inner.nodes, &self.inner.fields)?,
                rev,
            )),
            None if !create => return Ok(None),
            None => None,
        };
        Ok(Some(self.track(coll, collection, id, before)))
    }

    /// Start tracking a record in this transaction, as stored before it (`None`: no row).
    fn track(
        &mut self,
        coll: i64,
        collection: &str,
        id: RecordId,
        before: Option<(RecordState, u64)>,
    ) -> usize {
        let state = before.as_ref().map(|b| b.0.clone()).unwrap_or_default();
        self.records.push(Pending {
            coll,
            collection: collection.to_owned(),
            id,
            before,
            state,
            changed: false,
            history: Vec::new(),
            conflicts: Vec::new(),
            src: 0,
            links: Vec::new(),
            cells_changed: 0,
        });
        let i = self.records.len() - 1;
        self.pending.insert((coll, id), i);
        i
    }

    fn next_version(&mut self) -> Result<Version> {
        self.writes += 1;
        if self.writes > TRANSACTION_WRITES_MAX {
            return Err(WriteError::Limit {
                what: "writes in one transaction",
                got: self.writes,
                max: TRANSACTION_WRITES_MAX,
            }
            .into());
        }
        self.seq_used = true;
        Ok(Version {
            hlc: self.inner.clock.tick(self.now_ms),
            node: self.db.node,
        })
    }

    fn cell(
        &self,
        key: CellKey,
        value: CellValue,
        version: Version,
        prev: Option<Version>,
    ) -> Cell {
        Cell {
            key,
            value,
            version,
            prev,
            seq: self.seq,
        }
    }

    fn write_fields(&mut self, i: usize, fields: Vec<(String, Value)>, insert: bool) -> Result<()> {
        let version = self.next_version()?;
        if insert {
            let prev = self.records[i].state.newest_version();
            let cell = self.cell(CellKey::Record, CellValue::Present, version, prev);
            self.merge_local(i, cell);
        }
        for (f, v) in fields {
            let prev = self.records[i].state.newest_field_version(&f);
            let cell = self.cell(CellKey::Field(f), CellValue::Value(v), version, prev);
            self.merge_local(i, cell);
        }
        self.check_field_count(i)
    }

    fn apply_op(&mut self, i: usize, field: &str, op: FieldOp) -> Result<()> {
        let current = self.records[i].state.field(field);
        let mismatch =
            |op: &'static str, expected: &'static str, found: &Value| WriteError::TypeMismatch {
                field: field.to_owned(),
                op,
                expected,
                found: found.type_name(),
            };
        let (elems, present) = match op {
            FieldOp::Set(v) => {
                validate_value(field, &v)?;
                let version = self.next_version()?;
                let prev = self.records[i].state.newest_field_version(field);
                let cell = self.cell(
                    CellKey::Field(field.to_owned()),
                    CellValue::Value(v),
                    version,
                    prev,
                );
                self.merge_local(i, cell);
                return Ok(());
            }
            FieldOp::Unset => {
                if current.is_none() {
                    return Ok(());
                }
                let version = self.next_version()?;
                let prev = self.records[i].state.newest_field_version(field);
                let cell = self.cell(
                    CellKey::Field(field.to_owned()),
                    CellValue::Absent,
                    version,
                    prev,
                );
                self.merge_local(i, cell);
                return Ok(());
            }
            FieldOp::Increment(by) => {
                let total = match &current {
                    None => 0,
                    Some(Value::Int(n)) => *n,
                    Some(other) => {
                        return Err(mismatch("increment", "an int counter", other).into())
                    }
                };
                let overflow = || WriteError::Overflow {
                    field: field.to_owned(),
                };
                total.checked_add(by).ok_or_else(overflow)?;
                let key = CellKey::Counter(field.to_owned(), self.db.node);
                let (mine, prev) = match self.records[i].state.cell(&key) {
                    Some(Cell {
                        value: CellValue::Count(c),
                        version,
                        ..
                    }) => (*c, Some(*version)),
                    _ => (0, None),
                };
                let mine = mine.checked_add(by).ok_or_else(overflow)?;
                let version = self.next_version()?;
                let cell = self.cell(key, CellValue::Count(mine), version, prev);
                self.merge_local(i, cell);
                return Ok(());
            }
            FieldOp::Add(elems) => (elems, true),
            FieldOp::Remove(elems) => (elems, false),
        };
        match &current {
            None | Some(Value::List(_)) => {}
            Some(other) => return Err(mismatch("set add/remove", "a set (list)", other).into()),
        }
        if elems.is_empty() {
            return Ok(());
        }
        let version = self.next_version()?;
        for e in elems {
            validate_value(field, &e)?;
            let key = CellKey::Element(field.to_owned(), value::to_bytes(&e));
            let prev = self.records[i].state.cell(&key).map(|c| c.version);
            let value = if present {
                CellValue::Present
            } else {
                CellValue::Absent
            };
            let cell = self.cell(key, value, version, prev);
            self.merge_local(i, cell);
        }
        if let Some(Value::List(l)) = self.records[i].state.field(field) {
            if l.len() > SET_ELEMENTS_MAX {
                return Err(WriteError::Limit {
                    what: "set size",
                    got: l.len(),
                    max: SET_ELEMENTS_MAX,
                }
                .into());
            }
        }
        Ok(())
    }

    fn check_field_count(&self, i: usize) -> Result<()> {
        let n = self.records[i].state.field_count();
        if n > RECORD_FIELDS_MAX {
            return Err(WriteError::Limit {
                what: "fields in a record",
                got: n,
                max: RECORD_FIELDS_MAX,
            }
            .into());
        }
        Ok(())
    }

    /// Merge a cell written here.
    fn merge_local(&mut self, i: usize, cell: Cell) {
        self.merge(i, cell);
    }

    /// Merge one cell into a pending record, recording history and conflicts.
    pub(crate) fn merge(&mut self, i: usize, cell: Cell) -> bool {
        let p = &mut self.records[i];
        // The cell moves into the record; copies are made only for history and conflicts.
        let (outcome, at) = p.state.merge_at(cell);
        match outcome {
            MergeOutcome::Ignored => false,
            MergeOutcome::Applied { overwritten } => {
                p.changed = true;
                p.cells_changed += 1;
                if overwritten.is_empty() {
                    // A creation needs no history row (see `write_record`).
                    return true;
                }
                let cell = &p.state.cells()[at.expect("an applied cell is stored")];
                let mut replaced = None;
                for o in overwritten {
                    if o.concurrent {
                        p.conflicts.push((cell.clone(), o.cell.clone()));
                    }
                    if o.cell.seq < cell.seq {
                        p.links.push((o.cell.seq, cell.seq));
                    }
                    if o.cell.key == cell.key {
                        replaced = Some(o.cell);
                    } else {
                        p.history
                            .push((o.cell.key.clone(), Some(o.cell), None, cell.version));
                    }
                }
                if replaced.is_some() {
                    p.history
                        .push((cell.key.clone(), replaced, Some(cell.clone()), cell.version));
                }
                true
            }
        }
    }

    /// Write everything out (inside the open SQL transaction) and return the watch events to
    /// publish once the transaction has committed.
    /// Returns the watch events (only built when someone watches) and whether anything
    /// changed.
    pub(crate) fn commit(self) -> Result<(Vec<Event>, bool)> {
        let watched = self.db.watchers.is_watched();
        let Tx {
            db,
            inner,
            records,
            base_seq,
            seq,
            seq_used,
            ..
        } = self;
        if !seq_used && records.iter().all(|p| !p.changed) {
            inner.conn.execute_batch("COMMIT")?;
            return Ok((Vec::new(), false));
        }
        let last_seq = if seq_used { seq } else { Seq(seq.0 - 1) }.max(base_seq);
        let cells: usize = records.iter().map(|p| p.cells_changed).sum();
        if cells > TRANSACTION_CELLS_MAX {
            return Err(WriteError::Limit {
                what: "cells changed in one transaction",
                got: cells,
                max: TRANSACTION_CELLS_MAX,
            }
            .into());
        }
        let mut events = Vec::new();
        for p in records.iter().filter(|p| p.changed) {
            write_record(inner, p, db.now_ms())?;
            if !watched {
                continue;
            }
            let before_live = p.before.as_ref().is_some_and(|b| b.0.is_live());
            let after_live = p.state.is_live();
            let kind = match (before_live, after_live) {
                (false, true) => EventKind::Inserted,
                (true, true) => EventKind::Updated,
                (true, false) => EventKind::Deleted,
                (false, false) => continue,
            };
            let rev = p.before.as_ref().map_or(0, |b| b.1) + 1;
            let fields = if after_live {
                p.state.fields()
            } else {
                p.before.as_ref().map(|b| b.0.fields()).unwrap_or_default()
            };
            events.push(Event {
                kind,
                seq: p.state.max_seq(),
                record: Record {
                    collection: p.collection.clone(),
                    id: p.id,
                    rev,
                    fields,
                },
            });
        }
        // A link outlives the cells of its commit: a commit whose cells were all overwritten
        // still spread its effects (e.g. a counter's running total) into its overwriters,
        // which must then travel together. Old links are pruned by GC once every peer is past
        // them. One row per `s`, holding the largest `t`: many records of one transaction
        // usually share their links, so each is written once.
        let mut links: BTreeMap<Seq, Seq> = BTreeMap::new();
        for (s, t) in records.iter().filter(|p| p.changed).flat_map(|p| &p.links) {
            let e = links.entry(*s).or_insert(*t);
            *e = (*e).max(*t);
        }
        for (s, t) in links {
            inner
                .conn
                .prepare_cached(
                    "INSERT INTO feed_links (s, t) VALUES (?1, ?2)
                     ON CONFLICT (s) DO UPDATE SET t = max(t, excluded.t)",
                )?
                .execute(params![s.0, t.0])?;
        }
        inner.set_clock_row(last_seq, inner.clock.last())?;
        inner.nodes.flush(&inner.conn)?;
        inner.fields.flush(&inner.conn)?;
        inner.conn.execute_batch("COMMIT")?;
        inner.data_version = inner
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let added: u64 = records.iter().map(|p| p.history.len() as u64).sum();
        inner.history_rows_since_compaction += added;
        if inner.history_rows_since_compaction > db.options.history.check_every_rows() {
            inner.history_rows_since_compaction = 0;
            // Retention runs in its own transaction; failure to compact is not a failure of
            // the write that just committed.
            let _ = super::history::compact(inner, &db.options.history, db.now_ms());
        }
        Ok((events, true))
    }
}

/// Store one changed record: its row, its feed entries, index entries, history, conflicts.
fn write_record(inner: &mut Inner, p: &Pending, now_ms: u64) -> Result<()> {
    let row_seq = p.state.max_seq();
    let bytes = body::encode(&p.state, row_seq, &mut inner.nodes, &mut inner.fields);
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(WriteError::Limit {
            what: "encoded record size",
            got: bytes.len(),
            max: RECORD_BYTES_MAX,
        }
        .into());
    }
    let rev = p.before.as_ref().map_or(0, |b| b.1) + 1;
    let id = &p.id.0[..];
    // A stored record is updated in place (REPLACE would delete and insert the row).
    let updated = p.before.is_some()
        && inner
            .conn
            .prepare_cached(
                "UPDATE records SET rev = ?3, seq = ?4, live = ?5, body = ?6
                 WHERE coll = ?1 AND id = ?2",
            )?
            .execute(params![
                p.coll,
                id,
                rev,
                row_seq.0,
                p.state.is_live(),
                bytes
            ])?
            == 1;
    if !updated {
        inner
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO records (coll, id, rev, seq, live, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![p.coll, id, rev, row_seq.0, p.state.is_live(), bytes])?;
    }

    // The feed holds one row per (seq, record) that still has cells at that seq.
    let seqs = |s: &RecordState| -> Vec<Seq> {
        let mut v: Vec<Seq> = s.cells().iter().map(|c| c.seq).collect();
        v.sort();
        v.dedup();
        v
    };
    let old = p.before.as_ref().map(|b| seqs(&b.0)).unwrap_or_default();
    let new = seqs(&p.state);
    for s in new.iter().filter(|s| !old.contains(s)) {
        inner
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO feed (seq, coll, id, src) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![s.0, p.coll, id, p.src])?;
    }

    for s in old.iter().filter(|s| !new.contains(s)) {
        inner
            .conn
            .prepare_cached("DELETE FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3")?
            .execute(params![s.0, p.coll, id])?;
    }
    if let Some(fields) = inner.indexes.get(&p.coll).cloned() {
        let before = p
            .before
            .as_ref()
            .filter(|b| b.0.is_live())
            .map(|b| b.0.fields())
            .unwrap_or_default();
        let after = if p.state.is_live() {
            p.state.fields()
        } else {
            BTreeMap::new()
        };
        super::index::update_entries(&inner.conn, p.coll, p.id, &fields, &before, &after)?;
    }

    for (key, old, new, version) in &p.history {
        // (Creations, with no old cell, never get here: their value and version are in the
        // record body until overwritten, and then in that change's `old`;
        // `Database::history` puts them back into the listing.)
        let node = inner.nodes.index(&version.node);
        let old_node = old.as_ref().map(|c| inner.nodes.index(&c.version.node));
        inner
            .conn
            .prepare_cached(
                "INSERT INTO history (coll, id, cell, old, old_hlc, old_node, new, hlc, node, seq, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                p.coll,
                id,
                key_bytes(key),
                old.as_ref().map(|c| value_bytes(&c.value)),
                old.as_ref().map(|c| c.version.hlc.0 as i64),
                old_node.map(|n| n as i64),
                new.as_ref().map(|c| value_bytes(&c.value)),
                version.hlc.0 as i64,
                node as i64,
                row_seq.0 as i64,
                now_ms as i64,
            ])?;
    }
    let policy = inner.policies.get(&p.coll).cloned().unwrap_or_default();
    for (winner, loser) in &p.conflicts {
        let manual = loser
            .key
            .field()
            .is_some_and(|f| policy.manual_fields.contains(f));
        let resolved = policy.auto_resolve && !manual;
        let wn = inner.nodes.index(&winner.version.node);
        let ln = inner.nodes.index(&loser.version.node);
        inner
            .conn
            .prepare_cached(
                "INSERT INTO conflicts (coll, id, cell, winner, winner_hlc, winner_node, loser, loser_hlc, loser_node, seq, resolved)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                p.coll,
                id,
                key_bytes(&loser.key),
                value_bytes(&winner.value),
                winner.version.hlc.0 as i64,
                wn as i64,
                value_bytes(&loser.value),
                loser.version.hlc.0 as i64,
                ln as i64,
                row_seq.0 as i64,
                resolved,
            ])?;
    }
    Ok(())
}

fn collect_fields<K: Into<String>, V: Into<Value>>(
    fields: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<(String, Value)>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in fields {
        let (k, v) = (k.into(), v.into());
        validate_field_name(&k)?;
        validate_value(&k, &v)?;
        out.retain(|(f, _)| *f != k);
        out.push((k, v));
        if out.len() > RECORD_FIELDS_MAX {
            return Err(WriteError::Limit {
                what: "fields in a record",
                got: out.len(),
                max: RECORD_FIELDS_MAX,
            }
            .into());
        }
    }
    Ok(out)
}

/// Field names: 1 to 255 bytes, no control characters, not `_id`, not starting with `$`.
pub fn validate_field_name(name: &str) -> Result<(), WriteError> {
    let bad = |reason: &str| WriteError::InvalidName {
        what: "field",
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > FIELD_NAME_BYTES_MAX {
        return Err(bad(&format!("longer than {FIELD_NAME_BYTES_MAX} bytes")));
    }
    if name == "_id" {
        return Err(bad("`_id` is the record id; it cannot be a field"));
    }
    if name.starts_with('$') {
        return Err(bad("names starting with `$` are reserved for operators"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

/// Values: nested at most 32 deep, at most 1 MiB encoded.
pub fn validate_value(field: &str, v: &Value) -> Result<(), WriteError> {
    let depth = v.depth();
    if depth > VALUE_DEPTH_MAX {
        return Err(WriteError::Limit {
            what: "value nesting depth",
            got: depth,
            max: VALUE_DEPTH_MAX,
        });
    }
    let len = value::encoded_len(v);
    if len > VALUE_BYTES_MAX {
        let _ = field;
        return Err(WriteError::Limit {
            what: "encoded value size",
            got: len,
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}
