//! 1,000 clients connected to a relay, one writer committing 100 changes per second: commit →
//! applied at every client, beside a raw TCP hub sending a message of the same size to as
//! many readers at the same rate.
//!
//! Each tick the writer inserts one record `{tick: k}` (a new record each time, so that no
//! tick's cell is overwritten before it travels). Each client has a watch on the collection
//! drained by a commit listener: the listener runs right after the client's apply commits, so
//! its clock reading is "applied here". The latency of tick `k` is the last client's reading
//! minus the end of the writer's commit.
//!
//! The relay and the writer's session each have threads of their own (they stand for
//! another process and another device); the 1,000 clients share the scenario's runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use blazedb::{Database, OpenOptions, Value, WatchItem};
use blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT;
use blazedb_net::spawn_checkpointer;
use serde_json::json;
use tokio::sync::Semaphore;

use super::clients::{LocalRelay, SyncClient};
use super::fanout::scratch;
use super::floor::Hub;
use super::{
    named_runtime, plain_only, raise_fd_limit, runtime, wait_until, NetSizes, RUNTIME_WORKERS,
};
use crate::report::{Figure, Outcome, Target};
use crate::scenarios::store::{details, summary, COLLECTION};
use crate::scenarios::{Ctx, Scenario};
use crate::stats::Summary;

/// Issue target: commit → applied at every client, 99th percentile.
const LATENCY_ALL_P99_MS_MAX: f64 = 50.0;
/// Descriptors per client: its SQLite file and WAL for each of its two connections (one for
/// checkpoints), the shared memory, its socket, and the relay's end of the connection (the
/// relay runs in this process).
const FDS_PER_CLIENT: u64 = 7;
/// Clients connecting at once.
const CONNECTS_IN_FLIGHT: usize = 64;
/// Connecting and the initial sync of every client may take this long.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// After the last tick, how long the last deliveries may take.
const DRAIN_WAIT: Duration = Duration::from_secs(20);
/// Events each client's watch buffers (drained on every commit).
const WATCH_CAPACITY: usize = 4096;
/// Ticks of the raw-socket floor (it needs fewer to show its distribution).
const FLOOR_TICKS_MAX: usize = 300;
/// What each client receives per tick, for the floor when the run measured nothing.
const FLOOR_MESSAGE_BYTES_DEFAULT: usize = 64;

/// One client's applied ticks: (tick, ns since the scenario's epoch when its apply committed).
type ArrivalLog = Arc<Mutex<Vec<(u32, u64)>>>;

/// Many clients, a slow steady writer.
#[derive(Debug)]
pub(super) struct Latency1000;

