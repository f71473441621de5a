//! A client without valid credentials — no token, a wrong token, an expired JWT, a JWT signed
//! with another key — is refused with HTTP 401 and a JSON error before the WebSocket upgrade,
//! so nothing flows either way; valid credentials (static token in the header or `?token=`,
//! HS256, RS256 and EdDSA JWTs) connect, and a JWT's claims reach the rules as `$auth.*`.

mod common;

use blazedb_relay::AuthConfig;
use common::{
    auth_failures, connect_ws, connect_ws_url, http, jwt_hs256, metric, metric_sum, now_s, open,
    refused, Client, TestRelay, TOKEN,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_missing_or_wrong_gets_401_and_nothing_flows() {
    let relay = TestRelay::start(|_| {}).await;
    relay.db.insert("notes", [("text", "relay data")]).unwrap();

    let (status, body) = refused(connect_ws(relay.addr, None).await.unwrap_err());
    assert_eq!(status, 401);
    assert_eq!(body["code"], "auth_failed");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing credentials"),
        "{body}"
    );
    let (status, body) = refused(connect_ws(relay.addr, Some("wrong")).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("invalid token"),
        "{body}"
    );
    let r = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[],
        r#"{"collection":"notes"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.json()["code"], "auth_failed");

    // Browsers cannot set headers on a WebSocket: the token may come as a query parameter.
    let url = format!("ws://{}/v1/sync?token={TOKEN}", relay.addr);
    connect_ws_url(relay.addr, &url, None, &[])
        .await
        .expect("?token= accepted");

    assert_eq!(relay.db.count("notes").unwrap(), 1);
    assert_eq!(relay.db.last_seq().unwrap().0, 1, "nothing was written");
    // The wrong token: a missing one (the upgrade and the query above) is no failure, but
    // how a client learns that one is needed. All three were refused.
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(auth_failures(&m, "invalid"), Some(1.0), "{m}");
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "blazedb_relay_requests_refused_total{reason=\"auth_failed\"}"
        ),
        Some(3.0),
        "{m}"
    );

    // Another scheme is not "missing credentials": the answer says what to send.
    let r = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        r#"{"collection":"notes"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("Bearer <token>"),
        "{}",
        r.body
    );

    // `Bearer` with nothing after it (an unset variable), in the header or as `?token=`, is
    // an empty credential, not another scheme.
    let r = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[("authorization", "Bearer ")],
        r#"{"collection":"notes"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("the credential is empty"), "{message}");
    let url = format!("ws://{}/v1/sync?token=", relay.addr);
    let (status, body) = refused(
        connect_ws_url(relay.addr, &url, None, &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the credential is empty"),
        "{body}"
    );
    relay.stop().await;
}

const SECRET: &str = "a-long-hmac-secret-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_foreign_jwts_get_401_valid_claims_drive_the_rules() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(
        rules_dir.path(),
        "[notes]\nread = \"owner == $auth.sub\"\nwrite = \"owner == $auth.sub\"\n",
    );
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let mine = relay.db.insert("notes", [("owner", "alice")]).unwrap();
    relay.db.insert("notes", [("owner", "bob")]).unwrap();

    let expired = jwt_hs256(SECRET, json!({"sub": "alice", "exp": now_s() - 3600}));
    let (status, body) = refused(connect_ws(relay.addr, Some(&expired)).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let forged = jwt_hs256(
        "another-secret-of-enough-length",
        json!({"sub": "alice", "exp": now_s() + 600}),
    );
    let (status, body) = refused(connect_ws(relay.addr, Some(&forged)).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    let (status, body) = refused(connect_ws(relay.addr, Some(TOKEN)).await.unwrap_err());
    assert_eq!(status, 401, "not a JWT");
    assert!(
        body["error"].as_str().unwrap().contains("not a JWT"),
        "{body}"
    );

    // An unsigned token (`"alg": "none"`) is a JWT all the same: the answer names its
    // algorithm and the ones this relay takes.
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "alice", "exp": now_s() + 600}))
    );
    let (status, body) = refused(connect_ws(relay.addr, Some(&unsigned)).await.unwrap_err());
    assert_eq!(status, 401);
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("signed with algorithm \"none\", which this relay does not accept")
            && message.contains("HS256"),
        "{body}"
    );

    // Counted by kind: the expired token as `expired`, the forged, the static and the
    // unsigned one as `invalid`.
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(auth_failures(&m, "expired"), Some(1.0), "{m}");
    assert_eq!(auth_failures(&m, "invalid"), Some(3.0), "{m}");
    assert_eq!(auth_failures(&m, "claims"), Some(0.0), "{m}");

    // A valid token: `$auth.sub` is alice, so only her note arrives.
    let alice = jwt_hs256(SECRET, json!({"sub": "alice", "exp": now_s() + 600}));
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "alice");
    let c = Client::connect(&relay, db.clone(), &alice).await;
    c.caught_up().await;
    assert_eq!(db.count("notes").unwrap(), 1);
    assert!(db.get("notes", mine).unwrap().is_some());
    c.finish().await.unwrap();
    relay.stop().await;
}

