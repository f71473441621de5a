//! Eviction: dropping this replica's copy of records (or of some fields) without deleting
//! them anywhere else.
//!
//! A partial replica evicts a record when it stops matching the replica's sync policy
//! (move-out) or when access to it is revoked. That is not a delete: no tombstone is written,
//! no feed position is taken, no history row is added, and nothing about it is ever sent to a
//! peer, so the record stays intact on every other replica. Locally, everything that names
//! the record goes, in one SQLite transaction: the `records` row, its `feed` rows (exactly the
//! rows at its cells' seqs, so no orphan is left for `changes_since` to trip on), its index
//! entries and its history rows. Its conflicts stay until the application resolves them:
//! they are the record of values that lost, and a replica's write that lost to the very write
//! that took the record out of its view is listed nowhere else.
//!
//! If the record later matches again (move-in), the peer sends it whole and it is applied like
//! a new record. A write that the application makes to an evicted id creates a fresh local
//! record; that is the application's choice.
//!
//! **Watchers** receive a [`EventKind::Deleted`](crate::EventKind::Deleted) event for every
//! evicted live record (with the record as it was and the current feed position as `seq`,
//! since eviction takes none): a watcher that mirrors a collection must drop the record from
//! its view. Commit listeners (sync drivers) are not woken: there is nothing to send.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension};

use super::{body, Database, Inner};
use crate::crdt::{Cell, RecordState};
use crate::error::Result;
use crate::store::read::Record;
use crate::types::Seq;
use crate::watch::{Event, EventKind};
use crate::{NodeId, RecordId};

/// Keep records a peer has not seen yet: with a guard, [`Database::evict`] keeps every record
/// that has changes `peer` has not acknowledged (a feed row past `acked` that did not come
/// from `peer`), so a local write is never lost by evicting it before it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictGuard {
    /// The peer whose policy caused the eviction (usually the one we sync the record with).
    pub peer: NodeId,
    /// How far `peer` acknowledged this node's feed.
    pub acked: Seq,
}

/// Values of this node a peer refused (its access rules: a REJECT) in the records being
/// evicted: before each record goes, its cells written here at feed positions past `after`
/// are recorded as conflicts lost to `peer` ("Nothing silently lost"). A refused write to a
/// record the writer may not read (a closed collection, a read rule it fails) is never
/// restated to it, so without this its eviction was the last trace of the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedBy {
    /// The peer that refused them.
    pub peer: NodeId,
    /// Our feed position the peer had acknowledged when it refused them: cells of ours past
    /// it were in the refused unit (or sent with it).
    pub after: Seq,
}

/// What [`Database::evict`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictOutcome {
    /// Records whose local copy was removed (live records and tombstones).
    pub evicted: usize,
    /// Records kept because the guard's peer has not seen all their changes yet.
    pub kept_pending: usize,
}

impl Database {
    /// The records with feed rows in `(after, through]`: what changed there and still holds
    /// cells at those positions (a record changed again later has rows later too), each with
    /// whether one of those rows came from peer `src` (a change it wrote).
    pub fn feed_records(
        &self,
        after: Seq,
        through: Seq,
        src: NodeId,
    ) -> Result<Vec<(String, RecordId, bool)>> {
        let inner = self.lock()?;
        // Feed rows name their source by node index + 1 (0: written here).
        let src = inner.nodes.known(&src).map_or(-1, |i| i as i64 + 1);
        let mut stmt = inner.conn.prepare_cached(
            "SELECT c.name, f.id, MAX(f.src = ?3) FROM feed f JOIN collections c ON c.id = f.coll \
             WHERE f.seq > ?1 AND f.seq <= ?2 GROUP BY c.name, f.id",
        )?;
        let mut rows = stmt.query(params![after.0 as i64, through.0 as i64, src])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let id = record_id(row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?;
            out.push((name, id, row.get::<_, i64>(2)? == 1));
        }
        Ok(out)
    }

