//! The change feed (what sync reads) and the apply path (what sync writes), plus the
//! conflicts table.
//!
//! The feed is the `feed` table: one row per `(seq, record)` for every local commit `seq`
//! whose cells still survive in `record`. Reading "changes since N" walks it in seq order and
//! returns, for each row, the record's cells stamped with exactly that seq — only the changed
//! fields, never the whole record unless it is new. Cells that were overwritten since carry
//! the newer seq and travel with it, so the feed is bounded by the live data, not by history.

use crate::hash::FastMap;
use crate::limits::TRANSACTION_CELLS_MAX;
use crate::WriteError;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::unit::StagedParts;
use super::write::validate_field_name;
use super::{body, validate_collection_name, Database};
use crate::crdt::encoding::{key_from_bytes, record_value_from_bytes, value_from_bytes};
use crate::crdt::{Cell, CellKey, CellValue};
use crate::error::{ApplyError, Error, Result};
use crate::limits::FEED_PAGE_CELLS_MAX;
use crate::types::{Hlc, Seq, Version};
use crate::{NodeId, RecordId, Value};

/// The cells one local commit (`seq`) left in one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The local feed position.
    pub seq: Seq,
    /// The collection.
    pub collection: String,
    /// The record.
    pub id: RecordId,
    /// The cells, sorted by key.
    pub cells: Vec<Cell>,
}

/// A page of the change feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeBatch {
    /// Changes in seq order; all changes of one seq (one transaction) are in the same batch.
    pub changes: Vec<Change>,
    /// The cursor to ask from next time: every change up to it has been returned (or
    /// skipped as coming from the excluded peer).
    pub next: Seq,
    /// True when there are changes past `next`.
    pub more: bool,
    /// A transaction in this batch was partly overwritten by a later commit, so a peer may
    /// only make the batch visible together with everything up to this seq (the batch is
    /// a consistent cut only when `next >= needs_through`).
    pub needs_through: Seq,
}

/// What [`Database::apply_changes_checked`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Cells that changed something here.
    pub applied: usize,
    /// Changes refused by access control (whole transactions).
    pub rejected: Vec<crate::sync::Rejection>,
    /// The local feed positions `(first, last)` that the unit's own transaction took, when
    /// it changed anything. Every feed row there came from the sender, so none of them is
    /// ever sent back to it (a sync session passes over them without reading the feed).
    /// Writes the apply makes on this node's behalf (restated refusals, server-priority
    /// values) commit in the same transaction, at later positions, as written here.
    pub sender_seqs: Option<(Seq, Seq)>,
    /// Records where a write of a partial replica lost without being applied (only
    /// [`Database::apply_unit_from_partial_replica`] tracks them), noted for the peer.
    /// Recorded as conflicts, except those in `refused_losers`.
    pub ignored: Vec<(String, RecordId)>,
    /// Such losing writes that access control would not have let win: refused (sent back
    /// in REJECT) rather than recorded as conflicts. They changed nothing, so nothing is
    /// restated.
    pub refused_losers: Vec<crate::sync::Rejection>,
    /// Conflicts the apply recorded open: each concurrent overwrite it settled here, kept as
    /// a row [`Database::conflicts`] lists until it is resolved. Not those the collection's
    /// policy resolves at once (`CollectionPolicy::auto_resolve`). Counted as the rows are
    /// written, so it costs nothing.
    pub conflicts: u64,
    /// The local feed position of the writes the apply made on this node's behalf
    /// (restated refusals, reasserted server-priority values), when it made any: a
    /// transaction's own writes share one position. What is there undoes the sender's own
    /// writes, and goes back to it as this node's changes (a sync session tells such cells
    /// apart from those it forwards: `SessionStats::cells_restated`).
    pub restated_at: Option<Seq>,
}

/// Whose unit [`Database::apply_unit_with`] applies.
#[derive(Clone, Copy)]
enum Sender {
    /// A peer that holds everything we send.
    Full,
    /// A peer that holds part of our records (see
    /// [`Database::apply_unit_from_partial_replica`]).
    PartialReplica { evicts_after: Seq },
}

/// Records a unit's apply holds in memory before it writes them out (`Tx::spill`): a few
/// megabytes, and far more than an ordinary unit touches.
const UNIT_SPILL_RECORDS: usize = 20_000;

/// Cell keys of refused updates a unit keeps to restate only what they touched
/// ([`RefusedChange::touched`]); refused updates past it are restated whole, so a unit of
/// refused writes (a client writing what it may not, in bulk) cannot make the relay hold
/// all its cells.
const REFUSED_CELLS_KEPT_MAX: usize = 100_000;

/// Where applying a unit stands between its parts.
#[derive(Debug, Default)]
struct UnitApply {
    /// The sender's seq of the group (transaction) being applied.
    group: Option<Seq>,
    /// Cells of that group so far.
    group_cells: usize,
    applied: usize,
    /// The refused changes: the REJECT entries, and what to restate.
    refused: Vec<RefusedChange>,
    /// Cell keys kept in `refused` (bounded by [`REFUSED_CELLS_KEPT_MAX`]).
    refused_cells_kept: usize,
    /// Records where a write of the sender lost without being applied (tracked only for a
    /// partial replica, see [`Database::apply_unit_from_partial_replica`]).
    ignored: Vec<(String, RecordId)>,
    /// Those of `ignored` that access control would not have let win (see [`loser_refusal`]).
    refused_losers: Vec<crate::sync::Rejection>,
}

/// A refused change, as [`restate_refused`] needs it.
#[derive(Debug)]
struct RefusedChange {
    /// The record and why (what REJECT tells the writer).
    rejection: crate::sync::Rejection,
    /// The cells it would have written, when it names no `Record` cell (an update): only
    /// those fields are restated. `None` for an insert or a delete: the whole record is.
    touched: Option<Vec<CellKey>>,
    /// The newest version it carried: an update's restatement goes just above it.
    newest: Hlc,
}

/// Apply one part of a unit. Each group of changes sharing a `seq` (one transaction at the
/// sender) becomes one local commit; a part ends at a group boundary, except the tail,
/// which ends the unit.
fn apply_segment(
    tx: &mut super::Tx<'_>,
    src: u64,
    mut changes: Vec<Change>,
    access: Option<&dyn crate::sync::AccessControl>,
    state: &mut UnitApply,
) -> Result<()> {
    let mut start = 0;
    while start < changes.len() {
        let mut end = start + 1;
        while end < changes.len() && changes[end].seq == changes[start].seq {
            end += 1;
        }
        let range = start..end;
        start = end;
        let seq = changes[range.start].seq;
        if state.group != Some(seq) {
            if state.group.is_some() && tx.seq_used {
                tx.seq = Seq(tx.seq.0 + 1);
                tx.seq_used = false;
            }
            state.group = Some(seq);
            state.group_cells = 0;
        }
        let group_changes = &changes[range.clone()];
        state.group_cells += group_changes.iter().map(|c| c.cells.len()).sum::<usize>();
        if state.group_cells > TRANSACTION_CELLS_MAX {
            return Err(WriteError::Limit {
                what: "cells changed in one transaction of the unit",
                got: state.group_cells,
                max: TRANSACTION_CELLS_MAX,
            }
            .into());
        }
        if let Some(access) = access {
            // Observe even refused timestamps (they passed the skew check), so that the
            // restated copy written below is newer than the refused write.
            for c in group_changes.iter().flat_map(|ch| &ch.cells) {
                tx.inner
                    .clock
                    .observe(c.version.hlc, tx.now_ms)
                    .map_err(ApplyError::from)?;
            }
            let me = tx.db.node_id();
            for ch in &mut changes[range.clone()] {
                drop_writes_named_as_ours(me, ch);
            }
            let group_changes = &changes[range.clone()];
            if let Some(reason) = check_group(tx, group_changes, access)? {
                for ch in group_changes {
                    let resets = ch.cells.iter().any(|c| c.key == CellKey::Record);
                    // Past the bound, what a unit of refused writes holds in memory stops
                    // growing with its cells: the rest are restated whole.
                    let kept = state.refused_cells_kept + ch.cells.len();
                    let touched = (!resets && kept <= REFUSED_CELLS_KEPT_MAX)
                        .then(|| ch.cells.iter().map(|c| c.key.clone()).collect());
                    if touched.is_some() {
                        state.refused_cells_kept = kept;
                    }
                    state.refused.push(RefusedChange {
                        rejection: crate::sync::Rejection {
                            collection: ch.collection.clone(),
                            id: ch.id,
                            reason: reason.clone(),
                        },
                        touched,
                        newest: ch
                            .cells
                            .iter()
                            .map(|c| c.version.hlc)
                            .max()
                            .unwrap_or(Hlc(0)),
                    });
                }
                continue;
            }
        }
        for ch in &mut changes[range] {
            let i = tx.load(&ch.collection, ch.id, true)?.expect("created");
            tx.records[i].src = src;
            for c in std::mem::take(&mut ch.cells) {
                if tx.merge_received(i, c)? {
                    state.applied += 1;
                }
            }
        }
        let ignored = tx.take_ignored();
        let inserts = super::write::IgnoredInserts::new(&ignored);
        for (i, winner, loser) in &ignored {
            let i = *i;
            let record = (tx.records[i].collection.clone(), tx.records[i].id);
            match access.and_then(|a| loser_refusal(tx, i, loser, a)) {
                Some(reason) => state.refused_losers.push(crate::sync::Rejection {
                    collection: record.0.clone(),
                    id: record.1,
                    reason,
                }),
                None => {
                    let loser = inserts.shown_loser(i, loser);
                    tx.store_conflict(i, winner, &loser)?
                }
            }
            state.ignored.push(record);
        }
    }
    Ok(())
}

