//! Snapshots, both sides: when one is due, sending the view page by page, and staging and
//! applying a received one in one transaction.

use super::*;

impl Session {
    /// What to ask for at (re)connect: resume a staged snapshot taken under this same policy,
    /// ask for a new one when the policy differs from the one we last subscribed with, or
    /// nothing (the sender decides for new peers and GC'd cursors).
    pub(super) fn snapshot_wish(
        &mut self,
        peer: NodeId,
        db: &Database,
    ) -> Result<SnapshotWish, Error> {
        let fp = self.cfg.policy.fingerprint();
        let stored = db.peer_note(peer, NOTE_POLICY)?;
        let previous = match &stored {
            Some(hex) => decode_policy_note(hex),
            None => Some(SyncPolicy::everything()),
        };
        let same = previous.as_ref().is_some_and(|p| p.fingerprint() == fp);
        self.snap_scope = scope_of(previous.as_ref(), &self.cfg.policy);
        if same {
            if let Some(p) = db.snapshot_progress(peer)? {
                if let Some(last) = p.last_key {
                    self.snap_in = Some(SnapIn {
                        snap_id: p.snap_id,
                        position: p.position,
                        next_index: p.next_index,
                        // Corrected by SNAPSHOT_BEGIN.
                        replace: true,
                        // A new session cannot tell what committed since the chunks merged
                        // before: the rest is staged.
                        merging: None,
                        others_meanwhile: false,
                        merged: SnapshotApplied::default(),
                        held: None,
                    });
                    return Ok(SnapshotWish::Resume {
                        snap_id: p.snap_id,
                        position: p.position,
                        next_index: p.next_index,
                        last: (last.collection, last.id),
                    });
                }
            }
            if !self.cfg.policy.exclude_fields.is_empty() {
                // The same view, but our own writes (or another session's) may have put
                // excluded fields into records since the last eviction: they go once the
                // peer has them (an audit, 2026-12-07: a replica that wrote a field it
                // excludes kept that value for good, stale once others changed it).
                let since = db
                    .peer_note(peer, NOTE_FIELDS_EVICTED)?
                    .and_then(|n| n.parse().ok())
                    .map_or(Seq(0), Seq);
                self.evict_excluded_fields(db, since)?;
            }
            return Ok(SnapshotWish::No);
        }
        db.snapshot_abort(peer)?;
        if !self.cfg.policy.exclude_fields.is_empty() {
            self.evict_excluded_fields(db, Seq(0))?;
        }
        Ok(SnapshotWish::Want)
    }

    /// An id for a new snapshot. Any value works; it only has to differ from an earlier
    /// one's.
    pub(super) fn fresh_snapshot_id(&self, now_ms: u64, head: Seq) -> u64 {
        let peer = self.peer.as_ref().map_or([0; 16], |p| p.node.0);
        (now_ms.rotate_left(24) ^ head.0.rotate_left(8))
            .wrapping_add(u64::from(self.subscriptions_received))
            .wrapping_add(self.stats.snapshots_sent << 32)
            .wrapping_add(u64::from_le_bytes(peer[..8].try_into().expect("8 bytes")))
    }