    /// Remove the local copy of records without deleting them: no tombstone, no feed
    /// position, no history entry, nothing sent to peers (see the module docs). Ids with no
    /// stored row are skipped. With `guard`, records with changes the guard's peer has not
    /// seen are kept and counted in [`EvictOutcome::kept_pending`]. One SQLite transaction.
    pub fn evict(
        &self,
        collection: &str,
        ids: &[RecordId],
        guard: Option<EvictGuard>,
    ) -> Result<EvictOutcome> {
        let ids: Vec<(RecordId, Option<RefusedBy>)> = ids.iter().map(|&id| (id, None)).collect();
        self.evict_keeping_refused(collection, &ids, guard)
    }

    /// [`Database::evict`], where a record paired with [`RefusedBy`] first has the values of
    /// ours the peer refused recorded as conflicts (`conflicts()` lists them: winner absent,
    /// versioned as the refused cell with the peer's node; loser our value), in the same
    /// transaction as the eviction.
    pub fn evict_keeping_refused(
        &self,
        collection: &str,
        ids: &[(RecordId, Option<RefusedBy>)],
        guard: Option<EvictGuard>,
    ) -> Result<EvictOutcome> {
        let mut outcome = EvictOutcome::default();
        let own = self.node;
        let mut inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(outcome);
        };
        let watched = self.watchers.is_watched();
        let mut events = Vec::new();
        write_tx(&mut inner, |inner| {
            let guard_src = guard.map(|g| (g.acked, inner.nodes.known(&g.peer).map(|i| i + 1)));
            let seq = inner.clock_row()?.0;
            for &(id, refused) in ids {
                let Some((state, rev)) = inner.record_state(coll, id)? else {
                    continue;
                };
                if let Some((acked, src)) = guard_src {
                    if has_unseen_changes(inner, coll, id, &state, acked, src)? {
                        outcome.kept_pending += 1;
                        continue;
                    }
                }
                if let Some(refused) = refused {
                    keep_refused_as_conflicts(inner, coll, id, &state, own, refused)?;
                }
                let live = state.is_live();
                if watched && live {
                    events.push(Event {
                        kind: EventKind::Deleted,
                        before: None,
                        seq,
                        record: Record {
                            collection: collection.to_owned(),
                            id,
                            rev,
                            fields: state.fields(),
                        },
                    });
                }
                remove_record(inner, coll, id, &state)?;
                outcome.evicted += 1;
            }
            Ok(())
        })?;
        // Before the lock is released, so that watchers see it in commit order (see
        // `Database::transaction`).
        self.watchers.publish(&events);
        drop(inner);
        Ok(outcome)
    }

    /// Remove every cell of `fields` (plain values, removals, counter contributions and set
    /// elements) from every record of `collection`, locally, with the same rules as
    /// [`Database::evict`]: no tombstone, no feed position, nothing sent. Used when a replica
    /// newly excludes fields from what it syncs. Their history rows and index entries go too
    /// (their conflicts stay, as for evicted records); the history of the other fields stays
    /// whole, so `get_at` shows each record as it was, without the evicted fields. A record
    /// left with no cells at all is removed. Returns how many
    /// records changed. Watchers get an `Updated` event for each live record whose visible
    /// fields changed (a `Deleted` one if it no longer exists).
    pub fn evict_fields(&self, collection: &str, fields: &[String]) -> Result<usize> {
        Ok(self.evict_fields_guarded(collection, fields, None)?.changed)
    }

    /// [`Database::evict_fields`], keeping with a guard the records whose cells in those
    /// fields include changes `guard.peer` has not acknowledged (written here, or received
    /// from a third node): they are ours to send first, or a replica that newly excludes a
    /// field would drop its own unsynced edit of it, everywhere (found by exercising
    /// `sync --exclude-fields`). [`FieldEviction::kept_until`] says how far the peer must
    /// acknowledge before evicting them too.
    pub fn evict_fields_guarded(
        &self,
        collection: &str,
        fields: &[String],
        guard: Option<EvictGuard>,
    ) -> Result<FieldEviction> {
        self.evict_fields_changed_since(collection, fields, guard, Seq(0))
    }

    /// [`Database::evict_fields_guarded`] over the records with a change after `since` in
    /// our feed only (all of them for `Seq(0)`): what a replica that already dropped those
    /// fields through `since` has to look at again, e.g. after its own writes of them. Found
    /// through the feed, so the other records are not read.
    pub fn evict_fields_changed_since(
        &self,
        collection: &str,
        fields: &[String],
        guard: Option<EvictGuard>,
        since: Seq,
    ) -> Result<FieldEviction> {
        let mut inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(FieldEviction::default());
        };
        if fields.is_empty() {
            return Ok(FieldEviction::default());
        }
        let mut kept_until: Option<Seq> = None;
        let mut kept_from: Option<Seq> = None;
        let mut kept_ids: BTreeSet<RecordId> = BTreeSet::new();
        let names: BTreeSet<&str> = fields.iter().map(String::as_str).collect();
        let watched = self.watchers.is_watched();
        let mut events = Vec::new();
        let changed = write_tx(&mut inner, |inner| {
            let seq = inner.clock_row()?.0;
            let guard_src = guard.map(|g| (g.acked, inner.nodes.known(&g.peer).map(|i| i + 1)));
            let rows: Vec<(Vec<u8>, u64, u64, Vec<u8>)> = {
                // Every cell of a record has its feed row (at the cell's position), so the
                // records with a cell newer than `since` are those the feed lists after it.
                let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
                if since == Seq(0) {
                    let mut stmt = inner
                        .conn
                        .prepare("SELECT id, rev, seq, body FROM records WHERE coll = ?1")?;
                    let rows = stmt.query_map([coll], row)?;
                    rows.collect::<rusqlite::Result<_>>()?
                } else {
                    let mut stmt = inner.conn.prepare(
                        "SELECT id, rev, seq, body FROM records WHERE coll = ?1 AND id IN \
                         (SELECT id FROM feed WHERE seq > ?2 AND coll = ?1)",
                    )?;
                    let rows = stmt.query_map(params![coll, since.0 as i64], row)?;
                    rows.collect::<rusqlite::Result<_>>()?
                }
            };
            let mut changed = 0usize;
            for (id, rev, row_seq, bytes) in rows {
                let id = record_id(&id)?;
                let state = body::decode(&bytes, Seq(row_seq), &inner.nodes, &inner.fields)?;
                if !state
                    .cells()
                    .iter()
                    .any(|c| c.key.field().is_some_and(|f| names.contains(f)))
                {
                    continue;
                }
                if let Some((acked, src)) = guard_src {
                    let mut pending = None;
                    for c in state.cells() {
                        let excluded = c.key.field().is_some_and(|f| names.contains(f));
                        if excluded && c.seq > acked && is_unseen(inner, c.seq, coll, id, src)? {
                            pending = pending.max(Some(c.seq));
                        }
                    }
                    if pending.is_some() {
                        kept_until = kept_until.max(pending);
                        kept_from = match kept_from {
                            Some(k) => pending.min(Some(k)),
                            None => pending,
                        };
                        kept_ids.insert(id);
                        continue;
                    }
                }
                let kept: Vec<Cell> = state
                    .cells()
                    .iter()
                    .filter(|c| !c.key.field().is_some_and(|f| names.contains(f)))
                    .cloned()
                    .collect();
                let after = RecordState::from_cells(kept).map_err(|m| {
                    crate::Error::Corrupted(crate::codec::DecodeError::Malformed(m))
                })?;
                changed += 1;
                let before_fields = state.is_live().then(|| state.fields());
                let after_fields = after.is_live().then(|| after.fields());
                if watched && before_fields.is_some() && before_fields != after_fields {
                    events.push(Event {
                        before: before_fields.clone().map(std::sync::Arc::new),
                        kind: if after_fields.is_some() {
                            EventKind::Updated
                        } else {
                            EventKind::Deleted
                        },
                        seq,
                        record: Record {
                            collection: collection.to_owned(),
                            id,
                            rev: rev + 1,
                            fields: after_fields
                                .clone()
                                .or(before_fields.clone())
                                .unwrap_or_default(),
                        },
                    });
                }
                if after.is_empty() {
                    remove_record(inner, coll, id, &state)?;
                } else {
                    rewrite_record(inner, coll, id, rev + 1, &state, &after)?;
                }
            }
            delete_field_history(inner, coll, &names, &kept_ids)?;
            Ok(changed)
        })?;
        // Before the lock is released, so that watchers see it in commit order (see
        // `Database::transaction`).
        self.watchers.publish(&events);
        drop(inner);
        Ok(FieldEviction {
            changed,
            kept_until,
            kept_from,
        })
    }
}

