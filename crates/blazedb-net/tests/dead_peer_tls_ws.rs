//! Heartbeats over TLS and WebSocket, as over TCP (`dead_peer.rs`): when the path goes dead
//! (a proxy in the middle stops forwarding without closing anything) the client notices
//! within `idle_timeout_ms` plus the linger time and ends with `TIMEOUT`; neither the TLS
//! layer nor the WebSocket layer hides the silence or keeps the session waiting on a write.

mod common;
mod transport_common;

use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb_net::transport::{connect, ConnectOptions, ListenConfig, TlsClientOptions};
use blazedb_net::ws::{websocket_config, WsStream};
use blazedb_net::{run_session, DriverOptions, Endpoint, NetError, SessionMonitor};
use common::{fill, open};
use transport_common::{listen_tcp, make_pki, Proxy, TEST_LIMIT};

const PING_MS: u64 = 200;
const IDLE_MS: u64 = 1_000;
const LINGER_MS: u64 = 300;
/// Scheduling slack on a loaded two-core machine.
const SLACK_MS: u64 = 1_000;

fn heartbeats() -> SessionConfig {
    SessionConfig {
        ping_interval_ms: PING_MS,
        idle_timeout_ms: IDLE_MS,
        ..SessionConfig::default()
    }
}

/// Sync `a` with whatever `url` reaches through `proxy` until caught up, freeze the proxy
/// and check the client ends with TIMEOUT within the bound.
async fn dead_path_is_detected(
    a: std::sync::Arc<blazedb::Database>,
    url: Endpoint,
    proxy: Proxy,
    options: ConnectOptions,
) {
    let stream = connect(&url, &options).await.unwrap();
    let monitor = SessionMonitor::new();
    let opts = DriverOptions {
        monitor: Some(monitor.clone()),
        linger_ms: LINGER_MS,
        ..DriverOptions::default()
    };
    let client = tokio::spawn(run_session(a, stream, heartbeats(), opts));
    monitor.subscribe().wait_for(|s| s.caught_up).await.unwrap();
    // A quiet live connection stays up past the idle timeout: pings keep it alive.
    tokio::time::sleep(Duration::from_millis(2 * IDLE_MS)).await;
    assert!(
        !client.is_finished(),
        "{url}: a live quiet connection must stay up"
    );

    proxy.freeze();
    let frozen_at = Instant::now();
    let bound = Duration::from_millis(IDLE_MS + LINGER_MS + SLACK_MS);
    let result = tokio::time::timeout(bound, client)
        .await
        .unwrap_or_else(|_| panic!("{url}: dead peer not detected within {bound:?}"))
        .unwrap();
    match result {
        Err(NetError::Sync { error, .. }) => {
            assert_eq!(error.code, ErrorCode::Timeout, "{url}: {error}");
            assert!(!error.remote, "{url}: detected here, not told");
        }
        other => panic!("{url}: expected a timeout, got {other:?}"),
    }
    assert!(frozen_at.elapsed() >= Duration::from_millis(IDLE_MS - PING_MS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_path_under_tls_is_detected_within_the_idle_timeout() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "hb");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(pki.server_tls(false)),
                session: heartbeats(),
                linger_ms: LINGER_MS,
                ..ListenConfig::default()
            },
        )
        .await;
        let proxy = Proxy::start(listener.tcp_addr().unwrap(), None).await;
        let url: Endpoint = format!("tls://127.0.0.1:{}", proxy.addr.port())
            .parse()
            .unwrap();
        let options = ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: Some(pki.ca_pem.clone()),
                ..TlsClientOptions::default()
            },
            ..ConnectOptions::default()
        };
        dead_path_is_detected(a, url, proxy, options).await;
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_path_under_websocket_is_detected_within_the_idle_timeout() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
        // A WebSocket server running one session for `b`, as a relay does.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, _) = server.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config()))
                .await
                .unwrap();
            let cfg = SessionConfig {
                server: true,
                ..heartbeats()
            };
            let opts = DriverOptions {
                linger_ms: LINGER_MS,
                ..DriverOptions::default()
            };
            run_session(b, WsStream::new(ws), cfg, opts).await
        });
        let proxy = Proxy::start(server_addr, None).await;
        let url: Endpoint = format!("ws://127.0.0.1:{}/v1/sync", proxy.addr.port())
            .parse()
            .unwrap();
        dead_path_is_detected(a, url, proxy, ConnectOptions::default()).await;
        // The server's side of the dead path ends the same way.
        let bound = Duration::from_millis(IDLE_MS + 2 * LINGER_MS + SLACK_MS);
        let server_end = tokio::time::timeout(bound, served).await.unwrap().unwrap();
        assert!(
            matches!(&server_end, Err(NetError::Sync { error, .. }) if error.code == ErrorCode::Timeout),
            "{server_end:?}"
        );
    })
    .await
    .expect("test took too long");
}
