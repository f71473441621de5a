//! A refusal that repeats what the client sent — the `Origin` header of a 403, the `Host` of a
//! 403 on an anonymous relay, a JWT's `alg` in a 401 — repeats at most its first
//! `ERROR_ECHO_CHARS_MAX` characters, `…` and its length: a client sending a 50 KB header got
//! all of it back (and so did the log line), each time it asked.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use blazedb::limits::ERROR_ECHO_CHARS_MAX;
use blazedb_relay::AuthConfig;
use common::{http, now_s, within, HttpResponse, TestRelay};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longer than any answer of the relay, shorter than the 64 KiB an HTTP head may have.
const LONG: usize = 50_000;

const SECRET: &str = "a-long-hmac-secret-for-tests";

/// The refusal's message is short and repeats the start of `sent`, not all of it.
fn assert_cut(r: &HttpResponse, status: u16, code: &str, sent: &str) {
    assert_eq!(r.status, status, "{}", &r.body[..r.body.len().min(300)]);
    assert!(
        r.body.len() < 2_000,
        "{} bytes answered: {}…",
        r.body.len(),
        &r.body[..300]
    );
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    let message = body["error"].as_str().unwrap();
    let start: String = sent.chars().take(ERROR_ECHO_CHARS_MAX).collect();
    assert!(
        message.contains(&format!("{start}… ({} bytes)", sent.len())),
        "{message}"
    );
}

/// A GET of `/health` with this `Host` header, on a new connection.
async fn health_with_host(addr: SocketAddr, host: &str) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /health HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    HttpResponse {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_origin_or_alg_is_echoed_by_its_start_and_length() {
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.origins = vec!["https://app.example.com".into()];
    })
    .await;

    // An origin that parses, and one that does not (the 403 says so in other words).
    for origin in [
        format!("https://{}.example.com", "a".repeat(LONG)),
        format!("not an origin {}", "b".repeat(LONG)),
    ] {
        for (method, path) in [("GET", "/v1/sync"), ("POST", "/v1/query")] {
            let r = http(relay.addr, method, path, &[("origin", &origin)], "{}").await;
            assert_cut(&r, 403, "origin_not_allowed", &origin);
        }
    }

    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg = "x".repeat(LONG / 2);
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": alg, "typ": "JWT"})),
        b64(json!({"sub": "alice", "exp": now_s() + 600}))
    );
    let bearer = format!("Bearer {token}");
    let r = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[("authorization", &bearer)],
        r#"{"collection": "notes"}"#,
    )
    .await;
    assert_cut(&r, 401, "auth_failed", &alg);
    relay.stop().await;

    // An anonymous relay on loopback answers only loopback names, and says which it got.
    let relay = TestRelay::start(|c| c.auth = AuthConfig::None).await;
    let host = format!("{}.example.com", "h".repeat(LONG));
    let r = health_with_host(relay.addr, &host).await;
    assert_cut(&r, 403, "host_not_allowed", &host);
    relay.stop().await;
}
