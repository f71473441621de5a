//! Periodic garbage collection of the relay's store.
//!
//! The relay hears from every client, so its peer cursors decide when a tombstone has been
//! seen by everyone. [`spawn_gc`] runs [`Database::gc`] every interval on tokio's blocking
//! pool (GC holds the store's lock for one transaction; sessions wait for it, but no worker
//! thread blocks), and adds each run's figures to [`GcCounters`]. Each run prints one JSON
//! line on stderr, like the relay's other events, when it removed something, found peers
//! newly past the retention, or failed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use blazedb::{Database, GcOptions, GcReport, NodeId};
use tokio::task::JoinHandle;

/// How often the relay collects garbage by default (`--gc-interval`), in ms: 10 minutes.
pub const GC_INTERVAL_MS_DEFAULT: u64 = 10 * 60 * 1000;

/// Totals over the GC runs of one relay (for metrics and tests).
#[derive(Debug, Default)]
pub struct GcCounters {
    /// Runs that completed.
    pub runs: AtomicU64,
    /// Runs that failed (the error went to stderr; the next run tries again).
    pub failures: AtomicU64,
    /// Tombstones removed.
    pub tombstones_purged: AtomicU64,
    /// Removal cells dropped from live records.
    pub cells_pruned: AtomicU64,
    /// Feed links removed.
    pub links_pruned: AtomicU64,
    /// Feed rows removed.
    pub feed_rows_pruned: AtomicU64,
    /// History rows removed.
    pub history_rows_removed: AtomicU64,
    /// The horizon of the last completed run.
    pub horizon: AtomicU64,
    /// Peers the last completed run reported as expired.
    pub expired_peers: AtomicU64,
}

impl GcCounters {
    fn add(&self, r: &GcReport) {
        let add = |c: &AtomicU64, v: u64| c.fetch_add(v, Ordering::Relaxed);
        add(&self.runs, 1);
        add(&self.tombstones_purged, r.tombstones_purged);
        add(&self.cells_pruned, r.cells_pruned);
        add(&self.links_pruned, r.links_pruned);
        add(&self.feed_rows_pruned, r.feed_rows_pruned);
        add(&self.history_rows_removed, r.history_rows_removed);
        self.horizon.store(r.horizon.0, Ordering::Relaxed);
        self.expired_peers
            .store(r.expired_peers.len() as u64, Ordering::Relaxed);
    }
}

/// A running GC task; dropping it stops it.
#[derive(Debug)]
pub struct GcTask {
    task: JoinHandle<()>,
}

impl Drop for GcTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run GC on `db` every `interval` (the first run one interval after the start) until the
/// handle or the database is dropped; `None` when `interval` is zero (GC disabled). The task
/// holds the database only weakly. Must be called inside a tokio runtime.
pub fn spawn_gc(
    db: Arc<Database>,
    interval: Duration,
    options: GcOptions,
    counters: Arc<GcCounters>,
) -> Option<GcTask> {
    if interval.is_zero() {
        return None;
    }
    let weak = Arc::downgrade(&db);
    drop(db);
    Some(GcTask {
        task: tokio::spawn(run(weak, interval, options, counters)),
    })
}

async fn run(
    db: Weak<Database>,
    interval: Duration,
    options: GcOptions,
    counters: Arc<GcCounters>,
) {
    // Peers the previous run reported as expired: a run logs only those that expired since
    // (with 10,000 clients gone for a month, listing them all at every run wrote a line of
    // 350 KB every interval, forever).
    let mut expired_before: HashSet<NodeId> = HashSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; a relay that just started has nothing to collect.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(db) = db.upgrade() else {
            return;
        };
        let opts = options.clone();
        let result = tokio::task::spawn_blocking(move || db.gc(&opts)).await;
        match result {
            Ok(Ok(report)) => {
                counters.add(&report);
                let removed = report.tombstones_purged
                    + report.cells_pruned
                    + report.links_pruned
                    + report.feed_rows_pruned
                    + report.history_rows_removed;
                let newly_expired: Vec<NodeId> = report
                    .expired_peers
                    .iter()
                    .filter(|n| !expired_before.contains(n))
                    .copied()
                    .collect();
                if removed > 0 || !newly_expired.is_empty() {
                    crate::log::line(event(&report, &newly_expired));
                }
                expired_before = report.expired_peers.iter().copied().collect();
            }
            Ok(Err(e)) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                crate::log::line(serde_json::json!({"event": "gc_failed", "error": e.to_string()}));
            }
            // The blocking task panicked or was cancelled (shutdown): try again next time.
            Err(_) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Node ids one `gc` event lists at most; the rest are counted.
const EVENT_NODES_MAX: usize = 20;

fn event(r: &GcReport, newly_expired: &[NodeId]) -> serde_json::Value {
    serde_json::json!({
        "event": "gc",
        "horizon": r.horizon.0,
        "tombstones_purged": r.tombstones_purged,
        "cells_pruned": r.cells_pruned,
        "links_pruned": r.links_pruned,
        "feed_rows_pruned": r.feed_rows_pruned,
        "history_rows_removed": r.history_rows_removed,
        "records_examined": r.records_examined,
        // How many peers are past the retention, and which expired since the last run
        // (`blazedb peers` lists them all).
        "expired_peers": r.expired_peers.len(),
        "newly_expired": newly_expired
            .iter()
            .take(EVENT_NODES_MAX)
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        "newly_expired_not_listed": newly_expired.len().saturating_sub(EVENT_NODES_MAX),
        // The client whose acknowledged position is the horizon (or one that only pushes,
        // for which removals wait the retention): the one to look at when tombstones pile
        // up (`blazedb peers` shows which kind).
        "held_by": r.held_by.map(|n| n.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blazedb::{OpenOptions, PeerDirection, Value};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collects_every_interval_unless_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path().join("r.db"), OpenOptions::default()).unwrap());
        let id = db.insert("items", [("n", Value::Int(1))]).unwrap();
        db.delete("items", id).unwrap();
        let peer = blazedb::NodeId([9; 16]);
        db.set_peer_cursor(peer, PeerDirection::Acked, db.last_seq().unwrap())
            .unwrap();
        let counters = Arc::new(GcCounters::default());
        assert!(spawn_gc(
            db.clone(),
            Duration::ZERO,
            GcOptions::default(),
            counters.clone()
        )
        .is_none());
        let task = spawn_gc(
            db.clone(),
            Duration::from_millis(50),
            GcOptions::default(),
            counters.clone(),
        )
        .expect("enabled");
        for _ in 0..1000 {
            if counters.runs.load(Ordering::Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counters.runs.load(Ordering::Relaxed) >= 2);
        assert_eq!(counters.tombstones_purged.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failures.load(Ordering::Relaxed), 0);
        drop(task);
    }
}
