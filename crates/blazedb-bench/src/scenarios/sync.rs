//! Sync between two replicas, beside hand-written replication with raw SQLite, and wire sizes
//! beside a JSON encoding of the same changes.
//!
//! - `sync_wire`: CHANGES bytes of a one-field update (in a warmed-up session, and as the
//!   first change of a new one) and of a batch of new records, beside the same cells as JSON
//!   ([`JSON_FORM`]).
//! - `sync_incremental`: every byte both ways of a fresh `run_session` resync of two synced
//!   copies after one field changed, beside that one cell as JSON.
//! - `sync_latency`: commit on A → readable on B (B's commit of the change is done; when B's
//!   `watch` hands the event to a waiting thread is reported beside it), beside a raw UPDATE
//!   on A whose bytes go over a std channel to a thread that runs the UPDATE on its own file.
//! - `sync_latency_one_thread`: the same with the writer and both sessions on one thread (a
//!   current-thread runtime), beside the two raw UPDATEs on one thread (`sync/one_thread.rs`).
//! - `sync_other_process`: a commit on A by another process (a second handle) → B committed
//!   it, A's session woken by a `HeadWatch`, beside the same commit through the syncing handle.
//! - `sync_throughput`: field changes A commits (100-record transactions) per second until B
//!   holds them all, beside the same transactions on raw SQLite shipped over a std channel and
//!   applied on a second file.
//! - `sync_initial`: syncing N records into an empty copy, beside bulk-inserting the same
//!   records locally.
//!
//! Byte figures come from the sans-IO core (`Session` pumped in memory, frames split and parsed
//! here) or from a tap on the transport of the real tokio driver; time figures use the tokio
//! driver (`blazedb_net::run_session`) on a runtime of [`RUNTIME_WORKERS`] threads, as an
//! application would run it. Every scenario builds its own files (plain or encrypted, as the
//! mode says: in encrypted mode every file of a scenario, source and target, is encrypted).

mod drive;
mod one_thread;
mod other_process;
mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use blazedb::sync::message::kind;
use blazedb::sync::SessionConfig;
use blazedb::{Database, Patch, PeerDirection, RecordId, Seq, Value, WatchItem};
use blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT;
use blazedb_net::limits::DUPLEX_BUFFER_BYTES_DEFAULT;
use blazedb_net::{run_session, spawn_checkpointer, DriverOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use self::drive::{pump, resync, runtime, sessions, wait_for, Link, RUNTIME_WORKERS};
use self::wire::{cells_json, changes_bytes, one_cell_json_bytes, Parts, JSON_FORM};
use super::store::{
    alternate, details, insert_chunked, new_floor_id, options, remove_db_files, summary,
    COLLECTION, LOAD_CHUNK_RECORDS, WARMUP_OPS,
};
use super::{Ctx, Scenario};
use crate::floor::Floor;
use crate::report::{Figure, Outcome, Target};
use crate::stats::{rate_per_s, timed, Summary};
use crate::workload::{Bug, Generator};

/// Issue target: a one-field update of an existing record, framed, in a warmed-up session.
const WIRE_UPDATE_BYTES_MAX: usize = 48;
/// Issue target: a batch of new records framed, as a fraction of the same changes as JSON.
const WIRE_BATCH_JSON_FRACTION_MAX: f64 = 0.40;
/// Issue target: a whole resync after one field changed, both directions, handshake included.
const INCREMENTAL_BYTES_MAX: usize = 300;
/// Issue target: commit on A → readable on B, median.
const LATENCY_P50_US_MAX: f64 = 100.0;
/// Issue target: commit on A → readable on B, 99th percentile.
const LATENCY_P99_US_MAX: f64 = 1_000.0;
/// Issue target: field changes from A applied on B per second, sustained.
const THROUGHPUT_CHANGES_PER_S_MIN: f64 = 100_000.0;
/// Issue target: initial sync into an empty copy at most this factor of a local bulk insert.
const INITIAL_SYNC_FACTOR_MAX: f64 = 2.0;

/// How long B may take to catch up after A stopped writing, before the run fails.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(120);
/// How often the throughput scenario checks whether B has caught up.
const DRAIN_POLL: Duration = Duration::from_micros(200);
/// What the latency floor ships per commit: the target size of a one-field CHANGES frame.
const FLOOR_MESSAGE_BYTES: usize = WIRE_UPDATE_BYTES_MAX;
/// How long a commit listener on another thread may take to run after the commit's watch
/// events were published.
const STAMP_WAIT: Duration = Duration::from_secs(10);
/// Channel round trips measured for the bare-channel part of the latency floor.
const CHANNEL_ROUND_TRIPS: usize = 2_000;

/// The sync scenarios, in run order.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(Wire),
        Box::new(Incremental),
        Box::new(Latency),
        Box::new(one_thread::LatencyOneThread),
        Box::new(other_process::OtherProcess),
        Box::new(Throughput),
        Box::new(Initial),
    ]
}

// ---- Scenarios ----

/// Bytes on the wire: one-field updates and a batch of new records.
#[derive(Debug)]
struct Wire;

