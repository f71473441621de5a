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
