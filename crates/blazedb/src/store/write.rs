//! Local writes. Every write goes through [`Tx`]: the cells it produces are merged into the
//! record with the same [`RecordState::merge`] that applies a peer's changes, so local and
//! remote writes follow one set of rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use rusqlite::{params, Connection, OptionalExtension};

use super::body;
use super::nodes::{FieldTable, NodeTable};
use super::read::Record;
use super::record_cache::{CachedRow, RecordCache};
use super::{CollectionPolicy, Database, Inner};
use crate::codec::value;
use crate::crdt::encoding::{encode_key, encode_value, key_bytes, value_bytes};
use crate::crdt::{Cell, CellKey, CellValue, MergeOutcome, Overwritten, RecordState, Seen};
use crate::error::{Result, WriteError};
use crate::hash::FastMap;
use crate::limits::{
    FIELD_NAME_BYTES_MAX, RECORD_BYTES_MAX, RECORD_FIELDS_MAX, SET_ELEMENTS_MAX,
    TRANSACTION_CELLS_MAX, TRANSACTION_WRITES_MAX, VALUE_BYTES_MAX, VALUE_DEPTH_MAX,
};
use crate::types::{Hlc, NodeId, Seq, Version};
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
    /// Remove set elements. On a set field the record does not have, nothing is written.
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
    /// The row as stored before the transaction (`None`: no row).
    pub before: Option<Before>,
    pub state: RecordState,
    pub changed: bool,
    /// (key, old cell, new cell or None when dropped by a reset, reset version), for the
    /// history table. Creations (no old cell) are not kept: see `write_record`.
    pub history: Vec<(CellKey, Option<Cell>, Option<Cell>, Version)>,
    /// Cells this transaction changed in the record (for the transaction size limit).
    pub cells_changed: usize,
    /// The record's history chain head (`records.hist`) as its row held it when the record
    /// was loaded (`None`: no row, or no history yet). Valid while the record has not been
    /// written in this transaction (`Flushed::No`); saves the history insert a lookup of
    /// the row it has just read.
    pub hist: Option<i64>,
    /// (winner, loser) as merged, except a loser that was the record's insert (a `Record`
    /// cell, present): its value is the record's fields as this node held them before the
    /// winner replaced it, a map (what the conflict shows; see [`shown_winner`] for the
    /// winner).
    pub conflicts: Vec<(Cell, Cell)>,
    /// Peer the change came from (1 + its node index; 0 = written here).
    pub src: u64,
    /// (s, t): a cell of commit `s` was overwritten by commit `t`, so a peer must receive
    /// `s` together with `t` (see `feed_links` in schema.rs).
    pub links: Vec<(Seq, Seq)>,
    /// Whether the record's rows were already written in this transaction (see [`Flushed`]).
    pub flushed: Flushed,
    /// Whether a write of this transaction (an insert, update, ... here, not a merge of a
    /// peer's changes) changed the record: then its encoded size must not grow past
    /// `RECORD_BYTES_MAX` (see [`RecordWriter::write`]).
    pub written_here: bool,
    /// Written out by [`Tx::spill`]: its watch event was taken then, its history, conflicts
    /// and links were written or moved to the transaction, and `before` keeps only the
    /// revision.
    pub spilled: bool,
}

/// Most bytes a changed cell adds to an encoded record besides its value: a new version (an
/// 8-byte clock and a node index) and the cell's flags and indexes (see `store/body.rs`).
const CELL_BOOKKEEPING_BYTES_MAX: usize = 32;

/// A pending record as it was before an operation of several steps (see [`Tx::undo`]).
struct UndoPoint {
    state: RecordState,
    changed: bool,
    written_here: bool,
    cells_changed: usize,
    history: usize,
    conflicts: usize,
    links: usize,
    writes: usize,
    seq_used: bool,
}

/// A record's row as the transaction first read it. The decoded state moves into
/// `Pending::state` (the transaction changes it there); what the write needs of the old
/// row — its revision, whether it was live, its feed rows — is kept here, and the old fields,
/// needed only for index entries and the watch event of a delete, are decoded again from the
/// row's bytes when asked. (Keeping a decoded copy instead cost an allocation per cell of
/// every record written: a tenth of an update's time.)
pub(crate) struct Before {
    pub rev: u64,
    live: bool,
    /// The distinct seqs of its cells, ascending: its rows in the feed.
    seqs: Vec<Seq>,
    body: Vec<u8>,
    row_seq: Seq,
}

impl Before {
    fn of_row(rev: u64, state: &RecordState, body: Vec<u8>, row_seq: Seq) -> Before {
        let mut seqs = Vec::new();
        Stored::State(state).seqs(&mut seqs);
        Before {
            rev,
            live: state.is_live(),
            seqs,
            body,
            row_seq,
        }
    }

    /// Only the revision, for a record written out by [`Tx::spill`] (its row is read again
    /// when the transaction touches it: see [`Flushed`]).
    fn rev_only(rev: u64) -> Before {
        Before {
            rev,
            live: false,
            seqs: Vec::new(),
            body: Vec::new(),
            row_seq: Seq(0),
        }
    }
}

/// The record as its row holds it when a write replaces the row: as first read, or as
/// written earlier in the transaction.
#[derive(Clone, Copy)]
enum Stored<'a> {
    Row(&'a Before),
    State(&'a RecordState),
}

impl Stored<'_> {
    fn is_live(self) -> bool {
        match self {
            Stored::Row(b) => b.live,
            Stored::State(s) => s.is_live(),
        }
    }

    /// The distinct seqs of its cells, ascending, into `out`.
    fn seqs(self, out: &mut Vec<Seq>) {
        out.clear();
        match self {
            Stored::Row(b) => out.extend_from_slice(&b.seqs),
            Stored::State(s) => {
                out.extend(s.cells().iter().map(|c| c.seq));
                out.sort_unstable();
                out.dedup();
            }
        }
    }

    /// Its fields (empty when it is not live).
    fn fields(self, nodes: &NodeTable, fields: &FieldTable) -> BTreeMap<String, Value> {
        match self {
            Stored::Row(b) if b.live => body::decode(&b.body, b.row_seq, nodes, fields)
                // These bytes decoded when the transaction read them.
                .map(|s| s.fields())
                .unwrap_or_default(),
            Stored::Row(_) => BTreeMap::new(),
            Stored::State(s) if s.is_live() => s.fields(),
            Stored::State(_) => BTreeMap::new(),
        }
    }
}

/// A new record is written as soon as it is inserted, not at commit, so that a bulk insert
/// keeps one record's cells in memory instead of all of them (their allocations, page faults
/// and frees were a third of its time). Its `Pending` stays, so the transaction still finds
/// it; [`Tx::load`] reads it back when the transaction touches it again.
#[derive(Debug, Default)]
pub(crate) enum Flushed {
    /// Written only at commit (if changed).
    #[default]
    No,
    /// The rows are written and `Pending::state` was emptied: the state is the stored row.
    Dropped,
    /// Written, then read back: the state as written (what commit compares to and
    /// replaces), while `Pending::state` holds the current one.
    Reloaded(RecordState),
}

/// A write transaction. Everything it does becomes visible at once when
/// [`Database::transaction`] returns `Ok`, or not at all.
pub struct Tx<'a> {
    pub(crate) db: &'a Database,
    pub(crate) inner: &'a mut Inner,
    pub(crate) pending: Tracked,
    pub(crate) records: Vec<Pending>,
    /// The last committed seq when the transaction began.
    pub(crate) base_seq: Seq,
    /// The seq the transaction's next group of cells gets.
    pub(crate) seq: Seq,
    pub(crate) seq_used: bool,
    pub(crate) writes: usize,
    pub(crate) now_ms: u64,
    /// Buffers reused by every record written.
    scratch: Scratch,
    /// New records encoded and waiting to be written together.
    batch: InsertBatch,
    /// What [`Tx::spill`] took out of the records it wrote: feed links, conflict losers
    /// (for server priority) and watch events, kept for commit.
    spilled: Spilled,
    /// When set (see [`Tx::track_ignored`]): received cells that lost to a local cell whose
    /// writer had not seen them, as (record, winner, loser). A merge that applies reports
    /// such losers itself (`Pending::conflicts`); one that is ignored does not.
    ignored: Option<Vec<(usize, Cell, Cell)>>,
    /// Set by [`Tx::restore_accepted_values`]: this transaction's writes put back values
    /// this database already accepted, and are not held to the record size limit.
    restoring: bool,
}

/// What a committed transaction did beside its closure's result
/// ([`Database::transaction_bounded_summary`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxSummary {
    /// Conflicts it recorded open (what [`Database::conflicts`] lists; not those the
    /// collection's policy resolved at once).
    pub conflicts_opened: u64,
}

/// See [`Tx::spill`].
#[derive(Debug, Default)]
pub(crate) struct Spilled {
    links: Vec<(Seq, Seq)>,
    /// (collection, id, loser) of every conflict recorded in a spilled record.
    losers: Vec<(i64, String, RecordId, Cell)>,
    events: Vec<Event>,
    /// Events of changes made beside the tracked records (a snapshot's evictions), published
    /// with the transaction's own even when it changed no record.
    events_beside: Vec<Event>,
    /// Records tracked but not yet spilled.
    unspilled: usize,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("seq", &self.seq)
            .field("records", &self.records.len())
            .finish()
    }
}

/// How long a write transaction may hold the database's lock, as far as this crate knows
/// (see [`Database::lock_held_long`]).
enum Hold {
    /// Work of this crate: a record's write, a unit's apply (see
    /// [`Database::transaction_bounded`]).
    Bounded,
    /// The application's closure, which may run for as long as it likes.
    Unbounded,
}