impl Scenario for Wire {
    fn name(&self) -> &'static str {
        "sync_wire"
    }

    fn about(&self) -> &'static str {
        "CHANGES bytes: one-field update (warm, first use), 1,000-record batch vs JSON"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        let n = sizes.sync_batch_records;
        let a = fresh(ctx, "sync-wire-a", encrypted)?;
        let b = fresh(ctx, "sync-wire-b", encrypted)?;
        let c = fresh(ctx, "sync-wire-c", encrypted)?;
        let bugs = Generator::new(ctx.config.seed ^ 0x5717E, n).bugs(n);
        ensure!(
            n <= LOAD_CHUNK_RECORDS,
            "the wire batch must fit one transaction"
        );
        let ids = insert_chunked(&a, &bugs, LOAD_CHUNK_RECORDS)?;

        // The batch, in a fresh session (its dictionary starts empty): as sent (LZ4 on, the
        // default), and without LZ4 to see where the bytes go.
        // The feed path: an empty new peer would get a snapshot instead (sync_initial and
        // bootstrap_ws_* measure that), and no CHANGES at all.
        let feed_path = SessionConfig {
            snapshot_new_peers: false,
            ..SessionConfig::default()
        };
        let (mut sab, mut sba) = sessions(&a, &b, feed_path.clone())?;
        let batch_lz4 = changes_bytes(&pump(&a, &mut sab, &b, &mut sba)?.a_to_b)?;
        ensure!(
            batch_lz4 > 0,
            "the batch went out as no CHANGES frames at all"
        );
        let no_lz4 = SessionConfig {
            lz4: false,
            ..feed_path
        };
        let (mut sac, mut sca) = sessions(&a, &c, no_lz4)?;
        let raw = Parts::of(&pump(&a, &mut sac, &c, &mut sca)?.a_to_b)?;
        drop((sac, sca));
        let feed = a.changes_since(Seq(0), usize::MAX, None)?;
        ensure!(!feed.more, "the batch did not fit one feed page");
        let (json_cells, record_cells) = cells_json(&feed.changes);
        let field_cells = json_cells.len();
        let json_bytes = serde_json::to_vec(&serde_json::Value::Array(json_cells))?.len();
        let batch_cells: usize = feed.changes.iter().map(|c| c.cells.len()).sum();
        let fraction = batch_lz4 as f64 / json_bytes as f64;

        // One-field updates in the warmed-up session (it has sent the collection, the field
        // names and the node id, and recent timestamps).
        let mut status: Vec<&'static str> = bugs.iter().map(|b| b.status).collect();
        let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ 0x0DA7E);
        let mut update = |i: usize| -> Result<Seq> {
            status[i] = if status[i] == "open" {
                "closed"
            } else {
                "open"
            };
            let before = a.last_seq()?;
            a.update(COLLECTION, ids[i], Patch::new().set("status", status[i]))?;
            Ok(before)
        };
        update(0)?;
        pump(&a, &mut sab, &b, &mut sba)?;
        let mut warm = Vec::with_capacity(sizes.sync_wire_updates);
        let mut warm_parts = Parts::default();
        let mut update_json = 0;
        for _ in 0..sizes.sync_wire_updates {
            let before = update(rng.gen_range(1..n))?;
            let t = pump(&a, &mut sab, &b, &mut sba)?;
            warm_parts = Parts::of(&t.a_to_b)?;
            warm.push(warm_parts.total());
            update_json = one_cell_json_bytes(&a, before)?;
        }
        drop((sab, sba));
        // First use: the same kind of update as the first change of a new session.
        let before = update(rng.gen_range(1..n))?;
        let first_json = one_cell_json_bytes(&a, before)?;
        let (mut sab, mut sba) = sessions(&a, &b, SessionConfig::default())?;
        let first = Parts::of(&pump(&a, &mut sab, &b, &mut sba)?.a_to_b)?;

        warm.sort_unstable();
        let (warm_max, warm_p50) = (
            *warm.last().context("no warm updates (a size is 0)")?,
            warm[(warm.len() - 1) / 2],
        );
        let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
        for w in &warm {
            *histogram.entry(w.to_string()).or_default() += 1;
        }
        let json_what = "the same cell as one JSON object (see details.json_form)";
        Ok(vec![
            Outcome {
                name: "sync_wire_update".into(),
                scenario: self.name(),
                encrypted,
                blazedb: Figure::cost(
                    warm_max as f64,
                    "bytes",
                    format!(
                        "largest CHANGES frame of {} one-field updates (status of a random \
                         existing record), each its own commit, in a warmed-up session",
                        warm.len()
                    ),
                ),
                floor: Figure::cost(update_json as f64, "bytes", json_what),
                target: Some(Target {
                    description: format!("≤ {WIRE_UPDATE_BYTES_MAX} B framed"),
                    met: warm_max <= WIRE_UPDATE_BYTES_MAX,
                }),
                details: details(json!({
                    "updates": warm.len(),
                    "p50_bytes": warm_p50,
                    "min_bytes": warm[0],
                    "max_bytes": warm_max,
                    "sizes_histogram": histogram,
                    "breakdown_of_last": warm_parts.to_json(),
                    "prev_bytes_by_age_of_replaced_version": prev_bytes_by_age(),
                    "note": "prev is written as a zigzag LEB128 delta of hlc = wall_ms << 16 | \
                             logical (docs/PROTOCOL.md §6.4), so the frame grows with the age of \
                             the version the update replaces: here they were seconds old (5 B \
                             with the node reference); a day-old one takes 8 B, 3 more",
                    "json_form": JSON_FORM,
                })),
            },
            Outcome {
                name: "sync_wire_update_first_use".into(),
                scenario: self.name(),
                encrypted,
                blazedb: Figure::cost(
                    first.total() as f64,
                    "bytes",
                    "CHANGES frame of a one-field update as the first change of a new session \
                     (collection, field name and node id inline, full timestamp)",
                ),
                floor: Figure::cost(first_json as f64, "bytes", json_what),
                target: None,
                details: details(json!({
                    "breakdown": first.to_json(),
                    "json_form": JSON_FORM,
                })),
            },
            Outcome {
                name: "sync_wire_batch".into(),
                scenario: self.name(),
                encrypted,
                blazedb: Figure::cost(
                    batch_lz4 as f64,
                    "bytes",
                    format!(
                        "CHANGES frames of {n} new 5-field records inserted in one transaction, \
                         first change of a new session, LZ4 on (the default)"
                    ),
                ),
                floor: Figure::cost(
                    json_bytes as f64,
                    "bytes",
                    format!("the same {field_cells} field cells as JSON (see details.json_form)"),
                ),
                target: Some(Target {
                    description: format!(
                        "≤ {:.0}% of JSON (measured {:.1}%)",
                        WIRE_BATCH_JSON_FRACTION_MAX * 100.0,
                        fraction * 100.0
                    ),
                    met: fraction <= WIRE_BATCH_JSON_FRACTION_MAX,
                }),
                details: details(json!({
                    "records": n,
                    "cells": batch_cells,
                    "field_cells_in_json": field_cells,
                    "record_cells_not_in_json": record_cells,
                    "bytes_without_lz4": raw.total(),
                    "bytes_per_record": batch_lz4 as f64 / n as f64,
                    "bytes_per_record_without_lz4": raw.total() as f64 / n as f64,
                    "json_bytes_per_record": json_bytes as f64 / n as f64,
                    "breakdown_without_lz4": raw.to_json(),
                    "json_form": JSON_FORM,
                })),
            },
        ])
    }
}

