//! A listener with a token counts wrong tokens per TCP peer address: the one that reaches
//! `auth_failures_per_address_max` makes it answer that address's next HELLOs with
//! `RATE_LIMITED`, the right token too, without comparing it and before any data flows, for
//! `auth_failure_window_ms`; then the address is served again. Another address, and a Unix
//! socket peer (no address: never counted), are served meanwhile. 0 turns the limit off.
//! Real sockets on 127.0.0.1 (and 127.0.0.2 for the other address).

mod common;
mod transport_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig, SyncError};
use blazedb::Database;
use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::{listen, ListenConfig, TransportError};
use blazedb_net::{
    run_session, sync_once, ClientOptions, DriverOptions, EndReason, Endpoint, NetError,
};
use common::{count, dump, fill, open};
use transport_common::{listen_tcp, next_ended, TEST_LIMIT};

const TOKEN: &str = "correct horse battery";

/// Short, so that the test waits it out; long enough for a few connections on a busy
/// machine.
const WINDOW_MS: u64 = 3_000;

fn with_token(token: &str) -> ClientOptions {
    ClientOptions {
        session: SessionConfig {
            token: token.into(),
            ..SessionConfig::default()
        },
        ..ClientOptions::default()
    }
}

/// The listener's ERROR that ended a `sync_once`, and the cells the client sent and got.
fn refused_by_listener(r: Result<blazedb_net::ClientReport, ClientError>) -> (SyncError, u64) {
    match r {
        Err(ClientError::Session(NetError::Sync { error, report })) if error.remote => {
            (error, report.stats.cells_sent + report.stats.cells_received)
        }
        other => panic!("expected the listener's ERROR, got {other:?}"),
    }
}

/// A one-shot sync of `db` with the listener at `addr`, from the local address `from`.
async fn sync_from(from: &str, addr: SocketAddr, db: Arc<Database>, token: &str) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let io = socket.connect(addr).await.unwrap();
    let cfg = SessionConfig {
        token: token.into(),
        ..SessionConfig::default()
    };
    run_session(db, io, cfg, DriverOptions::once())
        .await
        .unwrap_or_else(|e| panic!("a sync from {from}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_sent_too_many_wrong_tokens_is_refused_unread_until_the_window_passes() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&b, "notes", 20, 20, "b");
        let max = 3;
        let socket = dir.path().join("l.sock");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                unix: Some(socket.clone()),
                token: Some(TOKEN.into()),
                auth_failures_per_address_max: max,
                auth_failure_window_ms: WINDOW_MS,
                ..ListenConfig::default()
            },
        )
        .await;
        let mut events = listener.events();
        let tcp_addr = listener.tcp_addr().unwrap();
        let url: Endpoint = format!("tcp://{tcp_addr}").parse().unwrap();
        let started = Instant::now();

        // An empty token guesses nothing: not counted.
        let (error, _) = refused_by_listener(sync_once(a.clone(), &url, &with_token("")).await);
        assert_eq!(error.code, ErrorCode::AuthFailed, "{error}");
        next_ended(&mut events).await;
        for i in 0..max {
            let guess = format!("guess number {i}");
            let r = sync_once(a.clone(), &url, &with_token(&guess)).await;
            let (error, _) = refused_by_listener(r);
            assert_eq!(error.code, ErrorCode::AuthFailed, "guess {i}: {error}");
            next_ended(&mut events).await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(WINDOW_MS),
            "the failures took longer than the window: the test proves nothing"
        );

        // The next attempt, with the right token: refused without it being compared, and
        // nothing flowed.
        let r = sync_once(a.clone(), &url, &with_token(TOKEN)).await;
        let (error, cells) = refused_by_listener(r);
        assert_eq!(error.code, ErrorCode::RateLimited, "{error}");
        assert!(
            error.message.contains(
                "too many failed authentication attempts from your address (3 within 3 s)"
            ) && error.message.contains("this listener refuses")
                && error.message.contains("wait")
                && error.message.contains("check the token")
                && error.message.contains("--max-auth-failures-per-address"),
            "{}",
            error.message
        );
        assert_eq!(cells, 0);
        let (server, _) = next_ended(&mut events).await;
        let server = server.unwrap();
        assert!(
            matches!(&server.end, EndReason::Protocol(e) if e.code == ErrorCode::RateLimited),
            "{server:?}"
        );
        assert_eq!(count(&a, "notes"), 0);

        // Another address with the right token is served meanwhile, and so is a Unix
        // socket peer, whose wrong tokens are never counted.
        let other = open(dir.path(), "other");
        sync_from("127.0.0.2", tcp_addr, other.clone(), TOKEN).await;
        assert_eq!(dump(&other), dump(&b));
        let unix: Endpoint = listener.urls()[1].parse().unwrap();
        for _ in 0..=max {
            let r = sync_once(a.clone(), &unix, &with_token("a wrong one")).await;
            assert_eq!(refused_by_listener(r).0.code, ErrorCode::AuthFailed);
        }
        let local = open(dir.path(), "local");
        sync_once(local.clone(), &unix, &with_token(TOKEN))
            .await
            .expect("a Unix socket peer is not counted");
        assert_eq!(dump(&local), dump(&b));

        // Once the refusal is over (it began at the last guess, before the refused attempt),
        // the right token works again from that address.
        tokio::time::sleep(Duration::from_millis(WINDOW_MS)).await;
        sync_once(a.clone(), &url, &with_token(TOKEN))
            .await
            .expect("the right token connects again");
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_zero_counts_nothing() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&b, "notes", 5, 5, "b");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                token: Some(TOKEN.into()),
                auth_failures_per_address_max: 0,
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        // More than the default limit (10).
        for i in 0..12 {
            let r = sync_once(a.clone(), &url, &with_token("wrong token")).await;
            let (error, _) = refused_by_listener(r);
            assert_eq!(error.code, ErrorCode::AuthFailed, "attempt {i}: {error}");
        }
        sync_once(a.clone(), &url, &with_token(TOKEN))
            .await
            .expect("no limit: the right token is checked and accepted");
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A window of 0 would count nothing: refused at startup, saying what to give.
#[tokio::test]
async fn a_window_out_of_range_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let r = listen(
        open(dir.path(), "b"),
        ListenConfig {
            tcp: Some("127.0.0.1:0".into()),
            token: Some(TOKEN.into()),
            auth_failure_window_ms: 0,
            ..ListenConfig::default()
        },
    )
    .await;
    let Err(e @ TransportError::ListenOptions(_)) = r else {
        panic!("expected ListenOptions, got {r:?}");
    };
    assert!(
        e.to_string().contains("--max-auth-failures-per-address 0"),
        "{e}"
    );
}
