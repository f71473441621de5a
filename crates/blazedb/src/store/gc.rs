//! Garbage collection of sync metadata: tombstones, removal cells, feed links, orphan feed
//! rows — once every peer that still counts has seen them — plus history retention.
//!
//! ```text
//!  peers (acked cursor, last contact) ──► horizon H = min acked cursor of the peers heard
//!                                         from within the retention (none: the feed head)
//!  one transaction, everything at seq <= H:
//!    records live = 0            ─► row, feed rows, history gone (conflicts stay) (tombstones)
//!    cells  = Absent in live rows ─► dropped from the body                    (removals)
//!    feed_links t <= H            ─► dropped
//!    feed rows without a record   ─► dropped (those past the previous scan: a safety net)
//!  meta.gc_horizon = max(old, H) when anything above was removed
//!  then history compaction (its own transaction, the configured retention)
//! ```
//!
//! **Why this is safe.** A removal cell (a tombstone, an unset field, a removed set element)
//! exists only to beat older writes that may still arrive. Once every peer acknowledged our
//! feed past the cell's seq, every peer holds the removal (or something newer), so none of
//! them will send us a write it beats: their own older writes were overwritten there and are
//! no longer in their feeds, and a write relayed through them meets the removal there first.
//! A peer not heard from within the retention no longer holds GC back; it is reported as
//! expired, and if it comes back with a cursor below [`Database::gc_horizon`] it must be
//! re-bootstrapped by snapshot instead of resuming the feed (the sync session decides that).
//!
//! **Which peers count.** Peers with an `acked` row (we have sent them our feed) whose last
//! contact is within the retention, and relays whatever their last contact (the session
//! notes a peer's `server` flag from HELLO): a relay refuses snapshots, so a delete collected
//! before it arrived would never reach it.
//!
//! **Counted once stable.** "Every peer holds the removal" is not yet enough: a write of the
//! peer's from before the removal reached it, older than the removal, may still be on its way
//! here — sent in the first frames of a unit whose ACK-overtaken rest was still coming, or
//! queued behind its window. It meets the removal here only if the removal is still here;
//! collected, the write brings the record back here alone, while everywhere else the removal
//! beat it (known gap 5 until 2026-12-07; test
//! `gc.rs::an_edit_already_sent_when_the_delete_arrives_meets_the_tombstone`). So each peer
//! counts by its *stable* cursor ([`PeerDirection::Stable`]): the highest ACK after which the
//! peer's feed, as it stood then, has been applied here — the peer's next CAUGHT_UP, or the
//! CAUGHT_UP flag of the ACK itself (PROTOCOL.md §5.3). Writes further away are covered by
//! the same rule one hop on: a third node's write reaches us through a peer, which either held
//! it when it acknowledged (then it comes before the peer's CAUGHT_UP) or got it later, when
//! the removal was still there to beat it (the peer collects only what *its* peers have
//! stably acknowledged), and a write beaten there is not forwarded. A peer that sends us
//! nothing is stable at its ACK. A peer with no stable cursor recorded (none synced since it
//! exists) counts by its acknowledged one, as before. Expired and forgotten peers are outside
//! this, as they are outside every other guarantee here.
//!
//! **Peers that only push to us** (their mode `push`, or ours `pull`; the session notes them
//! at HELLO, [`PUSHES_ONLY_NOTE`]) never receive our removals, so no cursor of ours says when
//! their older writes are all in: such a peer's update of a record deleted here, made before
//! the delete (or stamped older by a clock running behind) and arriving after GC purged the
//! tombstone, would bring the record back here holding that update's fields, where the
//! tombstone would have beaten it. While one is heard from within the retention, GC holds
//! back by age instead, as Cassandra's `gc_grace_seconds` does: only what has been here for
//! the retention is collected, so a pusher's older write arriving within the retention of
//! the removal still meets it. GC's time marks (`gc_mark:<ms>` → the feed head then, kept
//! ~retention / [`GC_MARKS_PER_RETENTION`] apart) say which feed position was reached how
//! long ago; the hold is the head at the newest mark at least the retention old (nothing
//! before the first such mark). Not held: a tombstone or removal cell the only pusher sent
//! us, which it holds itself (its older writes came before it in its feed, and later ones
//! lose there), so a pull-only replica collects its source's deletes as promptly as any. A pusher away for
//! longer than the retention expires like any peer, and `forget_peer` drops its note.
//! (Causal stability would be exact; this is the bound every tombstone-GC system without it
//! settles for.)
//!
//! **Removals kept.** A removal cell is kept when dropping it would change what the record
//! shows: an element removal that hides a value of the field's base list, or the last
//! removal cells of a record that was deleted and then had only fields unset (it would turn
//! from "live, no fields" into a tombstone). Counter contributions are never dropped (each
//! one is part of the sum). Nor are the record's newest non-record cell and a set field's
//! newest cell when they are removals: a delete concurrent with them may still arrive from a
//! third node and kill every older cell, and then they alone decide whether the record is live
//! and the field shows (found by the simulation; see `prune_removals`).
//!
//! **Incremental scan.** Removal pruning decodes only records whose row seq is above
//! `meta.gc_scan_seq`: after a GC with horizon H, no record whose cells are all at or below H
//! has a prunable removal left, and every later write gives its record a higher seq. Nor is
//! any tombstone at or below H left. So a GC reads only the records with a feed row past
//! the last scan, and of those only the ones with a row newly at or below H or written since
//! the last GC (`meta.gc_seen_head`: the others are as that GC left them, under the same
//! horizon — which matters while a pusher holds H a retention back), and checks only those
//! feed rows for a missing record: its time grows with
//! the changes since the last GC, not with the store, which stays locked meanwhile (a relay
//! runs GC every ten minutes; on 1,000,000 encrypted records, purging 20,000 tombstones
//! took 1.03 s with a scan of every record and feed row, 0.21 s now, and a GC with nothing
//! to do 0.87 s, now 0.2 ms).

