//! At `connections_max` open connections the relay answers further connections 503 at once
//! (a JSON error, nothing else read), except `/health` and `/metrics` on a few reserved
//! connections; when a connection closes, its slot is free again. An idle keep-alive HTTP
//! connection gives its slot back within `HTTP_KEEPALIVE_IDLE_MS`.

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
    // At the limit the relay can still be seen: a few connections beyond it are kept for
    // `/health` and `/metrics` (they were refused with everyone else), and only for them.
    let health = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let m = http(relay.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(
        metric(
            &m.body,
            "blazedb_relay_connections_refused_total{limit=\"total\"}"
        ),
        Some(1.0),
        "only the WebSocket was refused: {}",
        m.body
    );
    let q = http(relay.addr, "POST", "/v1/query", &[], "{}").await;
    assert_eq!(q.status, 503, "{}", q.body);

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
        Some(0.0),
        "{m}"
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

/// Keep-alive HTTP connections left idle after a `/health` check hold connection slots: they
/// are closed after `HTTP_KEEPALIVE_IDLE_MS` (2 s), not the idle timeout, so that a dozen of
/// them do not lock every sync client out of a relay at its limit for that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_http_connections_give_their_slots_back_soon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start(|c| {
        c.limits.connections_max = 2;
        c.limits.idle_timeout_ms = 60_000;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        let req = format!("GET /health HTTP/1.1\r\nhost: {}\r\n\r\n", relay.addr);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        idle.push(s);
    }
    // Both slots are held by the idle connections...
    let (status, _) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(status, 503);
    // ...until they are closed, well within the 60 s idle timeout.
    let started = std::time::Instant::now();
    drop(connect_once_a_slot_is_free_within(&relay, Duration::from_secs(6)).await);
    assert!(started.elapsed() < Duration::from_secs(6));
    drop(idle);
    relay.stop().await;
}

/// [`connect_once_a_slot_is_free`] with a longer bound.
async fn connect_once_a_slot_is_free_within(
    relay: &TestRelay,
    bound: Duration,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        if let Ok(ws) = connect_ws(relay.addr, Some(TOKEN)).await {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no slot within {bound:?}");
}
