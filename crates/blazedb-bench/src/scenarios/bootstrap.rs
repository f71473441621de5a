//! Protocol 2's promises for real use (issue 5): a new device's first sync, selective sync,
//! and sync metadata that stays bounded under churn once GC runs.
//!
//! - `bootstrap_ws_100k`, `bootstrap_ws_1m`: an in-process relay (`blazedb_relay::Relay` on
//!   127.0.0.1, port 0, no authentication) whose store holds N records; a fresh client file connects over
//!   WebSocket and runs one session until caught up (what `blazedb_net::sync_once` runs).
//!   The relay bootstraps a new client (HELLO `server=false`) with a zstd snapshot; the row
//!   checks that the client applied one. Floor, measured in the same call: bulk-inserting the
//!   same N records into an empty file of the same mode, one transaction per
//!   [`LOAD_TX_RECORDS`] (that file then is the relay's store). The 1M row runs encrypted only
//!   and not under `--quick`.
//! - `selective_1pct`: a replica whose policy selects 1% of a collection (`bucket == 7`,
//!   bucket = i % 100) against a replica that takes everything; framed bytes each received.
//! - `gc_metadata`: 10,000 live records, rounds of deleting 10% and inserting 10%, each
//!   followed by a sync to a peer (which acknowledges everything) and GC on both sides;
//!   `sync_metadata().bytes_per_live_record()` after 1, 5 and 20 rounds, beside the figure
//!   before any delete.
//!
//! ```text
//!   relay store (N records) ══ws 127.0.0.1══► fresh client: SNAPSHOT_BEGIN, CHUNK × k, END
//!   source ──Session pump──► replica A (everything) / replica B (bucket == 7)
//! ```
//!
//! The byte and metadata figures do not depend on encryption: `selective_1pct` and
//! `gc_metadata` run once, in plain mode (in encrypted mode they return no rows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use blazedb::limits::{ECHO_CAUGHT_UP_INTERVAL_MS, IDLE_TIMEOUT_MS_DEFAULT};
use blazedb::sync::{Session, SessionConfig, SyncPolicy};
use blazedb::{Database, GcOptions, RecordId, Value};
use blazedb_net::limits::LINGER_MS_DEFAULT;
use blazedb_net::transport::ConnectOptions;
use blazedb_net::{connect, run_session, DriverOptions, Endpoint, SessionMonitor};
use blazedb_relay::{AuthConfig, Limits, Relay, RelayConfig, Secret};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::store::{details, options, remove_db_files, COLLECTION};
use super::{Ctx, Scenario, PASSWORD};
use crate::report::{Figure, Outcome, Target};
use crate::stats::{rate_per_s, timed};
use crate::workload::{Bug, Generator};

/// Issue target: initial sync of 100,000 records over WebSocket loopback, wall time.
const BOOTSTRAP_100K_MS_MAX: f64 = 3_000.0;
/// Issue target: initial sync of 1,000,000 records over WebSocket loopback, wall time.
const BOOTSTRAP_1M_MS_MAX: f64 = 30_000.0;
/// Issue target: a 1% selective sync moves at most this fraction of a full sync's bytes.
const SELECTIVE_FRACTION_MAX: f64 = 0.02;
/// Issue target: sync metadata per live record after GC.
const GC_METADATA_BYTES_MAX: f64 = 64.0;
/// Issue target "no growth with the number of deletes": the last round's figure at most this
/// factor of the first round's.
const GC_GROWTH_MAX: f64 = 1.1;

/// Records per transaction of every bulk load here (the floor of the bootstrap rows).
const LOAD_TX_RECORDS: usize = 10_000;
/// Records of `bootstrap_ws_100k` under `--quick` (the target is then not judged).
const BOOTSTRAP_QUICK_RECORDS: usize = 10_000;
/// Records of the selective-sync source (`--quick`: [`SELECTIVE_QUICK_RECORDS`]).
const SELECTIVE_RECORDS: usize = 100_000;
/// Records of the selective-sync source under `--quick`.
const SELECTIVE_QUICK_RECORDS: usize = 10_000;
/// Distinct values of the `bucket` field: the filter selects one, i.e. 1%.
const BUCKETS: i64 = 100;
/// The bucket replica B asks for.
const SELECTED_BUCKET: i64 = 7;
/// Live records of the GC scenario (`--quick`: [`GC_QUICK_RECORDS`]).
const GC_RECORDS: usize = 10_000;
/// Live records of the GC scenario under `--quick`.
const GC_QUICK_RECORDS: usize = 2_000;
/// Fraction of the live records each GC round deletes (and inserts anew).
const GC_CHURN_PERCENT: usize = 10;
/// Rounds after which the metadata figure is reported; the last is the run's length.
const GC_REPORT_ROUNDS: [usize; 3] = [1, 5, 20];
/// Time between `gc_metadata` rounds on the sessions' clock, ms.
const GC_ROUND_GAP_MS: u64 = 10_000;

