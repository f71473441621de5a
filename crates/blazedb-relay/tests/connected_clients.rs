//! A socket that has not said HELLO — a WebSocket upgraded with a valid token, a raw TCP
//! connection, both silent — is an open connection, not a connected client: `/health`'s
//! `connected_clients` and the `clients_connected` gauge count a session once the relay
//! accepted its HELLO, while the `connections` gauge counts every open sync connection (so a
//! flood of idle sockets shows as the gap). As sessions end, both go back down.

mod common;

use std::time::{Duration, Instant};

use common::{connected_clients, http, metric, RawClient, TestRelay};
use tokio::net::TcpStream;

/// (`connections`, `clients_connected`) of WebSocket, then of raw TCP.
type Gauges = [(f64, f64); 2];

/// The gauges in a `/metrics` text (-1 for a series that is not there).
fn gauges(m: &str) -> Gauges {
    let v = |family: &str, transport: &str| {
        metric(
            m,
            &format!("blazedb_relay_{family}{{transport=\"{transport}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    ["ws", "tcp"].map(|t| (v("connections", t), v("clients_connected", t)))
}

/// Wait (at most 10 s) until the relay's gauges are `want`; `/health`'s `connected_clients`
/// then.
async fn once_gauges_are(relay: &TestRelay, want: Gauges) -> u64 {
    let start = Instant::now();
    loop {
        let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if gauges(&m) == want {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gauges (connections, clients_connected) of ws, tcp: {:?}, not {want:?}, in\n{m}",
            gauges(&m)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http(relay.addr, "GET", "/health", &[], "").await.json()["connected_clients"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_in_their_handshake_are_connections_not_clients() {
    let relay = TestRelay::start(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        // Long enough that no silent socket is closed for it during the test.
        c.limits.handshake_timeout_ms = 120_000;
    })
    .await;
    // Upgraded with the right token, silent since: its HELLO would carry the node id.
    let mut ws = RawClient::connect(relay.addr).await;
    // Nothing sent at all: its credential would be in its HELLO.
    let tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    // Before: 2 connected clients.
    let clients = once_gauges_are(&relay, [(1.0, 0.0), (1.0, 0.0)]).await;
    assert_eq!(clients, 0, "no HELLO yet, no client");

    ws.hello().await;
    assert_eq!(
        connected_clients(relay.addr, 1).await,
        1,
        "its HELLO accepted"
    );
    let clients = once_gauges_are(&relay, [(1.0, 1.0), (1.0, 0.0)]).await;
    assert_eq!(clients, 1);

    drop(tcp);
    let clients = once_gauges_are(&relay, [(1.0, 1.0), (0.0, 0.0)]).await;
    assert_eq!(clients, 1, "the client stays");
    drop(ws);
    let clients = once_gauges_are(&relay, [(0.0, 0.0), (0.0, 0.0)]).await;
    assert_eq!(clients, 0);
    relay.stop().await;
}
