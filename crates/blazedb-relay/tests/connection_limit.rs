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
    let a = Client::connect(&relay, open(dir.path(), "a"), TOKEN).await;
    let b = Client::connect(&relay, open(dir.path(), "b"), TOKEN).await;
    wait_until(Duration::from_secs(5), || {
        a.monitor.snapshot().peer.is_some() && b.monitor.snapshot().peer.is_some()
    })
    .await;
    let (status, body) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(status, 503);
    assert_eq!(body["code"], "too_many_connections");

    a.finish().await.unwrap();
    // The slot comes back once the session has ended on the relay too.
    let mut third = None;
    for _ in 0..100 {
        if let Ok(ws) = connect_ws(relay.addr, Some(TOKEN)).await {
            third = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "a slot was freed");
    drop(third);
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
    let a = Client::connect(&relay, open(dir.path(), "a"), TOKEN).await;
    let b = Client::connect(&relay, open(dir.path(), "b"), TOKEN).await;
    wait_until(Duration::from_secs(5), || {
        a.monitor.snapshot().peer.is_some() && b.monitor.snapshot().peer.is_some()
    })
    .await;
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
    let mut again = None;
    for _ in 0..100 {
        if let Ok(ws) = connect_ws(relay.addr, Some(TOKEN)).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the address's slot came back");
    drop(again);
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
