//! The generic driver over a real TCP socket on 127.0.0.1: a one-shot sync in both
//! directions ends cleanly on both sides with exact cell counts.

mod common;

use blazedb::sync::SessionConfig;
use blazedb_net::{run_session, DriverOptions, EndReason};
use common::{dump, fill, live_cells, open};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_over_tcp_ends_cleanly_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    fill(&a, "c", 5_000, 500, "a");
    fill(&b, "d", 300, 30, "b");
    let (cells_a, cells_b) = (live_cells(&a), live_cells(&b));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let cfg = SessionConfig {
                server: true,
                ..SessionConfig::default()
            };
            run_session(b, socket, cfg, DriverOptions::once()).await
        })
    };
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let ra = run_session(
        a.clone(),
        socket,
        SessionConfig::default(),
        DriverOptions::once(),
    )
    .await
    .unwrap();
    let rb = server.await.unwrap().unwrap();

    for r in [&ra, &rb] {
        assert!(r.caught_up, "{r:?}");
        assert!(
            matches!(r.end, EndReason::CaughtUp | EndReason::PeerFinished),
            "{r:?}"
        );
    }
    assert_eq!(ra.stats.cells_sent, cells_a);
    assert_eq!(rb.stats.cells_sent, cells_b);
    assert_eq!(ra.peer, Some(b.node_id()));
    assert_eq!(dump(&a), dump(&b));
}
