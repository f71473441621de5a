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
//! Lock order: this buffer's mutex before the handle's (`Database::store_noted_cursors`
//! holds it through the write, so nothing it took can be written after a later explicit
//! write or `forget_peer`); nothing takes it while holding the handle's lock.

use super::feed::PeerDirection;
use crate::hash::FastMap;
use crate::types::{NodeId, Seq};

/// Noted cursors, by peer and direction: the latest cursor and when it was noted (ms).
#[derive(Debug, Default)]
pub(crate) struct NotedCursors {
    cursors: FastMap<(NodeId, PeerDirection), (Seq, u64)>,
    /// When the oldest entry not yet stored was noted.
    oldest_ms: Option<u64>,
}

impl NotedCursors {
    /// Note the latest cursor of `peer` (the newest note wins, as a write would).
    pub fn note(&mut self, peer: NodeId, direction: PeerDirection, cursor: Seq, now_ms: u64) {
        self.cursors.insert((peer, direction), (cursor, now_ms));
        self.oldest_ms.get_or_insert(now_ms);
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
        if self.cursors.is_empty() {
            self.oldest_ms = None;
        }
    }

    /// Everything that waits, in no particular order: (peer, direction, cursor, noted at).
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, PeerDirection, Seq, u64)> + '_ {
        self.cursors.iter().map(|((p, d), (c, t))| (*p, *d, *c, *t))
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Forget everything (it was stored).
    pub fn clear(&mut self) {
        self.cursors.clear();
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
}