/// Tokio workers: the machine the targets are set for has 2 cores.
const RUNTIME_WORKERS: usize = 2;
/// Idle timeout of both sides of a bootstrap, raised from the default
/// ([`IDLE_TIMEOUT_MS_DEFAULT`]): the client applies a snapshot in one go on its session task,
/// reading nothing meanwhile, and at 1M records that takes longer than the default (the
/// session then ends with a timeout after the data is in). The row reports the longest such
/// silence and judges the target against the default.
const BOOTSTRAP_IDLE_TIMEOUT_MS: u64 = 300_000;
/// A bootstrap that has not finished within this long fails the run.
const BOOTSTRAP_WAIT_MAX: Duration = Duration::from_secs(600);
/// Bound on the in-memory pump: rounds of frames exchanged before it gives up.
const PUMP_ROUNDS_MAX: usize = 1_000_000;

/// This module's scenarios, in run order.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(BootstrapWs {
            name: "bootstrap_ws_100k",
            records: 100_000,
            target_ms: BOOTSTRAP_100K_MS_MAX,
            quick_records: Some(BOOTSTRAP_QUICK_RECORDS),
            plain_too: true,
        }),
        Box::new(BootstrapWs {
            name: "bootstrap_ws_1m",
            records: 1_000_000,
            target_ms: BOOTSTRAP_1M_MS_MAX,
            quick_records: None,
            plain_too: false,
        }),
        Box::new(Selective),
        Box::new(GcMetadata),
    ]
}

// ---- Bootstrap over WebSocket ----

/// A fresh client's first sync from a relay holding `records` records.
#[derive(Debug)]
struct BootstrapWs {
    name: &'static str,
    records: usize,
    target_ms: f64,
    /// Records under `--quick`; `None`: skipped under `--quick`.
    quick_records: Option<usize>,
    /// Also run unencrypted (the target is for an encrypted copy).
    plain_too: bool,
}

/// What one bootstrap measured.
#[derive(Debug)]
struct Bootstrap {
    load: Duration,
    sync: Duration,
    caught_up: Option<Duration>,
    receive_gap: Duration,
    open: Duration,
    report: blazedb_net::SessionReport,
    client_file_bytes: u64,
    rss: Rss,
    rss_hwm_reset: bool,
}

