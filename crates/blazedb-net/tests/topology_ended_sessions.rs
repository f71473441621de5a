//! A topology wait gives up at once, naming the connection and why, when a session ended
//! before it was caught up (a policy the peer refuses, a session that cannot start); a
//! database cannot be connected to itself, registered twice, or to a copy of its file.

mod common;

use std::time::{Duration, Instant};

use blazedb::sync::{SyncMode, SyncPolicy};
use blazedb::Value;
use blazedb_net::{ConnectOptions, NetError, Topology};
use common::{count, open};

/// Long enough that giving up "at once" and waiting it out cannot be confused.
const WAIT: Duration = Duration::from_secs(10);

fn with_filter(filter: &str) -> ConnectOptions {
    ConnectOptions {
        mode: SyncMode::Push,
        second_policy: SyncPolicy {
            filter: Some(filter.into()),
            ..SyncPolicy::default()
        },
        ..ConnectOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_policy_fails_the_wait_with_the_peers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("notes", [("owner", Value::from("ann"))]).unwrap();
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    // A peer without token claims refuses a filter on them (INVALID_POLICY): both sessions
    // end, and B never receives the note.
    let c = topo
        .connect_with(na, nb, with_filter("owner == $auth.sub"))
        .unwrap();
    let started = Instant::now();
    let err = topo.wait_caught_up(WAIT).await.unwrap_err();
    assert!(started.elapsed() < WAIT / 2, "the wait ran out its time");
    let ended = err
        .ended_connection
        .clone()
        .expect("the connection is named");
    assert_eq!(ended.connection, c);
    assert_eq!(ended.nodes, ("a".to_string(), "b".to_string()));
    let message = err.to_string();
    assert!(
        message.contains("$auth") && message.contains("INVALID_POLICY"),
        "{message}"
    );
    assert_eq!(count(&b, "notes"), 0);
    assert!(topo.wait_converged(WAIT).await.is_err());
    topo.disconnect(c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_start_fails_the_wait_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a), topo.register("b", b));
    let c = topo
        .connect_with(na, nb, with_filter("((( not an expression"))
        .unwrap();
    let started = Instant::now();
    let err = topo.wait_caught_up(WAIT).await.unwrap_err();
    assert!(
        started.elapsed() < WAIT / 2,
        "the wait ran out its time: {err}"
    );
    let ended = err
        .ended_connection
        .clone()
        .expect("the connection is named");
    assert_eq!(ended.connection, c);
    let message = err.to_string();
    assert!(
        message.contains("cannot start the sync session"),
        "{message}"
    );
    let report = topo.disconnect(c).await.unwrap();
    assert!(matches!(report.b, Err(NetError::Database(_))), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cannot_be_connected_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    a.insert("notes", [("t", Value::from("hello"))]).unwrap();
    a.checkpoint().unwrap();
    std::fs::copy(dir.path().join("a.db"), dir.path().join("copy.db")).unwrap();
    let copy = open(dir.path(), "copy");
    let copy_node = copy.node_id();
    let topo = Topology::new();
    let na = topo.register("a", a.clone());
    let again = topo.register("a again", a.clone());
    let nc = topo.register("copy", copy);

    let refused = |r: Result<_, NetError>, names: (&str, &str)| match r {
        Err(NetError::SameDatabase { a: x, b: y, node }) => {
            assert_eq!((x.as_str(), y.as_str()), names);
            assert_eq!(node, a.node_id());
        }
        other => panic!("{names:?}: expected SameDatabase, got {other:?}"),
    };
    refused(topo.connect(na, na, SyncMode::Both), ("a", "a"));
    refused(topo.connect(na, again, SyncMode::Both), ("a", "a again"));
    assert!(topo.connections().is_empty(), "nothing was connected");
    // A copy of the file is a device of its own (its first open gave it a node id).
    assert_ne!(copy_node, a.node_id());
    topo.connect(nc, na, SyncMode::Push).unwrap();
}
