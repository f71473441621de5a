//! `connection_slots_used` counts every connection holding a slot, from accept to close, on
//! every listener: HTTP connections (idle ones and those with a request being answered), TLS
//! handshakes in progress and sync sessions of every transport — the `connections` gauge sees
//! only the sessions. `connection_slots_max` is `--max-connections`, so that an alert can be
//! `used / max > 0.8` before the relay refuses connections.
//!
//! Each scrape is a fresh HTTP connection, and it holds a slot of its own while it is
//! answered (one of the status reserve, not counted, when the relay is at its limit): every
//! expected value below counts it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blazedb_relay::limits::HTTP_KEEPALIVE_IDLE_MS;
use blazedb_relay::TlsFiles;
use common::{connect_ws, http, metric, metric_sum, metrics_over_tls, RawClient, TestRelay, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// (`connection_slots_used`, `connection_slots_max`, the sum of `connections`) in a
/// `/metrics` text (-1 for a series that is not there).
fn slots(m: &str) -> (f64, f64, f64) {
    let v = |name: &str| metric(m, name).unwrap_or(-1.0);
    (
        v("blazedb_relay_connection_slots_used"),
        v("blazedb_relay_connection_slots_max"),
        metric_sum(m, "blazedb_relay_connections").unwrap_or(-1.0),
    )
}

/// Scrape `/metrics` with `scrape` until [`slots`] is `want`, for at most `bound`; whether it
/// got there, and the last text.
async fn slots_become<F, Fut>(scrape: F, want: (f64, f64, f64), bound: Duration) -> (bool, String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let start = Instant::now();
    loop {
        let m = scrape().await;
        // A scrape just answered may still hold its slot for a moment: the value only
        // settles down to `want`.
        if slots(&m) == want {
            return (true, m);
        }
        if start.elapsed() >= bound {
            return (false, m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`slots_become`] over plain HTTP, failing the test after 10 s.
async fn once_slots_are(relay: &TestRelay, want: (f64, f64, f64)) {
    let scrape = || async { http(relay.addr, "GET", "/metrics", &[], "").await.body };
    let (reached, m) = slots_become(scrape, want, Duration::from_secs(10)).await;
    assert!(
        reached,
        "(slots used, slots max, sync connections): {:?}, not {want:?}, in\n{m}",
        slots(&m)
    );
}

/// An HTTP connection with a request being answered: a `/v1/query` whose body is announced
/// and not sent. The relay waits for it for the handshake timeout, and says it does (`100
/// Continue`, once the request is authenticated and its body read), so the connection surely
/// holds its slot when this returns.
async fn http_request_in_flight(relay: &TestRelay) -> TcpStream {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/query HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 64\r\nexpect: 100-continue\r\n\r\n",
        relay.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the relay answers the head")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s
}

/// HTTP connections with a request being answered, an upgraded WebSocket and a raw TCP
/// session, all silent, each hold a slot; the `connections` gauge sees the two sessions only.
/// As each closes, its slot is given back; `connection_slots_max` is the configured limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_connection_holds_a_slot_until_it_closes() {
    let relay = TestRelay::start(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.connections_max = 6;
        // Long enough that no silent socket or pending body is cut off during the test.
        c.limits.handshake_timeout_ms = 120_000;
    })
    .await;
    // Only the scrape itself.
    once_slots_are(&relay, (1.0, 6.0, 0.0)).await;

    let http_a = http_request_in_flight(&relay).await;
    let http_b = http_request_in_flight(&relay).await;
    // Upgraded with the right token, no HELLO since.
    let ws = RawClient::connect(relay.addr).await;
    // Nothing sent at all.
    let tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    // 2 HTTP + 1 WebSocket + 1 TCP + the scrape; 2 sync connections.
    once_slots_are(&relay, (5.0, 6.0, 2.0)).await;

    drop((http_a, http_b));
    once_slots_are(&relay, (3.0, 6.0, 2.0)).await;
    drop(ws);
    once_slots_are(&relay, (2.0, 6.0, 1.0)).await;
    drop(tcp);
    once_slots_are(&relay, (1.0, 6.0, 0.0)).await;
    relay.stop().await;
}

/// HTTP connections that send nothing hold slots too, until the relay closes them for it
/// after `HTTP_KEEPALIVE_IDLE_MS` (the client does nothing): the gauge falls back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_hold_slots_until_the_relay_closes_them() {
    let relay = TestRelay::start(|c| c.limits.connections_max = 5).await;
    let scrape = || async { http(relay.addr, "GET", "/metrics", &[], "").await.body };
    // The relay closes them after 2 s: their slots must be seen held well before. Should a
    // loaded machine scrape too late, fresh ones are tried; it is the rise that is asserted,
    // not the machine's speed.
    let seen_within = Duration::from_millis(HTTP_KEEPALIVE_IDLE_MS / 2);
    let mut idle = Vec::new();
    let mut m = String::new();
    for _attempt in 0..3 {
        once_slots_are(&relay, (1.0, 5.0, 0.0)).await;
        idle.clear();
        for _ in 0..3 {
            idle.push(TcpStream::connect(relay.addr).await.unwrap());
        }
        let seen;
        (seen, m) = slots_become(scrape, (4.0, 5.0, 0.0), seen_within).await;
        if seen {
            break;
        }
        idle.clear();
    }
    assert_eq!(
        idle.len(),
        3,
        "3 idle connections and the scrape never seen in\n{m}"
    );
    // Released by the relay, while the client still holds its ends.
    once_slots_are(&relay, (1.0, 5.0, 0.0)).await;
    for mut s in idle {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed by the relay")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
    relay.stop().await;
}

/// At the limit every slot is held and the scrape is answered on the status reserve, which
/// the gauge does not count: used equals max (the ratio an alert watches is 1), not max + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_used_equals_max_and_the_scrape_is_on_the_reserve() {
    let relay = TestRelay::start(|c| {
        c.limits.connections_max = 3;
        c.limits.handshake_timeout_ms = 120_000;
    })
    .await;
    // A scrape just answered may hold its slot a moment longer: retried until one is free.
    let mut sessions = Vec::new();
    let start = Instant::now();
    while sessions.len() < 3 {
        match connect_ws(relay.addr, Some(TOKEN)).await {
            Ok(ws) => sessions.push(ws),
            Err(_) => {
                assert!(start.elapsed() < Duration::from_secs(10), "no free slot");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    once_slots_are(&relay, (3.0, 3.0, 3.0)).await;
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        metric(
            &m,
            "blazedb_relay_connections_refused_total{limit=\"total\"}"
        ),
        Some(0.0),
        "a scrape on the reserve is not a refusal: {m}"
    );
    sessions.truncate(1);
    once_slots_are(&relay, (2.0, 3.0, 1.0)).await;
    relay.stop().await;
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Sockets in their TLS handshake hold slots (until the handshake timeout), and no other
/// gauge sees them: a flood of them shows here before the relay refuses connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_in_progress_hold_slots() {
    let relay = TestRelay::start(|c| {
        c.tls = Some(TlsFiles {
            cert: fixtures().join("tls_cert.pem"),
            key: fixtures().join("tls_key.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        });
        c.limits.connections_max = 4;
        c.limits.handshake_timeout_ms = 120_000;
    })
    .await;
    let trust = blazedb_net::transport::TlsClientOptions {
        ca_pem: Some(fixtures().join("tls_ca.pem")),
        ..Default::default()
    };
    let scrape = || metrics_over_tls(relay.addr, &trust);
    let bound = Duration::from_secs(10);
    let (reached, m) = slots_become(scrape, (1.0, 4.0, 0.0), bound).await;
    assert!(reached, "only the scrape: {:?} in\n{m}", slots(&m));

    // Connected, no ClientHello sent.
    let handshakes = [
        TcpStream::connect(relay.addr).await.unwrap(),
        TcpStream::connect(relay.addr).await.unwrap(),
    ];
    let (reached, m) = slots_become(scrape, (3.0, 4.0, 0.0), bound).await;
    assert!(
        reached,
        "2 handshakes and the scrape: {:?} in\n{m}",
        slots(&m)
    );

    drop(handshakes);
    let (reached, m) = slots_become(scrape, (1.0, 4.0, 0.0), bound).await;
    assert!(
        reached,
        "the handshakes' slots given back: {:?} in\n{m}",
        slots(&m)
    );
    relay.stop().await;
}