/// Bytes of a `prev` (docs/PROTOCOL.md §6.4: zigzag LEB128 of the hlc delta, then a 1-byte
/// node reference) when the replaced version is this old, without logical-counter bits.
fn prev_bytes_by_age() -> serde_json::Value {
    let ages_ms: [(&str, u64); 6] = [
        ("1s", 1_000),
        ("1min", 60_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("30d", 30 * 86_400_000),
        ("1y", 365 * 86_400_000),
    ];
    let varint_len = |v: u64| (64 - v.leading_zeros()).max(1).div_ceil(7) as usize;
    json!(ages_ms
        .iter()
        .map(|(name, ms)| ((*name).to_owned(), json!(varint_len((ms << 16) << 1) + 1)))
        .collect::<serde_json::Map<_, _>>())
}

/// A fresh session's whole resync after one field changed in one of two synced copies.
#[derive(Debug)]
struct Incremental;

impl Scenario for Incremental {
    fn name(&self) -> &'static str {
        "sync_incremental"
    }

    fn about(&self) -> &'static str {
        "bytes both ways to resync two synced copies after one field changed"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let n = ctx.config.sizes.sync_records;
        let pair = Pair::build(ctx, "sync-incr", encrypted, n)?;
        let rt = runtime()?;
        // Nothing changed: the cost of a session that only finds out it is in sync.
        let idle = rt.block_on(resync(&pair.a, &pair.b))?;
        let i = n / 2;
        let status = if pair.bugs[i].status == "open" {
            "closed"
        } else {
            "open"
        };
        let before = pair.a.last_seq()?;
        pair.a
            .update(COLLECTION, pair.ids[i], Patch::new().set("status", status))?;
        let cell_json = one_cell_json_bytes(&pair.a, before)?;
        let one = rt.block_on(resync(&pair.a, &pair.b))?;
        let got = pair
            .b
            .get(COLLECTION, pair.ids[i])?
            .context("record missing on B")?;
        ensure!(
            got.fields.get("status") == Some(&Value::from(status)),
            "B did not receive the change"
        );
        let total = one.total();
        Ok(vec![Outcome {
            name: "sync_incremental".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::cost(
                total as f64,
                "bytes",
                format!(
                    "every byte both ways of a new run_session pair (stop when caught up, as \
                     `blazedb sync --once`) between two synced copies of {n} records after one \
                     field changed on A: handshake, change, acks and goodbyes"
                ),
            ),
            floor: Figure::cost(
                cell_json as f64,
                "bytes",
                "the changed cell alone as one JSON object (see details.json_form)",
            ),
            target: Some(Target {
                description: format!("≤ {INCREMENTAL_BYTES_MAX} B both ways"),
                met: total <= INCREMENTAL_BYTES_MAX,
            }),
            details: details(json!({
                "records": n,
                "a_to_b_bytes": one.a_to_b.len(),
                "b_to_a_bytes": one.b_to_a.len(),
                "frames_a_to_b": one.by_kind(true)?,
                "frames_b_to_a": one.by_kind(false)?,
                "bytes_without_goodbyes": total - one.kind_bytes(kind::ERROR)?,
                "nothing_changed_bytes": idle.total(),
                "full_copy_changes_bytes": pair.full_copy_bytes,
                "json_form": JSON_FORM,
            })),
        }])
    }
}

/// Commit on A → readable on B.
#[derive(Debug)]
struct Latency;

