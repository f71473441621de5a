//! `connect` to a `ws://` URL: the client does the HTTP upgrade and carries the session over
//! binary WebSocket messages, against a plain WebSocket server on 127.0.0.1 built from the
//! same adapter.

mod common;
mod transport_common;

use blazedb::sync::SessionConfig;
use blazedb_net::transport::{ConnectOptions, TransportError};
use blazedb_net::ws::{websocket_config, WsStream};
use blazedb_net::{run_session, sync_once, ClientOptions, DriverOptions, Endpoint};
use common::{dump, fill, open};
use tokio::net::TcpListener;
use transport_common::TEST_LIMIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_url_syncs_with_a_websocket_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 300, 30, "a");
        fill(&b, "d", 30, 10, "b");
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let server = {
            let b = b.clone();
            tokio::spawn(async move {
                let (socket, _) = tcp.accept().await.unwrap();
                let ws =
                    tokio_tungstenite::accept_async_with_config(socket, Some(websocket_config()))
                        .await
                        .unwrap();
                let cfg = SessionConfig {
                    server: true,
                    ..SessionConfig::default()
                };
                run_session(b, WsStream::new(ws), cfg, DriverOptions::default()).await
            })
        };
        let url: Endpoint = format!("ws://{addr}/v1/sync").parse().unwrap();
        let report = sync_once(a.clone(), &url, &ClientOptions::default())
            .await
            .unwrap();
        assert!(report.traffic.cells_sent > 0 && report.traffic.cells_received > 0);
        server.await.unwrap().unwrap();
        assert_eq!(dump(&a), dump(&b));
    })
    .await
    .expect("test took too long");
}

#[tokio::test]
async fn a_server_that_is_not_websocket_fails_the_upgrade() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = tcp.accept().await.unwrap();
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let url: Endpoint = format!("ws://{addr}/nope").parse().unwrap();
    let r = blazedb_net::connect(&url, &ConnectOptions::default()).await;
    assert!(
        matches!(r, Err(TransportError::WebSocket { .. })),
        "{:?}",
        r.err()
    );
}

/// A relay refusing the credentials answers the upgrade `401` with a JSON explanation: the
/// client reports that explanation with what to check, and counts it as permanent (retrying
/// with the same token cannot help), unlike a server that is down or not a WebSocket.
#[tokio::test]
async fn a_refused_token_is_a_permanent_error_that_says_what_to_check() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = tcp.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = s.read(&mut request).await;
        let body = br#"{"code":"auth_failed","error":"invalid token"}"#;
        let head = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body).await;
    });
    let url: Endpoint = format!("ws://{addr}/v1/sync").parse().unwrap();
    let opts = ConnectOptions {
        bearer_token: Some("wrong".into()),
        ..ConnectOptions::default()
    };
    let e = blazedb_net::connect(&url, &opts).await.err().unwrap();
    assert!(
        matches!(e, TransportError::Refused { status: 401, .. }),
        "{e:?}"
    );
    assert!(e.is_permanent());
    let message = e.to_string();
    assert!(
        message.contains("invalid token") && message.contains("--token"),
        "{message}"
    );
}