impl Scenario for BootstrapWs {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        if self.records >= 1_000_000 {
            "fresh encrypted client's first sync of 1M records from a relay over ws (skipped \
             under --quick)"
        } else {
            "fresh client's first sync of 100k records from a relay over ws (snapshot) vs bulk \
             insert"
        }
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if !encrypted && !self.plain_too {
            return Ok(Vec::new());
        }
        let (n, judged) = match (ctx.config.quick, self.quick_records) {
            (false, _) => (self.records, true),
            (true, Some(q)) => (q, false),
            (true, None) => return Ok(Vec::new()),
        };
        let bugs = Generator::new(ctx.config.seed ^ 0xB007, n).bugs(n);
        let relay_dir = ctx
            .path(&format!("{}-relay", self.name), encrypted)
            .with_extension("d");
        let client_path = ctx.path(&format!("{}-client", self.name), encrypted);
        let b = bootstrap(&relay_dir, &client_path, &bugs, encrypted)?;
        let stats = &b.report.stats;
        ensure!(
            stats.snapshots_applied == 1,
            "the relay did not bootstrap the new client with a snapshot \
             (snapshots applied: {})",
            stats.snapshots_applied
        );
        let sync_ms = b.sync.as_secs_f64() * 1e3;
        let mode = if encrypted { "encrypted" } else { "plain" };
        let gap_ms = b.receive_gap.as_secs_f64() * 1e3;
        let within_idle = gap_ms < IDLE_TIMEOUT_MS_DEFAULT as f64;
        let target = (judged && encrypted).then(|| Target {
            description: format!(
                "≤ {:.0} s for {} records into an empty encrypted copy, with no silence that \
                 the default {} s idle timeout would cut (longest {:.1} s)",
                self.target_ms / 1e3,
                self.records,
                IDLE_TIMEOUT_MS_DEFAULT / 1000,
                gap_ms / 1e3
            ),
            met: sync_ms <= self.target_ms && within_idle,
        });
        Ok(vec![Outcome {
            name: self.name.into(),
            scenario: self.name,
            encrypted,
            blazedb: Figure::cost(
                sync_ms,
                "ms",
                format!(
                    "a new {mode} client file: WebSocket connect to an in-process relay on \
                     127.0.0.1 (no auth, default limits), then one session until caught up \
                     and closed (sync_once's steps: connect + run_session with \
                     DriverOptions::once), receiving {n} records of 5 fields"
                ),
            ),
            floor: Figure::cost(
                b.load.as_secs_f64() * 1e3,
                "ms",
                format!(
                    "Tx::insert of the same {n} records into an empty {mode} file, {} \
                     transactions of {LOAD_TX_RECORDS} (that file then is the relay's store)",
                    n.div_ceil(LOAD_TX_RECORDS)
                ),
            ),
            target,
            details: details(json!({
                "records": n,
                "quick_sizes_target_not_judged": !judged,
                "records_per_s": rate_per_s(n, b.sync),
                "caught_up_ms": b.caught_up.map(|d| d.as_secs_f64() * 1e3),
                "longest_receive_gap_ms": gap_ms,
                "idle_timeout_ms_used": BOOTSTRAP_IDLE_TIMEOUT_MS,
                "idle_timeout_ms_default": IDLE_TIMEOUT_MS_DEFAULT,
                "would_survive_default_idle_timeout": within_idle,
                "client_open_ms_not_timed": b.open.as_secs_f64() * 1e3,
                "bytes_received": stats.bytes_received,
                "bytes_sent": stats.bytes_sent,
                "bytes_received_per_record": stats.bytes_received as f64 / n as f64,
                "bytes_note": "framed protocol bytes (SessionStats), without WebSocket headers",
                "frames_received": stats.frames_received,
                "snapshots_applied": stats.snapshots_applied,
                "cells_received": stats.cells_received,
                "client_file_bytes": b.client_file_bytes,
                "process_rss": {
                    "vm_hwm_kib_during_sync": b.rss.hwm_kib,
                    "vm_rss_kib_before": b.rss.before_kib,
                    "vm_rss_kib_after": b.rss.after_kib,
                    "peak_reset_before_sync": b.rss_hwm_reset,
                    "note": "VmHWM of the whole benchmark process (relay and client share it), \
                             reset through /proc/self/clear_refs just before the sync when \
                             peak_reset_before_sync; otherwise the peak since the process began",
                },
                "runtime_workers": RUNTIME_WORKERS,
            })),
        }])
    }
}

