//! A client that opens a sync connection and never says HELLO is disconnected with ERROR
//! `TIMEOUT` after the handshake timeout, releasing its connection slot; one that says HELLO
//! in time is not.

mod common;

use std::time::{Duration, Instant};

use blazedb::sync::ErrorCode;
use common::{connected_clients, RawClient, TestRelay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_disconnected() {
    let relay = TestRelay::start(|c| c.limits.handshake_timeout_ms = 300).await;
    let mut talker = RawClient::connect(relay.addr).await;
    talker.hello().await;
    let mut silent = RawClient::connect(relay.addr).await;
    let t = Instant::now();
    assert_eq!(silent.error_code().await, Some(ErrorCode::Timeout));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        connected_clients(relay.addr, 1).await,
        1,
        "the talker stays"
    );
    drop(talker);
    relay.stop().await;
}
