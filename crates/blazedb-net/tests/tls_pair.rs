//! `listen` with TLS and `sync_once` to a `tls://` URL trusting the test CA: the replicas
//! converge; with client-certificate verification on, a client presenting a certificate
//! of that CA is served.

mod common;
mod transport_common;

use blazedb_net::transport::{ConnectOptions, ListenConfig, TlsClientOptions};
use blazedb_net::{sync_once, ClientOptions, Endpoint};
use common::{dump, fill, open};
use transport_common::{listen_tcp, make_pki, TEST_LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_ca_converges() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "ok");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 500, 50, "a");
        fill(&b, "d", 50, 10, "b");

        let tls = pki.server_tls(false);
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(tls),
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        assert!(url.to_string().starts_with("tls://127.0.0.1:"), "{url}");
        let opts = ClientOptions {
            connect: ConnectOptions {
                tls: TlsClientOptions {
                    ca_pem: Some(pki.ca_pem.clone()),
                    ..TlsClientOptions::default()
                },
                ..ConnectOptions::default()
            },
            ..ClientOptions::default()
        };
        let report = sync_once(a.clone(), &url, &opts).await.unwrap();
        assert!(report.traffic.cells_sent > 0);
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_a_client_with_a_certificate_of_the_ca() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "mtls");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
        let tls = pki.server_tls(true);
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(tls),
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        let opts = ClientOptions {
            connect: ConnectOptions {
                tls: TlsClientOptions {
                    ca_pem: Some(pki.ca_pem.clone()),
                    client_cert_pem: Some(pki.client_cert.clone()),
                    client_key_pem: Some(pki.client_key.clone()),
                    ..TlsClientOptions::default()
                },
                ..ConnectOptions::default()
            },
            ..ClientOptions::default()
        };
        sync_once(a.clone(), &url, &opts).await.unwrap();
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A connection whose TLS handshake is cut short by the listener's shutdown still ends with
/// `Ended` (every `Accepted` has one: a watcher's per-connection bookkeeping relies on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_cut_by_shutdown_still_reports_its_end() {
    use blazedb_net::transport::ListenEvent;
    let dir = tempfile::tempdir().unwrap();
    let pki = transport_common::make_pki(dir.path(), "p");
    let b = common::open(dir.path(), "b");
    let listener = transport_common::listen_tcp(
        b,
        ListenConfig {
            tls: Some(pki.server_tls(false)),
            ..ListenConfig::default()
        },
    )
    .await;
    let mut events = listener.events();
    // Connects, and never starts the handshake.
    let _silent = tokio::net::TcpStream::connect(listener.tcp_addr().unwrap())
        .await
        .unwrap();
    let first = events.recv().await.unwrap();
    assert!(matches!(first, ListenEvent::Accepted { .. }), "{first:?}");
    listener.shutdown().await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(ListenEvent::Ended { .. }) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(ended, "the events closed without Ended");
}

/// TLS configured with only a Unix socket (TLS is served on the TCP address) is an error,
/// not a listener serving plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_tcp_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = transport_common::make_pki(dir.path(), "p");
    let b = common::open(dir.path(), "b");
    let r = blazedb_net::transport::listen(
        b,
        ListenConfig {
            unix: Some(dir.path().join("s.sock")),
            tls: Some(pki.server_tls(false)),
            ..ListenConfig::default()
        },
    )
    .await;
    let e = r.expect_err("refused");
    assert!(e.to_string().contains("TCP address"), "{e}");
    assert!(!dir.path().join("s.sock").exists());
}