use rusqlite::{params, OptionalExtension};

use super::evict::{record_id, remove_record, rewrite_record, write_tx};
use super::feed::PeerDirection;
use super::{body, Database, Inner};
use crate::crdt::{Cell, CellKey, CellValue, RecordState};
use crate::error::{Error, Result};
use crate::limits::PEER_RETENTION_MS_DEFAULT;
use crate::types::Seq;
use crate::NodeId;

/// Per-peer note (`Database::peer_note`): "1" when the peer said in HELLO that it is a relay
/// (a server). GC never lets such a peer expire.
pub const SERVER_NOTE: &str = "server";
/// Per-peer note (`Database::peer_note`): "1" when the peer pushes its feed to us and does not
/// take ours, so it never learns of our removals. GC then collects only removals older than
/// the retention (see the module docs). Set by the sync session at HELLO.
pub const PUSHES_ONLY_NOTE: &str = "pushes_only";
/// `meta` key prefix of GC's time marks: `gc_mark:<ms, 20 digits>` → the feed head at that
/// time (see the module docs).
const META_GC_MARK: &str = "gc_mark:";
/// Time marks before the newest are kept at least retention / this apart: at most this many
/// plus three rows, and a removal held for pushers goes at most a retention / this (plus
/// twice the time between GCs) after it is the retention old.
const GC_MARKS_PER_RETENTION: u64 = 64;
/// `meta` key: the highest horizon at which GC removed something. A peer whose cursor into
/// our feed is below it may have missed removals and must be re-bootstrapped by snapshot.
const META_GC_HORIZON: &str = "gc_horizon";
/// `meta` key: every record whose row seq is at most this has no prunable removal cell.
const META_GC_SCAN_SEQ: &str = "gc_scan_seq";
/// `meta` key: the feed head at the last GC. A record not changed since, with no cell newly
/// under the horizon, has nothing the last GC could not collect.
const META_GC_SEEN_HEAD: &str = "gc_seen_head";

/// How [`Database::gc`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// A peer not heard from for longer than this (ms) no longer holds GC back, unless it
    /// is a relay (see the module docs).
    pub peer_retention_ms: u64,
}

impl Default for GcOptions {
    /// [`PEER_RETENTION_MS_DEFAULT`] (30 days).
    fn default() -> Self {
        GcOptions {
            peer_retention_ms: PEER_RETENTION_MS_DEFAULT,
        }
    }
}

/// What one [`Database::gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The horizon this run used: everything at or below this local seq was seen by every
    /// peer that counts.
    pub horizon: Seq,
    /// Deleted records whose tombstone was removed.
    pub tombstones_purged: u64,
    /// Removal cells (unset fields, removed set elements, record cells of records written
    /// again after a delete) dropped from live records.
    pub cells_pruned: u64,
    /// `feed_links` rows removed.
    pub links_pruned: u64,
    /// Feed rows removed: those of purged tombstones, of seqs no cell holds after pruning,
    /// and rows whose record is gone.
    pub feed_rows_pruned: u64,
    /// History rows removed: those of purged tombstones plus the retention's compaction.
    pub history_rows_removed: u64,
    /// Peers not heard from within the retention (still listed by `peers()`; drop them with
    /// [`Database::forget_peer`]).
    pub expired_peers: Vec<NodeId>,
    /// The peer whose acknowledged cursor is the horizon, when the horizon is below this
    /// file's head: what GC waits for to collect more.
    pub held_by: Option<NodeId>,
    /// Relays not heard from within the retention, which still count (a relay never
    /// expires: see [`Database::gc`]). One that is gone for good holds GC back until
    /// [`Database::forget_peer`].
    pub relays_past_retention: Vec<NodeId>,
    /// Records read to find what to collect: those changed since the last GC and those
    /// with a change newly under the horizon (what a GC costs, with the store locked).
    pub records_examined: u64,
}

