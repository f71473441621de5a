//! Snapshots: a whole copy of the records, read in pages by a sender and staged, then applied
//! in one transaction, by a receiver.
//!
//! A peer that is new, or whose cursor predates what garbage collection kept, cannot catch up
//! from the change feed. It receives a snapshot instead:
//!
//! ```text
//! sender                                   receiver
//! snapshot_page(None)  ──► chunk 0 ──►     snapshot_begin(peer, snap_id, position)
//! snapshot_page(next)  ──► chunk 1 ──►     snapshot_stage_chunk(.., idx, last_key, chunk)
//!  ...                                      ... (staged rows survive restarts: resumable)
//!                      ──► end     ──►     snapshot_finish(.., chunks, scope, acked)
//!                                            one SQLite transaction: merge every record,
//!                                            evict what the snapshot lacks, cursor = position
//! ```
//!
//! The position is the sender's head when the first page was read. Later pages may hold
//! newer changes; that is harmless (merging is idempotent), and everything committed after
//! the position reaches the receiver through the live feed, which resumes from it.
//!
//! Pages are read one at a time, each in a read transaction of its own, while the sender
//! goes on committing: a transaction between two pages may touch a record an earlier page
//! read and one a later page reads. Each page therefore also reads again, whole, the records
//! before it that changed since the previous page ([`SnapshotPage::changed_before`]), and the
//! sender sends them with it: the pages so far then stand for the one state of the database
//! the last page was read from, so a receiver never holds one part of a transaction without
//! the rest. A receiver that holds records already (not a new, empty replica) stages the
//! chunks and applies them together at the end, in one transaction, for the same reason.
//!
//! Staging keeps the raw chunks in `snapshot_staging` and the progress in
//! `snapshot_progress` (see `schema.rs`), so a disconnect costs only the chunk in flight: the
//! receiver reports its [`SnapshotProgress`] and the sender continues after `last_key`.
//!
//! A snapshot that only adds (a new peer's bootstrap: nothing to evict) is not staged:
//! `snapshot_merge_chunk` merges each chunk as it arrives, in one transaction with its
//! progress row, and `snapshot_finish` then only moves the cursor. Receiver and sender work
//! at the same time instead of one after the other, and records appear as they arrive.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::feed::{Change, PeerDirection};
use super::history::PastVisibility;
use super::write::Tx;
use super::{body, validate_collection_name, Database, Inner};
use crate::crdt::{MergeOutcome, RecordState};
use crate::error::{ApplyError, Error, Result};
use crate::limits::{
    FEED_PAGE_CELLS_MAX, SNAPSHOT_CHUNKS_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_CELLS_MAX,
    SNAPSHOT_PAGE_BODY_BYTES_TARGET, SNAPSHOT_PAGE_RECORDS_SCANNED_MAX,
};
use crate::store::read::Record;
use crate::types::Seq;
use crate::watch::{Event, EventKind};
use crate::{NodeId, RecordId, Value};

/// Where a snapshot stands: records are read in order of collection name, then id bytes
/// (the derived order), and a key names the last record read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotKey {
    /// The collection's name.
    pub collection: String,
    /// The record.
    pub id: RecordId,
}

/// Chooses the records of a snapshot: `(collection, id, live fields, live)`, the fields
/// empty for a tombstone; true to include the record. A tombstone that `select` accepts is
/// then asked about again with each live state its history holds (`live` true), and left
/// out when none of them is accepted (see [`Database::past_visibility`]).
pub type SnapshotSelect<'a> =
    dyn FnMut(&str, RecordId, &BTreeMap<String, Value>, bool) -> bool + 'a;

/// One page of a snapshot (see [`Database::snapshot_page`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotPage {
    /// Every cell of each selected record; `seq` is the record's own (largest) seq.
    /// Tombstones are included: the receiver must learn of deletes too.
    pub changes: Vec<Change>,
    /// The sender's head (last feed seq) when this page was read, from the same read
    /// transaction. A snapshot's position is the one of its first page.
    pub position: Seq,
    /// Where the next page starts; `None` when every record has been read.
    pub next: Option<SnapshotKey>,
    /// Asked for with `changed_since` (the previous page's `position`): the records at or
    /// before `after`, which earlier pages read, that changed since, whole as they are now,
    /// in key order, chosen like the page's records. A sender sends them with the page, so
    /// that the pages so far stand for one state of the database, the one this page was
    /// read from: a transaction committed between two pages is then seen whole or not at all
    /// by a receiver of the snapshot (simulation seed 2400337: without them, a receiver held
    /// one record of a transaction as it was before it and the other as it was after).
    pub changed_before: Vec<Change>,
}

/// A snapshot being received from a peer, as staged so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// The sender's id of this snapshot.
    pub snap_id: u64,
    /// The sender's feed position the snapshot stands for.
    pub position: Seq,
    /// The index of the next chunk expected (= chunks staged so far).
    pub next_index: u32,
    /// The last record of the last staged chunk: the sender resumes after it.
    pub last_key: Option<SnapshotKey>,
    /// How far the sender had acknowledged our feed when the snapshot began (see
    /// [`Database::snapshot_begin`]).
    pub acked: Seq,
}

/// Which local records a snapshot speaks for. Records of other collections are never
/// removed by [`Database::snapshot_finish`], whatever the snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotScope {
    /// The collections the snapshot covers; `None`: all of them.
    pub collections: Option<Vec<String>>,
    /// Whether the snapshot also speaks for the cells of the records it holds: a local cell
    /// the sender had already received (at or below the snapshot's `acked`, or from the
    /// sender) and the snapshot's record lacks is dropped, because the sender let it go: a
    /// delete overwrote it and GC then collected the delete, or a write rule rejected it.
    /// Merging would keep it for good. Only right when the sender holds every field of
    /// what it received from us and sends every field it holds (no field excluded either
    /// way); the sync session sets it then.
    pub replace_seen_cells: bool,
}

