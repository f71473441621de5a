//! A listener requiring client certificates refuses those on its revocation lists
//! (`TlsServerOptions::client_crl_pem`), and reads a list again when its file changes: a
//! device revoked while the listener runs is refused at its next connection, no restart. A
//! list it cannot read refuses every client certificate until it can (failing closed), and
//! a list that cannot cover a client's certificate (another CA's) refuses it too. A server
//! does not start with a list it cannot use. A session open with a certificate that a list
//! read again revokes ends, its client told why; the others go on.

mod common;
mod transport_common;

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use blazedb::Database;
use blazedb_net::transport::listen::ListenEvent;
use blazedb_net::transport::tls::TlsFilesEvent;
use blazedb_net::transport::{ConnectOptions, ListenConfig, TlsClientOptions, TlsServerOptions};
use blazedb_net::{sync_once, sync_watch, ClientError, ClientOptions, ClientReport, Endpoint};
use common::{count, fill, open, CONVERGE};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use transport_common::{listen_tcp, TEST_LIMIT};

/// A CA, and the files of what it signed.
struct Ca {
    name: &'static str,
    cert: Certificate,
    key: KeyPair,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &'static str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            name,
            cert,
            key,
            pem,
        }
    }

    /// A certificate with serial number `serial` for `names`, and its key: two PEM files.
    fn leaf(&self, dir: &Path, names: &[&str], serial: u8) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let path = |what: &str| dir.join(format!("{}-{serial}-{what}.pem", self.name));
        std::fs::write(path("cert"), cert.pem()).unwrap();
        std::fs::write(path("key"), key.serialize_pem()).unwrap();
        (path("cert"), path("key"))
    }

    /// This CA's revocation list of `serials`, as PEM.
    fn crl(&self, number: u8, serials: &[u8]) -> String {
        let revoked_certs = serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&[*s]),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from_slice(&[number]),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// Replace `path` as an operator should: a new file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn client(ca: &Path, cert: &(PathBuf, PathBuf)) -> ClientOptions {
    ClientOptions {
        connect: ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: Some(ca.to_path_buf()),
                client_cert_pem: Some(cert.0.clone()),
                client_key_pem: Some(cert.1.clone()),
                ..TlsClientOptions::default()
            },
            ..ConnectOptions::default()
        },
        ..ClientOptions::default()
    }
}

/// A listener for `db` on 127.0.0.1 with these TLS settings, and its URL.
async fn listen_tls(
    db: std::sync::Arc<blazedb::Database>,
    tls: TlsServerOptions,
) -> (blazedb_net::transport::Listener, Endpoint) {
    let listener = listen_tcp(
        db,
        ListenConfig {
            tls: Some(tls),
            ..ListenConfig::default()
        },
    )
    .await;
    let url = listener.urls()[0].parse().unwrap();
    (listener, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused_and_lists_are_read_again() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::new(d, "ours");
        let (server_cert, server_key) = ca.leaf(d, &["127.0.0.1", "localhost"], 1);
        let laptop = ca.leaf(d, &["laptop.test"], 2);
        let phone = ca.leaf(d, &["phone.test"], 3);
        let crl = d.join("ours.crl.pem");
        std::fs::write(&crl, ca.crl(1, &[3])).unwrap();

        let (a, b) = (open(d, "a"), open(d, "b"));
        fill(&a, "c", 10, 10, "a");
        let tls = TlsServerOptions {
            cert_pem: server_cert.clone(),
            key_pem: server_key.clone(),
            client_ca_pem: Some(ca.pem.clone()),
            client_crl_pem: vec![crl.clone()],
        };
        let (listener, url) = listen_tls(b.clone(), tls.clone()).await;

        // The phone is on the list; the laptop is not.
        let e = sync_once(a.clone(), &url, &client(&ca.pem, &phone))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("revoked this client's TLS certificate"), "{e}");
        assert!(e.contains("--tls-client-cert"), "{e}");
        assert_eq!(count(&b, "c"), 0, "nothing flowed from the revoked phone");
        sync_once(a.clone(), &url, &client(&ca.pem, &laptop))
            .await
            .unwrap();
        assert_eq!(count(&b, "c"), 10);

        // The laptop is lost: the CA's next list names it too. The running listener refuses
        // it at its next connection.
        replace(&crl, &ca.crl(2, &[2, 3]));
        let e = sync_once(a.clone(), &url, &client(&ca.pem, &laptop))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("revoked this client's TLS certificate"), "{e}");

        // A list that cannot be read refuses everyone (failing closed), until it can be again.
        let unrevoked = ca.leaf(d, &["tablet.test"], 4);
        replace(
            &crl,
            "-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n",
        );
        assert!(sync_once(a.clone(), &url, &client(&ca.pem, &unrevoked))
            .await
            .is_err());
        std::fs::remove_file(&crl).unwrap();
        assert!(sync_once(a.clone(), &url, &client(&ca.pem, &unrevoked))
            .await
            .is_err());
        replace(&crl, &ca.crl(3, &[2, 3]));
        sync_once(a.clone(), &url, &client(&ca.pem, &unrevoked))
            .await
            .unwrap();
        listener.shutdown().await;

        // A list of another CA only: the status of our clients' certificates is unknown, and
        // they are refused rather than let in unchecked.
        let other = Ca::new(d, "other");
        let other_crl = d.join("other.crl.pem");
        std::fs::write(&other_crl, other.crl(1, &[])).unwrap();
        let (listener, url) = listen_tls(
            b.clone(),
            TlsServerOptions {
                client_crl_pem: vec![other_crl.clone()],
                ..tls.clone()
            },
        )
        .await;
        let e = sync_once(a.clone(), &url, &client(&ca.pem, &unrevoked))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused this client's TLS certificate"), "{e}");
        // Both lists given: ours decides.
        listener.shutdown().await;
        let (listener, url) = listen_tls(
            b.clone(),
            TlsServerOptions {
                client_crl_pem: vec![other_crl.clone(), crl.clone()],
                ..tls.clone()
            },
        )
        .await;
        sync_once(a.clone(), &url, &client(&ca.pem, &unrevoked))
            .await
            .unwrap();
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// `db` synced with `url` until `stop` fires or the session fails for good.
fn watch(
    db: Arc<Database>,
    url: &Endpoint,
    options: ClientOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ClientReport, ClientError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let url = url.clone();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        sync_watch(db, &url, &options, stopped, |_| {}).await
    });
    (stop, task)
}