/// Fill a relay store with `bugs` (timed: the floor), serve it, and bootstrap a new client.
fn bootstrap(
    relay_dir: &Path,
    client_path: &Path,
    bugs: &[Bug],
    encrypted: bool,
) -> Result<Bootstrap> {
    match std::fs::remove_dir_all(relay_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", relay_dir.display())),
    }
    // Owner-only, as the relay makes its data directory: one readable by others gets a
    // startup warning in every run's output.
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(relay_dir)
        .with_context(|| format!("creating {}", relay_dir.display()))?;
    remove_db_files(client_path)?;
    let n = bugs.len();

    // The floor: a local bulk load into an empty file. The file is the relay's store, filled
    // through the library before the relay opens it.
    let store = relay_dir.join(blazedb_relay::limits::STORE_FILE_NAME);
    let (ids, load) = timed(|| -> Result<Vec<RecordId>> {
        let db = Database::open(&store, options(encrypted))?;
        insert_records(&db, bugs, |_| None)
    });
    let ids = ids?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let config = RelayConfig {
            data_dir: relay_dir.to_path_buf(),
            password: encrypted.then(|| Secret::new(PASSWORD)),
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            // No authentication (allowed on loopback): `blazedb_net::connect` sends no
            // Authorization header on the WebSocket upgrade, and a relay with a token refuses
            // the upgrade without one (401) before HELLO could carry the token.
            auth: AuthConfig::None,
            limits: Limits {
                idle_timeout_ms: BOOTSTRAP_IDLE_TIMEOUT_MS,
                ..Limits::default()
            },
            ..RelayConfig::default()
        };
        let relay = Relay::bind(config).await.context("starting the relay")?;
        let addr = relay.local_addr();
        let relay_db = relay.database();
        ensure!(
            relay_db.count(COLLECTION)? as usize == n,
            "the relay's store does not hold the {n} records loaded into it"
        );
        let stop = CancellationToken::new();
        let relay_task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));

        let endpoint: Endpoint = format!("ws://{addr}/v1/sync")
            .parse()
            .context("the relay's URL")?;
        let (client, open) = timed(|| Database::open(client_path, options(encrypted)));
        let client = Arc::new(client?);
        let monitor = SessionMonitor::new();
        let mut updates = monitor.subscribe();
        let session = SessionConfig {
            idle_timeout_ms: BOOTSTRAP_IDLE_TIMEOUT_MS,
            ..SessionConfig::default()
        };
        let driver = DriverOptions {
            linger_ms: LINGER_MS_DEFAULT,
            monitor: Some(monitor.clone()),
            ..DriverOptions::once()
        };
        let rss_hwm_reset = reset_peak_rss();
        let before_kib = proc_status_kib("VmRSS:");

        let start = Instant::now();
        // When the session first says it is caught up (before it closes and lingers), and the
        // longest time between two frames arriving at the client (its session task is busy,
        // e.g. applying the snapshot, or waiting on the relay).
        let watcher = tokio::spawn(async move {
            let (mut caught_up, mut frames, mut last, mut gap) = (None, 0, start, Duration::ZERO);
            loop {
                let now = Instant::now();
                let s = updates.borrow_and_update().clone();
                if s.stats.frames_received != frames {
                    frames = s.stats.frames_received;
                    gap = gap.max(now - last);
                    last = now;
                }
                if s.caught_up && caught_up.is_none() {
                    caught_up = Some(now - start);
                }
                if s.ended || updates.changed().await.is_err() {
                    return (caught_up, gap);
                }
            }
        });
        let report = tokio::time::timeout(BOOTSTRAP_WAIT_MAX, async {
            let stream = connect(&endpoint, &ConnectOptions::default()).await?;
            anyhow::Ok(run_session(client.clone(), stream, session, driver).await?)
        })
        .await
        .with_context(|| format!("the bootstrap did not finish within {BOOTSTRAP_WAIT_MAX:?}"))?
        .context("the client's session")?;
        let sync = start.elapsed();
        let rss = Rss {
            hwm_kib: proc_status_kib("VmHWM:"),
            before_kib,
            after_kib: proc_status_kib("VmRSS:"),
        };
        let (caught_up, receive_gap) = watcher.await.context("the session watcher")?;
        stop.cancel();
        relay_task
            .await
            .context("the relay task")?
            .context("the relay")?;

        ensure!(
            report.caught_up,
            "the client's session ended before catching up"
        );
        ensure!(
            client.count(COLLECTION)? as usize == n,
            "the client holds {} of the relay's {n} records",
            client.count(COLLECTION)?
        );
        for probe in [ids[0], ids[n / 2], ids[n - 1]] {
            ensure!(
                client.get(COLLECTION, probe)? == relay_db.get(COLLECTION, probe)?,
                "the client's copy differs from the relay's"
            );
        }
        drop(client);
        Ok(Bootstrap {
            load,
            sync,
            caught_up,
            receive_gap,
            open,
            report,
            client_file_bytes: file_bytes_with_wal(client_path),
            rss,
            rss_hwm_reset,
        })
    })
}

/// The process's memory around the timed sync.
#[derive(Debug)]
struct Rss {
    hwm_kib: Option<u64>,
    before_kib: Option<u64>,
    after_kib: Option<u64>,
}

/// Reset the process's peak RSS (VmHWM) to its current RSS (Linux: "5" to clear_refs).
/// False where that is not possible; the peak is then the process's since it started.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` line of /proc/self/status (`VmRSS:`, `VmHWM:`), where there is one.
fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A database file with its WAL.
fn file_bytes_with_wal(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path, wal.as_path()]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

// ---- Selective sync ----