impl Database {
    /// Run `f` as one atomic transaction: all its writes commit together, or none does (on
    /// `Err`, or a panic). The database's lock is held while `f` runs: sync sessions of this
    /// handle wait meanwhile, and keep their connections alive (see
    /// [`Database::lock_held_long`]). Inside `f`, read and write through the [`Tx`]: a call
    /// on this same handle from `f` is refused with [`Error::Reentrant`](crate::Error::Reentrant)
    /// (it would wait for its own transaction forever).
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.run_transaction(Hold::Unbounded, f).map(|(v, _)| v)
    }

    /// [`Database::transaction`] for work of this crate, not marked as unbounded: a record's
    /// write (a commit: a sync driver that meets it waits for it inline), a unit's or a
    /// snapshot's apply (run by a sync session; one that takes long is told by its age).
    pub(crate) fn transaction_bounded<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.run_transaction(Hold::Bounded, f).map(|(v, _)| v)
    }

    /// [`Database::transaction_bounded`], also saying what the committed transaction did
    /// that its closure cannot see: rows written at commit (conflicts, say) are written
    /// after the closure returns.
    pub(crate) fn transaction_bounded_summary<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<(T, TxSummary)> {
        self.run_transaction(Hold::Bounded, f)
    }

    fn run_transaction<T>(
        &self,
        hold: Hold,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<(T, TxSummary)> {
        let mut inner = match hold {
            Hold::Bounded => self.lock_write()?,
            Hold::Unbounded => self.lock_write_unbounded()?,
        };
        // Read under the lock held through the commit: no other transaction counts between.
        let conflicts_before = inner.conflicts_opened;
        let result = (|| {
            let mut tx = Tx::begin(self, &mut inner)?;
            let v = f(&mut tx)?;
            let committed = tx.commit()?;
            Ok((v, committed))
        })();
        match result {
            Ok((v, (events, changed))) => {
                let summary = TxSummary {
                    conflicts_opened: inner.conflicts_opened.saturating_sub(conflicts_before),
                };
                // Published before the lock is released: the next writer cannot commit
                // before this one's events are queued, so every watcher sees commits in
                // their order. `publish` only queues (it never blocks or calls user code),
                // so holding the lock through it cannot deadlock.
                self.watchers.publish(&events);
                drop(inner);
                // Commit listeners are user code, which may call back into the database.
                if changed {
                    self.notify_commit();
                }
                Ok((v, summary))
            }
            Err(e) => {
                inner.rollback();
                Err(inner.write_failed(e))
            }
        }
    }

    /// Insert a new record with a fresh UUIDv7 id.
    pub fn insert<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<RecordId> {
        self.transaction_bounded(|tx| tx.insert(collection, fields))
    }

    /// Insert a new record with the caller's id; fails if a live record has it.
    pub fn insert_with_id<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.transaction_bounded(|tx| tx.insert_with_id(collection, id, fields))
    }

    /// Insert or, if the record exists, set the given fields (others stay).
    pub fn upsert<K: Into<String>, V: Into<Value>>(
        &self,
        collection: &str,
        id: RecordId,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.transaction_bounded(|tx| tx.upsert(collection, id, fields))
    }

    /// Change only the fields named in `patch`. Fails with `NotFound` if the record does not
    /// exist.
    pub fn update(&self, collection: &str, id: RecordId, patch: Patch) -> Result<()> {
        self.transaction_bounded(|tx| tx.update(collection, id, patch))
    }

    /// Delete a record. Returns false if there was none.
    pub fn delete(&self, collection: &str, id: RecordId) -> Result<bool> {
        self.transaction_bounded(|tx| tx.delete(collection, id))
    }

    /// Add `by` to a counter field; returns the new total.
    pub fn increment(&self, collection: &str, id: RecordId, field: &str, by: i64) -> Result<i64> {
        self.transaction_bounded(|tx| tx.increment(collection, id, field, by))
    }

    /// Add elements to a set field. A set reads sorted and without repeats: adding to a
    /// plain list field makes it a set, so a list with repeated values (`["x", "x"]`) loses
    /// its repeats (write a list whole with `Patch::set` to keep them).
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
        let base_seq = inner.head_seq()?;
        let now_ms = db.now_ms();
        Ok(Tx {
            db,
            inner,
            pending: Tracked::default(),
            records: Vec::new(),
            base_seq,
            seq: Seq(base_seq.0 + 1),
            seq_used: false,
            writes: 0,
            now_ms,
            scratch: Scratch::default(),
            batch: InsertBatch::default(),
            spilled: Spilled::default(),
            ignored: None,
            restoring: false,
        })
    }

    /// Mark this transaction's writes from here on as writing back values this database
    /// already holds (a copy restated for a peer whose writes were refused, a server's value
    /// reasserted over a peer's): their records are not held to `RECORD_BYTES_MAX`, nor the
    /// transaction to `TRANSACTION_WRITES_MAX` and `TRANSACTION_CELLS_MAX`. These writes
    /// commit with the unit that called for them, and are as many as the unit refused or
    /// overwrote: a record that merges grew past the size limit must still be restorable,
    /// and a unit must still apply however many records it touched, or the apply would fail
    /// on every retry.
    pub(crate) fn restore_accepted_values(&mut self) {
        self.restoring = true;
    }

    /// In a transaction that merged a peer's changes, begin this node's own writes that
    /// answer them (refused records restated, server values reasserted). They commit with
    /// the changes and the received cursor stored with them, so no crash can keep the one
    /// without the other. Yet the feed positions the changes took must hold only rows from
    /// that peer (a sync session passes over them as the peer's own, never sent back), and
    /// these writes must count as written here: the feed skips a peer's rows when sending to
    /// it, and they are meant to reach it. So everything merged so far is written out now,
    /// at its positions with its source, with the conflicts it recorded (a reassertion
    /// relabels them); the writes that follow take the next position, as written here.
    pub(crate) fn begin_local_writes_after_received(&mut self) -> Result<()> {
        self.spill()?;
        if self.seq_used {
            self.seq = Seq(self.seq.0 + 1);
            self.seq_used = false;
        }
        // Every row at the positions so far is written: whatever a record writes from here
        // on is at the new position, and written here.
        for p in &mut self.records {
            p.src = 0;
        }
        Ok(())
    }

    /// Conflict losers of the records [`Tx::spill`] wrote out: (collection, name, id, loser).
    pub(crate) fn spilled_losers(&self) -> &[(i64, String, RecordId, Cell)] {
        &self.spilled.losers
    }

    /// Add a record received whole from peer `src` (1 + its node index) that has no row here
    /// and is not tracked yet — a snapshot's record new to this database — with its state
    /// already merged (every cell at the transaction's seq). Written like a bulk insert's
    /// record: encoded into the insert batch, its cells dropped from memory (a collection
    /// with indexes, or a watched database, takes the general path at commit).
    pub(crate) fn insert_received(
        &mut self,
        coll: i64,
        collection: &str,
        id: RecordId,
        state: RecordState,
        src: u64,
    ) -> Result<()> {
        let i = self.track(coll, collection, id, None);
        let p = &mut self.records[i];
        p.state = state;
        p.changed = true;
        p.src = src;
        self.seq_used = true;
        if self.db.watchers.is_watched() {
            return Ok(());
        }
        if self.inner.indexes.contains_key(&coll) {
            self.flush(i)
        } else {
            self.queue(i)
        }
    }

    /// Whether the transaction tracks this record.
    pub(crate) fn tracks(&self, coll: i64, id: RecordId) -> bool {
        self.pending.get(&(coll, id)).is_some()
    }

    /// Publish `event` to watchers when the transaction commits (with its own events, in
    /// commit order), for a change it made beside the records it tracks.
    pub(crate) fn publish_at_commit(&mut self, event: Event) {
        self.spilled.events_beside.push(event);
    }

    /// Records held in memory that [`Tx::spill`] would write out.
    pub(crate) fn unspilled(&self) -> usize {
        self.spilled.unspilled
    }

    /// Write every changed record out now, inside the open SQL transaction, and drop its
    /// cells from memory: a transaction that applies a unit or a snapshot of any size keeps
    /// memory bounded by what it touched since the last spill, not by all it touched. The
    /// rows become visible with the commit, like every other write of the transaction; a
    /// record touched again is read back (see [`Tx::reload`]) and written again at commit.
    pub(crate) fn spill(&mut self) -> Result<()> {
        self.batch.write(&self.inner.conn)?;
        let watched = self.db.watchers.is_watched();
        // Collections a filtered watch follows: their update events carry the fields before.
        let filtered = if watched {
            self.db.watchers.filtered_collections()
        } else {
            Vec::new()
        };
        let now_ms = self.now_ms;
        let (conn, mut tables, record_cache) = Tables::split(&mut *self.inner);
        let mut w = RecordWriter::new(conn);
        for p in self.records.iter_mut() {
            let stored = match &p.flushed {
                Flushed::Dropped => continue,
                Flushed::No if !p.changed && p.before.is_none() => continue,
                Flushed::No if !p.changed => {
                    // Only read: nothing to write, and the state is the stored row.
                    p.state = RecordState::default();
                    p.flushed = Flushed::Dropped;
                    p.before = p.before.take().map(|b| Before::rev_only(b.rev));
                    p.spilled = true;
                    continue;
                }
                Flushed::No => p.before.as_ref().map(Stored::Row),
                Flushed::Reloaded(written) if *written == p.state => None,
                Flushed::Reloaded(written) => Some(Stored::State(written)),
            };
            let unchanged_reload = matches!(&p.flushed, Flushed::Reloaded(w) if *w == p.state);
            // The state the event is told against, when one is due.
            let event_before = if unchanged_reload {
                // Written early by an insert and not changed since: its event is still due.
                (watched && !p.spilled).then(|| p.before.as_ref().map(Stored::Row))
            } else {
                w.write(conn, &mut tables, &mut self.scratch, p, stored, now_ms)?;
                watched.then_some(stored)
            };
            if let Some(before) = event_before {
                let before_wanted = filtered.contains(&p.collection);
                if let Some(e) = event(
                    p,
                    &p.state,
                    before,
                    tables.nodes,
                    tables.fields,
                    before_wanted,
                ) {
                    self.spilled.events.push(e);
                }
            }
            self.spilled.links.append(&mut p.links);
            for (_, loser) in p.conflicts.drain(..) {
                self.spilled
                    .losers
                    .push((p.coll, p.collection.clone(), p.id, loser));
            }
            p.history.clear();
            p.state = RecordState::default();
            p.flushed = Flushed::Dropped;
            p.before = p.before.take().map(|b| Before::rev_only(b.rev));
            p.spilled = true;
        }
        w.finish(conn, &mut self.scratch, record_cache)?;
        self.spilled.unspilled = 0;
        Ok(())
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

    /// Change only the fields named in `patch`. All or nothing: on an error, the record is
    /// left as it was (a caller may catch the error and commit the rest of the transaction).
    pub fn update(&mut self, collection: &str, id: RecordId, patch: Patch) -> Result<()> {
        let i = self.live(collection, id)?;
        for (field, _) in &patch.ops {
            validate_field_name(field)?;
        }
        let mut ops = patch.ops.into_iter();
        match (ops.next(), ops.len()) {
            (None, _) => Ok(()),
            // One operation checks everything before it merges anything (most updates):
            // nothing to undo, so no copy of the record to keep.
            (Some((field, op)), 0) => self.apply_op(i, &field, op),
            (Some(first), _) => {
                let undo = self.undo_point(i);
                let result = std::iter::once(first)
                    .chain(ops)
                    .try_for_each(|(field, op)| self.apply_op(i, &field, op));
                if result.is_err() {
                    self.undo(i, undo);
                }
                result
            }
        }
    }

    /// Write one field of a record this node holds no copy of (a partial replica evicted
    /// it; it lives on elsewhere): a plain field write, which merges into the record wherever
    /// it lives. An insert would replace the record there with one holding this field alone.
    pub(crate) fn set_field_of_record_not_held(
        &mut self,
        collection: &str,
        id: RecordId,
        field: &str,
        value: Value,
    ) -> Result<()> {
        validate_field_name(field)?;
        let i = self.load(collection, id, true)?.expect("created");
        assert!(
            self.records[i].state.is_empty(),
            "{id} is held here: write it with update or insert"
        );
        self.apply_op(i, field, FieldOp::Set(value))
    }

    /// What [`Tx::undo`] needs to put record `i` back as it is now.
    fn undo_point(&self, i: usize) -> UndoPoint {
        let p = &self.records[i];
        UndoPoint {
            state: p.state.clone(),
            changed: p.changed,
            written_here: p.written_here,
            cells_changed: p.cells_changed,
            history: p.history.len(),
            conflicts: p.conflicts.len(),
            links: p.links.len(),
            writes: self.writes,
            seq_used: self.seq_used,
        }
    }

    /// Put record `i` back as it was at `undo` (merges only add to its history, conflicts
    /// and links since then).
    fn undo(&mut self, i: usize, undo: UndoPoint) {
        let p = &mut self.records[i];
        p.state = undo.state;
        p.changed = undo.changed;
        p.written_here = undo.written_here;
        p.cells_changed = undo.cells_changed;
        p.history.truncate(undo.history);
        p.conflicts.truncate(undo.conflicts);
        p.links.truncate(undo.links);
        self.writes = undo.writes;
        self.seq_used = undo.seq_used;
    }

    /// Delete a record. Returns false if there was none.
    pub fn delete(&mut self, collection: &str, id: RecordId) -> Result<bool> {
        let Some(i) = self.load(collection, id, false)? else {
            return Ok(false);
        };
        if !self.records[i].state.is_live() {
            return Ok(false);
        }
        let version = self.next_version()?;
        let cell = self.reset_cell(i, CellKey::Record, CellValue::Absent, version);
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
        match self.records[i].state.field(field) {
            Some(Value::Int(n)) => Ok(n),
            _ => unreachable!("a counter reads as an int"),
        }
    }

    /// Write this node's copy of a record again with new versions, so that a peer whose
    /// write of it was refused comes back to it. With `touched` (the cells of a refused
    /// update, which names no `Record` cell), only the cells it touched are written, at a
    /// version just above the refused write's (`refused`, its newest hlc) and this copy's
    /// cells of those fields, not at this node's clock: a write of another node that is
    /// newer than the refused one (allowed, concurrent, arriving later) still wins over the
    /// restatement, as it would have over the refused write (it lost to a restatement at the
    /// relay's later clock until 2026-12-06). Each field as it is here, or unset where it has
    /// no value here; a set element the update added or removed, as the element alone where
    /// the field is a set here; a counter contribution, as that node's contribution here (0
    /// without one), so the other nodes' contributions stay (the field was reset, which
    /// dropped their concurrent increments). Without `touched` (a refused insert or delete),
    /// the whole copy is written as an insert at this node's clock (which resets older cells
    /// everywhere, fields the refused write added too), or a new tombstone when there is no
    /// live copy.
    pub(crate) fn restate(
        &mut self,
        collection: &str,
        id: RecordId,
        touched: Option<&[CellKey]>,
        refused: Hlc,
    ) -> Result<()> {
        let i = self.load(collection, id, true)?.expect("created");
        if let (Some(keys), true) = (touched, self.records[i].state.is_live()) {
            return self.restate_touched(i, keys, refused);
        }
        if self.records[i].state.is_live() {
            let fields: Vec<(String, Value)> = self.records[i].state.fields().into_iter().collect();
            self.write_fields(i, fields, true)
        } else {
            let version = self.next_version()?;
            let cell = self.reset_cell(i, CellKey::Record, CellValue::Absent, version);
            self.merge_local(i, cell);
            Ok(())
        }
    }

    /// [`Tx::restate`] of the cells a refused update touched, in live record `i`.
    fn restate_touched(&mut self, i: usize, keys: &[CellKey], refused: Hlc) -> Result<()> {
        /// What of one field the refused update touched.
        #[derive(Default)]
        struct Touched<'k> {
            whole: bool,
            elements: Vec<&'k [u8]>,
            counters: Vec<NodeId>,
        }
        let mut fields: BTreeMap<&str, Touched<'_>> = BTreeMap::new();
        for key in keys {
            let Some(f) = key.field() else {
                debug_assert!(false, "a record cell restates the whole record");
                continue;
            };
            let entry = fields.entry(f).or_default();
            match key {
                CellKey::Element(_, e) => entry.elements.push(e),
                CellKey::Counter(_, node) => entry.counters.push(*node),
                _ => entry.whole = true,
            }
        }
        if fields.is_empty() {
            return Ok(());
        }
        // Just above the refused write and whatever this copy holds of those fields (a
        // restatement older than a cell here would not apply here).
        let floor = fields
            .keys()
            .filter_map(|f| self.records[i].state.newest_field_version(f))
            .map(|v| v.hlc)
            .fold(refused, Hlc::max);
        let version = self.version_after(floor)?;
        for (field, touched) in fields {
            let state = &self.records[i].state;
            let here = state.field(field);
            // A set here is read from element cells; a plain list holding the same values
            // would be read as a set (sorted, without repeats) once element cells joined it.
            let is_set = state
                .cells()
                .iter()
                .any(|c| matches!(&c.key, CellKey::Element(f, _) if &**f == field));
            let is_counter = matches!(here, Some(Value::Int(_)));
            let set_here = is_set && matches!(here, Some(Value::List(_)));
            let whole = touched.whole
                || (!touched.elements.is_empty() && !set_here)
                || (!touched.counters.is_empty() && !is_counter);
            if whole {
                // Not a set (or counter) here, or written whole: element or counter cells
                // would make it one.
                let value = here.map_or(CellValue::Absent, CellValue::Value);
                let cell = self.reset_cell(i, CellKey::Field(field.into()), value, version);
                self.merge_local(i, cell);
                continue;
            }
            if let Some(Value::List(set)) = &here {
                for e in touched.elements {
                    let present = value::from_bytes(e).is_ok_and(|v| set.contains(&v));
                    self.write_element(i, field, e.to_vec(), present, version);
                }
            }
            for node in touched.counters {
                let key = CellKey::Counter(field.into(), node);
                let (count, prev) = match self.records[i].state.cell(&key) {
                    Some(c) => match c.value {
                        CellValue::Count(n) => (n, Some(c.version)),
                        _ => (0, Some(c.version)),
                    },
                    None => (0, None),
                };
                let cell = self.cell(key, CellValue::Count(count), version, prev);
                self.merge_local(i, cell);
            }
        }
        Ok(())
    }

    /// Read a record, seeing this transaction's own writes. A name no collection can have is
    /// refused as a write refuses it ([`WriteError::InvalidName`]).
    pub fn get(&mut self, collection: &str, id: RecordId) -> Result<Option<Record>> {
        let Some(i) = self.load(collection, id, false)? else {
            super::validate_collection_name(collection)?;
            return Ok(None);
        };
        let p = &self.records[i];
        if !p.state.is_live() {
            return Ok(None);
        }
        let rev = p.before.as_ref().map_or(0, |b| b.rev) + u64::from(p.changed);
        Ok(Some(Record {
            collection: p.collection.clone(),
            id,
            rev,
            fields: p.state.fields(),
        }))
    }

    /// The live record `id` of `collection`. A name no collection can have is refused as
    /// an insert refuses it (no record can be there; and `NotFound` would repeat the name
    /// whole, however long).
    fn live(&mut self, collection: &str, id: RecordId) -> Result<usize> {
        match self.load(collection, id, false)? {
            Some(i) if self.records[i].state.is_live() => Ok(i),
            _ => {
                super::validate_collection_name(collection)?;
                Err(WriteError::NotFound {
                    collection: collection.to_owned(),
                    id: id.to_string(),
                }
                .into())
            }
        }
    }

    /// Add a record known not to exist yet (a freshly generated id).
    fn load_new(&mut self, collection: &str, id: RecordId) -> Result<usize> {
        let coll = self.inner.collection_id_or_create(collection)?;
        if let Some(i) = self.pending.get(&(coll, id)) {
            self.reload(i)?;
            return Ok(i);
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
            self.reload(i)?;
            return Ok(Some(i));
        }
        let read_row = |inner: &Inner| -> Result<Option<CachedRow>> {
            Ok(inner
                .conn
                .prepare_cached(
                    "SELECT rev, seq, body, hist FROM records WHERE coll = ?1 AND id = ?2",
                )?
                .query_row(params![coll, &id.0[..]], |r| {
                    Ok(CachedRow {
                        rev: r.get(0)?,
                        seq: r.get(1)?,
                        body: r.get(2)?,
                        hist: r.get(3)?,
                    })
                })
                .optional()?)
        };
        // A row this handle committed a moment ago needs no read, and usually no decoding
        // (see `record_cache`).
        let (row, cached_state) = match self.inner.record_cache.checkout(coll, id) {
            Some((c, state)) => {
                let cached = c.clone();
                // Every test run checks that the cache holds exactly the stored row, and the
                // record decoded from it.
                #[cfg(debug_assertions)]
                {
                    let stored = read_row(self.inner)?;
                    debug_assert_eq!(
                        stored.as_ref(),
                        Some(&cached),
                        "record cache out of date for {id}"
                    );
                    if let (Some(state), Some(stored)) = (&state, &stored) {
                        let decoded = body::decode(
                            &stored.body,
                            Seq(stored.seq),
                            &self.inner.nodes,
                            &self.inner.fields,
                        )?;
                        debug_assert_eq!(state, &decoded, "cached state of {id}");
                    }
                }
                (Some(cached), state)
            }
            // Not cached on the way in: most rows read here are written next, and the write
            // caches them (measured: caching reads too cost 5% on writes of cold records).
            None => (read_row(self.inner)?, None),
        };
        let (before, state, hist) = match row {
            Some(CachedRow {
                rev,
                seq,
                body: bytes,
                hist,
            }) => {
                let state = match cached_state {
                    Some(state) => state,
                    None => body::decode(&bytes, Seq(seq), &self.inner.nodes, &self.inner.fields)?,
                };
                let before = Before::of_row(rev, &state, bytes, Seq(seq));
                (Some(before), state, hist)
            }
            None if !create => return Ok(None),
            None => (None, RecordState::default(), None),
        };
        let i = self.track(coll, collection, id, before);
        let p = &mut self.records[i];
        p.state = state;
        p.hist = hist;
        Ok(Some(i))
    }

    /// Start tracking a record in this transaction, as stored before it (`None`: no row);
    /// its state starts empty (the caller puts the stored one in).
    fn track(
        &mut self,
        coll: i64,
        collection: &str,
        id: RecordId,
        before: Option<Before>,
    ) -> usize {
        self.records.push(Pending {
            coll,
            collection: collection.to_owned(),
            id,
            before,
            state: RecordState::default(),
            changed: false,
            history: Vec::new(),
            conflicts: Vec::new(),
            src: 0,
            links: Vec::new(),
            cells_changed: 0,
            hist: None,
            flushed: Flushed::No,
            spilled: false,
            written_here: false,
        });
        self.spilled.unspilled += 1;
        let i = self.records.len() - 1;
        self.pending.insert((coll, id), i);
        i
    }

    /// Read a record written early (see [`Flushed`]) back into its `Pending`.
    fn reload(&mut self, i: usize) -> Result<()> {
        if !matches!(self.records[i].flushed, Flushed::Dropped) {
            return Ok(());
        }
        self.batch.write(&self.inner.conn)?;
        let p = &mut self.records[i];
        let state = read_state(&self.inner.conn, &self.inner.nodes, &self.inner.fields, p)?;
        p.state = state.clone();
        p.flushed = Flushed::Reloaded(state);
        if p.spilled {
            self.spilled.unspilled += 1;
        }
        Ok(())
    }

    /// Write a just-inserted record now (see [`Flushed`]) and drop its cells.
    fn flush(&mut self, i: usize) -> Result<()> {
        let p = &mut self.records[i];
        // Only a record that had no row, no history, conflicts or links: the rows written
        // here are all that commit would write for it.
        debug_assert!(p.before.is_none() && p.history.is_empty() && p.conflicts.is_empty());
        debug_assert!(p.links.is_empty() && matches!(p.flushed, Flushed::No));
        let (conn, mut tables, record_cache) = Tables::split(&mut *self.inner);
        let mut w = RecordWriter::new(conn);
        w.write(conn, &mut tables, &mut self.scratch, p, None, self.now_ms)?;
        w.finish(conn, &mut self.scratch, record_cache)?;
        p.state = RecordState::default();
        p.flushed = Flushed::Dropped;
        Ok(())
    }

    /// Encode a just-inserted record of a collection without indexes into the insert batch
    /// (see [`Flushed`]) and drop its cells. Its rows are what [`RecordWriter::write`] would
    /// write for it: the record row with rev 1 and one feed row at the transaction's seq.
    fn queue(&mut self, i: usize) -> Result<()> {
        let p = &mut self.records[i];
        debug_assert!(p.before.is_none() && p.history.is_empty() && p.conflicts.is_empty());
        debug_assert!(p.links.is_empty() && matches!(p.flushed, Flushed::No));
        debug_assert!(p.state.cells().iter().all(|c| c.seq == self.seq));
        let b = &mut self.batch;
        body::encode_into(
            &mut b.body,
            &mut self.scratch.versions,
            &mut self.scratch.field_memo,
            &p.state,
            self.seq,
            &mut self.inner.nodes,
            &mut self.inner.fields,
        );
        // Checked now, so the error comes from the insert that caused it. A record received
        // whole (a snapshot's) is taken at any size: see `RecordWriter::write`.
        if p.written_here && b.body.len() > RECORD_BYTES_MAX {
            return Err(WriteError::Limit {
                what: "encoded record size",
                got: b.body.len(),
                max: RECORD_BYTES_MAX,
            }
            .into());
        }
        b.bodies.extend_from_slice(&b.body);
        b.rows.push((
            p.coll,
            p.id,
            self.seq,
            b.bodies.len(),
            p.state.is_live(),
            p.src,
        ));
        p.state = RecordState::default();
        p.flushed = Flushed::Dropped;
        if b.rows.len() >= INSERT_BATCH_RECORDS {
            b.write(&self.inner.conn)?;
        }
        Ok(())
    }

    /// A version of this node just above `floor` (a restatement's: see [`Tx::restate`]),
    /// counted as a write like [`Tx::next_version`]'s.
    fn version_after(&mut self, floor: Hlc) -> Result<Version> {
        let mut v = self.next_version()?;
        v.hlc = Hlc(floor.0 + 1).min(v.hlc);
        Ok(v)
    }

    fn next_version(&mut self) -> Result<Version> {
        self.writes += 1;
        if self.writes > TRANSACTION_WRITES_MAX && !self.restoring {
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
            seen: Seen::default(),
            seq: self.seq,
        }
    }

    /// A write of a `Record` or plain `Field` cell into record `i`, which replaces that cell
    /// and resets what is older (the record's cells; the field's counter and set cells):
    /// `prev` is the newest version it replaces, and `seen` what its writer held of them per
    /// node ([`RecordState::seen_by_reset`]), so that a receiver tells a cell it drops that
    /// this node never held from one it did.
    fn reset_cell(&self, i: usize, key: CellKey, value: CellValue, version: Version) -> Cell {
        let state = &self.records[i].state;
        let prev = match &key {
            CellKey::Record => state.newest_version(),
            CellKey::Field(f) => state.newest_field_version(f),
            CellKey::Counter(..) | CellKey::Element(..) => {
                unreachable!("only record and plain-field writes reset")
            }
        };
        let seen = state.seen_by_reset(&key);
        Cell {
            key,
            value,
            version,
            prev,
            seen,
            seq: self.seq,
        }
    }

    /// Write `fields` into record `i` (as an insert: over whatever it held; or over its
    /// other fields). Every check comes before the first merge, so an error leaves the record
    /// as it was.
    fn write_fields(
        &mut self,
        i: usize,
        mut fields: Vec<(String, Value)>,
        insert: bool,
    ) -> Result<()> {
        self.check_fields_written(i, &fields, insert)?;
        let version = self.next_version()?;
        if insert && self.records[i].state.is_empty() {
            // Inserting into a record that has no cells (the bulk-insert case): merging the
            // cells one by one would store each (no cell to overwrite, nothing older than the
            // record cell, no previous versions), so build that state directly. Field names
            // are unique: they come from `collect_fields` or `RecordState::fields`.
            fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let seq = self.seq;
            let mut cells = Vec::with_capacity(fields.len() + 1);
            cells.push(Cell {
                key: CellKey::Record,
                value: CellValue::Present,
                version,
                prev: None,
                seen: Seen::default(),
                seq,
            });
            cells.extend(fields.into_iter().map(|(f, v)| Cell {
                key: CellKey::Field(f.into()),
                value: CellValue::Value(v),
                version,
                prev: None,
                seen: Seen::default(),
                seq,
            }));
            let p = &mut self.records[i];
            let undo = (p.cells_changed, p.changed, p.written_here, self.seq_used);
            p.cells_changed += cells.len();
            p.changed = true;
            p.written_here = !self.restoring;
            p.state = RecordState::from_cells(cells).expect("field names are unique");
            // Events are built from the state at commit: keep it when someone watches.
            if self.records[i].before.is_none() && !self.db.watchers.is_watched() {
                let written = if self.inner.indexes.contains_key(&self.records[i].coll) {
                    // Index entries are derived from the fields: the general path.
                    self.flush(i)
                } else {
                    self.queue(i)
                };
                if written.is_err() {
                    // Refused (too large) before anything was written: the record goes back
                    // to having no cells, as before this insert.
                    let p = &mut self.records[i];
                    (p.cells_changed, p.changed, p.written_here, self.seq_used) = undo;
                    p.state = RecordState::default();
                }
                return written;
            }
            return Ok(());
        }
        if insert {
            let cell = self.reset_cell(i, CellKey::Record, CellValue::Present, version);
            self.merge_local(i, cell);
        }
        for (f, v) in fields {
            let cell = self.reset_cell(i, CellKey::Field(f.into()), CellValue::Value(v), version);
            self.merge_local(i, cell);
        }
        Ok(())
    }

    /// Refuse writing `fields` into record `i` ([`Tx::write_fields`]) when that takes it
    /// over `RECORD_FIELDS_MAX`. An insert leaves just `fields`; otherwise they join the
    /// visible ones. Only growth is refused: a record that merges took over the limit can
    /// still be written with as many fields (restated as it is, one field updated).
    fn check_fields_written(
        &self,
        i: usize,
        fields: &[(String, Value)],
        insert: bool,
    ) -> Result<()> {
        let state = &self.records[i].state;
        let before = state.field_count();
        if !insert && fields.len() <= RECORD_FIELDS_MAX.saturating_sub(before) {
            // Under the limit even if every field is new (most writes): no lookups.
            return Ok(());
        }
        let after = if insert {
            fields.len()
        } else {
            before + fields.iter().filter(|(f, _)| !state.has_field(f)).count()
        };
        if after > RECORD_FIELDS_MAX && after > before {
            return Err(WriteError::Limit {
                what: "fields in a record",
                got: after,
                max: RECORD_FIELDS_MAX,
            }
            .into());
        }
        Ok(())
    }

    /// Apply one operation to record `i`. Every check comes before the first merge, so an
    /// error leaves the record as it was.
    fn apply_op(&mut self, i: usize, field: &str, op: FieldOp) -> Result<()> {
        // Removing elements from a set the record does not have (never written, or unset)
        // removes nothing: no write. Its element cells would show the field, as `[]`.
        if matches!(op, FieldOp::Remove(_)) && !self.records[i].state.has_field(field) {
            return Ok(());
        }
        // Every other operation but an unset leaves the field visible: it may add one.
        if !matches!(op, FieldOp::Unset) {
            self.check_field_added(i, field)?;
        }
        // The field's current value, which a plain set does not need (most writes).
        let current = match &op {
            FieldOp::Set(_) => None,
            _ => self.records[i].state.field(field),
        };
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
                let cell = self.reset_cell(
                    i,
                    CellKey::Field(field.into()),
                    CellValue::Value(v),
                    version,
                );
                self.merge_local(i, cell);
                return Ok(());
            }
            FieldOp::Unset => {
                if current.is_none() {
                    return Ok(());
                }
                let version = self.next_version()?;
                let cell =
                    self.reset_cell(i, CellKey::Field(field.into()), CellValue::Absent, version);
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
                let key = CellKey::Counter(field.into(), self.db.node);
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
        let mut set = match current {
            None => Vec::new(),
            Some(Value::List(l)) => l,
            Some(other) => return Err(mismatch("set add/remove", "a set (list)", &other).into()),
        };
        if elems.is_empty() {
            return Ok(());
        }
        for e in &elems {
            validate_value(field, e)?;
        }
        if present {
            // The set as this write leaves it, checked before anything merges. Only growth
            // is refused: merging peers' additions may have taken the set over a limit, and
            // writes that keep or shrink it must still pass (or removing elements would fail
            // until someone deletes the whole field).
            let size_before = set.len();
            set.sort();
            for e in &elems {
                if let Err(at) = set.binary_search(e) {
                    set.insert(at, e.clone());
                }
            }
            if set.len() > size_before {
                if set.len() > SET_ELEMENTS_MAX {
                    return Err(WriteError::Limit {
                        what: "set size",
                        got: set.len(),
                        max: SET_ELEMENTS_MAX,
                    }
                    .into());
                }
                // The set is read (and exported) as one value: one level deeper than its
                // elements, and their sizes together. Checked as a whole, or export → import
                // of it would fail on a value this write let in.
                validate_value(field, &Value::List(set))?;
            }
        }
        let version = self.next_version()?;
        for e in elems {
            self.write_element(i, field, value::to_bytes(&e), present, version);
        }
        Ok(())
    }

    /// Write one set element (`encoded`) of `field` into record `i`: in the set or out.
    fn write_element(
        &mut self,
        i: usize,
        field: &str,
        encoded: Vec<u8>,
        present: bool,
        version: Version,
    ) {
        let key = CellKey::Element(field.into(), encoded);
        let prev = self.records[i].state.cell(&key).map(|c| c.version);
        let value = if present {
            CellValue::Present
        } else {
            CellValue::Absent
        };
        let cell = self.cell(key, value, version, prev);
        self.merge_local(i, cell);
    }

    /// Refuse a write that would make `field` visible in record `i` when that takes the
    /// record over `RECORD_FIELDS_MAX`. Only an added field is refused: concurrent writes
    /// merged from peers may have left the record over the limit, and writes to its existing
    /// fields (or removals) must still pass.
    fn check_field_added(&self, i: usize, field: &str) -> Result<()> {
        let state = &self.records[i].state;
        if state.has_field(field) {
            return Ok(());
        }
        let n = state.field_count() + 1;
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
        if !self.restoring {
            self.records[i].written_here = true;
        }
        self.merge(i, cell);
    }

    /// Take in a cell received from a peer: its clock is observed (refused when too far
    /// ahead) and it takes the transaction's current seq.
    pub(crate) fn receive_cell(&mut self, cell: &mut Cell) -> Result<()> {
        self.inner
            .clock
            .observe(cell.version.hlc, self.now_ms)
            .map_err(crate::error::ApplyError::from)?;
        cell.seq = self.seq;
        Ok(())
    }

    /// Merge one cell received from a peer into pending record `i` ([`Tx::receive_cell`]);
    /// a cell that changed something marks the seq used. Returns whether it changed
    /// something.
    pub(crate) fn merge_received(&mut self, i: usize, mut cell: Cell) -> Result<bool> {
        self.receive_cell(&mut cell)?;
        // Copied only where ignored losers are tracked, and only for the cells that can
        // lose in a conflict (plain fields, set elements and the record's own cell).
        let copy = self
            .ignored
            .is_some()
            .then(|| {
                matches!(
                    cell.key,
                    CellKey::Record | CellKey::Field(_) | CellKey::Element(..)
                )
                .then(|| cell.clone())
            })
            .flatten();
        let applied = self.merge(i, cell);
        if let (false, Some(loser)) = (applied, copy) {
            if let Some(winner) = concurrent_winner(&self.records[i].state, &loser) {
                let winner = winner.clone();
                self.ignored
                    .as_mut()
                    .expect("copied only when tracking")
                    .push((i, winner, loser));
            }
        }
        if applied {
            self.seq_used = true;
        }
        Ok(applied)
    }

    /// Track received cells that lose to a concurrent local cell without being applied (see
    /// [`Tx::take_ignored`]).
    pub(crate) fn track_ignored(&mut self) {
        self.ignored.get_or_insert_with(Vec::new);
    }

    /// The losers tracked since the last call: (record, winner, loser).
    pub(crate) fn take_ignored(&mut self) -> Vec<(usize, Cell, Cell)> {
        self.ignored
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Store a conflict for record `i` now, in the transaction: for a record the merge did
    /// not change (its conflicts would be written only with the record). Not stored twice:
    /// the same loser arriving again is a duplicate delivery.
    pub(crate) fn store_conflict(&mut self, i: usize, winner: &Cell, loser: &Cell) -> Result<()> {
        let p = &self.records[i];
        let (coll, id) = (p.coll, p.id);
        let key = key_bytes(&loser.key);
        let ln = self.inner.nodes.index(&loser.version.node);
        let known: bool = self
            .inner
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM conflicts WHERE coll = ?1 AND id = ?2 AND cell = ?3
                 AND loser_hlc = ?4 AND loser_node = ?5)",
            )?
            .query_row(
                params![coll, &id.0[..], key, loser.version.hlc.0 as i64, ln as i64],
                |r| r.get(0),
            )?;
        if known {
            return Ok(());
        }
        let state = &self.records[i].state;
        let seq = state.max_seq();
        let winner = shown_winner(state, winner, loser);
        let inner = &mut *self.inner;
        let open = insert_conflict(
            &inner.conn,
            &mut inner.nodes,
            inner.policies.get(&coll),
            coll,
            id,
            &winner,
            loser,
            seq,
        )?;
        inner.conflicts_opened += u64::from(open);
        Ok(())
    }

    /// Server priority: the conflict recorded when a peer's concurrent write overwrote our
    /// value of `field` (`overwritten`, that value's version) named the peer's value the
    /// winner and ours the loser. This transaction wrote our value again, and everyone ends
    /// up showing it: the conflict now says so, with that write as the winner and the
    /// peer's value as the loser (as [`CollectionPolicy::server_priority`] documents), so
    /// that resolving it with `None` keeps what is shown.
    pub(crate) fn relabel_reasserted_conflict(
        &mut self,
        collection: &str,
        id: RecordId,
        field: &str,
        overwritten: Version,
    ) -> Result<()> {
        let Some(&coll) = self.inner.collections.get(collection) else {
            return Ok(());
        };
        let Some(i) = self.pending.get(&(coll, id)) else {
            return Ok(());
        };
        let key = CellKey::Field(field.into());
        let Some(written) = self.records[i]
            .state
            .cells()
            .iter()
            .find(|c| c.key == key)
            .cloned()
        else {
            return Ok(());
        };
        let written_by = self.inner.nodes.index(&written.version.node);
        let overwritten_by = self.inner.nodes.index(&overwritten.node);
        // SET reads the row as it was: the old winner becomes the loser.
        self.inner
            .conn
            .prepare_cached(
                "UPDATE conflicts SET loser = winner, loser_hlc = winner_hlc,
                 loser_node = winner_node, winner = ?1, winner_hlc = ?2, winner_node = ?3
                 WHERE coll = ?4 AND id = ?5 AND cell = ?6 AND loser_hlc = ?7
                 AND loser_node = ?8",
            )?
            .execute(params![
                value_bytes(&written.value),
                written.version.hlc.0 as i64,
                written_by as i64,
                coll,
                &id.0[..],
                key_bytes(&key),
                overwritten.hlc.0 as i64,
                overwritten_by as i64,
            ])?;
        Ok(())
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
                if p.history.capacity() == 0 {
                    // Most writes change one cell of a record: room for one entry, not the
                    // four a first push would allocate (their ~1.5 KB made glibc's malloc
                    // consolidate its free lists: 4% of an update's time).
                    p.history.reserve_exact(1);
                }
                // A record this write replaced whole, its writer never having seen the
                // insert that made it: the conflict shows it as it was here.
                let replaced_record = overwritten
                    .iter()
                    .any(|o| o.concurrent && is_live_record_cell(&o.cell))
                    .then(|| fields_before(&p.state, at, &overwritten));
                let mut replaced = None;
                for o in overwritten {
                    if o.concurrent {
                        let loser = match &replaced_record {
                            Some(fields) if o.cell.key == CellKey::Record => Cell {
                                value: CellValue::Value(Value::Map(fields.clone())),
                                ..o.cell.clone()
                            },
                            _ => o.cell.clone(),
                        };
                        p.conflicts.push((cell.clone(), loser));
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
        // Collections a filtered watch follows: their update events carry the fields before.
        let filtered = if watched {
            self.db.watchers.filtered_collections()
        } else {
            Vec::new()
        };
        let Tx {
            db,
            inner,
            mut records,
            base_seq,
            seq,
            seq_used,
            mut scratch,
            mut batch,
            spilled,
            restoring,
            ..
        } = self;
        if !seq_used && records.iter().all(|p| !p.changed) {
            // Nothing changed, but rows written beside the records (a conflict stored by
            // `store_conflict`) may name a node or field numbered in this transaction.
            inner.nodes.flush(&inner.conn)?;
            inner.fields.flush(&inner.conn)?;
            inner.commit()?;
            return Ok((spilled.events_beside, false));
        }
        let last_seq = if seq_used { seq } else { Seq(seq.0 - 1) }.max(base_seq);
        let cells: usize = records.iter().map(|p| p.cells_changed).sum();
        if cells > TRANSACTION_CELLS_MAX && !restoring {
            return Err(WriteError::Limit {
                what: "cells changed in one transaction",
                got: cells,
                max: TRANSACTION_CELLS_MAX,
            }
            .into());
        }
        batch.write(&inner.conn)?;
        let mut events = spilled.events_beside;
        events.extend(spilled.events);
        let now_ms = db.now_ms();
        let (conn, mut tables, record_cache) = Tables::split(&mut *inner);
        let mut w = RecordWriter::new(conn);
        for p in records.iter_mut().filter(|p| p.changed) {
            let wrote = match &p.flushed {
                Flushed::No => {
                    let stored = p.before.as_ref().map(Stored::Row);
                    w.write(conn, &mut tables, &mut scratch, p, stored, now_ms)?;
                    true
                }
                Flushed::Dropped => false,
                Flushed::Reloaded(written) if *written == p.state => false,
                Flushed::Reloaded(written) => {
                    let stored = Some(Stored::State(written));
                    w.write(conn, &mut tables, &mut scratch, p, stored, now_ms)?;
                    true
                }
            };
            if watched {
                let before_wanted = filtered.contains(&p.collection);
                events.extend(commit_event(conn, &tables, p, before_wanted)?);
            }
            // The transaction is done with the state: the record cache keeps it.
            if wrote {
                scratch.keep_state(p);
            }
        }
        w.finish(conn, &mut scratch, record_cache)?;
        // A link outlives the cells of its commit: a commit whose cells were all overwritten
        // still spread its effects (e.g. a counter's running total) into its overwriters,
        // which must then travel together. Old links are pruned by GC once every peer is past
        // them. One row per `s`, holding the largest `t`: many records of one transaction
        // usually share their links, so each is written once.
        let mut links: BTreeMap<Seq, Seq> = BTreeMap::new();
        let changed_links = records.iter().filter(|p| p.changed).flat_map(|p| &p.links);
        for (s, t) in spilled.links.iter().chain(changed_links) {
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
        // `data_version` stays as `begin_write` read it: this connection's own commits do
        // not move it. The feed head is now known without a read.
        inner.commit()?;
        inner.head_cache = Some((inner.feed_state(), last_seq));
        inner
            .committed_head
            .fetch_max(last_seq.0, std::sync::atomic::Ordering::Release);
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

/// The watch event of a record [`Tx::commit`] wrote (or wrote earlier, see [`Flushed`]).
/// `before_wanted`: a filtered watch of the collection needs an update's fields before it
/// (whether the record entered or left its view).
fn commit_event(
    conn: &Connection,
    tables: &Tables<'_>,
    p: &Pending,
    before_wanted: bool,
) -> Result<Option<Event>> {
    if p.spilled {
        // Its event up to the spill was taken then; only a change since counts.
        return Ok(match &p.flushed {
            Flushed::Reloaded(written) if *written != p.state => {
                let before = Some(Stored::State(written));
                event(
                    p,
                    &p.state,
                    before,
                    tables.nodes,
                    tables.fields,
                    before_wanted,
                )
            }
            _ => None,
        });
    }
    // A record written early and not touched since: its state is the stored row.
    let read;
    let state = if matches!(p.flushed, Flushed::Dropped) {
        read = read_state(conn, tables.nodes, tables.fields, p)?;
        &read
    } else {
        &p.state
    };
    let before = p.before.as_ref().map(Stored::Row);
    Ok(event(
        p,
        state,
        before,
        tables.nodes,
        tables.fields,
        before_wanted,
    ))
}

/// The watch event of a record the transaction changed to `state`, from how it was before;
/// `None` when it was and stays deleted or absent.
fn event(
    p: &Pending,
    state: &RecordState,
    before: Option<Stored<'_>>,
    nodes: &NodeTable,
    field_names: &FieldTable,
    before_wanted: bool,
) -> Option<Event> {
    let after_live = state.is_live();
    let kind = match (before.is_some_and(Stored::is_live), after_live) {
        (false, true) => EventKind::Inserted,
        (true, true) => EventKind::Updated,
        (true, false) => EventKind::Deleted,
        (false, false) => return None,
    };
    let rev = p.before.as_ref().map_or(0, |b| b.rev) + 1;
    let before_fields = match (kind, before) {
        (EventKind::Updated, Some(b)) if before_wanted => {
            Some(std::sync::Arc::new(b.fields(nodes, field_names)))
        }
        _ => None,
    };
    let fields = if after_live {
        state.fields()
    } else {
        // A delete: the event carries the fields it removed.
        before.map_or_else(BTreeMap::new, |b| b.fields(nodes, field_names))
    };
    Some(Event {
        kind,
        before: before_fields,
        seq: state.max_seq(),
        record: Record {
            collection: p.collection.clone(),
            id: p.id,
            rev,
            fields,
        },
    })
}

/// The parts of [`Inner`] that writing a record reads or extends, borrowed apart from the
/// connection that [`RecordWriter`]'s statements borrow.
struct Tables<'a> {
    nodes: &'a mut NodeTable,
    fields: &'a mut FieldTable,
    indexes: &'a FastMap<i64, BTreeSet<String>>,
    policies: &'a FastMap<i64, CollectionPolicy>,
    /// [`Inner::conflicts_opened`].
    conflicts_opened: &'a mut u64,
}

impl<'a> Tables<'a> {
    /// Borrow `inner` apart for writing records: the connection, the tables, the record
    /// cache.
    fn split(inner: &'a mut Inner) -> (&'a Connection, Tables<'a>, &'a mut RecordCache) {
        let Inner {
            conn,
            nodes,
            fields,
            indexes,
            policies,
            record_cache,
            conflicts_opened,
            ..
        } = inner;
        let tables = Tables {
            nodes,
            fields,
            indexes,
            policies,
            conflicts_opened,
        };
        (conn, tables, record_cache)
    }
}

/// New records per multi-row INSERT: one statement run instead of this many (a third less
/// SQLite time per row in a bulk insert), and the batch's encoded rows stay small.
const INSERT_BATCH_RECORDS: usize = 32;

/// New records of collections without indexes, encoded at insert and written
/// [`INSERT_BATCH_RECORDS`] at a time (the rest at commit, or before the transaction reads
/// one of them back).
#[derive(Debug, Default)]
pub(crate) struct InsertBatch {
    /// (collection, id, seq of all its cells, end of its body in `bodies`, live, source)
    rows: Vec<(i64, RecordId, Seq, usize, bool, u64)>,
    bodies: Vec<u8>,
    /// The body being encoded.
    body: Vec<u8>,
}

impl InsertBatch {
    /// Write the queued rows: each record's row (rev 1) and its one feed row. Plain
    /// INSERTs: the ids are new and the seq is this transaction's, so no row can be in the
    /// way (one would be a broken invariant, reported as a constraint error).
    fn write(&mut self, conn: &Connection) -> Result<()> {
        const RECORDS: MultiInsert = MultiInsert {
            head: "INSERT INTO records (coll, id, rev, seq, live, body) VALUES",
            row: "(?, ?, 1, ?, ?, ?)",
            width: 5,
        };
        const FEED: MultiInsert = MultiInsert {
            head: "INSERT INTO feed (seq, coll, id, src) VALUES",
            row: "(?, ?, ?, ?)",
            width: 4,
        };
        let mut start = 0;
        let full = self.rows.len() / INSERT_BATCH_RECORDS * INSERT_BATCH_RECORDS;
        let (whole, rest) = self.rows.split_at(full);
        // Full batches in one statement each; the remainder row by row, so that the statement
        // cache holds two shapes, not one per remainder size.
        let chunks = whole.chunks(INSERT_BATCH_RECORDS).chain(rest.chunks(1));
        for chunk in chunks {
            let n = chunk.len();
            let mut rec = conn.prepare_cached(&RECORDS.sql(n))?;
            let mut feed = conn.prepare_cached(&FEED.sql(n))?;
            for (k, (coll, id, seq, end, live, src)) in chunk.iter().enumerate() {
                rec.raw_bind_parameter(RECORDS.width * k + 1, coll)?;
                rec.raw_bind_parameter(RECORDS.width * k + 2, &id.0[..])?;
                rec.raw_bind_parameter(RECORDS.width * k + 3, seq.0)?;
                rec.raw_bind_parameter(RECORDS.width * k + 4, live)?;
                rec.raw_bind_parameter(RECORDS.width * k + 5, &self.bodies[start..*end])?;
                feed.raw_bind_parameter(FEED.width * k + 1, seq.0)?;
                feed.raw_bind_parameter(FEED.width * k + 2, coll)?;
                feed.raw_bind_parameter(FEED.width * k + 3, &id.0[..])?;
                feed.raw_bind_parameter(FEED.width * k + 4, src)?;
                start = *end;
            }
            rec.raw_execute()?;
            feed.raw_execute()?;
        }
        self.rows.clear();
        self.bodies.clear();
        Ok(())
    }
}

/// Buffers that encoding a record needs, kept by the transaction so that a bulk write
/// allocates them once.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    body: Vec<u8>,
    versions: Vec<Version>,
    field_memo: body::FieldMemo,
    old_seqs: Vec<Seq>,
    new_seqs: Vec<Seq>,
    /// Rows [`RecordWriter::write`] wrote, for the record cache once the writer is done.
    written: Vec<Written>,
}

/// A row [`RecordWriter::write`] wrote.
#[derive(Debug)]
struct Written {
    coll: i64,
    id: RecordId,
    /// `None`: the row's `hist` is not known here (the cache forgets the record).
    row: Option<CachedRow>,
    /// The record as encoded into the row, when the caller gave it up
    /// ([`Scratch::keep_state`]).
    state: Option<RecordState>,
}

impl Scratch {
    /// Hand the rows written so far to the record cache (applied if the transaction
    /// commits).
    fn stage_written(&mut self, cache: &mut RecordCache) {
        for w in self.written.drain(..) {
            match w.row {
                Some(row) => cache.stage(w.coll, w.id, row, w.state),
                None => cache.forget(w.coll, w.id),
            }
        }
    }

    /// Give the record cache the state `p` was just written with (it must be the record of
    /// the last [`RecordWriter::write`]), so that its next load need not decode the row.
    fn keep_state(&mut self, p: &mut Pending) {
        if let Some(w) = self.written.last_mut() {
            if (w.coll, w.id) == (p.coll, p.id) && w.row.is_some() {
                w.state = Some(std::mem::take(&mut p.state));
            }
        }
    }
}

/// [`RecordWriter`]'s statements.
const INSERT_RECORD: &str = "INSERT INTO records (coll, id, rev, seq, live, body, hist)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// `hist` moves only when the write added history entries (?7 not NULL).
const UPDATE_RECORD: &str = "UPDATE records SET rev = ?3, seq = ?4, live = ?5, body = ?6,
     hist = coalesce(?7, hist) WHERE coll = ?1 AND id = ?2";
const DELETE_FEED: &str = "DELETE FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3";

/// Writes changed records: each statement is taken from the statement cache once per
/// commit, when a row first needs it, instead of for each row. Not before: a one-record
/// commit uses two or three of them (an update: the row's UPDATE, then in `finish` a feed
/// row and a history entry), and taking one out of the cache and handing it back costs a
/// lookup, a reset and an LRU insert whether it ran or not.
struct RecordWriter<'c> {
    conn: &'c Connection,
    insert_record: Option<rusqlite::CachedStatement<'c>>,
    update_record: Option<rusqlite::CachedStatement<'c>>,
    delete_feed: Option<rusqlite::CachedStatement<'c>>,
    /// Feed rows to insert, written by [`RecordWriter::finish`].
    feed_rows: Vec<(u64, i64, RecordId, u64)>,
    /// History entries to insert, written by [`RecordWriter::finish`]; their `hid`s are
    /// given here (the next after the table's largest, as SQLite would).
    history_rows: Vec<HistoryRow>,
    /// The history rows' encoded keys and values, one buffer for all (not three vectors a
    /// row).
    history_bytes: Vec<u8>,
    /// The `hid` the next entry gets (`None`: not looked up yet).
    next_hid: Option<i64>,
}

/// One `history` row waiting in a [`RecordWriter`].
struct HistoryRow {
    hid: i64,
    coll: i64,
    id: RecordId,
    /// The encoded key and values, as ranges of [`RecordWriter::history_bytes`].
    cell: Range<usize>,
    old: Option<Range<usize>>,
    old_hlc: Option<i64>,
    old_node: Option<i64>,
    new: Option<Range<usize>>,
    hlc: i64,
    node: i64,
    seq: i64,
    recorded_ms: i64,
    prev: Option<i64>,
    old_seq: Option<i64>,
    /// The replaced cell's `prev` (format 9): `old_hlc` minus its HLC, and its writer when
    /// not `old_node`.
    old_prev_age: Option<i64>,
    old_prev_node: Option<i64>,
    /// The replaced cell's `seen` list (format 11), as a range of
    /// [`RecordWriter::history_bytes`]: see [`encode_old_seen`].
    old_seen: Option<Range<usize>>,
}

/// Rows per multi-row INSERT of history entries and feed rows (see
/// [`INSERT_BATCH_RECORDS`]).
const WRITER_BATCH_ROWS: usize = 32;

/// An INSERT that takes several rows: `head`, then one `row` of `width` parameters per row.
struct MultiInsert {
    head: &'static str,
    row: &'static str,
    width: usize,
}

impl MultiInsert {
    /// The statement for `n` rows.
    fn sql(&self, n: usize) -> String {
        let mut s = String::from(self.head);
        for k in 0..n {
            s.push_str(if k == 0 { " " } else { ", " });
            s.push_str(self.row);
        }
        s
    }
}

const FEED_INSERT: MultiInsert = MultiInsert {
    head: "INSERT OR REPLACE INTO feed (seq, coll, id, src) VALUES",
    row: "(?, ?, ?, ?)",
    width: 4,
};

const HISTORY_INSERT: MultiInsert = MultiInsert {
    head: "INSERT INTO history (hid, coll, id, cell, old, old_hlc, old_node, new, hlc, node, seq, recorded_ms, prev, old_seq, old_prev_age, old_prev_node, old_seen) VALUES",
    row: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    width: 17,
};

/// Insert `rows`, [`WRITER_BATCH_ROWS`] to a statement (one statement run instead of that
/// many), the rest one by one through a one-row statement (so the statement cache holds two
/// shapes, not one per remainder size). `bind(stmt, at, row)` binds a row's values from
/// parameter `at + 1` on.
fn insert_rows<T>(
    conn: &Connection,
    insert: MultiInsert,
    rows: &[T],
    bind: impl Fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> Result<()> {
    let full = rows.len() / WRITER_BATCH_ROWS * WRITER_BATCH_ROWS;
    let (whole, rest) = rows.split_at(full);
    if !whole.is_empty() {
        let mut stmt = conn.prepare_cached(&insert.sql(WRITER_BATCH_ROWS))?;
        for chunk in whole.chunks(WRITER_BATCH_ROWS) {
            for (k, row) in chunk.iter().enumerate() {
                bind(&mut stmt, insert.width * k, row)?;
            }
            stmt.raw_execute()?;
        }
    }
    if !rest.is_empty() {
        let mut single = conn.prepare_cached(&insert.sql(1))?;
        for row in rest {
            bind(&mut single, 0, row)?;
            single.raw_execute()?;
        }
    }
    Ok(())
}

impl<'c> RecordWriter<'c> {
    fn new(conn: &'c Connection) -> RecordWriter<'c> {
        RecordWriter {
            conn,
            insert_record: None,
            update_record: None,
            delete_feed: None,
            feed_rows: Vec::new(),
            history_rows: Vec::new(),
            history_bytes: Vec::new(),
            next_hid: None,
        }
    }

    /// The cached statement in `slot`, taken from the connection's cache on first use.
    fn stmt<'s>(
        conn: &'c Connection,
        slot: &'s mut Option<rusqlite::CachedStatement<'c>>,
        sql: &str,
    ) -> Result<&'s mut rusqlite::CachedStatement<'c>> {
        if slot.is_none() {
            *slot = Some(conn.prepare_cached(sql)?);
        }
        Ok(slot.as_mut().expect("prepared above"))
    }

    /// Write the buffered feed rows and history entries (see [`insert_rows`]), and stage the
    /// written rows for the record cache. Every writer must finish before anything reads
    /// those tables in its transaction.
    fn finish(
        self,
        conn: &Connection,
        scratch: &mut Scratch,
        cache: &mut RecordCache,
    ) -> Result<()> {
        scratch.stage_written(cache);
        insert_rows(
            conn,
            FEED_INSERT,
            &self.feed_rows,
            |stmt, at, (seq, coll, id, src)| {
                stmt.raw_bind_parameter(at + 1, seq)?;
                stmt.raw_bind_parameter(at + 2, coll)?;
                stmt.raw_bind_parameter(at + 3, &id.0[..])?;
                stmt.raw_bind_parameter(at + 4, src)
            },
        )?;
        insert_rows(conn, HISTORY_INSERT, &self.history_rows, |stmt, at, r| {
            bind_history(stmt, at, r, &self.history_bytes)
        })
    }

    /// Store one changed record: its row, its feed entries, index entries, history,
    /// conflicts. `stored` is the record as its row holds it now (`None`: no row); `conn` is
    /// the connection the statements were prepared on.
    fn write(
        &mut self,
        conn: &Connection,
        t: &mut Tables<'_>,
        scratch: &mut Scratch,
        p: &Pending,
        stored: Option<Stored<'_>>,
        now_ms: u64,
    ) -> Result<()> {
        let row_seq = p.state.max_seq();
        body::encode_into(
            &mut scratch.body,
            &mut scratch.versions,
            &mut scratch.field_memo,
            &p.state,
            row_seq,
            t.nodes,
            t.fields,
        );
        let bytes = &scratch.body;
        // Only a write made here is refused, and only for growing the record past the limit.
        // Merges are taken at any size: every replica must accept the same merged state, or
        // copies diverge, and a peer's unit refused once is refused on every retry (sync
        // stops for good). Concurrent writes, each under the limit, can merge to a record
        // over it; writes here that keep or shrink such a record (an unset, a value replaced
        // by one no larger) must pass, with the bookkeeping their cells add.
        let size_allowed = match stored {
            Some(Stored::Row(b)) => b.body.len() + p.cells_changed * CELL_BOOKKEEPING_BYTES_MAX,
            _ => 0,
        };
        if p.written_here && bytes.len() > RECORD_BYTES_MAX && bytes.len() > size_allowed {
            return Err(WriteError::Limit {
                what: "encoded record size",
                got: bytes.len(),
                max: RECORD_BYTES_MAX,
            }
            .into());
        }
        let rev = p.before.as_ref().map_or(0, |b| b.rev) + 1;
        let id = &p.id.0[..];
        let live = p.state.is_live();
        // History first: its entries chain from the record's current head, and the row
        // written next points at the newest of them.
        let hist = if p.history.is_empty() {
            None
        } else {
            // The chain head: as loaded, unless the record was written earlier in this
            // transaction (a spill, an early insert), which may have moved it.
            let head = match p.flushed {
                Flushed::No => p.hist,
                _ => conn
                    .prepare_cached("SELECT hist FROM records WHERE coll = ?1 AND id = ?2")?
                    .query_row(params![p.coll, id], |r| r.get(0))
                    .optional()?
                    .flatten(),
            };
            self.write_history(conn, t, p, head, row_seq, now_ms)?
        };
        if stored.is_none() {
            // No row has this id (the transaction holds the write lock since it read that):
            // a plain INSERT, cheaper than a REPLACE.
            Self::stmt(self.conn, &mut self.insert_record, INSERT_RECORD)?
                .execute(params![p.coll, id, rev, row_seq.0, live, bytes, hist])?;
        } else {
            // A stored record is updated in place (REPLACE would delete and insert the row).
            let updated = Self::stmt(self.conn, &mut self.update_record, UPDATE_RECORD)?
                .execute(params![p.coll, id, rev, row_seq.0, live, bytes, hist])?
                == 1;
            if !updated {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO records (coll, id, rev, seq, live, body, hist)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![p.coll, id, rev, row_seq.0, live, bytes, hist])?;
            }
        }

        // What the row holds now, for the record cache: `hist` kept its value where ?7 was
        // NULL, which is known when the row was read in this transaction and not since.
        let row_hist = match (hist, stored, &p.flushed) {
            (Some(h), _, _) => Some(Some(h)),
            (None, None, _) => Some(None),
            (None, Some(_), Flushed::No) => Some(p.hist),
            (None, Some(_), _) => None,
        };
        let cached = row_hist.map(|hist| CachedRow {
            rev,
            seq: row_seq.0,
            body: bytes.clone(),
            hist,
        });
        scratch.written.push(Written {
            coll: p.coll,
            id: p.id,
            row: cached,
            state: None,
        });

        // The feed holds one row per (seq, record) that still has cells at that seq.
        match stored {
            Some(s) => s.seqs(&mut scratch.old_seqs),
            None => scratch.old_seqs.clear(),
        }
        Stored::State(&p.state).seqs(&mut scratch.new_seqs);
        let (old, new) = (&scratch.old_seqs, &scratch.new_seqs);
        for s in new.iter().filter(|s| !old.contains(s)) {
            self.feed_rows.push((s.0, p.coll, p.id, p.src));
        }
        for s in old.iter().filter(|s| !new.contains(s)) {
            Self::stmt(self.conn, &mut self.delete_feed, DELETE_FEED)?
                .execute(params![s.0, p.coll, id])?;
        }
        write_derived(conn, t, p, stored, row_seq)
    }
}

/// A record's state as its row holds it (for a record written early in the transaction).
fn read_state(
    conn: &Connection,
    nodes: &NodeTable,
    fields: &FieldTable,
    p: &Pending,
) -> Result<RecordState> {
    let (seq, bytes): (u64, Vec<u8>) = conn
        .prepare_cached("SELECT seq, body FROM records WHERE coll = ?1 AND id = ?2")?
        .query_row(params![p.coll, &p.id.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(body::decode(&bytes, Seq(seq), nodes, fields)?)
}

/// Bind one history row to the 16 parameters after `at` (0-based).
fn bind_history(
    stmt: &mut rusqlite::Statement<'_>,
    at: usize,
    r: &HistoryRow,
    bytes: &[u8],
) -> rusqlite::Result<()> {
    let part = |range: &Option<Range<usize>>| range.clone().map(|x| &bytes[x]);
    stmt.raw_bind_parameter(at + 1, r.hid)?;
    stmt.raw_bind_parameter(at + 2, r.coll)?;
    stmt.raw_bind_parameter(at + 3, &r.id.0[..])?;
    stmt.raw_bind_parameter(at + 4, &bytes[r.cell.clone()])?;
    stmt.raw_bind_parameter(at + 5, part(&r.old))?;
    stmt.raw_bind_parameter(at + 6, r.old_hlc)?;
    stmt.raw_bind_parameter(at + 7, r.old_node)?;
    stmt.raw_bind_parameter(at + 8, part(&r.new))?;
    stmt.raw_bind_parameter(at + 9, r.hlc)?;
    stmt.raw_bind_parameter(at + 10, r.node)?;
    stmt.raw_bind_parameter(at + 11, r.seq)?;
    stmt.raw_bind_parameter(at + 12, r.recorded_ms)?;
    stmt.raw_bind_parameter(at + 13, r.prev)?;
    stmt.raw_bind_parameter(at + 14, r.old_seq)?;
    stmt.raw_bind_parameter(at + 15, r.old_prev_age)?;
    stmt.raw_bind_parameter(at + 16, r.old_prev_node)?;
    stmt.raw_bind_parameter(at + 17, part(&r.old_seen))
}

/// A replaced reset cell's `seen` list as the history keeps it (format 11): the entries but
/// its prev's ([`Cell::seen_beyond_prev`]), each as `zigzag(cell hlc − entry hlc)` and the
/// writer's node index, as varints. `None` (NULL) for a cell without a list; an empty blob
/// is a list holding only the prev.
fn encode_old_seen(out: &mut Vec<u8>, c: &Cell, nodes: &mut NodeTable) -> Option<Range<usize>> {
    if c.prev.is_none() || c.seen.is_empty() {
        return None;
    }
    let start = out.len();
    for v in c.seen_beyond_prev() {
        crate::codec::varint::write_u64(
            out,
            crate::codec::varint::zigzag(c.version.hlc.0.wrapping_sub(v.hlc.0) as i64),
        );
        crate::codec::varint::write_u64(out, nodes.index(&v.node));
    }
    Some(start..out.len())
}

impl RecordWriter<'_> {
    /// Queue the record's history entries, each chained to the one before it (the first to
    /// `head`, the record's current `records.hist`). Returns the newest entry's `hid`, which
    /// the record's row must then hold (`None`: no entry was written).
    fn write_history(
        &mut self,
        conn: &Connection,
        t: &mut Tables<'_>,
        p: &Pending,
        head: Option<i64>,
        row_seq: Seq,
        now_ms: u64,
    ) -> Result<Option<i64>> {
        let mut next = match self.next_hid {
            Some(h) => h,
            None => conn
                .prepare_cached("SELECT coalesce(max(hid), 0) + 1 FROM history")?
                .query_row([], |r| r.get(0))?,
        };
        let mut prev = head;
        for (key, old, new, version) in &p.history {
            // (Creations, with no old cell, never get here: their value and version are in
            // the record body until overwritten, and then in that change's `old`;
            // `Database::history` puts them back into the listing.)
            let node = t.nodes.index(&version.node);
            let old_node = old.as_ref().map(|c| t.nodes.index(&c.version.node) as i64);
            let old_prev = old.as_ref().and_then(|c| c.prev.map(|p| (c.version, p)));
            let old_prev_age = old_prev.map(|(v, p)| (v.hlc.0 as i64).wrapping_sub(p.hlc.0 as i64));
            let old_prev_node = old_prev
                .filter(|(v, p)| v.node != p.node)
                .map(|(_, p)| t.nodes.index(&p.node) as i64);
            let bytes = &mut self.history_bytes;
            let start = bytes.len();
            encode_key(bytes, key);
            let cell = start..bytes.len();
            let mut value = |c: &Cell| {
                let start = bytes.len();
                encode_value(bytes, &c.value);
                start..bytes.len()
            };
            let old_value = old.as_ref().map(&mut value);
            let new_value = new.as_ref().map(&mut value);
            let old_seen = old
                .as_ref()
                .and_then(|c| encode_old_seen(bytes, c, &mut *t.nodes));
            self.history_rows.push(HistoryRow {
                hid: next,
                coll: p.coll,
                id: p.id,
                cell,
                old: old_value,
                old_hlc: old.as_ref().map(|c| c.version.hlc.0 as i64),
                old_node,
                new: new_value,
                hlc: version.hlc.0 as i64,
                node: node as i64,
                seq: row_seq.0 as i64,
                recorded_ms: now_ms as i64,
                prev,
                old_seq: old.as_ref().map(|c| c.seq.0 as i64),
                old_prev_age,
                old_prev_node,
                old_seen,
            });
            prev = Some(next);
            next += 1;
        }
        self.next_hid = Some(next);
        Ok(if p.history.is_empty() { None } else { prev })
    }
}

/// The rows a changed record implies besides its own, its feed entries and its history:
/// index entries, conflicts.
fn write_derived(
    conn: &Connection,
    t: &mut Tables<'_>,
    p: &Pending,
    stored: Option<Stored<'_>>,
    row_seq: Seq,
) -> Result<()> {
    if let Some(fields) = t.indexes.get(&p.coll) {
        let before = stored
            .map(|s| s.fields(t.nodes, t.fields))
            .unwrap_or_default();
        let after = if p.state.is_live() {
            p.state.fields()
        } else {
            BTreeMap::new()
        };
        super::index::update_entries(conn, p.coll, p.id, fields, &before, &after)?;
    }
    if p.conflicts.is_empty() {
        return Ok(());
    }
    let policy = t.policies.get(&p.coll);
    for (winner, loser) in &p.conflicts {
        // Two concurrent deletes: the record is deleted whichever wins, so there is nothing
        // to settle (it was listed as a conflict of null against null). The cells either
        // delete dropped are listed on their own.
        let both_deletes = loser.key == CellKey::Record
            && loser.value == CellValue::Absent
            && winner.value == CellValue::Absent;
        if both_deletes {
            continue;
        }
        let winner = shown_winner(&p.state, winner, loser);
        let open = insert_conflict(conn, t.nodes, policy, p.coll, p.id, &winner, loser, row_seq)?;
        *t.conflicts_opened += u64::from(open);
    }
    Ok(())
}

/// Store one conflict: `loser` lost to `winner` in record `id` of collection `coll` (at the
/// record's seq `row_seq`), resolved at once where the collection's policy resolves it
/// automatically. Returns whether it was stored open (the caller counts it in
/// [`Inner::conflicts_opened`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_conflict(
    conn: &Connection,
    nodes: &mut NodeTable,
    policy: Option<&CollectionPolicy>,
    coll: i64,
    id: RecordId,
    winner: &Cell,
    loser: &Cell,
    row_seq: Seq,
) -> Result<bool> {
    let manual = loser
        .key
        .field()
        .is_some_and(|f| policy.is_some_and(|p| p.manual_fields.contains(f)));
    let resolved = policy.is_some_and(|p| p.auto_resolve) && !manual;
    let wn = nodes.index(&winner.version.node);
    let ln = nodes.index(&loser.version.node);
    conn
        .prepare_cached(
            "INSERT INTO conflicts (coll, id, cell, winner, winner_hlc, winner_node, loser, loser_hlc, loser_node, seq, resolved)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            coll,
            &id.0[..],
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
    Ok(!resolved)
}

/// Whether `cell` is a record's insert (its `Record` cell, present): a whole record, which a
/// conflict shows as its fields, not as the marker.
fn is_live_record_cell(cell: &Cell) -> bool {
    cell.key == CellKey::Record && cell.value == CellValue::Present
}

/// The fields record `state` showed before the merge that stored its cell `at` and replaced
/// or dropped `overwritten`: the cells the merge left, but for the new one, and those it
/// took away.
fn fields_before(
    state: &RecordState,
    at: Option<usize>,
    overwritten: &[Overwritten],
) -> BTreeMap<String, Value> {
    let cells = state
        .cells()
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != at)
        .map(|(_, c)| c.clone())
        .chain(overwritten.iter().map(|o| o.cell.clone()))
        .collect();
    RecordState::from_cells(cells)
        .expect("the cells of one record before a merge have unique keys")
        .fields()
}

/// What a conflict shows as the winner over `loser`, in record `state` as the merge left
/// it. When the winner is an insert (the record's `Record` cell, present), not the marker
/// that cell holds: over the record's own cell (two inserts of one id), the record's fields
/// as a map; over a cell of a field it dropped, what the record now holds in that cell (the
/// winning insert's value of the field), or absent when the insert left it out. Any other
/// winner is shown as it is (a delete shows as absent, as the field conflicts it wins say).
pub(crate) fn shown_winner<'c>(
    state: &RecordState,
    winner: &'c Cell,
    loser: &Cell,
) -> std::borrow::Cow<'c, Cell> {
    use std::borrow::Cow;
    if !is_live_record_cell(winner) {
        return Cow::Borrowed(winner);
    }
    if loser.key == CellKey::Record {
        return Cow::Owned(Cell {
            value: CellValue::Value(Value::Map(state.fields())),
            ..winner.clone()
        });
    }
    // The insert dropped every older cell of the record: one there now is its own or newer.
    match state
        .cell(&loser.key)
        .filter(|c| c.version >= winner.version)
    {
        Some(now) => Cow::Owned(now.clone()),
        None => Cow::Owned(Cell {
            key: loser.key.clone(),
            value: CellValue::Absent,
            ..winner.clone()
        }),
    }
}

