//! Peer cursors on their way to the file, stored together.
//!
//! A session learns from every ACK how far the peer holds our feed, and from every CAUGHT_UP
//! how far it has read the peer's (when no unit carried the cursor with its data). Stored by
//! each session in transactions of its own (at most once a second per session and
//! direction, as they were), a relay with 1,000 clients committed about 2,000 times a second
//! for this bookkeeping: stored together, the relay's CPU in the `net_latency_1000`
//! benchmark fell ~10% (perf, 2026-12-04; ~12% with no such writes at all). Both cursors
//! are advisory for where sync resumes: a received cursor that is behind makes the peer
//! send some changes again, which apply as no-ops; an acknowledged cursor that is behind
//! makes GC keep metadata longer. So sessions note them here, and one transaction stores
//! every noted cursor once the oldest has waited
//! [`ACK_PERSIST_INTERVAL_MS`](crate::limits::ACK_PERSIST_INTERVAL_MS), when a session
//! ends, before GC, and when the handle is dropped. `peer_cursor` and `peers` on the
//! same handle see a noted cursor at once. A crash loses at most one interval of progress.
//!
//! A write of the cursor itself replaces a note: `set_peer_cursor`, and a unit or snapshot
//! that stores the received cursor with its data (storing the older note after it would
//! only move the cursor back, which is safe but makes the peer resend).
//!
//! **Bookkeeping that must wait for the disk.** A serving session writes a few notes about
//! its peer as it goes (who the node belongs to, the view it was served, that GC must wait
//! for it). When the file cannot take a write — the disk is full, the file was deleted
//! while open ([`Error::FileGone`](crate::Error::FileGone)), or its file system turned
//! read-only ([`Error::FileSystemReadOnly`](crate::Error::FileSystemReadOnly)) — those notes wait here instead
//! ([`Database::set_peer_notes_or_wait`](super::Database)), seen by `peer_note` on this
//! handle, and are stored with the cursors once a write succeeds again. So a peer that only
//! reads from a relay whose disk is full is still served (until 2026-12-07 every new client
//! was refused there, readers included, because the relay could not note it). The cost: a
//! waiting note is lost if the process ends before it is stored (the next session notes it
//! again; in the meantime a node is bound to the identity that first used it only in this
//! process), and a waiting GC hold is seen by GC through this handle only (which stores
//! what waits before it collects, so it cannot run while the disk refuses writes), not by
//! `blazedb gc` run on the file by another process. At most [`PEER_NOTES_WAITING_MAX`] notes
//! wait; past that, the write's error goes to the session as before.
//!
//! A store that fails leaves everything noted and tries again one interval later, not at
//! every note (on a full disk, every ACK of every session tried a write that failed).
//!
//! Lock order: this buffer's mutex before the handle's (`Database::store_noted_cursors`
//! holds it through the write, so nothing it took can be written after a later explicit
//! write or `forget_peer`); nothing takes it while holding the handle's lock.

use super::feed::PeerDirection;
use crate::hash::FastMap;
use crate::limits::PEER_NOTES_WAITING_MAX;
use crate::types::{NodeId, Seq};

/// Noted cursors, by peer and direction: the latest cursor and when it was noted (ms); and
/// peer notes waiting for the disk.
#[derive(Debug, Default)]
pub(crate) struct NotedCursors {
    cursors: FastMap<(NodeId, PeerDirection), (Seq, u64)>,
    /// Peer notes that could not be written (`None`: a note to clear), by peer and name.
    notes: FastMap<(NodeId, String), Option<String>>,
    /// When the oldest entry not yet stored was noted.
    oldest_ms: Option<u64>,
}

impl NotedCursors {
    /// Note the latest cursor of `peer` (the newest note wins, as a write would).
    pub fn note(&mut self, peer: NodeId, direction: PeerDirection, cursor: Seq, now_ms: u64) {
        self.cursors.insert((peer, direction), (cursor, now_ms));
        self.oldest_ms.get_or_insert(now_ms);
    }

    /// Keep a peer note until it can be stored; `false` (and nothing kept) when
    /// [`PEER_NOTES_WAITING_MAX`] wait already.
    pub fn note_waiting(
        &mut self,
        peer: NodeId,
        name: &str,
        value: Option<&str>,
        now_ms: u64,
    ) -> bool {
        let key = (peer, name.to_owned());
        if self.notes.len() >= PEER_NOTES_WAITING_MAX && !self.notes.contains_key(&key) {
            return false;
        }
        self.notes.insert(key, value.map(str::to_owned));
        self.oldest_ms.get_or_insert(now_ms);
        true
    }

    /// The waiting note `name` of `peer`: `Some(value)` when one waits (`Some(None)`: it is
    /// to be cleared), `None` when the file has the answer.
    pub fn waiting_note(&self, peer: NodeId, name: &str) -> Option<Option<String>> {
        self.notes.get(&(peer, name.to_owned())).cloned()
    }