/// What [`Database::evict_fields_guarded`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldEviction {
    /// Records whose excluded fields went.
    pub changed: usize,
    /// Records were kept for changes the guard's peer has not acknowledged, the newest at
    /// this position of our feed: evict again once the peer acknowledges it.
    pub kept_until: Option<Seq>,
    /// The oldest of those changes: an eviction again needs to look only at records changed
    /// from there on ([`Database::evict_fields_changed_since`] from just before it).
    pub kept_from: Option<Seq>,
}

/// Run `f` inside `BEGIN IMMEDIATE … COMMIT`; roll back (and forget cache entries made
/// inside) on error.
pub(super) fn write_tx<T>(inner: &mut Inner, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
    inner.begin_write()?;
    let r = f(inner).and_then(|v| {
        inner.nodes.flush(&inner.conn)?;
        inner.fields.flush(&inner.conn)?;
        inner.commit()?;
        Ok(v)
    });
    if r.is_err() {
        inner.rollback();
    }
    r
}

/// A record id read from a `BLOB` column.
pub(super) fn record_id(bytes: &[u8]) -> Result<RecordId> {
    let id: [u8; 16] = bytes.try_into().map_err(|_| {
        crate::Error::Corrupted(crate::codec::DecodeError::Malformed("bad record id".into()))
    })?;
    Ok(RecordId(id))
}

