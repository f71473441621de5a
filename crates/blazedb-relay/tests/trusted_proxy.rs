//! Behind a trusted proxy (`trusted_proxies`, `--trusted-proxy 127.0.0.1/32`), a request
//! counts under the right-most untrusted address of its `X-Forwarded-For`: wrong tokens
//! forwarded for one client get that client alone refused (`429 auth_rate_limited`, on
//! `/v1/query` and the `/v1/sync` upgrade), while another forwarded client, and the proxy's
//! own requests, are served with the right token. A header that names no address counts
//! under the proxy's own address. From a peer that is not trusted (no option, or another
//! address trusted) the header is ignored: a spoofed one cannot escape a refusal, which
//! applies to the TCP peer.

mod common;

use std::net::{IpAddr, SocketAddr};

use blazedb_relay::{Limits, TrustedProxy};
use common::{connect_ws_url, http, http_from, refused, HttpResponse, TestRelay, TOKEN};
use serde_json::json;

const NOTES: &str = r#"{"collection": "notes"}"#;

/// `POST /v1/query` with `token`, and `X-Forwarded-For: forwarded_for` when given.
async fn query(addr: SocketAddr, token: &str, forwarded_for: Option<&str>) -> HttpResponse {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(forwarded_for.map(|f| ("x-forwarded-for", f)));
    http(addr, "POST", "/v1/query", &headers, NOTES).await
}

/// The status (and `code`) of a `/v1/sync` upgrade with `token`, forwarded for
/// `forwarded_for`: 101 when the WebSocket opened.
async fn upgrade(addr: SocketAddr, token: &str, forwarded_for: &str) -> (u16, serde_json::Value) {
    let url = format!("ws://{addr}/v1/sync");
    match connect_ws_url(
        addr,
        &url,
        Some(token),
        &[("x-forwarded-for", forwarded_for)],
    )
    .await
    {
        Ok(_) => (101, serde_json::Value::Null),
        Err(e) => {
            let (status, body) = refused(e);
            (status, body["code"].clone())
        }
    }
}

fn trusting(list: &[&str]) -> Vec<TrustedProxy> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// Ten wrong tokens (the default limit) forwarded for `client`, alternating between
/// `/v1/query` and the `/v1/sync` upgrade; each is checked and refused with 401.
async fn fail_as(addr: SocketAddr, client: &str) {
    let max = Limits::default().auth_failures_per_address_max;
    assert_eq!(max, 10);
    for i in 0..max {
        if i % 2 == 0 {
            let r = query(addr, "wrong-token", Some(client)).await;
            assert_eq!(r.status, 401, "{}", r.body);
        } else {
            let (status, code) = upgrade(addr, "wrong-token", client).await;
            assert_eq!((status, code), (401, json!("auth_failed")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_client_is_refused_alone_and_others_get_through() {
    let relay = TestRelay::start(|c| c.trusted_proxies = trusting(&["127.0.0.1/32"])).await;
    let addr = relay.addr;

    // The proxy forwards wrong tokens for 203.0.113.7, whose own X-Forwarded-For said
    // 192.0.2.1: what a client writes, left of the address its proxy appended, is not read.
    fail_as(addr, "192.0.2.1, 203.0.113.7").await;

    // 203.0.113.7 is refused, its right token unread, whichever proxy chain it names.
    for forwarded in [
        "203.0.113.7",
        "198.51.100.9, 203.0.113.7",
        "203.0.113.7, 127.0.0.1",
    ] {
        let r = query(addr, TOKEN, Some(forwarded)).await;
        assert_eq!(r.status, 429, "{forwarded}: {}", r.body);
        assert_eq!(r.json()["code"], "auth_rate_limited");
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(
        upgrade(addr, TOKEN, "203.0.113.7").await,
        (429, json!("auth_rate_limited"))
    );

    // Another client behind the same proxy is served, over both endpoints, and so is the
    // proxy itself (no header: its health check, say).
    let r = query(addr, TOKEN, Some("198.51.100.9")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(upgrade(addr, TOKEN, "198.51.100.9").await.0, 101);
    let r = query(addr, TOKEN, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_naming_no_address_counts_under_the_proxy() {
    let relay = TestRelay::start(|c| c.trusted_proxies = trusting(&["127.0.0.1/32"])).await;
    let addr = relay.addr;

    // Right of every untrusted address, `unknown` is no address: the walk stops there and
    // the requests count under the proxy's own address, 127.0.0.1.
    fail_as(addr, "198.51.100.9, unknown").await;
    let r = query(addr, TOKEN, None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let r = query(addr, TOKEN, Some("garbage")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    // A well-formed header still names its client, who did nothing wrong: not even
    // 198.51.100.9, which the malformed requests were not counted under.
    let r = query(addr, TOKEN, Some("198.51.100.9")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Garbage the client wrote left of its address is never read.
    let r = query(addr, TOKEN, Some("garbage, 198.51.100.10")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_a_spoofed_header_cannot_escape_the_refusal() {
    let relay = TestRelay::start(|_| {}).await;
    let addr = relay.addr;

    // Each wrong token claims another address; all count under 127.0.0.1.
    let max = Limits::default().auth_failures_per_address_max;
    for i in 0..max {
        let r = query(addr, "wrong-token", Some(&format!("203.0.113.{i}"))).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = query(addr, TOKEN, Some("198.51.100.9")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        upgrade(addr, TOKEN, "198.51.100.9").await,
        (429, json!("auth_rate_limited"))
    );
    // The refusal is 127.0.0.1's: another address is served.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let r = http_from(
        addr,
        other,
        "POST",
        "/v1/query",
        &[("authorization", &auth)],
        NOTES,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_other_than_the_trusted_proxy_cannot_spoof_either() {
    let relay = TestRelay::start(|c| c.trusted_proxies = trusting(&["127.0.0.2"])).await;
    let addr = relay.addr;
    let auth = format!("Bearer {TOKEN}");
    let proxy: IpAddr = "127.0.0.2".parse().unwrap();

    // 127.0.0.1 is no trusted proxy: its header is ignored, its failures are its own.
    let max = Limits::default().auth_failures_per_address_max;
    for i in 0..max {
        let r = query(addr, "wrong-token", Some(&format!("203.0.113.{i}"))).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = query(addr, TOKEN, Some("198.51.100.9")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    // Through the trusted proxy, a forwarded client is served; forwarded for 127.0.0.1, the
    // refused address, the request is refused: the proxy vouches for its client.
    let forwarded = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "198.51.100.9"),
    ];
    let r = http_from(addr, proxy, "POST", "/v1/query", &forwarded, NOTES).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let forwarded = [
        ("authorization", auth.as_str()),
        ("x-forwarded-for", "127.0.0.1"),
    ];
    let r = http_from(addr, proxy, "POST", "/v1/query", &forwarded, NOTES).await;
    assert_eq!(
        r.status, 429,
        "the proxy forwards for the refused address: {}",
        r.body
    );
    relay.stop().await;
}
