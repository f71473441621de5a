//! Hub and spoke: four spokes connected only to a hub; a write on one spoke reaches every
//! other spoke through the hub, and writes on all spokes at once converge everywhere.

mod common;

use std::sync::Arc;

use blazedb::{Database, Value};
use blazedb_net::{NodeRole, Topology};
use common::{count, dump, fill, open, CONVERGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_spoke_reaches_all_others_through_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::new();
    let hub_db = open(dir.path(), "hub");
    let hub = topo.register_with_role("server", hub_db.clone(), NodeRole::Server);
    let spoke_dbs: Vec<Arc<Database>> = (0..4)
        .map(|i| open(dir.path(), &format!("spoke{i}")))
        .collect();
    let spokes: Vec<_> = spoke_dbs
        .iter()
        .enumerate()
        .map(|(i, db)| topo.register(format!("spoke{i}"), db.clone()))
        .collect();
    let conns = topo.connect_hub_and_spoke(hub, &spokes).unwrap();
    assert_eq!(conns.len(), 4);
    for c in &conns {
        let (x, y) = topo.endpoints(*c).unwrap();
        assert!(x == hub || y == hub, "every connection touches the hub");
    }

    let id = spoke_dbs[0]
        .insert("bugs", [("title", Value::from("crash on save"))])
        .unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    for db in spoke_dbs.iter().chain([&hub_db]) {
        let r = db
            .get("bugs", id)
            .unwrap()
            .expect("the write reached every node");
        assert_eq!(r.fields["title"], Value::from("crash on save"));
    }

    // Every spoke writes at once; all of it reaches everyone.
    let writers: Vec<_> = spoke_dbs
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let db = db.clone();
            tokio::task::spawn_blocking(move || fill(&db, "notes", 200, 20, &format!("spoke{i}")))
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    topo.wait_converged(CONVERGE).await.unwrap();
    for db in spoke_dbs.iter().chain([&hub_db]) {
        assert_eq!(count(db, "notes"), 800);
    }
    let reference = dump(&hub_db);
    for db in &spoke_dbs {
        assert_eq!(dump(db), reference);
    }
    for r in topo.shutdown().await {
        r.a.unwrap();
        r.b.unwrap();
    }
}
