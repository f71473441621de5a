//! Two clients write the same fields of one record concurrently, then sync through the
//! relay: the relay records the overwrites as conflicts, and `conflicts_recorded_total` rises
//! by as many as it recorded (the `conflicts` gauge, which counts open rows until someone
//! resolves them on the relay's store, with it). An alert on the counter's rate clears once
//! the clients stop; one on the gauge never would.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::{Database, Patch, Value};
use common::{http, metric, open, Client, TestRelay, TOKEN};

/// Connect, sync until caught up both ways, and leave.
async fn sync_once(relay: &TestRelay, db: &Arc<Database>) {
    let c = Client::connect(relay, db.clone(), TOKEN).await;
    c.caught_up().await;
    c.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_raise_conflicts_recorded_by_the_number_recorded() {
    let relay = TestRelay::start(|_| {}).await;
    let x = relay
        .db
        .insert("notes", [("title", "first"), ("body", "first")])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    sync_once(&relay, &a).await;
    sync_once(&relay, &b).await;
    // (Not scraped yet: the gauge counts at the first scrape, then every
    // `CONFLICTS_REFRESH_MS`.)

    // Both change both fields while apart; `b` a little later, so its writes are the newer
    // (their clocks are the wall clock's) and win at the relay, which then records `a`'s
    // values as the losers of two conflicts. (The side whose write loses records a conflict:
    // a write of `b` losing there would be recorded at `b`.)
    a.update("notes", x, Patch::new().set("title", "a").set("body", "a"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.update("notes", x, Patch::new().set("title", "b").set("body", "b"))
        .unwrap();
    sync_once(&relay, &a).await;
    sync_once(&relay, &b).await;
    let stored = relay.db.get("notes", x).unwrap().unwrap();
    assert_eq!(stored.fields["title"], Value::from("b"));
    let recorded = relay.db.open_conflict_count().unwrap();
    assert_eq!(recorded, 2, "{:?}", relay.db.conflicts(None).unwrap());

    // The relay counts a session's last changes when its task ends, just after the client
    // left.
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if metric(&m, "blazedb_relay_conflicts_recorded_total") == Some(recorded as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&m, "blazedb_relay_conflicts_recorded_total"),
        Some(recorded as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "blazedb_relay_conflicts"),
        Some(recorded as f64),
        "{m}"
    );

    // Syncing again settles nothing new: the counter stays (the gauge would stay too, until
    // someone resolves the conflicts on the relay's store).
    sync_once(&relay, &a).await;
    sync_once(&relay, &b).await;
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        metric(&m, "blazedb_relay_conflicts_recorded_total"),
        Some(recorded as f64),
        "{m}"
    );
    assert_eq!(relay.db.open_conflict_count().unwrap(), recorded);
    relay.stop().await;
}