/// The distinct local seqs of a record's cells: exactly the seqs of its feed rows.
pub(super) fn cell_seqs(state: &RecordState) -> Vec<Seq> {
    let mut v: Vec<Seq> = state.cells().iter().map(|c| c.seq).collect();
    v.sort();
    v.dedup();
    v
}

/// Whether the record has a feed row past `acked` that did not come from the guard's peer
/// (`src`: its feed `src` number, `None` when that peer never sent us anything).
pub(super) fn has_unseen_changes(
    inner: &Inner,
    coll: i64,
    id: RecordId,
    state: &RecordState,
    acked: Seq,
    src: Option<u64>,
) -> Result<bool> {
    for s in cell_seqs(state).into_iter().filter(|s| *s > acked) {
        if is_unseen(inner, s, coll, id, src)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the record's feed row at `seq` holds a change the guard's peer (`src`, as in
/// [`has_unseen_changes`]) has not sent us, so it is ours to send it.
fn is_unseen(inner: &Inner, seq: Seq, coll: i64, id: RecordId, src: Option<u64>) -> Result<bool> {
    Ok(feed_src(inner, seq, coll, id)?.is_some_and(|r| Some(r) != src))
}

/// The `src` of the record's feed row at `seq` (0: written here; n: the peer numbered
/// n - 1), `None` without such a row.
pub(super) fn feed_src(inner: &Inner, seq: Seq, coll: i64, id: RecordId) -> Result<Option<u64>> {
    let src: Option<i64> = inner
        .conn
        .prepare_cached("SELECT src FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3")?
        .query_row(params![seq.0 as i64, coll, &id.0[..]], |r| r.get(0))
        .optional()?;
    Ok(src.map(|s| s as u64))
}

/// Delete a record's row, its feed rows, index entries and history (inside the caller's
/// transaction). Its conflicts stay: they are the record of values that lost, kept until the
/// application resolves them (a replica's write that lost to the very write that took the
/// record out of its view is listed nowhere else). Returns the number of history rows
/// removed.
pub(super) fn remove_record(
    inner: &mut Inner,
    coll: i64,
    id: RecordId,
    state: &RecordState,
) -> Result<u64> {
    inner.record_cache.forget(coll, id);
    let key = &id.0[..];
    for s in cell_seqs(state) {
        inner
            .conn
            .prepare_cached("DELETE FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3")?
            .execute(params![s.0 as i64, coll, key])?;
    }
    if state.is_live() {
        if let Some(indexed) = inner.indexes.get(&coll) {
            super::index::update_entries(
                &inner.conn,
                coll,
                id,
                indexed,
                &state.fields(),
                &Default::default(),
            )?;
        }
    }
    // The record's entries, found through its chain (read before its row goes).
    let chain = inner.history_chain(coll, id)?;
    let mut delete = inner
        .conn
        .prepare_cached("DELETE FROM history WHERE hid = ?1")?;
    for hid in &chain {
        delete.execute([hid])?;
    }
    drop(delete);
    let history = chain.len() as u64;
    inner
        .conn
        .prepare_cached("DELETE FROM records WHERE coll = ?1 AND id = ?2")?
        .execute(params![coll, key])?;
    Ok(history)
}

/// Store `after` as the record's cells (fewer cells than `before`, no new seq): the body, its
/// row seq (the max cell seq), the live flag, feed rows of seqs no cell holds any more, and
/// index entries.
pub(super) fn rewrite_record(
    inner: &mut Inner,
    coll: i64,
    id: RecordId,
    rev: u64,
    before: &RecordState,
    after: &RecordState,
) -> Result<()> {
    inner.record_cache.forget(coll, id);
    let row_seq = after.max_seq();
    let bytes = body::encode(after, row_seq, &mut inner.nodes, &mut inner.fields);
    let key = &id.0[..];
    inner
        .conn
        .prepare_cached(
            "UPDATE records SET rev = ?3, seq = ?4, live = ?5, body = ?6 WHERE coll = ?1 AND id = ?2",
        )?
        .execute(params![coll, key, rev, row_seq.0, after.is_live(), bytes])?;
    let kept = cell_seqs(after);
    for s in cell_seqs(before).into_iter().filter(|s| !kept.contains(s)) {
        inner
            .conn
            .prepare_cached("DELETE FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3")?
            .execute(params![s.0 as i64, coll, key])?;
    }
    if let Some(indexed) = inner.indexes.get(&coll) {
        let fields = |s: &RecordState| {
            if s.is_live() {
                s.fields()
            } else {
                Default::default()
            }
        };
        super::index::update_entries(
            &inner.conn,
            coll,
            id,
            indexed,
            &fields(before),
            &fields(after),
        )?;
    }
    Ok(())
}

/// Delete the history rows of `fields` in a collection (their conflicts stay, as for evicted
/// records), linking each record's chain around them so that the history of its other fields
/// stays whole (see `Inner::remove_history_entries`).
/// Records in `kept` keep theirs (they keep the fields, for now): their chains stay whole,
/// and the sweep of unreachable rows waits for a run that keeps none.
fn delete_field_history(
    inner: &Inner,
    coll: i64,
    fields: &BTreeSet<&str>,
    kept: &BTreeSet<RecordId>,
) -> Result<()> {
    // The records with such rows, found in one pass over the table (history has no index
    // by record: see `HISTORY_CHAINS` in schema.rs).
    let mut ids: BTreeSet<RecordId> = BTreeSet::new();
    for field in fields {
        let (plain, prefix_len, counter, element) = field_cell_prefixes(field);
        let mut stmt = inner.conn.prepare(
            "SELECT DISTINCT id FROM history
             WHERE coll = ?1 AND (cell = ?2 OR substr(cell, 1, ?3) IN (?4, ?5))",
        )?;
        let mut rows = stmt.query(params![coll, plain, prefix_len, counter, element])?;
        while let Some(row) = rows.next()? {
            ids.insert(record_id(
                row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?,
            )?);
        }
    }
    for id in ids.difference(kept) {
        inner.remove_history_entries(coll, *id, |key| {
            key.field().is_some_and(|f| fields.contains(f))
        })?;
    }
    if !kept.is_empty() {
        return Ok(());
    }
    // Rows no chain reaches any more (below a cut by retention) go too: the field's data
    // must leave this replica entirely.
    for field in fields {
        let (plain, prefix_len, counter, element) = field_cell_prefixes(field);
        inner.conn.execute(
            "DELETE FROM history WHERE coll = ?1 AND (cell = ?2 OR substr(cell, 1, ?3) IN (?4, ?5))",
            params![coll, plain, prefix_len, counter, element],
        )?;
    }
    Ok(())
}

/// How history's `cell` column starts for the cells of `field`: it holds the cell key's
/// encoding (`crdt::encoding`), a tag (1 field, 2 counter, 3 element), the field name as
/// varint length + bytes, then the counter's node or the element. Returns the plain
/// field's whole key, the prefix length, and the counter and element prefixes.
fn field_cell_prefixes(field: &str) -> (Vec<u8>, i64, Vec<u8>, Vec<u8>) {
    let prefix = |tag: u8| {
        let mut p = vec![tag];
        crate::codec::varint::write_u64(&mut p, field.len() as u64);
        p.extend_from_slice(field.as_bytes());
        p
    };
    let plain = prefix(1);
    let n = plain.len() as i64;
    (plain, n, prefix(2), prefix(3))
}

/// Record the cells of `state` written here past `refused.after` as conflicts lost to
/// `refused.peer`: the winner is "absent" (the peer holds none of it), so resolving one with
/// `None` drops it and with a value writes it again (where the rules now allow it).
///
/// Written here: under our node id (`own`), or under an id this file had before an open
/// found it to be a copy and gave it its own (`copied_file.rs`). Those the feed shows as
/// local writes (`src` 0); a file moved to another file system with writes not yet synced
/// lost them unrecorded when the peer refused them.
fn keep_refused_as_conflicts(
    inner: &mut Inner,
    coll: i64,
    id: RecordId,
    state: &RecordState,
    own: NodeId,
    refused: RefusedBy,
) -> Result<()> {
    use crate::crdt::{CellKey, CellValue};
    use crate::Version;
    let policy = inner.policies.get(&coll).cloned();
    for cell in state.cells() {
        if cell.seq <= refused.after {
            continue;
        }
        if cell.version.node != own && feed_src(inner, cell.seq, coll, id)? != Some(0) {
            continue;
        }
        let absent = match cell.value {
            CellValue::Count(_) => CellValue::Count(0),
            _ => CellValue::Absent,
        };
        let winner = Cell {
            key: cell.key.clone(),
            value: absent,
            version: Version {
                hlc: cell.version.hlc,
                node: refused.peer,
            },
            prev: Some(cell.version),
            seen: Default::default(),
            seq: cell.seq,
        };
        // The record's insert is shown as the record, not as the marker its cell holds.
        let record;
        let loser = if cell.key == CellKey::Record && cell.value == CellValue::Present {
            record = Cell {
                value: CellValue::Value(crate::Value::Map(state.fields())),
                ..cell.clone()
            };
            &record
        } else {
            cell
        };
        let open = super::write::insert_conflict(
            &inner.conn,
            &mut inner.nodes,
            policy.as_ref(),
            coll,
            id,
            &winner,
            loser,
            cell.seq,
        )?;
        inner.conflicts_opened += u64::from(open);
    }
    Ok(())
}