impl Scenario for Latency {
    fn name(&self) -> &'static str {
        "sync_latency"
    }

    fn about(&self) -> &'static str {
        "commit on A → readable on B (B committed it), run_session over an in-process pipe (µs)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        let n = sizes.sync_records;
        let pair = Pair::build(ctx, "sync-lat", encrypted, n)?;
        let (floor_a, floor_b, floor_ids) = floor_pair(ctx, "sync-lat", encrypted, &pair.bugs)?;
        let channel_rtt = channel_round_trips(CHANNEL_ROUND_TRIPS)?;
        let floor_link = FloorLink::start(floor_b);
        // The clock starts when A's commit is done (see `stamp_commits`).
        let (committed, listener) = stamp_commits(&pair.a);
        // B's commits in this phase are the applies of A's changes (and, now and then, the
        // session persisting its cursor: a later stamp, so never a shorter figure). A change
        // is readable on B from the end of B's commit, for any reader on any thread; the
        // watch's delivery to this thread comes after it and is reported beside it.
        let b_committed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let b_listener = {
            let b_committed = b_committed.clone();
            pair.b.on_commit(Arc::new(move || {
                *b_committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }))
        };
        let mut watch_saw = Vec::with_capacity(sizes.sync_latency_commits);
        let rt = runtime()?;
        let link = Link::start(&rt, &pair.a, &pair.b);
        let watch = pair.b.watch(COLLECTION, None, None)?;
        let picks = latency_picks(ctx.config.seed ^ 0x1A7E, n, sizes.sync_latency_commits);
        let status = latency_status;
        let message = vec![0xA5u8; FLOOR_MESSAGE_BYTES];
        let mut floor_op = |k: usize| -> Result<Duration> {
            let id = floor_ids[picks[k]];
            floor_a.update_status(&id, status(k))?;
            let t = Instant::now();
            let b_done = floor_link.round_trip(message.clone(), id, status(k))?;
            Ok(b_done.saturating_duration_since(t))
        };
        let db_op = |k: usize| -> Result<Duration> {
            let id = pair.ids[picks[k]];
            pair.a
                .update(COLLECTION, id, Patch::new().set("status", status(k)))?;
            let t = take_stamp(&committed)?;
            // Waiting for the event keeps the run in step: one change in flight at a time.
            wait_for(&watch, id)?;
            let seen = t.elapsed();
            // B publishes to its watches just before it runs its commit listeners.
            let b_done = wait_stamp(&b_committed)?;
            if k < sizes.sync_latency_commits {
                watch_saw.push(seen);
            }
            Ok(b_done.saturating_duration_since(t))
        };
        let (f, b) = alternate_timed(
            sizes.sync_latency_commits,
            sizes.rounds,
            &mut floor_op,
            db_op,
        )?;
        let (a_report, b_report) = link.stop(&rt)?;
        pair.a.remove_commit_listener(listener);
        pair.b.remove_commit_listener(b_listener);
        floor_link.stop()?;

        // The same propagation with the sans-IO sessions pumped on this thread: what the sync
        // path itself costs, without the driver's wake-ups and thread hops.
        while watch.try_recv().is_some() {}
        let (mut sa, mut sb) = sessions(&pair.a, &pair.b, SessionConfig::default())?;
        pump(&pair.a, &mut sa, &pair.b, &mut sb)?;
        let m = sizes.sync_latency_commits;
        let (mut send, mut receive, mut answer) = (
            Vec::with_capacity(m),
            Vec::with_capacity(m),
            Vec::with_capacity(m),
        );
        for (k, &pick) in picks.iter().enumerate().take(m + WARMUP_OPS) {
            let id = pair.ids[pick];
            pair.a.update(
                COLLECTION,
                id,
                Patch::new().set("priority", k as i64 + 1_000),
            )?;
            let t0 = Instant::now();
            let mut out = Vec::new();
            while let Some(f) = sa.poll_transmit(0, &pair.a) {
                out.push(f);
            }
            let t1 = Instant::now();
            for f in &out {
                sb.handle_bytes(0, f, &pair.b)?;
            }
            let t2 = Instant::now();
            ensure!(
                matches!(watch.try_recv(), Some(WatchItem::Event(e)) if e.record.id == id),
                "B applied the change without publishing its event"
            );
            let t3 = Instant::now();
            while let Some(f) = sb.poll_transmit(0, &pair.b) {
                sa.handle_bytes(0, &f, &pair.a)?;
            }
            if k >= WARMUP_OPS {
                send.push(t1 - t0);
                receive.push(t2 - t1);
                answer.push(t3.elapsed());
            }
        }
        let path: Vec<Duration> = send.iter().zip(&receive).map(|(s, r)| *s + *r).collect();
        let sans_io = json!({
            "what": "A: Session::poll_transmit until None (feed read, encode); B: \
                     handle_bytes of those frames (decode, apply, commit, watch event); then \
                     B's answers (ACK, CAUGHT_UP) handled by A, off the critical path",
            "commits": m,
            "path_p50_us": summary(&path)?.p50_us,
            "path_p99_us": summary(&path)?.p99_us,
            "a_transmit_p50_us": summary(&send)?.p50_us,
            "b_receive_apply_p50_us": summary(&receive)?.p50_us,
            "b_receive_apply_p99_us": summary(&receive)?.p99_us,
            "answers_handled_by_a_p50_us": summary(&answer)?.p50_us,
        });

        let (fs, bs) = (summary(&f)?, summary(&b)?);
        let extra = details(json!({
            "records": n,
            "commits": sizes.sync_latency_commits,
            "warmup_commits": WARMUP_OPS,
            "runtime_workers": RUNTIME_WORKERS,
            "watch_saw_it_what": "from the end of A's commit until a Database::watch \
                                  subscription on B, waited on by the benchmark's thread, \
                                  yields the event: the headline figure plus the wake-up of \
                                  the waiting thread (the figure this scenario reported \
                                  until 2026-12-04)",
            "watch_saw_it_p50_us": summary(&watch_saw)?.p50_us,
            "watch_saw_it_p99_us": summary(&watch_saw)?.p99_us,
            "sans_io_same_pair": sans_io,
            "channel_round_trip_p50_us": channel_rtt.p50_us,
            "channel_round_trip_p99_us": channel_rtt.p99_us,
            "a_bytes_sent": a_report.stats.bytes_sent,
            "b_bytes_sent": b_report.stats.bytes_sent,
            "a_frames_sent": a_report.stats.frames_sent,
            "b_frames_sent": b_report.stats.frames_sent,
            "b_cells_applied": b_report.stats.cells_applied,
        }));
        let db_what = "Database::update (one field, committed) on A; from the end of A's commit \
                       (a commit listener registered before the driver's) until the end of B's \
                       commit of the change (B's commit listener: from then on every read on B \
                       returns it); sessions driven by blazedb_net::run_session over \
                       tokio::io::duplex on a 2-worker runtime";
        let floor_what = format!(
            "raw UPDATE (autocommit) on A's file; from its return: {FLOOR_MESSAGE_BYTES} bytes \
             and the row over a std channel to a thread that runs the same UPDATE on B's file, \
             until that UPDATE returns"
        );
        Ok(latency_rows(
            "sync_latency",
            encrypted,
            (&bs, db_what),
            (&fs, &floor_what),
            &extra,
        ))
    }
}

