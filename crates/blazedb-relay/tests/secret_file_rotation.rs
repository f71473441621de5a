//! `--token-file FILE` and `--jwt-secret-file FILE` hold one credential a line and are read
//! again when they change: a static token or an HMAC secret is rotated without a restart — the
//! new one added beside the old and both accepted, a file caught broken changing nothing, the
//! old one taken out and refused from then on (`401` over WebSocket, `AUTH_FAILED` in HELLO
//! over TCP) — while a session opened under the old one goes on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb::Database;
use blazedb_net::{run_session, DriverOptions, NetError};
use blazedb_relay::{AuthConfig, RelayConfig};
use common::{
    connect_ws, jwt_hs256, now_s, open, publish, refused, still_syncing, until_accepted, within,
    Client, TestRelay,
};
use serde_json::json;

/// A relay that reads its credentials from `auth`'s file, with a raw TCP listener for HELLO
/// tokens, and no failure limit: the waits below try a refused credential again and again.
async fn relay_with(auth: AuthConfig) -> TestRelay {
    TestRelay::start(|c: &mut RelayConfig| {
        c.auth = auth;
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.auth_failures_per_address_max = 0;
    })
    .await
}

/// The error code a raw TCP session whose HELLO carries `token` is ended with.
async fn hello_refusal(relay: &TestRelay, dir: &Path, token: &str) -> ErrorCode {
    let tcp = tokio::net::TcpStream::connect(relay.tcp_addr.unwrap())
        .await
        .unwrap();
    let config = SessionConfig {
        token: token.into(),
        ..SessionConfig::default()
    };
    let session = run_session(open(dir, "probe"), tcp, config, DriverOptions::default());
    match within(Duration::from_secs(10), session).await {
        Err(NetError::Sync { error, .. }) => error.code,
        other => panic!("expected the relay to end the session, got {other:?}"),
    }
}

/// Both credentials keep passing at `/v1/sync` for longer than the relay takes to look at its
/// file again ([`blazedb_relay::limits::CREDENTIAL_FILE_CHECK_INTERVAL_MS`]).
async fn both_still_accepted(relay: &TestRelay, old: &str, new: &str) {
    let looks = blazedb_relay::limits::CREDENTIAL_FILE_CHECK_INTERVAL_MS * 3 / 2;
    tokio::time::sleep(Duration::from_millis(looks)).await;
    for token in [old, new] {
        connect_ws(relay.addr, Some(token))
            .await
            .expect("the credentials read before stay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_is_rotated_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let (old, new) = ("the-old-static-token-0123", "the-new-static-token-4567");
    publish(&file, &[old, "\n"]);
    let relay = relay_with(AuthConfig::TokenFile(file.clone())).await;
    relay.db.insert("notes", [("n", 1)]).unwrap();
    connect_ws(relay.addr, Some(old))
        .await
        .expect("the token of the file");
    let (status, _) = refused(connect_ws(relay.addr, Some(new)).await.unwrap_err());
    assert_eq!(status, 401);

    // A session under the old token, open all along.
    let db: Arc<Database> = open(dir.path(), "alice");
    let alice = Client::connect(&relay, db.clone(), old).await;
    alice.caught_up().await;

    // The new token on a line of its own (blank lines and spaces around it): both pass.
    publish(&file, &[old, "\n\n  ", new, "  \n"]);
    until_accepted(relay.addr, new, true).await;
    connect_ws(relay.addr, Some(old))
        .await
        .expect("the old token, during the rotation");

    // A file caught broken — blank, then a token too short to be one — changes nothing.
    publish(&file, &["\n \n"]);
    both_still_accepted(&relay, old, new).await;
    publish(&file, &[new, "\nshort\n"]);
    both_still_accepted(&relay, old, new).await;

    // The old token taken out: refused from then on, over WebSocket and in HELLO.
    publish(&file, &[new, "\n"]);
    until_accepted(relay.addr, old, false).await;
    let (status, body) = refused(connect_ws(relay.addr, Some(old)).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("invalid token"),
        "{body}"
    );
    assert_eq!(
        hello_refusal(&relay, dir.path(), old).await,
        ErrorCode::AuthFailed
    );
    connect_ws(relay.addr, Some(new))
        .await
        .expect("the new token");

    // The session that began under the old token goes on: a static token has no `exp`.
    still_syncing(&relay, &db).await;
    assert!(!alice.task.is_finished());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_secret_is_rotated_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt-secrets");
    let (old, new) = ("the-old-hmac-secret-0123", "the-new-hmac-secret-4567");
    let jwt =
        |secret: &str, sub: &str| jwt_hs256(secret, json!({"sub": sub, "exp": now_s() + 600}));
    let (old_token, new_token) = (jwt(old, "alice"), jwt(new, "bob"));
    publish(&file, &[old, "\n"]);
    let relay = relay_with(AuthConfig::JwtSecretFile(file.clone())).await;
    relay.db.insert("notes", [("n", 1)]).unwrap();
    connect_ws(relay.addr, Some(&old_token))
        .await
        .expect("a token signed with the secret of the file");
    let (status, body) = refused(connect_ws(relay.addr, Some(&new_token)).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    // A session under a token of the old secret, open all along.
    let db: Arc<Database> = open(dir.path(), "alice");
    let alice = Client::connect(&relay, db.clone(), &old_token).await;
    alice.caught_up().await;

    // The new secret on a line of its own: tokens of either pass.
    publish(&file, &[old, "\n\n", new, "\n"]);
    until_accepted(relay.addr, &new_token, true).await;
    connect_ws(relay.addr, Some(&old_token))
        .await
        .expect("the old secret's token, during the rotation");

    // A file caught broken — a secret too short on one line, then gone — changes nothing.
    publish(&file, &[new, "\nshort\n"]);
    both_still_accepted(&relay, &old_token, &new_token).await;
    std::fs::remove_file(&file).unwrap();
    both_still_accepted(&relay, &old_token, &new_token).await;

    // The old secret taken out: its tokens are refused from then on, the new one's pass.
    publish(&file, &[new, "\n"]);
    until_accepted(relay.addr, &old_token, false).await;
    assert_eq!(
        hello_refusal(&relay, dir.path(), &old_token).await,
        ErrorCode::AuthFailed
    );
    connect_ws(relay.addr, Some(&new_token))
        .await
        .expect("the new secret's token");

    // The session that began under the old secret goes on (until its token's `exp`).
    still_syncing(&relay, &db).await;
    assert!(!alice.task.is_finished());
    relay.stop().await;
}
