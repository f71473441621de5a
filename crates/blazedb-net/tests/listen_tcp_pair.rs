//! `listen` on TCP and `sync_once` to a `tcp://` URL: both directions arrive with exact cell
//! counts, the replicas end identical, and a second sync moves no cells.

mod common;
mod transport_common;

use blazedb_net::transport::ListenConfig;
use blazedb_net::{sync_once, ClientOptions, Endpoint};
use common::{dump, fill, live_cells, open};
use transport_common::{listen_tcp, next_ended, TEST_LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_and_client_converge() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 2_000, 200, "a");
        fill(&b, "d", 300, 30, "b");
        let (cells_a, cells_b) = (live_cells(&a), live_cells(&b));

        let listener = listen_tcp(b.clone(), ListenConfig::default()).await;
        let mut events = listener.events();
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        assert!(matches!(url, Endpoint::Tcp(_)), "{url}");

        let report = sync_once(a.clone(), &url, &ClientOptions::default())
            .await
            .unwrap();
        assert_eq!(report.traffic.cells_sent, cells_a);
        assert_eq!(report.traffic.cells_received, cells_b);
        assert_eq!(report.traffic.cells_applied, cells_b);
        assert_eq!(report.peer, Some(b.node_id()));
        assert_eq!(report.sessions, 1);
        let json = report.to_json();
        assert_eq!(json["sent"]["cells"], cells_a);
        assert!(json["received"]["bytes"].as_u64().unwrap() > 0);

        let (server, error) = next_ended(&mut events).await;
        assert_eq!(error, None, "the client's goodbye is a clean end");
        assert_eq!(server.unwrap().stats.cells_applied, cells_a);
        assert_eq!(dump(&a), dump(&b));

        // The cursors persisted on both sides: nothing travels again.
        let again = sync_once(a.clone(), &url, &ClientOptions::default())
            .await
            .unwrap();
        assert_eq!(again.traffic.cells_sent, 0);
        assert_eq!(again.traffic.cells_received, 0);
        // The listener's side of that session ends just after the client has its report:
        // give it a moment (a loaded machine once saw it still counted).
        for _ in 0..500 {
            if listener.connections() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(listener.connections(), 0);
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A peer that connects and never says HELLO is let go after the handshake timeout, not
/// after the (far longer) idle timeout: it held a connection slot that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_let_go_after_the_handshake_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncReadExt;

    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), "b");
        let cfg = ListenConfig {
            handshake_timeout_ms: 300,
            session: blazedb::sync::SessionConfig {
                ping_interval_ms: 60_000,
                idle_timeout_ms: 120_000,
                ..Default::default()
            },
            ..ListenConfig::default()
        };
        let listener = listen_tcp(b.clone(), cfg).await;
        let mut events = listener.events();
        let Endpoint::Tcp(addr) = listener.urls()[0].parse().unwrap() else {
            panic!("a tcp:// URL");
        };
        let started = Instant::now();
        let mut silent = tokio::net::TcpStream::connect(addr.to_string())
            .await
            .unwrap();
        // The listener ends the session (its ERROR frame, then end of stream).
        let mut got = Vec::new();
        silent.read_to_end(&mut got).await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "the silent peer was let go only after {waited:?}"
        );
        let (_, error) = next_ended(&mut events).await;
        let error = error.expect("the session ended with an error");
        assert!(error.contains("no HELLO"), "{error}");
        // The slot is given back just after the Ended event.
        for _ in 0..500 {
            if listener.connections() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(listener.connections(), 0);
        listener.shutdown().await;
    })
    .await
    .unwrap();
}
