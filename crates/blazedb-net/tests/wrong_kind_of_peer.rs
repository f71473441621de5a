//! A URL that reaches the wrong kind of peer (or none) fails with an error that says what is
//! there and what to write instead, not with a checksum error or a bare status line:
//!
//! - `tcp://` to a web server or a relay's HTTP port: "answered in HTTP" (the reply's first
//!   bytes used to be read as a frame, and failed its checksum as if the network had garbled
//!   it);
//! - `ws://` to a redirect, a web page, or a raw-frame port (`blazedb listen --tcp`);
//! - nothing listening on a port, and no socket at a `unix://` path.

mod common;
mod transport_common;

use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::ListenConfig;
use blazedb_net::{sync_once, ClientOptions, Endpoint};
use common::open;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use transport_common::{listen_tcp, TEST_LIMIT};

/// A server on 127.0.0.1 that answers every connection with `reply` once it has read
/// something (a HELLO or an HTTP request), then closes.
async fn canned_server(reply: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

async fn error_of(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "a");
    let endpoint: Endpoint = url.parse().unwrap();
    let r = tokio::time::timeout(
        TEST_LIMIT,
        sync_once(db.clone(), &endpoint, &ClientOptions::default()),
    )
    .await
    .expect("fails at once");
    let e: ClientError = r.expect_err("no BlazeDB peer there");
    assert_eq!(db.count("c").unwrap(), 0);
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_an_http_server_is_told_it_answered_in_http() {
    let addr = canned_server(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nBad Request",
    )
    .await;
    let e = error_of(&format!("tcp://{addr}")).await;
    assert!(
        e.contains("the peer answered in HTTP, not in BlazeDB frames")
            && e.contains("ws://HOST:PORT/v1/sync"),
        "{e}"
    );
    assert!(!e.contains("checksum"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_to_a_redirect_a_web_page_or_a_raw_frame_port_says_what_is_there() {
    let redirect = canned_server(
        "HTTP/1.1 301 Moved Permanently\r\nlocation: https://relay.example/v1/sync\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let e = error_of(&format!("ws://{redirect}/v1/sync")).await;
    assert!(
        e.contains("redirects to https://relay.example/v1/sync: connect there (wss://"),
        "{e}"
    );

    let page = canned_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>",
    )
    .await;
    let e = error_of(&format!("ws://{page}/v1/sync")).await;
    assert!(
        e.contains("a web server answered, not a BlazeDB relay"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let listener = listen_tcp(open(dir.path(), "hub"), ListenConfig::default()).await;
    let port = listener.tcp_addr().unwrap().port();
    let e = error_of(&format!("ws://127.0.0.1:{port}/v1/sync")).await;
    assert!(e.contains("use tcp:// or tls://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_and_a_missing_socket_say_what_to_start() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = error_of(&format!("tcp://127.0.0.1:{port}")).await;
    assert!(
        e.contains("nothing listens there: is `blazedb listen` or `blazedb serve` running"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("hub.sock");
    let e = error_of(&format!("unix://{}", missing.display())).await;
    assert!(e.contains("no socket at that path"), "{e}");
}

/// A server of another protocol whose first bytes are no BlazeDB frame (a length beyond
/// the limit, or a frame that fails its checksum) is said to be probably no BlazeDB peer,
/// not only "frame of N bytes exceeds the limit".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_first_frame_says_the_peer_is_probably_not_blazedb() {
    let e = error_of(&format!(
        "tcp://{}",
        canned_server("\u{5}hello\0\0\0\0").await
    ))
    .await;
    assert!(e.contains("CHECKSUM"), "{e}");
    assert!(
        e.contains("it is probably not a BlazeDB peer") && e.contains("check the host and port"),
        "{e}"
    );
    // A server that speaks first, with what reads as a length of 4 GiB.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket
                    .write_all(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3])
                    .await;
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let e = error_of(&format!("tcp://{addr}")).await;
    assert!(
        e.contains("TOO_LARGE") && e.contains("it is probably not a BlazeDB peer"),
        "{e}"
    );
}
