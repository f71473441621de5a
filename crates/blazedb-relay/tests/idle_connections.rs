//! Idle connections do not hold slots forever: an HTTP connection that sends nothing, or
//! stays open after its request (keep-alive), is closed after the idle timeout; a sync
//! session that is quiet but alive (pings) stays connected.

mod common;

use std::time::{Duration, Instant};

use common::{open, within, Client, TestRelay, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn closed_after(mut s: TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    within(Duration::from_secs(10), async {
        while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_are_closed_live_sessions_are_not() {
    let relay = TestRelay::start(|c| {
        c.limits.idle_timeout_ms = 400;
        c.limits.ping_interval_ms = 100;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::connect(&relay, open(dir.path(), "a"), TOKEN).await;

    let silent = TcpStream::connect(relay.addr).await.unwrap();
    let waited = closed_after(silent).await;
    assert!(waited >= Duration::from_millis(300), "{waited:?}");

    let mut keep_alive = TcpStream::connect(relay.addr).await.unwrap();
    keep_alive
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let waited = closed_after(keep_alive).await;
    assert!(waited >= Duration::from_millis(300), "{waited:?}");

    // The sync session outlived both: its pings keep it alive.
    assert!(!client.task.is_finished());
    client.finish().await.unwrap();
    relay.stop().await;
}