/// The received inserts among the cells that lost without being applied (as
/// [`Tx::take_ignored`] gives them), each with the fields it inserted: a conflict shows such
/// an insert (its `Record` cell, present) as that record, not as the marker its cell holds.
/// The fields come from the cells of the insert that lost with it (all of them: they are as
/// old as the insert).
pub(crate) struct IgnoredInserts(HashMap<(usize, Version), BTreeMap<String, Value>>);

impl IgnoredInserts {
    /// Gather them from `ignored`, in two passes over it (it may hold a whole transaction's
    /// cells), allocating nothing when no insert is among them.
    pub(crate) fn new(ignored: &[(usize, Cell, Cell)]) -> IgnoredInserts {
        let mut inserts: HashMap<_, BTreeMap<String, Value>> = ignored
            .iter()
            .filter(|(_, _, loser)| is_live_record_cell(loser))
            .map(|(i, _, loser)| ((*i, loser.version), BTreeMap::new()))
            .collect();
        if !inserts.is_empty() {
            for (i, _, c) in ignored {
                if let (CellKey::Field(f), CellValue::Value(v)) = (&c.key, &c.value) {
                    if let Some(fields) = inserts.get_mut(&(*i, c.version)) {
                        fields.insert(f.to_string(), v.clone());
                    }
                }
            }
        }
        IgnoredInserts(inserts)
    }

