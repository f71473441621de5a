//! `sync_watch` gives up at once, with the reason, on errors another attempt would meet
//! again: a sync policy the peer refuses (INVALID_POLICY from a real listener) and a local
//! policy that cannot start a session. It does not retry them forever.

mod common;
mod transport_common;

use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig, SyncPolicy};
use blazedb::Value;
use blazedb_net::reconnect::{BackoffConfig, ClientEvent};
use blazedb_net::transport::ListenConfig;
use blazedb_net::{sync_watch, ClientError, ClientOptions, Endpoint, NetError};
use common::{count, open};
use transport_common::listen_tcp;

/// Far more than giving up at once takes, and far less than retrying forever.
const GIVE_UP: Duration = Duration::from_secs(5);

fn filtered(filter: &str) -> ClientOptions {
    ClientOptions {
        session: SessionConfig {
            policy: SyncPolicy {
                filter: Some(filter.into()),
                ..SyncPolicy::default()
            },
            ..SessionConfig::default()
        },
        // Quick retries: a retried error would show many sessions within GIVE_UP.
        backoff: BackoffConfig {
            initial_ms: 20,
            max_ms: 100,
            ..BackoffConfig::default()
        },
        ..ClientOptions::default()
    }
}

/// Run `sync_watch` that is never asked to stop; `None` when it is still retrying after
/// [`GIVE_UP`].
async fn watch_until_it_gives_up(
    db: std::sync::Arc<blazedb::Database>,
    url: &Endpoint,
    opts: &ClientOptions,
) -> (Option<Result<(), ClientError>>, u32) {
    let mut retries = 0;
    let run = sync_watch(db, url, opts, std::future::pending(), |e| {
        if let ClientEvent::Retrying { .. } = e {
            retries += 1;
        }
    });
    let outcome = tokio::time::timeout(GIVE_UP, run)
        .await
        .ok()
        .map(|r| r.map(|_| ()));
    (outcome, retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_the_listener_refuses_ends_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (l, a) = (open(dir.path(), "l"), open(dir.path(), "a"));
    l.insert("notes", [("owner", Value::from("ann"))]).unwrap();
    let listener = listen_tcp(l, ListenConfig::default()).await;
    let url: Endpoint = format!("tcp://{}", listener.tcp_addr().unwrap())
        .parse()
        .unwrap();
    // A listener gives no token claims: it refuses a filter on them.
    let started = Instant::now();
    let (outcome, retries) =
        watch_until_it_gives_up(a.clone(), &url, &filtered("owner == $auth.sub")).await;
    let outcome = outcome.expect("the watch was still retrying a refused policy");
    match outcome {
        Err(ClientError::Session(NetError::Sync { error, .. })) => {
            assert_eq!(error.code, ErrorCode::InvalidPolicy);
            assert!(error.remote, "the listener's refusal: {error}");
            assert!(error.message.contains("$auth"), "{error}");
        }
        other => panic!("expected the peer's INVALID_POLICY, got {other:?}"),
    }
    assert_eq!(retries, 0);
    assert!(started.elapsed() < GIVE_UP);
    assert_eq!(count(&a, "notes"), 0);
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_start_ends_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (l, a) = (open(dir.path(), "l"), open(dir.path(), "a"));
    let listener = listen_tcp(l, ListenConfig::default()).await;
    let url: Endpoint = format!("tcp://{}", listener.tcp_addr().unwrap())
        .parse()
        .unwrap();
    let (outcome, retries) =
        watch_until_it_gives_up(a, &url, &filtered("((( not an expression")).await;
    let outcome = outcome.expect("the watch was still retrying a policy that cannot compile");
    match outcome {
        Err(ClientError::Session(NetError::Database(e))) => {
            assert!(e.to_string().contains("invalid expression"), "{e}");
        }
        other => panic!("expected the session's start error, got {other:?}"),
    }
    assert_eq!(retries, 0);
    listener.shutdown().await;
}
