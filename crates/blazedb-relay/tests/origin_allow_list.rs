//! With `--origin`, browsers from other origins are refused (403) before authentication;
//! allowed origins and clients that send no `Origin` (non-browser) connect, and `/v1/query`
//! answers allowed origins with CORS headers, preflight included. Without authentication and
//! without `--origin`, only pages served from this machine may connect, and only requests
//! addressed to a loopback name are answered (DNS rebinding).

mod common;

use blazedb_relay::AuthConfig;
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

/// The default relay (`blazedb serve`: no credentials, loopback): a page of another site
/// cannot open a sync session (browsers apply no CORS to WebSockets), nor query, nor reach
/// it under a rebound name; local pages and non-browser clients still connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_relay_admits_only_local_pages_and_loopback_hosts() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::None).await;
    let url = relay.ws_url();
    for origin in [
        "https://evil.example.com",
        "null",
        "http://localhost.evil.example.com",
    ] {
        let (status, body) = refused(
            connect_ws_url(relay.addr, &url, None, &[("origin", origin)])
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 403, "{origin}");
        assert_eq!(body["code"], "origin_not_allowed", "{origin}");
        assert!(
            body["error"].as_str().unwrap().contains("--origin"),
            "{body}"
        );
    }
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "http://[::1]:5173",
        "http://app.localhost:3000",
    ] {
        connect_ws_url(relay.addr, &url, None, &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
    }
    connect_ws_url(relay.addr, &url, None, &[])
        .await
        .expect("no Origin header: not a browser");

    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    let port = relay.addr.port();
    let rebound = format!("ws://rebind.evil.example.com:{port}/v1/sync");
    let (status, body) = refused(
        connect_ws_url(relay.addr, &rebound, None, &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert_eq!(body["code"], "host_not_allowed");
    // Nor do `/health` and `/metrics` answer that name (`/metrics` names the peers furthest
    // behind by node id); addressed to the relay's own loopback address they do.
    for path in ["/health", "/metrics"] {
        let status_for = |host: String| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out.split(' ').nth(1).unwrap_or_default().to_owned()
        };
        assert_eq!(
            status_for(format!("rebind.evil.example.com:{port}")).await,
            "403",
            "{path}"
        );
        assert_eq!(
            status_for(format!("127.0.0.1:{port}")).await,
            "200",
            "{path}"
        );
    }
    connect_ws_url(
        relay.addr,
        &format!("ws://localhost:{port}/v1/sync"),
        None,
        &[],
    )
    .await
    .expect("localhost is a loopback name");
    connect_ws_url(
        relay.addr,
        &format!("ws://app.localhost:{port}/v1/sync"),
        None,
        &[],
    )
    .await
    .expect("names under localhost are loopback (RFC 6761)");

    // Queries: refused to other sites, and no CORS header lets any page read an answer.
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[("origin", "https://evil.example.com")],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 403);
    assert_eq!(q.header("access-control-allow-origin"), None);
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 200);
    assert_eq!(q.header("access-control-allow-origin"), None);
    let pre = http(
        relay.addr,
        "OPTIONS",
        "/v1/query",
        &[("origin", "https://evil.example.com")],
        "",
    )
    .await;
    assert_eq!(pre.header("access-control-allow-origin"), None);
    relay.stop().await;
}

/// An allow-list opens an anonymous relay to exactly the sites it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_relay_admits_listed_origins() {
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::None;
        c.origins = vec!["https://app.example.com".into()];
    })
    .await;
    let url = relay.ws_url();
    connect_ws_url(
        relay.addr,
        &url,
        None,
        &[("origin", "https://app.example.com")],
    )
    .await
    .expect("listed origin");
    let (status, _) = refused(
        connect_ws_url(
            relay.addr,
            &url,
            None,
            &[("origin", "https://evil.example.com")],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    relay.stop().await;
}

/// `--origin` takes the origins of desktop apps and extensions (any scheme) and `null`
/// (Electron pages from file://), as the 403 message suggests: it once refused them at
/// startup, so the flag the message named could not be given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_of_apps_extensions_and_null_can_be_listed() {
    let listed = ["tauri://localhost", "chrome-extension://abcdef", "null"];
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::None;
        c.origins = listed.iter().map(|o| o.to_string()).collect();
    })
    .await;
    let url = relay.ws_url();
    for origin in listed {
        connect_ws_url(relay.addr, &url, None, &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
    }
    let other = "moz-extension://6f1e2d3c-0000-4a5b-9c8d-123456789abc";
    let (status, body) = refused(
        connect_ws_url(relay.addr, &url, None, &[("origin", other)])
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(&format!("--origin {other}")), "{message}");
    relay.stop().await;

    // The flag the message suggests starts a relay that admits that origin.
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::None;
        c.origins = vec![other.into()];
    })
    .await;
    connect_ws_url(relay.addr, &relay.ws_url(), None, &[("origin", other)])
        .await
        .expect("the suggested --origin admits it");
    relay.stop().await;
}

