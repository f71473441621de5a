//! A client address that presents `auth_failures_per_address_max` (10) wrong credentials
//! within the window is refused — `429 auth_rate_limited` with `Retry-After` on `/v1/query`
//! and the `/v1/sync` upgrade, `RATE_LIMITED` in reply to HELLO over TCP — without its
//! credentials being checked: the right token from it is refused too, while the right token
//! from another address connects. Requests without a credential do not count. Once the
//! window has passed, the address is served again.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb::Database;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport};
use blazedb_relay::Limits;
use common::{
    auth_failures, connect_ws, connect_ws_from, http, metric, metric_sum, open, query, refused,
    sessions_closed, wait_until, TestRelay, TOKEN,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Short, so that the test waits it out; long enough for a dozen requests on a busy machine.
const WINDOW_MS: u64 = 4_000;

/// A sync session with the relay over raw TCP, `token` in HELLO, until `stop` or the relay
/// ends it.
async fn tcp_session(
    addr: SocketAddr,
    db: Arc<Database>,
    token: &str,
    stop: CancellationToken,
) -> Result<SessionReport, NetError> {
    let io = TcpStream::connect(addr).await.unwrap();
    let cfg = SessionConfig {
        token: token.into(),
        ..SessionConfig::default()
    };
    let opts = DriverOptions {
        shutdown: stop,
        ..DriverOptions::default()
    };
    run_session(db, io, cfg, opts).await
}

/// The code and message of the relay's ERROR that ended a session.
fn ended_by(r: Result<SessionReport, NetError>) -> (ErrorCode, String) {
    match r {
        Err(NetError::Sync { error, .. }) if error.remote => (error.code, error.message),
        other => panic!("expected the relay's ERROR, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_failed_too_often_is_refused_unread_until_the_window_passes() {
    let relay = TestRelay::start(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.auth_failure_window_ms = WINDOW_MS;
    })
    .await;
    let tcp = relay.tcp_addr.unwrap();
    let max = Limits::default().auth_failures_per_address_max;
    assert_eq!(max, 10);
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path(), "client");
    let notes = json!({"collection": "notes"});
    let started = Instant::now();

    // No credential guesses nothing: it does not count.
    for _ in 0..3 {
        let r = http(relay.addr, "POST", "/v1/query", &[], &notes.to_string()).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // Wrong tokens on every way in: each one is checked and refused.
    for i in 0..max {
        match i % 3 {
            0 => {
                let r = query(relay.addr, "wrong-token", notes.clone()).await;
                assert_eq!(
                    (r.status, r.json()["code"].clone()),
                    (401, json!("auth_failed"))
                );
            }
            1 => {
                let (status, body) = refused(
                    connect_ws(relay.addr, Some("wrong-token"))
                        .await
                        .unwrap_err(),
                );
                assert_eq!(status, 401, "{body}");
            }
            _ => {
                let r = tcp_session(tcp, client.clone(), "wrong-token", Default::default()).await;
                let (code, message) = ended_by(r);
                assert_eq!(code, ErrorCode::AuthFailed, "{message}");
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(WINDOW_MS),
        "the failures took longer than the window: the test proves nothing"
    );

    // The 11th attempt, with the right token: refused without it being checked.
    let r = query(relay.addr, TOKEN, notes.clone()).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["code"], "auth_rate_limited");
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message
            .contains("too many failed authentication attempts from your address (10 within 4 s)")
            && message.contains("wait")
            && message.contains("check the token"),
        "{message}"
    );
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=WINDOW_MS / 1000).contains(&retry_after),
        "{retry_after}"
    );
    let (status, body) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(
        (status, body["code"].clone()),
        (429, json!("auth_rate_limited"))
    );
    let r = tcp_session(tcp, client.clone(), TOKEN, Default::default()).await;
    let (code, message) = ended_by(r);
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    assert!(
        message.contains("too many failed authentication attempts"),
        "{message}"
    );

    // Another address with the right token is served meanwhile.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    connect_ws_from(relay.addr, other, Some(TOKEN))
        .await
        .expect("another address is not refused");

    // Counted: the failures once each, the refusals by transport; the refused attempts are
    // no credential failures (the relay counts a session when its task ends, which may be
    // just after the client saw the error).
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if sessions_closed(&m, "auth_rate_limited") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sessions_closed(&m, "auth_rate_limited"), Some(1.0), "{m}");
    assert_eq!(
        metric(
            &m,
            "blazedb_relay_requests_refused_total{reason=\"auth_rate_limited\"}"
        ),
        Some(2.0),
        "{m}"
    );
    // The wrong tokens alone: no credential is no failure.
    assert_eq!(auth_failures(&m, "invalid"), Some(f64::from(max)), "{m}");
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(f64::from(max)),
        "{m}"
    );

    // Once the refusal is over, the right token works again from that address, everywhere.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let r = query(relay.addr, TOKEN, notes.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    connect_ws(relay.addr, Some(TOKEN))
        .await
        .expect("the right token connects again");
    let id = relay.db.insert("notes", [("n", 1)]).unwrap();
    let stop = CancellationToken::new();
    let session = tokio::spawn(tcp_session(tcp, client.clone(), TOKEN, stop.clone()));
    wait_until(Duration::from_secs(10), || {
        client.get("notes", id).unwrap().is_some()
    })
    .await;
    stop.cancel();
    session.await.unwrap().expect("a session that ends well");
    relay.stop().await;
}
