//! `sync_latency_one_thread`: commit on A → B has committed it, with the writer and both
//! sessions on one thread.
//!
//! `sync_latency` runs the sessions on a two-worker runtime and commits from the benchmark's
//! own thread, as an application with a thread pool would: each hop from one thread to an idle
//! one costs an OS wake-up, 20–50 µs on the development VM (half its
//! `channel_round_trip_p50_us`), and the path has at least one (A's session waking on a
//! worker). Here the same `run_session` tasks over the same in-process
//! pipe run on a current-thread runtime, driven by the thread that commits on A, as an
//! application with a single-threaded event loop would run them: A's commit schedules A's
//! session without waking anything, and the change reaches B's commit without leaving the
//! thread. The difference between the two scenarios is the price of the thread hops.
//!
//! The floor: the same UPDATE on A's raw file and then on B's, on one thread, timed from A's
//! return to B's return (the least a same-thread replication could do: no encoding, no
//! feed, no merge).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use blazedb::{Patch, WatchItem};
use serde_json::json;
use tokio::sync::Notify;

use super::drive::Link;
use super::{
    alternate_timed, details, floor_pair, latency_picks, latency_rows, latency_status,
    stamp_commits, summary, take_stamp, Pair, COLLECTION, WARMUP_OPS,
};
use crate::report::Outcome;
use crate::scenarios::{Ctx, Scenario};

/// Times the runtime's queue is run after a measured change reached B, so that B's answers
/// (ACK, CAUGHT_UP) are handled before the next commit instead of inside its measurement.
const SETTLE_YIELDS: usize = 16;
/// How long one change may take to reach B before the run fails.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Commit on A → B committed it, everything on one thread.
#[derive(Debug)]
pub(super) struct LatencyOneThread;

impl Scenario for LatencyOneThread {
    fn name(&self) -> &'static str {
        "sync_latency_one_thread"
    }

    fn about(&self) -> &'static str {
        "commit on A → B committed it, writer and run_session tasks on one thread (µs)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        let n = sizes.sync_records;
        let commits = sizes.sync_latency_commits;
        let pair = Pair::build(ctx, "sync-lat1", encrypted, n)?;
        let (floor_a, floor_b, floor_ids) = floor_pair(ctx, "sync-lat1", encrypted, &pair.bugs)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the current-thread runtime")?;

        // A's commit time as in `sync_latency`; B's commits notify the measuring future, on
        // this same thread.
        let (committed, a_listener) = stamp_commits(&pair.a);
        let b_committed = Arc::new(Notify::new());
        let b_listener = {
            let b_committed = b_committed.clone();
            pair.b.on_commit(Arc::new(move || b_committed.notify_one()))
        };
        let link = Link::start(&rt, &pair.a, &pair.b);
        let watch = pair.b.watch(COLLECTION, None, None)?;
        let picks = latency_picks(ctx.config.seed ^ 0x1A7F, n, commits);
        let status = latency_status;

        let mut floor_op = |k: usize| -> Result<Duration> {
            let id = floor_ids[picks[k]];
            floor_a.update_status(&id, status(k))?;
            let t = Instant::now();
            floor_b.update_status(&id, status(k))?;
            Ok(t.elapsed())
        };
        let db_op = |k: usize| -> Result<Duration> {
            let id = pair.ids[picks[k]];
            pair.a
                .update(COLLECTION, id, Patch::new().set("status", status(k)))?;
            let t = take_stamp(&committed)?;
            // Drive the runtime until B's commit of this change: A's session, the pipe and
            // B's session all run here, in this call.
            let seen = rt.block_on(async {
                tokio::time::timeout(EVENT_WAIT, async {
                    loop {
                        while let Some(item) = watch.try_recv() {
                            match item {
                                WatchItem::Event(e) if e.record.id == id => return Ok(t.elapsed()),
                                WatchItem::Event(_) => {}
                                WatchItem::Lagged(k) => {
                                    anyhow::bail!("the watch on B lagged by {k} events")
                                }
                            }
                        }
                        b_committed.notified().await;
                    }
                })
                .await
                .map_err(|_| anyhow::anyhow!("the change did not reach B within {EVENT_WAIT:?}"))?
            })?;
            rt.block_on(async {
                for _ in 0..SETTLE_YIELDS {
                    tokio::task::yield_now().await;
                }
            });
            Ok(seen)
        };
        let (f, b) = alternate_timed(commits, sizes.rounds, &mut floor_op, db_op)?;
        let (a_report, b_report) = link.stop(&rt)?;
        pair.a.remove_commit_listener(a_listener);
        pair.b.remove_commit_listener(b_listener);
        ensure!(
            b_report.stats.cells_applied as usize >= commits,
            "B applied {} cells for {commits} commits",
            b_report.stats.cells_applied
        );

        let (fs, bs) = (summary(&f)?, summary(&b)?);
        let extra = details(json!({
            "records": n,
            "commits": commits,
            "warmup_commits": WARMUP_OPS,
            "runtime": "tokio current_thread, driven by the thread that commits on A",
            "a_bytes_sent": a_report.stats.bytes_sent,
            "b_bytes_sent": b_report.stats.bytes_sent,
            "a_frames_sent": a_report.stats.frames_sent,
            "b_frames_sent": b_report.stats.frames_sent,
            "b_cells_applied": b_report.stats.cells_applied,
        }));
        let db_what = "Database::update (one field, committed) on A; from the end of A's commit \
                       until B's commit listener ran for it and its event was in B's watch; \
                       blazedb_net::run_session on both ends of a tokio::io::duplex, on a \
                       current-thread runtime driven by the committing thread";
        let floor_what = "raw UPDATE (autocommit) on A's file, then the same UPDATE on B's file \
                          on the same thread; from A's return to B's return";
        Ok(latency_rows(
            "sync_latency_one_thread",
            encrypted,
            (&bs, db_what),
            (&fs, floor_what),
            &extra,
        ))
    }
}