/// Sync metadata stored in the file, in bytes, by kind (see [`Database::sync_metadata`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncMetadata {
    /// Live records.
    pub live_records: u64,
    /// Tombstones (deleted records still stored).
    pub tombstones: u64,
    /// Bytes of live records' bodies that are not user values, plus their row's seq.
    pub live_body_bytes: u64,
    /// Whole tombstone rows: id, seq and body.
    pub tombstone_bytes: u64,
    /// Rows in the change feed.
    pub feed_rows: u64,
    /// Bytes of feed rows: record id, seq, collection and source.
    pub feed_bytes: u64,
    /// Rows in `feed_links`.
    pub links: u64,
    /// Bytes of `feed_links` rows.
    pub link_bytes: u64,
    /// Bytes of peer cursors (per peer, not per record).
    pub peer_bytes: u64,
}

impl SyncMetadata {
    /// All of it.
    pub fn total_bytes(&self) -> u64 {
        self.live_body_bytes
            + self.tombstone_bytes
            + self.feed_bytes
            + self.link_bytes
            + self.peer_bytes
    }

    /// [`SyncMetadata::total_bytes`] divided by the live records (the benchmark's target is
    /// ≤ 64 after GC); the total when there are none.
    pub fn bytes_per_live_record(&self) -> f64 {
        self.total_bytes() as f64 / self.live_records.max(1) as f64
    }
}

impl Database {
    /// Collect tombstones, removal cells, feed links and orphan feed rows that every peer
    /// that counts has seen (see the module docs), in one transaction; then compact history
    /// under the configured retention.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        // The horizon comes from the stored acknowledged cursors: store the noted ones.
        self.store_noted_cursors()?;
        let now = self.now_ms();
        // `write_tx` begins the write transaction and checks the file inside it.
        let mut inner = self.lock_bare()?;
        let mut report = write_tx(&mut inner, |inner| collect(inner, opts, now))?;
        report.history_rows_removed +=
            super::history::compact(&mut inner, &self.options.history, now)?;
        Ok(report)
    }

    /// The highest horizon at which GC removed something (0: never). A peer resuming our
    /// feed from a cursor below it may have missed removals: it needs a snapshot.
    pub fn gc_horizon(&self) -> Result<Seq> {
        let mut inner = self.lock()?;
        horizon_in(&mut inner)
    }

    /// Make GC wait for `peer` from feed position `from` on: a sender calls it when it starts
    /// serving the peer (SUBSCRIBE, SNAPSHOT_BEGIN), `from` being what the peer holds (the
    /// feed position it resumes at, or has acknowledged; for a snapshot not its position,
    /// which the peer holds only once it has applied the snapshot).
    ///
    /// GC counts a peer only by its `acked` row, which a new peer otherwise gets at its
    /// first ACK: for a snapshot bootstrap, at its end. Meanwhile GC went past it and could
    /// collect the tombstone of a record the peer already held from an early chunk; the
    /// feed after the snapshot no longer had the delete, and the peer kept the record for
    /// good. A peer that has a row gets its last contact renewed (an expired row would not
    /// count) and its cursor lowered to `from` if above. Nothing waits forever: the row ages
    /// like any other, so a peer that never finishes expires after the retention (relays
    /// excepted, as always: see the module docs).
    pub(crate) fn hold_gc_for_peer(&self, peer: NodeId, from: Seq) -> Result<()> {
        // Its stable cursor (if it has one) too, or it would count again, once ACKs move the
        // acknowledged one past `from`, from a position the peer may no longer hold.
        if let Some(stable) = self.peer_cursor_recorded(peer, PeerDirection::Stable)? {
            if stable > from {
                self.note_peer_cursor(peer, PeerDirection::Stable, from)?;
            }
        }
        match self.peer_cursor_recorded(peer, PeerDirection::Acked)? {
            // Noted with the others (stored before any GC of this handle), like every ACK.
            Some(c) => self.note_peer_cursor(peer, PeerDirection::Acked, c.min(from)),
            // A new peer: stored now, so that GC through another handle on the file sees
            // it too. The lower cursor wins, should one have been stored in between.
            None => {
                let now = self.now_ms();
                let stored = (|| {
                    let mut inner = self.lock_write()?;
                    inner.conn.execute(
                        "INSERT INTO peers (node, direction, cursor, last_contact_ms)
                         VALUES (?1, 'acked', ?2, ?3)
                         ON CONFLICT (node, direction) DO UPDATE SET
                         cursor = min(cursor, excluded.cursor),
                         last_contact_ms = excluded.last_contact_ms",
                        params![&peer.0[..], from.0 as i64, now as i64],
                    )?;
                    inner.commit()
                })();
                match stored {
                    // The file takes no writes (a full disk, a deleted file): noted like an
                    // ACK, so that a peer that only reads is still served. GC through this
                    // handle stores what is noted before it collects (and so cannot run
                    // before the note is stored); GC by another process on the file does
                    // not see it until then (see `noted_cursors.rs`).
                    Err(e) if e.store_refuses_writes() => {
                        self.noted_cursors()
                            .note(peer, PeerDirection::Acked, from, now);
                        Ok(())
                    }
                    r => r,
                }
            }
        }
    }

    /// Drop how far a peer acknowledged our feed, so GC no longer waits for it, and its notes.
    /// Returns false if there was nothing to drop (unknown, or forgotten already). If it
    /// syncs again it starts over on our side (by snapshot once GC has run).
    ///
    /// How far we received *its* feed stays (and [`Database::peers`] lists it, with `acked`
    /// 0): should it return, we resume its feed there. Pulling its feed from the start
    /// again would apply its old writes once more, over deletes GC has collected since
    /// (simulation, known gap 6).
    pub fn forget_peer(&self, node: NodeId) -> Result<bool> {
        {
            let mut noted = self.noted_cursors();
            noted.forget(node, PeerDirection::Acked);
            noted.forget(node, PeerDirection::Stable);
            noted.forget_notes_of(node);
        }
        // One transaction: the peer goes entirely or not at all.
        let mut inner = self.lock_write()?;
        let mut n = inner.conn.execute(
            "DELETE FROM peers WHERE node = ?1 AND direction IN ('acked', 'stable')",
            [&node.0[..]],
        )?;
        // A unit it left unfinished goes too.
        inner
            .conn
            .execute("DELETE FROM unit_staging WHERE peer = ?1", [&node.0[..]])?;
        // Its notes (the view it was served, the policy we subscribed with) go too.
        let prefix = super::feed::peer_note_key(node, "");
        n += inner.conn.execute(
            "DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1",
            [&prefix],
        )?;
        inner.commit()?;
        Ok(n > 0)
    }

    /// Measure the sync metadata stored in the file: everything kept only so that replicas
    /// converge, as opposed to user values. Counted, per row, as the bytes SQLite stores for
    /// each value (integers by their serial-type size: 0–8 bytes; ids 16 bytes), without page,
    /// cell-header and b-tree overhead:
    ///
    /// - live records: the body minus the user values in it (plain field values, set
    ///   elements), i.e. the header, versions, cell flags, field numbers, removal cells,
    ///   counter contributions, plus the row's `seq`;
    /// - tombstones: the whole row (id, seq, body);
    /// - feed rows (id, seq, collection, source), `feed_links` rows, peer cursors.
    ///
    /// Not counted: history and conflicts (features with their own retention), indexes, the
    /// node and field dictionaries (per node and per field name, not per record).
    pub fn sync_metadata(&self) -> Result<SyncMetadata> {
        // `lock`'s snapshot: every count from one state of the file.
        let inner = self.lock()?;
        measure(&inner)
    }

    /// [`SyncMetadata::total_bytes`] of [`Database::sync_metadata`].
    pub fn sync_metadata_bytes(&self) -> Result<u64> {
        Ok(self.sync_metadata()?.total_bytes())
    }
}