    /// Drop the waiting note `name` of `peer` (a write of that note replaces it).
    pub fn forget_note(&mut self, peer: NodeId, name: &str) {
        self.notes.remove(&(peer, name.to_owned()));
        if self.is_empty() {
            self.oldest_ms = None;
        }
    }

    /// Drop every note waiting for `peer` (it is forgotten, notes and all).
    pub fn forget_notes_of(&mut self, peer: NodeId) {
        self.notes.retain(|(p, _), _| *p != peer);
        if self.is_empty() {
            self.oldest_ms = None;
        }
    }

    /// Every waiting note: (peer, name, value).
    pub fn notes(&self) -> impl Iterator<Item = (NodeId, &str, Option<&str>)> + '_ {
        self.notes
            .iter()
            .map(|((p, n), v)| (*p, n.as_str(), v.as_deref()))
    }

    /// A store failed: try again once another interval has passed, not at the next note.
    pub fn retry_later(&mut self, now_ms: u64) {
        if !self.is_empty() {
            self.oldest_ms = Some(now_ms);
        }
    }

    /// Whether the oldest entry has waited `interval_ms`.
    pub fn due(&self, now_ms: u64, interval_ms: u64) -> bool {
        self.oldest_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= interval_ms)
    }

    /// The noted cursor of `peer` in `direction`, if one waits.
    pub fn get(&self, peer: NodeId, direction: PeerDirection) -> Option<Seq> {
        self.cursors.get(&(peer, direction)).map(|(c, _)| *c)
    }

    /// Drop what waits for `peer` in `direction` (a write of that cursor replaces it).
    pub fn forget(&mut self, peer: NodeId, direction: PeerDirection) {
        self.cursors.remove(&(peer, direction));
        if self.is_empty() {
            self.oldest_ms = None;
        }
    }

    /// Everything that waits, in no particular order: (peer, direction, cursor, noted at).
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, PeerDirection, Seq, u64)> + '_ {
        self.cursors.iter().map(|((p, d), (c, t))| (*p, *d, *c, *t))
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty() && self.notes.is_empty()
    }

    /// Forget everything (it was stored).
    pub fn clear(&mut self) {
        self.cursors.clear();
        self.notes.clear();
        self.oldest_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_note_wins_and_the_oldest_sets_the_time() {
        use PeerDirection::{Acked, Received};
        let (a, b) = (NodeId([1; 16]), NodeId([2; 16]));
        let mut p = NotedCursors::default();
        assert!(!p.due(u64::MAX, 0), "nothing waits");
        p.note(a, Acked, Seq(10), 1_000);
        p.note(b, Acked, Seq(3), 1_500);
        p.note(a, Acked, Seq(7), 1_600);
        p.note(a, Received, Seq(70), 1_700);
        assert_eq!(p.get(a, Acked), Some(Seq(7)));
        assert_eq!(p.get(a, Received), Some(Seq(70)));
        assert!(!p.due(1_999, 1_000));
        assert!(p.due(2_000, 1_000));
        p.forget(a, Acked);
        assert_eq!(p.get(a, Acked), None);
        assert_eq!(p.get(a, Received), Some(Seq(70)));
        assert!(p.due(2_000, 1_000), "b still waits since 1,000");
        p.forget(a, Received);
        p.forget(b, Acked);
        assert!(p.is_empty() && !p.due(u64::MAX, 0));
        p.note(a, Received, Seq(1), 5_000);
        assert_eq!(
            p.entries().collect::<Vec<_>>(),
            vec![(a, Received, Seq(1), 5_000)]
        );
        p.clear();
        assert!(p.is_empty() && !p.due(u64::MAX, 0));
    }

    #[test]
    fn notes_wait_up_to_their_bound_and_a_failed_store_retries_an_interval_later() {
        let a = NodeId([1; 16]);
        let mut p = NotedCursors::default();
        assert!(p.note_waiting(a, "identity", Some("alice"), 1_000));
        assert!(p.note_waiting(a, "served_view", None, 1_200));
        assert_eq!(p.waiting_note(a, "identity"), Some(Some("alice".into())));
        assert_eq!(p.waiting_note(a, "served_view"), Some(None));
        assert_eq!(p.waiting_note(a, "policy"), None);
        assert!(p.due(2_000, 1_000));
        p.retry_later(2_000);
        assert!(!p.due(2_999, 1_000) && p.due(3_000, 1_000));
        p.forget_note(a, "identity");
        assert_eq!(p.waiting_note(a, "identity"), None);
        p.forget_notes_of(a);
        assert!(p.is_empty() && !p.due(u64::MAX, 0));
        for i in 0..PEER_NOTES_WAITING_MAX {
            assert!(p.note_waiting(a, &i.to_string(), None, 0));
        }
        assert!(!p.note_waiting(a, "one more", None, 0), "bounded");
        assert!(
            p.note_waiting(a, "0", Some("x"), 0),
            "a waiting note may change"
        );
    }
}
