//! Heartbeats over TCP: a quiet but live connection outlasts several idle timeouts (pings
//! keep it alive), and when the path goes dead — a proxy in the middle stops forwarding
//! without closing anything — both ends notice within `idle_timeout_ms` plus the linger
//! time and end with `TIMEOUT`.

mod common;
mod transport_common;

use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb_net::transport::{connect, ConnectOptions, ListenConfig};
use blazedb_net::{run_session, DriverOptions, EndReason, Endpoint, NetError, SessionMonitor};
use common::{fill, open};
use transport_common::{listen_tcp, next_ended, Proxy, TEST_LIMIT};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dead_path_is_detected_within_the_idle_timeout() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                session: heartbeats(),
                linger_ms: LINGER_MS,
                ..ListenConfig::default()
            },
        )
        .await;
        let mut events = listener.events();
        let proxy = Proxy::start(listener.tcp_addr().unwrap(), None).await;
        let url: Endpoint = proxy.url().parse().unwrap();

        let stream = connect(&url, &ConnectOptions::default()).await.unwrap();
        let monitor = SessionMonitor::new();
        let opts = DriverOptions {
            monitor: Some(monitor.clone()),
            linger_ms: LINGER_MS,
            ..DriverOptions::default()
        };
        let client = tokio::spawn(run_session(a.clone(), stream, heartbeats(), opts));
        let mut snaps = monitor.subscribe();
        snaps.wait_for(|s| s.caught_up).await.unwrap();

        // Quiet for three idle timeouts: only pings flow, and they keep the session up.
        let frames_before = monitor.snapshot().stats.frames_received;
        tokio::time::sleep(Duration::from_millis(3 * IDLE_MS)).await;
        assert!(
            !client.is_finished(),
            "a live quiet connection must stay up"
        );
        assert_eq!(listener.connections(), 1);
        let pings = monitor.snapshot().stats.frames_received - frames_before;
        assert!(
            pings >= 3 * IDLE_MS / PING_MS / 2,
            "only {pings} pings arrived"
        );

        // The path dies silently.
        proxy.freeze();
        let frozen_at = Instant::now();
        let bound = Duration::from_millis(IDLE_MS + LINGER_MS + SLACK_MS);
        let result = tokio::time::timeout(bound, client).await;
        let waited = frozen_at.elapsed();
        let result = result
            .unwrap_or_else(|_| panic!("dead peer not detected within {bound:?}"))
            .unwrap();
        match result {
            Err(NetError::Sync { error, .. }) => {
                assert_eq!(error.code, ErrorCode::Timeout, "{error}");
                assert!(!error.remote, "detected here, not told");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            waited >= Duration::from_millis(IDLE_MS - PING_MS),
            "ended after {waited:?}, before the idle timeout could pass"
        );

        // The listener's side of the dead path is detected the same way.
        let (server, _) = tokio::time::timeout(bound, next_ended(&mut events))
            .await
            .expect("the listener noticed the dead peer in time");
        let server = server.unwrap();
        assert!(
            matches!(&server.end, EndReason::Protocol(e) if e.code == ErrorCode::Timeout),
            "{server:?}"
        );
        assert!(frozen_at.elapsed() <= bound + Duration::from_millis(LINGER_MS));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