/// A `records` row as GC reads it: coll, id, rev, seq, live, body.
type StoredRow = (i64, Vec<u8>, u64, u64, bool, Vec<u8>);

/// Whether `peer` is noted as a relay (`SERVER_NOTE`, set by the sync session from HELLO).
pub(super) fn is_server(inner: &Inner, peer: NodeId) -> Result<bool> {
    Ok(super::feed::peer_note_in(inner, peer, SERVER_NOTE)?.as_deref() == Some("1"))
}

/// Whether `peer` is noted as pushing to us without taking our feed (`PUSHES_ONLY_NOTE`).
pub(super) fn pushes_only(inner: &Inner, peer: NodeId) -> Result<bool> {
    Ok(super::feed::peer_note_in(inner, peer, PUSHES_ONLY_NOTE)?.as_deref() == Some("1"))
}

/// The `src` of a record's feed row at `seq`: who sent the change (0: written here).
fn feed_src(inner: &Inner, seq: u64, coll: i64, id: &crate::RecordId) -> Result<Option<i64>> {
    Ok(inner
        .conn
        .prepare_cached("SELECT src FROM feed WHERE seq = ?1 AND coll = ?2 AND id = ?3")?
        .query_row(params![seq as i64, coll, &id.0[..]], |r| r.get(0))
        .optional()?)
}

/// The `meta` key of the time mark at `ms` (zero-padded: keys sort as times).
fn mark_key(ms: u64) -> String {
    format!("{META_GC_MARK}{ms:020}")
}

