//! Real time: a commit on A is readable on B shortly after, woken by the commit listener —
//! not by a timer (pings are set an hour apart here) and not by polling.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::{SessionConfig, SyncMode};
use blazedb::Value;
use blazedb_net::{ConnectOptions, Topology};
use common::{open, CONVERGE};
use tokio::sync::Notify;

/// Generous: this test proves the wake-up path, the benchmark harness measures its speed.
const BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_a_is_readable_on_b_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let hour = 3_600_000;
    let session = SessionConfig {
        ping_interval_ms: hour,
        idle_timeout_ms: 2 * hour,
        ..SessionConfig::default()
    };
    topo.connect_with(
        na,
        nb,
        ConnectOptions {
            mode: SyncMode::Both,
            session,
            ..ConnectOptions::default()
        },
    )
    .unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();

    // Any commit on either side wakes the checking loop below.
    let committed = Arc::new(Notify::new());
    let listeners: Vec<_> = [&a, &b]
        .iter()
        .map(|db| {
            let n = committed.clone();
            (
                db.on_commit(Arc::new(move || n.notify_waiters())),
                (*db).clone(),
            )
        })
        .collect();
    let mut latencies = Vec::new();
    for i in 0..50 {
        // Alternate directions: B -> A exercises the other driver's wake-up.
        let (src, dst) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let started = Instant::now();
        let id = src.insert("msgs", [("n", Value::Int(i))]).unwrap();
        loop {
            let notified = committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if dst.get("msgs", id).unwrap().is_some() {
                break;
            }
            let left = BOUND.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, notified).await;
            assert!(
                started.elapsed() < BOUND,
                "commit {i} not readable on the peer after {BOUND:?}"
            );
        }
        latencies.push(started.elapsed());
    }
    for (id, db) in listeners {
        db.remove_commit_listener(id);
    }
    latencies.sort();
    eprintln!(
        "commit -> readable on peer: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    topo.shutdown().await;
}