/// With an audience and an issuer configured, a token must carry both, matching: one
/// without them (issued for any other service sharing the key) is refused like one with
/// the wrong ones, and each refusal says what the relay accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_audience_and_issuer_are_required() {
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.jwt_audience = Some("my-relay".into());
        c.jwt_issuer = Some("https://idp.example".into());
    })
    .await;
    let exp = now_s() + 600;
    let cases = [
        (json!({"sub": "a", "exp": exp}), "which this relay requires"),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}),
            "no `aud` claim",
        ),
        (
            json!({"sub": "a", "exp": exp, "aud": "my-relay"}),
            "no `iss` claim",
        ),
        (
            json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://idp.example"}),
            "accepts `aud` my-relay",
        ),
        (
            json!({"sub": "a", "exp": exp, "aud": "my-relay", "iss": "https://evil.example"}),
            "accepts `iss` https://idp.example",
        ),
        (
            json!({"sub": "a", "exp": exp, "nbf": exp, "aud": "my-relay", "iss": "https://idp.example"}),
            "not valid yet",
        ),
    ];
    for (claims, says) in &cases {
        let token = jwt_hs256(SECRET, claims.clone());
        let (status, body) = refused(connect_ws(relay.addr, Some(&token)).await.unwrap_err());
        assert_eq!(status, 401, "{claims}");
        let m = body["error"].as_str().unwrap();
        assert!(m.contains(says), "{claims}: {m}");
    }
    // Each counted as a refusal of its claims.
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(auth_failures(&m, "claims"), Some(cases.len() as f64), "{m}");
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(cases.len() as f64),
        "{m}"
    );
    let good = jwt_hs256(
        SECRET,
        json!({"sub": "a", "exp": exp, "aud": "my-relay", "iss": "https://idp.example"}),
    );
    connect_ws(relay.addr, Some(&good))
        .await
        .expect("a token with the right audience and issuer");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_eddsa_public_keys() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let claims = json!({"sub": "carol", "exp": now_s() + 600});

    // RS256 with a PEM public key.
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtPublicKey(fixtures.join("jwt_rsa_public.pem"));
    })
    .await;
    let private = std::fs::read(fixtures.join("jwt_rsa_private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap();
    connect_ws(relay.addr, Some(&rs))
        .await
        .expect("RS256 accepted");
    let hs = jwt_hs256(SECRET, claims.clone());
    let (status, _) = refused(connect_ws(relay.addr, Some(&hs)).await.unwrap_err());
    assert_eq!(status, 401, "an HMAC token against an RSA key");
    relay.stop().await;

    // EdDSA: a fresh Ed25519 key pair, the public half written as a PEM file.
    let rng = ring::rand::SystemRandom::new();
    let pair = |rng: &ring::rand::SystemRandom| {
        use ring::signature::KeyPair;
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(rng).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        (pkcs8.as_ref().to_vec(), kp.public_key().as_ref().to_vec())
    };
    let (pkcs8, public) = pair(&rng);
    let (other_pkcs8, _) = pair(&rng);
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&public);
    use base64::Engine as _;
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("ed25519.pem");
    std::fs::write(&key_path, pem).unwrap();
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtPublicKey(key_path)).await;
    let sign = |pkcs8: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
        )
        .unwrap()
    };
    connect_ws(relay.addr, Some(&sign(&pkcs8)))
        .await
        .expect("EdDSA accepted");
    let (status, body) = refused(
        connect_ws(relay.addr, Some(&sign(&other_pkcs8)))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    relay.stop().await;
}

/// A JWT that expires during a session ends it: at `exp` (plus the clock tolerance accepted
/// at connect) the relay closes the connection with AUTH_FAILED, which the client reports;
/// what was synced before stays, and a fresh token connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_jwt_expires() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtSecret(SECRET.into())).await;
    let before = relay.db.insert("notes", [("n", 1)]).unwrap();
    let short = jwt_hs256(SECRET, json!({"sub": "alice", "exp": now_s() + 1}));
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "alice");
    let started = std::time::Instant::now();
    let c = Client::connect(&relay, db.clone(), &short).await;
    c.caught_up().await;
    assert!(db.get("notes", before).unwrap().is_some());

    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), c.task)
        .await
        .expect("the session ends once the token expires")
        .unwrap();
    let lasted = started.elapsed();
    let err = ended.expect_err("ended by the relay, not by us");
    let text = err.to_string();
    assert!(text.contains("expired"), "{text}");
    match err.report().map(|r| &r.end) {
        Some(blazedb_net::EndReason::Protocol(e)) => {
            assert_eq!(e.code, blazedb::sync::ErrorCode::AuthFailed);
            assert!(e.remote, "reported by the relay");
        }
        other => panic!("ended with {other:?}"),
    }
    // exp is 1 s away (0-1 s after rounding) plus the 5 s tolerance.
    assert!(
        lasted >= std::time::Duration::from_secs(4),
        "ended after {lasted:?}: before the token expired"
    );
    assert!(db.get("notes", before).unwrap().is_some(), "kept");
    // An expiry during a session is an expired credential (the relay counts the session's
    // close just after the client saw it).
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if auth_failures(&m, "expired") == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(auth_failures(&m, "expired"), Some(1.0), "{m}");
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(1.0),
        "{m}"
    );

    // A fresh token connects and syncs on.
    let fresh = jwt_hs256(SECRET, json!({"sub": "alice", "exp": now_s() + 600}));
    let after = relay.db.insert("notes", [("n", 2)]).unwrap();
    let c = Client::connect(&relay, db.clone(), &fresh).await;
    c.caught_up().await;
    assert!(db.get("notes", after).unwrap().is_some());
    c.finish().await.unwrap();
    relay.stop().await;
}
