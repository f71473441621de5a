//! At `connections_max` open connections the relay answers further connections 503 at once
//! (a JSON error, nothing else read); when a connection closes, its slot is free again.

mod common;

use std::time::Duration;

use common::{connect_ws, connected_clients, open, refused, wait_until, Client, TestRelay, TOKEN};

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
