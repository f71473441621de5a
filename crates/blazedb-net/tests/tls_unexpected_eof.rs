//! A TLS peer whose connection ends without TLS's close_notify (a crashed process, a cut
//! network) is a peer gone, as over TCP: "closed the connection without ending the session;
//! reconnect to resume", not rustls's "peer closed connection without sending TLS
//! close_notify: https://docs.rs/rustls/…".

mod common;
mod transport_common;

use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::TlsClientOptions;
use blazedb_net::{sync_once, Endpoint, NetError};
use common::open;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use transport_common::{make_pki, tls_client, TEST_LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_peer_gone_without_close_notify_is_a_closed_connection() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "eof");
        let acceptor = pki.server_tls(false).acceptor().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Completes the handshake, reads the client's HELLO, then drops the TCP connection
        // without a close_notify (and without a HELLO of its own).
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let (tcp, _) = tls.into_inner();
                    drop(tcp);
                });
            }
        });
        let a = open(dir.path(), "a");
        let url: Endpoint = format!("tls://{addr}").parse().unwrap();
        let opts = tls_client(TlsClientOptions {
            ca_pem: Some(pki.ca_pem.clone()),
            ..TlsClientOptions::default()
        });
        let e = sync_once(a, &url, &opts).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Session(NetError::Disconnected { .. })),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("the peer closed the connection without ending the session"),
            "{text}"
        );
        assert!(!text.contains("close_notify"), "{text}");
    })
    .await
    .expect("test took too long");
}
