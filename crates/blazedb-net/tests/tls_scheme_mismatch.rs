//! The wrong scheme for a port, and the self-signed certificate every tutorial makes, each get
//! an error that says what to do instead of "the peer closed the connection":
//!
//! - `tcp://` to a TLS listener: the listener sees no TLS handshake and answers with an ERROR
//!   frame in plaintext (`Forbidden`: use `tls://`), which a watching client does not retry;
//! - `tls://` to a plain listener: the handshake fails, saying the peer did not answer in TLS;
//! - a server certificate that is its own CA (CA:TRUE, `openssl req -x509`'s default), given to
//!   the client as its CA: refused by TLS whatever the client trusts, and the error says how to
//!   make one that works.
//!
//! Nothing flows in any of them, and the listener goes on serving clients that connect right.

mod common;
mod transport_common;

use blazedb::sync::ErrorCode;
use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::{ListenConfig, TlsClientOptions, TransportError};
use blazedb_net::{sync_once, sync_watch, Endpoint, NetError};
use common::{count, fill, open};
use transport_common::{
    listen_tcp, make_pki, next_ended, self_signed_ca_server, tls_client, TEST_LIMIT,
};

fn trusting(ca: &std::path::Path) -> TlsClientOptions {
    TlsClientOptions {
        ca_pem: Some(ca.to_path_buf()),
        ..TlsClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_a_tls_listener_is_told_to_use_tls() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "server");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 10, 3, "a");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(pki.server_tls(false)),
                ..ListenConfig::default()
            },
        )
        .await;
        let mut events = listener.events();
        let port = listener.tcp_addr().unwrap().port();
        let plain: Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();

        let told = |r: Result<blazedb_net::ClientReport, ClientError>| match r {
            Err(ClientError::Session(NetError::Sync { error, .. })) => {
                assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
                assert!(error.remote, "the listener said it: {error:?}");
                assert!(error.message.contains("tls://"), "{}", error.message);
            }
            other => panic!("expected the listener's ERROR saying to use TLS, got {other:?}"),
        };
        told(sync_once(a.clone(), &plain, &tls_client(TlsClientOptions::default())).await);
        let (report, error) = next_ended(&mut events).await;
        assert!(report.is_none(), "no session ran");
        let error = error.unwrap();
        assert!(
            error.contains("did not open with a TLS handshake"),
            "{error}"
        );
        // A watching client meets the same answer on every attempt: it stops and says so.
        let stop = std::future::pending::<()>();
        told(
            sync_watch(
                a.clone(),
                &plain,
                &tls_client(TlsClientOptions::default()),
                stop,
                |_| {},
            )
            .await,
        );
        assert_eq!(count(&b, "c"), 0, "nothing flowed");

        // The listener goes on serving, and the right scheme works.
        let right: Endpoint = listener.urls()[0].parse().unwrap();
        sync_once(a.clone(), &right, &tls_client(trusting(&pki.ca_pem)))
            .await
            .unwrap();
        assert_eq!(count(&b, "c"), 10);
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_listener_says_the_peer_does_not_speak_tls() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "server");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 10, 3, "a");
        let listener = listen_tcp(b.clone(), ListenConfig::default()).await;
        let port = listener.tcp_addr().unwrap().port();
        let tls: Endpoint = format!("tls://127.0.0.1:{port}").parse().unwrap();
        match sync_once(a.clone(), &tls, &tls_client(trusting(&pki.ca_pem))).await {
            Err(ClientError::Transport(e @ TransportError::TlsHandshake { .. })) => {
                let text = e.to_string();
                assert!(text.contains("did not answer in TLS"), "{text}");
                assert!(text.contains("tcp://"), "{text}");
            }
            other => panic!("expected a failed TLS handshake, got {other:?}"),
        }
        assert_eq!(count(&b, "c"), 0, "nothing flowed");
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_is_its_own_ca_gets_advice_on_making_one_that_works() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let server_tls = self_signed_ca_server(dir.path(), "dev");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 10, 3, "a");
        let trust_it = trusting(&server_tls.cert_pem);
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(server_tls),
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        match sync_once(a.clone(), &url, &tls_client(trust_it)).await {
            Err(ClientError::Transport(e @ TransportError::TlsHandshake { .. })) => {
                let text = e.to_string();
                assert!(text.contains("CA:TRUE"), "{text}");
                assert!(text.contains("CA:FALSE"), "says how to make one: {text}");
                assert!(e.is_permanent(), "{text}");
            }
            other => panic!("expected a refused certificate, got {other:?}"),
        }
        assert_eq!(count(&b, "c"), 0, "nothing flowed");
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