/// A replica that asks for 1% of a collection against one that takes it all.
#[derive(Debug)]
struct Selective;

impl Scenario for Selective {
    fn name(&self) -> &'static str {
        "selective_1pct"
    }

    fn about(&self) -> &'static str {
        "bytes a replica filtered to 1% of 100k records receives vs a full replica (plain only)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if encrypted {
            return Ok(Vec::new());
        }
        let n = if ctx.config.quick {
            SELECTIVE_QUICK_RECORDS
        } else {
            SELECTIVE_RECORDS
        };
        let bugs = Generator::new(ctx.config.seed ^ 0x5E1E, n).bugs(n);
        let source = fresh(ctx, "selective-source")?;
        let (ids, _) = timed(|| {
            insert_records(&source, &bugs, |i| {
                Some(("bucket", Value::Int(i as i64 % BUCKETS)))
            })
        });
        ids?;
        let filter = format!("bucket == {SELECTED_BUCKET}");
        let selected = (0..n as i64)
            .filter(|i| i % BUCKETS == SELECTED_BUCKET)
            .count();

        let full = fresh(ctx, "selective-full")?;
        let (full_sync, full_time) = timed(|| replicate(&source, &full, SyncPolicy::everything()));
        let full_sync = full_sync?;
        let part = fresh(ctx, "selective-part")?;
        let policy = SyncPolicy {
            filter: Some(filter.clone()),
            ..SyncPolicy::everything()
        };
        let (part_sync, part_time) = timed(|| replicate(&source, &part, policy));
        let part_sync = part_sync?;

        ensure!(
            full.count(COLLECTION)? as usize == n,
            "the full replica did not receive every record"
        );
        ensure!(
            part.count(COLLECTION)? as usize == selected,
            "the filtered replica holds {} records, not the {selected} that match `{filter}`",
            part.count(COLLECTION)?
        );
        let fraction = part_sync.bytes_received as f64 / full_sync.bytes_received as f64;
        Ok(vec![Outcome {
            name: "selective_1pct".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::cost(
                part_sync.bytes_received as f64,
                "bytes",
                format!(
                    "framed bytes a new replica with policy filter `{filter}` received from a \
                     source of {n} records (6 fields, bucket = i % {BUCKETS}), two Session \
                     cores pumped in memory until caught up"
                ),
            ),
            floor: Figure::cost(
                full_sync.bytes_received as f64,
                "bytes",
                "framed bytes a new replica with the default policy (everything) received \
                 from the same source, the same way",
            ),
            target: Some(Target {
                description: format!(
                    "≤ {:.0}% of a full sync's bytes (measured {:.2}%)",
                    SELECTIVE_FRACTION_MAX * 100.0,
                    fraction * 100.0
                ),
                met: fraction <= SELECTIVE_FRACTION_MAX,
            }),
            details: details(json!({
                "records": n,
                "selected_records": selected,
                "filter": filter,
                "fraction_of_full": fraction,
                "fraction_of_records": selected as f64 / n as f64,
                "filtered": part_sync.to_json(part_time),
                "full": full_sync.to_json(full_time),
            })),
        }])
    }
}

/// What a replica received in one sync from a source.
#[derive(Debug)]
struct Received {
    bytes_received: u64,
    frames_received: u64,
    cells_received: u64,
    snapshots_applied: u64,
    bytes_sent_back: u64,
}

impl Received {
    fn to_json(&self, took: Duration) -> serde_json::Value {
        json!({
            "bytes_received": self.bytes_received,
            "frames_received": self.frames_received,
            "cells_received": self.cells_received,
            "snapshots_applied": self.snapshots_applied,
            "bytes_sent_back": self.bytes_sent_back,
            "sync_ms": took.as_secs_f64() * 1e3,
        })
    }
}

/// One session pair from `source` to `replica` (whose policy is `policy`), pumped in memory
/// until both are caught up.
fn replicate(source: &Database, replica: &Database, policy: SyncPolicy) -> Result<Received> {
    let mut ss = Session::new(source, SessionConfig::default(), 0)?;
    let mut sr = Session::new(
        replica,
        SessionConfig {
            policy,
            ..SessionConfig::default()
        },
        0,
    )?;
    pump(source, &mut ss, replica, &mut sr)?;
    let s = sr.stats();
    Ok(Received {
        bytes_received: s.bytes_received,
        frames_received: s.frames_received,
        cells_received: s.cells_received,
        snapshots_applied: s.snapshots_applied,
        bytes_sent_back: s.bytes_sent,
    })
}

