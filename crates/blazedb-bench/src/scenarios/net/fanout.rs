//! One writer → relay → N subscribers over WebSockets: field changes per second delivered to
//! every subscriber, beside a raw TCP hub forwarding the same frames.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use blazedb::{Database, Patch, PeerDirection, RecordId};
use blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT;
use blazedb_net::spawn_checkpointer;
use serde_json::json;
use tokio::runtime::Runtime;

use super::clients::{LocalRelay, SyncClient};
use super::floor::Hub;
use super::{runtime, wait_until, NetSizes, RUNTIME_WORKERS};
use crate::report::{Figure, Outcome, Target};
use crate::scenarios::store::{
    details, insert_chunked, options, remove_db_files, COLLECTION, LOAD_CHUNK_RECORDS,
};
use crate::scenarios::{Ctx, Scenario};
use crate::stats::rate_per_s;
use crate::workload::Generator;

/// Issue target: field changes per second delivered to every subscriber.
const FANOUT_CHANGES_PER_S_MIN: f64 = 100_000.0;
/// Connecting and the initial copy of the records to every subscriber (untimed).
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// After the writer's last commit, how long delivery may take before the run fails.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// How often the bench thread checks the relay's and the subscribers' cursors.
const POLL: Duration = Duration::from_millis(1);

/// Writer → relay → subscribers.
#[derive(Debug)]
pub(super) struct Fanout;

impl Scenario for Fanout {
    fn name(&self) -> &'static str {
        "net_fanout"
    }

    fn about(&self) -> &'static str {
        "1 writer → relay (WebSocket) → 10 subscribers: field changes/s applied by all"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = NetSizes::of(ctx.config.quick);
        let params = Params::of(&sizes, ctx.config.seed);
        let dir = scratch(ctx, "net-fanout", encrypted)?;
        let rt = runtime()?;
        let run = measure(&rt, &dir, &params, encrypted)?;
        // The floor: the frames each subscriber received (count and mean size, WebSocket
        // framing aside), through a hub to as many readers.
        let frames = run.sub_frames.max(1) as usize;
        let frame_bytes = (run.sub_bytes / run.sub_frames.max(1)) as usize;
        let floor_time = rt.block_on(async {
            let mut hub = Hub::start(params.subscribers, frames, frame_bytes).await?;
            let start = Instant::now();
            hub.send_all(frames, frame_bytes).await?;
            let last = hub.finish().await?;
            Ok::<_, anyhow::Error>(last.iter().max().map_or(Duration::ZERO, |t| *t - start))
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        let rate = run.rate();
        let floor_rate = rate_per_s(params.changes, floor_time);
        Ok(vec![Outcome {
            name: "net_fanout".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::rate(rate, "changes/s", run.what(&params)),
            floor: Figure::rate(
                floor_rate,
                "changes/s",
                format!(
                    "{} changes / time for a raw TCP hub task to forward {frames} length-prefixed \
                     messages of {frame_bytes} B (what each subscriber received: count and mean \
                     size) from a writer socket to {} reader sockets, until the last reader \
                     read the last byte",
                    params.changes, params.subscribers
                ),
            ),
            target: Some(Target {
                description: format!(
                    "≥ {:.0}k changes/s to every subscriber",
                    FANOUT_CHANGES_PER_S_MIN / 1e3
                ),
                met: rate >= FANOUT_CHANGES_PER_S_MIN,
            }),
            details: details(run.details(&params, floor_time)),
        }])
    }
}

/// The workload, shared with `net_peer_yjs`.
#[derive(Clone, Debug)]
pub(super) struct Params {
    pub subscribers: usize,
    pub records: usize,
    pub changes: usize,
    pub tx_records: usize,
    pub seed: u64,
}

impl Params {
    pub(super) fn of(sizes: &NetSizes, seed: u64) -> Params {
        Params {
            subscribers: sizes.subscribers,
            records: sizes.fanout_records,
            changes: sizes.fanout_changes,
            tx_records: sizes.fanout_tx_records.clamp(1, sizes.fanout_records),
            seed,
        }
    }
}

