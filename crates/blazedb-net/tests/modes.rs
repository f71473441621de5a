//! Push-only and pull-only connections: a read-only replica receives everything and sends
//! nothing back, in a pair and along a chain.

mod common;

use blazedb::sync::SyncMode;
use blazedb::Value;
use blazedb_net::Topology;
use common::{count, open, CONVERGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_only_feeds_a_read_only_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    a.insert("c", [("x", 1)]).unwrap();
    let local = b.insert("c", [("only_b", 1)]).unwrap();
    // A pushes; B is a read-only replica of A.
    let c = topo.connect(na, nb, SyncMode::Push).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    a.insert("c", [("x", 2)]).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();

    assert_eq!(count(&b, "c"), 3, "B received A's writes");
    assert!(
        a.get("c", local).unwrap().is_none(),
        "B kept its write to itself"
    );
    let snap = topo.connection_snapshot(c).unwrap();
    assert_eq!(snap.b.stats.cells_sent, 0);
    assert_eq!(snap.a.stats.cells_received, 0);
    let r = topo.disconnect(c).await.unwrap();
    r.a.unwrap();
    r.b.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_only_receives_and_never_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let mine = a
        .insert("c", [("only_a", Value::from("stays here"))])
        .unwrap();
    b.insert("c", [("from_b", 1)]).unwrap();
    // A pulls from B: A is the read-only replica.
    let c = topo.connect(na, nb, SyncMode::Pull).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    b.insert("c", [("from_b", 2)]).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();

    assert_eq!(count(&a, "c"), 3, "A received B's writes");
    assert!(
        b.get("c", mine).unwrap().is_none(),
        "A's write did not leave A"
    );
    let snap = topo.connection_snapshot(c).unwrap();
    assert_eq!(snap.a.stats.cells_sent, 0);
    assert_eq!(snap.b.stats.cells_received, 0);
    topo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_replicas_downstream_of_a_chain() {
    // primary <-> mirror (both ways), mirror -> replica (push only).
    let dir = tempfile::tempdir().unwrap();
    let dbs: Vec<_> = ["primary", "mirror", "replica"]
        .iter()
        .map(|n| open(dir.path(), n))
        .collect();
    let topo = Topology::new();
    let n: Vec<_> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| topo.register(format!("{i}"), db.clone()))
        .collect();
    topo.connect(n[0], n[1], SyncMode::Both).unwrap();
    topo.connect(n[1], n[2], SyncMode::Push).unwrap();
    dbs[0].insert("c", [("v", 1)]).unwrap();
    let replica_local = dbs[2].insert("c", [("local", 1)]).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    assert_eq!(
        count(&dbs[2], "c"),
        2,
        "the primary's write reached the replica over two hops"
    );
    assert!(dbs[0].get("c", replica_local).unwrap().is_none());
    assert!(dbs[1].get("c", replica_local).unwrap().is_none());
    topo.shutdown().await;
}