/// Server priority: a value of ours that a peer's concurrent write overwrote here, to be
/// written again.
struct Reassertion {
    collection: String,
    id: RecordId,
    field: String,
    value: Value,
    /// The version our value had (the conflict recorded names it as the loser).
    overwritten: Version,
}

/// Bring the writer of each refused change back to our version: write again, with new
/// versions, the fields a refused update touched, or our whole copy for a refused insert
/// or delete (an insert resets every older cell, so fields the writer added go too), or a
/// fresh tombstone where we have no copy ([`super::Tx::restate`]). Part of the unit's
/// transaction, after
/// [`super::Tx::begin_local_writes_after_received`].
fn restate_refused(tx: &mut super::Tx<'_>, refused: &[RefusedChange]) -> Result<()> {
    for r in refused {
        let record = &r.rejection;
        tx.restate(
            &record.collection,
            record.id,
            r.touched.as_deref(),
            r.newest,
        )?;
        // As many as the unit refused: memory holds one part of them, as for the unit.
        if tx.unspilled() >= UNIT_SPILL_RECORDS {
            tx.spill()?;
        }
    }
    Ok(())
}

/// Server priority: write the server's values again, as new local writes that sync out to
/// everyone (the peer's values stay on record as conflict losers, relabelled so). Part of
/// the unit's transaction, after [`super::Tx::begin_local_writes_after_received`].
fn reassert_server_values(tx: &mut super::Tx<'_>, reassert: &[Reassertion]) -> Result<()> {
    for r in reassert {
        if tx.get(&r.collection, r.id)?.is_some() {
            let patch = super::Patch::new().set(r.field.clone(), r.value.clone());
            tx.update(&r.collection, r.id, patch)?;
            tx.relabel_reasserted_conflict(&r.collection, r.id, &r.field, r.overwritten)?;
        }
        if tx.unspilled() >= UNIT_SPILL_RECORDS {
            tx.spill()?;
        }
    }
    Ok(())
}

/// Under access control, why a write of the sender that lost here without being applied
/// must not be recorded as a conflict: the rules would not have let it win. Such a write
/// changed nothing, so the write check never saw it, yet a conflict row would list its
/// value beside the winner's, where resolving it applies it: anyone could have put values
/// on any record they know the id of. It is refused (REJECT) instead, so its writer still
/// hears of it (a write allowed when it was made, that lost to a change taking the record
/// out of its writer's reach, is refused the same way: nothing is silently lost). Judged as
/// if it had won over the record as it is now; a write to a deleted record, or a re-insert,
/// is recorded as before (`None`).
fn loser_refusal(
    tx: &super::Tx<'_>,
    i: usize,
    loser: &Cell,
    access: &dyn crate::sync::AccessControl,
) -> Option<String> {
    let p = &tx.records[i];
    let now = &p.state;
    let deletes = loser.key == CellKey::Record && loser.value == CellValue::Absent;
    if !now.is_live() || (loser.key == CellKey::Record && !deletes) {
        return None;
    }
    let mut won = now.clone();
    let mut forced = loser.clone();
    forced.version = Version {
        hlc: Hlc(u64::MAX),
        node: loser.version.node,
    };
    won.merge(forced);
    let after = won.is_live().then(|| won.fields());
    access
        .can_write(&p.collection, p.id, Some(&now.fields()), after.as_ref())
        .err()
}

/// Under access control, drop from `change` the cells that name this node as their writer
/// (a cell's `version.node`, or the node of a counter contribution). This node's own writes
/// are its own to make: a copy of one that a client passes back (received from us and
/// forwarded over another path) is something we hold or have overwritten since, so dropping
/// it changes nothing; anything else is a forgery — node ids are in every cell a client
/// receives, and under `server_priority` a losing cell named as ours was written again as
/// our own value everywhere, so any user could set any field. Dropped, not refused: a
/// refusal would restate the record, and an honest forwarder's transaction should still
/// apply. (Writes named as *other* nodes are judged like the sender's own, by the write
/// rules with the sender's rights: honest clients pass along their peers' writes, and
/// refusing them restated records over the authors' own later deliveries.)
fn drop_writes_named_as_ours(me: NodeId, change: &mut Change) {
    let ours =
        |c: &Cell| c.version.node == me || matches!(&c.key, CellKey::Counter(_, n) if *n == me);
    if change.cells.iter().any(ours) {
        change.cells.retain(|c| !ours(c));
    }
}

/// Run the access check for one group on scratch copies; `Some(reason)` refuses it.
fn check_group(
    tx: &mut super::Tx<'_>,
    group: &[Change],
    access: &dyn crate::sync::AccessControl,
) -> Result<Option<String>> {
    // One check per record, on everything the group does to it: a group may name a record
    // in several changes, and checked one by one (each against the state before the
    // group), two changes that each pass — one giving the record away, one setting another
    // field — combined into a state the rule refuses.
    type Key<'a> = (&'a str, RecordId);
    // (record, stored here before, before, after)
    type Judged<'a> = (
        Key<'a>,
        bool,
        crate::crdt::RecordState,
        crate::crdt::RecordState,
    );
    let mut records: Vec<Judged<'_>> = Vec::new();
    let mut index: FastMap<Key<'_>, usize> = FastMap::default();
    for ch in group {
        let key = (ch.collection.as_str(), ch.id);
        let at = match index.get(&key) {
            Some(&at) => at,
            None => {
                index.insert(key, records.len());
                let (stored, before) = match tx.load(&ch.collection, ch.id, false)? {
                    Some(i) => (true, tx.records[i].state.clone()),
                    None => (false, crate::crdt::RecordState::new()),
                };
                records.push((key, stored, before.clone(), before));
                records.len() - 1
            }
        };
        for c in &ch.cells {
            records[at].3.merge(c.clone());
        }
    }
    for ((collection, id), stored, before, after) in &records {
        if after == before {
            continue;
        }
        if *stored && !before.is_live() && !after.is_live() {
            // A record deleted here stays deleted (a second delete, say): nothing to judge.
            // One never stored here is judged as absent → absent (the rules see no fields).
            continue;
        }
        let fields = |s: &crate::crdt::RecordState| s.is_live().then(|| s.fields());
        let (b, a) = (fields(before), fields(after));
        if let Err(reason) = access.can_write(collection, *id, b.as_ref(), a.as_ref()) {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

/// The name of collection number `coll` (a feed row naming an unknown one is damage).
fn collection_name(inner: &super::Inner, coll: i64) -> Result<String> {
    inner.collection_names.get(&coll).cloned().ok_or_else(|| {
        Error::Corrupted(crate::codec::DecodeError::Malformed(format!(
            "unknown collection {coll}"
        )))
    })
}

/// The scan of [`Database::changes_since`], inside the caller's read transaction. `exclude`
/// is the excluded source's `src` value. Also returns the distinct `src` of every row the scan
/// went through (what the feed cache needs to tell whether an exclusion mattered).
fn changes_since_in(
    inner: &super::Inner,
    since: Seq,
    cells_max: usize,
    exclude: Option<i64>,
) -> Result<(ChangeBatch, Vec<i64>)> {
    // Rows only up to the head of this snapshot: `next` must never move past a commit the
    // scan did not see, or that commit would never be sent.
    let head = inner.head_seq()?;
    // Each feed row comes with its record's body in one statement. A record with cells at
    // several seqs is decoded once: its cells are moved out as their seq comes up, and the
    // rest wait in `leftovers`. With an excluded source, the body is read only for the rows
    // that are kept (a peer's own changes, often all of the range, cost no record lookup).
    let mut stmt = if exclude.is_some() {
        inner.conn.prepare_cached(
            "SELECT f.seq, f.coll, f.id, f.src FROM feed f \
             WHERE f.seq > ?1 AND f.seq <= ?2 ORDER BY f.seq, f.coll, f.id",
        )?
    } else {
        inner.conn.prepare_cached(
            "SELECT f.seq, f.coll, f.id, f.src, r.seq, r.body FROM feed f \
             LEFT JOIN records r ON r.coll = f.coll AND r.id = f.id \
             WHERE f.seq > ?1 AND f.seq <= ?2 ORDER BY f.seq, f.coll, f.id",
        )?
    };
    let mut body_stmt = match exclude {
        Some(_) => Some(
            inner
                .conn
                .prepare_cached("SELECT seq, body FROM records WHERE coll = ?1 AND id = ?2")?,
        ),
        None => None,
    };
    let mut rows = stmt.query([since.0 as i64, head.0 as i64])?;
    let mut batch = ChangeBatch {
        changes: Vec::new(),
        next: since,
        more: false,
        needs_through: since,
    };
    let mut srcs: Vec<i64> = Vec::new();
    let mut cells = 0usize;
    let mut leftovers: FastMap<(i64, [u8; 16]), Vec<Cell>> = FastMap::default();
    // Every commit between the previous group and the next one, including commits whose
    // cells were all overwritten since, may require later commits: `needs_through` takes the
    // links of every commit in (since, next]. They only steer the scan once the page is
    // full, so they are read in one query over the commits crossed so far (`links_from`
    // up to `next`) when needed, not one query per commit.
    let mut links_from = since;
    let fold_links = |batch: &mut ChangeBatch, from: &mut Seq| -> Result<()> {
        if *from < batch.next {
            let link: Option<i64> = inner
                .conn
                .prepare_cached("SELECT max(t) FROM feed_links WHERE s > ?1 AND s <= ?2")?
                .query_row([from.0 as i64, batch.next.0 as i64], |r| r.get(0))?;
            if let Some(t) = link {
                batch.needs_through = batch.needs_through.max(Seq(t as u64));
            }
            *from = batch.next;
        }
        Ok(())
    };
    while let Some(row) = rows.next()? {
        let seq = Seq(row.get::<_, i64>(0)? as u64);
        if seq != batch.next && cells >= cells_max {
            // At a commit boundary: stop once full, preferably at a consistent cut, but
            // never past four pages (the caller then sends a partial unit).
            fold_links(&mut batch, &mut links_from)?;
            let consistent = batch.next >= batch.needs_through;
            if consistent || cells >= cells_max.saturating_mul(4) {
                batch.more = true;
                break;
            }
        }
        batch.next = seq;
        let (coll, src): (i64, i64) = (row.get(1)?, row.get(3)?);
        if !srcs.contains(&src) {
            srcs.push(src);
        }
        if exclude.is_some_and(|e| e == src) {
            continue;
        }
        let id: [u8; 16] = row
            .get_ref(2)?
            .as_blob()
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::Corrupted(crate::codec::DecodeError::Malformed("bad record id".into()))
            })?;
        let all = match leftovers.remove(&(coll, id)) {
            Some(cells) => cells,
            None => {
                let missing = || {
                    Error::Corrupted(crate::codec::DecodeError::Malformed(format!(
                        "feed row {seq} names a record that is not stored"
                    )))
                };
                let decode = |rseq: i64, bytes: &[u8]| {
                    body::decode_since(bytes, Seq(rseq as u64), seq, &inner.nodes, &inner.fields)
                };
                match body_stmt.as_mut() {
                    None => {
                        let Some(rseq) = row.get::<_, Option<i64>>(4)? else {
                            return Err(missing());
                        };
                        let bytes = row.get_ref(5)?.as_blob().map_err(rusqlite::Error::from)?;
                        decode(rseq, bytes)?
                    }
                    Some(b) => {
                        let mut r = b.query(params![coll, &id[..]])?;
                        let Some(r) = r.next()? else {
                            return Err(missing());
                        };
                        let rseq: i64 = r.get(0)?;
                        let bytes = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                        decode(rseq, bytes)?
                    }
                }
            }
        };
        // Rows come in seq order: a cell older than this row's seq was sent before `since` or
        // belongs to a row already read; only newer cells can be asked for again.
        let mut selected = Vec::new();
        let mut rest = Vec::new();
        for c in all {
            if c.seq == seq {
                selected.push(c);
            } else if c.seq > seq {
                rest.push(c);
            }
        }
        if !rest.is_empty() {
            leftovers.insert((coll, id), rest);
        }
        if selected.is_empty() {
            continue;
        }
        cells += selected.len();
        let collection = collection_name(inner, coll)?;
        batch.changes.push(Change {
            seq,
            collection,
            id: RecordId(id),
            cells: selected,
        });
    }
    drop(rows);
    drop(stmt);
    // The links of the commits this batch went through (a break stops before the commit
    // that triggered it, as the per-commit reads did).
    fold_links(&mut batch, &mut links_from)?;
    if !batch.more {
        // Reached the end: commits past the last row left no cells (all overwritten).
        batch.next = batch.next.max(head);
    }
    batch.needs_through = batch.needs_through.max(batch.next);
    Ok((batch, srcs))
}

