//! A TLS client refuses a server certificate it cannot verify — unknown CA (the built-in
//! web roots), another CA — unless `danger_accept_invalid_certs` is set; a listener that
//! verifies client certificates refuses a client without one. No data flows on a refused
//! connection.

mod common;
mod transport_common;

use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::{ListenConfig, TlsClientOptions, TlsServerOptions, TransportError};
use blazedb_net::{sync_once, sync_watch, Endpoint};
use common::{count, dump, fill, open};
use transport_common::{listen_tcp, make_pki, next_ended, tls_client, TEST_LIMIT};

fn assert_handshake_refused(r: Result<blazedb_net::ClientReport, ClientError>, why: &str) {
    match r {
        Err(ClientError::Transport(e @ TransportError::TlsHandshake { .. })) => {
            let text = e.to_string();
            assert!(text.contains(why), "{why:?} not in {text:?}");
            // The same certificate would be met again: no reconnect loop retries it.
            assert!(e.is_permanent(), "{text}");
        }
        other => panic!("expected a refused TLS handshake ({why}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificates_are_refused_unless_danger() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "server");
        let other = make_pki(dir.path(), "other");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
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

        // Built-in web roots: the test CA is unknown.
        let r = sync_once(a.clone(), &url, &tls_client(TlsClientOptions::default())).await;
        assert_handshake_refused(r, "UnknownIssuer");
        // Another CA (a different self-signed certificate): refused just the same.
        let wrong = TlsClientOptions {
            ca_pem: Some(other.ca_pem.clone()),
            ..TlsClientOptions::default()
        };
        let r = sync_once(a.clone(), &url, &tls_client(wrong.clone())).await;
        assert_handshake_refused(r, "UnknownIssuer");
        // A watching client gives up with the same error instead of retrying forever.
        let stop = std::future::pending::<()>();
        let r = sync_watch(a.clone(), &url, &tls_client(wrong.clone()), stop, |_| {}).await;
        assert_handshake_refused(r, "UnknownIssuer");
        assert_eq!(count(&b, "c"), 0, "nothing flowed over a refused handshake");

        // The certificate is fine but for another name: refused too.
        let by_name: Endpoint = format!("tls://localhost:{}", listener.tcp_addr().unwrap().port())
            .parse()
            .unwrap();
        let right_ca = TlsClientOptions {
            ca_pem: Some(pki.ca_pem.clone()),
            ..TlsClientOptions::default()
        };
        sync_once(a.clone(), &by_name, &tls_client(right_ca))
            .await
            .unwrap();
        let other_pki_listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(TlsServerOptions {
                    cert_pem: other.client_cert.clone(),
                    key_pem: other.client_key.clone(),
                    client_ca_pem: None,
                    client_crl_pem: Vec::new(),
                }),
                ..ListenConfig::default()
            },
        )
        .await;
        let misnamed: Endpoint = other_pki_listener.urls()[0].parse().unwrap();
        let other_ca = TlsClientOptions {
            ca_pem: Some(other.ca_pem.clone()),
            ..TlsClientOptions::default()
        };
        let r = sync_once(a.clone(), &misnamed, &tls_client(other_ca)).await;
        assert_handshake_refused(r, "not valid for name");

        // The development escape hatch: any certificate goes.
        let danger = TlsClientOptions {
            danger_accept_invalid_certs: true,
            ..wrong
        };
        let report = sync_once(a.clone(), &url, &tls_client(danger))
            .await
            .unwrap();
        assert_eq!(report.peer, Some(b.node_id()));
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
        other_pki_listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_when_they_are_required() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "mtls");
        let stranger = make_pki(dir.path(), "stranger");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 100, 10, "a");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(pki.server_tls(true)),
                ..ListenConfig::default()
            },
        )
        .await;
        let mut events = listener.events();
        let url: Endpoint = listener.urls()[0].parse().unwrap();

        for (label, cert, key) in [
            ("no certificate", None, None),
            (
                "a certificate of another CA",
                Some(stranger.client_cert.clone()),
                Some(stranger.client_key.clone()),
            ),
        ] {
            let tls = TlsClientOptions {
                ca_pem: Some(pki.ca_pem.clone()),
                client_cert_pem: cert,
                client_key_pem: key,
                ..TlsClientOptions::default()
            };
            // With TLS 1.3 the client learns of the refusal only when it reads: the
            // handshake or the session fails, never succeeds.
            let r = sync_once(a.clone(), &url, &tls_client(tls)).await;
            assert!(r.is_err(), "{label}: {r:?}");
            let (report, error) = next_ended(&mut events).await;
            assert!(report.is_none(), "{label}: no session ran");
            assert!(error.unwrap().starts_with("TLS"), "{label}");
        }
        assert_eq!(count(&b, "c"), 0, "nothing flowed");
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