/// What one fan-out run measured.
#[derive(Debug)]
pub(super) struct Run {
    /// Field changes the writer committed.
    changes: usize,
    /// From the writer's first commit until the last subscriber held everything.
    pub elapsed: Duration,
    write: Duration,
    relay_done: Duration,
    subs_done: Vec<Duration>,
    setup: Duration,
    /// Mean per subscriber, during the timed part.
    sub_bytes: u64,
    sub_frames: u64,
    writer_bytes: u64,
    writer_frames: u64,
    cells_applied_min: u64,
}

impl Run {
    pub(super) fn rate(&self) -> f64 {
        rate_per_s(self.changes, self.elapsed)
    }

    pub(super) fn what(&self, p: &Params) -> String {
        format!(
            "{} field changes (transactions of {} records × 1 field, Tx::update, as fast as \
             the writer commits) / time from the writer's first commit until each of {} \
             subscribers (own file, own WebSocket session to an in-process relay with the \
             default limits of `blazedb serve`) had applied all of them (its cursor of the \
             relay's feed reached the relay's head)",
            p.changes, p.tx_records, p.subscribers
        )
    }

    pub(super) fn details(&self, p: &Params, floor_time: Duration) -> serde_json::Value {
        json!({
            "records": p.records,
            "changes": p.changes,
            "records_per_transaction": p.tx_records,
            "subscribers": p.subscribers,
            "writer_commit_s": self.write.as_secs_f64(),
            "writer_commit_changes_per_s": rate_per_s(p.changes, self.write),
            "relay_holds_all_s": self.relay_done.as_secs_f64(),
            "every_subscriber_holds_all_s": self.elapsed.as_secs_f64(),
            "subscriber_done_s": self.subs_done.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "setup_and_initial_copy_s": self.setup.as_secs_f64(),
            "bytes_per_subscriber": self.sub_bytes,
            "frames_per_subscriber": self.sub_frames,
            "bytes_per_change_to_a_subscriber": self.sub_bytes as f64 / p.changes as f64,
            "writer_to_relay_bytes": self.writer_bytes,
            "writer_to_relay_frames": self.writer_frames,
            "cells_applied_by_slowest_subscriber": self.cells_applied_min,
            "floor_s": floor_time.as_secs_f64(),
            "runtime_workers": RUNTIME_WORKERS,
            "relay": "in-process blazedb_relay::Relay on a runtime of its own (2 workers), as the `blazedb serve` process it stands for",
        })
    }
}

