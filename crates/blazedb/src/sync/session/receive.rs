//! Receiving the peer's feed: units staged as their parts arrive, applied whole (one
//! transaction per group of complete units), acknowledged, and the echo of our own changes
//! passed over.

use super::*;

impl Session {
    /// Whether part of a unit has arrived and its last frame has not.
    pub(super) fn unit_in_progress(&self) -> bool {
        !self.staged.is_empty() || self.staged_parts > 0
    }

    /// Forget the unit in progress (its staged parts on disk are replaced by the next unit's
    /// first part, or deleted when it applies).
    pub(super) fn drop_unit(&mut self) {
        self.group = None;
        self.caught_up_after_group = None;
        self.stable_after_group = None;
        self.staged.clear();
        self.staged_cells = 0;
        self.staged_parts = 0;
        self.staged_touched.clear();
        self.staged_moved_in.clear();
    }

    /// Move the complete transactions of the unit in progress from memory to disk, keeping
    /// only the last transaction (which may still be arriving) in memory.
    pub(super) fn stage_unit_part(&mut self, now_ms: u64, db: &Database) -> Result<(), SyncError> {
        let Some(last) = self.staged.last().map(|c| c.seq) else {
            return Ok(());
        };
        let split = self.staged.iter().position(|c| c.seq == last).unwrap_or(0);
        if split == 0 {
            // One transaction so far: it stays in memory (it is at most
            // TRANSACTION_CELLS_MAX cells, which decoding enforces).
            return Ok(());
        }
        let part: Vec<Change> = self.staged.drain(..split).collect();
        self.staged_cells -= part.iter().map(|c| c.cells.len()).sum::<usize>();
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        self.staging_used = true;
        match db.unit_stage(peer, self.staging, self.staged_parts, &part) {
            Ok(()) => {}
            Err(Error::Apply(ApplyError::ClockSkew(e))) => {
                return Err(self.fail(ErrorCode::ClockSkew, e.to_string(), now_ms))
            }
            Err(Error::Apply(e)) => {
                return Err(self.fail(ErrorCode::Malformed, e.to_string(), now_ms))
            }
            Err(e) => return Err(self.internal(e, now_ms)),
        }
        self.staged_parts += 1;
        self.stats.unit_parts_staged += 1;
        let (touched, moved_in) = self.view_keys(&part);
        self.staged_touched.extend(touched);
        self.staged_moved_in.extend(moved_in);
        Ok(())
    }

    /// For a peer with a restricted view, the records `changes` (its own writes) touch, and
    /// those they may move into its view; both empty otherwise.
    ///
    /// A peer with a restricted view may move a record with its own write: out of its view
    /// (its copy must go) or into it (it may lack fields we have). The feed never sends the
    /// peer its own changes, so `apply_staged` handles both, as if the change had come from
    /// anyone else.
    pub(super) fn view_keys(&self, changes: &[Change]) -> (Vec<RecordKey>, Vec<RecordKey>) {
        let restricted = self.peer_from.is_some() && self.peer_is_partial();
        if !restricted {
            return (Vec::new(), Vec::new());
        }
        // Only `collection_visible` and `can_move` are asked here, and neither reads the
        // parameters (claims): they are not built for every unit applied.
        let view = View {
            access: self.read_filtering_access(),
            policy: &self.peer_policy,
            params: Params::new(),
        };
        let t: Vec<_> = changes
            .iter()
            .map(|c| (c.collection.clone(), c.id))
            .collect();
        let m: Vec<_> = changes
            .iter()
            .filter(|c| view.collection_visible(&c.collection) && view.can_move(&c.collection, c))
            .map(|c| (c.collection.clone(), c.id))
            .collect();
        (t, m)
    }

    /// The peer says its feed through `seq` is all we get (for now).
    pub(super) fn on_caught_up(
        &mut self,
        now_ms: u64,
        seq: Seq,
        db: &Database,
    ) -> Result<(), SyncError> {
        self.peer_caught_up = Some(seq);
        let unacknowledged = seq > self.received_through
            || (seq == self.received_through && seq > self.ack_sent_through);
        if !self.unit_in_progress() && unacknowledged {
            if seq > self.received_through {
                // Everything between was skipped by the sender (it came from us): remember
                // the position so a reconnect does not rescan it. Not a write per CAUGHT_UP:
                // noted, and stored with the handle's other noted cursors (at most every
                // ACK_PERSIST_INTERVAL_MS), with the next unit, or on close. Storing it late
                // is safe: what a reconnect receives again is skipped or applied
                // idempotently.
                self.received_through = seq;
                self.note_cursors(db, false)
                    .map_err(|e| self.internal(e, now_ms))?;
            }
            // Acknowledged like a unit, so that the peer's record of what we hold of its feed
            // keeps up with our cursor: below it, the peer would take our file for one
            // restored from an older copy (PROTOCOL.md §8.2) and send our own changes back.
            // Also a CAUGHT_UP at our cursor that this session has not acknowledged: the
            // peer's record may be behind it (its ACK was lost with the end of a session),
            // and then the peer resumes from its record, skips to here and says so, every
            // session, its GC held back for good unless this ACK moves the record. (Not
            // again after the unit that brought us here was acknowledged: one ACK a unit.)
            self.send_ack(seq, now_ms, db);
        }
        Ok(())
    }

