//! Sending our feed: SUBSCRIBE answered (from where, and what the peer may lack after a
//! restore), then units read from the feed, filtered and framed within the window.

use super::*;

impl Session {
    /// True when the feed past what we sent holds nothing for this peer (it may hold changes
    /// that came from the peer itself, which are never sent back).
    pub(super) fn nothing_more_for_peer(&self, db: &Database) -> Result<bool, Error> {
        if self.sent_through >= db.last_seq()? {
            return Ok(true);
        }
        let batch = db.changes_since_shared(self.sent_through, 1, self.feed_exclusion())?;
        Ok(batch.changes.is_empty() && !batch.more)
    }

    /// Whose cells the feed read for the peer skips: the peer's own (it has them, or
    /// something newer), unless its file was restored and they are being sent back.
    pub(super) fn feed_exclusion(&self) -> Option<NodeId> {
        if self.sent_through < self.echo_until {
            return None;
        }
        self.peer.as_ref().map(|p| p.node)
    }

    pub(super) fn on_subscribe(
        &mut self,
        now_ms: u64,
        (from, acked_there): (Seq, Seq),
        policy: SyncPolicy,
        wish: SnapshotWish,
        db: &Database,
    ) -> Result<(), SyncError> {
        if !self.cfg.mode.sends() {
            return Err(self.fail(
                ErrorCode::Forbidden,
                "this side only receives (pull mode); it does not send its changes".into(),
                now_ms,
            ));
        }
        if self.peer_from.is_some() && wish != SnapshotWish::Want {
            return Err(self.fail(
                ErrorCode::Unexpected,
                "a second SUBSCRIBE in one session must ask for a snapshot (a policy change)"
                    .into(),
                now_ms,
            ));
        }
        let compiled = match policy.compile() {
            Ok(c) => c,
            Err(m) => return Err(self.fail(ErrorCode::InvalidPolicy, m, now_ms)),
        };
        // A parameter we do not give would make the filter match nothing, silently: a peer
        // that is not a relay with token authentication has no `$auth` to give.
        let given = self.view_params();
        if let Some(missing) = compiled
            .params()
            .into_iter()
            .find(|p| !given.contains_key(p))
        {
            let message = if missing == "auth" {
                "the sync filter uses $auth.*, the claims of a token that a relay verified; \
                 this peer is not such a relay (e.g. `blazedb listen`), so no record would \
                 ever match: write the value itself"
                    .to_owned()
            } else {
                format!("the sync filter uses ${missing}, which this peer does not give")
            };
            return Err(self.fail(ErrorCode::InvalidPolicy, message, now_ms));
        }
        self.subscriptions_received += 1;
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let read = |db: &Database| -> Result<_, Error> {
            let notes = (
                db.peer_note(peer, NOTE_VIEW)?,
                db.peer_note(peer, NOTE_EVICTS)?,
                db.peer_note(peer, NOTE_SNAPSHOT_VIEW)?,
                db.peer_note(peer, NOTE_RECEIVED_BY_FILE)?,
            );
            Ok((
                db.last_seq()?,
                db.gc_horizon()?,
                notes,
                db.peer_cursor(peer, PeerDirection::Received)?,
                db.peer_cursor(peer, PeerDirection::Acked)?,
                db.peer_cursor(peer, PeerDirection::Stable)?,
            ))
        };
        let (
            head,
            horizon,
            (stored_view, evicts_note, snapshot_view, received_by_file),
            received_from_peer,
            acked_here,
            stable_here,
        ) = read(db).map_err(|e| self.internal(e, now_ms))?;
        // Restored files. The peer stores its cursor with the apply and only then ACKs, so
        // how far we recorded its acknowledgements (`acked_here`, 0 if never) is at most what
        // it holds, give or take ACKs lost or not yet stored when a process died.
        //
        // A cursor past our head means our file is older than the one the peer synced with
        // (restored from a backup): start over; apply is idempotent. A cursor past our
        // record means the same once our feed has grown past the peer's cursor again: the
        // positions between hold commits of our new history that the peer never received, so
        // it resumes from our record (after a lost ACK that re-sends a little, harmlessly).
        let claimed = from;
        let from = if from > head {
            Seq(0)
        } else if acked_here > Seq(0) && from > acked_here {
            acked_here
        } else {
            from
        };
        // The peer's file is older than the one we synced with (restored) when its cursor is
        // below our record of its ACKs, or its record of our ACKs (`acked_there`) is below
        // what we received from it. Writes of its own may then be lost with the newer file,
        // and the feed never sends a peer its own cells: up to our head, it gets them back.
        // (After a crash that lost a second of noted cursors this sends back a little that
        // the peer still has; applying it changes nothing.)
        //
        // Not to a relay: what we send it back includes other users' writes that came to us
        // through it, which its write rules would judge with our rights, refuse, and restate
        // over everyone's copy. A restored relay gets each client's writes from the client's
        // own feed, which resumes from the relay's older cursor.
        //
        // Nor while all we received from it came in a snapshot file of its (seeding this copy
        // offline): it never got our ACK for that, and would get every cell of its own back
        // (an audit, 2026-12-06: 150,000 cells for a 50,000-record seed).
        let peer_is_server = self.peer.as_ref().is_some_and(|p| p.server);
        // (A peer whose feed is shorter than what we received from it was restored all the
        // same: its writes go back to it.)
        let peer_head = self.peer.as_ref().map_or(Seq(0), |p| p.last_seq);
        let received_by_file = received_by_file
            .and_then(|n| n.parse().ok())
            .map(Seq)
            .is_some_and(|s| s == received_from_peer && peer_head >= received_from_peer);
        if self.peer_from.is_none()
            && !peer_is_server
            && (claimed < acked_here || (acked_there < received_from_peer && !received_by_file))
        {
            self.echo_until = head;
        }
        let view = format!(
            "{}#{}",
            policy.fingerprint(),
            self.cfg
                .access
                .as_ref()
                .map(|a| a.view())
                .unwrap_or_default()
        );
        let default_view = format!("{}#", SyncPolicy::everything().fingerprint());
        // Noted as its digest; a note written before 2026-12-07 holds the view itself.
        let legacy_note = stored_view.as_deref() == Some(&*view);
        let view_changed = match stored_view.as_deref() {
            None => view != default_view,
            Some(noted) => noted != view_note(&view) && !legacy_note,
        };
        // Forget the previous subscription's sending state (a policy change abandons it).
        self.unacked.clear();
        self.unit_open = false;
        self.replacing_snapshot_due = false;
        self.caught_up_sent = None;
        self.echo_unannounced = false;
        self.evict_pending.clear();
        self.restate_pending.clear();
        self.peer_policy = compiled;
        self.peer_from = Some(from);
        self.sent_through = from;
        self.unit_until = from;
        self.acked = self.acked.max(from);
        // Stable as before (0 for a peer without a record: it becomes stable at its first
        // CAUGHT_UP), never past what it holds.
        if self.stable_noted.is_none() {
            self.stable = stable_here.min(self.acked);
        }
        // The peer holds everything up to `from`: GC may count on it now, not at the next
        // ACK or ping.
        self.note_cursors(db, false)
            .map_err(|e| self.internal(e, now_ms))?;
        self.evicts_unconfirmed = None;
        self.evicts_note = evicts_note.and_then(|n| n.parse().ok()).map(Seq);
        if let Some(after) = self.evicts_note.filter(|_| !view_changed) {
            // EVICTs of an earlier session may have been lost with its connection after the
            // peer acknowledged the units they followed: derive them again from what changed
            // since (the ones still due are sent before anything else; the note goes once
            // they are confirmed). A changed view gets a replacing snapshot instead.
            //
            // Up to our head, not only to where the peer resumes: a record whose change took
            // it out of the view may have changed again since, and the feed then holds it
            // only at that later position — where `filter_view` judges it never seen,
            // because the peer held on to it past the EVICT (its own write was not yet
            // acknowledged, so it refused it; the EVICT made up for that was the one lost).
            // The peer then kept a record outside its view for good (simulation, seed 32086
            // with `BLAZEDB_SIM_PERTURB`). So that the wider range names no record the peer
            // never could see, those are judged as `filter_view` judges them, from the note
            // on; a record the peer wrote needs no judging (it holds its own write).
            let records = db
                .feed_records(after, head, peer)
                .map_err(|e| self.internal(e, now_ms))?;
            //
            // Restatements are noted the same way: a record the peer wrote since the note
            // is restated whole if it is in the view (its write may have moved it in), and
            // evicted if not.
            // A write of the peer's that was not applied here (lost, or refused) left no feed
            // row: its records were noted with its unit.
            let unapplied = db
                .unapplied_writes(peer)
                .map_err(|e| self.internal(e, now_ms))?;
            self.evict_pending.extend(unapplied);
            let mut movable: std::collections::HashMap<String, bool> = Default::default();
            for (coll, id, written_by_peer) in records {
                let can_move = *movable
                    .entry(coll.clone())
                    .or_insert_with(|| self.peer_view().membership_can_change(&coll));
                if !can_move {
                    // Always in its view, whole: nothing to restate or evict. A restatement
                    // would even do harm: it sends the record's current state, which may
                    // hold cells of a transaction whose other records the peer has not been
                    // sent yet (simulation, seed 2021, a replica under a read rule: half a
                    // transfer between accounts showed).
                    continue;
                }
                if written_by_peer {
                    self.restate_pending.push((coll.clone(), id));
                    self.evict_pending.push((coll, id));
                } else if self
                    .may_hold(db, &coll, id, after)
                    .map_err(|e| self.internal(e, now_ms))?
                {
                    self.evict_pending.push((coll, id));
                }
            }
        }
        if self.subscriptions_received == 1 && self.subscribed {
            // Now we know how much of ours the peer has (`from`), so the records we moved
            // out of our own view can go unless they hold changes it lacks.
            self.evict_outside_own_filter(peer, self.acked, db)
                .map_err(|e| self.internal(e, now_ms))?;
        }
        // (A note of the view itself is replaced by its digest too, without a snapshot.)
        self.view_pending = (view_changed || legacy_note).then(|| view_note(&view));
        // A new snapshot's id differs from the last one begun for this peer and from the
        // one it wishes to resume: ids mix in the session clock, which starts at 0 in every
        // session, so two sessions' could coincide, and a note or a staged snapshot of the
        // old one would then pass for the new one (a resume under another view).
        let mut fresh_id = self.fresh_snapshot_id(now_ms, head);
        let wished = match &wish {
            SnapshotWish::Resume { snap_id, .. } => Some(*snap_id),
            _ => None,
        };
        let last_begun = snapshot_view.as_deref().and_then(snapshot_note_id);
        while Some(fresh_id) == wished || Some(fresh_id) == last_begun {
            fresh_id = fresh_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        // The view a snapshot is served under is noted once the peer applied it whole
        // (NOTE_VIEW); until then a peer that never had one (a relay's new client, whose view
        // includes the rules and claims) looks changed at every reconnect. A snapshot begun
        // under the same view resumes all the same: begun again, it was a replacing one,
        // which the client, holding merged chunks of the first, refused (MALFORMED) before a
        // third session sent it everything again (an audit, 2026-12-06).
        let begun_under = |snap_id: u64| {
            [view_note(&view), view.clone()]
                .iter()
                .any(|v| snapshot_view.as_deref() == Some(&*snapshot_note(snap_id, v)))
        };
        let snap = match wish {
            SnapshotWish::Resume {
                snap_id,
                position,
                next_index,
                last,
            } if position >= horizon
                && position <= head
                && (!view_changed || begun_under(snap_id)) =>
            {
                Some(SnapOut {
                    snap_id,
                    position,
                    next_index,
                    after: Some(SnapshotKey {
                        collection: last.0,
                        id: last.1,
                    }),
                    read_through: position,
                    begun: false,
                    // The receiver keeps what SNAPSHOT_BEGIN said first; send the same.
                    replace: from > Seq(0),
                    cells: 0,
                })
            }
            SnapshotWish::Want | SnapshotWish::Resume { .. } => {
                Some(new_snapshot(head, true, fresh_id))
            }
            SnapshotWish::No => {
                // A new peer (not a relay: what a client pushes to a relay goes through its
                // write rules unit by unit) gets the view faster as a snapshot.
                // Only to an empty peer, and not when we hold data of the peer itself: a
                // snapshot would send that back (the feed skips it).
                let peer_empty = self.peer.as_ref().is_some_and(|p| p.last_seq == Seq(0));
                let new_peer = from == Seq(0)
                    && head > Seq(0)
                    && peer_empty
                    && received_from_peer == Seq(0)
                    && self.cfg.snapshot_new_peers
                    && !peer_is_server;
                let collected = feed_collected_past(from, horizon);
                if peer_is_server {
                    // A relay takes a client's data through the feed only, where its write
                    // rules apply unit by unit (it refuses snapshots). So GC here never lets
                    // a relay expire (`note_server_role`): its cursor stays at or above our
                    // horizon, unless the relay was never seen as one (ARCHITECTURE.md, GC).
                    None
                } else if collected || (view_changed && from > Seq(0)) {
                    Some(new_snapshot(head, true, fresh_id))
                } else if new_peer {
                    Some(new_snapshot(head, false, fresh_id))
                } else {
                    None
                }
            }
        };
        // From here on GC must wait for the peer: until its first ACK (at the end of a
        // snapshot) it would otherwise have no `acked` row, and GC could collect a delete of
        // a record it already holds from an early chunk or unit. It waits at what the peer
        // holds (`from`), not at a snapshot's position: until the peer has applied the
        // snapshot, its own writes made before it are concurrent with our removals up to
        // there, and one older than a delete must still meet the tombstone here (simulation
        // seed 4211532 perturbed: GC collected a delete the snapshot had already carried to
        // the peer, whose older insert of that record then arrived and lived here while the
        // tombstone beat it there; test
        // `gc.rs::gc_during_a_snapshot_keeps_deletes_the_peers_older_writes_must_meet`).
        db.hold_gc_for_peer(peer, from)
            .map_err(|e| self.internal(e, now_ms))?;
        if let Some(s) = snap.as_ref().filter(|s| s.next_index == 0) {
            // Lets an interrupted snapshot resume; may wait in memory while the file takes
            // no writes (then a reconnect after a restart starts the snapshot over).
            db.set_peer_notes_or_wait(
                peer,
                &[(
                    NOTE_SNAPSHOT_VIEW,
                    Some(&snapshot_note(s.snap_id, &view_note(&view))),
                )],
            )
            .map_err(|e| self.internal(e, now_ms))?;
        }
        if snap.is_some() {
            self.snap_out = snap;
        }
        Ok(())
    }

    pub(super) fn fill(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        if self.peer_from.is_none() {
            return Ok(());
        }
        self.announce_deferred_echo(now_ms);
        if self.snap_out.is_some() {
            return self.fill_snapshot(now_ms, db);
        }
        if self.replacing_snapshot_due && !self.unit_open && self.sent_through >= self.unit_until {
            // GC went past what the peer holds while we sent it the feed (a peer it no longer
            // waited for: forgotten, or expired): the feed may have lacked deletes, so the
            // peer gets what the SUBSCRIBE path gives a peer below the horizon.
            self.replacing_snapshot_due = false;
            let head = db.last_seq()?;
            self.snap_out = Some(new_snapshot(
                head,
                true,
                self.fresh_snapshot_id(now_ms, head),
            ));
            return self.fill_snapshot(now_ms, db);
        }
        if !self.unit_open && !self.evict_pending.is_empty() {
            self.flush_evictions(now_ms, db)?;
        }
        if !self.unit_open && !self.restate_pending.is_empty() {
            self.flush_restatements(now_ms, db)?;
        }
        let head = db.last_seq()?;
        // A unit in progress must be finished whatever the window says.
        let in_unit = self.sent_through < self.unit_until;
        if !in_unit {
            self.unit_from = self.sent_through;
            self.unit_cells = 0;
        }
        // Coalescing: while a unit is unacknowledged and only a trickle of commits waits
        // (fewer than a batch's worth), hold them until the ACK comes back and send them as
        // one unit then. The receiver applies a unit in one SQLite transaction, so a peer that
        // falls behind a stream of small commits (a relay with many clients) catches up with
        // a few large transactions instead of one per commit; the delay is at most one round
        // trip, which the receiver would have spent applying the unit in flight anyway. A
        // backlog of a batch or more still pipelines up to the window.
        let window_open = if self.trickle(head) {
            self.unacked.is_empty()
        } else {
            self.unacked.len() < self.cfg.window_units
        };
        if self.sent_through < head && (in_unit || window_open) {
            let peer = self.peer.as_ref().map(|p| p.node);
            // Shared: the other sessions at the same position read the same page.
            let batch_cells = self.cfg.batch_cells_max.max(1);
            let page = self
                .page_cells
                .clamp(batch_cells, batch_cells * LAGGING_PAGE_BATCHES_MAX);
            let (shared, horizon) = db.changes_since_shared_and_horizon(
                self.sent_through,
                page,
                self.feed_exclusion(),
            )?;
            // After a snapshot (which holds the peer from its position on) as anywhere else.
            // A relay refuses snapshots: it keeps the feed (GC never lets one expire).
            if feed_collected_past(self.sent_through, horizon)
                && !self.peer.as_ref().is_some_and(|p| p.server)
            {
                // Inside a unit: finish it first (the peer applies units whole).
                self.replacing_snapshot_due = true;
                if !in_unit && !self.unit_open {
                    return self.fill(now_ms, db);
                }
            }
            // GC dropped the links among the commits at or below its horizon (`feed_links`
            // rows with `t` ≤ it): read from below it, that stretch goes as one unit, so no
            // transaction in it, partly overwritten by a later one, reaches the peer in two.
            // Who reads there: a peer new to us that holds data of its own (not sent a
            // snapshot) and a relay (which takes no snapshot; simulation seed 3101719: a
            // transfer's debit seen without its credit).
            if self.sent_through < horizon && !self.replacing_snapshot_due {
                self.unit_until = self.unit_until.max(horizon);
            }
            self.page_cells = if shared.more { page * 2 } else { batch_cells };
            let mut filtered;
            let batch: &crate::store::ChangeBatch = if self.peer_is_partial() {
                filtered = (*shared).clone();
                let view = View {
                    access: self.cfg.access.as_deref().filter(|a| a.filters_reads()),
                    policy: &self.peer_policy,
                    params: self.view_params(),
                };
                filter_view(
                    db,
                    &view,
                    peer,
                    BatchSpan {
                        since: self.unit_from,
                        at: shared.next,
                    },
                    &mut filtered.changes,
                    &mut self.evict_pending,
                    &mut self.refused,
                )?;
                &filtered
            } else {
                &shared
            };
            // Chains of partly overwritten transactions (e.g. every transaction touches one
            // hot record) can link a long stretch of the feed into one unit; it is sent whole
            // however long, and the receiver stages it on disk (`store/unit.rs`). It ends:
            // links only reach commits that exist, so a sender that reaches the head closes
            // every unit.
            self.unit_until = self.unit_until.max(batch.needs_through);
            let complete = batch.next >= self.unit_until;
            let sent = self.send_changes(&batch.changes, batch.next, !complete, now_ms);
            if sent {
                self.count_restated(&batch.changes);
            }
            while self.restated_at.front().is_some_and(|at| *at <= batch.next) {
                self.restated_at.pop_front();
            }
            self.unit_cells += batch
                .changes
                .iter()
                .map(|c| c.cells.len() as u64)
                .sum::<u64>();
            self.sent_through = batch.next;
            if complete && !self.evict_pending.is_empty() {
                // After the unit, never inside it: the receiver applies the unit first, so a
                // record the unit touched and that then left the view does not come back.
                self.flush_evictions(now_ms, db)?;
            }
            if complete && (sent || self.unit_open) {
                // Closing a unit whose earlier frames went out: the last frame was sent
                // above (possibly empty), and the ACK for it is awaited.
                self.unacked.push_back((batch.next, self.unit_cells));
            }
            self.unit_open = !complete && (sent || self.unit_open);
        }
        if self.sent_through >= head
            && self.sent_through >= self.unit_until
            && !self.replacing_snapshot_due
            && self.caught_up_sent != Some(self.sent_through)
        {
            self.send_caught_up(now_ms);
        }
        Ok(())
    }

    /// CAUGHT_UP(`sent_through`): everything up to there went out in complete units, or holds
    /// only the peer's own changes. Announces positions `pass_over_echo` passed too.
    pub(super) fn send_caught_up(&mut self, now_ms: u64) {
        self.caught_up_sent = Some(self.sent_through);
        self.caught_up_sent_ms = now_ms;
        self.echo_unannounced = false;
        self.send(
            &Message::CaughtUp {
                seq: self.sent_through,
            },
            now_ms,
        );
    }

    /// Encode changes as one or more CHANGES frames, splitting at record boundaries, and
    /// inside a record larger than `RECORD_BYTES_MAX` (see below). Returns whether anything
    /// was sent.
    pub(super) fn send_changes(
        &mut self,
        changes: &[Change],
        end: Seq,
        partial: bool,
        now_ms: u64,
    ) -> bool {
        if changes.is_empty() {
            if !partial && self.unit_open {
                // The unit's earlier frames went out; close it even though this last part
                // held nothing for this peer (everything came from it).
                let payload = self.tx_dict.encode_changes(&[], end);
                self.push_frame(kind::CHANGES, false, &payload, now_ms);
                return true;
            }
            // Nothing for this peer: CAUGHT_UP will carry the position.
            return false;
        }
        let mut frame: Vec<RecordCells<'_>> = Vec::new();
        let mut bytes = 0usize;
        let mut cells = 0usize;
        for (i, ch) in changes.iter().enumerate() {
            let last = i + 1 == changes.len();
            let record_bytes = ch.cells.iter().map(approx_cell_bytes).sum::<usize>() + 20;
            let mut from = 0;
            if record_bytes > RECORD_BYTES_MAX {
                // Only a merge of concurrent writes makes a record this large (local writes
                // stop at RECORD_BYTES_MAX), and whole it may not fit in a frame (sent whole,
                // it was refused by every receiver, for good). Its cells go in pieces: a frame
                // ends inside it once it passes the target, and the next frame of the unit
                // names the record again in the same group. The receiver merges the pieces as
                // one record of one commit (PROTOCOL.md §6.2).
                bytes += 20;
                for (j, c) in ch.cells.iter().enumerate() {
                    bytes += approx_cell_bytes(c);
                    if bytes >= FRAME_TARGET_BYTES && j + 1 < ch.cells.len() {
                        frame.push(RecordCells::piece(ch, from..j + 1));
                        self.push_changes(&frame, ch.seq, true, now_ms);
                        frame.clear();
                        (bytes, cells, from) = (20, 0, j + 1);
                    }
                }
            } else {
                bytes += record_bytes;
            }
            cells += ch.cells.len() - from;
            frame.push(RecordCells::piece(ch, from..ch.cells.len()));
            if last || bytes >= FRAME_TARGET_BYTES || cells >= self.cfg.batch_cells_max {
                let frame_end = if last { end } else { ch.seq };
                self.push_changes(&frame, frame_end, partial || !last, now_ms);
                frame.clear();
                bytes = 0;
                cells = 0;
            }
        }
        true
    }

    /// Count the cells of `changes` (just sent) at positions where an apply of the peer's
    /// units restated our version over its writes (`SessionStats::cells_restated`).
    fn count_restated(&mut self, changes: &[Change]) {
        if self.restated_at.is_empty() {
            return;
        }
        let restated: usize = changes
            .iter()
            .filter(|c| self.restated_at.binary_search(&c.seq).is_ok())
            .map(|c| c.cells.len())
            .sum();
        self.stats.cells_restated += restated as u64;
    }

    /// One CHANGES frame of `records`.
    pub(super) fn push_changes(
        &mut self,
        records: &[RecordCells<'_>],
        end: Seq,
        partial: bool,
        now_ms: u64,
    ) {
        let payload = self.tx_dict.encode_records(records, end);
        self.stats.cells_sent += records.iter().map(|r| r.cells.len() as u64).sum::<u64>();
        self.push_frame(kind::CHANGES, partial, &payload, now_ms);
    }

    /// Whether what waits to be sent up to `head` is less than a batch (see the coalescing
    /// in `fill`).
    pub(super) fn trickle(&self, head: Seq) -> bool {
        head.0.saturating_sub(self.sent_through.0) < self.cfg.batch_cells_max as u64
    }
}