    /// What a conflict shows as `loser`, of record `i`: a received insert as the record it
    /// inserted, a map of its fields; any other loser as it is.
    pub(crate) fn shown_loser<'c>(&self, i: usize, loser: &'c Cell) -> std::borrow::Cow<'c, Cell> {
        match self.0.get(&(i, loser.version)) {
            Some(fields) if is_live_record_cell(loser) => std::borrow::Cow::Owned(Cell {
                value: CellValue::Value(Value::Map(fields.clone())),
                ..loser.clone()
            }),
            _ => std::borrow::Cow::Borrowed(loser),
        }
    }
}

/// Where a transaction's records are in `Tx::records`, by (collection, id).
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    /// Records tracked in increasing (id, collection) order, the order a bulk insert's
    /// UUIDv7 ids come in: appended and binary-searched, no hashing (the hash map was a
    /// tenth of a bulk insert's time).
    ordered: Vec<(RecordId, i64, usize)>,
    /// The others.
    map: HashMap<(i64, RecordId), usize, BuildHasherDefault<IdHasher>>,
}

impl Tracked {
    /// The index of a tracked record.
    pub(crate) fn get(&self, &(coll, id): &(i64, RecordId)) -> Option<usize> {
        if let Some(&i) = self.map.get(&(coll, id)) {
            return Some(i);
        }
        // A new id sorts after every tracked one: no search.
        if self.ordered.last().is_none_or(|l| (l.0, l.1) < (id, coll)) {
            return None;
        }
        let k = self
            .ordered
            .binary_search_by(|e| (e.0, e.1).cmp(&(id, coll)))
            .ok()?;
        Some(self.ordered[k].2)
    }

