//! A hub registered as `NodeRole::Server` acts as a server: where a collection's policy gives
//! the server priority, the hub's value wins over a spoke's newer concurrent write, without
//! the application also calling `Database::set_server_role`. The role lasts while the
//! topology holds the node, and a role the application set itself is left alone.

mod common;

use std::time::Duration;

use blazedb::sync::SyncMode;
use blazedb::{CollectionPolicy, Patch, Value};
use blazedb_net::{NodeRole, Topology};
use common::{open, CONVERGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_node_keeps_its_value_where_the_policy_gives_it_priority() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, spoke) = (open(dir.path(), "hub"), open(dir.path(), "spoke"));
    hub.set_policy(
        "bugs",
        CollectionPolicy {
            server_priority: true,
            ..CollectionPolicy::default()
        },
    )
    .unwrap();
    let id = hub
        .insert("bugs", [("state", Value::from("open"))])
        .unwrap();
    assert!(!hub.is_server());

    let topo = Topology::new();
    let h = topo.register_with_role("hub", hub.clone(), NodeRole::Server);
    let s = topo.register("spoke", spoke.clone());
    assert!(hub.is_server(), "registering as a server gives the role");
    let c = topo.connect(h, s, SyncMode::Both).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    topo.disconnect(c).await.unwrap();

    // Concurrent writes while apart; the spoke's is the newer.
    hub.update("bugs", id, Patch::new().set("state", "triaged"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    spoke
        .update("bugs", id, Patch::new().set("state", "closed by spoke"))
        .unwrap();
    topo.connect(h, s, SyncMode::Both).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    for (name, db) in [("hub", &hub), ("spoke", &spoke)] {
        let state = db.get("bugs", id).unwrap().unwrap().fields["state"].clone();
        assert_eq!(state, Value::from("triaged"), "on the {name}");
    }
    topo.shutdown().await;
    drop(topo);
    assert!(!hub.is_server(), "the role outlived the topology");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_set_by_the_application_or_held_elsewhere_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, hub) = (open(dir.path(), "relay"), open(dir.path(), "hub"));
    relay.set_server_role(true);
    let (first, second) = (Topology::new(), Topology::new());
    first.register_with_role("relay", relay.clone(), NodeRole::Server);
    first.register_with_role("hub", hub.clone(), NodeRole::Server);
    second.register_with_role("hub", hub.clone(), NodeRole::Server);
    drop(first);
    assert!(
        relay.is_server(),
        "the application's own setting was undone"
    );
    assert!(
        hub.is_server(),
        "another topology still holds the hub as a server"
    );
    drop(second);
    assert!(!hub.is_server());
    // As a peer, a node's role is its database's.
    let third = Topology::new();
    third.register("relay", relay.clone());
    drop(third);
    assert!(relay.is_server());
}
