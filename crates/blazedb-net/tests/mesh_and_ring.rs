//! Graphs with loops — a full mesh of four and a ring of five — converge, and once they
//! have, traffic stops: no cell ping-pongs around a loop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::{Database, Patch, Value};
use blazedb_net::{ConnectionHandle, NodeHandle, Topology};
use common::{count, fill, live_cells, open, CONVERGE};

/// How long a converged graph is watched for stray traffic.
const QUIET: Duration = Duration::from_millis(1500);

/// Generous size of one framed PING or PONG.
const KEEPALIVE_FRAME_BYTES_MAX: u64 = 64;

fn build(dir: &std::path::Path, n: usize) -> (Topology, Vec<Arc<Database>>, Vec<NodeHandle>) {
    let topo = Topology::new();
    let dbs: Vec<_> = (0..n).map(|i| open(dir, &format!("n{i}"))).collect();
    let nodes = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| topo.register(format!("n{i}"), db.clone()))
        .collect();
    (topo, dbs, nodes)
}

/// Every node writes records and edits one shared record; all converge; then the graph is
/// quiet and the total traffic is bounded by what a flood over each directed edge costs.
async fn converges_and_goes_quiet(
    topo: &Topology,
    dbs: &[Arc<Database>],
    conns: &[ConnectionHandle],
    flood: u64,
) {
    let shared = dbs[0].insert("shared", [("v", Value::Int(0))]).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();

    let per_node = 100;
    let writers: Vec<_> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                fill(&db, "items", per_node, 10, &format!("n{i}"));
                db.update(
                    "shared",
                    shared,
                    Patch::new().set("v", i as i64).increment("hits", 1),
                )
                .unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    topo.wait_converged(CONVERGE).await.unwrap();
    for db in dbs {
        assert_eq!(count(db, "items"), (per_node * dbs.len()) as u64);
        let r = db.get("shared", shared).unwrap().unwrap();
        assert_eq!(r.fields["hits"], Value::Int(dbs.len() as i64));
    }

    // No ping-pong: each cell version enters a node's feed once (a second arrival by another
    // path is a no-op) and a feed entry goes out at most once per session, never back to the
    // peer that delivered it. So a version crosses at most `flood` directed edges: its
    // origin's degree plus, for every other node, its degree minus one.
    let versions = live_cells(&dbs[0]) + dbs.len() as u64; // + the overwritten `v` versions
    let cells_sent: u64 = conns
        .iter()
        .map(|c| {
            let s = topo.connection_snapshot(*c).unwrap();
            s.a.stats.cells_sent + s.b.stats.cells_sent
        })
        .sum();
    assert!(
        cells_sent <= flood * versions,
        "{cells_sent} cells sent for {versions} cell versions (at most {flood} edges each)"
    );

    let before = topo.bytes_sent_total();
    tokio::time::sleep(QUIET).await;
    let after = topo.bytes_sent_total();
    // Nothing but keep-alives may move: at most a PING and a PONG per session end (pings
    // come every 5 s, so usually none at all).
    let keepalive_bytes = conns.len() as u64 * 2 * 2 * KEEPALIVE_FRAME_BYTES_MAX;
    assert!(
        after - before <= keepalive_bytes,
        "a converged graph kept sending: {before} -> {after} bytes"
    );
    for r in topo.shutdown().await {
        r.a.unwrap();
        r.b.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mesh_of_four_converges_without_ping_pong() {
    let dir = tempfile::tempdir().unwrap();
    let (topo, dbs, nodes) = build(dir.path(), 4);
    let conns = topo.connect_mesh(&nodes).unwrap();
    assert_eq!(conns.len(), 6);
    // Origin: 3 peers; each of the 3 others forwards to 2.
    converges_and_goes_quiet(&topo, &dbs, &conns, 3 + 3 * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_five_converges_without_ping_pong() {
    let dir = tempfile::tempdir().unwrap();
    let (topo, dbs, nodes) = build(dir.path(), 5);
    let conns = topo.connect_ring(&nodes).unwrap();
    assert_eq!(conns.len(), 5);
    // Origin: 2 neighbours; each of the 4 others forwards to 1.
    converges_and_goes_quiet(&topo, &dbs, &conns, 2 + 4).await;
}
