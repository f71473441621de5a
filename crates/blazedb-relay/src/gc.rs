//! Periodic garbage collection of the relay's store.
//!
//! The relay hears from every client, so its peer cursors decide when a tombstone has been
//! seen by everyone. [`spawn_gc`] runs [`Database::gc`] every interval on tokio's blocking
//! pool (GC holds the store's lock for one transaction; sessions wait for it, but no worker
//! thread blocks), and adds each run's figures to [`GcCounters`]. Each run prints one JSON
//! line on stderr, like the relay's other events, when it removed something or found peers
//! newly past the retention.
//!
//! **Failures are logged when their cause changes, not at every run** ([`FailureLog`]). A
//! store deleted while the relay runs, or a full disk, fails every run for as long as it
//! lasts: one `gc_failed` line per interval said nothing new and buried the lines that did
//! (the store watch has said it once already: `store_gone`, `store_disk_full`). So the
//! first failure of a cause is logged; the same cause again is only counted (in
//! [`GcCounters::failures`], every one); another cause is a new `gc_failed` line with how
//! many runs failed for the one before; and the first run that works after failures says
//! `gc_recovered`, with their count. `/metrics` counts every failed run by its cause
//! (`gc_failures_total{cause}`, [`FailureKind`]), logged or not.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use blazedb::{Database, GcOptions, GcReport, NodeId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::task::JoinHandle;

use crate::metrics::GcFailureLabel;

/// How often the relay collects garbage by default (`--gc-interval`), in ms: 10 minutes.
pub const GC_INTERVAL_MS_DEFAULT: u64 = 10 * 60 * 1000;

/// Totals over the GC runs of one relay (for metrics and tests).
#[derive(Debug, Default)]
pub struct GcCounters {
    /// Runs that completed.
    pub runs: AtomicU64,
    /// Runs that failed (the error went to stderr; the next run tries again).
    pub failures: AtomicU64,
    /// The same runs by cause: the relay's `gc_failures_total{cause}`
    /// ([`crate::metrics::Metrics`] holds the same family).
    pub(crate) failures_by_cause: Family<GcFailureLabel, Counter>,
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
    /// A failed run, of `kind`.
    fn failed(&self, kind: FailureKind) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failures_by_cause
            .get_or_create(&GcFailureLabel { cause: kind })
            .inc();
    }

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
    let mut failures = FailureLog::default();
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
                if let Some(line) = failures.succeeded() {
                    crate::log::line(line);
                }
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
                counters.failed(FailureCause::of(&e).kind());
                if let Some(line) = failures.failed(&e) {
                    crate::log::line(line);
                }
            }
            // The blocking task panicked or was cancelled (shutdown): try again next time.
            Err(_) => counters.failed(FailureKind::Error),
        }
    }
}

/// Why a GC run failed, in a fixed set: the `cause` of the log's `gc_failed` and
/// `gc_recovered` lines and of the `gc_failures_total{cause}` metric.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum FailureKind {
    /// The store file was deleted while the relay runs.
    StoreGone,
    /// The store's disk is full.
    DiskFull,
    /// The store's file system turned read-only while the relay runs.
    StoreReadOnly,
    /// Anything else (the log line has its message).
    Error,
}

impl FailureKind {
    /// The `cause` of the log lines and the metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::StoreGone => "store_gone",
            FailureKind::DiskFull => "disk_full",
            FailureKind::StoreReadOnly => "store_read_only",
            FailureKind::Error => "error",
        }
    }

    /// Every kind, for the metric's series to exist at 0 before a run fails.
    pub const ALL: [FailureKind; 4] = [
        FailureKind::StoreGone,
        FailureKind::DiskFull,
        FailureKind::StoreReadOnly,
        FailureKind::Error,
    ];
}

/// Why a GC run failed, as far as the log tells causes apart: a run that fails for the same
/// cause as the one before is not logged again.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FailureCause {
    /// The store file was deleted while the relay runs (`Error::FileGone`).
    StoreGone,
    /// The store's disk is full.
    DiskFull,
    /// The store's file system turned read-only while the relay runs
    /// (`Error::FileSystemReadOnly`).
    StoreReadOnly,
    /// Anything else, told apart by its message.
    Other(String),
}

impl FailureCause {
    fn of(e: &blazedb::Error) -> FailureCause {
        if matches!(e, blazedb::Error::FileGone { .. }) {
            FailureCause::StoreGone
        } else if matches!(e, blazedb::Error::FileSystemReadOnly { .. }) {
            FailureCause::StoreReadOnly
        } else if e.is_disk_full() {
            FailureCause::DiskFull
        } else {
            FailureCause::Other(e.to_string())
        }
    }

