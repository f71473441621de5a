//! Topology handles belong to their topology: another topology refuses them (no node or
//! connection of its own is addressed by mistake), and a graph helper given one bad handle
//! connects nothing.

mod common;

use blazedb::sync::SyncMode;
use blazedb_net::{NetError, Topology};
use common::open;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_of_another_topology_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (topo, other) = (Topology::new(), Topology::new());
    let a = topo.register("a", open(dir.path(), "a"));
    let b = topo.register("b", open(dir.path(), "b"));
    // The other topology's first two nodes sit at the same positions as a and b.
    let x = other.register("x", open(dir.path(), "x"));
    let y = other.register("y", open(dir.path(), "y"));
    let theirs = other.connect(x, y, SyncMode::Both).unwrap();
    let ours = topo.connect(a, b, SyncMode::Both).unwrap();

    assert!(topo.database(x).is_none());
    assert!(topo.name(x).is_none());
    assert!(matches!(
        topo.connect(a, y, SyncMode::Both),
        Err(NetError::UnknownHandle("node"))
    ));
    assert!(topo.endpoints(theirs).is_none());
    assert!(topo.connection_snapshot(theirs).is_none());
    assert!(
        !topo.sever(theirs),
        "another topology's handle cut our connection"
    );
    assert!(topo.disconnect(theirs).await.is_none());
    assert_eq!(
        topo.connections(),
        vec![ours],
        "our connection is untouched"
    );
    assert_eq!(topo.endpoints(ours), Some((a, b)));
    assert_eq!(other.endpoints(theirs), Some((x, y)));
    topo.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_helper_with_a_bad_handle_connects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (topo, other) = (Topology::new(), Topology::new());
    let nodes: Vec<_> = (0..3)
        .map(|i| topo.register(format!("n{i}"), open(dir.path(), &format!("n{i}"))))
        .collect();
    let foreign = other.register("foreign", open(dir.path(), "foreign"));
    let (hub, spokes) = (nodes[0], &nodes[1..]);

    let mut with_foreign = spokes.to_vec();
    with_foreign.push(foreign);
    let refused = [
        topo.connect_hub_and_spoke(hub, &with_foreign),
        topo.connect_mesh(&[nodes[0], nodes[1], nodes[2], foreign]),
        topo.connect_chain(&[nodes[0], nodes[1], nodes[2], foreign]),
        topo.connect_ring(&[nodes[0], nodes[1], nodes[2], foreign]),
    ];
    for r in refused {
        assert!(matches!(r, Err(NetError::UnknownHandle("node"))), "{r:?}");
    }
    // The same node twice: the pair that meets it is refused, and so is the whole mesh.
    let twice = topo.connect_mesh(&[nodes[0], nodes[1], nodes[2], nodes[0]]);
    assert!(
        matches!(twice, Err(NetError::SameDatabase { .. })),
        "{twice:?}"
    );
    assert!(
        topo.connections().is_empty(),
        "refused helpers left connections running: {:?}",
        topo.connections()
    );

    // The good part alone works.
    assert_eq!(topo.connect_hub_and_spoke(hub, spokes).unwrap().len(), 2);
    topo.shutdown().await;
}