/// Stamps the end of each commit `db` makes on the calling thread. Commit listeners run right
/// after the SQLite COMMIT, in registration order, so one registered before the sync driver's
/// runs before the driver's listener wakes the session. (Timing from the write call's return
/// instead would let a preempted benchmark thread see B's event "before" its own commit
/// returned.) Returns the stamp and the listener's id.
fn stamp_commits(db: &Database) -> (Arc<Mutex<Option<Instant>>>, u64) {
    let stamp: Arc<Mutex<Option<Instant>>> = Arc::default();
    let me = std::thread::current().id();
    let s = stamp.clone();
    let id = db.on_commit(Arc::new(move || {
        if std::thread::current().id() == me {
            *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }));
    (stamp, id)
}

/// The stamp of the commit just made (see [`stamp_commits`]).
fn take_stamp(stamp: &Mutex<Option<Instant>>) -> Result<Instant> {
    stamp
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("the commit listener did not run")
}

/// The stamp of a commit another thread is finishing (see [`stamp_commits`]).
fn wait_stamp(stamp: &Mutex<Option<Instant>>) -> Result<Instant> {
    let deadline = Instant::now() + STAMP_WAIT;
    loop {
        if let Some(t) = stamp.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(t);
        }
        ensure!(
            Instant::now() < deadline,
            "the commit listener did not run within {STAMP_WAIT:?}"
        );
        std::thread::yield_now();
    }
}

/// The records a latency scenario changes, one per commit (warm-up included), drawn from
/// `seed` among the first `n`.
fn latency_picks(seed: u64, n: usize, commits: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..commits + WARMUP_OPS)
        .map(|_| rng.gen_range(0..n))
        .collect()
}

/// The value commit `k` of a latency scenario sets: it alternates, so every commit changes
/// the record.
fn latency_status(k: usize) -> &'static str {
    if k % 2 == 0 {
        "closed"
    } else {
        "open"
    }
}

