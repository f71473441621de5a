//! A listener's certificate renewed on disk (an ACME client replacing the files) is served
//! from the next handshake on, without a restart: the sessions open stay, new clients meet the
//! new certificate. A renewal caught half-done — the certificate written, its key not yet —
//! keeps the old pair served until the key arrives, and says so.

mod common;
mod transport_common;

use std::path::Path;
use std::time::Duration;

use blazedb_net::transport::listen::ListenEvent;
use blazedb_net::transport::tls::TlsFilesEvent;
use blazedb_net::transport::{ListenConfig, TlsClientOptions};
use blazedb_net::{sync_once, sync_watch, Endpoint};
use common::{count, fill, open, CONVERGE};
use transport_common::{listen_tcp, make_pki, tls_client, TEST_LIMIT};

/// Replace `path` with `from`'s bytes as a renewal does: a new file renamed over it.
fn replace_with(path: &Path, from: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The next TLS file event of the listener (others skipped).
async fn next_tls_event(
    events: &mut tokio::sync::broadcast::Receiver<ListenEvent>,
) -> TlsFilesEvent {
    loop {
        match tokio::time::timeout(CONVERGE, events.recv()).await {
            Ok(Ok(ListenEvent::TlsFiles(e))) => return e,
            Ok(Ok(_)) => {}
            other => panic!("no TLS file event: {other:?}"),
        }
    }
}

fn trusting(ca: &Path) -> blazedb_net::ClientOptions {
    tls_client(TlsClientOptions {
        ca_pem: Some(ca.to_path_buf()),
        ..TlsClientOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (old, new) = (make_pki(d, "old"), make_pki(d, "new"));
        let (cert, key) = (d.join("served-cert.pem"), d.join("served-key.pem"));
        replace_with(&cert, &old.server_cert);
        replace_with(&key, &old.server_key);
        let mut tls = old.server_tls(false);
        tls.cert_pem = cert.clone();
        tls.key_pem = key.clone();

        let server = open(d, "server");
        let listener = listen_tcp(
            server.clone(),
            ListenConfig {
                tls: Some(tls),
                ..ListenConfig::default()
            },
        )
        .await;
        let url: Endpoint = listener.urls()[0].parse().unwrap();
        let mut events = listener.events();

        // A device syncing all along, connected under the old certificate.
        let device = open(d, "device");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watching = tokio::spawn({
            let (device, url, options) = (device.clone(), url.clone(), trusting(&old.ca_pem));
            async move {
                let stopped = async {
                    let _ = stopped.await;
                };
                sync_watch(device, &url, &options, stopped, |_| {}).await
            }
        });
        fill(&device, "notes", 3, 3, "before");
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while count(&server, "notes") < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the device never synced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Half-done: the new certificate is there, its key not yet. The old pair goes on
        // being served, and the listener says why.
        replace_with(&cert, &new.server_cert);
        match next_tls_event(&mut events).await {
            TlsFilesEvent::CertificateUnusable(why) => {
                assert!(why.contains("served-key.pem"), "{why}");
                assert!(why.contains("still served"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        sync_once(open(d, "old-client"), &url, &trusting(&old.ca_pem))
            .await
            .expect("the old certificate is still served");

        // The key arrives: the new certificate is served from the next handshake on.
        replace_with(&key, &new.server_key);
        assert_eq!(
            next_tls_event(&mut events).await,
            TlsFilesEvent::CertificateReloaded
        );
        sync_once(open(d, "new-client"), &url, &trusting(&new.ca_pem))
            .await
            .expect("the renewed certificate is served");
        let e = sync_once(open(d, "stale-client"), &url, &trusting(&old.ca_pem))
            .await
            .expect_err("a client trusting only the old CA now refuses the server");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

        // The session open since before the renewal goes on.
        fill(&device, "notes", 3, 3, "after");
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while count(&server, "notes") < 6 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the open session stopped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!watching.is_finished());
        stop.send(()).unwrap();
        watching.await.unwrap().unwrap();
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