/// Whether a peer's copy would hold a local record: (collection, id, local state). See
/// [`Database::snapshot_finish_within`].
pub type PeerHolds<'a> = dyn Fn(&str, RecordId, &RecordState) -> bool + 'a;

/// What [`Database::snapshot_finish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotApplied {
    /// Records in the snapshot (live and tombstones).
    pub records: u64,
    /// Cells in the snapshot.
    pub cells: u64,
    /// Cells that changed something here.
    pub cells_applied: u64,
    /// Local records of the scope that the snapshot lacked and that were removed (evicted:
    /// no tombstone, nothing sent).
    pub evicted: u64,
    /// Local records the snapshot lacked but that were kept, because they hold changes the
    /// peer has not seen yet (they reach it through the normal feed).
    pub kept_pending: u64,
    /// Local records the snapshot lacked but that were kept, because they lie outside what
    /// the peer holds (its view: see [`Database::snapshot_finish_within`]).
    pub kept_outside_view: u64,
    /// The peer's feed position this node has now received up to.
    pub position: Seq,
    /// This node's feed head as the call committed (set by the chunk merges): a receiver
    /// that finds its head moved past it by the next chunk knows something else committed
    /// in between.
    pub local_head: Seq,
}

impl Database {
    /// Read one page of a snapshot of every collection: the records after `after` (all from
    /// the start with `None`), in [`SnapshotKey`] order, for which `select(collection, id,
    /// live fields, live)` returns true (the fields are empty for a tombstone). A page holds
    /// at most `cells_max` cells (clamped to 1..=`FEED_PAGE_CELLS_MAX`) and about
    /// `SNAPSHOT_PAGE_BODY_BYTES_TARGET` bytes, except that a record is never split, so one
    /// larger record comes alone. A page also stops after `SNAPSHOT_PAGE_RECORDS_SCANNED_MAX`
    /// records examined, so a selective `select` may yield an empty page with `next` set.
    ///
    /// One read transaction per page. `select` runs while the database is locked: it must
    /// not call this database.
    ///
    /// With `changed_since`, the page also holds [`SnapshotPage::changed_before`].
    pub fn snapshot_page(
        &self,
        after: Option<&SnapshotKey>,
        changed_since: Option<Seq>,
        cells_max: usize,
        select: &mut SnapshotSelect<'_>,
    ) -> Result<SnapshotPage> {
        self.page_with(after, changed_since, cells_max, Select::Records(select))
    }

    /// [`Database::snapshot_page`] choosing by collection only (`select(collection)`), which
    /// spares working out every record's fields: what a peer whose view has no record filter
    /// gets.
    pub fn snapshot_page_of_collections(
        &self,
        after: Option<&SnapshotKey>,
        changed_since: Option<Seq>,
        cells_max: usize,
        select: &mut dyn FnMut(&str) -> bool,
    ) -> Result<SnapshotPage> {
        self.page_with(after, changed_since, cells_max, Select::Collections(select))
    }

    /// One page, in a read transaction of its own.
    fn page_with(
        &self,
        after: Option<&SnapshotKey>,
        changed_since: Option<Seq>,
        cells_max: usize,
        select: Select<'_, '_>,
    ) -> Result<SnapshotPage> {
        let cells_max = cells_max.clamp(1, FEED_PAGE_CELLS_MAX);
        // `lock`'s snapshot: every row of the page from one state of the file.
        let inner = self.lock()?;
        snapshot_page_in(&inner, after, changed_since, cells_max, select)
    }

    /// The snapshot being received from `peer`, if one is staged.
    pub fn snapshot_progress(&self, peer: NodeId) -> Result<Option<SnapshotProgress>> {
        let inner = self.lock()?;
        progress_in(&inner, peer)
    }

