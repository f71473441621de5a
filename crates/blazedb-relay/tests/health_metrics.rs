//! `GET /health` reports status, version (with the storage format and protocol), uptime,
//! connected clients and store size;
//! `GET /metrics` is OpenMetrics text whose counters follow the traffic (frames, bytes, cells
//! applied and forwarded, sessions by transport and close reason) and whose per-peer lag is
//! exported for at most `PEER_LAG_TOP_N` peers however many lag.

mod common;

use std::time::Duration;

use blazedb::sync::Message;
use blazedb::Seq;
use blazedb_relay::metrics::PEER_LAG_TOP_N;
use common::{
    connected_clients, http, metric, metric_sum, open, sessions_closed, wait_until, Client,
    RawClient, TestRelay, TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_metrics_follow_the_traffic() {
    let relay = TestRelay::start(|_| {}).await;
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-type"), Some("application/json"));
    let j = h.json();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(j["storage_format"], blazedb::limits::FORMAT_VERSION);
    assert_eq!(j["protocol"], blazedb::limits::PROTOCOL_VERSION);
    assert!(j["uptime_s"].is_u64());
    assert_eq!(j["connected_clients"], 0);
    assert!(j["store_bytes"].as_u64().unwrap() > 0);

    for i in 0..10 {
        relay
            .db
            .insert("notes", [("from", "relay"), ("i", &*i.to_string())])
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "client");
    for i in 0..7 {
        db.insert("notes", [("from", "client"), ("i", &*i.to_string())])
            .unwrap();
    }
    let c = Client::connect(&relay, db.clone(), TOKEN).await;
    c.caught_up().await;
    wait_until(Duration::from_secs(5), || {
        relay.db.count("notes").unwrap() == 17
    })
    .await;
    assert_eq!(connected_clients(relay.addr, 1).await, 1);

    let r = http(relay.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let m = r.body;
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    let v = |name: &str| metric(&m, name).unwrap_or_else(|| panic!("{name} missing in\n{m}"));
    assert_eq!(v("blazedb_relay_connections{transport=\"ws\"}"), 1.0);
    assert_eq!(v("blazedb_relay_clients_connected{transport=\"ws\"}"), 1.0);
    assert_eq!(v("blazedb_relay_sessions_total{transport=\"ws\"}"), 1.0);
    // 7 records × 3 cells (record + 2 fields) in, 10 × 3 out.
    assert_eq!(v("blazedb_relay_cells_applied_total"), 21.0);
    assert_eq!(v("blazedb_relay_cells_forwarded_total"), 30.0);
    assert!(v("blazedb_relay_frames_received_total") >= 3.0);
    assert!(v("blazedb_relay_frames_sent_total") >= 3.0);
    assert!(v("blazedb_relay_bytes_received_total") > 100.0);
    assert!(v("blazedb_relay_bytes_sent_total") > 100.0);
    assert_eq!(v("blazedb_relay_cells_restated_total"), 0.0);
    assert_eq!(v("blazedb_relay_rejected_writes_total"), 0.0);
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(0.0)
    );
    assert_eq!(v("blazedb_relay_conflicts"), 0.0);
    assert_eq!(v("blazedb_relay_conflicts_recorded_total"), 0.0);
    assert!(v("blazedb_relay_store_bytes") > 0.0);
    assert_eq!(v("blazedb_relay_peer_lag_commits_max"), 0.0);

    c.finish().await.unwrap();
    assert_eq!(connected_clients(relay.addr, 0).await, 0);
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(sessions_closed(&m, "peer_finished"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "blazedb_relay_connections{transport=\"ws\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "blazedb_relay_clients_connected{transport=\"ws\"}"),
        Some(0.0)
    );
    relay.stop().await;
}

/// Every series of a bounded label is there from the start, at 0 (they appeared at their
/// first event, which `increase()` then missed and a sum over the label lacked), and so is
/// every counter without labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_relay_exports_every_series_at_0() {
    let relay = TestRelay::start(|_| {}).await;
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    let families: [(&str, &str, &[&str]); 8] = [
        ("connections", "transport", &["ws", "tcp", "unix"]),
        ("clients_connected", "transport", &["ws", "tcp", "unix"]),
        ("sessions_total", "transport", &["ws", "tcp", "unix"]),
        (
            "sessions_closed_total",
            "reason",
            &[
                "peer_finished",
                "disconnected",
                "shutdown",
                "auth_failed",
                "auth_rate_limited",
                "rate_limited",
                "timeout",
                "protocol_error",
                "store_unavailable",
                "error",
            ],
        ),
        (
            "auth_failures_total",
            "kind",
            &[
                "invalid",
                "expired",
                "claims",
                "node_owner",
                "client_certificate",
            ],
        ),
        (
            "connections_refused_total",
            "limit",
            &["total", "per_address"],
        ),
        (
            "requests_refused_total",
            "reason",
            &[
                "auth_failed",
                "auth_rate_limited",
                "origin_not_allowed",
                "host_not_allowed",
                "body_too_large",
                "body_timeout",
                "invalid_request",
                "invalid_expression",
                "busy",
            ],
        ),
        (
            "gc_failures_total",
            "cause",
            &["store_gone", "disk_full", "store_read_only", "error"],
        ),
    ];
    for (family, label, values) in families {
        for value in values {
            let series = format!("blazedb_relay_{family}{{{label}=\"{value}\"}}");
            assert_eq!(metric(&m, &series), Some(0.0), "{series} in\n{m}");
        }
        let name = format!("blazedb_relay_{family}");
        let series = m
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count();
        assert_eq!(series, values.len(), "{name}: no other series in\n{m}");
    }
    for name in [
        "frames_received_total",
        "frames_sent_total",
        "bytes_received_total",
        "bytes_sent_total",
        "cells_applied_total",
        "cells_forwarded_total",
        "cells_restated_total",
        "rejected_writes_total",
        "conflicts_recorded_total",
        "conflicts",
        "store_status",
        "peer_lag_commits_max",
        "peers_lagging",
    ] {
        let name = format!("blazedb_relay_{name}");
        assert_eq!(metric(&m, &name), Some(0.0), "{name} in\n{m}");
    }
    // Not 0: the scrape's own connection holds a slot, and the limit is the default.
    assert_eq!(
        metric(&m, "blazedb_relay_connection_slots_used"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "blazedb_relay_connection_slots_max"),
        Some(blazedb_relay::limits::CONNECTIONS_MAX_DEFAULT as f64),
        "{m}"
    );
    relay.stop().await;
}

/// A client that vanishes without a WebSocket close frame (killed process, closed tab) is a
/// disconnection, as on raw TCP, not a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_vanishes_is_counted_as_disconnected() {
    let relay = TestRelay::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let c = Client::connect(&relay, open(dir.path(), "client"), TOKEN).await;
    c.caught_up().await;
    c.task.abort();
    assert_eq!(connected_clients(relay.addr, 0).await, 0);
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(sessions_closed(&m, "disconnected"), Some(1.0), "{m}");
    assert_eq!(
        sessions_closed(&m, "protocol_error").unwrap_or(0.0),
        0.0,
        "{m}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_lag_has_bounded_cardinality() {
    let relay = TestRelay::start(|_| {}).await;
    for i in 0..5 {
        relay.db.insert("notes", [("i", i)]).unwrap();
    }
    let head = relay.db.last_seq().unwrap();
    // Clients that subscribe and never acknowledge: each lags the whole feed.
    let n = PEER_LAG_TOP_N + 2;
    let mut lagging = Vec::new();
    for _ in 0..n {
        let mut c = RawClient::connect(relay.addr).await;
        let node = c.hello().await;
        c.send(&Message::Subscribe {
            from: Seq(0),
            policy: Default::default(),
            snapshot: Default::default(),
            acked: Seq(0),
        })
        .await
        .unwrap();
        lagging.push((c, node));
    }
    assert_eq!(connected_clients(relay.addr, n as u64).await, n as u64);
    // Sessions publish their state after each step: under load the last ones may not have
    // been seen yet at the first scrape.
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if metric(&m, "blazedb_relay_peers_lagging") == Some(n as f64) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let series = m
        .lines()
        .filter(|l| l.starts_with("blazedb_relay_peer_lag_commits{"))
        .count();
    assert_eq!(series, PEER_LAG_TOP_N, "{m}");
    assert_eq!(
        metric(&m, "blazedb_relay_peers_lagging"),
        Some(n as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "blazedb_relay_peer_lag_commits_max"),
        Some(head.0 as f64)
    );
    drop(lagging);
    relay.stop().await;
}