/// Link every commit `tx` made from `first` on to its last one (`feed_links`), so that a
/// peer replicating from here receives them together, as one unit: for commits that are
/// one unit here (a received unit of several commits, a staged snapshot's chunks). Returns
/// that last commit (`first - 1` when `tx` made none).
pub(super) fn link_to_last(tx: &mut super::write::Tx<'_>, first: Seq) -> Result<Seq> {
    let last = if tx.seq_used {
        tx.seq
    } else {
        Seq(tx.seq.0 - 1)
    };
    for s in first.0..last.0 {
        tx.inner
            .conn
            .prepare_cached(
                "INSERT INTO feed_links (s, t) VALUES (?1, ?2)
                 ON CONFLICT (s) DO UPDATE SET t = max(t, excluded.t)",
            )?
            .execute(params![s as i64, last.0 as i64])?;
    }
    Ok(last)
}

/// The `meta` key of a per-peer note; `forget_peer` removes `peer:<node>:*`.
pub(crate) fn peer_note_key(peer: NodeId, name: &str) -> String {
    format!("peer:{peer}:{name}")
}

/// Peer note of a sync session serving a partial replica: evictions derived from our feed
/// after this position may not have reached the peer (see `Session::flush_evictions`).
pub(crate) const NOTE_EVICTS: &str = "evicts_unconfirmed_after";
/// Peer note beside [`NOTE_EVICTS`]: records to judge again for eviction at the peer's next
/// SUBSCRIBE, one `id<TAB>collection` per line (names hold no control characters). Those
/// where a write of the peer was not applied here (it lost to a concurrent one, or a write
/// rule refused it): such a write leaves no feed row to derive its eviction (or the
/// restatement that undoes it) from again, so the unit's transaction names the record here.
/// And those named by EVICTs or restatements not yet confirmed: the feed row that made them
/// due may be gone by then (see `Session::note_view_update`). (The key's name predates the
/// latter.)
pub(crate) const NOTE_EVICTS_UNAPPLIED: &str = "evicts_for_unapplied_writes";

/// Set (`Some`) or clear (`None`) a per-peer note inside the caller's transaction.
fn set_peer_note_in(
    conn: &rusqlite::Connection,
    peer: NodeId,
    name: &str,
    value: Option<&str>,
) -> Result<()> {
    let key = peer_note_key(peer, name);
    match value {
        Some(v) => conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, v])?,
        None => conn
            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute([key])?,
    };
    Ok(())
}

/// The records [`NOTE_EVICTS_UNAPPLIED`] names, read on an already locked handle.
fn unapplied_writes_in(inner: &super::Inner, peer: NodeId) -> Result<Vec<(String, RecordId)>> {
    let Some(text) = peer_note_in(inner, peer, NOTE_EVICTS_UNAPPLIED)? else {
        return Ok(Vec::new());
    };
    let damaged = || {
        Error::Corrupted(crate::codec::DecodeError::Malformed(format!(
            "peer note {NOTE_EVICTS_UNAPPLIED}"
        )))
    };
    text.lines()
        .map(|line| {
            let (id, coll) = line.split_once('\t').ok_or_else(damaged)?;
            Ok((coll.to_owned(), id.parse().map_err(|_| damaged())?))
        })
        .collect()
}

/// Add `records` to [`NOTE_EVICTS_UNAPPLIED`] and move [`NOTE_EVICTS`] back to `after` if it
/// is later or unset, inside the caller's transaction.
fn note_unapplied_writes_in(
    inner: &super::Inner,
    peer: NodeId,
    records: &[(String, RecordId)],
    after: Seq,
) -> Result<()> {
    let noted = peer_note_in(inner, peer, NOTE_EVICTS)?.and_then(|n| n.parse().ok());
    if noted.is_none_or(|n: u64| n > after.0) {
        let after = after.0.to_string();
        set_peer_note_in(&inner.conn, peer, NOTE_EVICTS, Some(&after))?;
    }
    let mut all = unapplied_writes_in(inner, peer)?;
    all.extend(records.iter().cloned());
    all.sort();
    all.dedup();
    let text: Vec<String> = all
        .iter()
        .map(|(coll, id)| format!("{id}\t{coll}"))
        .collect();
    set_peer_note_in(
        &inner.conn,
        peer,
        NOTE_EVICTS_UNAPPLIED,
        Some(&text.join("\n")),
    )
}

/// A per-peer note, read on an already locked handle (see [`Database::peer_note`]).
pub(crate) fn peer_note_in(
    inner: &super::Inner,
    peer: NodeId,
    name: &str,
) -> Result<Option<String>> {
    Ok(inner
        .conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([peer_note_key(peer, name)], |r| r.get::<_, String>(0))
        .optional()?)
}

/// Which way a peer cursor points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerDirection {
    /// How far we have applied the peer's feed.
    Received,
    /// How far the peer acknowledged our feed.
    Acked,
    /// How far the peer acknowledged our feed *and* its own feed, as it stood when it did,
    /// has arrived here (its next CAUGHT_UP, or an ACK saying its feed had gone whole): what
    /// GC counts. Never past `Acked`. See `store/gc.rs`, "Counted once stable".
    Stable,
}

impl PeerDirection {
    fn as_str(self) -> &'static str {
        match self {
            PeerDirection::Received => "recv",
            PeerDirection::Acked => "acked",
            PeerDirection::Stable => "stable",
        }
    }
}

/// A peer this node has synced with.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    /// Its node id.
    pub node: NodeId,
    /// How far we have applied its feed.
    pub received: Seq,
    /// How far it acknowledged ours.
    pub acked: Seq,
    /// How far it acknowledged ours with everything it held then received here: where GC
    /// may collect up to for this peer (at most `acked`; see [`PeerDirection::Stable`]).
    /// Without a record of its own (a peer not synced with since this was added), `acked`.
    pub stable: Seq,
    /// Last time either cursor moved (ms since the epoch).
    pub last_contact_ms: u64,
    /// It said in HELLO that it is a relay: GC never lets it expire.
    pub relay: bool,
    /// It pushes its feed to us and does not take ours (its mode `push`, or ours `pull`), as
    /// of the last session: GC holds removals back by age for it (see [`Database::gc`]).
    pub pushes_only: bool,
}

