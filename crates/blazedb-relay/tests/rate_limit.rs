//! A connection that sends messages faster than its token bucket allows gets ERROR
//! `RATE_LIMITED` and is disconnected; a normal client under the same limits keeps syncing,
//! and the metrics count the rate-limited session.

mod common;

use std::time::Duration;

use blazedb::sync::{ErrorCode, Message};
use common::{http, open, sessions_closed, wait_until, Client, RawClient, TestRelay, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flooding_client_is_cut_off_others_are_not() {
    let relay = TestRelay::start(|c| {
        c.limits.message_rate_per_s = 20;
        c.limits.message_burst = 30;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;

    let mut flood = RawClient::connect(relay.addr).await;
    flood.hello().await;
    for nonce in 0..200 {
        if flood.send(&Message::Ping { nonce }).await.is_err() {
            break;
        }
    }
    assert_eq!(flood.error_code().await, Some(ErrorCode::RateLimited));

    // The others were never affected.
    for i in 0..5 {
        let id = a.insert("notes", [("n", i)]).unwrap();
        wait_until(Duration::from_secs(5), || {
            b.get("notes", id).unwrap().is_some()
        })
        .await;
    }
    assert!(!ca.task.is_finished() && !cb.task.is_finished());
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(sessions_closed(&m, "rate_limited"), Some(1.0), "{m}");
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();
    relay.stop().await;
}