/// `--origin` entries and `Origin`/`Host` headers compare as browsers mean them: a default
/// port is no port (browsers never send `:443`), schemes and names in any case, a fully
/// qualified name (`localhost.`) is the name. A port out of range is refused at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_hosts_compare_as_browsers_mean_them() {
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::None;
        c.origins = vec![
            "https://app.example.com:443".into(),
            "HTTP://[0:0:0:0:0:0:0:1]:3000".into(),
        ];
    })
    .await;
    let url = relay.ws_url();
    for origin in [
        "https://app.example.com",
        "https://APP.example.com.",
        "http://[::1]:3000",
    ] {
        connect_ws_url(relay.addr, &url, None, &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
    }
    for origin in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://user@app.example.com",
        "https://app.example.com/page",
    ] {
        let (status, _) = refused(
            connect_ws_url(relay.addr, &url, None, &[("origin", origin)])
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 403, "{origin}");
    }
    // The Host check of an anonymous relay on loopback (DNS rebinding).
    let port = relay.addr.port();
    for host in [format!("localhost.:{port}"), format!("[::1]:{port}")] {
        connect_ws_url(relay.addr, &url, None, &[("host", &host)])
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    for host in [
        format!("localhost:{port}@evil.example.com"),
        format!("evil.example.com.:{port}"),
        "localhost:99999".to_owned(),
    ] {
        let (status, body) = refused(
            connect_ws_url(relay.addr, &url, None, &[("host", &host)])
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 403, "{host}");
        assert_eq!(body["code"], "host_not_allowed", "{host}");
    }
    relay.stop().await;

    for bad in ["https://app.example.com:65536", "https://app.example.com:"] {
        let dir = tempfile::tempdir().unwrap();
        let config = blazedb_relay::RelayConfig {
            data_dir: dir.path().join("relay"),
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: AuthConfig::None,
            origins: vec![bad.into()],
            ..blazedb_relay::RelayConfig::default()
        };
        let e = blazedb_relay::Relay::bind(config).await.unwrap_err();
        assert!(e.to_string().contains("must look like"), "{bad}: {e}");
    }
}

/// Refused origins and hosts are counted in `requests_refused_total{reason}`, whose label
/// takes a fixed set of values (never the origin or host a client sent): before, only the log
/// said a site or a rebinding name was being turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_origins_and_hosts_are_counted_by_reason() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start(|c| c.auth = AuthConfig::None).await;
    let url = relay.ws_url();
    for n in 0..3 {
        let origin = format!("https://site-{n}.example.com");
        let (status, _) = refused(
            connect_ws_url(relay.addr, &url, None, &[("origin", &origin)])
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 403);
    }
    let q = http(
        relay.addr,
        "POST",
        "/v1/query",
        &[("origin", "https://another.example.com")],
        r#"{"collection":"x"}"#,
    )
    .await;
    assert_eq!(q.status, 403);
    for path in ["/health", "/v1/sync"] {
        let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: rebind.evil.example.com\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    }

    let metrics = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    // Every other reason is there too, at 0 (from the start).
    let mut series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("blazedb_relay_requests_refused_total") && !l.ends_with(" 0"))
        .collect();
    series.sort_unstable();
    assert_eq!(
        series,
        [
            "blazedb_relay_requests_refused_total{reason=\"host_not_allowed\"} 2",
            "blazedb_relay_requests_refused_total{reason=\"origin_not_allowed\"} 4",
        ],
        "{metrics}"
    );
    relay.stop().await;
}
