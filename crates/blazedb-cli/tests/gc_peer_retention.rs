//! `serve --peer-retention`: a client that synced once and never came back stops holding the
//! relay's GC once it has been away that long, and the relay's `gc` events name it once, when
//! it expires, not at every run after. Separate processes over real sockets.

mod net_common;

use std::path::Path;
use std::time::{Duration, Instant};

use net_common::{put, run_on, start_relay};

fn ok(args: &[&str], db: &Path) -> String {
    run_on(db, args).0
}

/// The relay's `gc` events so far.
fn gc_events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "gc")
        .collect()
}

/// How many of `events` name `node` as newly expired.
fn naming(events: &[serde_json::Value], node: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e["newly_expired"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == node)
        })
        .count()
}

#[test]
fn a_client_gone_past_the_peer_retention_stops_holding_gc_and_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("relay.log"));
    let (_relay, url) = start_relay(
        &data,
        &[
            "--token",
            "a-token-for-the-tests",
            "--gc-interval",
            "100ms",
            "--peer-retention",
            "1s",
        ],
        Some(&log),
    );
    let sync = |db: &Path| {
        ok(
            &["sync", &url, "--once", "--token", "a-token-for-the-tests"],
            db,
        )
    };
    let (gone, desk) = (dir.path().join("gone.db"), dir.path().join("desk.db"));
    let gone_node = {
        put(&gone, "notes", r#"{"text": "hello"}"#);
        sync(&gone);
        let stats: serde_json::Value = serde_json::from_str(&ok(&["stats"], &gone)).unwrap();
        stats["node_id"].as_str().unwrap().to_owned()
    };
    // The desk deletes records; only the client that never comes back has not seen it.
    sync(&desk);
    let id = put(&desk, "notes", r#"{"text": "short-lived"}"#);
    sync(&desk);
    ok(&["delete", "notes", &id], &desk);
    sync(&desk);

    let deadline = Instant::now() + Duration::from_secs(30);
    let purged = loop {
        let events = gc_events(&log);
        let purged: u64 = events
            .iter()
            .map(|e| e["tombstones_purged"].as_u64().unwrap())
            .sum();
        if purged > 0 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "the relay's GC never collected the delete: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(naming(&purged, &gone_node), 1, "{purged:?}");
    // Later runs do not list it again (the desk may expire meanwhile, and is listed once).
    std::thread::sleep(Duration::from_millis(800));
    let later = gc_events(&log);
    assert_eq!(naming(&later, &gone_node), 1, "{later:?}");
    assert!(
        later.iter().all(|e| e["expired_peers"].is_u64()),
        "{later:?}"
    );
}