/// A latency scenario's p50 and p99 rows, each beside its floor and the target.
fn latency_rows(
    scenario: &'static str,
    encrypted: bool,
    (bs, db_what): (&Summary, &str),
    (fs, floor_what): (&Summary, &str),
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Outcome> {
    let row = |pct: &str, db_v: f64, floor_v: f64, max: f64| Outcome {
        name: format!("{scenario}_{pct}"),
        scenario,
        encrypted,
        blazedb: Figure::latency(db_v, "us", bs.clone(), db_what),
        floor: Figure::latency(floor_v, "us", fs.clone(), floor_what),
        target: Some(Target {
            description: format!("{pct} ≤ {max:.0} us"),
            met: db_v <= max,
        }),
        details: extra.clone(),
    };
    vec![
        row("p50", bs.p50_us, fs.p50_us, LATENCY_P50_US_MAX),
        row("p99", bs.p99_us, fs.p99_us, LATENCY_P99_US_MAX),
    ]
}

/// Field changes per second from A applied on B, A writing as fast as it can.
#[derive(Debug)]
struct Throughput;

impl Scenario for Throughput {
    fn name(&self) -> &'static str {
        "sync_throughput"
    }

    fn about(&self) -> &'static str {
        "field changes/s applied on B while A commits 100-record transactions"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        let n = sizes.sync_records;
        let per_tx = sizes.sync_throughput_tx_records.clamp(1, n);
        let write_for = Duration::from_millis(sizes.sync_throughput_ms);
        let pair = Pair::build(ctx, "sync-tput", encrypted, n)?;
        let (mut floor_a, floor_b, floor_ids) =
            floor_pair(ctx, "sync-tput", encrypted, &pair.bugs)?;

        // The floor first: raw transactions on A's file, each shipped as (id, value) rows
        // over a channel to a thread that applies them in one transaction on B's file.
        let floor = {
            let (tx, rx) = mpsc::channel::<Vec<([u8; 16], i64)>>();
            let applied = Arc::new(AtomicU64::new(0));
            let applier = {
                let applied = applied.clone();
                let mut floor_b = floor_b;
                std::thread::spawn(move || -> Result<()> {
                    while let Ok(rows) = rx.recv() {
                        floor_b.update_priority_batch(&rows)?;
                        applied.fetch_add(rows.len() as u64, Ordering::Release);
                    }
                    Ok(())
                })
            };
            let start = Instant::now();
            let mut written = 0usize;
            let mut t = 0usize;
            while start.elapsed() < write_for {
                let rows: Vec<([u8; 16], i64)> = (0..per_tx)
                    .map(|k| (floor_ids[(t * per_tx + k) % n], t as i64 + 11))
                    .collect();
                floor_a.update_priority_batch(&rows)?;
                tx.send(rows).context("floor applier stopped")?;
                written += per_tx;
                t += 1;
            }
            let wrote = start.elapsed();
            drop(tx);
            applier
                .join()
                .map_err(|_| anyhow::anyhow!("floor applier panicked"))??;
            let done = start.elapsed();
            ensure!(applied.load(Ordering::Acquire) as usize == written);
            (written, wrote, done)
        };

        // BlazeDB: the same transactions through the API, the sessions running meanwhile.
        let rt = runtime()?;
        let link = Link::start(&rt, &pair.a, &pair.b);
        let a_node = pair.a.node_id();
        let start = Instant::now();
        let mut written = 0usize;
        let mut t = 0usize;
        while start.elapsed() < write_for {
            let v = t as i64 + 11;
            pair.a.transaction(|tx| {
                for k in 0..per_tx {
                    let id = pair.ids[(t * per_tx + k) % n];
                    tx.update(COLLECTION, id, Patch::new().set("priority", v))?;
                }
                Ok(())
            })?;
            written += per_tx;
            t += 1;
        }
        let wrote = start.elapsed();
        ensure!(t > 0, "A committed nothing (sync_throughput_ms is 0)");
        let head = pair.a.last_seq()?;
        let lag_at_stop = head.0 - pair.b.peer_cursor(a_node, PeerDirection::Received)?.0;
        while pair.b.peer_cursor(a_node, PeerDirection::Received)? < head {
            ensure!(
                start.elapsed() < write_for + DRAIN_WAIT_MAX,
                "B did not catch up within {DRAIN_WAIT_MAX:?} after A stopped writing"
            );
            std::thread::sleep(DRAIN_POLL);
        }
        let done = start.elapsed();
        let (a_report, b_report) = link.stop(&rt)?;
        let last = pair.ids[((t - 1) * per_tx) % n];
        let got = pair
            .b
            .get(COLLECTION, last)?
            .context("record missing on B")?;
        ensure!(
            got.fields.get("priority") == Some(&Value::Int(t as i64 + 10)),
            "B does not hold A's last write"
        );
        // Capacities, measured apart: A alone commits one cycle through the records (so no
        // change overwrites another before it is sent), then sans-IO sessions pumped on this
        // thread carry it to B, timing each side's session calls.
        let cycle = (n / per_tx).max(1);
        let alone_start = Instant::now();
        for c in 0..cycle {
            let v = (t + c) as i64 + 11;
            pair.a.transaction(|tx| {
                for k in 0..per_tx {
                    let id = pair.ids[(c * per_tx + k) % n];
                    tx.update(COLLECTION, id, Patch::new().set("priority", v))?;
                }
                Ok(())
            })?;
        }
        let alone = cycle * per_tx;
        let alone_rate = rate_per_s(alone, alone_start.elapsed());
        let (mut sa, mut sb) = sessions(&pair.a, &pair.b, SessionConfig::default())?;
        let carried = pump(&pair.a, &mut sa, &pair.b, &mut sb)?;
        ensure!(
            sb.stats().cells_applied as usize == alone,
            "B applied {} cells of A's {alone} changes",
            sb.stats().cells_applied
        );
        // Every change A committed is on B at `done`. When B lags by more than a cycle
        // through the records, a cell overwritten before it was sent travels once (the feed
        // keeps the newest): `cells_applied_on_b` is then below `changes_written_on_a`.
        let applied = b_report.stats.cells_applied as usize;
        let rate = rate_per_s(written, done);
        let floor_rate = rate_per_s(floor.0, floor.2);
        Ok(vec![Outcome {
            name: "sync_throughput".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::rate(
                rate,
                "changes/s",
                format!(
                    "field changes A committed / time from A's first commit until B's \
                     cursor reached A's head (B holds them all); A commits transactions of \
                     {per_tx} records × 1 field (Tx::update) for {} ms, as fast as it can; \
                     run_session over tokio::io::duplex",
                    write_for.as_millis()
                ),
            ),
            floor: Figure::rate(
                floor_rate,
                "changes/s",
                format!(
                    "raw transactions of {per_tx} UPDATEs on A's file, the rows sent over a std \
                     channel to a thread that applies them in one transaction on B's file; \
                     changes / time until the thread applied the last"
                ),
            ),
            target: Some(Target {
                description: format!("≥ {:.0}k changes/s", THROUGHPUT_CHANGES_PER_S_MIN / 1e3),
                met: rate >= THROUGHPUT_CHANGES_PER_S_MIN,
            }),
            details: details(json!({
                "records": n,
                "records_per_transaction": per_tx,
                "transactions": t,
                "changes_written_on_a": written,
                "cells_sent_by_a": a_report.stats.cells_sent,
                "cells_applied_on_b": applied,
                "a_write_rate_per_s": rate_per_s(written, wrote),
                "capacity": {
                    "what": "one cycle through the records, measured apart: A committing alone, \
                             then sans-IO sessions on one thread carrying it to B",
                    "changes": alone,
                    "a_commit_per_s": alone_rate,
                    "a_session_send_per_s": rate_per_s(alone, carried.a_busy),
                    "b_session_receive_apply_per_s": rate_per_s(alone, carried.b_busy),
                },
                "write_s": wrote.as_secs_f64(),
                "caught_up_s": done.as_secs_f64(),
                "lag_commits_when_a_stopped": lag_at_stop,
                "a_to_b_bytes": a_report.stats.bytes_sent,
                "b_to_a_bytes": b_report.stats.bytes_sent,
                "b_to_a_frames": b_report.stats.frames_sent,
                "floor_changes": floor.0,
                "floor_write_s": floor.1.as_secs_f64(),
                "floor_caught_up_s": floor.2.as_secs_f64(),
                "runtime_workers": RUNTIME_WORKERS,
            })),
        }])
    }
}