    /// Whether changes received from a peer other than `sender` committed here after
    /// `since` (feed rows past it from another source; local writes do not count). A
    /// bootstrap merged chunk by chunk from `sender` stages the rest once they did: see
    /// `Session` (`SnapIn::merging`).
    pub fn received_from_others_since(&self, since: Seq, sender: NodeId) -> Result<bool> {
        let inner = self.lock()?;
        let sender_src = inner.nodes.known(&sender).map_or(-1, |i| i as i64 + 1);
        let found = inner
            .conn
            .prepare_cached("SELECT 1 FROM feed WHERE seq > ?1 AND src <> 0 AND src <> ?2 LIMIT 1")?
            .query_row(params![since.0 as i64, sender_src], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    /// Start receiving snapshot `snap_id` of `peer`, standing for its feed at `position`.
    /// `acked` is how far `peer` has acknowledged our feed now, before it read the
    /// snapshot's first page: what it had of ours then, every page reflects. (Pass
    /// `Seq(0)` when that is not known, e.g. for a snapshot file written some time ago.)
    /// Any other snapshot staged from `peer` is discarded. Beginning the snapshot already in
    /// progress (same id and position) keeps what was staged, its `acked` included: that is
    /// a resume.
    pub fn snapshot_begin(
        &self,
        peer: NodeId,
        snap_id: u64,
        position: Seq,
        acked: Seq,
    ) -> Result<()> {
        // `write_tx` begins the write transaction and checks the file inside it.
        let mut inner = self.lock_bare()?;
        write_tx(&mut inner, |inner| {
            if let Some(p) = progress_in(inner, peer)? {
                if p.snap_id == snap_id && p.position == position {
                    return Ok(());
                }
            }
            discard(inner, peer)?;
            inner
                .conn
                .prepare_cached(
                    "INSERT INTO snapshot_progress (peer, snap_id, position, next_index, acked)
                     VALUES (?1, ?2, ?3, 0, ?4)",
                )?
                .execute(params![
                    &peer.0[..],
                    snap_id as i64,
                    position.0 as i64,
                    acked.0 as i64
                ])?;
            Ok(())
        })
    }

    /// Stage chunk `idx` of snapshot `snap_id` from `peer`; `last_key` is its last record.
    /// Repeating an already staged index changes nothing (a duplicate delivery); an index
    /// past the next expected one, or a snapshot that was not begun, is an error. The chunk
    /// is not decoded here (that happens once, in `snapshot_finish`); callers that want early
    /// detection verify it first (`sync::snapshot::verify_chunk`).
    pub fn snapshot_stage_chunk(
        &self,
        peer: NodeId,
        snap_id: u64,
        idx: u32,
        last_key: &SnapshotKey,
        chunk: &[u8],
    ) -> Result<()> {
        check_chunk_size(idx, chunk)?;
        // `write_tx` begins the write transaction and checks the file inside it.
        let mut inner = self.lock_bare()?;
        write_tx(&mut inner, |inner| {
            let p = expect_progress(inner, peer, snap_id)?;
            if !is_next_chunk(&p, idx)? {
                return Ok(());
            }
            // After chunks merged as they arrived, the rest may be staged (a receiver that
            // took other changes meanwhile: see `snapshot_merge_chunk`); not the other way.
            inner
                .conn
                .prepare_cached(
                    "INSERT INTO snapshot_staging (peer, snap_id, idx, data) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&peer.0[..], snap_id as i64, idx, chunk])?;
            advance_progress(inner, peer, idx, last_key)
        })
    }

    /// Merge chunk `idx` of snapshot `snap_id` from `peer` right away, in a transaction of
    /// its own, instead of staging it; `last_key` is its last record. For a snapshot that only
    /// adds (its finish has nothing to evict): a new peer's bootstrap. Merging is idempotent
    /// and the progress moves in the same transaction, so a restart resumes after the last
    /// merged chunk, and records show up as they arrive instead of all at the end; the
    /// receive cursor still moves only at [`Database::snapshot_finish`], which must then be
    /// given a scope of no collections.
    ///
    /// Once a chunk of a snapshot is staged, the rest must be too: merging after a staged
    /// chunk is an error (the finish applies the staged ones together). Staging after merged
    /// chunks is allowed: a receiver that takes changes from elsewhere during a bootstrap
    /// stages the rest, so that its records of a sender transaction the chunks put apart are
    /// not updated one chunk at a time next to those changes. A repeated index changes
    /// nothing.
    /// A chunk that does not decode, or holds invalid cells, is an `Apply(Invalid)` error and
    /// changes nothing.
    pub fn snapshot_merge_chunk(
        &self,
        peer: NodeId,
        snap_id: u64,
        idx: u32,
        last_key: &SnapshotKey,
        chunk: &[u8],
    ) -> Result<SnapshotApplied> {
        self.merge_chunk_now(peer, snap_id, idx, last_key, chunk, None)
    }

    /// [`Database::snapshot_merge_chunk`] from a sender that splits a record too large for
    /// one chunk across consecutive chunks (PROTOCOL.md §5.9); `held` carries such a record's
    /// cells from one call to the next, and starts as `None`. A chunk whose last record is
    /// not the one it names (`last_key`, which then names the record before it) ends inside
    /// that record: its cells are left in `held` rather than merged, and the call for the next
    /// chunk merges them with the rest of the record, so the record is merged whole, in one
    /// transaction, like one that came in one chunk. `held` lives as long as the session:
    /// should it end first, the sender resumes after `last_key`, before the record, and sends
    /// it again from its start.
    pub fn snapshot_merge_chunk_held(
        &self,
        peer: NodeId,
        snap_id: u64,
        (idx, last_key): (u32, &SnapshotKey),
        chunk: &[u8],
        held: &mut Option<Change>,
    ) -> Result<SnapshotApplied> {
        self.merge_chunk_now(peer, snap_id, idx, last_key, chunk, Some(held))
    }

    fn merge_chunk_now(
        &self,
        peer: NodeId,
        snap_id: u64,
        idx: u32,
        last_key: &SnapshotKey,
        chunk: &[u8],
        mut held: Option<&mut Option<Change>>,
    ) -> Result<SnapshotApplied> {
        self.check_snapshot_source(peer)?;
        check_chunk_size(idx, chunk)?;
        let mut applied = SnapshotApplied::default();
        let holding = held.is_some();
        let carried = held.as_mut().and_then(|h| h.take());
        let kept = self.transaction_bounded(|tx| {
            let p = expect_progress(tx.inner, peer, snap_id)?;
            applied.position = p.position;
            applied.local_head = tx.base_seq;
            if !is_next_chunk(&p, idx)? {
                return Ok(carried);
            }
            if any_staged(tx.inner, peer)? {
                return Err(Error::InvalidArgument(format!(
                    "snapshot {snap_id} has staged chunks; chunk {idx} cannot be merged on its \
                     own (abort it and start over)"
                )));
            }
            let mut changes = decode_staged(chunk, snap_id, idx)?;
            join_held(carried, &mut changes);
            let ends_inside = changes
                .last()
                .is_some_and(|c| c.collection != last_key.collection || c.id != last_key.id);
            let tail = if holding && ends_inside {
                changes.pop()
            } else {
                None
            };
            let src = tx.inner.nodes.index(&peer) + 1;
            merge_chunk(tx, changes, src, None, &mut applied)?;
            advance_progress(tx.inner, peer, idx, last_key)?;
            applied.local_head = if tx.seq_used { tx.seq } else { tx.base_seq };
            Ok(tail)
        })?;
        if let Some(h) = held {
            *h = kept;
        }
        Ok(applied)
    }

    /// Drop whatever snapshot is staged from `peer`.
    pub fn snapshot_abort(&self, peer: NodeId) -> Result<()> {
        // `write_tx` begins the write transaction and checks the file inside it.
        let mut inner = self.lock_bare()?;
        write_tx(&mut inner, |inner| discard(inner, peer))
    }

    /// Apply snapshot `snap_id` of `peer`, whose `chunks` must all be staged, except first
    /// ones merged as they arrived ([`Database::snapshot_merge_chunk`]; the scope must then
    /// hold no collection), in ONE SQLite transaction:
    ///
    /// 1. every record of every chunk is merged like a peer's changes (history, conflicts,
    ///    indexes and watch events as for `apply_changes`); each chunk is one local commit
    ///    (a record split across chunks, PROTOCOL.md §5.9, is joined and merged whole, in
    ///    one of them), and the chunk commits are linked (`feed_links`) so that a peer
    ///    replicating from here receives them as one unit, as they were applied: the chunks
    ///    cut the sender's transactions by key;
    ///    With `scope.replace_seen_cells`, a record's local cells that `peer` had seen (see
    ///    step 2) and its snapshot lacks are dropped first: `peer` let them go (also from
    ///    a record the snapshot lacks and step 2 keeps);
    /// 2. local records of the collections in `scope` that the snapshot lacks are evicted (no
    ///    tombstone, nothing sent), except those with changes `peer` has not seen: a feed row
    ///    past the `acked` given to [`Database::snapshot_begin`] (how far `peer` had
    ///    acknowledged our feed when the snapshot began) that did not come from `peer`.
    ///    This is how a replica that missed collected tombstones, or whose view changed,
    ///    converges. From a peer that holds only part of our records, use
    ///    [`Database::snapshot_finish_within`];
    /// 3. the `Received` cursor of `peer` becomes the snapshot's position, so the live feed
    ///    continues from there with no gap;
    /// 4. the staged rows are deleted.
    ///
    /// On error nothing changes, and the staged chunks stay (abort them to start over).
    /// Chunks are decoded with `sync::snapshot::decode_chunk` (like `apply_changes_checked`
    /// takes the sync layer's access control, the store knows the wire form of what it
    /// applies).
    pub fn snapshot_finish(
        &self,
        peer: NodeId,
        snap_id: u64,
        chunks: u32,
        scope: &SnapshotScope,
    ) -> Result<SnapshotApplied> {
        self.snapshot_finish_within(peer, snap_id, chunks, scope, None)
    }

    /// [`Database::snapshot_finish`] from a peer that may hold only part of our records (a
    /// partial replica: its view of our data). `peer_holds(collection, id, state)` says
    /// whether the peer's copy would hold a local record; step 2 evicts only records for
    /// which it says yes. The absence of any other record from the snapshot says nothing:
    /// the peer never had it. `None`: the peer holds everything in `scope`.
    pub fn snapshot_finish_within(
        &self,
        peer: NodeId,
        snap_id: u64,
        chunks: u32,
        scope: &SnapshotScope,
        peer_holds: Option<&PeerHolds<'_>>,
    ) -> Result<SnapshotApplied> {
        self.check_snapshot_source(peer)?;
        // The snapshot stores the received cursor with its data: a note is older.
        self.noted_cursors().forget(peer, PeerDirection::Received);
        let mut applied = SnapshotApplied::default();
        let watched = self.watchers.is_watched();
        self.transaction_bounded(|tx| {
            let progress = expect_progress(tx.inner, peer, snap_id)?;
            if progress.next_index != chunks {
                return Err(Error::InvalidArgument(format!(
                    "snapshot {snap_id} has {} chunks staged but {chunks} were sent; resume \
                     from the staged progress",
                    progress.next_index
                )));
            }
            applied.position = progress.position;
            let acked = progress.acked;
            let src = tx.inner.nodes.index(&peer) + 1;
            let seen = scope.replace_seen_cells.then_some(Seen { acked, src });
            // Chunks before the first staged one were merged as they arrived
            // (`snapshot_merge_chunk`); those from it on are applied here.
            let first_staged = first_staged(tx.inner, peer)?.unwrap_or(chunks);
            if first_staged > 0 {
                // Without the whole snapshot in this transaction nothing may be evicted on
                // its word.
                if scope.collections.as_ref().is_none_or(|c| !c.is_empty()) {
                    return Err(Error::InvalidArgument(format!(
                        "snapshot {snap_id} was merged chunk by chunk, so it cannot replace \
                         local records; abort it and start over with staged chunks"
                    )));
                }
            }
            // 1. Merge, one local commit per chunk. One chunk is decoded at a time. Each
            // chunk's last record waits for the next chunk, where it may go on (a sender
            // splits a record too large for one chunk: PROTOCOL.md §5.9), so that a record
            // is merged whole: merged piece by piece, the cells of its earlier pieces that
            // the sender had seen were taken for cells it let go (`drop_cells_let_go`).
            let mut carried: Option<Change> = None;
            let first_seq = tx.seq;
            for idx in first_staged..chunks {
                let data: Vec<u8> = tx
                    .inner
                    .conn
                    .prepare_cached(
                        "SELECT data FROM snapshot_staging WHERE peer = ?1 AND idx = ?2",
                    )?
                    .query_row(params![&peer.0[..], idx], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "snapshot {snap_id} chunk {idx} is not staged; abort and start over"
                        ))
                    })?;
                let mut changes = decode_staged(&data, snap_id, idx)?;
                drop(data);
                join_held(carried.take(), &mut changes);
                if idx + 1 < chunks {
                    carried = changes.pop();
                }
                if tx.seq_used {
                    tx.seq = Seq(tx.seq.0 + 1);
                    tx.seq_used = false;
                }
                merge_chunk(tx, changes, src, seen, &mut applied)?;
                // Write what the chunks so far changed out of memory: a snapshot of any size
                // applies with memory for a few chunks, still in this one transaction.
                if tx.unspilled() >= SNAPSHOT_SPILL_RECORDS {
                    tx.spill()?;
                }
            }
            // One commit per chunk, but the chunks hold the sender's transactions cut by key:
            // every chunk commit is delivered with the last, so that a peer replicating from
            // here gets the applied snapshot as one unit, as we applied it (simulation seed
            // 3302256: a transfer's debit and credit in two chunks reached the next node of a
            // chain in two units).
            super::feed::link_to_last(tx, first_seq)?;
            // 2. Evict what the snapshot lacks: the records the transaction does not track
            // (the snapshot's records are exactly the ones it tracks, spilled or not), so the
            // rows read here are the local copies as they were.
            let colls: Vec<(i64, String)> = match &scope.collections {
                None => tx
                    .inner
                    .collections
                    .iter()
                    .map(|(n, c)| (*c, n.clone()))
                    .collect(),
                Some(names) => names
                    .iter()
                    .filter_map(|n| tx.inner.collection_id(n).map(|c| (c, n.clone())))
                    .collect(),
            };
            let head = tx.base_seq;
            for (coll, name) in colls {
                // Ids first (small), then the bodies of the absent ones only.
                let mut absent: Vec<RecordId> = Vec::new();
                {
                    let mut stmt = tx
                        .inner
                        .conn
                        .prepare("SELECT id FROM records WHERE coll = ?1")?;
                    let mut rows = stmt.query([coll])?;
                    while let Some(row) = rows.next()? {
                        let id = super::evict::record_id(
                            row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?,
                        )?;
                        if !tx.pending.contains_key(&(coll, id)) {
                            absent.push(id);
                        }
                    }
                }
                for id in absent {
                    let (rev, row_seq, bytes): (u64, u64, Vec<u8>) = tx
                        .inner
                        .conn
                        .prepare_cached(
                            "SELECT rev, seq, body FROM records WHERE coll = ?1 AND id = ?2",
                        )?
                        .query_row(params![coll, &id.0[..]], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?;
                    let state =
                        body::decode(&bytes, Seq(row_seq), &tx.inner.nodes, &tx.inner.fields)?;
                    if peer_holds.is_some_and(|holds| !holds(&name, id, &state)) {
                        applied.kept_outside_view += 1;
                        continue;
                    }
                    if super::evict::has_unseen_changes(
                        tx.inner,
                        coll,
                        id,
                        &state,
                        acked,
                        Some(src),
                    )? {
                        applied.kept_pending += 1;
                        // Kept for changes the sender lacks, but the cells it had are let
                        // go as for a record the snapshot holds (with nothing of its own):
                        // the sender lets them go with a delete GC collected. Kept, they
                        // stayed here only, beside the changes it then received alone, and
                        // the two copies differed for good (the CLI: `peers --forget`, `gc`,
                        // and the peer back with an offline edit of a deleted record).
                        if let Some(seen) = seen {
                            let i = tx.load(&name, id, false)?.expect("stored");
                            drop_cells_let_go(tx, i, coll, &[], seen)?;
                        }
                        continue;
                    }
                    if watched && state.is_live() {
                        tx.publish_at_commit(Event {
                            kind: EventKind::Deleted,
                            before: None,
                            seq: head,
                            record: Record {
                                collection: name.clone(),
                                id,
                                rev,
                                fields: state.fields(),
                            },
                        });
                    }
                    super::evict::remove_record(tx.inner, coll, id, &state)?;
                    applied.evicted += 1;
                }
            }
            // 3. and 4.
            tx.inner.set_peer_cursor(
                peer,
                PeerDirection::Received,
                progress.position,
                tx.now_ms,
            )?;
            discard(tx.inner, peer)?;
            Ok(())
        })?;
        Ok(applied)
    }
}

impl Database {
    /// A snapshot is always another node's: merging our own records back would be a copied
    /// file talking to itself.
    fn check_snapshot_source(&self, peer: NodeId) -> Result<()> {
        if peer == self.node_id() {
            return Err(Error::InvalidArgument(
                "a snapshot cannot come from this database's own node id".into(),
            ));
        }
        Ok(())
    }
}

/// Records a snapshot's apply holds in memory before it writes them out (`Tx::spill`).
const SNAPSHOT_SPILL_RECORDS: usize = 20_000;

/// Decode a staged or just received chunk; a chunk that does not decode can never apply.
fn decode_staged(data: &[u8], snap_id: u64, idx: u32) -> Result<Vec<Change>> {
    crate::sync::snapshot::decode_chunk(data, SNAPSHOT_CHUNK_CELLS_MAX).map_err(|e| {
        Error::Apply(ApplyError::Invalid(format!(
            "snapshot {snap_id} chunk {idx}: {e}"
        )))
    })
}

/// Put `held`, the cells of a record that the chunk before ended with (or inside), back
/// before `changes`: joined with the first change if that is the same record (the record
/// goes on in this chunk; a snapshot resumed inside it sends it again from its start, so
/// cells may repeat, which merging ignores), else as a change of its own.
fn join_held(held: Option<Change>, changes: &mut Vec<Change>) {
    let Some(mut held) = held else {
        return;
    };
    match changes.first_mut() {
        Some(first) if first.collection == held.collection && first.id == held.id => {
            held.cells.append(&mut first.cells);
            first.cells = held.cells;
        }
        _ => changes.insert(0, held),
    }
}

/// Merge the records of one chunk from peer `src` (1 + its node index) into `tx`, all at the
/// transaction's current seq, adding to `applied`.
///
/// A record this database has no row for takes the bulk-insert path (its state is the merge
/// of its cells alone; no lookup, no copy kept). Which records are new is settled per
/// collection with one probe: a chunk holds a range of ids, in order, and when no stored row
/// falls in that range, every id of it is new unless this transaction already holds it.
/// What the sender of a snapshot had of ours when it began: cells at or below `acked`, and
/// those whose feed row came from it (`src`, its feed `src` number).
#[derive(Clone, Copy)]
struct Seen {
    acked: Seq,
    src: u64,
}

/// Merge one chunk's records. With `seen` (see [`SnapshotScope::replace_seen_cells`]), a
/// stored record first loses the cells the sender had seen and its snapshot record lacks.
fn merge_chunk(
    tx: &mut Tx<'_>,
    changes: Vec<Change>,
    src: u64,
    seen: Option<Seen>,
    applied: &mut SnapshotApplied,
) -> Result<()> {
    // (collection id, lowest id, highest id) of each collection the chunk touches.
    let mut ranges: Vec<(i64, RecordId, RecordId)> = Vec::new();
    for ch in &changes {
        validate_collection_name(&ch.collection).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let coll = tx.inner.collection_id_or_create(&ch.collection)?;
        match ranges.iter_mut().find(|r| r.0 == coll) {
            Some(r) => {
                r.1 = r.1.min(ch.id);
                r.2 = r.2.max(ch.id);
            }
            None => ranges.push((coll, ch.id, ch.id)),
        }
    }
    let mut fresh: Vec<i64> = Vec::new();
    for (coll, lo, hi) in ranges {
        let stored = tx
            .inner
            .conn
            .prepare_cached(
                "SELECT 1 FROM records WHERE coll = ?1 AND id >= ?2 AND id <= ?3 LIMIT 1",
            )?
            .query_row(params![coll, &lo.0[..], &hi.0[..]], |_| Ok(()))
            .optional()?
            .is_some();
        if !stored {
            fresh.push(coll);
        }
    }
    for ch in changes {
        let coll = tx
            .inner
            .collection_id(&ch.collection)
            .expect("created by the first pass");
        applied.records += 1;
        applied.cells += ch.cells.len() as u64;
        if fresh.contains(&coll) && !tx.tracks(coll, ch.id) {
            let mut cells = ch.cells;
            for c in &mut cells {
                super::feed::validate_cell(c).map_err(ApplyError::Invalid)?;
                tx.receive_cell(c)?;
            }
            let state = match RecordState::from_merged_cells(cells) {
                Ok(state) => {
                    applied.cells_applied += state.cells().len() as u64;
                    state
                }
                Err(cells) => {
                    // Not as a merged state holds them: merge one by one.
                    let mut state = RecordState::new();
                    for c in cells {
                        if matches!(state.merge(c), MergeOutcome::Applied { .. }) {
                            applied.cells_applied += 1;
                        }
                    }
                    state
                }
            };
            if !state.is_empty() {
                tx.insert_received(coll, &ch.collection, ch.id, state, src)?;
            }
            continue;
        }
        let i = tx.load(&ch.collection, ch.id, true)?.expect("created");
        if let Some(seen) = seen {
            drop_cells_let_go(tx, i, coll, &ch.cells, seen)?;
        }
        tx.records[i].src = src;
        for c in ch.cells {
            super::feed::validate_cell(&c).map_err(ApplyError::Invalid)?;
            if tx.merge_received(i, c)? {
                applied.cells_applied += 1;
            }
        }
        // `TRANSACTION_CELLS_MAX` bounds what one sender transaction may carry; a snapshot
        // is many chunks, each bounded on its own (cells, bytes, and `SNAPSHOT_CHUNKS_MAX`),
        // so its records do not count against it.
        tx.records[i].cells_changed = 0;
    }
    Ok(())
}

/// Drop the stored cells of pending record `i` that the snapshot's sender had seen and its
/// record (`incoming`) lacks: the sender let them go. Without this a replica back after its
/// peer collected a delete keeps the cells the delete overwrote beside the snapshot's
/// (simulation, known gap 6: the star's sleepy leaf). A cell whose key the snapshot holds
/// stays: merging settles it. A cell the sender has not seen stays: it reaches the sender
/// through the feed.
fn drop_cells_let_go(
    tx: &mut Tx<'_>,
    i: usize,
    coll: i64,
    incoming: &[crate::crdt::Cell],
    seen: Seen,
) -> Result<()> {
    let p = &tx.records[i];
    if p.state.is_empty() {
        return Ok(());
    }
    let id = p.id;
    // A set record may hold many elements: look keys up in a set, not a scan per cell.
    let held: std::collections::HashSet<&crate::crdt::CellKey> =
        incoming.iter().map(|x| &x.key).collect();
    let mut drop: Vec<usize> = Vec::new();
    for (k, c) in p.state.cells().iter().enumerate() {
        if held.contains(&c.key) {
            continue;
        }
        let from_sender = c.seq > seen.acked
            && super::evict::feed_src(tx.inner, c.seq, coll, id)? == Some(seen.src);
        if c.seq <= seen.acked || from_sender {
            drop.push(k);
        }
    }
    if drop.is_empty() {
        return Ok(());
    }
    let p = &mut tx.records[i];
    // `drop` is ascending: walk it alongside the cells.
    let mut drop = drop.into_iter().peekable();
    let kept: Vec<crate::crdt::Cell> = p
        .state
        .cells()
        .iter()
        .enumerate()
        .filter(|(k, _)| drop.next_if_eq(k).is_none())
        .map(|(_, c)| c.clone())
        .collect();
    p.state = RecordState::from_cells(kept)
        .map_err(|m| Error::Corrupted(crate::codec::DecodeError::Malformed(m)))?;
    p.changed = true;
    Ok(())
}

/// How [`snapshot_page_in`] chooses records.
enum Select<'s, 'a> {
    Records(&'s mut SnapshotSelect<'a>),
    Collections(&'s mut dyn FnMut(&str) -> bool),
}

/// The scan of [`Database::snapshot_page`], inside the caller's read transaction.
fn snapshot_page_in(
    inner: &Inner,
    after: Option<&SnapshotKey>,
    changed_since: Option<Seq>,
    cells_max: usize,
    mut select: Select<'_, '_>,
) -> Result<SnapshotPage> {
    let position = inner.clock_row()?.0;
    // In the same read transaction as the page: the records sent so far plus these stand
    // for the database as the page finds it.
    let changed_before = match (after, changed_since) {
        (Some(after), Some(since)) if since < position => {
            changed_before_in(inner, after, since, position, &mut select)?
        }
        _ => Vec::new(),
    };
    let mut names: Vec<(&str, i64)> = inner
        .collections
        .iter()
        .map(|(n, c)| (n.as_str(), *c))
        .filter(|(n, _)| after.is_none_or(|a| *n >= a.collection.as_str()))
        .collect();
    names.sort_unstable();
    let mut page = SnapshotPage {
        changes: Vec::new(),
        position,
        next: None,
        changed_before,
    };
    let (mut cells, mut bytes_total, mut scanned) = (0usize, 0usize, 0usize);
    let mut last: Option<SnapshotKey> = after.cloned();
    let mut stmt = inner.conn.prepare_cached(
        "SELECT id, seq, live, body FROM records WHERE coll = ?1 AND id > ?2 ORDER BY id",
    )?;
    for (name, coll) in names {
        if let Select::Collections(f) = &mut select {
            if !f(name) {
                continue;
            }
        }
        let start: &[u8] = match after {
            Some(a) if a.collection == name => &a.id.0[..],
            _ => &[],
        };
        let mut rows = stmt.query(params![coll, start])?;
        while let Some(row) = rows.next()? {
            if scanned >= SNAPSHOT_PAGE_RECORDS_SCANNED_MAX {
                page.next = last;
                return Ok(page);
            }
            let id =
                super::evict::record_id(row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?)?;
            let seq = Seq(row.get::<_, i64>(1)? as u64);
            let live: bool = row.get(2)?;
            let body = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
            let state = body::decode(body, seq, &inner.nodes, &inner.fields)?;
            let n = state.cells().len();
            if !page.changes.is_empty()
                && (cells + n > cells_max
                    || bytes_total + body.len() > SNAPSHOT_PAGE_BODY_BYTES_TARGET)
            {
                // Full: this record starts the next page.
                page.next = last;
                return Ok(page);
            }
            scanned += 1;
            last = Some(SnapshotKey {
                collection: name.to_owned(),
                id,
            });
            // (Collections were chosen above.)
            if matches!(select, Select::Records(_))
                && !chosen(inner, &mut select, (name, coll, id), &state, live)?
            {
                continue;
            }
            cells += n;
            bytes_total += body.len();
            page.changes.push(Change {
                seq,
                collection: name.to_owned(),
                id,
                cells: state.into_cells(),
            });
        }
    }
    Ok(page)
}

/// Whether `select` takes record `id` of collection `name` (number `coll`), stored as
/// `state` (`live` or a tombstone), into a snapshot.
fn chosen(
    inner: &Inner,
    select: &mut Select<'_, '_>,
    (name, coll, id): (&str, i64, RecordId),
    state: &RecordState,
    live: bool,
) -> Result<bool> {
    let f = match select {
        Select::Collections(f) => return Ok(f(name)),
        Select::Records(f) => f,
    };
    let fields = if live {
        state.fields()
    } else {
        BTreeMap::new()
    };
    if !f(name, id, &fields, live) {
        return Ok(false);
    }
    // A tombstone goes only where one of the record's live states was selected, as far as
    // history tells (a reader that never could see the record does not learn of its delete).
    Ok(live
        || inner.past_visibility(coll, id, state, Seq(0), &mut |fields| {
            f(name, id, fields, true)
        })? != PastVisibility::NeverSeen)
}

/// The records at or before `after` (read by earlier pages) with feed rows in
/// `(since, head]`, whole as they are now, chosen by `select`, in key order: see
/// [`SnapshotPage::changed_before`].
fn changed_before_in(
    inner: &Inner,
    after: &SnapshotKey,
    since: Seq,
    head: Seq,
    select: &mut Select<'_, '_>,
) -> Result<Vec<Change>> {
    let mut touched: Vec<(SnapshotKey, i64)> = Vec::new();
    {
        let mut stmt = inner
            .conn
            .prepare_cached("SELECT DISTINCT coll, id FROM feed WHERE seq > ?1 AND seq <= ?2")?;
        let mut rows = stmt.query([since.0 as i64, head.0 as i64])?;
        while let Some(row) = rows.next()? {
            let coll: i64 = row.get(0)?;
            let id =
                super::evict::record_id(row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?;
            let Some(name) = inner.collection_names.get(&coll) else {
                continue;
            };
            let key = SnapshotKey {
                collection: name.clone(),
                id,
            };
            if key <= *after {
                touched.push((key, coll));
            }
        }
    }
    touched.sort_unstable();
    let mut out = Vec::with_capacity(touched.len());
    let mut stmt = inner
        .conn
        .prepare_cached("SELECT seq, live, body FROM records WHERE coll = ?1 AND id = ?2")?;
    for (key, coll) in touched {
        let row = stmt
            .query_row(params![coll, &key.id.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()?;
        // Evicted since: no row, nothing to send (an eviction is not a change).
        let Some((seq, live, body)) = row else {
            continue;
        };
        let seq = Seq(seq as u64);
        let state = body::decode(&body, seq, &inner.nodes, &inner.fields)?;
        if !chosen(inner, select, (&key.collection, coll, key.id), &state, live)? {
            continue;
        }
        out.push(Change {
            seq,
            collection: key.collection,
            id: key.id,
            cells: state.into_cells(),
        });
    }
    Ok(out)
}

/// Run `f` in a write transaction of its own (staging bookkeeping, not records).
fn write_tx<T>(inner: &mut Inner, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
    inner.begin_write()?;
    let r = f(inner).and_then(|v| {
        inner.commit()?;
        Ok(v)
    });
    if r.is_err() {
        inner.rollback();
    }
    r
}

fn progress_in(inner: &Inner, peer: NodeId) -> Result<Option<SnapshotProgress>> {
    type Row = (i64, i64, u32, Option<String>, Option<Vec<u8>>, Option<i64>);
    let row: Option<Row> = inner
        .conn
        .prepare_cached(
            "SELECT snap_id, position, next_index, last_coll, last_id, acked
             FROM snapshot_progress WHERE peer = ?1",
        )?
        .query_row([&peer.0[..]], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    let Some((snap_id, position, next_index, coll, id, acked)) = row else {
        return Ok(None);
    };
    let last_key = match (coll, id) {
        (Some(collection), Some(id)) => Some(SnapshotKey {
            collection,
            id: super::evict::record_id(&id)?,
        }),
        _ => None,
    };
    Ok(Some(SnapshotProgress {
        snap_id: snap_id as u64,
        position: Seq(position as u64),
        next_index,
        last_key,
        // Staged by a build before format 7: nothing counts as seen.
        acked: Seq(acked.unwrap_or(0).max(0) as u64),
    }))
}

fn expect_progress(inner: &Inner, peer: NodeId, snap_id: u64) -> Result<SnapshotProgress> {
    match progress_in(inner, peer)? {
        Some(p) if p.snap_id == snap_id => Ok(p),
        Some(p) => Err(Error::InvalidArgument(format!(
            "snapshot {snap_id} from {peer} is not the one in progress ({}); begin it first",
            p.snap_id
        ))),
        None => Err(Error::InvalidArgument(format!(
            "no snapshot from {peer} is in progress; begin snapshot {snap_id} first"
        ))),
    }
}

/// Whether chunk `idx` is the one `p` expects next: `Ok(false)` for one already received (a
/// duplicate delivery, ignored), an error for one past it or past the chunk limit.
fn is_next_chunk(p: &SnapshotProgress, idx: u32) -> Result<bool> {
    if idx < p.next_index {
        return Ok(false);
    }
    if idx > p.next_index {
        return Err(Error::InvalidArgument(format!(
            "snapshot {} chunk {idx} arrived out of order: chunk {} is next; resume from the \
             progress",
            p.snap_id, p.next_index
        )));
    }
    if idx as usize >= SNAPSHOT_CHUNKS_MAX {
        return Err(Error::InvalidArgument(format!(
            "snapshot {} has more than {SNAPSHOT_CHUNKS_MAX} chunks",
            p.snap_id
        )));
    }
    Ok(true)
}

/// Record chunk `idx`, ending with `last_key`, as received (staged or merged).
fn advance_progress(inner: &Inner, peer: NodeId, idx: u32, last_key: &SnapshotKey) -> Result<()> {
    inner
        .conn
        .prepare_cached(
            "UPDATE snapshot_progress SET next_index = ?2, last_coll = ?3, last_id = ?4
             WHERE peer = ?1",
        )?
        .execute(params![
            &peer.0[..],
            idx + 1,
            last_key.collection,
            &last_key.id.0[..]
        ])?;
    Ok(())
}

/// A chunk over [`SNAPSHOT_CHUNK_BYTES_MAX`] is refused before anything is read or written.
fn check_chunk_size(idx: u32, chunk: &[u8]) -> Result<()> {
    if chunk.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "snapshot chunk {idx} is {} bytes, over the limit of {SNAPSHOT_CHUNK_BYTES_MAX}",
            chunk.len()
        )));
    }
    Ok(())
}

/// Whether any chunk from `peer` is staged.
/// The index of the first chunk staged from `peer`, if any.
fn first_staged(inner: &Inner, peer: NodeId) -> Result<Option<u32>> {
    Ok(inner
        .conn
        .prepare_cached("SELECT min(idx) FROM snapshot_staging WHERE peer = ?1")?
        .query_row([&peer.0[..]], |r| r.get(0))?)
}

fn any_staged(inner: &Inner, peer: NodeId) -> Result<bool> {
    Ok(inner
        .conn
        .prepare_cached("SELECT 1 FROM snapshot_staging WHERE peer = ?1 LIMIT 1")?
        .query_row([&peer.0[..]], |_| Ok(()))
        .optional()?
        .is_some())
}

fn discard(inner: &Inner, peer: NodeId) -> Result<()> {
    inner
        .conn
        .prepare_cached("DELETE FROM snapshot_staging WHERE peer = ?1")?
        .execute([&peer.0[..]])?;
    inner
        .conn
        .prepare_cached("DELETE FROM snapshot_progress WHERE peer = ?1")?
        .execute([&peer.0[..]])?;
    Ok(())
}