impl PeerInfo {
    /// A peer with no cursor, contact or role known yet.
    fn new(node: NodeId) -> Self {
        PeerInfo {
            node,
            received: Seq(0),
            acked: Seq(0),
            stable: Seq(0),
            last_contact_ms: 0,
            relay: false,
            pushes_only: false,
        }
    }
}

impl super::Inner {
    pub(crate) fn set_peer_cursor(
        &self,
        peer: NodeId,
        direction: PeerDirection,
        cursor: Seq,
        now_ms: u64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO peers (node, direction, cursor, last_contact_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (node, direction) DO UPDATE SET cursor = excluded.cursor,
                 last_contact_ms = excluded.last_contact_ms",
            )?
            .execute(params![&peer.0[..], direction.as_str(), cursor.0 as i64, now_ms as i64])?;
        Ok(())
    }
}

/// A concurrent overwrite: the loser is kept here until the application resolves it.
///
/// Most conflicts are about one field (`field` names it): `winner` and `loser` are its two
/// values. A write that replaces a whole record — an insert (`insert_with_id`, or `upsert` of
/// a record this node did not hold) or a delete — conflicts with the record as a whole when
/// its writer never saw the record it replaced: two replicas inserting the same id, a delete
/// against a concurrent insert. That conflict's `cell` is `$record` and its `field` is `None`;
/// its `winner` and `loser` are whole records, each the record's fields as a
/// [`Value::Map`] (the winner: the record as the merge left it; the loser: the record as this
/// node held it before it was replaced, or, for a received insert that lost without being
/// applied, the fields it inserted), or `None` for a delete. Each field the winner dropped or
/// overwrote is listed besides as a conflict of its own, whose winner is what the winning
/// insert left in that field (`None`: it left the field out, or the record was deleted).
/// Conflicts recorded before 2026-12-07 show an insert in a `$record` conflict as
/// `Some(Value::Bool(true))`, and the winner of a field an insert dropped as the same.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// Its number (for `resolve_conflict`).
    pub id: i64,
    /// The collection.
    pub collection: String,
    /// The record.
    pub record: RecordId,
    /// The cell: a field name, `likes[counter:…]` or `tags[element:…]` for one node's
    /// contribution to a counter or one element of a set, or `$record` for a conflict over
    /// the record as a whole (an insert or a delete against a concurrent one).
    pub cell: String,
    /// The field (`None` for a conflict over the record as a whole).
    pub field: Option<String>,
    /// For a conflict over one element of a set field: the element. `winner` and `loser`
    /// are then `true` (in the set) or `None` (left out).
    pub element: Option<Value>,
    /// For a conflict over one node's contribution to a counter field: that node.
    pub counter_node: Option<NodeId>,
    /// The value that won (now stored); `None` for a delete. Over the record as a whole
    /// (`$record`), an insert is the record's fields as a map.
    pub winner: Option<Value>,
    /// The winning version.
    pub winner_version: Version,
    /// The value that lost; `None` for a delete. Over the record as a whole (`$record`), an
    /// insert is the record's fields as a map.
    pub loser: Option<Value>,
    /// The losing version.
    pub loser_version: Version,
    /// Settled (by `resolve_conflict`, or automatically under an `auto_resolve` policy).
    pub resolved: bool,
    /// The cell holds a newer write than `winner` now: a write after the conflict (often its
    /// resolution on another copy, which syncs as a write while each copy keeps its own list)
    /// replaced both sides, so `winner` is no longer the value. Resolving it with `None`
    /// changes nothing; writing the loser or a value overwrites that newer write.
    pub superseded: bool,
}

fn user_value(v: &CellValue) -> Option<Value> {
    match v {
        CellValue::Absent => None,
        other => Some(other.to_value()),
    }
}

impl Database {
    /// Changes after feed position `since`, at most about `cells_max` cells (a transaction is
    /// never split, so one larger than `cells_max` comes whole). Changes that arrived from
    /// `exclude_src` are skipped: that peer has them, or something newer.
    pub fn changes_since(
        &self,
        since: Seq,
        cells_max: usize,
        exclude_src: Option<NodeId>,
    ) -> Result<ChangeBatch> {
        self.read_changes(since, cells_max, exclude_src, false, false)
            .map(|(b, _)| Arc::try_unwrap(b).unwrap_or_else(|b| (*b).clone()))
    }

    /// [`Database::changes_since`], shared: the result is also kept for a while, so that other
    /// readers of the same range (the sessions of a relay that one commit woke) take it
    /// without reading the feed again. Identical to what `changes_since` returns.
    pub fn changes_since_shared(
        &self,
        since: Seq,
        cells_max: usize,
        exclude_src: Option<NodeId>,
    ) -> Result<Arc<ChangeBatch>> {
        self.read_changes(since, cells_max, exclude_src, true, false)
            .map(|(b, _)| b)
    }

    /// [`Database::changes_since_shared`], and [`Database::gc_horizon`] as of the same read
    /// of the file. With `since` below that horizon, GC may have collected deletes a peer at
    /// `since` needs before the page was read: the page may lack them (read separately, a GC
    /// committed in between would go unnoticed).
    pub(crate) fn changes_since_shared_and_horizon(
        &self,
        since: Seq,
        cells_max: usize,
        exclude_src: Option<NodeId>,
    ) -> Result<(Arc<ChangeBatch>, Seq)> {
        self.read_changes(since, cells_max, exclude_src, true, true)
            .map(|(b, h)| (b, h.expect("asked for")))
    }

    /// A page of the feed and, when `with_horizon`, the GC horizon, from one snapshot of the
    /// file.
    fn read_changes(
        &self,
        since: Seq,
        cells_max: usize,
        exclude_src: Option<NodeId>,
        keep: bool,
        with_horizon: bool,
    ) -> Result<(Arc<ChangeBatch>, Option<Seq>)> {
        let cells_max = cells_max.clamp(1, FEED_PAGE_CELLS_MAX);
        let mut inner = self.lock()?;
        // `lock` brought the caches up to date with the file: a cached read of this state
        // is what a read now would return.
        let state = inner.feed_state();
        let horizon = if with_horizon {
            Some(super::gc::horizon_in(&mut inner)?)
        } else {
            None
        };
        let ex = exclude_src
            .and_then(|n| inner.nodes.known(&n))
            .map(|i| i as i64 + 1);
        if let Some(b) = inner.feed_cache.get(state, since, cells_max, ex) {
            return Ok((b, horizon));
        }
        // `lock`'s snapshot serves the whole scan: the head, feed rows, bodies, links and
        // dictionaries come from one state of the file even while other processes commit.
        let (batch, srcs) = changes_since_in(&inner, since, cells_max, ex)?;
        let batch = Arc::new(batch);
        if keep {
            inner
                .feed_cache
                .put(state, since, cells_max, ex, srcs, batch.clone());
        }
        Ok((batch, horizon))
    }

    /// Apply changes received from peer `from`, in one transaction: either all of them are
    /// stored or none. Each group of changes sharing a `seq` (one transaction at the sender)
    /// becomes one local commit, so transactions stay whole when forwarded. Returns the
    /// number of cells that changed something here. Idempotent: applying the same changes
    /// again changes nothing.
    ///
    /// `cursor`, when given, is stored as how far this node has received `from`'s feed, in
    /// the same transaction: data and cursor are durable together, so a restart resumes
    /// exactly after the last applied unit.
    pub fn apply_changes(
        &self,
        from: NodeId,
        changes: &[Change],
        cursor: Option<Seq>,
    ) -> Result<usize> {
        Ok(self
            .apply_changes_checked(from, changes, cursor, None)?
            .applied)
    }

    /// [`Database::apply_changes`] with access control: a transaction (group) with any
    /// change that `access` refuses is skipped whole and reported; the refused records are
    /// then written again here as they are (or deleted again, if this node never had them),
    /// with new versions, so the writer's copy comes back to this node's version. That write
    /// is part of the same transaction (durable with the cursor), at a feed position after
    /// the changes', and is sent to `from` like any write made here.
    pub fn apply_changes_checked(
        &self,
        from: NodeId,
        changes: &[Change],
        cursor: Option<Seq>,
        access: Option<&dyn crate::sync::AccessControl>,
    ) -> Result<ApplyOutcome> {
        self.apply_changes_owned(from, changes.to_vec(), cursor, access)
    }

    /// [`Database::apply_changes_checked`] taking the changes by value: their cells move into
    /// the records instead of being copied (the sync session owns what it received).
    pub fn apply_changes_owned(
        &self,
        from: NodeId,
        changes: Vec<Change>,
        cursor: Option<Seq>,
        access: Option<&dyn crate::sync::AccessControl>,
    ) -> Result<ApplyOutcome> {
        self.apply_unit(from, StagedParts::NONE, changes, cursor, access)
    }

    /// Apply a unit from `from`: its `staged` parts (see [`Database::unit_stage`]),
    /// then `tail`, in one transaction, with the cursor; the staged rows go in the same
    /// transaction. Like [`Database::apply_changes_checked`] otherwise.
    pub fn apply_unit(
        &self,
        from: NodeId,
        staged: StagedParts,
        tail: Vec<Change>,
        cursor: Option<Seq>,
        access: Option<&dyn crate::sync::AccessControl>,
    ) -> Result<ApplyOutcome> {
        self.apply_unit_with(from, staged, tail, cursor, access, Sender::Full)
    }