    /// Whether a record is tracked.
    pub(crate) fn contains_key(&self, key: &(i64, RecordId)) -> bool {
        self.get(key).is_some()
    }

    /// Track a record that [`Tracked::get`] does not find.
    fn insert(&mut self, (coll, id): (i64, RecordId), i: usize) {
        if self.ordered.last().is_none_or(|l| (l.0, l.1) < (id, coll)) {
            self.ordered.push((id, coll, i));
        } else {
            self.map.insert((coll, id), i);
        }
    }
}

/// Hasher of the transaction's `(collection, record id)` map. The keys are not chosen by an
/// attacker in a way that matters (a transaction's own records), and SipHash was a visible
/// share of a bulk insert: fold the words with a multiply-rotate instead (FxHash's mix).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

fn collect_fields<K: Into<String>, V: Into<Value>>(
    fields: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<(String, Value)>> {
    let fields = fields.into_iter();
    let mut out: Vec<(String, Value)> = Vec::with_capacity(fields.size_hint().0);
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
        name: crate::error::excerpt(name),
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
    if v.depth_up_to(VALUE_DEPTH_MAX) > VALUE_DEPTH_MAX {
        return Err(WriteError::ValueTooDeep {
            field: field.to_owned(),
            max: VALUE_DEPTH_MAX,
        });
    }
    let len = value::encoded_len(v);
    if len > VALUE_BYTES_MAX {
        return Err(WriteError::ValueTooLarge {
            field: field.to_owned(),
            bytes: len,
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// The local cell that `loser` (a received plain-field or record cell the merge ignored)
/// lost to, when that cell's writer had not seen `loser`: a conflict. `None` for a cell
/// ignored because it was already there, or overwritten by a write that saw it.
fn concurrent_winner<'s>(state: &'s RecordState, loser: &Cell) -> Option<&'s Cell> {
    let unseen = |w: &Cell| !w.has_seen(loser.version);
    // The merge checks the record's reset first: a field older than it is dead on arrival.
    if loser.key != CellKey::Record {
        if let Some(reset) = state.cell(&CellKey::Record) {
            if loser.version < reset.version {
                return unseen(reset).then_some(reset);
            }
        }
    }
    // Then, for a set element, its field's reset (a plain write of the field).
    if let CellKey::Element(f, _) = &loser.key {
        if let Some(reset) = state.cell(&CellKey::Field(f.clone())) {
            if loser.version < reset.version {
                return unseen(reset).then_some(reset);
            }
        }
    }
    let w = state.cell(&loser.key)?;
    // An element's add and remove conflict; two adds (or removes) agree.
    let differs = !matches!(loser.key, CellKey::Element(..)) || w.value != loser.value;
    (w.version > loser.version && differs && unseen(w)).then_some(w)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{NodeId, OpenOptions, Query};

    /// The same writes with a fixed clock and node: new records written early and in batches
    /// (nobody watches) must leave exactly what writing everything at commit leaves (a
    /// watcher keeps every record in memory until commit).
    fn run(
        watched: bool,
    ) -> (
        Vec<Option<Record>>,
        Vec<crate::store::feed::Change>,
        Vec<Record>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            wall_clock: Arc::new(|| 1_700_000_000_000),
            danger_node_id: Some(NodeId([7; 16])),
            ..OpenOptions::default()
        };
        let db = Database::open(dir.path().join("t.db"), opts).unwrap();
        db.create_index("indexed", "n").unwrap();
        let _watch = watched.then(|| db.watch("plain", None, None).unwrap());
        let id = |i: u8| RecordId([i; 16]);
        // More records than one batch holds, so some are written in a batch, some queued
        // at the time they are touched again, and the rest at commit.
        let n = (INSERT_BATCH_RECORDS * 2 + 5) as u8;
        db.transaction(|tx| {
            for i in 0..n {
                tx.insert_with_id(
                    "plain",
                    id(i),
                    [("n", Value::Int(i.into())), ("s", "x".into())],
                )?;
                tx.insert_with_id("indexed", id(i), [("n", Value::Int(i.into()))])?;
            }
            // Touch records already written (in a batch, and one by one for the indexed
            // collection) and ones still queued.
            for i in [0, 1, n - 1] {
                tx.update("plain", id(i), Patch::new().set("s", "y").unset("n"))?;
                tx.update("indexed", id(i), Patch::new().set("n", 1000))?;
            }
            assert_eq!(tx.get("plain", id(5))?.unwrap().rev, 1);
            assert!(tx.delete("plain", id(2))?);
            assert!(tx.delete("indexed", id(2))?);
            tx.increment("plain", id(3), "c", 4)?;
            // Read back but unchanged: nothing more to write.
            tx.get("plain", id(4))?;
            Ok(())
        })
        .unwrap();
        let records = (0..n)
            .flat_map(|i| {
                [
                    db.get("plain", id(i)).unwrap(),
                    db.get("indexed", id(i)).unwrap(),
                ]
            })
            .collect();
        let changes = db.changes_since(Seq(0), 100_000, None).unwrap().changes;
        let by_index = db
            .query("indexed", &Query::filter("n == 1000").unwrap())
            .unwrap();
        assert!(db.integrity_check().unwrap().problems.is_empty());
        (records, changes, by_index)
    }

    #[test]
    fn records_written_early_end_as_if_written_at_commit() {
        let early = run(false);
        let at_commit = run(true);
        assert_eq!(early.0, at_commit.0);
        assert_eq!(early.1, at_commit.1);
        assert_eq!(early.2, at_commit.2);
        let (records, _, by_index) = early;
        // Every record was created by this one transaction: rev 1, whatever else it did.
        assert!(records.iter().flatten().all(|r| r.rev == 1));
        assert_eq!(
            records.iter().flatten().count(),
            (INSERT_BATCH_RECORDS * 2 + 5) * 2 - 2
        );
        let r0 = records[0].as_ref().unwrap();
        assert_eq!(r0.fields.get("s"), Some(&Value::from("y")));
        assert_eq!(r0.fields.get("n"), None);
        assert_eq!(
            records[6].as_ref().unwrap().fields.get("c"),
            Some(&Value::Int(4))
        );
        assert_eq!(by_index.len(), 3);
    }

    #[test]
    fn a_watched_bulk_insert_reports_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("t.db"), OpenOptions::default()).unwrap();
        let watch = db.watch("bugs", None, Some(1000)).unwrap();
        db.transaction(|tx| {
            for i in 0..100 {
                tx.insert("bugs", [("i", Value::Int(i))])?;
            }
            Ok(())
        })
        .unwrap();
        let mut seen = 0;
        while watch.try_recv().is_some() {
            seen += 1;
        }
        assert_eq!(seen, 100);
    }
}
