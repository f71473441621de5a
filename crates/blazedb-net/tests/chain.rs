//! A multi-hop chain of five: writes at either end travel hop by hop to the other end, and
//! a middle node's write reaches both ends.

mod common;

use std::sync::Arc;

use blazedb::{Database, Value};
use blazedb_net::Topology;
use common::{count, dump, fill, open, CONVERGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_travel_the_whole_chain_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::new();
    let dbs: Vec<Arc<Database>> = (0..5)
        .map(|i| open(dir.path(), &format!("hop{i}")))
        .collect();
    let nodes: Vec<_> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| topo.register(format!("hop{i}"), db.clone()))
        .collect();
    let conns = topo.connect_chain(&nodes).unwrap();
    assert_eq!(conns.len(), 4);

    let first = dbs[0].insert("c", [("from", Value::from("head"))]).unwrap();
    let last = dbs[4].insert("c", [("from", Value::from("tail"))]).unwrap();
    let middle = dbs[2]
        .insert("c", [("from", Value::from("middle"))])
        .unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    assert!(
        dbs[4].get("c", first).unwrap().is_some(),
        "head -> tail over four hops"
    );
    assert!(
        dbs[0].get("c", last).unwrap().is_some(),
        "tail -> head over four hops"
    );
    assert!(
        dbs[0].get("c", middle).unwrap().is_some() && dbs[4].get("c", middle).unwrap().is_some()
    );

    // A bulk load at the head (multi-frame units) arrives whole at the tail.
    let head = dbs[0].clone();
    tokio::task::spawn_blocking(move || fill(&head, "bulk", 5_000, 1_000, "head"))
        .await
        .unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(count(&dbs[4], "bulk"), 5_000);
    let reference = dump(&dbs[0]);
    for db in &dbs[1..] {
        assert_eq!(dump(db), reference);
    }
    for r in topo.shutdown().await {
        r.a.unwrap();
        r.b.unwrap();
    }
}