/// Initial sync of a whole collection into an empty copy.
#[derive(Debug)]
struct Initial;

/// The default: a new, empty peer is bootstrapped by a snapshot (measured 2026-11-22: 0.70 s
/// for 100k records, against 0.90 s through the feed).
fn initial_cfg() -> SessionConfig {
    SessionConfig::default()
}

impl Scenario for Initial {
    fn name(&self) -> &'static str {
        "sync_initial"
    }

    fn about(&self) -> &'static str {
        "sync N records into an empty copy vs bulk-inserting them locally (ms)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let n = ctx.config.sizes.sync_initial_records;
        let bugs = Generator::new(ctx.config.seed ^ 0x1417, n).bugs(n);
        // Raw SQLite bulk-inserting the same rows, for scale (details only).
        let floor_path = ctx.path("sync-init-floor", encrypted);
        remove_db_files(&floor_path)?;
        let mut floor = Floor::create(&floor_path, Ctx::password(encrypted))?;
        let floor_ids: Vec<[u8; 16]> = bugs.iter().map(|_| new_floor_id()).collect();
        let (r, raw_insert) = timed(|| -> Result<()> {
            for (ids, bugs) in floor_ids
                .chunks(LOAD_CHUNK_RECORDS)
                .zip(bugs.chunks(LOAD_CHUNK_RECORDS))
            {
                floor.insert_batch(ids, bugs)?;
            }
            Ok(())
        });
        r?;
        drop(floor);

        // The reference: bulk-inserting the records locally, into an empty file. That file
        // is then the source of the sync.
        let a = fresh(ctx, "sync-init-a", encrypted)?;
        let (ids, local) = timed(|| insert_chunked(&a, &bugs, LOAD_CHUNK_RECORDS));
        let ids = ids?;
        let b = fresh(ctx, "sync-init-b", encrypted)?;
        let rt = runtime()?;
        let ((ra, rb), sync) = timed(|| {
            rt.block_on(async {
                let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
                let _checkpoints = (
                    spawn_checkpointer(a.clone(), every),
                    spawn_checkpointer(b.clone(), every),
                );
                let (x, y) = tokio::io::duplex(DUPLEX_BUFFER_BYTES_DEFAULT);
                tokio::join!(
                    run_session(a.clone(), x, initial_cfg(), DriverOptions::once()),
                    run_session(b.clone(), y, initial_cfg(), DriverOptions::once()),
                )
            })
        });
        let (ra, rb) = (ra?, rb?);
        ensure!(
            b.count(COLLECTION)? as usize == n,
            "the copy did not receive every record"
        );
        let probe = ids[n / 2];
        ensure!(
            a.get(COLLECTION, probe)? == b.get(COLLECTION, probe)?,
            "the copy differs from the source"
        );
        let factor = sync.as_secs_f64() / local.as_secs_f64();
        Ok(vec![Outcome {
            name: "sync_initial".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::cost(
                sync.as_secs_f64() * 1e3,
                "ms",
                format!(
                    "a run_session pair (stop when caught up, as `blazedb sync --once`) over \
                     tokio::io::duplex copying {n} records into an empty file, from the first \
                     HELLO until both sides finished"
                ),
            ),
            floor: Figure::cost(
                local.as_secs_f64() * 1e3,
                "ms",
                format!(
                    "Tx::insert of the same {n} records into an empty file, {} transaction(s)",
                    n.div_ceil(LOAD_CHUNK_RECORDS)
                ),
            ),
            target: Some(Target {
                description: format!(
                    "≤ {INITIAL_SYNC_FACTOR_MAX}x local bulk insert (measured {factor:.2}x)"
                ),
                met: factor <= INITIAL_SYNC_FACTOR_MAX,
            }),
            details: details(json!({
                "records": n,
                "records_per_s": rate_per_s(n, sync),
                "local_insert_records_per_s": rate_per_s(n, local),
                "raw_sqlite_insert_ms": raw_insert.as_secs_f64() * 1e3,
                "a_to_b_bytes": ra.stats.bytes_sent,
                "b_to_a_bytes": rb.stats.bytes_sent,
                "a_to_b_frames": ra.stats.frames_sent,
                "cells": rb.stats.cells_applied,
                "runtime_workers": RUNTIME_WORKERS,
            })),
        }])
    }
}

// ---- Building files ----

/// A new, empty database (plain or encrypted), shared so a session task can hold it.
fn fresh(ctx: &Ctx, name: &str, encrypted: bool) -> Result<Arc<Database>> {
    let path = ctx.path(name, encrypted);
    remove_db_files(&path)?;
    Ok(Arc::new(Database::open(&path, options(encrypted))?))
}

