//! A lock on a database held longer than the idle timeout (an application's write
//! transaction, a `create_index` or a bulk import on a slow device) does not cut its sync
//! connections: the side waiting for its own database keeps pinging, and the wait does not
//! count as the peer's silence. A path that dies meanwhile is still found out, within the
//! idle timeout of the lock's release.

mod common;
mod transport_common;

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig, SyncMode};
use blazedb::{Database, Value};
use blazedb_net::transport::{connect, ConnectOptions as TransportOptions, ListenConfig};
use blazedb_net::{
    run_session, ConnectOptions, DriverOptions, Endpoint, NetError, SessionMonitor, Topology,
};
use common::{count, open, CONVERGE};
use transport_common::{listen_tcp, Proxy, TEST_LIMIT};

const PING_MS: u64 = 100;
const IDLE_MS: u64 = 500;
/// Three idle timeouts: without the pings, the peer gives up twice over.
const HOLD: Duration = Duration::from_millis(3 * IDLE_MS);
const LINGER_MS: u64 = 300;
/// Scheduling slack on a loaded two-core machine.
const SLACK_MS: u64 = 1_000;

fn heartbeats() -> SessionConfig {
    SessionConfig {
        ping_interval_ms: PING_MS,
        idle_timeout_ms: IDLE_MS,
        ..SessionConfig::default()
    }
}

/// Another thread opens a write transaction on `db`, writes one record in it and holds it for
/// `HOLD`; returns once the transaction holds the lock.
fn hold_in_transaction(db: &Arc<Database>) -> JoinHandle<()> {
    let (held_tx, held_rx) = mpsc::channel();
    let db = db.clone();
    let holder = std::thread::spawn(move || {
        db.transaction(|tx| {
            tx.insert("notes", [("held", Value::Int(1))])?;
            held_tx.send(()).unwrap();
            std::thread::sleep(HOLD);
            Ok(())
        })
        .unwrap()
    });
    held_rx.recv().unwrap();
    holder
}

async fn release(holder: JoinHandle<()>) {
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_past_the_idle_timeout_does_not_cut_a_topology_link() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let c = topo
        .connect_with(
            na,
            nb,
            ConnectOptions {
                mode: SyncMode::Both,
                session: heartbeats(),
                ..ConnectOptions::default()
            },
        )
        .unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();

    let holder = hold_in_transaction(&a);
    // B keeps writing: A's session has B's changes to apply and must wait for A's lock.
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < HOLD {
        b.insert("notes", [("from_b", Value::Int(written))])
            .unwrap();
        written += 1;
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
    }
    let during = topo.connection_snapshot(c).unwrap();
    release(holder).await;

    assert!(
        !during.a.ended && !during.b.ended,
        "the link was cut while A's lock was held: a: {:?}, b: {:?}",
        during.a.error,
        during.b.error
    );
    topo.wait_converged(CONVERGE).await.unwrap();
    let after = topo.connection_snapshot(c).unwrap();
    assert!(
        !after.a.ended && !after.b.ended,
        "a: {:?}, b: {:?}",
        after.a.error,
        after.b.error
    );
    assert_eq!(count(&a, "notes"), written as u64 + 1);
    assert_eq!(count(&b, "notes"), written as u64 + 1);
    for r in topo.shutdown().await {
        r.a.unwrap();
        r.b.unwrap();
    }
}

/// Over TCP through a proxy: the path dies while A waits for its lock. A has nothing from the
/// peer meanwhile but cannot tell until it reads again; it gives up within the idle timeout
/// of the release, with `TIMEOUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_dies_during_a_long_lock_wait_is_still_found_out() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                session: heartbeats(),
                linger_ms: LINGER_MS,
                ..ListenConfig::default()
            },
        )
        .await;
        let proxy = Proxy::start(listener.tcp_addr().unwrap(), None).await;
        let url: Endpoint = proxy.url().parse().unwrap();
        let stream = connect(&url, &TransportOptions::default()).await.unwrap();
        let monitor = SessionMonitor::new();
        let opts = DriverOptions {
            monitor: Some(monitor.clone()),
            linger_ms: LINGER_MS,
            ..DriverOptions::default()
        };
        let client = tokio::spawn(run_session(a.clone(), stream, heartbeats(), opts));
        monitor.subscribe().wait_for(|s| s.caught_up).await.unwrap();

        let holder = hold_in_transaction(&a);
        proxy.freeze();
        release(holder).await;
        let released_at = Instant::now();
        let bound = Duration::from_millis(IDLE_MS + LINGER_MS + SLACK_MS);
        let result = tokio::time::timeout(bound, client)
            .await
            .unwrap_or_else(|_| panic!("dead path not found out within {bound:?} of the release"))
            .unwrap();
        match result {
            Err(NetError::Sync { error, .. }) => {
                assert_eq!(error.code, ErrorCode::Timeout, "{error}");
                assert!(!error.remote, "detected here, not told");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(released_at.elapsed() <= bound);
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A session's own apply of a large unit (one transaction of a few hundred thousand cells,
/// applied whole) outlasting the idle timeout: the sender allows for it (the cells it has
/// not had acknowledged), and the receiver does not count the time it spent applying, when
/// it read nothing, as the sender's silence. Until 2026-12-07 the sender said "nothing
/// received" and cut a live peer off (API audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_a_unit_longer_than_the_idle_timeout_does_not_cut_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    // Synced once first, so the feed goes as a unit (an empty peer gets a snapshot).
    a.insert("c", [("n", Value::Int(-1))]).unwrap();
    let pair = |cfg: SessionConfig| {
        let (io_a, io_b) = tokio::io::duplex(1 << 16);
        let (a, b) = (a.clone(), b.clone());
        async move {
            tokio::join!(
                run_session(a, io_a, cfg.clone(), DriverOptions::once()),
                run_session(b, io_b, cfg, DriverOptions::once()),
            )
        }
    };
    let (ra, rb) = pair(SessionConfig::default()).await;
    ra.unwrap();
    rb.unwrap();
    let records = 50_000i64;
    a.transaction(|tx| {
        for i in 0..records {
            tx.insert("c", (0..5).map(|f| (format!("f{f}"), Value::Int(i))))?;
        }
        Ok(())
    })
    .unwrap();

    // An idle timeout well below the apply's time (~1 s here).
    let idle_ms = 100;
    let quick = SessionConfig {
        ping_interval_ms: idle_ms / 4,
        idle_timeout_ms: idle_ms,
        ..SessionConfig::default()
    };
    let started = Instant::now();
    let (ra, rb) = pair(quick).await;
    let took = started.elapsed();
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(count(&b, "c"), records as u64 + 1);
    assert_eq!(rb.stats.cells_applied, records as u64 * 6, "{rb:?}");
    assert!(ra.caught_up && rb.caught_up);
    // Otherwise the test shows nothing.
    assert!(
        took > Duration::from_millis(3 * idle_ms),
        "the apply took {took:?}, not longer than the idle timeout"
    );
}