/// Run two sessions against each other until both are caught up and quiet.
fn pump(a: &Database, sa: &mut Session, b: &Database, sb: &mut Session) -> Result<()> {
    pump_at(0, a, sa, b, sb)
}

/// [`pump`] with the sessions' clock at `now_ms`.
fn pump_at(
    now_ms: u64,
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
) -> Result<()> {
    for _ in 0..PUMP_ROUNDS_MAX {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(now_ms, a) {
            sb.handle_bytes(now_ms, &f, b)?;
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(now_ms, b) {
            sa.handle_bytes(now_ms, &f, a)?;
            progress = true;
        }
        if !progress {
            ensure!(
                sa.is_caught_up(a)? && sb.is_caught_up(b)?,
                "sessions stalled before catching up"
            );
            return Ok(());
        }
    }
    bail!("sessions exchanged {PUMP_ROUNDS_MAX} rounds without settling")
}

// ---- GC and metadata ----

/// Sync metadata per live record under delete churn, with GC after every sync.
#[derive(Debug)]
struct GcMetadata;

impl Scenario for GcMetadata {
    fn name(&self) -> &'static str {
        "gc_metadata"
    }

    fn about(&self) -> &'static str {
        "sync metadata per live record after 1, 5, 20 rounds of 10% delete+insert, sync, GC \
         (plain only)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if encrypted {
            return Ok(Vec::new());
        }
        let n = if ctx.config.quick {
            GC_QUICK_RECORDS
        } else {
            GC_RECORDS
        };
        let churn = n * GC_CHURN_PERCENT / 100;
        let rounds = *GC_REPORT_ROUNDS.last().expect("rounds to report");
        let mut gen = Generator::new(ctx.config.seed ^ 0x6C, n);
        let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ 0x6C6C);
        let a = fresh(ctx, "gc-a")?;
        let b = fresh(ctx, "gc-b")?;
        let mut live = insert_records(&a, &gen.bugs(n), |_| None)?;

        // One session pair for the whole run, as two devices that stay connected.
        let mut sa = Session::new(&a, SessionConfig::default(), 0)?;
        let mut sb = Session::new(&b, SessionConfig::default(), 0)?;
        // A round every GC_ROUND_GAP_MS of the sessions' clock; a second after a round's
        // changes, the replica's CAUGHT_UP for the positions holding only what it received
        // (at most one a second) is due and lets A acknowledge them, as it would on a clock
        // that runs.
        let settle =
            |round: u64, sa: &mut Session, sb: &mut Session| -> Result<serde_json::Value> {
                let t = round * GC_ROUND_GAP_MS;
                pump_at(t, &a, sa, &b, sb)?;
                pump_at(t + ECHO_CAUGHT_UP_INTERVAL_MS, &a, sa, &b, sb)?;
                let ra = a.gc(&GcOptions::default())?;
                let rb = b.gc(&GcOptions::default())?;
                Ok(json!({
                    "a_tombstones_purged": ra.tombstones_purged,
                    "a_feed_rows_pruned": ra.feed_rows_pruned,
                    "b_tombstones_purged": rb.tombstones_purged,
                    "b_feed_rows_pruned": rb.feed_rows_pruned,
                }))
            };
        settle(0, &mut sa, &mut sb)?;
        let start = a.sync_metadata()?;
        ensure!(
            start.live_records as usize == n,
            "{} live records after the load",
            start.live_records
        );
        let start_b = b.sync_metadata()?.bytes_per_live_record();
        let mut at: BTreeMap<usize, serde_json::Value> = BTreeMap::new();
        let mut per_record: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        let mut deletes = 0;
        for round in 1..=rounds {
            // Delete a random 10% of the live records, insert as many new ones.
            let mut gone = Vec::with_capacity(churn);
            for _ in 0..churn {
                gone.push(live.swap_remove(rng.gen_range(0..live.len())));
            }
            a.transaction(|tx| {
                for id in &gone {
                    tx.delete(COLLECTION, *id)?;
                }
                Ok(())
            })?;
            deletes += gone.len();
            live.extend(insert_records(&a, &gen.bugs(churn), |_| None)?);
            let gc = settle(round as u64, &mut sa, &mut sb)?;
            let (ma, mb) = (a.sync_metadata()?, b.sync_metadata()?);
            ensure!(
                ma.live_records as usize == n && mb.live_records as usize == n,
                "round {round}: {} live records on A, {} on B, expected {n}",
                ma.live_records,
                mb.live_records
            );
            if GC_REPORT_ROUNDS.contains(&round) {
                per_record.insert(
                    round,
                    (ma.bytes_per_live_record(), mb.bytes_per_live_record()),
                );
                at.insert(
                    round,
                    json!({
                        "deletes_so_far": deletes,
                        "a": metadata_json(&ma),
                        "b": metadata_json(&mb),
                        "last_gc": gc,
                    }),
                );
            }
        }
        let first = per_record[&GC_REPORT_ROUNDS[0]].0;
        let last = per_record[&rounds].0;
        let growth = last / first;
        let mut rows = Vec::new();
        for round in GC_REPORT_ROUNDS {
            let (va, vb) = per_record[&round];
            let is_last = round == rounds;
            let mut description = format!(
                "≤ {GC_METADATA_BYTES_MAX:.0} B per live record after GC (A {va:.1}, B {vb:.1})"
            );
            let mut met = va <= GC_METADATA_BYTES_MAX && vb <= GC_METADATA_BYTES_MAX;
            if is_last {
                description.push_str(&format!(
                    "; no growth with deletes: round {rounds} ≤ {GC_GROWTH_MAX} × round {} \
                     (measured {growth:.3}×)",
                    GC_REPORT_ROUNDS[0]
                ));
                met &= growth <= GC_GROWTH_MAX;
            }
            rows.push(Outcome {
                name: format!("gc_metadata_round_{round}"),
                scenario: self.name(),
                encrypted,
                blazedb: Figure::cost(
                    va,
                    "bytes/record",
                    format!(
                        "Database::sync_metadata().bytes_per_live_record() on A after {round} \
                         round(s) of: delete {churn} random live records and insert {churn} \
                         new ones (two transactions), pump a Session pair to B until both \
                         are caught up (B acknowledges everything), then gc() on A and B; \
                         {n} live records"
                    ),
                ),
                floor: Figure::cost(
                    start.bytes_per_live_record(),
                    "bytes/record",
                    format!(
                        "the same figure on A after its {n} records were synced to B and \
                         GC ran, before any delete"
                    ),
                ),
                target: Some(Target { description, met }),
                details: details(json!({
                    "round": round,
                    "b_bytes_per_live_record": vb,
                    "b_before_any_delete": start_b,
                    "at_round": at[&round],
                    "before_any_delete": metadata_json(&start),
                })),
            });
        }
        Ok(rows)
    }
}