    /// [`Database::apply_unit`] from a partial replica (a peer that holds only part of our
    /// records: its policy, our read rules): a write of it that loses here to a concurrent
    /// one without being applied is also recorded as a conflict here. Elsewhere the loser's
    /// writer records it when the winner reaches it, but a partial replica may never get the
    /// winner: it took the record out of its view, or the replica's own write did and the
    /// replica dropped its copy (its write acknowledged) before the winner came.
    ///
    /// The records of such writes, and of writes `access` refused, are also noted for the
    /// peer, in the unit's transaction, with the peer note `evicts_unconfirmed_after` set to
    /// `evicts_after` unless it holds an earlier position: the sync session evicts those
    /// records at the replica if they are outside its view (or restates their tombstone),
    /// and must still know them after a restart. They leave no feed row to derive that from
    /// (see [`ApplyOutcome::ignored`]).
    pub fn apply_unit_from_partial_replica(
        &self,
        from: NodeId,
        staged: StagedParts,
        tail: Vec<Change>,
        cursor: Option<Seq>,
        access: Option<&dyn crate::sync::AccessControl>,
        evicts_after: Seq,
    ) -> Result<ApplyOutcome> {
        let sender = Sender::PartialReplica { evicts_after };
        self.apply_unit_with(from, staged, tail, cursor, access, sender)
    }

    fn apply_unit_with(
        &self,
        from: NodeId,
        staged: StagedParts,
        tail: Vec<Change>,
        cursor: Option<Seq>,
        access: Option<&dyn crate::sync::AccessControl>,
        sender: Sender,
    ) -> Result<ApplyOutcome> {
        let now = self.now_ms();
        if cursor.is_some() {
            // The unit stores the received cursor with its data: a note is older.
            self.noted_cursors().forget(from, PeerDirection::Received);
        }
        // The clock check needs no read of the file.
        let inner = self.lock_bare()?;
        // Check clocks before touching anything: a timestamp from the far future is refused,
        // not adopted (it would drag every later local write with it). Staged parts were
        // checked when they arrived.
        for c in tail.iter().flat_map(|c| &c.cells) {
            inner
                .clock
                .check(c.version.hlc, now)
                .map_err(ApplyError::from)?;
        }
        for ch in &tail {
            validate_collection_name(&ch.collection)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            for c in &ch.cells {
                validate_cell(c).map_err(ApplyError::Invalid)?;
            }
        }
        drop(inner);
        let server = self.is_server();
        let mut state = UnitApply::default();
        let mut tail = Some(tail);
        let (unit, summary) = self.transaction_bounded_summary(|tx| {
            // 0 means "written here", so peers are numbered from 1.
            let src = tx.inner.nodes.index(&from) + 1;
            let first_seq = tx.seq;
            if let Sender::PartialReplica { .. } = sender {
                tx.track_ignored();
            }
            let parts = staged.count;
            if parts > 0 {
                super::unit::check_staged(tx, from, staged)?;
            }
            for idx in 0..=parts {
                let changes = if idx < parts {
                    super::unit::staged_part(tx, from, staged.staging, idx)?
                } else {
                    tail.take().unwrap_or_default()
                };
                apply_segment(tx, src, changes, access, &mut state)?;
                // A large unit is written out as it goes, so memory holds one part.
                if tx.unspilled() >= UNIT_SPILL_RECORDS {
                    tx.spill()?;
                }
            }
            if parts > 0 {
                super::unit::discard_session_in(&tx.inner.conn, from, staged.staging)?;
            }
            // Each sender transaction was checked against TRANSACTION_CELLS_MAX on its own
            // (`apply_segment`); the unit as a whole is not a local transaction's size.
            for p in tx.records.iter_mut() {
                p.cells_changed = 0;
            }
            // The unit arrived as one consistent cut of the sender's feed; keep it one unit
            // for whoever we forward it to: every commit of it is delivered with the last.
            let last = link_to_last(tx, first_seq)?;
            if let Some(c) = cursor {
                tx.inner
                    .set_peer_cursor(from, PeerDirection::Received, c, tx.now_ms)?;
            }
            if let Sender::PartialReplica { evicts_after } = sender {
                let refused = state
                    .refused
                    .iter()
                    .map(|r| (r.rejection.collection.clone(), r.rejection.id));
                let unapplied: Vec<_> = state.ignored.iter().cloned().chain(refused).collect();
                if !unapplied.is_empty() {
                    note_unapplied_writes_in(tx.inner, from, &unapplied, evicts_after)?;
                }
            }
            let sender_seqs = (last >= first_seq).then_some((first_seq, last));
            let mut reassert: Vec<Reassertion> = Vec::new();
            if server {
                let me = tx.db.node_id();
                let losers = tx
                    .records
                    .iter()
                    .flat_map(|p| {
                        p.conflicts
                            .iter()
                            .map(move |(_, loser)| (p.coll, &p.collection, p.id, loser))
                    })
                    .chain(
                        tx.spilled_losers()
                            .iter()
                            .map(|(coll, name, id, loser)| (*coll, name, *id, loser)),
                    );
                for (coll, collection, id, loser) in losers {
                    if !tx
                        .inner
                        .policies
                        .get(&coll)
                        .is_some_and(|pol| pol.server_priority)
                    {
                        continue;
                    }
                    if let (CellKey::Field(f), CellValue::Value(v), true) =
                        (&loser.key, &loser.value, loser.version.node == me)
                    {
                        reassert.push(Reassertion {
                            collection: collection.clone(),
                            id,
                            field: f.to_string(),
                            value: v.clone(),
                            overwritten: loser.version,
                        });
                    }
                }
            }
            let mut restated_at = None;
            if !state.refused.is_empty() || !reassert.is_empty() {
                // In the unit's transaction, so that they are durable with its cursor: a
                // crash cannot leave the unit received and its answer never written.
                tx.begin_local_writes_after_received()?;
                tx.restore_accepted_values();
                restate_refused(tx, &state.refused)?;
                reassert_server_values(tx, &reassert)?;
                restated_at = tx.seq_used.then_some(tx.seq);
            }
            Ok((state.applied, sender_seqs, restated_at))
        })?;
        let (applied, sender_seqs, restated_at) = unit;
        #[cfg(debug_assertions)]
        if let Some((first, last)) = sender_seqs {
            // Later commits only ever delete rows at these positions (when they overwrite
            // cells), so the check holds after the fact: the whole test suite checks it.
            let mut inner = self.lock()?;
            let src = inner.nodes.index(&from) + 1;
            let foreign: i64 = inner.conn.query_row(
                "SELECT count(*) FROM feed WHERE seq >= ?1 AND seq <= ?2 AND src != ?3",
                params![first.0 as i64, last.0 as i64, src as i64],
                |r| r.get(0),
            )?;
            debug_assert_eq!(foreign, 0, "a unit's positions hold rows from elsewhere");
        }
        Ok(ApplyOutcome {
            applied,
            rejected: state.refused.into_iter().map(|r| r.rejection).collect(),
            sender_seqs,
            ignored: state.ignored,
            refused_losers: state.refused_losers,
            conflicts: summary.conflicts_opened,
            restated_at,
        })
    }

    /// How far this node has received (`Received`) or sent and seen acknowledged (`Acked`,
    /// `Stable`) the feed of / to `peer` (0: no record).
    pub fn peer_cursor(&self, peer: NodeId, direction: PeerDirection) -> Result<Seq> {
        Ok(self
            .peer_cursor_recorded(peer, direction)?
            .unwrap_or(Seq(0)))
    }

