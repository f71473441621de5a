//! A write through another handle on a node's file (a second `Database` on it, in this process
//! or another) reaches the node's peers at once, not with the next PING: the node's commit
//! listener does not hear of it, so the topology watches each node's file (a `HeadWatch`,
//! told of writes by the file system). Pings are an hour apart here, so only that watch can
//! deliver it in time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::{SessionConfig, SyncMode};
use blazedb::{Database, OpenOptions, Value};
use blazedb_net::{ConnectOptions, Topology};
use common::{open, CONVERGE};

/// Generous: this test proves the wake-up path, not its speed.
const BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_second_handle_reaches_the_peers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let second = Arc::new(Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap());
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let hour = 3_600_000;
    topo.connect_with(
        na,
        nb,
        ConnectOptions {
            mode: SyncMode::Both,
            session: SessionConfig {
                ping_interval_ms: hour,
                idle_timeout_ms: 2 * hour,
                ..SessionConfig::default()
            },
            ..ConnectOptions::default()
        },
    )
    .unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    assert_eq!(topo.file_watch_error(na), None, "no file-system watch here");

    for n in 0..5 {
        let started = Instant::now();
        let id = second.insert("notes", [("n", Value::Int(n))]).unwrap();
        while b.get("notes", id).unwrap().is_none() {
            assert!(
                started.elapsed() < BOUND,
                "write {n} through the second handle not on the peer after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // And the other way: the peer's write is read through the second handle.
    let id = b.insert("notes", [("from", Value::from("b"))]).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    assert!(second.get("notes", id).unwrap().is_some());
    topo.shutdown().await;
}
