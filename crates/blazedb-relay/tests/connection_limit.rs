//! At `connections_max` open connections the relay answers further connections 503 at once
//! (a JSON error, nothing else read); when a connection closes, its slot is free again.

mod common;

use std::time::Duration;

use common::{
    connect_ws, connect_ws_from, connected_clients, http, metric, open, refused, wait_until,
    Client, TestRelay, TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503() {
    let relay = TestRelay::start(|c| c.limits.connections_max = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_clients(&relay, dir.path()).await;
    let (status, body) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(status, 503);
    assert_eq!(body["code"], "too_many_connections");

    a.finish().await.unwrap();
    // The slot comes back once the session has ended on the relay too.
    drop(connect_once_a_slot_is_free(&relay, "a slot was freed").await);
    b.finish().await.unwrap();
    assert_eq!(connected_clients(relay.addr, 0).await, 0);
    relay.stop().await;
}

/// With `connections_per_address_max`, one client address cannot take every slot: its next
/// connection gets 503 saying which limit and what to do, while another address is still
/// served; the refusal is counted, and the address's slot comes back when one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_at_its_limit_is_refused_while_others_are_served() {
    let relay = TestRelay::start(|c| c.limits.connections_per_address_max = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_clients(&relay, dir.path()).await;
    // Both clients came from 127.0.0.1.
    let (status, body) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(status, 503);
    assert_eq!(body["code"], "too_many_connections_from_address");
    let says = body["error"].as_str().unwrap();
    assert!(
        says.contains("holds 2 connections") && says.contains("--max-connections-per-address"),
        "{says}"
    );
    // Another address on this machine is served.
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let from_other = connect_ws_from(relay.addr, other, Some(TOKEN))
        .await
        .expect("another address gets a slot");

    a.finish().await.unwrap();
    drop(connect_once_a_slot_is_free(&relay, "the address's slot came back").await);
    drop(from_other);
    b.finish().await.unwrap();
    assert_eq!(connected_clients(relay.addr, 0).await, 0);
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        metric(
            &m,
            "blazedb_relay_connections_refused_total{limit=\"per_address\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "blazedb_relay_connections_refused_total{limit=\"total\"}"
        ),
        None
    );
    relay.stop().await;
}

/// Two clients connected to `relay`, their sessions open.
async fn two_clients(relay: &TestRelay, dir: &std::path::Path) -> (Client, Client) {
    let a = Client::connect(relay, open(dir, "a"), TOKEN).await;
    let b = Client::connect(relay, open(dir, "b"), TOKEN).await;
    wait_until(Duration::from_secs(5), || {
        a.monitor.snapshot().peer.is_some() && b.monitor.snapshot().peer.is_some()
    })
    .await;
    (a, b)
}

/// A WebSocket, retried for up to 2 s while a closed session's slot is released (`what`:
/// the assertion that it was).
async fn connect_once_a_slot_is_free(
    relay: &TestRelay,
    what: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    for _ in 0..100 {
        if let Ok(ws) = connect_ws(relay.addr, Some(TOKEN)).await {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: no slot within 2 s");
}