fn metadata_json(m: &blazedb::SyncMetadata) -> serde_json::Value {
    json!({
        "bytes_per_live_record": m.bytes_per_live_record(),
        "live_records": m.live_records,
        "tombstones": m.tombstones,
        "live_body_bytes": m.live_body_bytes,
        "tombstone_bytes": m.tombstone_bytes,
        "feed_rows": m.feed_rows,
        "feed_bytes": m.feed_bytes,
        "links": m.links,
        "link_bytes": m.link_bytes,
        "peer_bytes": m.peer_bytes,
    })
}

// ---- Files ----

/// A new, empty, unencrypted database.
fn fresh(ctx: &Ctx, name: &str) -> Result<Database> {
    let path = ctx.path(name, false);
    remove_db_files(&path)?;
    Ok(Database::open(&path, options(false))?)
}

/// Insert `bugs` ([`LOAD_TX_RECORDS`] per transaction), each with its 5 fields plus what
/// `extra(i)` adds; returns the ids in order.
fn insert_records(
    db: &Database,
    bugs: &[Bug],
    extra: impl Fn(usize) -> Option<(&'static str, Value)>,
) -> Result<Vec<RecordId>> {
    let mut ids = Vec::with_capacity(bugs.len());
    for (k, part) in bugs.chunks(LOAD_TX_RECORDS).enumerate() {
        db.transaction(|tx| {
            for (j, b) in part.iter().enumerate() {
                let fields = b.fields().into_iter().chain(extra(k * LOAD_TX_RECORDS + j));
                ids.push(tx.insert(COLLECTION, fields)?);
            }
            Ok(())
        })?;
    }
    Ok(ids)
}
