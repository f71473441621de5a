//! With `--origin`, browsers from other origins are refused (403) before authentication;
//! allowed origins and clients that send no `Origin` (non-browser) connect, and `/v1/query`
//! answers allowed origins with CORS headers, preflight included.

mod common;

use common::{connect_ws_url, http, refused, TestRelay, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_connect() {
    let relay = TestRelay::start(|c| c.origins = vec!["https://app.example.com/".into()]).await;
    let url = relay.ws_url();
    let (status, body) = refused(
        connect_ws_url(
            relay.addr,
            &url,
            Some(TOKEN),
            &[("origin", "https://evil.example.com")],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert_eq!(body["code"], "origin_not_allowed");
    connect_ws_url(
        relay.addr,
        &url,
        Some(TOKEN),
        &[("origin", "https://APP.example.com")],
    )
    .await
    .expect("allowed origin (case-insensitive)");
    connect_ws_url(relay.addr, &url, Some(TOKEN), &[])
        .await
        .expect("no Origin header: not a browser");

    let pre = http(
        relay.addr,
        "OPTIONS",
        "/v1/query",
        &[("origin", "https://app.example.com")],
        "",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(pre
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let auth = format!("Bearer {TOKEN}");
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[
            ("origin", "https://app.example.com"),
            ("authorization", &auth),
        ],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 200);
    assert_eq!(
        q.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Errors carry the CORS headers too, or the page could not read why (an expired
    // token looks like a network failure to it).
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[
            ("origin", "https://app.example.com"),
            ("authorization", "Bearer wrong"),
        ],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 401);
    assert_eq!(
        q.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[
            ("origin", "https://evil.example.com"),
            ("authorization", &auth),
        ],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 403);
    relay.stop().await;
}