/// The newest time mark at least `retention_ms` old: its key and the feed head then
/// (everything at or below it has been here that long).
fn aged_mark(inner: &Inner, now_ms: u64, retention_ms: u64) -> Result<Option<(String, Seq)>> {
    let cutoff = mark_key(now_ms.saturating_sub(retention_ms));
    let found: Option<(String, i64)> = inner
        .conn
        .prepare_cached(
            "SELECT key, value FROM meta WHERE key >= ?1 AND key <= ?2
             ORDER BY key DESC LIMIT 1",
        )?
        .query_row(params![META_GC_MARK, cutoff], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(found.map(|(key, head)| (key, Seq(head.max(0) as u64))))
}

/// Note that the feed head was `head` at `now_ms`, and drop the marks older than `aged` (the
/// key of the newest one at least the retention old, [`aged_mark`]: it alone answers every
/// later question about times before it). The newest mark is always the last GC's (so a
/// removal is covered by a mark at the first GC after it, however rarely GC runs); the ones
/// before it stay at least retention / `GC_MARKS_PER_RETENTION` apart, the newest being
/// moved forward instead of a new one added while it is closer than that to the one before:
/// at most that many plus three marks however often GC runs.
fn record_mark(
    inner: &Inner,
    now_ms: u64,
    head: Seq,
    retention_ms: u64,
    aged: Option<&str>,
) -> Result<()> {
    if let Some(key) = aged {
        inner.conn.execute(
            "DELETE FROM meta WHERE key >= ?1 AND key < ?2",
            params![META_GC_MARK, key],
        )?;
    }
    let gap = (retention_ms / GC_MARKS_PER_RETENTION).max(1);
    let newest: Vec<String> = inner
        .conn
        .prepare_cached(
            "SELECT key FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key DESC LIMIT 2",
        )?
        .query_map(params![META_GC_MARK, format!("{META_GC_MARK}~")], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    if let [last, before] = &newest[..] {
        let ms = |key: &str| key[META_GC_MARK.len()..].parse::<u64>().unwrap_or(0);
        if ms(last).saturating_sub(ms(before)) < gap {
            inner
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", [last])?;
        }
    }
    inner.conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        params![mark_key(now_ms), head.0 as i64],
    )?;
    Ok(())
}

/// The GC transaction's work.
fn collect(inner: &mut Inner, opts: &GcOptions, now_ms: u64) -> Result<GcReport> {
    let head = inner.clock_row()?.0;
    let mut report = GcReport::default();
    // The lowest acknowledged cursor, and whose it is.
    let mut horizon: Option<(Seq, NodeId)> = None;
    // The peers that count and only push to us.
    let mut pushers: Vec<NodeId> = Vec::new();
    {
        // One entry per peer: its acked and stable cursors (if any) and its latest contact
        // in either direction.
        let mut stmt = inner.conn.prepare(
            "SELECT node, direction, cursor, last_contact_ms FROM peers
             WHERE direction <> 'clock' ORDER BY node",
        )?;
        let mut rows = stmt.query([])?;
        let mut peers: Vec<(NodeId, Option<Seq>, Option<Seq>, u64)> = Vec::new();
        while let Some(r) = rows.next()? {
            let node: [u8; 16] = r.get::<_, Vec<u8>>(0)?.try_into().map_err(|_| {
                Error::Corrupted(crate::codec::DecodeError::Malformed("bad peer id".into()))
            })?;
            let node = NodeId(node);
            if peers.last().is_none_or(|p| p.0 != node) {
                peers.push((node, None, None, 0));
            }
            let p = peers.last_mut().expect("pushed");
            let cursor = Seq(r.get::<_, i64>(2)?.max(0) as u64);
            match r.get::<_, String>(1)?.as_str() {
                "acked" => p.1 = Some(cursor),
                "stable" => p.2 = Some(cursor),
                _ => {}
            }
            p.3 = p.3.max(r.get::<_, i64>(3)?.max(0) as u64);
        }
        for (node, acked, stable, last) in peers {
            // A relay never expires: it refuses snapshots (a client's data reaches it only
            // through the feed, under its write rules), so a delete whose tombstone went
            // while the relay was away would never reach it. A client offline for longer
            // than the retention keeps the tombstones of its unsent deletes instead.
            let past_retention = now_ms.saturating_sub(last) > opts.peer_retention_ms;
            if past_retention && !is_server(inner, node)? {
                report.expired_peers.push(node);
                continue;
            }
            if past_retention {
                report.relays_past_retention.push(node);
            }
            // Counted once stable (see the module docs); a peer not synced with since stable
            // cursors exist has none, and counts by its acknowledged one as before.
            if let Some(a) = acked.map(|a| stable.map_or(a, |s| s.min(a))) {
                if horizon.is_none_or(|(h, _)| a < h) {
                    horizon = Some((a, node));
                }
            }
            if pushes_only(inner, node)? {
                pushers.push(node);
            }
        }
    }
    // What every peer we send to holds.
    let acked_h = horizon.map_or(head, |(h, _)| h).min(head);
    // A peer that only pushes to us holds back by age: what was here the retention ago.
    let aged = aged_mark(inner, now_ms, opts.peer_retention_ms)?;
    let aged_head = aged.as_ref().map_or(Seq(0), |(_, head)| *head);
    if let Some(&node) = pushers.first() {
        if horizon.is_none_or(|(h, _)| aged_head < h) {
            horizon = Some((aged_head, node));
        }
    }
    let aged_key = aged.as_ref().map(|(key, _)| key.as_str());
    record_mark(inner, now_ms, head, opts.peer_retention_ms, aged_key)?;
    let h = horizon.map_or(head, |(h, _)| h).min(head);
    // Except a tombstone (or removal cell, below) that the only pusher sent us (up to
    // `acked_h`): it holds that removal, so a write of its own older than it came before it
    // in its feed (and lost here), and one it receives later loses there. A pull-only replica
    // collects its source's removals as promptly as before; only removals made here, or
    // received from others, wait.
    let sole_pusher_src: Option<i64> = match pushers[..] {
        [p] => inner.nodes.known(&p).map(|i| i as i64 + 1),
        _ => None,
    };
    let tombstones_upto = if sole_pusher_src.is_some() {
        acked_h
    } else {
        h
    };
    let mut purged_upto = h;
    report.horizon = h;
    report.held_by = horizon.filter(|(a, _)| *a < head).map(|(_, node)| node);
    let scan_from = Seq(meta_u64(inner, META_GC_SCAN_SEQ)?);
    let seen_head = Seq(meta_u64(inner, META_GC_SEEN_HEAD)?).max(scan_from);

    // Tombstones at or below H, and live records written since the last scan (the only
    // ones that can hold a removal cell newly at or below H). Both have their row's seq
    // past the last scan (every tombstone at or below it went then), and a row's seq is its
    // newest cell's, which has a feed row at that seq: so they are found from the feed's
    // rows past the last scan (its key's prefix), in time that grows with the changes
    // since the last GC, not with the store (a scan of every record was ~25 ms per 300,000
    // records plain, with the store locked). Of those rows, only the ones newly at or below
    // H and the ones written since the last GC: a record with neither is as the last GC
    // left it, under the same horizon. (Without a pusher H is the head and the two are
    // one range; while a pusher holds H a retention back, the rows between H and the last
    // GC's head would otherwise be read again by every GC.)
    let rows: Vec<StoredRow> = {
        let mut stmt = inner.conn.prepare(
            "SELECT r.coll, r.id, r.rev, r.seq, r.live, r.body
             FROM (SELECT coll, id FROM feed WHERE seq > ?2 AND seq <= ?3
                   UNION SELECT coll, id FROM feed WHERE seq > ?4) AS f
             JOIN records AS r ON r.coll = f.coll AND r.id = f.id
             WHERE (r.live = 0 AND r.seq <= ?1) OR (r.live = 1 AND r.seq > ?2)",
        )?;
        let args = params![
            tombstones_upto.0 as i64,
            scan_from.0 as i64,
            h.0 as i64,
            seen_head.0 as i64
        ];
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    report.records_examined = rows.len() as u64;
    for (coll, id, rev, row_seq, live, bytes) in rows {
        let id = record_id(&id)?;
        let state = body::decode(&bytes, Seq(row_seq), &inner.nodes, &inner.fields)?;
        if !live {
            if row_seq > h.0 {
                // Past the horizon: only the sole pusher's own delete (the feed row at the
                // tombstone's seq names who sent it).
                if feed_src(inner, row_seq, coll, &id)? != sole_pusher_src {
                    continue;
                }
                purged_upto = purged_upto.max(Seq(row_seq));
            }
            report.feed_rows_pruned += super::evict::cell_seqs(&state).len() as u64;
            report.history_rows_removed += remove_record(inner, coll, id, &state)?;
            report.tombstones_purged += 1;
            continue;
        }
        // Removal cells past the horizon that the sole pusher sent (up to `acked_h`) may go
        // too, as its tombstones do.
        let mut from_pusher = Vec::new();
        if sole_pusher_src.is_some() {
            for c in state.cells() {
                if c.value == CellValue::Absent
                    && c.seq > h
                    && c.seq <= acked_h
                    && feed_src(inner, c.seq.0, coll, &id)? == sole_pusher_src
                {
                    from_pusher.push(c.seq);
                }
            }
        }
        let Some(pruned) = prune_removals(&state, h, &from_pusher) else {
            continue;
        };
        // (Taken as pruned whether or not these cells went: a higher GC horizon only sends
        // a replacing snapshot to a peer resuming below it; looking up which cells went
        // would cost a record of many set elements a quadratic pass.)
        if let Some(&top) = from_pusher.iter().max() {
            purged_upto = purged_upto.max(top);
        }
        report.cells_pruned += (state.cells().len() - pruned.cells().len()) as u64;
        report.feed_rows_pruned +=
            (super::evict::cell_seqs(&state).len() - super::evict::cell_seqs(&pruned).len()) as u64;
        rewrite_record(inner, coll, id, rev, &state, &pruned)?;
    }
    // Conflicts stay: they are the record of values that lost, kept until the application
    // resolves them, whether or not the record still exists (nothing silently lost).
    report.links_pruned = inner
        .conn
        .execute("DELETE FROM feed_links WHERE t <= ?1", [h.0 as i64])?
        as u64;
    // A safety net: every path that removes a record removes its feed rows at its cells'
    // seqs (`evict::remove_record`), so none should be left without one. Only the rows
    // written since the last scan are looked at: over the whole feed (a row per record)
    // this was the costliest part of a GC, ~160 ms per 300,000 records plain, with the
    // store locked and every session waiting.
    for (above, upto) in [(scan_from, h), (seen_head, head)] {
        report.feed_rows_pruned += inner.conn.execute(
            "DELETE FROM feed WHERE seq > ?1 AND seq <= ?2 AND NOT EXISTS
             (SELECT 1 FROM records r WHERE r.coll = feed.coll AND r.id = feed.id)",
            params![above.0 as i64, upto.0 as i64],
        )? as u64;
    }
    set_meta_max(inner, META_GC_SCAN_SEQ, h.0)?;
    set_meta_max(inner, META_GC_SEEN_HEAD, head.0)?;
    if report.tombstones_purged + report.cells_pruned + report.links_pruned > 0 {
        // Past `h` only where every peer we send to is (`acked_h`): a peer resuming below a
        // tombstone collected there needs a snapshot.
        set_meta_max(inner, META_GC_HORIZON, purged_upto.0)?;
    }
    Ok(report)
}

/// The record without its removal cells at or below `h` or at a seq in `also` (the sole
/// pusher's, past `h`), keeping any whose removal would change what the record shows (see
/// the module docs). `None`: nothing to drop.
fn prune_removals(state: &RecordState, h: Seq, also: &[Seq]) -> Option<RecordState> {
    // A delete (or a plain write of a set field) concurrent with these cells may still be on
    // its way from a third node, and it kills every cell older than itself. Which cells then
    // remain decides whether the record is live (any non-record cell) and whether a set field
    // shows as empty (any cell of the field). Dropping a removal now may look harmless while
    // an older removal still stands in for it, yet that older one dies with the reset and this
    // one would not have. So the newest non-record cell of the record, and the newest cell of
    // each field when it is an element removal, are never dropped: what a later reset leaves
    // is then the same with or without GC.
    let newest_overall = state
        .cells()
        .iter()
        .filter(|c| c.key != CellKey::Record)
        .max_by_key(|c| c.version)
        .map(|c| &c.key);
    let mut newest_of_field: std::collections::BTreeMap<&str, &Cell> = Default::default();
    for c in state.cells() {
        if let Some(f) = c.key.field() {
            let e = newest_of_field.entry(f).or_insert(c);
            if c.version > e.version {
                *e = c;
            }
        }
    }
    let protected = |c: &Cell| {
        Some(&c.key) == newest_overall
            || (matches!(c.key, CellKey::Element(..))
                && c.key
                    .field()
                    .and_then(|f| newest_of_field.get(f))
                    .is_some_and(|n| n.key == c.key))
    };
    let prunable = |c: &Cell| {
        c.value == CellValue::Absent && (c.seq <= h || also.contains(&c.seq)) && !protected(c)
    };
    if !state.cells().iter().any(prunable) {
        return None;
    }
    let live = state.is_live();
    let fields = state.fields();
    let same = |s: &RecordState| s.is_live() == live && s.fields() == fields;
    let all = RecordState::from_cells(
        state
            .cells()
            .iter()
            .filter(|c| !prunable(c))
            .cloned()
            .collect(),
    )
    .ok()?;
    if same(&all) {
        return Some(all);
    }
    // Some removal matters: drop them one at a time, keeping each drop that shows nothing.
    let mut by_age: Vec<&Cell> = state.cells().iter().filter(|c| prunable(c)).collect();
    by_age.sort_by_key(|c| c.version);
    let keys: Vec<CellKey> = by_age.into_iter().map(|c| c.key.clone()).collect();
    let mut current = state.clone();
    for key in keys {
        let trial = RecordState::from_cells(
            current
                .cells()
                .iter()
                .filter(|c| c.key != key)
                .cloned()
                .collect(),
        )
        .ok()?;
        if same(&trial) {
            current = trial;
        }
    }
    (current.cells().len() < state.cells().len()).then_some(current)
}

/// How many bytes SQLite stores for an integer value (its serial type's size).
fn int_bytes(v: i64) -> u64 {
    match v {
        0 | 1 => 0,
        -128..=127 => 1,
        -32_768..=32_767 => 2,
        -8_388_608..=8_388_607 => 3,
        -2_147_483_648..=2_147_483_647 => 4,
        -140_737_488_355_328..=140_737_488_355_327 => 6,
        _ => 8,
    }
}

/// The scan of [`Database::sync_metadata`], inside the caller's read transaction.
fn measure(inner: &Inner) -> Result<SyncMetadata> {
    let mut m = SyncMetadata::default();
    {
        let mut stmt = inner
            .conn
            .prepare("SELECT id, seq, live, body FROM records")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id_len = r
                .get_ref(0)?
                .as_blob()
                .map_err(rusqlite::Error::from)?
                .len() as u64;
            let seq: i64 = r.get(1)?;
            let live: bool = r.get(2)?;
            let bytes = r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
            if !live {
                m.tombstones += 1;
                m.tombstone_bytes += id_len + int_bytes(seq) + bytes.len() as u64;
                continue;
            }
            m.live_records += 1;
            let state = body::decode(bytes, Seq(seq as u64), &inner.nodes, &inner.fields)?;
            let user: usize = state
                .cells()
                .iter()
                .map(|c| match (&c.key, &c.value) {
                    (CellKey::Field(_), CellValue::Value(v)) => crate::codec::value::encoded_len(v),
                    (CellKey::Element(_, e), CellValue::Present) => e.len(),
                    _ => 0,
                })
                .sum();
            m.live_body_bytes += (bytes.len() - user.min(bytes.len())) as u64 + int_bytes(seq);
        }
    }
    {
        let mut stmt = inner
            .conn
            .prepare("SELECT seq, coll, length(id), src FROM feed")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            m.feed_rows += 1;
            m.feed_bytes += int_bytes(r.get(0)?)
                + int_bytes(r.get(1)?)
                + r.get::<_, i64>(2)?.max(0) as u64
                + int_bytes(r.get(3)?);
        }
    }
    {
        let mut stmt = inner.conn.prepare("SELECT s, t FROM feed_links")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            m.links += 1;
            m.link_bytes += int_bytes(r.get(0)?) + int_bytes(r.get(1)?);
        }
    }
    m.peer_bytes = inner
        .conn
        .query_row(
            "SELECT coalesce(sum(length(node) + length(direction) + 8 + 8), 0) FROM peers
             WHERE direction <> 'clock'",
            [],
            |r| r.get::<_, i64>(0),
        )?
        .max(0) as u64;
    Ok(m)
}

