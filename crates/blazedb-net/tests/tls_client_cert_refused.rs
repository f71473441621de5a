//! A client whose certificate a listener requiring client certificates refuses (none, one of
//! another CA, an expired one) is told so and what to pass, not just "received fatal alert".
//! With TLS 1.3 the refusal reaches the client after its side of the handshake, on the first
//! read of the session: a watching client still gives up on a missing or untrusted
//! certificate (the next attempt presents the same one), and keeps retrying an expired one
//! (renewing it, or setting a clock, mends that without a restart).

mod common;
mod transport_common;

use std::path::PathBuf;
use std::time::Duration;

use blazedb_net::reconnect::{BackoffConfig, ClientError, ClientEvent};
use blazedb_net::transport::{ConnectOptions, ListenConfig, TlsClientOptions};
use blazedb_net::{sync_once, sync_watch, ClientOptions, Endpoint};
use common::{count, fill, open};
use transport_common::{listen_tcp, make_pki, TEST_LIMIT};

fn client(ca: PathBuf, cert: Option<(PathBuf, PathBuf)>) -> ClientOptions {
    let (client_cert_pem, client_key_pem) = cert.unzip();
    ClientOptions {
        connect: ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: Some(ca),
                client_cert_pem,
                client_key_pem,
                ..TlsClientOptions::default()
            },
            ..ConnectOptions::default()
        },
        backoff: BackoffConfig {
            initial_ms: 10,
            max_ms: 50,
            ..BackoffConfig::default()
        },
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_certificates_are_explained_and_not_retried_forever() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "mtls");
        let stranger = make_pki(dir.path(), "stranger");
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 10, 10, "a");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                tls: Some(pki.server_tls(true)),
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();

        for (label, cert, said) in [
            ("no certificate", None, "requires a TLS client certificate"),
            (
                "a certificate of another CA",
                Some((stranger.client_cert.clone(), stranger.client_key.clone())),
                "refused this client's TLS certificate",
            ),
        ] {
            let options = client(pki.ca_pem.clone(), cert);
            let e = sync_once(a.clone(), &url, &options).await.unwrap_err();
            let text = e.to_string();
            assert!(text.contains(said), "{label}: {text}");
            assert!(text.contains("--tls-client-cert"), "{label}: {text}");
            // The next attempt would present the same certificate: a watching client ends.
            let stop = std::future::pending::<()>();
            let watched = tokio::time::timeout(
                Duration::from_secs(5),
                sync_watch(a.clone(), &url, &options, stop, |_| {}),
            )
            .await
            .unwrap_or_else(|_| panic!("{label}: sync_watch kept retrying"));
            assert!(
                matches!(&watched, Err(e) if e.to_string().contains(said)),
                "{label}: {watched:?}"
            );
        }

        // Expired: said so, and retried (a renewed certificate or a set clock mends it).
        let expired = Some((
            pki.expired_client_cert.clone(),
            pki.expired_client_key.clone(),
        ));
        let options = client(pki.ca_pem.clone(), expired);
        let e = sync_once(a.clone(), &url, &options).await.unwrap_err();
        assert!(e.to_string().contains("expired or not yet valid"), "{e}");
        let (retried_tx, retried) = tokio::sync::oneshot::channel::<()>();
        let mut retried_tx = Some(retried_tx);
        let stop = async {
            let _ = retried.await;
        };
        let watch = sync_watch(a.clone(), &url, &options, stop, move |event| {
            if let ClientEvent::Retrying { error, .. } = event {
                assert!(error.contains("expired or not yet valid"), "{error}");
                if let Some(tx) = retried_tx.take() {
                    let _ = tx.send(());
                }
            }
        });
        let r: Result<_, ClientError> = watch.await;
        assert!(r.is_ok(), "stopped after a retry, not given up: {r:?}");

        assert_eq!(count(&b, "c"), 0, "nothing flowed");
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
