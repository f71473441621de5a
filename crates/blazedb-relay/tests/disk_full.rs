//! The relay's disk is full (its data directory on a small tmpfs, filled): new clients that
//! only read — pull mode, a selective view, a new replica with nothing to send — are served
//! (the relay cannot store what it notes about them, so that waits in memory); a client's
//! writes are refused with "the relay's disk is full"; `/health` says `degraded` with the
//! reason. Once space is freed, writes are taken again, `/health` is `ok`, and what waited
//! is stored. A session closed because the store could not take its writes counts as
//! `sessions_closed_total{reason="store_unavailable"}`.
//!
//! Needs root to mount the tmpfs (as CI runs); elsewhere the test says so and passes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::{ErrorCode, SessionConfig, SyncMode, SyncPolicy};
use blazedb::{Database, OpenOptions, Value};
use blazedb_net::ws::WsStream;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport};
use blazedb_test_disks::SmallDisk;
use common::{connect_ws, http, open, sessions_closed, wait_until, within, TestRelay, TOKEN};

/// One sync with the relay that ends once caught up.
async fn sync_once(
    relay: &TestRelay,
    db: &Arc<Database>,
    mode: SyncMode,
    policy: SyncPolicy,
) -> Result<SessionReport, NetError> {
    let ws = connect_ws(relay.addr, Some(TOKEN)).await.expect("connects");
    let cfg = SessionConfig {
        mode,
        policy,
        token: TOKEN.into(),
        ..SessionConfig::default()
    };
    within(
        Duration::from_secs(30),
        run_session(db.clone(), WsStream::new(ws), cfg, DriverOptions::once()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_full_disk_serves_readers_and_refuses_writes_saying_why() {
    let Some(disk) = SmallDisk::mount(16 << 20) else {
        return;
    };
    let data = disk.path("relay");
    let relay = TestRelay::start(|c| c.data_dir = data.clone()).await;
    for n in 0..200 {
        relay
            .db
            .insert(
                "bugs",
                [("n", Value::Int(n)), ("text", Value::from("x".repeat(200)))],
            )
            .unwrap();
    }
    // The write-ahead log truncated, as after a restart: it has no room left in it, so on a
    // full disk every write fails (with room in it, a small one may still fit).
    relay.db.vacuum().unwrap();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));

    disk.fill();

    // Before: 200 "ok".
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.status, 200, "readers are still served: {}", h.body);
    let j = h.json();
    assert_eq!(j["status"], "degraded", "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("is full") && reason.contains("Free space on that disk"),
        "{reason}"
    );

    // New clients that only read are served (before: each failed, "database or disk is
    // full", because the relay writes a note about a new peer).
    let dir = tempfile::tempdir().unwrap();
    let puller = open(dir.path(), "puller");
    sync_once(&relay, &puller, SyncMode::Pull, SyncPolicy::default())
        .await
        .expect("a pull client is served");
    assert_eq!(puller.count("bugs").unwrap(), 200);
    let selective = open(dir.path(), "selective");
    let view = SyncPolicy {
        collections: Some(vec!["bugs".into()]),
        filter: Some("n < 10".into()),
        exclude_fields: vec!["text".into()],
    };
    sync_once(&relay, &selective, SyncMode::Pull, view)
        .await
        .expect("a selective client is served");
    assert_eq!(selective.count("bugs").unwrap(), 10);
    let empty = open(dir.path(), "empty");
    sync_once(&relay, &empty, SyncMode::Both, SyncPolicy::default())
        .await
        .expect("a new replica with nothing to send is served");
    assert_eq!(empty.count("bugs").unwrap(), 200);

    // A client's writes are refused, saying whose disk is full.
    let writer = open(dir.path(), "writer");
    for n in 0..300 {
        writer
            .insert(
                "tasks",
                [
                    ("n", Value::Int(n)),
                    ("text", Value::from("y".repeat(1000))),
                ],
            )
            .unwrap();
    }
    let e = sync_once(&relay, &writer, SyncMode::Both, SyncPolicy::default())
        .await
        .expect_err("the relay cannot store the writes");
    let NetError::Sync { error, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(error.code, ErrorCode::StorageFull, "{e}");
    assert!(error.remote, "{e}");
    assert!(
        error.message.starts_with("the relay's disk is full")
            && error.message.contains("the client keeps them"),
        "{e}"
    );
    assert_eq!(relay.db.count("tasks").unwrap(), 0);
    assert_eq!(writer.count("tasks").unwrap(), 300, "the client keeps them");
    // The session closed for the store, not for a failure of the relay (`error`, which it
    // was filed under). The relay counts it as its task ends, just after the client saw it.
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if sessions_closed(&m, "store_unavailable") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sessions_closed(&m, "store_unavailable"), Some(1.0), "{m}");
    assert_eq!(sessions_closed(&m, "error"), Some(0.0), "{m}");

    // Space comes back: writes are taken again, and /health says so.
    disk.unfill();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));
    sync_once(&relay, &writer, SyncMode::Both, SyncPolicy::default())
        .await
        .expect("the writes are taken once there is room");
    wait_until(Duration::from_secs(10), || {
        relay.db.count("tasks").unwrap() == 300
    })
    .await;

    // What the relay noted about the readers while it could not write is in the file now:
    // another handle (as `blazedb peers` or GC by another process) sees them.
    relay.db.store_noted_cursors().unwrap();
    let other = Database::open(data.join("relay.db"), OpenOptions::default()).unwrap();
    let known: Vec<_> = other.peers().unwrap().iter().map(|p| p.node).collect();
    for reader in [&puller, &selective, &empty] {
        assert!(known.contains(&reader.node_id()), "{known:?}");
        assert_eq!(
            other.peer_note(reader.node_id(), "identity").unwrap(),
            Some("token".into()),
            "the node is bound to the identity it used"
        );
    }
    drop(other);
    relay.stop().await;
}