/// `meta.gc_horizon` in `inner`'s snapshot (cached per state of the file: sync sessions ask
/// with every feed read).
pub(super) fn horizon_in(inner: &mut Inner) -> Result<Seq> {
    let state = inner.feed_state();
    if let Some((s, h)) = inner.gc_horizon_cache {
        if s == state {
            return Ok(h);
        }
    }
    let h = Seq(meta_u64(inner, META_GC_HORIZON)?);
    inner.gc_horizon_cache = Some((state, h));
    Ok(h)
}

/// A numeric `meta` value; a missing key reads as 0.
fn meta_u64(inner: &Inner, key: &str) -> Result<u64> {
    let v: Option<i64> = inner
        .conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Raise a numeric `meta` value to `v` (never lowers it).
fn set_meta_max(inner: &Inner, key: &str, v: u64) -> Result<()> {
    inner
        .conn
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute(params![key, v as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! GC's time marks: few rows however often GC runs, and the aged head never claims a
    //! feed position younger than the retention.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::store::OpenOptions;
    use crate::Value;

    fn marks(db: &Database) -> Vec<(u64, u64)> {
        let inner = db.lock().unwrap();
        let mut stmt = inner
            .conn
            .prepare("SELECT key, value FROM meta WHERE key >= 'gc_mark:' AND key < 'gc_mark:~'")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                let key: String = r.get(0)?;
                Ok((key[META_GC_MARK.len()..].parse().unwrap(), r.get(1)?))
            })
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn time_marks_stay_few_and_never_run_ahead_of_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let c = clock.clone();
        let db = Database::open(
            dir.path().join("a.db"),
            OpenOptions {
                wall_clock: Arc::new(move || c.load(Ordering::SeqCst)),
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let retention = 64_000;
        let opts = GcOptions {
            peer_retention_ms: retention,
        };
        // (time, head) after each write, to check the aged head against.
        let mut heads: Vec<(u64, Seq)> = Vec::new();
        for i in 0..2_000u64 {
            // GC far more often than the marks' spacing (retention / 64 = 1 s).
            clock.fetch_add(137, Ordering::SeqCst);
            db.insert("c", [("n", Value::Int(i as i64))]).unwrap();
            let now = clock.load(Ordering::SeqCst);
            heads.push((now, db.last_seq().unwrap()));
            db.gc(&opts).unwrap();
            let m = marks(&db);
            assert!(
                m.len() <= GC_MARKS_PER_RETENTION as usize + 3,
                "{} marks after {i} GCs",
                m.len()
            );
            let inner = db.lock().unwrap();
            let aged = aged_mark(&inner, now, retention)
                .unwrap()
                .map_or(Seq(0), |(_, head)| head);
            // The newest head written at least the retention ago bounds it from above...
            let due = heads
                .iter()
                .rev()
                .find(|(t, _)| *t + retention <= now)
                .map_or(Seq(0), |(_, h)| *h);
            assert!(aged <= due, "at {now}: aged {aged:?}, due {due:?}");
            // ...and it lags by at most the spacing (plus two GC intervals).
            if let Some((_, lag)) = heads
                .iter()
                .rev()
                .find(|(t, _)| *t + retention + retention / 64 + 2 * 137 <= now)
            {
                assert!(aged >= *lag, "at {now}: aged {aged:?} behind {lag:?}");
            }
        }
    }
}