    pub(super) fn on_snapshot_begin(
        &mut self,
        now_ms: u64,
        (snap_id, position, first_index, subscription, replace): (u64, Seq, u32, u32, bool),
        db: &Database,
    ) -> Result<(), SyncError> {
        if !self.subscribed || self.unit_in_progress() {
            return Err(self.fail(
                ErrorCode::Unexpected,
                "SNAPSHOT_BEGIN without SUBSCRIBE or inside a unit".into(),
                now_ms,
            ));
        }
        if self.cfg.access.is_some() {
            // Write rules are checked per transaction on the feed; a snapshot would bypass
            // them. Our peers never send us one (we are a server to them).
            return Err(self.fail(
                ErrorCode::Forbidden,
                "this side enforces write rules and accepts changes only as CHANGES, not as \
                 a snapshot"
                    .into(),
                now_ms,
            ));
        }
        if self.restarting {
            if subscription != self.subscriptions_sent {
                // The answer to an older SUBSCRIBE: part of the old view.
                return Ok(());
            }
            self.restarting = false;
        }
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let merging = if first_index == 0 && !replace {
            match db.last_seq() {
                Ok(head) => (head == Seq(0)).then_some(head),
                Err(e) => return Err(self.internal(e, now_ms)),
            }
        } else {
            // A resume (checked below: `snap_in` is the snapshot staged here) is staged.
            None
        };
        if first_index == 0 {
            let note = encode_policy_note(&self.cfg.policy);
            // From its first chunk: whatever an earlier snapshot staged or merged goes, even
            // one with the same id (two sessions' ids can coincide: the sender mixes in its
            // session clock, which starts at 0 each time). Kept, its chunks counted as this
            // one's, and a replacing snapshot then failed as "merged chunk by chunk".
            let r = db
                .snapshot_abort(peer)
                // Every ACK the peer sent before SNAPSHOT_BEGIN came after the apply it
                // acknowledges, and it reads the snapshot's pages after sending
                // SNAPSHOT_BEGIN: what we sent through `acked`, every page reflects.
                .and_then(|()| db.snapshot_begin(peer, snap_id, position, self.acked))
                .and_then(|()| db.set_peer_note(peer, NOTE_POLICY, Some(&note)));
            if let Err(e) = r {
                return Err(self.internal(e, now_ms));
            }
        } else if !self
            .snap_in
            .as_ref()
            .is_some_and(|s| s.snap_id == snap_id && s.next_index == first_index)
        {
            return Err(self.fail(
                ErrorCode::Unexpected,
                format!(
                    "SNAPSHOT_BEGIN resumes {snap_id:x} at chunk {first_index}, which is not the \
                     snapshot staged here ({:?})",
                    self.snap_in.as_ref().map(|s| (s.snap_id, s.next_index))
                ),
                now_ms,
            ));
        }
        self.snap_in = Some(SnapIn {
            snap_id,
            position,
            next_index: first_index,
            replace,
            merging,
            others_meanwhile: false,
            merged: SnapshotApplied::default(),
            held: None,
        });
        Ok(())
    }

    pub(super) fn on_snapshot_chunk(
        &mut self,
        now_ms: u64,
        index: u32,
        last: (String, RecordId),
        data: &[u8],
        db: &Database,
    ) -> Result<(), SyncError> {
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let Some(si) = self.snap_in.as_mut() else {
            return Err(self.fail(
                ErrorCode::Unexpected,
                "SNAPSHOT_CHUNK without SNAPSHOT_BEGIN".into(),
                now_ms,
            ));
        };
        if index != si.next_index {
            let m = format!("SNAPSHOT_CHUNK {index}, expected {}", si.next_index);
            let _ = db.snapshot_abort(peer);
            return Err(self.fail(ErrorCode::Malformed, m, now_ms));
        }
        let key = SnapshotKey {
            collection: last.0,
            id: last.1,
        };
        let snap_id = si.snap_id;
        si.next_index += 1;
        if let Some(ours) = si.merging {
            // Another peer's changes since our last merge: stage the rest (once no record is
            // held half-merged; its rest is in this chunk). A local write is no such copy:
            // newer than all it saw, it wins over or stands beside the sender's records.
            let others = match db.last_seq() {
                Ok(head) if head == ours => Ok(false),
                Ok(_) => db.received_from_others_since(ours, peer),
                Err(e) => Err(e),
            };
            match others {
                Ok(others) => si.others_meanwhile |= others,
                Err(e) => return Err(self.internal(e, now_ms)),
            }
            if si.others_meanwhile && si.held.is_none() {
                si.merging = None;
            }
        }
        if si.merging.is_some() {
            // A new replica's bootstrap is merged chunk by chunk as it arrives: no second
            // copy on disk, no long apply at the end, and the records show up as they come.
            let held = &mut si.held;
            return match db.snapshot_merge_chunk_held(peer, snap_id, (index, &key), data, held) {
                Ok(applied) => {
                    let si = self.snap_in.as_mut().expect("checked above");
                    // The head our merge left (from its transaction: a commit of another
                    // session right after it still counts as something else).
                    si.merging = Some(applied.local_head);
                    si.merged.cells += applied.cells;
                    si.merged.cells_applied += applied.cells_applied;
                    // Counted now: they are applied, and a session cut off before the end
                    // reported none of them (an audit, 2026-12-06).
                    self.stats.cells_received += applied.cells;
                    self.stats.cells_applied += applied.cells_applied;
                    // We were busy applying and read nothing meanwhile.
                    self.last_recv_ms = self
                        .last_recv_ms
                        .max(now_ms + apply_grace_ms(applied.cells));
                    Ok(())
                }
                Err(e) => {
                    Err(self.snapshot_failed(e, format!("snapshot chunk {index}"), now_ms, db))
                }
            };
        }
        // Check it before storing it: a damaged chunk on disk would fail every resume.
        if let Err(e) = crate::sync::snapshot::verify_chunk(data) {
            let _ = db.snapshot_abort(peer);
            return Err(self.fail(
                ErrorCode::Malformed,
                format!("snapshot chunk {index}: {e}"),
                now_ms,
            ));
        }
        match db.snapshot_stage_chunk(peer, snap_id, index, &key, data) {
            Ok(()) => Ok(()),
            Err(Error::Corrupted(e)) => Err(self.fail(
                ErrorCode::Malformed,
                format!("snapshot chunk {index}: {e}"),
                now_ms,
            )),
            Err(e) => Err(self.internal(e, now_ms)),
        }
    }