impl Scenario for Latency1000 {
    fn name(&self) -> &'static str {
        "net_latency_1000"
    }

    fn about(&self) -> &'static str {
        "1,000 clients on a relay, writer at 100 commits/s: commit → applied at every client"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if !plain_only(self.name(), encrypted) {
            return Ok(Vec::new());
        }
        let sizes = NetSizes::of(ctx.config.quick);
        let clients_n = sizes.latency_clients;
        let (fd_soft, fd_hard) = raise_fd_limit(clients_n as u64 * FDS_PER_CLIENT)?;
        let interval = Duration::from_micros(1_000_000 / sizes.latency_rate_per_s.max(1));
        let ticks = (sizes.latency_ms * sizes.latency_rate_per_s / 1_000) as usize;
        ensure!(ticks > 0, "the latency scenario has no ticks");
        let dir = scratch(ctx, "net-latency", false)?;
        let rt = runtime()?;
        let setup_start = Instant::now();
        let relay = LocalRelay::start(&dir.join("relay"))?;
        let open = |name: &str| -> Result<Arc<Database>> {
            Ok(Arc::new(Database::open(
                dir.join(format!("{name}.db")),
                OpenOptions::default(),
            )?))
        };
        let writer = open("writer")?;
        let epoch = Instant::now();
        let lagged = Arc::new(AtomicU64::new(0));
        // The relay's own store, watched like a client: where a tick's time goes (writer →
        // relay, relay → clients).
        let relay_log: ArrivalLog = Arc::new(Mutex::new(Vec::with_capacity(ticks)));
        {
            let watch = relay.db.watch(COLLECTION, None, Some(WATCH_CAPACITY))?;
            let (l, lag) = (relay_log.clone(), lagged.clone());
            relay.db.on_commit(Arc::new(move || {
                let at = epoch.elapsed().as_nanos() as u64;
                drain_ticks(&watch, &l, &lag, at);
            }));
        }
        // Per client: (tick, ns since epoch) of every event its applies produced.
        let mut logs: Vec<ArrivalLog> = Vec::with_capacity(clients_n);
        let mut dbs = Vec::with_capacity(clients_n);
        for i in 0..clients_n {
            let db = open(&format!("client-{i}"))?;
            let watch = db.watch(COLLECTION, None, Some(WATCH_CAPACITY))?;
            let log: Arc<Mutex<Vec<(u32, u64)>>> = Arc::new(Mutex::new(Vec::with_capacity(ticks)));
            let (l, lag) = (log.clone(), lagged.clone());
            db.on_commit(Arc::new(move || {
                let at = epoch.elapsed().as_nanos() as u64;
                drain_ticks(&watch, &l, &lag, at);
            }));
            logs.push(log);
            dbs.push(db);
        }
        // What `blazedb sync --watch` runs beside each session. Without it every client's WAL
        // grows through the run, into pages the kernel must first allocate and zero: the p99
        // was 2.3x worse without (3.4-3.7 s against 1.4-1.6 s, alternate runs 2026-12-04).
        let _checkpoints: Vec<_> = {
            let _g = rt.enter();
            let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
            std::iter::once(&writer)
                .chain(&dbs)
                .map(|db| spawn_checkpointer(db.clone(), every))
                .collect()
        };
        let opened = setup_start.elapsed();
        // The writer is another device: its session gets a thread of its own, as the relay
        // does. On the clients' runtime its sends waited behind their applies: commit →
        // held by the relay was 163 ms p50, 577 ms p99 (2026-12-04).
        let writer_rt = named_runtime("writer", 1)?;
        let w = writer_rt.block_on(SyncClient::connect(relay.addr, writer.clone()))?;
        let clients = rt.block_on(async {
            let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
            let tasks: Vec<_> = dbs
                .iter()
                .map(|db| {
                    let (db, gate, addr) = (db.clone(), gate.clone(), relay.addr);
                    tokio::spawn(async move {
                        let _p = gate.acquire().await?;
                        SyncClient::connect(addr, db).await
                    })
                })
                .collect();
            let mut clients = Vec::with_capacity(tasks.len());
            for t in tasks {
                clients.push(t.await.context("connect task")??);
            }
            Ok::<_, anyhow::Error>(clients)
        })?;
        wait_until(
            SETUP_WAIT,
            Duration::from_millis(10),
            "every client's session settling",
            || {
                for c in &clients {
                    c.check_alive()?;
                }
                Ok(clients.iter().all(|c| c.monitor.snapshot().caught_up))
            },
        )?;
        let setup = setup_start.elapsed();

        // The writer's commit times, stamped by a listener on this thread registered before
        // its session's (as in `sync_latency`).
        let committed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let me = std::thread::current().id();
        {
            let committed = committed.clone();
            writer.on_commit(Arc::new(move || {
                if std::thread::current().id() == me {
                    *committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            }));
        }
        let start = Instant::now();
        let mut commits = Vec::with_capacity(ticks);
        let mut behind_max = Duration::ZERO;
        for k in 0..ticks {
            let due = start + interval * k as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                behind_max = behind_max.max(now - due);
            }
            writer.insert(COLLECTION, [("tick", Value::Int(k as i64))])?;
            let t = committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .context("the writer's commit listener did not run")?;
            commits.push(t);
        }
        let wrote = start.elapsed();
        wait_until(
            DRAIN_WAIT,
            Duration::from_millis(10),
            "every tick reaching every client",
            || {
                for c in &clients {
                    c.check_alive()?;
                }
                Ok(logs
                    .iter()
                    .all(|l| l.lock().unwrap_or_else(|e| e.into_inner()).len() >= ticks))
            },
        )?;
        let w_stats = w.monitor.snapshot().stats;
        let sub_bytes: u64 = clients
            .iter()
            .map(|c| c.monitor.snapshot().stats.bytes_received)
            .sum::<u64>()
            / clients_n as u64;
        // Frames each way per client (a unit is one CHANGES frame here): how many ticks the
        // relay coalesced into one unit for a client that fell behind.
        let sub_frames_in: u64 = clients
            .iter()
            .map(|c| c.monitor.snapshot().stats.frames_received)
            .sum::<u64>()
            / clients_n as u64;
        let sub_frames_out: u64 = clients
            .iter()
            .map(|c| c.monitor.snapshot().stats.frames_sent)
            .sum::<u64>()
            / clients_n as u64;
        writer_rt.block_on(w.finish())?;
        rt.block_on(async {
            for c in clients {
                c.finish().await?;
            }
            relay.stop().await
        })?;

        // Every tick at every client, and per tick the first and the last client.
        let since_commit = |k: usize, at: u64| {
            (epoch + Duration::from_nanos(at)).saturating_duration_since(commits[k])
        };
        let mut first_ns = vec![u64::MAX; ticks];
        let mut last_ns = vec![0u64; ticks];
        let mut seen = vec![0usize; ticks];
        let mut each = Vec::with_capacity(ticks * clients_n);
        // Per apply at a client (its ticks share one commit time): how old its newest tick
        // was (the relay sent stale data?) and how long since that client's previous apply
        // (how often a client gets its turn).
        let mut newest_age = Vec::new();
        let mut apply_gap = Vec::new();
        for l in &logs {
            let log = l.lock().unwrap_or_else(|e| e.into_inner());
            let mut applies: Vec<(u64, usize)> = Vec::new();
            for &(k, at) in log.iter() {
                match applies.last_mut() {
                    Some((t, newest)) if *t == at => *newest = (*newest).max(k as usize),
                    _ => applies.push((at, k as usize)),
                }
            }
            for (i, &(at, newest)) in applies.iter().enumerate() {
                if newest < ticks {
                    newest_age.push(since_commit(newest, at));
                }
                if i > 0 {
                    apply_gap.push(Duration::from_nanos(at - applies[i - 1].0));
                }
            }
            for &(k, at) in log.iter() {
                let k = k as usize;
                if k >= ticks {
                    bail!("a client saw tick {k} of {ticks}");
                }
                seen[k] += 1;
                first_ns[k] = first_ns[k].min(at);
                last_ns[k] = last_ns[k].max(at);
                each.push(since_commit(k, at));
            }
        }
        if let Some(k) = seen.iter().position(|&s| s != clients_n) {
            bail!("tick {k} reached {} of {clients_n} clients", seen[k]);
        }
        let per_tick = |ns: &[u64]| -> Vec<Duration> {
            ns.iter()
                .enumerate()
                .map(|(k, &at)| since_commit(k, at))
                .collect()
        };
        let all = per_tick(&last_ns);
        let first = per_tick(&first_ns);
        let all_s = summary(&all)?;
        let to_relay: Vec<Duration> = relay_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, _)| (*k as usize) < ticks)
            .map(|&(k, at)| since_commit(k as usize, at))
            .collect();
        let to_relay_s = summary(&to_relay)?;
        let first_s = summary(&first)?;
        // The worst delivery of each second of ticks: shows whether the clients kept up
        // (flat) or fell behind (rising).
        let per_s = sizes.latency_rate_per_s.max(1) as usize;
        let worst_by_second_ms: Vec<f64> = all
            .chunks(per_s)
            .map(|c| c.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3))
            .collect();
        let each_s = summary(&each)?;
        let newest_age_s = summary(&newest_age)?;
        let apply_gap_s = summary(&apply_gap)?;

        // The floor: one message per tick through a raw TCP hub to as many readers.
        let floor_ticks = ticks.min(FLOOR_TICKS_MAX);
        let message_bytes = match sub_bytes as usize / ticks {
            0 => FLOOR_MESSAGE_BYTES_DEFAULT,
            b => b,
        };
        let floor_s = rt.block_on(async {
            let mut hub = Hub::start(clients_n, floor_ticks, message_bytes).await?;
            let start = Instant::now();
            let mut sent = Vec::with_capacity(floor_ticks);
            for k in 0..floor_ticks {
                tokio::time::sleep_until((start + interval * k as u32).into()).await;
                sent.push(hub.send(k, message_bytes).await?);
            }
            let last = hub.finish().await?;
            let lat: Vec<Duration> = last
                .iter()
                .zip(&sent)
                .map(|(l, s)| l.saturating_duration_since(*s))
                .collect();
            Summary::of(&lat).context("no floor ticks")
        })?;
        drop(rt);
        drop(dbs);
        let _ = std::fs::remove_dir_all(&dir);

        let extra = details(json!({
            "clients": clients_n,
            "ticks": ticks,
            "rate_per_s": sizes.latency_rate_per_s,
            "write_s": wrote.as_secs_f64(),
            "writer_behind_schedule_max_ms": behind_max.as_secs_f64() * 1e3,
            "worst_by_second_ms": worst_by_second_ms,
            "writer_to_relay_p50_ms": to_relay_s.p50_us / 1e3,
            "writer_to_relay_p99_ms": to_relay_s.p99_us / 1e3,
            "first_client_p50_ms": first_s.p50_us / 1e3,
            "first_client_p99_ms": first_s.p99_us / 1e3,
            "per_delivery_p50_ms": each_s.p50_us / 1e3,
            "per_delivery_p99_ms": each_s.p99_us / 1e3,
            "per_delivery_max_ms": each_s.max_us / 1e3,
            "applies_per_client": newest_age.len() as f64 / clients_n as f64,
            "apply_newest_tick_age_p50_ms": newest_age_s.p50_us / 1e3,
            "apply_newest_tick_age_p99_ms": newest_age_s.p99_us / 1e3,
            "apply_gap_p50_ms": apply_gap_s.p50_us / 1e3,
            "apply_gap_p99_ms": apply_gap_s.p99_us / 1e3,
            "watch_events_lagged": lagged.load(Ordering::Relaxed),
            "open_files_s": opened.as_secs_f64(),
            "setup_s": setup.as_secs_f64(),
            "writer_bytes_sent": w_stats.bytes_sent,
            "bytes_received_per_client": sub_bytes,
            "frames_received_per_client": sub_frames_in,
            "frames_sent_per_client": sub_frames_out,
            "floor_ticks": floor_ticks,
            "floor_message_bytes": message_bytes,
            "fd_limit_soft": fd_soft,
            "fd_limit_hard": fd_hard,
            "files": "plain (unencrypted) SQLite files, one per client, in a temporary directory; \
                      each checkpointed beside its session by spawn_checkpointer (every 1-8 s), \
                      as `blazedb sync --watch` does",
            "runtime_workers": RUNTIME_WORKERS,
            "relay": "in-process blazedb_relay::Relay on a runtime of its own (2 workers), as the `blazedb serve` process it stands for",
        }));
        let what = format!(
            "Database::insert of one 1-field record on the writer, {} per second for {} s; from \
             the end of the writer's commit until the last of {clients_n} clients (own file, own \
             WebSocket session to an in-process relay) had applied it (commit listener after \
             its apply)",
            sizes.latency_rate_per_s,
            sizes.latency_ms / 1_000
        );
        let floor_what = format!(
            "a {message_bytes}-byte message (what each client received per tick) written to a \
             raw TCP hub task at the same rate, {floor_ticks} ticks; until the last of \
             {clients_n} reader sockets read it"
        );
        let row = |pct: &str, v: f64, fv: f64, target: Option<f64>| Outcome {
            name: format!("net_latency_1000_{pct}"),
            scenario: "net_latency_1000",
            encrypted: false,
            blazedb: Figure::latency(v / 1e3, "ms", all_s.clone(), what.clone()),
            floor: Figure::latency(fv / 1e3, "ms", floor_s.clone(), floor_what.clone()),
            target: target.map(|max| Target {
                description: format!("{pct} ≤ {max:.0} ms at every client"),
                met: v / 1e3 <= max,
            }),
            details: extra.clone(),
        };
        Ok(vec![
            row("p50", all_s.p50_us, floor_s.p50_us, None),
            row(
                "p99",
                all_s.p99_us,
                floor_s.p99_us,
                Some(LATENCY_ALL_P99_MS_MAX),
            ),
        ])
    }
}

/// Move the watch's events into `log` as (tick, `at`) (a commit listener's work: `at` is
/// when the apply committed).
fn drain_ticks(watch: &blazedb::Watch, log: &Mutex<Vec<(u32, u64)>>, lagged: &AtomicU64, at: u64) {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(item) = watch.try_recv() {
        match item {
            WatchItem::Event(e) => {
                if let Some(Value::Int(k)) = e.record.fields.get("tick") {
                    l.push((*k as u32, at));
                }
            }
            WatchItem::Lagged(n) => {
                lagged.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}