/// A fresh scratch directory for a scenario's files.
pub(super) fn scratch(ctx: &Ctx, name: &str, encrypted: bool) -> Result<std::path::PathBuf> {
    let dir = ctx.path(name, encrypted).with_extension("d");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn open(dir: &Path, name: &str, encrypted: bool) -> Result<Arc<Database>> {
    let path = dir.join(format!("{name}.db"));
    remove_db_files(&path)?;
    Ok(Arc::new(Database::open(&path, options(encrypted))?))
}

/// Run the fan-out workload once: set up (untimed), commit, wait for every subscriber.
pub(super) fn measure(rt: &Runtime, dir: &Path, p: &Params, encrypted: bool) -> Result<Run> {
    let setup_start = Instant::now();
    let relay = LocalRelay::start(&dir.join("relay"))?;
    let writer = open(dir, "writer", encrypted)?;
    let bugs = Generator::new(p.seed ^ 0xFA0, p.records).bugs(p.records);
    let ids: Vec<RecordId> = insert_chunked(&writer, &bugs, LOAD_CHUNK_RECORDS)?;
    let subs: Vec<Arc<Database>> = (0..p.subscribers)
        .map(|i| open(dir, &format!("sub-{i}"), encrypted))
        .collect::<Result<_>>()?;
    let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
    let _checkpoints: Vec<_> = {
        let _g = rt.enter();
        std::iter::once(&writer)
            .chain(&subs)
            .map(|db| spawn_checkpointer(db.clone(), every))
            .collect()
    };
    let connect_all = || {
        rt.block_on(async {
            let w = SyncClient::connect(relay.addr, writer.clone()).await?;
            let mut clients = Vec::with_capacity(subs.len());
            for db in &subs {
                clients.push(SyncClient::connect(relay.addr, db.clone()).await?);
            }
            Ok::<_, anyhow::Error>((w, clients))
        })
    };
    let finish_all = |w: SyncClient, clients: Vec<SyncClient>| {
        rt.block_on(async {
            let w = w.finish().await?;
            let mut reports = Vec::with_capacity(clients.len());
            for c in clients {
                reports.push(c.finish().await?);
            }
            Ok::<_, anyhow::Error>((w, reports))
        })
    };
    // Wait until the relay holds all the writer committed, then every subscriber all the
    // relay holds; returns when each happened, measured from `start`.
    let wait_all = |w: &SyncClient,
                    clients: &[SyncClient],
                    what: &str,
                    limit: Duration,
                    start: Instant|
     -> Result<(Duration, Vec<Duration>)> {
        let wnode = writer.node_id();
        let head = writer.last_seq()?;
        wait_until(
            limit,
            POLL,
            &format!("{what}: the relay holding the writer's commits"),
            || {
                w.check_alive()?;
                Ok(relay.db.peer_cursor(wnode, PeerDirection::Received)? >= head)
            },
        )?;
        let relay_done = start.elapsed();
        let relay_head = relay.db.last_seq()?;
        let mut done = vec![None; clients.len()];
        wait_until(
            limit,
            POLL,
            &format!("{what}: every subscriber catching up"),
            || {
                for (c, d) in clients.iter().zip(done.iter_mut()) {
                    if d.is_none() {
                        c.check_alive()?;
                        if c.holds(&relay.db, relay_head)? {
                            *d = Some(start.elapsed());
                        }
                    }
                }
                Ok(done.iter().all(Option::is_some))
            },
        )?;
        Ok((relay_done, done.into_iter().flatten().collect()))
    };
    // The initial copy in sessions of their own, so that the timed sessions' counters hold
    // the timed traffic only.
    let (w, clients) = connect_all()?;
    wait_all(&w, &clients, "initial copy", SETUP_WAIT, setup_start)?;
    finish_all(w, clients)?;
    for s in &subs {
        ensure!(
            s.count(COLLECTION)? as usize == p.records,
            "a subscriber did not receive every record"
        );
    }
    let (w, clients) = connect_all()?;
    wait_all(&w, &clients, "reconnect", SETUP_WAIT, setup_start)?;
    let setup = setup_start.elapsed();

    // Timed: the writer commits, then the bench thread watches the cursors.
    let start = Instant::now();
    let mut written = 0usize;
    let mut t = 0usize;
    while written < p.changes {
        let per = p.tx_records.min(p.changes - written);
        let v = t as i64 + 11;
        writer.transaction(|tx| {
            for k in 0..per {
                let id = ids[(written + k) % p.records];
                tx.update(COLLECTION, id, Patch::new().set("priority", v))?;
            }
            Ok(())
        })?;
        written += per;
        t += 1;
    }
    let write = start.elapsed();
    let (relay_done, subs_done) = wait_all(&w, &clients, "delivery", DRAIN_WAIT, start)?;
    let elapsed = subs_done
        .iter()
        .max()
        .copied()
        .unwrap_or_else(|| start.elapsed());
    let last = ids[(p.changes - 1) % p.records];
    for s in &subs {
        let got = s.get(COLLECTION, last)?;
        ensure!(
            got.and_then(|r| r.fields.get("priority").cloned())
                == Some(blazedb::Value::Int(t as i64 + 10)),
            "a subscriber does not hold the writer's last write"
        );
    }
    let (w_report, reports) = finish_all(w, clients)?;
    rt.block_on(relay.stop())?;
    let n = reports.len().max(1) as u64;
    let sub_bytes = reports.iter().map(|r| r.stats.bytes_received).sum::<u64>() / n;
    let sub_frames = reports.iter().map(|r| r.stats.frames_received).sum::<u64>() / n;
    let cells_applied_min = reports
        .iter()
        .map(|r| r.stats.cells_applied)
        .min()
        .unwrap_or(0);
    Ok(Run {
        changes: written,
        elapsed,
        write,
        relay_done,
        subs_done,
        setup,
        sub_bytes,
        sub_frames,
        writer_bytes: w_report.stats.bytes_sent,
        writer_frames: w_report.stats.frames_sent,
        cells_applied_min,
    })
}
