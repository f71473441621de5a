//! `/health` answers anyone, without a credential: it says status (and why, when not `ok`),
//! version (storage format, protocol), uptime, connected clients and store size, and nothing
//! of the relay's set-up — not its node id, its kind of authentication or whether rules are
//! in force; with its store deleted, not the store's path nor the relay's process id. The
//! operator reads those in the relay's log (`relay_started`, `store_gone`).

mod common;

use common::{http, TestRelay};

/// Every field `/health` has.
const FIELDS: [&str; 8] = [
    "connected_clients",
    "protocol",
    "reason",
    "status",
    "storage_format",
    "store_bytes",
    "uptime_s",
    "version",
];

fn fields(health: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = health.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_how_the_relay_is_not_who_it_is() {
    let relay = TestRelay::start(|_| {}).await;
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let j = h.json();
    // Before: `node`, `auth` and `rules` too.
    assert_eq!(fields(&j), FIELDS, "{j}");
    assert!(
        !h.body.contains(&relay.db.node_id().to_string()),
        "{}",
        h.body
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_is_reported_without_its_path_or_the_process() {
    let relay = TestRelay::start(|_| {}).await;
    let data = relay.dir.path().join("relay");
    std::fs::remove_dir_all(&data).unwrap();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.status, 503, "{}", h.body);
    let j = h.json();
    assert_eq!(j["status"], "failing", "{j}");
    assert_eq!(fields(&j), FIELDS, "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("was deleted") && reason.contains("the relay's log"),
        "says what happened and where to read on: {reason}"
    );
    // Before: "the store /tmp/.../relay/relay.db was deleted ... out of /proc/PID/fd".
    for leak in [&*relay.dir.path().to_string_lossy(), "relay.db", "/proc"] {
        assert!(!h.body.contains(leak), "{leak} in {}", h.body);
    }
    // Numbers elsewhere in the body (its size, the uptime) may hold the same digits.
    let pid = std::process::id().to_string();
    assert!(!reason.contains(&pid), "{reason}");
    relay.stop().await;
}