/// Wait (at most [`CONVERGE`]) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next revocation list event of the listener (others skipped).
async fn next_lists_event(
    events: &mut tokio::sync::broadcast::Receiver<ListenEvent>,
) -> Option<String> {
    loop {
        match tokio::time::timeout(CONVERGE, events.recv()).await {
            Ok(Ok(ListenEvent::TlsFiles(TlsFilesEvent::RevocationListsUnusable(e)))) => {
                return Some(e)
            }
            Ok(Ok(ListenEvent::TlsFiles(TlsFilesEvent::RevocationListsUsable))) => return None,
            Ok(Ok(_)) => {}
            other => panic!("no revocation list event: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_session_ends_when_a_list_read_again_revokes_its_certificate() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::new(d, "ours");
        let (server_cert, server_key) = ca.leaf(d, &["127.0.0.1", "localhost"], 1);
        let laptop = ca.leaf(d, &["laptop.test"], 2);
        let phone = ca.leaf(d, &["phone.test"], 3);
        let crl = d.join("ours.crl.pem");
        std::fs::write(&crl, ca.crl(1, &[])).unwrap();

        let (on_laptop, on_phone, server) = (open(d, "laptop"), open(d, "phone"), open(d, "b"));
        let tls = TlsServerOptions {
            cert_pem: server_cert,
            key_pem: server_key,
            client_ca_pem: Some(ca.pem.clone()),
            client_crl_pem: vec![crl.clone()],
        };
        let (listener, url) = listen_tls(server.clone(), tls).await;
        let mut events = listener.events();
        let (stop_laptop, laptop_sync) = watch(on_laptop.clone(), &url, client(&ca.pem, &laptop));
        let (_stop_phone, phone_sync) = watch(on_phone.clone(), &url, client(&ca.pem, &phone));
        fill(&on_laptop, "laptop", 5, 5, "l");
        fill(&on_phone, "phone", 5, 5, "p");
        until("both devices synced", || {
            count(&server, "laptop") == 5 && count(&server, "phone") == 5
        })
        .await;

        // A list caught half-written: new connections are refused (the other test), but the
        // sessions open stay — each was admitted under a list that could be read.
        replace(
            &crl,
            "-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n",
        );
        let error = next_lists_event(&mut events).await.expect("unusable");
        assert!(error.contains("ours.crl.pem"), "{error}");
        assert!(
            error.contains("every client certificate is refused"),
            "{error}"
        );
        fill(&on_phone, "phone", 5, 5, "p2");
        until("the phone still syncs", || count(&server, "phone") == 10).await;
        assert!(!phone_sync.is_finished());

        // The phone is lost: the CA's next list names it. Its open session ends within the
        // listener's look at the files, and its client is told why and stops.
        replace(&crl, &ca.crl(2, &[3]));
        assert_eq!(next_lists_event(&mut events).await, None, "usable again");
        let ended = tokio::time::timeout(CONVERGE, phone_sync)
            .await
            .expect("the phone's session ended")
            .unwrap();
        let e = ended
            .expect_err("a revoked device's sync fails")
            .to_string();
        assert!(e.contains("revoked this client's TLS certificate"), "{e}");
        assert!(e.contains("AUTH_FAILED") || e.contains("auth"), "{e}");
        fill(&on_phone, "phone", 5, 5, "p3");

        // The laptop's session goes on.
        fill(&on_laptop, "laptop", 5, 5, "l2");
        until("the laptop still syncs", || count(&server, "laptop") == 10).await;
        assert!(!laptop_sync.is_finished());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            count(&server, "phone"),
            10,
            "nothing more came from the phone"
        );
        stop_laptop.send(()).unwrap();
        laptop_sync.await.unwrap().unwrap();
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A server does not start with a list it cannot use, and says which file and why.
#[test]
fn unusable_lists_stop_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ours");
    let (cert_pem, key_pem) = ca.leaf(d, &["127.0.0.1"], 1);
    let with = |client_ca: Option<PathBuf>, crl: PathBuf| TlsServerOptions {
        cert_pem: cert_pem.clone(),
        key_pem: key_pem.clone(),
        client_ca_pem: client_ca,
        client_crl_pem: vec![crl],
    };
    let missing = d.join("missing.crl.pem");
    let e = with(Some(ca.pem.clone()), missing.clone())
        .server_config()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.crl.pem") && e.contains("cannot read"),
        "{e}"
    );
    // A certificate where the list should be.
    let e = with(Some(ca.pem.clone()), cert_pem.clone())
        .server_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no X509 CRL block"), "{e}");
    // A list without the CA it belongs with.
    let crl = d.join("ours.crl.pem");
    std::fs::write(&crl, ca.crl(1, &[])).unwrap();
    let e = with(None, crl.clone())
        .server_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-client-ca"), "{e}");
    with(Some(ca.pem.clone()), crl).server_config().unwrap();
}