    /// End the session over a bad frame. The complete units that arrived before it are
    /// applied first: what arrived whole is kept.
    pub(super) fn fail_bad_frame(
        &mut self,
        code: ErrorCode,
        message: String,
        now_ms: u64,
        db: &Database,
    ) -> SyncError {
        match self.apply_group(now_ms, db) {
            Ok(()) => self.fail(code, message, now_ms),
            Err(e) => e,
        }
    }

    /// Apply the complete units waiting in `group` (one transaction); the unit in progress
    /// after them stays staged.
    pub(super) fn apply_group(&mut self, now_ms: u64, db: &Database) -> Result<(), SyncError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let caught_up = self.caught_up_after_group.take();
        let rest = self.staged.split_off(group.changes);
        let rest_cells = self.staged_cells - group.cells;
        self.staged_cells = group.cells;
        let applied = self.apply_staged(now_ms, group.end, db);
        self.staged = rest;
        self.staged_cells = rest_cells;
        applied?;
        self.units_applied(now_ms, db)?;
        match caught_up {
            Some(seq) => self.on_caught_up(now_ms, seq, db),
            None => Ok(()),
        }
    }

    /// Apply everything staged, which ends with a complete unit through `end`, in one
    /// transaction, then acknowledge it.
    pub(super) fn apply_staged(
        &mut self,
        now_ms: u64,
        end: Seq,
        db: &Database,
    ) -> Result<(), SyncError> {
        let changes = std::mem::take(&mut self.staged);
        let staged = StagedParts {
            staging: self.staging,
            count: self.staged_parts,
        };
        let (mut touched, mut moved_in) = self.view_keys(&changes);
        touched.append(&mut self.staged_touched);
        moved_in.append(&mut self.staged_moved_in);
        self.drop_unit();
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        // Every record the peer wrote is checked for leaving its view (an EVICT it refused
        // earlier because of this very write is made up here); records its write may have
        // moved in are restated.
        touched.sort();
        touched.dedup();
        moved_in.sort();
        moved_in.dedup();
        // Of those its write may move in, the ones outside its view before the write: if they
        // are inside after it, the peer may lack their other fields. Also those with changes
        // we have not sent it yet: one of them may be the move-in that would have brought
        // the whole record, and the peer's write may overwrite it before it goes out (then
        // it never goes: the feed holds only the newest cells, and the peer's own are not
        // sent back). (A record it created, or one it already saw whole, needs nothing.)
        let moved_in = if moved_in.is_empty() {
            moved_in
        } else {
            self.may_lack(db, moved_in)
                .map_err(|e| self.internal(e, now_ms))?
        };
        // A peer that holds part of our records may never receive the winner over its
        // losing write: its losing writes are recorded as conflicts here too.
        let access = self.cfg.access.as_deref();
        // A write of the peer that loses here without being applied, or is refused, leaves no
        // feed row from which a reconnect could derive the EVICT (or restatement) it may make
        // due again: the unit's transaction notes its record, and the position the note
        // derives from.
        let evicts_after = self.evicts_note.map_or(self.acked, |n| n.min(self.acked));
        let partial = self.peer_is_partial();
        let applied = if partial {
            db.apply_unit_from_partial_replica(
                peer,
                staged,
                changes,
                Some(end),
                access,
                evicts_after,
            )
        } else {
            db.apply_unit(peer, staged, changes, Some(end), access)
        };
        match applied {
            Ok(outcome) => {
                if partial && !(outcome.ignored.is_empty() && outcome.rejected.is_empty()) {
                    // Noted with the unit (`apply_unit_from_partial_replica`).
                    self.evicts_note = Some(evicts_after);
                }
                if !touched.is_empty() {
                    self.evict_left_view(db, touched, moved_in)
                        .map_err(|e| self.internal(e, now_ms))?;
                }
                let n = outcome.applied;
                self.stats.cells_applied += n as u64;
                self.stats.conflicts_recorded += outcome.conflicts;
                if let Some(at) = outcome.restated_at {
                    if self.restated_at.len() >= RESTATED_POSITIONS_MAX {
                        self.restated_at.pop_front();
                    }
                    self.restated_at.push_back(at);
                }
                self.received_through = end;
                // The cursor was stored with the unit.
                self.received_noted = end;
                if !outcome.rejected.is_empty() || !outcome.refused_losers.is_empty() {
                    let refused = outcome.rejected.len() + outcome.refused_losers.len();
                    self.stats.changes_refused += refused as u64;
                    if self.refused.len() + outcome.rejected.len() > REFUSED_REMEMBERED_MAX {
                        // A peer that keeps writing what it may not: start over (a restated
                        // delete forgotten here may then be held back; see filter_view).
                        self.refused.clear();
                    }
                    self.refused.extend(
                        outcome
                            .rejected
                            .iter()
                            .map(|r| (r.collection.clone(), r.id)),
                    );
                    // Refused losers were not applied and changed nothing: nothing to restate,
                    // so they do not join `refused` (see `filter_view`).
                    let mut rejections = outcome.rejected;
                    rejections.extend(outcome.refused_losers);
                    self.send(
                        &Message::Reject {
                            rejections: rejections.clone(),
                        },
                        now_ms,
                    );
                    self.events.push_back(SessionEvent::Refused(rejections));
                }
                // Past the positions the apply took first: they hold only the peer's own
                // changes, and the ACK says whether our feed has gone to it whole.
                if let Some((first, last)) = outcome.sender_seqs {
                    self.pass_over_echo(first, last, now_ms);
                }
                self.send_ack(end, now_ms, db);
                self.events.push_back(SessionEvent::Applied {
                    cells: n,
                    through: end,
                });
                self.send_view_updates(now_ms, db)
                    .map_err(|e| self.internal(e, now_ms))
            }
            Err(Error::Apply(ApplyError::ClockSkew(e))) => {
                Err(self.fail(ErrorCode::ClockSkew, e.to_string(), now_ms))
            }
            Err(Error::Apply(ApplyError::Invalid(m))) => {
                Err(self.fail(ErrorCode::Malformed, m, now_ms))
            }
            Err(e) => Err(self.internal(e, now_ms)),
        }
    }

    /// The unit just applied took the local feed positions `first..=last`, all of them rows
    /// from the peer, which are never sent back. When everything before them was sent, move
    /// past them without reading the feed, and without a CAUGHT_UP for positions that hold
    /// only the peer's own changes, unless the last one went out `ECHO_CAUGHT_UP_INTERVAL_MS`
    /// ago or more: otherwise every unit applied costs a feed read here, and the peer a frame
    /// to handle (a relay: one per client per unit). The peer's received cursor then stays
    /// behind by at most that interval's positions; a reconnect reads them again and skips
    /// them, as a send would have.
    ///
    /// The acknowledged cursor does not move here: it must never pass the peer's stored
    /// received cursor, where the peer resumes (a unit it applied is acknowledged only once
    /// its cursor is stored with it). GC collects up to the lowest acknowledged cursor, and a
    /// peer that resumes below that horizon needs a whole replacing snapshot instead of the
    /// feed. (Counting these positions as acknowledged did that in the simulation, seed 256,
    /// which is how the partial-replica snapshot bug fixed in `on_snapshot_end` was found.)
    pub(super) fn pass_over_echo(&mut self, first: Seq, last: Seq, now_ms: u64) {
        let all_sent_before = self.peer_from.is_some()
            && self.snap_out.is_none()
            && !self.unit_open
            && self.sent_through >= self.unit_until
            && self.sent_through.0 + 1 == first.0;
        if !all_sent_before {
            return;
        }
        let announced_lately = now_ms
            < self
                .caught_up_sent_ms
                .saturating_add(ECHO_CAUGHT_UP_INTERVAL_MS);
        if self.caught_up_sent == Some(self.sent_through) && announced_lately {
            // The peer was told it had everything up to here; what follows is its own.
            self.caught_up_sent = Some(last);
            self.echo_unannounced = true;
        }
        self.sent_through = last;
    }

    /// When the positions `pass_over_echo` counted as announced have waited the interval,
    /// stop counting them so: the feed path then sends the CAUGHT_UP as soon as it may. The
    /// peer ACKs it once it has noted its cursor there, which is how our record of what it
    /// holds, and with it the GC horizon, passes those positions. Left to the next unit, the
    /// positions after the last unit of a stream stayed unannounced until the peer wrote
    /// again: a replica that only receives kept every delete it received (the `gc_metadata`
    /// benchmark's replica: 154 bytes of metadata per live record after 20 rounds; test
    /// `gc.rs::a_replica_collects_the_deletes_it_received_over_a_long_lived_session`).
    pub(super) fn announce_deferred_echo(&mut self, now_ms: u64) {
        if self.deferred_echo_due().is_some_and(|due| now_ms >= due) {
            self.echo_unannounced = false;
            self.caught_up_sent = None;
        }
    }

    /// When the positions passed without a CAUGHT_UP are to be announced (`None`: there are
    /// none).
    pub(super) fn deferred_echo_due(&self) -> Option<u64> {
        self.echo_unannounced.then(|| {
            self.caught_up_sent_ms
                .saturating_add(ECHO_CAUGHT_UP_INTERVAL_MS)
        })
    }
}
