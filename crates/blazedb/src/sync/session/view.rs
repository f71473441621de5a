//! What the peer may see: read filters and sync policies applied to what is sent, records
//! that leave the peer's view (EVICT), records that enter it or whose refused write is
//! undone (restatements), and the notes that keep them across a lost connection.

use super::*;

impl Session {
    /// Drop what we hold of our view's collections that no longer matches our own filter:
    /// records we moved out of the view ourselves, whose EVICT from the peer was lost with a
    /// connection. Only for filters that read no `$` parameter (those only the peer can
    /// evaluate: it has the values); records with changes the peer has not acknowledged stay.
    pub(super) fn evict_outside_own_filter(
        &mut self,
        peer: NodeId,
        acked: Seq,
        db: &Database,
    ) -> Result<(), Error> {
        if self.cfg.policy.filter.is_none() {
            return Ok(());
        }
        let policy = match self.cfg.policy.compile() {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        // Decided by the parsed filter, not its text: a `$` inside a string (`"US$"`) is no
        // parameter, and skipping such filters left records outside the view for good.
        if !policy.params().is_empty() {
            return Ok(());
        }
        let params = Params::new();
        // The peer's acknowledgement says it holds our changes only where its own view (a
        // partial peer's policy, our read rules) takes the record: outside it, the peer was
        // sent an EVICT, not our change. Such records are guarded as if the peer had
        // acknowledged nothing, so our own changes keep them here until a peer that holds
        // them has them (two partial replicas with one filter once dropped a record one of
        // them closed from both: found through the topology's shared policy).
        let view = self.peer_view();
        let mut outside: Vec<(String, Vec<RecordId>, Vec<RecordId>)> = Vec::new();
        for coll in db.collections()? {
            if !policy.allows_collection(&coll) {
                continue;
            }
            let peer_sees_collection = view.collection_visible(&coll);
            let (mut peer_holds, mut peer_lacks) = (Vec::new(), Vec::new());
            db.for_each(&coll, |r| {
                if !policy.matches(r.id, &r.fields, &params) {
                    if peer_sees_collection && view.record_visible(&coll, r.id, &r.fields) {
                        peer_holds.push(r.id);
                    } else {
                        peer_lacks.push(r.id);
                    }
                }
                true
            })?;
            outside.push((coll, peer_holds, peer_lacks));
        }
        for (coll, peer_holds, peer_lacks) in outside {
            for (ids, acked) in [(peer_holds, acked), (peer_lacks, Seq(0))] {
                if !ids.is_empty() {
                    let guard = EvictGuard { peer, acked };
                    self.stats.evicted += db.evict(&coll, &ids, Some(guard))?.evicted as u64;
                }
            }
        }
        Ok(())
    }

    /// Drop our copies of fields the policy excludes (a local eviction, as for records), in
    /// the records changed after `since` in our feed (`Seq(0)`: all; see
    /// `fields_evicted_through`). Records holding changes of those fields the peer has not
    /// acknowledged keep them until it has (our unsynced edit of a field we stop syncing is
    /// sent first, not dropped): the ACK that covers them runs this again
    /// (`fields_kept_until`, [`Session::evict_kept_fields_once_acked`]).
    pub(super) fn evict_excluded_fields(&mut self, db: &Database, since: Seq) -> Result<(), Error> {
        let fields = self.cfg.policy.exclude_fields.clone();
        let peer = self.peer.as_ref().map(|p| p.node);
        let guard = peer.map(|peer| EvictGuard {
            peer,
            acked: self.acked,
        });
        // Read before the evictions: a record changed meanwhile is newer, looked at next time.
        let mut through = db.last_seq()?;
        self.fields_kept_until = None;
        for c in db.collections()? {
            if self
                .cfg
                .policy
                .collections
                .as_ref()
                .is_none_or(|l| l.contains(&c))
            {
                let out = db.evict_fields_changed_since(&c, &fields, guard, since)?;
                self.fields_kept_until = self.fields_kept_until.max(out.kept_until);
                if let Some(kept) = out.kept_from {
                    through = through.min(Seq(kept.0 - 1));
                }
            }
        }
        if let Some(peer) = peer {
            if through != self.fields_evicted_through {
                db.set_peer_note(peer, NOTE_FIELDS_EVICTED, Some(&through.0.to_string()))?;
            }
        }
        self.fields_evicted_through = through;
        Ok(())
    }

    /// Once the peer has acknowledged the changes that kept excluded fields in records
    /// (`fields_kept_until`), drop those fields: our edits of them have reached it. Run at
    /// each ACK (one comes also when nothing was left to send: for our feed's head).
    pub(super) fn evict_kept_fields_once_acked(&mut self, db: &Database) -> Result<(), Error> {
        if self.fields_kept_until.is_some_and(|s| self.acked >= s) {
            self.evict_excluded_fields(db, self.fields_evicted_through)?;
        }
        Ok(())
    }

    /// The access control, when it can refuse reads (else the read checks are skipped).
    pub(super) fn read_filtering_access(&self) -> Option<&dyn crate::sync::AccessControl> {
        self.cfg.access.as_deref().filter(|a| a.filters_reads())
    }

    /// Whether the peer holds only part of our records: our read rules or its policy narrow
    /// its view.
    pub(super) fn peer_is_partial(&self) -> bool {
        self.read_filtering_access().is_some() || !self.peer_policy.is_everything()
    }

    pub(super) fn on_evict(
        &mut self,
        now_ms: u64,
        records: Vec<(String, RecordId)>,
        db: &Database,
    ) -> Result<(), SyncError> {
        if !self.subscribed || self.unit_in_progress() || self.snap_in.is_some() {
            return Err(self.fail(
                ErrorCode::Unexpected,
                "EVICT inside a unit or a snapshot".into(),
                now_ms,
            ));
        }
        // An EVICT drops records here, without a tombstone or a write rule to pass. A side
        // that enforces rules (a relay) decides what its clients may hold, never the other way
        // round: from a client, an EVICT would delete the relay's copies of records the client
        // may not even read. (Between two full peers it grants nothing a delete would not.)
        if self.cfg.access.is_some() {
            return Err(self.fail(
                ErrorCode::Forbidden,
                "EVICT refused: this side enforces access rules, and its peers cannot make it \
                 drop records"
                    .into(),
                now_ms,
            ));
        }
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let mut by_coll: std::collections::BTreeMap<String, Vec<RecordId>> = Default::default();
        for (c, id) in records {
            by_coll.entry(c).or_default().push(id);
        }
        for (c, ids) in by_coll {
            // Records with changes the peer has not seen yet stay: they are ours to send.
            let guard = EvictGuard {
                peer,
                acked: self.acked,
            };
            // One the peer refused our write to: the eviction keeps our refused values as
            // conflicts (the peer never restates a record we may not read, so nothing else
            // would).
            let ids: Vec<(RecordId, Option<RefusedBy>)> = ids
                .into_iter()
                .map(|id| {
                    let refused = self
                        .refused_by_peer
                        .remove(&(c.clone(), id))
                        .map(|after| RefusedBy { peer, after });
                    (id, refused)
                })
                .collect();
            match db.evict_keeping_refused(&c, &ids, Some(guard)) {
                Ok(out) => self.stats.evicted += out.evicted as u64,
                Err(e) => return Err(self.internal(e, now_ms)),
            }
        }
        Ok(())
    }

    /// Note a record the peer refused our write to (see `refused_by_peer`).
    pub(super) fn remember_refused(&mut self, collection: String, id: RecordId) {
        let key = (collection, id);
        if self
            .refused_by_peer
            .insert(key.clone(), self.acked)
            .is_none()
        {
            self.refused_order.push_back(key);
        }
        while self.refused_order.len() > REFUSED_RECORDS_REMEMBERED_MAX {
            if let Some(old) = self.refused_order.pop_front() {
                self.refused_by_peer.remove(&old);
            }
        }
    }

    /// After applying the peer's write: the records it may have moved into its view are
    /// restated whole; the others it wrote are queued for `flush_evictions`, which sends an
    /// EVICT if they are then outside its view, or their tombstone if someone else deleted
    /// them. Queued whatever they look like now: another peer may delete one before the
    /// queue is flushed.
    pub(super) fn evict_left_view(
        &mut self,
        db: &Database,
        touched: Vec<(String, RecordId)>,
        moved_in: Vec<(String, RecordId)>,
    ) -> Result<(), Error> {
        let out = self.outside_view(db, moved_in.clone())?;
        let mut restate: Vec<_> = moved_in.into_iter().filter(|k| !out.contains(k)).collect();
        restate.sort();
        self.evict_pending.extend(
            touched
                .into_iter()
                .filter(|k| restate.binary_search(k).is_err()),
        );
        self.restate_pending.extend(restate);
        Ok(())
    }

    /// Those of `records` that the peer may not hold whole: outside its view as they are now,
    /// deleted, or with changes after what was sent to it.
    pub(super) fn may_lack(
        &self,
        db: &Database,
        records: Vec<(String, RecordId)>,
    ) -> Result<Vec<(String, RecordId)>, Error> {
        let mut out = self.outside_view(db, records.clone())?;
        for key in records {
            if out.contains(&key) {
                continue;
            }
            // A tombstone: its delete went only where the record may be, judged by what the
            // peer was sent, so a peer that kept the record past a refused EVICT may lack it.
            // Revived by the peer's write, the record must reach it whole, reset included
            // (simulation, seed 116352: the replica kept fields the delete had removed).
            if db
                .record_state(&key.0, key.1)?
                .is_some_and(|st| !st.is_live() || st.max_seq() > self.sent_through)
            {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// What the peer may see and asked to see, with its credentials' claims.
    pub(super) fn peer_view(&self) -> View<'_> {
        View {
            access: self.read_filtering_access(),
            policy: &self.peer_policy,
            params: self.view_params(),
        }
    }

    /// The parameters the peer's view is evaluated with (its credentials' claims).
    pub(super) fn view_params(&self) -> Params {
        self.cfg
            .access
            .as_ref()
            .map(|a| a.params())
            .unwrap_or_default()
    }

    /// Sort `records` queued for eviction (the peer may hold them outside its view) into
    /// those it must drop, outside its view as they are now, and those deleted since by
    /// anyone but the peer, whose tombstone it must be sent again (see `flush_evictions`).
    pub(super) fn evictions_due(
        &self,
        db: &Database,
        records: Vec<RecordKey>,
    ) -> Result<Due, Error> {
        let peer = self.peer.as_ref().map(|p| p.node);
        let view = self.peer_view();
        let mut due = Due {
            evict: Vec::new(),
            deleted: Vec::new(),
        };
        for (coll, id) in records {
            // As `outside_view` judges, in the same read of the record.
            if !view.collection_visible(&coll) {
                due.evict.push((coll, id));
                continue;
            }
            match db.record_state(&coll, id)? {
                // Unknown here: nothing to evict.
                None => {}
                Some(st) if !st.is_live() => {
                    // A delete the peer made itself, it holds already.
                    let deleted_by = st.reset_point().map(|v| v.node);
                    if deleted_by.is_some() && deleted_by != peer {
                        due.deleted.push((coll, id));
                    }
                }
                Some(st) if !view.record_visible(&coll, id, &st.fields()) => {
                    due.evict.push((coll, id));
                }
                Some(_) => {}
            }
        }
        Ok(due)
    }

    /// Whether the peer may hold a record: one of its states from `since` on was in the
    /// peer's view, or history cannot tell (see [`PastVisibility`]).
    pub(super) fn may_hold(
        &self,
        db: &Database,
        coll: &str,
        id: RecordId,
        since: Seq,
    ) -> Result<bool, Error> {
        let view = self.peer_view();
        if !view.collection_visible(coll) {
            return Ok(false);
        }
        let past = db.past_visibility(coll, id, since, &mut |fields| {
            view.record_visible(coll, id, fields)
        })?;
        Ok(past != PastVisibility::NeverSeen)
    }

    /// Those of `records` that the peer may not (or does not want to) see as they are now.
    /// Deleted records count as inside: their tombstones go to the peer.
    pub(super) fn outside_view(
        &self,
        db: &Database,
        records: Vec<(String, RecordId)>,
    ) -> Result<Vec<(String, RecordId)>, Error> {
        let view = self.peer_view();
        let mut out = Vec::new();
        for (coll, id) in records {
            let visible = if !view.collection_visible(&coll) {
                false
            } else {
                match db.record_state(&coll, id)? {
                    // Deleted or unknown: the tombstone is the peer's own; nothing to evict.
                    None => true,
                    Some(st) if !st.is_live() => true,
                    Some(st) => view.record_visible(&coll, id, &st.fields()),
                }
            };
            if !visible {
                out.push((coll, id));
            }
        }
        Ok(out)
    }

    /// Send the queued EVICTs of records that are still outside the peer's view (one that
    /// came back in since it was queued is not evicted: its return is in the feed); queue
    /// those someone else deleted since for a restatement of their tombstone.
    pub(super) fn flush_evictions(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        let mut pending = std::mem::take(&mut self.evict_pending);
        pending.sort();
        pending.dedup();
        let Due {
            evict: out,
            deleted,
        } = self.evictions_due(db, pending)?;
        // Deleted since they were queued: their tombstones go as restatements. The feed may
        // not bring them: `filter_view` holds a delete back when none of the record's states
        // since its unit began was in the peer's view, and that is the case for a record the
        // peer moved out of its view itself (its own write, or an EVICT it had to refuse
        // because its write was not acknowledged yet). Without this, the peer kept a live
        // copy of a deleted record for good (simulation, seed 12114 with
        // `BLAZEDB_SIM_PERTURB`). A tombstone rather than an EVICT: it merges with any
        // write of the peer's, and the peer can pass it on.
        self.restate_pending.extend(deleted);
        if out.is_empty() {
            if self.evicts_unconfirmed.is_none() && self.evicts_note.is_some() {
                // Re-derived after a reconnect and nothing (more) to send.
                self.set_evicts_note(db, None)?;
            }
            return Ok(());
        }
        // Until a later unit is acknowledged, the peer may lose these with the connection
        // (it acknowledged the unit they follow already): remember them for its next
        // SUBSCRIBE.
        self.note_view_update(db, &out)?;
        for chunk in out.chunks(EVICT_BATCH) {
            self.stats.evicts_sent += chunk.len() as u64;
            self.send(
                &Message::Evict {
                    records: chunk.to_vec(),
                },
                now_ms,
            );
        }
        self.confirm_view_update(now_ms);
        Ok(())
    }

    /// Right after the ACK of a unit of the peer's: the EVICTs and restatements it made due
    /// go out behind it, or, while a unit of ours is still being sent (nothing may come
    /// inside it), their note is stored. Either way the note that derives them again at the
    /// next SUBSCRIBE is stored before the ACK leaves: once the peer has the ACK, nothing else
    /// brings them. (They waited for the next `fill`, and a connection that ended first, say
    /// on a bad frame in the same read, lost them: the peer kept a record its own write had
    /// taken out of its view for good; simulation, seed 250473, a leaf under a read rule.)
    pub(super) fn send_view_updates(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        if self.peer_from.is_none()
            || (self.evict_pending.is_empty() && self.restate_pending.is_empty())
        {
            return Ok(());
        }
        if self.unit_open || self.snap_out.is_some() {
            // Most units of a partial peer make nothing due (every record it writes is
            // queued, to be judged when the queue goes out): store the note only if
            // something is.
            let due = self.evictions_due(db, self.evict_pending.clone())?;
            if self.restate_pending.is_empty() && due.evict.is_empty() && due.deleted.is_empty() {
                return Ok(());
            }
            let due: Vec<RecordKey> =
                [due.evict, due.deleted, self.restate_pending.clone()].concat();
            return self.note_view_update(db, &due);
        }
        if !self.evict_pending.is_empty() {
            self.flush_evictions(now_ms, db)?;
        }
        if !self.restate_pending.is_empty() {
            self.flush_restatements(now_ms, db)?;
        }
        Ok(())
    }

    /// Before EVICTs or a restatement of `records` go out: until the peer confirms them, they
    /// may be lost with the connection (after the peer acknowledged everything they follow,
    /// so nothing else brings them again). Store from where `on_subscribe` derives them
    /// again, and the records themselves: the feed may no longer show why they were due. A
    /// record the peer took out of its view by its own write, which another node then
    /// deleted (the reset removed the peer's cells, and with them its feed row), looks there
    /// like a record the peer never held: neither the lost EVICT nor the tombstone reached it,
    /// and it kept its write outside its view for good (simulation, seed 902577).
    pub(super) fn note_view_update(
        &mut self,
        db: &Database,
        records: &[RecordKey],
    ) -> Result<(), Error> {
        let from = self.evicts_note.map_or(self.acked, |n| n.min(self.acked));
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        db.note_view_updates_unconfirmed(peer, records, from)?;
        self.evicts_note = Some(from);
        Ok(())
    }

    /// After EVICTs or a restatement went out: a PING, whose PONG (or the ACK of a later
    /// unit) confirms them even if no unit follows.
    pub(super) fn confirm_view_update(&mut self, now_ms: u64) {
        self.ping_nonce += 1;
        self.send(
            &Message::Ping {
                nonce: self.ping_nonce,
            },
            now_ms,
        );
        self.evicts_unconfirmed = Some((self.sent_through, self.ping_nonce));
    }

    /// Whether every EVICT and restatement queued so far went out. Until they have, a
    /// confirmation of earlier ones must keep the note: the queued ones were derived from
    /// units applied since, and a restart would lose them.
    pub(super) fn view_updates_flushed(&self) -> bool {
        self.evict_pending.is_empty() && self.restate_pending.is_empty()
    }

    /// Store (or clear) the position after which evictions may not have reached the peer;
    /// clearing also drops the records of its unapplied writes noted with its units.
    pub(super) fn set_evicts_note(
        &mut self,
        db: &Database,
        from: Option<Seq>,
    ) -> Result<(), Error> {
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        let value = from.map(|s| s.0.to_string());
        match from {
            Some(_) => db.set_peer_note(peer, NOTE_EVICTS, value.as_deref())?,
            None => {
                db.set_peer_notes(peer, &[(NOTE_EVICTS, None), (NOTE_EVICTS_UNAPPLIED, None)])?
            }
        }
        self.evicts_note = from;
        Ok(())
    }

    /// Send the whole current state of records the peer moved into its view, as one unit
    /// that does not move its cursor (`end` = what was sent so far).
    pub(super) fn flush_restatements(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        let mut keys = std::mem::take(&mut self.restate_pending);
        keys.sort();
        keys.dedup();
        let outside = self.outside_view(db, keys.clone())?;
        let peer = self.peer.as_ref().map(|p| p.node);
        let view = self.peer_view();
        let mut changes = Vec::new();
        for (coll, id) in keys {
            if outside.contains(&(coll.clone(), id)) {
                continue;
            }
            let Some((now, then)) = db.record_state_now_and_at(&coll, id, self.sent_through)?
            else {
                continue;
            };
            // A live record goes as it was where the peer is, with the peer's own writes
            // since (which it holds): the cells of later commits reach it with those
            // commits' units, not ahead of their other records (test
            // `selective.rs::a_restatement_carries_no_cells_of_a_transaction_the_replica_has_not_been_sent`).
            // Not at all where that past state is outside the view (below). As it is now
            // where history cannot tell, and for a tombstone: a record deleted since is
            // restated to deliver the delete
            // (simulation seed 4648: sent as it was, a deleted record outside the view
            // reached the peer live, and the delete was then held back as never seen).
            let held = then
                .filter(|_| now.is_live())
                .map(|then| as_the_peer_holds(then, &now, peer));
            let cells = match held {
                Some(s) if s.is_live() && view.record_visible(&coll, id, &s.fields()) => {
                    s.into_cells()
                }
                // Live but outside the view where the peer is: its own writes did not move
                // it in, a later commit of another node did, and the feed sends it whole
                // when it reaches that commit, as it was there. Restated now, it carried
                // cells of still later commits ahead of their other records (simulation
                // seed 4110682: the peer's echo of our own cells, sent back because our
                // record of its ACKs was behind, "moved in" a doc of a pair; restated, it
                // went with the pair write's `p`, and its partner without).
                Some(s) if s.is_live() => continue,
                // Absent where the peer is (created since): its creation goes with its unit.
                Some(s) if s.cells().is_empty() => continue,
                // Deleted where the peer is, revived since by later commits: the delete goes
                // (it may not have reached the peer), the revival with its own commits' units.
                // Restated as it is now, the record carried a later transaction's cells ahead
                // of that transaction's other records (simulation seed 6343976: one doc of a
                // pair revived by the pair write reached the peer with it, its partner
                // without).
                Some(s) => s.into_cells(),
                None => now.into_cells(),
            };
            let mut ch = Change {
                seq: self.sent_through,
                collection: coll,
                id,
                cells,
            };
            if self.peer_policy.excludes_any() {
                strip_excluded(&self.peer_policy, &mut ch);
            }
            changes.push(ch);
        }
        if changes.is_empty() {
            return Ok(());
        }
        // It does not move the peer's cursor, so a reconnect would not send it again: noted
        // and confirmed like EVICTs. A lost one left the peer without the fields it lacked
        // for good (simulation, seed 36866 with `BLAZEDB_SIM_PERTURB`).
        let restated: Vec<RecordKey> = changes
            .iter()
            .map(|c| (c.collection.clone(), c.id))
            .collect();
        self.note_view_update(db, &restated)?;
        if self.send_changes(&changes, self.sent_through, false, now_ms) {
            let cells = changes.iter().map(|c| c.cells.len() as u64).sum();
            self.unacked.push_back((self.sent_through, cells));
        }
        self.confirm_view_update(now_ms);
        Ok(())
    }
}

/// Keep only what the peer may and wants to see, judging each record as the peer will hold
/// it after the batch (as it was at `at`, with the peer's own later writes). A change that
/// can move its record into the view becomes that whole record; one that moves it out
/// becomes an entry in `evict` (see
/// `sync/policy.rs`). Both an EVICT and a delete name the record, so they go only where the
/// peer may hold it: unless the record's history shows that none of its states since `since`
/// was in the peer's view — then the peer cannot hold it, and its id is not the peer's to
/// learn. A delete also goes when the peer's own change to the record was just refused
/// (`refused`: the restated delete must reach it).
///
/// `since` is where the unit that the changes belong to began, not how far it was sent: the
/// feed sends a record's current cells, so a change overwritten before it was read never
/// went out, and the peer kept the state before it. Its overwriter is linked to it, so both
/// are in one unit, and at a unit's start the peer holds the state the record had there.
/// Judged from how far the unit was sent, a record in the peer's view that a change took out
/// of it, then a delete overwrote that change before it was read, looked never seen: the
/// delete was held back and the peer kept its copy for good (simulation, seed 25404 with
/// `BLAZEDB_SIM_PERTURB`).
pub(super) fn filter_view(
    db: &Database,
    view: &View<'_>,
    peer: Option<NodeId>,
    BatchSpan { since, at }: BatchSpan,
    changes: &mut Vec<Change>,
    evict: &mut Vec<(String, RecordId)>,
    refused: &mut std::collections::HashSet<(String, RecordId)>,
) -> Result<(), Error> {
    let mut keep = Vec::with_capacity(changes.len());
    let mut whole_sent: std::collections::HashSet<(String, RecordId)> = Default::default();
    let record_filter = view.access.is_some() || view.policy.has_filter();
    for mut ch in changes.drain(..) {
        if !view.collection_visible(&ch.collection) {
            continue;
        }
        if record_filter {
            let key = (ch.collection.clone(), ch.id);
            if whole_sent.contains(&key) {
                // Its whole state already went out in this batch.
                continue;
            }
            // None of the record's states since `since` was in the view (see above).
            let never_seen = |state: &crate::crdt::RecordState| -> Result<bool, Error> {
                let visible = &mut |f: &std::collections::BTreeMap<String, crate::Value>| {
                    view.record_visible(&ch.collection, ch.id, f)
                };
                Ok(
                    db.past_visibility_of(&ch.collection, ch.id, state, since, visible)?
                        == PastVisibility::NeverSeen,
                )
            };
            // Judged and sent as the peer will hold the record after this batch: as it was
            // at `at`, with the peer's own writes since. The cells of later commits go with
            // those commits' units: sent as it is now, a record moving in carried them ahead
            // of the other records of their transaction (test
            // `selective.rs::a_record_moving_into_the_view_carries_no_cells_of_a_later_transaction`).
            // The peer's own writes count: judged without them, a record the peer's later
            // write took out of its view (and which it dropped) looked visible, and changes
            // of it reached the peer as a record of a few stray fields (simulation seed 1366
            // with `BLAZEDB_SIM_PERTURB`). Where history cannot tell, as it is now.
            if let Some((now, then)) = db.record_state_now_and_at(&ch.collection, ch.id, at)? {
                let then = then.map(|then| as_the_peer_holds(then, &now, peer));
                let state = then.as_ref().unwrap_or(&now);
                if state.is_live() {
                    let fields = state.fields();
                    let visible = view.record_visible(&ch.collection, ch.id, &fields);
                    match (visible, view.can_move(&ch.collection, &ch)) {
                        (true, false) => {}
                        (true, true) => {
                            ch.cells = then.unwrap_or(now).into_cells();
                            whole_sent.insert(key);
                        }
                        (false, true) => {
                            // It may have just left the view.
                            if !never_seen(&now)? {
                                evict.push(key);
                            }
                            continue;
                        }
                        (false, false) => continue,
                    }
                } else if !refused.remove(&key) && never_seen(&now)? {
                    continue;
                }
            }
        }
        if view.policy.excludes_any() {
            strip_excluded(view.policy, &mut ch);
            if ch.cells.is_empty() {
                continue;
            }
        }
        keep.push(ch);
    }
    *changes = keep;
    Ok(())
}

/// The record as `peer` holds it: `then` (the record where the peer is) merged with the
/// cells of `now` that the peer wrote (it holds those whatever it was sent).
///
/// Merged, not laid over cell by cell: a delete of the peer's resets the record, and its
/// older cells in `then` must go as they do in a merge. Laid over, a record the peer had
/// deleted, and which later writes of others revived without the field its view filters
/// on, kept that field as it was at `then`: judged outside the view, it was not restated,
/// and the peer kept its tombstone for good (simulation seed 4319553).
pub(super) fn as_the_peer_holds(
    then: crate::crdt::RecordState,
    now: &crate::crdt::RecordState,
    peer: Option<NodeId>,
) -> crate::crdt::RecordState {
    let mut held = then;
    if let Some(peer) = peer {
        for c in now.cells().iter().filter(|c| c.version.node == peer) {
            held.merge(c.clone());
        }
    }
    held
}

/// Remove the cells of excluded fields.
pub(super) fn strip_excluded(policy: &CompiledPolicy, ch: &mut Change) {
    ch.cells
        .retain(|c| c.key.field().is_none_or(|f| !policy.excludes(f)));
}

/// The collections a snapshot may drop records of: those of both policies (`None`: all).
pub(super) fn scope_of(old: Option<&SyncPolicy>, new: &SyncPolicy) -> Option<Vec<String>> {
    let old = old?.collections.as_ref()?;
    let new = new.collections.as_ref()?;
    let mut all: Vec<String> = old.iter().chain(new.iter()).cloned().collect();
    all.sort();
    all.dedup();
    Some(all)
}

/// The policy we subscribed with, as a hex note.
pub(super) fn encode_policy_note(p: &SyncPolicy) -> String {
    let mut b = Vec::new();
    p.encode(&mut b);
    hex(&b)
}

/// `bytes` in lowercase hex, for peer notes.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn decode_policy_note(hex: &str) -> Option<SyncPolicy> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    SyncPolicy::decode(&mut crate::codec::Reader::new(&bytes?)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Cell, CellKey, CellValue, RecordState};
    use crate::types::{Hlc, Version};
    use crate::OpenOptions;

    /// The record as the peer holds it is what it was sent with the peer's own writes
    /// *merged* in: the peer's delete resets the cells older than it, and a later write of
    /// another node survives it. Laid over cell by cell (as it was), the delete replaced only
    /// the record's own cell, the older `b = 1` stayed, and a record a filter on `b` would
    /// show looked hidden (simulation seed 4319553: it was then not restated, and the
    /// replica kept its tombstone for good).
    #[test]
    fn the_record_as_the_peer_holds_it_merges_the_peers_writes() {
        let (other, peer) = (NodeId::random(), NodeId::random());
        let cell = |key: CellKey, value: CellValue, wall: u64, node: NodeId| Cell {
            key,
            value,
            version: Version {
                hlc: Hlc::new(wall, 0),
                node,
            },
            prev: None,
            seen: Default::default(),
            seq: Seq(wall),
        };
        let b = || CellKey::Field("b".into());
        let c = || CellKey::Field("c".into());
        let sent = RecordState::from_cells(vec![
            cell(CellKey::Record, CellValue::Present, 1, other),
            cell(b(), CellValue::Value(1.into()), 2, other),
            cell(c(), CellValue::Value(5.into()), 4, other),
        ])
        .unwrap();
        let now = RecordState::from_cells(vec![
            cell(CellKey::Record, CellValue::Absent, 3, peer),
            cell(c(), CellValue::Value(5.into()), 4, other),
        ])
        .unwrap();
        let held = as_the_peer_holds(sent.clone(), &now, Some(peer));
        assert!(held.is_live(), "revived by the later write of `c`");
        let fields = held.fields();
        assert_eq!(fields.get("b"), None, "reset by the peer's delete");
        assert_eq!(fields.get("c"), Some(&crate::Value::Int(5)));
        assert_eq!(held.cells().len(), 2);
        // Without a peer (judged for no one in particular) it is what was sent.
        assert_eq!(as_the_peer_holds(sent.clone(), &now, None), sent);
    }

    /// A replica holding records outside its own filter (its write took them out; the
    /// peer's EVICT was lost) drops them when the filter reads no parameter, even if its
    /// text holds a `$` (`"US$"`: the check went by the text and skipped it); a filter on a
    /// parameter only the peer can evaluate keeps them.
    #[test]
    fn records_outside_the_own_filter_are_dropped_unless_it_reads_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("replica.db"), OpenOptions::default()).unwrap();
        let dollars = db.insert("orders", [("currency", "US$")]).unwrap();
        let euros = db.insert("orders", [("currency", "EUR")]).unwrap();
        let peer = NodeId::random();
        let acked = db.last_seq().unwrap();
        let session_with = |filter: &str| {
            let policy = SyncPolicy {
                collections: Some(vec!["orders".into()]),
                filter: Some(filter.into()),
                exclude_fields: Vec::new(),
            };
            let cfg = SessionConfig {
                policy,
                ..SessionConfig::default()
            };
            Session::new(&db, cfg, 0).unwrap()
        };

        let mut on_param = session_with("currency == $auth.currency");
        on_param.evict_outside_own_filter(peer, acked, &db).unwrap();
        assert!(db.get("orders", euros).unwrap().is_some());

        let mut dollar_in_text = session_with("currency == \"US$\"");
        dollar_in_text
            .evict_outside_own_filter(peer, acked, &db)
            .unwrap();
        assert!(db.get("orders", euros).unwrap().is_none());
        assert!(db.get("orders", dollars).unwrap().is_some());
    }
}