    pub(super) fn on_snapshot_end(
        &mut self,
        now_ms: u64,
        chunks: u32,
        db: &Database,
    ) -> Result<(), SyncError> {
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let Some(si) = self.snap_in.take() else {
            return Err(self.fail(
                ErrorCode::Unexpected,
                "SNAPSHOT_END without SNAPSHOT_BEGIN".into(),
                now_ms,
            ));
        };
        if chunks != si.next_index {
            let m = format!(
                "SNAPSHOT_END says {chunks} chunks, {} arrived",
                si.next_index
            );
            let _ = db.snapshot_abort(peer);
            return Err(self.fail(ErrorCode::Malformed, m, now_ms));
        }
        if let Some(held) = &si.held {
            // The last chunk said its last record went on in the next one, and none came.
            let m = format!(
                "the snapshot ended inside record {}/{}",
                held.collection, held.id
            );
            let _ = db.snapshot_abort(peer);
            return Err(self.fail(ErrorCode::Malformed, m, now_ms));
        }
        // The peer may be a partial replica, holding only its view of our data (the policy
        // it subscribed with, what our access rules let it read): a record outside that view
        // is missing from its snapshot because it never had it, not because it was deleted.
        // Evicting those made a full peer re-bootstrapped by a partial replica (its cursor
        // below the replica's GC horizon) drop everything the replica does not see.
        let view = self.peer_view();
        let partial_peer = self.peer_is_partial();
        // A merge-only snapshot (we are a new peer) drops nothing. A replacing one also
        // drops the cells of its records that the peer had and let go, where it holds every
        // field of ours and sends us every field it holds.
        let scope = SnapshotScope {
            collections: if si.replace {
                self.snap_scope.clone()
            } else {
                Some(Vec::new())
            },
            replace_seen_cells: si.replace
                && !partial_peer
                && self.cfg.policy.exclude_fields.is_empty(),
        };
        let peer_holds = |coll: &str, id: RecordId, st: &crate::crdt::RecordState| {
            // A tombstone has no fields to test a filter on: `record_visible` then says no
            // wherever records are filtered, and the tombstone stays (GC handles it).
            view.collection_visible(coll) && view.record_visible(coll, id, &st.fields())
        };
        let finished = db.snapshot_finish_within(
            peer,
            si.snap_id,
            chunks,
            &scope,
            partial_peer.then_some(&peer_holds as &crate::store::PeerHolds<'_>),
        );
        match finished {
            Ok(mut applied) => {
                // The chunks merged as they came were counted then.
                self.stats.cells_received += applied.cells;
                self.stats.cells_applied += applied.cells_applied;
                applied.cells += si.merged.cells;
                applied.cells_applied += si.merged.cells_applied;
                self.stats.snapshots_applied += 1;
                // We were busy applying and read nothing; the peer's pings wait in the
                // transport. `now_ms` is from before the apply: allow for its length.
                self.last_recv_ms = self
                    .last_recv_ms
                    .max(now_ms + apply_grace_ms(applied.cells));
                self.stats.evicted += applied.evicted;
                self.received_through = si.position;
                self.received_noted = si.position;
                self.snap_scope = self.cfg.policy.collections.clone();
                self.send_ack(si.position, now_ms, db);
                self.events.push_back(SessionEvent::Applied {
                    cells: applied.cells_applied as usize,
                    through: si.position,
                });
                Ok(())
            }
            Err(e) => Err(self.snapshot_failed(e, "snapshot".into(), now_ms, db)),
        }
    }

    /// The session error for a snapshot that failed to merge or apply. A snapshot that can
    /// never apply (invalid content) is dropped, so the next session starts a new one
    /// instead of resuming this one.
    pub(super) fn snapshot_failed(
        &mut self,
        e: Error,
        what: String,
        now_ms: u64,
        db: &Database,
    ) -> SyncError {
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        match e {
            Error::Apply(ApplyError::ClockSkew(e)) => {
                self.fail(ErrorCode::ClockSkew, e.to_string(), now_ms)
            }
            Error::Apply(ApplyError::Invalid(m)) | Error::InvalidArgument(m) => {
                let _ = db.snapshot_abort(peer);
                self.fail(ErrorCode::Malformed, m, now_ms)
            }
            Error::Corrupted(e) => {
                let _ = db.snapshot_abort(peer);
                self.fail(ErrorCode::Malformed, format!("{what}: {e}"), now_ms)
            }
            e => self.internal(e, now_ms),
        }
    }

    /// Send the next chunk of the snapshot in progress (or its end).
    pub(super) fn fill_snapshot(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        let subscription = self.subscriptions_received;
        let so = self.snap_out.as_mut().expect("checked");
        if !so.begun {
            // GC waits for the peer (a snapshot that did not start at SUBSCRIBE, and a peer
            // forgotten since, would not be waited for), at what it has acknowledged: not at
            // the snapshot's position, which it holds only once it has applied the snapshot
            // (see `on_subscribe`).
            let (acked, peer) = (self.acked, self.peer.as_ref().map(|p| p.node));
            if let Some(peer) = peer {
                db.hold_gc_for_peer(peer, acked)?;
            }
            let so = self.snap_out.as_mut().expect("checked");
            so.begun = true;
            let m = Message::SnapshotBegin {
                snap_id: so.snap_id,
                position: so.position,
                first_index: so.next_index,
                subscription,
                replace: so.replace,
            };
            self.stats.snapshots_sent += 1;
            self.send(&m, now_ms);
            return Ok(());
        }
        let params = self
            .cfg
            .access
            .as_ref()
            .map(|a| a.params())
            .unwrap_or_default();
        // Owned copies: the session is borrowed mutably below to queue frames.
        let access = self.cfg.access.clone();
        let policy = self.peer_policy.clone();
        let view = View {
            access: access.as_deref().filter(|a| a.filters_reads()),
            policy: &policy,
            params,
        };
        // Without a record filter, records are chosen by collection (no fields worked out).
        let filters_records = view.access.is_some() || policy.has_filter();
        let split = self
            .peer
            .as_ref()
            .is_some_and(|p| p.caps & caps::SPLIT_RECORDS != 0);
        let mut select = |coll: &str,
                          id: RecordId,
                          fields: &std::collections::BTreeMap<String, crate::Value>,
                          live: bool| {
            view.collection_visible(coll) && (!live || view.record_visible(coll, id, fields))
        };
        // Pages whose records are all outside the view produce no chunk: keep reading, but
        // not forever in one call (pings and acks must get their turn).
        for _ in 0..64 {
            let so = self.snap_out.as_mut().expect("checked");
            let since = Some(so.read_through);
            let page = if filters_records {
                db.snapshot_page(so.after.as_ref(), since, SNAPSHOT_CHUNK_CELLS, &mut select)?
            } else {
                db.snapshot_page_of_collections(
                    so.after.as_ref(),
                    since,
                    SNAPSHOT_CHUNK_CELLS,
                    &mut |coll| view.collection_visible(coll),
                )?
            };
            so.read_through = page.position;
            let done = page.next.is_none();
            let mut changes = page.changes;
            let mut again = page.changed_before;
            if policy.excludes_any() {
                for ch in changes.iter_mut().chain(&mut again) {
                    strip_excluded(&policy, ch);
                }
            }
            // Records sent before, as they are now, in chunks of their own ahead of the
            // page's. Each names its own last record, like any chunk: a snapshot resumed right
            // after one goes on from there and sends some records twice (merging is
            // idempotent), and the page's chunks follow at once.
            let before = so.after.clone();
            for part in crate::sync::snapshot::bounded_parts(again) {
                self.send_snapshot_records(&part, before.as_ref(), split, now_ms);
            }
            let so = self.snap_out.as_mut().expect("checked");
            so.after = page.next;
            if !changes.is_empty() {
                self.send_snapshot_records(&changes, before.as_ref(), split, now_ms);
                if !done {
                    return Ok(());
                }
            }
            if done {
                let so = self.snap_out.take().expect("checked");
                self.send(
                    &Message::SnapshotEnd {
                        chunks: so.next_index,
                    },
                    now_ms,
                );
                // The live feed continues from the snapshot's position: the snapshot holds
                // everything up to it (and possibly more; applying that again is a no-op).
                self.sent_through = self.sent_through.max(so.position);
                self.unit_until = self.sent_through;
                // Like a unit: not caught up until the peer acknowledges having applied it.
                // Its apply is allowed for below, counted from its end (no cells here).
                self.unacked.push_back((so.position, 0));
                // The peer applies the whole snapshot in one go and is silent meanwhile.
                self.last_recv_ms = self.last_recv_ms.max(now_ms + apply_grace_ms(so.cells));
                return Ok(());
            }
        }
        Ok(())
    }

    /// Send `records` of the snapshot in progress as chunks (`before`: the last record sent
    /// ahead of them; a record too large for one chunk goes in several, to a peer that joins
    /// them).
    pub(super) fn send_snapshot_records(
        &mut self,
        records: &[Change],
        before: Option<&SnapshotKey>,
        split: bool,
        now_ms: u64,
    ) {
        let n = records.iter().map(|c| c.cells.len() as u64).sum::<u64>();
        self.stats.cells_sent += n;
        let so = self.snap_out.as_mut().expect("a snapshot is being sent");
        so.cells += n;
        for (last, data) in crate::sync::snapshot::page_chunks(records, before, split) {
            let so = self.snap_out.as_mut().expect("a snapshot is being sent");
            let index = so.next_index;
            so.next_index += 1;
            let last = (last.collection, last.id);
            self.send(&Message::SnapshotChunk { index, last, data }, now_ms);
        }
    }
}

/// Whether GC may have collected deletes that a peer holding our feed through `from` has not
/// seen (`from` below the GC horizon): only a replacing snapshot, which drops what the peer
/// holds and we no longer have, is then safe. A peer at 0 holds nothing of ours.
pub(super) fn feed_collected_past(from: Seq, horizon: Seq) -> bool {
    from > Seq(0) && from < horizon
}

pub(super) fn new_snapshot(head: Seq, replace: bool, snap_id: u64) -> SnapOut {
    SnapOut {
        snap_id,
        position: head,
        next_index: 0,
        after: None,
        read_through: head,
        begun: false,
        replace,
        cells: 0,
    }
}