    /// [`Database::peer_cursor`], `None` when there is no record: noted, else stored.
    pub(crate) fn peer_cursor_recorded(
        &self,
        peer: NodeId,
        direction: PeerDirection,
    ) -> Result<Option<Seq>> {
        if let Some(noted) = self.noted_cursors().get(peer, direction) {
            return Ok(Some(noted));
        }
        let inner = self.lock()?;
        let cursor = inner
            .conn
            .prepare_cached("SELECT cursor FROM peers WHERE node = ?1 AND direction = ?2")?
            .query_row(params![&peer.0[..], direction.as_str()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?;
        Ok(cursor.map(|c| Seq(c.max(0) as u64)))
    }

    /// Record a cursor, now (a cursor noted by [`Database::note_peer_cursor`] and not yet
    /// stored is replaced).
    pub fn set_peer_cursor(
        &self,
        peer: NodeId,
        direction: PeerDirection,
        cursor: Seq,
    ) -> Result<()> {
        self.noted_cursors().forget(peer, direction);
        let now = self.now_ms();
        let mut inner = self.lock_write()?;
        inner.set_peer_cursor(peer, direction, cursor, now)?;
        inner.commit()
    }

    /// Note how far `peer` acknowledged our feed (`Acked`) or we have read its feed
    /// (`Received`). Noted cursors are stored together, in one transaction, once the oldest
    /// has waited [`ACK_PERSIST_INTERVAL_MS`](crate::limits::ACK_PERSIST_INTERVAL_MS)
    /// (checked here), by [`Database::store_noted_cursors`], before GC, and when the handle
    /// is dropped; this handle's [`Database::peer_cursor`] and [`Database::peers`] see them
    /// at once. For cursors that may be stored late (both are advisory for where sync
    /// resumes): with many sessions, a write per session cost a relay a commit per client
    /// per second (see `noted_cursors.rs`).
    pub fn note_peer_cursor(
        &self,
        peer: NodeId,
        direction: PeerDirection,
        cursor: Seq,
    ) -> Result<()> {
        let now = self.now_ms();
        let due = {
            let mut noted = self.noted_cursors();
            noted.note(peer, direction, cursor, now);
            noted.due(now, crate::limits::ACK_PERSIST_INTERVAL_MS)
        };
        if due {
            match self.store_noted_cursors() {
                // They stay noted and are stored once the file takes writes again (tried
                // an interval later): a cursor stored late only repeats a little sync.
                Err(e) if e.store_refuses_writes() => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Store every cursor noted by [`Database::note_peer_cursor`], and every peer note
    /// waiting for the disk ([`Database::set_peer_notes_or_wait`]), now, in one transaction.
    /// On failure they stay noted, for the next try (by `note_peer_cursor`, one interval
    /// later).
    pub fn store_noted_cursors(&self) -> Result<()> {
        // Held through the write: see the lock order in `noted_cursors.rs`.
        let mut noted = self.noted_cursors();
        if noted.is_empty() {
            return Ok(());
        }
        let stored = (|| {
            let mut inner = self.lock_write()?;
            for (peer, direction, cursor, noted_ms) in noted.entries() {
                inner.set_peer_cursor(peer, direction, cursor, noted_ms)?;
            }
            for (peer, name, value) in noted.notes() {
                set_peer_note_in(&inner.conn, peer, name, value)?;
            }
            inner.commit()
        })();
        match stored {
            Ok(()) => noted.clear(),
            Err(_) => noted.retry_later(self.now_ms()),
        }
        stored
    }

    pub(super) fn noted_cursors(
        &self,
    ) -> std::sync::MutexGuard<'_, super::noted_cursors::NotedCursors> {
        self.noted_cursors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A small per-peer note kept with the sync state (e.g. the view a sender last served the
    /// peer, or the policy a receiver subscribed with). Stored in `meta` as
    /// `peer:<node>:<name>`.
    pub fn peer_note(&self, peer: NodeId, name: &str) -> Result<Option<String>> {
        if let Some(waiting) = self.noted_cursors().waiting_note(peer, name) {
            return Ok(waiting);
        }
        peer_note_in(&*self.lock()?, peer, name)
    }

    /// Set (`Some`) or clear (`None`) a per-peer note (see [`Database::peer_note`]).
    pub fn set_peer_note(&self, peer: NodeId, name: &str, value: Option<&str>) -> Result<()> {
        self.set_peer_notes(peer, &[(name, value)])
    }

    /// [`Database::set_peer_note`] for several notes, in one transaction.
    pub fn set_peer_notes(&self, peer: NodeId, notes: &[(&str, Option<&str>)]) -> Result<()> {
        // Taken first (the lock order in `noted_cursors.rs`): a note waiting for the disk
        // must not be stored over this newer one.
        let mut noted = self.noted_cursors();
        let mut inner = self.lock_write()?;
        for (name, value) in notes {
            set_peer_note_in(&inner.conn, peer, name, *value)?;
        }
        inner.commit()?;
        for (name, _) in notes {
            noted.forget_note(peer, name);
        }
        Ok(())
    }

    /// [`Database::set_peer_notes`] for a session's bookkeeping about its peer, which may be
    /// written late: when the file takes no writes (the disk is full, or the file was
    /// deleted: [`Error::store_refuses_writes`](crate::Error)), the notes wait in memory,
    /// seen by this handle's [`Database::peer_note`], and are stored with the noted cursors
    /// (see `noted_cursors.rs` for what that costs). Other errors, and a full waiting list,
    /// are returned.
    pub(crate) fn set_peer_notes_or_wait(
        &self,
        peer: NodeId,
        notes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        match self.set_peer_notes(peer, notes) {
            Err(e) if e.store_refuses_writes() => {
                let now = self.now_ms();
                let mut noted = self.noted_cursors();
                for (name, value) in notes {
                    if !noted.note_waiting(peer, name, *value, now) {
                        return Err(e);
                    }
                }
                Ok(())
            }
            r => r,
        }
    }

    /// Name `records` in [`NOTE_EVICTS_UNAPPLIED`] and move [`NOTE_EVICTS`] back to `after`
    /// if it is later or unset, in one transaction: EVICTs or restatements of them are about
    /// to go to `peer`, and may be lost with the connection.
    pub(crate) fn note_view_updates_unconfirmed(
        &self,
        peer: NodeId,
        records: &[(String, RecordId)],
        after: Seq,
    ) -> Result<()> {
        let mut inner = self.lock_write()?;
        note_unapplied_writes_in(&inner, peer, records, after)?;
        inner.commit()
    }

    /// The records where a write of `peer`, a partial replica, was not applied here (lost or
    /// refused), and those named by EVICTs or restatements not yet confirmed, since its
    /// sessions last confirmed their evictions (noted by
    /// [`Database::apply_unit_from_partial_replica`] and
    /// [`Database::note_view_updates_unconfirmed`]; cleared with the peer note
    /// `evicts_unconfirmed_after`).
    pub(crate) fn unapplied_writes(&self, peer: NodeId) -> Result<Vec<(String, RecordId)>> {
        unapplied_writes_in(&*self.lock()?, peer)
    }

    /// Every known peer with its cursors and last contact.
    pub fn peers(&self) -> Result<Vec<PeerInfo>> {
        // Noted first (not under the handle's lock, see `noted_cursors.rs`): a cursor
        // stored in between is then read from the file, newer or the same.
        let noted: Vec<(NodeId, PeerDirection, Seq, u64)> =
            self.noted_cursors().entries().collect();
        let inner = self.lock()?;
        let mut stmt = inner.conn.prepare(
            "SELECT node, direction, cursor, last_contact_ms FROM peers
             WHERE direction <> 'clock' ORDER BY node, direction",
        )?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<PeerInfo> = Vec::new();
        // Peers with a stable cursor of their own (the others count theirs as `acked`).
        let mut has_stable: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        while let Some(r) = rows.next()? {
            let node: [u8; 16] = r.get::<_, Vec<u8>>(0)?.try_into().map_err(|_| {
                Error::Corrupted(crate::codec::DecodeError::Malformed("bad peer id".into()))
            })?;
            let node = NodeId(node);
            let dir: String = r.get(1)?;
            let cursor = Seq(r.get::<_, i64>(2)? as u64);
            let last: u64 = r.get::<_, i64>(3)? as u64;
            if out.last().is_none_or(|p| p.node != node) {
                out.push(PeerInfo::new(node));
            }
            let p = out.last_mut().expect("pushed");
            match dir.as_str() {
                "recv" => p.received = cursor,
                "stable" => {
                    p.stable = cursor;
                    has_stable.insert(node);
                }
                _ => p.acked = cursor,
            }
            p.last_contact_ms = p.last_contact_ms.max(last);
        }
        drop(rows);
        drop(stmt);
        for (node, direction, cursor, at) in noted {
            let i = match out.binary_search_by(|p| p.node.cmp(&node)) {
                Ok(i) => i,
                Err(i) => {
                    out.insert(i, PeerInfo::new(node));
                    i
                }
            };
            match direction {
                PeerDirection::Received => out[i].received = cursor,
                PeerDirection::Acked => out[i].acked = cursor,
                PeerDirection::Stable => {
                    out[i].stable = cursor;
                    has_stable.insert(node);
                }
            }
            out[i].last_contact_ms = out[i].last_contact_ms.max(at);
        }
        for p in &mut out {
            p.stable = if has_stable.contains(&p.node) {
                p.stable.min(p.acked)
            } else {
                p.acked
            };
            p.relay = super::gc::is_server(&inner, p.node)?;
            p.pushes_only = super::gc::pushes_only(&inner, p.node)?;
        }
        Ok(out)
    }

    /// Unresolved conflicts, optionally of one collection, oldest first.
    pub fn conflicts(&self, collection: Option<&str>) -> Result<Vec<Conflict>> {
        self.conflicts_where(collection, false)
    }

    /// How many conflicts are open (not resolved): what [`Database::conflicts`] would list,
    /// counted on the index without reading them (a relay's `/metrics` asks every scrape).
    pub fn open_conflict_count(&self) -> Result<u64> {
        let inner = self.lock()?;
        Ok(inner.conn.query_row(
            "SELECT count(*) FROM conflicts WHERE resolved = 0",
            [],
            |r| r.get(0),
        )?)
    }

    /// Every recorded conflict, resolved or not, optionally of one collection.
    pub fn conflicts_all(&self, collection: Option<&str>) -> Result<Vec<Conflict>> {
        self.conflicts_where(collection, true)
    }

    fn conflicts_where(
        &self,
        collection: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<Conflict>> {
        let inner = self.lock()?;
        let coll = match collection {
            Some(name) => match inner.collection_id(name) {
                Some(c) => Some(c),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let mut stmt = inner.conn.prepare_cached(
            "SELECT cid, coll, id, cell, winner, winner_hlc, winner_node, loser, loser_hlc, loser_node, resolved
             FROM conflicts WHERE (resolved = 0 OR ?2) AND (?1 IS NULL OR coll = ?1) ORDER BY cid",
        )?;
        let mut rows = stmt.query(params![coll, include_resolved])?;
        let mut out = Vec::new();
        // Each conflict's collection id and cell, to compare with the record's cell now.
        let mut cells = Vec::new();
        let bad = |m: String| Error::Corrupted(crate::codec::DecodeError::Malformed(m));
        while let Some(r) = rows.next()? {
            let node = |i: i64| {
                inner
                    .nodes
                    .id(i as u64)
                    .ok_or_else(|| bad(format!("unknown node {i}")))
            };
            let key = key_from_bytes(&r.get::<_, Vec<u8>>(3)?)?;
            // A conflict over the record as a whole keeps each insert as the record's fields.
            let shown = |b: &[u8]| match key {
                CellKey::Record => record_value_from_bytes(b),
                _ => value_from_bytes(b),
            };
            let id: [u8; 16] = r
                .get::<_, Vec<u8>>(2)?
                .try_into()
                .map_err(|_| bad("bad record id".into()))?;
            cells.push((r.get::<_, i64>(1)?, key.clone()));
            out.push(Conflict {
                id: r.get(0)?,
                collection: inner
                    .collection_names
                    .get(&r.get(1)?)
                    .cloned()
                    .unwrap_or_default(),
                record: RecordId(id),
                cell: key.display_name(),
                field: key.field().map(str::to_owned),
                element: match &key {
                    CellKey::Element(_, bytes) => crate::codec::value::from_bytes(bytes).ok(),
                    _ => None,
                },
                counter_node: match &key {
                    CellKey::Counter(_, node) => Some(*node),
                    _ => None,
                },
                winner: user_value(&shown(&r.get::<_, Vec<u8>>(4)?)?),
                winner_version: Version {
                    hlc: Hlc(r.get::<_, i64>(5)? as u64),
                    node: node(r.get(6)?)?,
                },
                loser: user_value(&shown(&r.get::<_, Vec<u8>>(7)?)?),
                loser_version: Version {
                    hlc: Hlc(r.get::<_, i64>(8)? as u64),
                    node: node(r.get(9)?)?,
                },
                resolved: r.get(10)?,
                superseded: false,
            });
        }
        drop(rows);
        drop(stmt);
        for (c, (coll, key)) in out.iter_mut().zip(cells) {
            let now: Option<(u64, Vec<u8>)> = inner
                .conn
                .prepare_cached("SELECT seq, body FROM records WHERE coll = ?1 AND id = ?2")?
                .query_row(params![coll, &c.record.0[..]], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((seq, bytes)) = now {
                let state = body::decode(&bytes, Seq(seq), &inner.nodes, &inner.fields)?;
                c.superseded = state
                    .cells()
                    .iter()
                    .any(|cell| cell.key == key && cell.version > c.winner_version);
            }
        }
        Ok(out)
    }

    /// Settle a conflict. With `Some(value)`, that value is written to the field as a new
    /// write (which syncs like any other); with `None`, the current winner stays. Either way
    /// the conflict is marked resolved. A conflict over the record as a whole (`$record`,
    /// listed as whole records) has no field to write a value to: a value is refused with
    /// [`Error::InvalidArgument`] and the conflict stays open.
    ///
    /// When the record is deleted and the delete is the one that won the conflict, a value
    /// undoes the delete: the record is inserted again as this node held it just before the
    /// delete (rebuilt from history; counters and sets as the values they read as then), with
    /// `value` in the conflict's field. When it was deleted otherwise (by a later delete), or
    /// history no longer goes back to before the winning delete, a value is refused with
    /// [`Error::InvalidArgument`] and the conflict stays open: resolve it with `None`, and
    /// insert the record again if it should exist. When this node holds no copy of the
    /// record (a partial replica evicted it), the value is written as a field write, which
    /// merges into the record wherever it lives (not an insert, which would replace it there).
    /// A tombstone removed by GC leaves no copy either: such a record, deleted everywhere,
    /// comes back holding that field alone.
    pub fn resolve_conflict(&self, conflict_id: i64, value: Option<Value>) -> Result<()> {
        let no_open_conflict = || {
            Error::InvalidArgument(format!(
                "no open conflict {conflict_id} (unknown, or resolved already: see \
                 `conflicts`)"
            ))
        };
        let c = self
            .conflicts(None)?
            .into_iter()
            .find(|c| c.id == conflict_id)
            .ok_or_else(no_open_conflict)?;
        self.resolve_open_conflict(&c, value, no_open_conflict)
    }

    /// [`Database::resolve_conflict`] of `c`, found open before the write transaction
    /// began, and perhaps resolved by another handle since.
    fn resolve_open_conflict(
        &self,
        c: &Conflict,
        value: Option<Value>,
        no_open_conflict: impl Fn() -> Error,
    ) -> Result<()> {
        let conflict_id = c.id;
        self.transaction_bounded(|tx| {
            // Claimed inside the write transaction: checked only before it, two threads or
            // processes resolving the same conflict both found it open, and both wrote
            // their value.
            let claimed = tx.inner.conn.execute(
                "UPDATE conflicts SET resolved = 1 WHERE cid = ?1 AND resolved = 0",
                [conflict_id],
            )?;
            if claimed == 0 {
                return Err(no_open_conflict());
            }
            if value.is_some() && c.field.is_none() {
                // Was taken as resolved with the value ignored, silently (an audit of the
                // embedded API, 2026-12-07).
                return Err(Error::InvalidArgument(format!(
                    "conflict {conflict_id} is about record {} in {:?} as a whole (an insert \
                     or a delete that replaced it), not one field: resolve it without a \
                     value, then write the fields the record should hold",
                    c.record, c.collection
                )));
            }
            if let (Some(v), Some(field)) = (value, &c.field) {
                // One element of a set: the value says whether it is in the set (a value for
                // the whole field would replace the set: `--loser` wrote `true` over it).
                if let Some(element) = &c.element {
                    let patch = match v {
                        Value::Bool(true) => {
                            super::Patch::new().add(field.clone(), vec![element.clone()])
                        }
                        Value::Bool(false) => {
                            super::Patch::new().remove(field.clone(), vec![element.clone()])
                        }
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "conflict {conflict_id} is about one element of set field \
                                 {field:?}: resolve it with true (the element in the set), \
                                 false (left out), or no value"
                            )))
                        }
                    };
                    // Deleted here: restored whole first, as for a field (below).
                    if tx.get(&c.collection, c.record)?.is_none() {
                        match fields_before_winning_delete(tx, c)? {
                            Some(fields) => tx.insert_with_id(&c.collection, c.record, fields)?,
                            None => {
                                return Err(Error::InvalidArgument(format!(
                                    "this node holds no copy of record {} in {:?} (a partial \
                                     replica evicted it): resolve conflict {conflict_id} \
                                     without a value, and change the set where the record \
                                     lives",
                                    c.record, c.collection
                                )))
                            }
                        }
                    }
                    return tx.update(&c.collection, c.record, patch);
                }
                if c.counter_node.is_some() {
                    return Err(Error::InvalidArgument(format!(
                        "conflict {conflict_id} is about one node's contribution to counter \
                         field {field:?}: resolve it without a value, then adjust the counter \
                         with an increment"
                    )));
                }
                match tx.get(&c.collection, c.record)? {
                    Some(_) => tx.update(
                        &c.collection,
                        c.record,
                        super::Patch::new().set(field.clone(), v),
                    )?,
                    // Deleted here: a field written alone would bring the record back
                    // holding only that field (a write newer than a delete survives it), so
                    // restore it whole, or refuse.
                    None => match fields_before_winning_delete(tx, c)? {
                        Some(mut fields) => {
                            fields.insert(field.clone(), v);
                            tx.insert_with_id(&c.collection, c.record, fields)?;
                        }
                        None => {
                            tx.set_field_of_record_not_held(&c.collection, c.record, field, v)?
                        }
                    },
                }
            }
            Ok(())
        })
    }
}

/// What resolving conflict `c` with a value restores when its record is not live here: the
/// fields the record held here just before the delete that won the conflict (from history),
/// to be inserted again with the chosen value. Counters and sets come back as the plain values
/// they read as then. `None` when this node holds no copy of the record (a partial replica
/// evicted it; it lives on elsewhere, where a field write merges as an update). Refused with
/// an error saying what to do instead when the record was deleted by anything but that delete
/// (a later delete, by a writer that had seen the conflict's writes, is not undone by
/// resolving) or history no longer goes back to before it.
fn fields_before_winning_delete(
    tx: &mut super::Tx<'_>,
    c: &Conflict,
) -> Result<Option<std::collections::BTreeMap<String, Value>>> {
    let refuse = |why: &str| {
        Error::InvalidArgument(format!(
            "record {} in {:?} is deleted and {why}, so resolving conflict {} with a value \
             would bring it back holding field {:?} alone: resolve it without a value to leave \
             the record deleted, then insert the record again with all its fields if it \
             should exist",
            c.record,
            c.collection,
            c.id,
            c.field.as_deref().unwrap_or_default(),
        ))
    };
    let stored = match tx.inner.collection_id(&c.collection) {
        Some(coll) => tx
            .inner
            .record_state(coll, c.record)?
            .map(|(s, _)| (coll, s)),
        None => None,
    };
    let Some((coll, current)) = stored else {
        return Ok(None);
    };
    let winning_delete = current.cell(&CellKey::Record).filter(|r| {
        r.value == CellValue::Absent && r.version == c.winner_version && c.winner.is_none()
    });
    let Some(delete) = winning_delete else {
        return Err(refuse(
            "was deleted after this conflict (not by the delete that won it)",
        ));
    };
    let before = Seq(delete.seq.0.saturating_sub(1));
    match tx.inner.state_at(coll, c.record, &current, before)? {
        Some(state) if state.is_live() => Ok(Some(state.into_fields())),
        _ => Err(refuse(
            "history no longer holds it as it was before the delete that won this conflict",
        )),
    }
}

/// Refuse cells that no BlazeDB could have written.
pub(super) fn validate_cell(c: &Cell) -> Result<(), String> {
    if let Some(f) = c.key.field() {
        validate_field_name(f).map_err(|e| e.to_string())?;
    }
    let ok = matches!(
        (&c.key, &c.value),
        (CellKey::Record, CellValue::Present | CellValue::Absent)
            | (CellKey::Field(_), CellValue::Value(_) | CellValue::Absent)
            | (CellKey::Counter(..), CellValue::Count(_))
            | (CellKey::Element(..), CellValue::Present | CellValue::Absent)
    );
    if !ok {
        return Err(format!(
            "cell {} cannot hold {:?}",
            c.key.display_name(),
            c.value
        ));
    }
    if let CellKey::Element(_, bytes) = &c.key {
        // An element must be one canonical encoded value, or it would sync as invisible junk.
        let v =
            crate::codec::value::from_bytes(bytes).map_err(|e| format!("bad set element: {e}"))?;
        if crate::codec::value::to_bytes(&v) != *bytes {
            return Err("set element is not canonically encoded".into());
        }
    }
    if let CellValue::Value(v) = &c.value {
        super::write::validate_value(c.key.field().unwrap_or(""), v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The scan against the straightforward one it replaced (a body decode and a link query
    //! per row, no shortcut for excluded rows), on a feed of mixed sources with partly
    //! overwritten transactions (links) and applied units.
    use super::*;
    use crate::store::{OpenOptions, Patch};

    /// Two handles resolve one conflict, both having found it open before either wrote:
    /// the second is refused. The check ran outside the write transaction, so both wrote
    /// their value (the race `tests/sync_pair.rs` runs with threads, here interleaved
    /// deterministically).
    #[test]
    fn a_conflict_resolved_meanwhile_through_another_handle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = Database::open(&path, OpenOptions::default()).unwrap();
        let a2 = Database::open(&path, OpenOptions::default()).unwrap();
        let id = a.insert("c", [("t", Value::Int(1))]).unwrap();
        {
            let mut inner = a.lock_write().unwrap();
            let coll = inner.collections["c"];
            let key = crate::crdt::encoding::key_bytes(&CellKey::Field("t".into()));
            let value = |v| crate::crdt::encoding::value_bytes(&CellValue::Value(Value::Int(v)));
            inner
                .conn
                .execute(
                    "INSERT INTO conflicts (coll, id, cell, winner, winner_hlc, winner_node,
                     loser, loser_hlc, loser_node, seq) VALUES (?1, ?2, ?3, ?4, 2, 0, ?5, 1, 0, 1)",
                    params![coll, &id.0[..], key, value(1), value(0)],
                )
                .unwrap();
            inner.commit().unwrap();
        }
        let found = a.conflicts(None).unwrap().remove(0);
        a2.resolve_conflict(found.id, Some(Value::Int(2))).unwrap();
        let no_open = || Error::InvalidArgument("no open conflict".into());
        let second = a.resolve_open_conflict(&found, Some(Value::Int(3)), no_open);
        assert!(
            matches!(&second, Err(Error::InvalidArgument(m)) if m.contains("no open conflict")),
            "{second:?}"
        );
        assert_eq!(a.get("c", id).unwrap().unwrap().fields["t"], Value::Int(2));
        assert!(a.resolve_conflict(found.id, None).is_err());
    }

    #[allow(clippy::all)]
    fn reference_changes_since_in(
        inner: &crate::store::Inner,
        since: Seq,
        cells_max: usize,
        exclude_src: Option<NodeId>,
    ) -> Result<ChangeBatch> {
        let exclude = exclude_src
            .and_then(|n| inner.nodes.known(&n))
            .map(|i| i as i64 + 1);
        // Rows only up to the head of this snapshot: `next` must never move past a commit the
        // scan did not see, or that commit would never be sent.
        let head = inner.head_seq()?;
        // Each feed row comes with its record's body in one statement. A record with cells at
        // several seqs is decoded once: its cells are moved out as their seq comes up, and the
        // rest wait in `leftovers`.
        let mut stmt = inner.conn.prepare_cached(
            "SELECT f.seq, f.coll, f.id, f.src, r.seq, r.body FROM feed f \
             LEFT JOIN records r ON r.coll = f.coll AND r.id = f.id \
             WHERE f.seq > ?1 AND f.seq <= ?2 ORDER BY f.seq, f.coll, f.id",
        )?;
        let mut rows = stmt.query([since.0 as i64, head.0 as i64])?;
        let mut batch = ChangeBatch {
            changes: Vec::new(),
            next: since,
            more: false,
            needs_through: since,
        };
        let mut cells = 0usize;
        let mut leftovers: FastMap<(i64, [u8; 16]), Vec<Cell>> = FastMap::default();
        while let Some(row) = rows.next()? {
            let seq = Seq(row.get::<_, i64>(0)? as u64);
            if seq != batch.next {
                // At a commit boundary: stop once full, preferably at a consistent cut, but
                // never past four pages (the caller then sends a partial unit).
                let consistent = batch.next >= batch.needs_through;
                if cells >= cells_max && (consistent || cells >= cells_max.saturating_mul(4)) {
                    batch.more = true;
                    break;
                }
                // Every commit between the previous group and this one, including commits
                // whose cells were all overwritten since, may require later commits.
                let link: Option<i64> = inner
                    .conn
                    .prepare_cached("SELECT max(t) FROM feed_links WHERE s > ?1 AND s <= ?2")?
                    .query_row([batch.next.0 as i64, seq.0 as i64], |r| r.get(0))?;
                if let Some(t) = link {
                    batch.needs_through = batch.needs_through.max(Seq(t as u64));
                }
            }
            batch.next = seq;
            let (coll, src): (i64, i64) = (row.get(1)?, row.get(3)?);
            if exclude.is_some_and(|e| e == src) {
                continue;
            }
            let id: [u8; 16] = row
                .get_ref(2)?
                .as_blob()
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    Error::Corrupted(crate::codec::DecodeError::Malformed("bad record id".into()))
                })?;
            let all = match leftovers.remove(&(coll, id)) {
                Some(cells) => cells,
                None => {
                    let Some(rseq) = row.get::<_, Option<i64>>(4)? else {
                        return Err(Error::Corrupted(crate::codec::DecodeError::Malformed(
                            format!("feed row {seq} names a record that is not stored"),
                        )));
                    };
                    let bytes = row.get_ref(5)?.as_blob().map_err(rusqlite::Error::from)?;
                    body::decode(bytes, Seq(rseq as u64), &inner.nodes, &inner.fields)?.into_cells()
                }
            };
            let (selected, rest): (Vec<Cell>, Vec<Cell>) =
                all.into_iter().partition(|c| c.seq == seq);
            if !rest.is_empty() {
                leftovers.insert((coll, id), rest);
            }
            if selected.is_empty() {
                continue;
            }
            cells += selected.len();
            let collection = collection_name(inner, coll)?;
            batch.changes.push(Change {
                seq,
                collection,
                id: RecordId(id),
                cells: selected,
            });
        }
        if !batch.more {
            // Reached the end: commits past the last row left no cells (all overwritten).
            drop(rows);
            drop(stmt);
            batch.next = batch.next.max(head);
        }
        batch.needs_through = batch.needs_through.max(batch.next);
        Ok(batch)
    }

    #[test]
    fn scan_equals_the_reference_scan() {
        let dir = tempfile::tempdir().unwrap();
        let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
        let b = Database::open(dir.path().join("b.db"), OpenOptions::default()).unwrap();
        let mut ids = Vec::new();
        let mut a_sent = Seq(0);
        for round in 0..8i64 {
            a.transaction(|tx| {
                for k in 0..3i64 {
                    ids.push(tx.insert("c", [("n", Value::Int(k)), ("m", Value::Int(round))])?);
                }
                Ok(())
            })
            .unwrap();
            // Partly overwrite earlier transactions: links.
            a.transaction(|tx| {
                for id in ids.iter().step_by(2) {
                    tx.update("c", *id, Patch::new().set("m", round * 7))?;
                }
                Ok(())
            })
            .unwrap();
            if round % 2 == 1 {
                let batch = a.changes_since(a_sent, 5, None).unwrap();
                b.apply_changes(a.node_id(), &batch.changes, Some(batch.next))
                    .unwrap();
                a_sent = batch.next;
            }
            b.transaction(|tx| {
                for id in ids.iter().skip(round as usize % 3).step_by(3) {
                    if tx.get("c", *id)?.is_some() {
                        tx.update("c", *id, Patch::new().set("n", -round))?;
                    }
                }
                tx.insert("d", [("r", Value::Int(round))])?;
                Ok(())
            })
            .unwrap();
        }
        for db in [&a, &b] {
            let head = db.last_seq().unwrap();
            let inner = db.lock().unwrap();
            let excluded = [
                None,
                Some(a.node_id()),
                Some(b.node_id()),
                Some(NodeId::random()),
            ];
            for since in 0..=head.0 + 1 {
                for cells_max in [1usize, 2, 3, 5, 8, 1000] {
                    for ex in excluded {
                        let exclude = ex.and_then(|n| inner.nodes.known(&n)).map(|i| i as i64 + 1);
                        let (got, _) =
                            changes_since_in(&inner, Seq(since), cells_max, exclude).unwrap();
                        let want =
                            reference_changes_since_in(&inner, Seq(since), cells_max, ex).unwrap();
                        assert_eq!(
                            got, want,
                            "since {since} cells_max {cells_max} exclude {ex:?}"
                        );
                    }
                }
            }
        }
    }
}
