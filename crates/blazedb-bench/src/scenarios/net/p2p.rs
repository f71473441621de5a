//! Peer to peer over TCP, as `blazedb listen DB --tcp ADDR --token T` on one side and
//! `blazedb sync DB tcp://ADDR --watch --token T` on the other: commit → applied, beside a raw
//! TCP ping-pong of a message of the same size.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use blazedb::sync::SessionConfig;
use blazedb::{Database, Patch, WatchItem};
use blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT;
use blazedb_net::transport::{connect, ConnectOptions, Endpoint, ListenConfig};
use blazedb_net::{listen, run_session, spawn_checkpointer, DriverOptions, SessionMonitor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::fanout::scratch;
use super::{floor, runtime, wait_until, NetSizes, RUNTIME_WORKERS, TOKEN};
use crate::report::{Figure, Outcome, Target};
use crate::scenarios::store::{
    details, insert_chunked, options, summary, COLLECTION, LOAD_CHUNK_RECORDS, WARMUP_OPS,
};
use crate::scenarios::{Ctx, Scenario};
use crate::workload::Generator;

/// Issue target: commit on one peer → applied on the other, median.
const P2P_P50_US_MAX: f64 = 300.0;
/// A commit that has not reached the other peer within this long fails the run.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// The initial copy may take this long.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// What the floor's ping-pong carries: the framed size of a one-field update in a warmed-up
/// session (the `sync_wire_update` target).
const FLOOR_MESSAGE_BYTES: usize = 48;

/// TCP peer to peer, commit → applied.
#[derive(Debug)]
pub(super) struct P2pTcp;

impl Scenario for P2pTcp {
    fn name(&self) -> &'static str {
        "net_p2p_tcp"
    }

    fn about(&self) -> &'static str {
        "TCP peer to peer (listen + sync --watch): commit → applied on the peer (µs)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = NetSizes::of(ctx.config.quick);
        let n = sizes.p2p_records;
        let m = sizes.p2p_commits;
        let dir = scratch(ctx, "net-p2p", encrypted)?;
        let open = |name: &str| -> Result<Arc<Database>> {
            Ok(Arc::new(Database::open(
                dir.join(format!("{name}.db")),
                options(encrypted),
            )?))
        };
        let (a, b) = (open("a")?, open("b")?);
        let bugs = Generator::new(ctx.config.seed ^ 0x9299, n).bugs(n);
        let ids = insert_chunked(&a, &bugs, LOAD_CHUNK_RECORDS)?;
        // The clock starts when A's commit is done (a listener registered before the
        // session's, on this thread), as in `sync_latency`.
        let committed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let listener_id = {
            let committed = committed.clone();
            let me = std::thread::current().id();
            a.on_commit(Arc::new(move || {
                if std::thread::current().id() == me {
                    *committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            }))
        };

        let rt = runtime()?;
        let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
        let _checkpoint = {
            let _g = rt.enter();
            spawn_checkpointer(a.clone(), every)
        };
        // B listens (its listener runs its own checkpointer), A connects and watches.
        let server = rt.block_on(listen(
            b.clone(),
            ListenConfig {
                tcp: Some("127.0.0.1:0".into()),
                token: Some(TOKEN.into()),
                ..ListenConfig::default()
            },
        ))?;
        let addr = server
            .tcp_addr()
            .context("the listener has no TCP address")?;
        let endpoint: Endpoint = format!("tcp://{addr}").parse()?;
        let stop = CancellationToken::new();
        let monitor = SessionMonitor::new();
        let session = {
            let (a, stop, monitor) = (a.clone(), stop.clone(), monitor.clone());
            rt.spawn(async move {
                let stream = connect(&endpoint, &ConnectOptions::default()).await?;
                let cfg = SessionConfig {
                    token: TOKEN.into(),
                    ..SessionConfig::default()
                };
                let opts = DriverOptions {
                    shutdown: stop,
                    monitor: Some(monitor),
                    ..DriverOptions::default()
                };
                Ok::<_, anyhow::Error>(run_session(a, stream, cfg, opts).await?)
            })
        };
        wait_until(
            SETUP_WAIT,
            Duration::from_millis(5),
            "the initial copy",
            || {
                if session.is_finished() {
                    bail!("the peer-to-peer session ended during the initial copy");
                }
                Ok(b.count(COLLECTION)? as usize == n && monitor.snapshot().caught_up)
            },
        )?;

        let watch = b.watch(COLLECTION, None, None)?;
        let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ 0x7C9);
        let mut samples = Vec::with_capacity(m);
        let stats_before = monitor.snapshot().stats;
        for k in 0..m + WARMUP_OPS {
            let id = ids[rng.gen_range(0..n)];
            a.update(
                COLLECTION,
                id,
                Patch::new().set("status", if k % 2 == 0 { "closed" } else { "open" }),
            )?;
            let t = committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .context("A's commit listener did not run")?;
            loop {
                match watch.recv_timeout(EVENT_WAIT) {
                    Some(WatchItem::Event(e)) if e.record.id == id => break,
                    Some(WatchItem::Event(_)) => {}
                    Some(WatchItem::Lagged(k)) => bail!("B's watch lagged by {k} events"),
                    None => bail!("a commit did not reach the peer within {EVENT_WAIT:?}"),
                }
            }
            if k >= WARMUP_OPS {
                samples.push(t.elapsed());
            }
        }
        let stats_after = monitor.snapshot().stats;
        a.remove_commit_listener(listener_id);
        stop.cancel();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), session)
                .await
                .context("the session did not end in time")?
                .context("session task")??;
            server.shutdown().await;
            Ok::<_, anyhow::Error>(())
        })?;
        drop(rt);
        let frames = (stats_after.frames_sent - stats_before.frames_sent) as f64;
        let bytes = (stats_after.bytes_sent - stats_before.bytes_sent) as f64;
        let floor = floor::ping_pong(m, WARMUP_OPS, FLOOR_MESSAGE_BYTES)?;
        let s = summary(&samples)?;
        let _ = std::fs::remove_dir_all(&dir);
        let extra = details(json!({
            "records": n,
            "commits": m,
            "warmup_commits": WARMUP_OPS,
            "a_frames_sent_per_commit": frames / (m + WARMUP_OPS) as f64,
            "a_bytes_sent_per_commit": bytes / (m + WARMUP_OPS) as f64,
            "floor_message_bytes": FLOOR_MESSAGE_BYTES,
            "runtime_workers": RUNTIME_WORKERS,
        }));
        let what = "Database::update (one field) on A, committed; from the end of A's commit \
                    until a Database::watch on B yields the event (B applied and committed it); \
                    B served by blazedb_net::listen (TCP, token), A connected with \
                    transport::connect(tcp://…) + run_session (as `blazedb sync … --watch`)";
        let floor_what = format!(
            "round trip of {FLOOR_MESSAGE_BYTES} B over a raw TCP socket (Nagle off) to an echo \
             thread and back"
        );
        let row = |pct: &str, v: f64, fv: f64, target: Option<f64>| Outcome {
            name: format!("net_p2p_tcp_{pct}"),
            scenario: "net_p2p_tcp",
            encrypted,
            blazedb: Figure::latency(v, "us", s.clone(), what),
            floor: Figure::latency(fv, "us", floor.clone(), floor_what.clone()),
            target: target.map(|max| Target {
                description: format!("{pct} ≤ {max:.0} us"),
                met: v <= max,
            }),
            details: extra.clone(),
        };
        Ok(vec![
            row("p50", s.p50_us, floor.p50_us, Some(P2P_P50_US_MAX)),
            row("p99", s.p99_us, floor.p99_us, None),
        ])
    }
}