/// Two copies of the same records, synced (A wrote them; B received them over a session).
#[derive(Debug)]
struct Pair {
    a: Arc<Database>,
    b: Arc<Database>,
    ids: Vec<RecordId>,
    bugs: Vec<Bug>,
    /// CHANGES bytes the initial copy moved from A to B.
    full_copy_bytes: usize,
}

impl Pair {
    fn build(ctx: &Ctx, name: &str, encrypted: bool, n: usize) -> Result<Pair> {
        let a = fresh(ctx, &format!("{name}-a"), encrypted)?;
        let b = fresh(ctx, &format!("{name}-b"), encrypted)?;
        let bugs = Generator::new(ctx.config.seed ^ 0x5A1C, n).bugs(n);
        let ids = insert_chunked(&a, &bugs, LOAD_CHUNK_RECORDS)?;
        // Through the feed, so that the copy's CHANGES bytes can be reported (a new peer
        // would otherwise get a snapshot: see sync_initial).
        let feed_path = SessionConfig {
            snapshot_new_peers: false,
            ..SessionConfig::default()
        };
        let (mut sa, mut sb) = sessions(&a, &b, feed_path)?;
        let full_copy_bytes = changes_bytes(&pump(&a, &mut sa, &b, &mut sb)?.a_to_b)?;
        ensure!(
            b.count(COLLECTION)? as usize == n,
            "B did not receive every record"
        );
        Ok(Pair {
            a,
            b,
            ids,
            bugs,
            full_copy_bytes,
        })
    }
}

/// The floor's two files, holding the same rows under the same ids.
fn floor_pair(
    ctx: &Ctx,
    name: &str,
    encrypted: bool,
    bugs: &[Bug],
) -> Result<(Floor, Floor, Vec<[u8; 16]>)> {
    let pw = Ctx::password(encrypted);
    let ids: Vec<[u8; 16]> = bugs.iter().map(|_| new_floor_id()).collect();
    let mut out = Vec::new();
    for side in ["a", "b"] {
        let path = ctx.path(&format!("{name}-floor-{side}"), encrypted);
        remove_db_files(&path)?;
        let mut f = Floor::create(&path, pw)?;
        for (ids, bugs) in ids
            .chunks(LOAD_CHUNK_RECORDS)
            .zip(bugs.chunks(LOAD_CHUNK_RECORDS))
        {
            f.insert_batch(ids, bugs)?;
        }
        out.push(f);
    }
    let b = out.pop().context("floor b")?;
    let a = out.pop().context("floor a")?;
    Ok((a, b, ids))
}

// ---- The latency floor ----

/// The thread on B's side of the latency floor: runs each UPDATE it receives and answers with
/// the time it returned.
#[derive(Debug)]
struct FloorLink {
    requests: mpsc::Sender<(Vec<u8>, [u8; 16], &'static str)>,
    answers: mpsc::Receiver<Result<Instant>>,
    thread: std::thread::JoinHandle<()>,
}

impl FloorLink {
    fn start(floor_b: Floor) -> FloorLink {
        let (requests, rx) = mpsc::channel::<(Vec<u8>, [u8; 16], &'static str)>();
        let (tx, answers) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while let Ok((message, id, status)) = rx.recv() {
                // The bytes are what a replication protocol would ship; the row is applied
                // from the fields (a real protocol would parse them out of the bytes).
                let _ = message;
                let done = floor_b.update_status(&id, status).map(|()| Instant::now());
                if tx.send(done).is_err() {
                    return;
                }
            }
        });
        FloorLink {
            requests,
            answers,
            thread,
        }
    }

    /// Ship one change to B's thread; returns when B's UPDATE returned.
    fn round_trip(&self, message: Vec<u8>, id: [u8; 16], status: &'static str) -> Result<Instant> {
        self.requests
            .send((message, id, status))
            .context("floor thread stopped")?;
        self.answers.recv().context("floor thread stopped")?
    }

    fn stop(self) -> Result<()> {
        drop(self.requests);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("floor thread panicked"))
    }
}

/// Round trips of a small message to a thread and back over std channels.
fn channel_round_trips(n: usize) -> Result<Summary> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let (back_tx, back) = mpsc::channel::<Vec<u8>>();
    let echo = std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            if back_tx.send(m).is_err() {
                return;
            }
        }
    });
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + WARMUP_OPS {
        let t = Instant::now();
        tx.send(vec![0xA5; FLOOR_MESSAGE_BYTES])?;
        back.recv()?;
        if i >= WARMUP_OPS {
            samples.push(t.elapsed());
        }
    }
    drop(tx);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    summary(&samples)
}

/// Like `store::alternate`, for operations that time themselves (the clock starts after the
/// commit on A returns, not before it).
fn alternate_timed(
    ops: usize,
    rounds: usize,
    mut floor: impl FnMut(usize) -> Result<Duration>,
    mut blazedb: impl FnMut(usize) -> Result<Duration>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    for k in 0..WARMUP_OPS {
        floor(ops + k)?;
        blazedb(ops + k)?;
    }
    let (mut f, mut b) = (Vec::with_capacity(ops), Vec::with_capacity(ops));
    alternate(
        ops,
        rounds,
        |i| floor(i).map(|d| f.push(d)),
        |i| blazedb(i).map(|d| b.push(d)),
    )?;
    Ok((f, b))
}