    fn kind(&self) -> FailureKind {
        match self {
            FailureCause::StoreGone => FailureKind::StoreGone,
            FailureCause::DiskFull => FailureKind::DiskFull,
            FailureCause::StoreReadOnly => FailureKind::StoreReadOnly,
            FailureCause::Other(_) => FailureKind::Error,
        }
    }

    /// The `cause` of a `gc_failed` or `gc_recovered` line.
    fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// Which GC failures are logged: the first of each cause, a change of cause, and the first
/// run that works again (see the module docs). Sans-IO: it is told each run's outcome and
/// returns the line to print, if any. Its memory is one cause and a count.
#[derive(Debug, Default)]
struct FailureLog {
    /// The cause of the runs that failed since the last one that worked, and how many.
    failing: Option<(FailureCause, u64)>,
}

impl FailureLog {
    /// A run failed with `e`: the `gc_failed` line to print, or `None` when the run before
    /// failed for the same cause (it is counted).
    fn failed(&mut self, e: &blazedb::Error) -> Option<serde_json::Value> {
        let cause = FailureCause::of(e);
        let mut line = serde_json::json!({
            "event": "gc_failed",
            "cause": cause.name(),
            "error": e.to_string(),
        });
        match self.failing.take() {
            Some((before, n)) if before == cause => {
                self.failing = Some((before, n + 1));
                return None;
            }
            Some((before, n)) => {
                line["cause_before"] = before.name().into();
                line["failed_runs_before"] = n.into();
            }
            None => {}
        }
        line["note"] = "logged again only when the cause changes; gc_recovered when a run \
                           works again"
            .into();
        self.failing = Some((cause, 1));
        Some(line)
    }

    /// A run worked: the `gc_recovered` line to print after failures, else `None`.
    fn succeeded(&mut self) -> Option<serde_json::Value> {
        let (cause, n) = self.failing.take()?;
        Some(serde_json::json!({
            "event": "gc_recovered",
            "cause": cause.name(),
            "failed_runs": n,
        }))
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

    fn file_gone() -> blazedb::Error {
        blazedb::Error::FileGone {
            path: "/srv/relay/relay.db".into(),
        }
    }

    fn disk_full() -> blazedb::Error {
        blazedb::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull))
    }

    /// The first failure of a cause is logged, the same cause again only counted; a new
    /// cause is logged with the count of the one before, and the first run that works says
    /// how many failed.
    #[test]
    fn failures_are_logged_when_their_cause_changes() {
        let mut log = FailureLog::default();
        assert_eq!(log.succeeded(), None, "nothing failed");
        let first = log.failed(&disk_full()).expect("the first is logged");
        assert_eq!(
            (first["event"].as_str(), first["cause"].as_str()),
            (Some("gc_failed"), Some("disk_full"))
        );
        assert!(first.get("cause_before").is_none(), "{first}");
        for _ in 0..99 {
            assert_eq!(log.failed(&disk_full()), None);
        }
        let changed = log.failed(&file_gone()).expect("a new cause is logged");
        assert_eq!(changed["cause"], "store_gone");
        assert_eq!(changed["cause_before"], "disk_full");
        assert_eq!(changed["failed_runs_before"], 100);
        assert!(changed["error"].as_str().unwrap().contains("was deleted"));
        assert_eq!(log.failed(&file_gone()), None);
        let recovered = log.succeeded().expect("the recovery is logged");
        assert_eq!(
            recovered,
            serde_json::json!({"event": "gc_recovered", "cause": "store_gone", "failed_runs": 2})
        );
        assert_eq!(log.succeeded(), None, "once");
        assert!(
            log.failed(&disk_full()).is_some(),
            "a cause that comes back is news"
        );
        let other = |m: &str| blazedb::Error::InvalidArgument(m.into());
        assert!(log.failed(&other("a")).is_some());
        assert_eq!(log.failed(&other("a")), None);
        assert!(
            log.failed(&other("b")).is_some(),
            "another message is another cause"
        );
    }

    /// Every failed run is counted, however few are logged: a store deleted under the GC.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_failure_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let db = Arc::new(Database::open(&path, OpenOptions::default()).unwrap());
        db.insert("items", [("n", Value::Int(1))]).unwrap();
        std::fs::remove_file(&path).unwrap();
        let counters = Arc::new(GcCounters::default());
        let task = spawn_gc(
            db.clone(),
            Duration::from_millis(20),
            GcOptions::default(),
            counters.clone(),
        )
        .expect("enabled");
        for _ in 0..1000 {
            if counters.failures.load(Ordering::Relaxed) >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counters.failures.load(Ordering::Relaxed) >= 5);
        assert_eq!(counters.runs.load(Ordering::Relaxed), 0);
        drop(task);
    }

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
