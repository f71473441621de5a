//! `sync_other_process`: a commit on A made by another process → B has committed it.
//!
//! A syncs with B as `blazedb sync A B` or `blazedb listen A` do: its session runs beside a
//! `HeadWatch`, because another process writing A (`blazedb put A ...`) reaches no commit
//! listener of the syncing process. The writer here is a second `Database` handle on A's file:
//! to the syncing handle it is exactly another process (its commits fire only its own
//! listeners). What the figure shows is how soon the syncing process learns of the commit (the
//! file system's notification, or else the 100 ms safety-net poll) plus the sync itself.
//!
//! The floor: the same update made through the syncing handle, whose commit listener wakes the
//! session at once — the in-process path, what the other-process path adds to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use blazedb::{Database, Patch};
use blazedb_net::head_watch::HeadWatch;
use serde_json::json;

use super::drive::{runtime, wait_for, Link};
use super::{
    details, latency_picks, latency_status, options, stamp_commits, summary, take_stamp,
    wait_stamp, Pair, COLLECTION, WARMUP_OPS,
};
use crate::report::{Figure, Outcome};
use crate::scenarios::{Ctx, Scenario};
use crate::stats::Summary;

/// Commits measured each way.
const COMMITS: usize = 200;
/// Quiet time before each measured commit, as between an application's writes: the head
/// watch's reads are spaced (`HEAD_CHECK_GAP_US`), and back-to-back commits would measure
/// that spacing instead.
const PAUSE: Duration = Duration::from_millis(5);

/// A commit by another process on A → B committed it.
#[derive(Debug)]
pub(super) struct OtherProcess;

impl Scenario for OtherProcess {
    fn name(&self) -> &'static str {
        "sync_other_process"
    }

    fn about(&self) -> &'static str {
        "commit on A by another process (handle) → B committed it, A's session on a HeadWatch (µs)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let n = ctx.config.sizes.sync_records;
        let commits = if ctx.config.quick {
            COMMITS / 10
        } else {
            COMMITS
        };
        let pair = Pair::build(ctx, "sync-otherproc", encrypted, n)?;
        let writer = Database::open(pair.a.path(), options(encrypted))
            .context("opening A's file a second time, as another process")?;
        let rt = runtime()?;
        let head_watch = {
            let _in_runtime = rt.enter();
            HeadWatch::spawn(pair.a.clone())
        };
        let link = Link::start_woken(&rt, &pair.a, &pair.b, head_watch.subscribe());
        let watch = pair.b.watch(COLLECTION, None, None)?;
        let b_committed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let b_listener = {
            let b_committed = b_committed.clone();
            pair.b.on_commit(Arc::new(move || {
                *b_committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }))
        };
        let picks = latency_picks(ctx.config.seed ^ 0x07E5, n, commits);
        // One change in flight at a time: commit on `by`, stamp its end, wait for B.
        let measure = |by: &Database, k: usize| -> Result<Duration> {
            std::thread::sleep(PAUSE);
            let (stamp, listener) = stamp_commits(by);
            let id = pair.ids[picks[k]];
            let result = (|| {
                by.update(
                    COLLECTION,
                    id,
                    Patch::new().set("status", latency_status(k)),
                )?;
                let t = take_stamp(&stamp)?;
                wait_for(&watch, id)?;
                // B publishes to its watches just before it runs its commit listeners.
                let b_done = wait_stamp(&b_committed)?;
                Ok(b_done.saturating_duration_since(t))
            })();
            by.remove_commit_listener(listener);
            result
        };
        let mut other = Vec::with_capacity(commits);
        let mut same = Vec::with_capacity(commits);
        // Alternating, so that both paths see the same machine; warm-up commits first.
        for k in 0..commits + WARMUP_OPS {
            let o = measure(&writer, k)?;
            let s = measure(&pair.a, k)?;
            if k >= WARMUP_OPS {
                other.push(o);
                same.push(s);
            }
        }
        pair.b.remove_commit_listener(b_listener);
        let (a_report, _b_report) = link.stop(&rt)?;
        drop(head_watch);

        let (os, ss): (Summary, Summary) = (summary(&other)?, summary(&same)?);
        let extra = details(json!({
            "records": n,
            "commits": commits,
            "warmup_commits": WARMUP_OPS,
            "other_process_max_us": os.max_us,
            "a_frames_sent": a_report.stats.frames_sent,
            "notified_by": "the file system (notify: inotify here), with a 100 ms poll behind it",
        }));
        let db_what = "Database::update (one field) through a second handle on A's file (another \
                       process, as far as the syncing handle knows); from the end of that commit \
                       until the end of B's commit of it; A's session (run_session over \
                       tokio::io::duplex) woken by a blazedb_net HeadWatch";
        let floor_what = "the same update through the syncing handle itself (its commit \
                          listener wakes the session), measured alternately with the other";
        let row = |pct: &str, v: f64, fv: f64| Outcome {
            name: format!("sync_other_process_{pct}"),
            scenario: "sync_other_process",
            encrypted,
            blazedb: Figure::latency(v, "us", os.clone(), db_what),
            floor: Figure::latency(fv, "us", ss.clone(), floor_what),
            target: None,
            details: extra.clone(),
        };
        Ok(vec![
            row("p50", os.p50_us, ss.p50_us),
            row("p99", os.p99_us, ss.p99_us),
        ])
    }
}
