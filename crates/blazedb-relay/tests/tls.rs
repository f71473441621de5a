//! With `--tls-cert/--tls-key` the relay serves WSS and TLS-over-TCP: clients that trust the
//! certificate's CA sync through both, and the certificate is checked (a client expecting
//! another name is refused by its own TLS layer). With client certificates and a revocation
//! list, a session open with a certificate the list, read again, revokes ends.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::SessionConfig;
use blazedb_net::ws::{websocket_config, WsStream};
use blazedb_net::{run_session, DriverOptions};
use blazedb_relay::TlsFiles;
use common::{
    auth_failures, metrics_over_tls, open, sessions_closed, wait_until, TestRelay, TOKEN,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixtures().join("tls_ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A relay serving HTTPS/WSS and TLS over TCP with the fixture certificate.
async fn start_tls_relay() -> TestRelay {
    TestRelay::start(|c| {
        c.tls = Some(TlsFiles {
            cert: fixtures().join("tls_cert.pem"),
            key: fixtures().join("tls_key.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        });
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wss_and_tls_over_tcp() {
    let relay = start_tls_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let stop = CancellationToken::new();
    let opts = DriverOptions {
        shutdown: stop.clone(),
        ..DriverOptions::default()
    };
    let name = ServerName::try_from("localhost").unwrap();

    // A: WSS.
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let tls = connector().connect(name.clone(), tcp).await.unwrap();
    let mut req = format!("wss://localhost:{}/v1/sync", relay.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tls, Some(websocket_config()))
        .await
        .unwrap();
    let ta = tokio::spawn(run_session(
        a.clone(),
        WsStream::new(ws),
        SessionConfig::default(),
        opts.clone(),
    ));
    // B: TLS over TCP, token in HELLO.
    let tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    let tls = connector().connect(name, tcp).await.unwrap();
    let cfg = SessionConfig {
        token: TOKEN.into(),
        ..SessionConfig::default()
    };
    let tb = tokio::spawn(run_session(b.clone(), tls, cfg, opts));

    let id = a.insert("notes", [("via", "wss")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        b.get("notes", id).unwrap().is_some()
    })
    .await;
    let back = b.insert("notes", [("via", "tls")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        a.get("notes", back).unwrap().is_some()
    })
    .await;

    // The certificate names localhost and 127.0.0.1 only.
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let wrong = ServerName::try_from("relay.example.com").unwrap();
    assert!(connector().connect(wrong, tcp).await.is_err());

    stop.cancel();
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();
    relay.stop().await;
}

/// A throwaway CA with a server certificate (127.0.0.1, localhost) and a client certificate.
fn make_pki(
    dir: &Path,
) -> (
    std::path::PathBuf,
    TlsFiles,
    (std::path::PathBuf, std::path::PathBuf),
) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "relay mTLS test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (sc, sk) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (cc, ck) = leaf(vec!["client.test".into()]);
    let ca_pem = write("ca.pem", &ca.pem());
    let files = TlsFiles {
        cert: write("server.pem", &sc),
        key: write("server.key", &sk),
        client_ca: Some(ca_pem.clone()),
        client_crls: Vec::new(),
    };
    (
        ca_pem,
        files,
        (write("client.pem", &cc), write("client.key", &ck)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_requires_a_client_certificate() {
    use blazedb_net::transport::{connect, ConnectOptions, Endpoint, TlsClientOptions};
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, files, (client_cert, client_key)) = make_pki(pki_dir.path());
    let relay = TestRelay::start(|c| {
        c.tls = Some(files);
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let id = relay
        .db
        .insert("notes", [("text", "for certified clients")])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = SessionConfig {
        token: TOKEN.into(),
        ..SessionConfig::default()
    };
    let tls_url: Endpoint = format!("tls://127.0.0.1:{}", relay.tcp_addr.unwrap().port())
        .parse()
        .unwrap();
    let wss_url: Endpoint = format!("wss://localhost:{}/v1/sync", relay.addr.port())
        .parse()
        .unwrap();

    // With a certificate from the CA: TLS over TCP and WSS both sync.
    for (name, endpoint) in [("tls", &tls_url), ("wss", &wss_url)] {
        let db = open(dir.path(), name);
        let options = ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: Some(ca.clone()),
                client_cert_pem: Some(client_cert.clone()),
                client_key_pem: Some(client_key.clone()),
                danger_accept_invalid_certs: false,
            },
            bearer_token: Some(TOKEN.into()),
            ..ConnectOptions::default()
        };
        let stream = connect(endpoint, &options).await.expect("connects");
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            run_session(db.clone(), stream, cfg.clone(), DriverOptions::once()),
        )
        .await
        .expect("in time");
        assert!(report.is_ok(), "{name}: {report:?}");
        assert!(db.get("notes", id).unwrap().is_some(), "{name}");
    }

    // Without one: refused during the handshake, before any data.
    for (name, endpoint) in [("tls-anon", &tls_url), ("wss-anon", &wss_url)] {
        let db = open(dir.path(), name);
        let options = ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: Some(ca.clone()),
                ..TlsClientOptions::default()
            },
            bearer_token: Some(TOKEN.into()),
            ..ConnectOptions::default()
        };
        let outcome = match connect(endpoint, &options).await {
            Err(_) => Err(()),
            Ok(stream) => tokio::time::timeout(
                Duration::from_secs(10),
                run_session(db.clone(), stream, cfg.clone(), DriverOptions::once()),
            )
            .await
            .expect("in time")
            .map(|_| ())
            .map_err(|_| ()),
        };
        assert!(
            outcome.is_err(),
            "{name}: a client without a certificate got through"
        );
        assert!(db.get("notes", id).unwrap().is_none(), "{name}");
    }
    relay.stop().await;
}

/// A client with the test token and these TLS settings, retrying at once (10–50 ms).
fn watching_client(tls: blazedb_net::transport::TlsClientOptions) -> blazedb_net::ClientOptions {
    use blazedb_net::reconnect::BackoffConfig;
    blazedb_net::ClientOptions {
        connect: blazedb_net::transport::ConnectOptions {
            tls,
            ..Default::default()
        },
        session: SessionConfig {
            token: TOKEN.into(),
            ..SessionConfig::default()
        },
        backoff: BackoffConfig {
            initial_ms: 10,
            max_ms: 50,
            ..BackoffConfig::default()
        },
        ..Default::default()
    }
}

/// A client the relay's mutual TLS refuses (no certificate) over WSS or TLS over TCP is told
/// to pass a client certificate, and a watching client gives up instead of retrying the same
/// certificate forever. (TLS 1.3 tells the client after its side of the handshake: during
/// the WebSocket upgrade, or on the session's first read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_client_certificate_is_explained_and_ends_sync_watch() {
    use blazedb_net::transport::{Endpoint, TlsClientOptions};
    use blazedb_net::{sync_once, sync_watch};
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, files, _) = make_pki(pki_dir.path());
    let relay = TestRelay::start(|c| {
        c.tls = Some(files);
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "anon");
    let options = watching_client(TlsClientOptions {
        ca_pem: Some(ca),
        ..TlsClientOptions::default()
    });
    let urls = [
        format!("wss://localhost:{}/v1/sync", relay.addr.port()),
        format!("tls://127.0.0.1:{}", relay.tcp_addr.unwrap().port()),
    ];
    for url in urls {
        let endpoint: Endpoint = url.parse().unwrap();
        let e = sync_once(db.clone(), &endpoint, &options)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-client-cert"), "{url}: {e}");
        let watched = tokio::time::timeout(
            Duration::from_secs(5),
            sync_watch(
                db.clone(),
                &endpoint,
                &options,
                std::future::pending(),
                |_| {},
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{url}: sync_watch kept retrying"));
        assert!(watched.is_err(), "{url}");
    }
    relay.stop().await;
}

/// A CA, its revocation list file (empty at first) and certificates with known serials.
struct RevokingPki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    ca_pem: std::path::PathBuf,
    crl: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl RevokingPki {
    fn new(dir: &Path) -> RevokingPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        let pki = RevokingPki {
            ca,
            ca_key,
            ca_pem,
            crl: dir.join("clients.crl.pem"),
            dir: dir.to_path_buf(),
        };
        pki.revoke(&[]);
        pki
    }

    /// A certificate for `names` with serial `serial`: its (cert, key) files.
    fn leaf(&self, names: &[&str], serial: u8) -> (std::path::PathBuf, std::path::PathBuf) {
        use rcgen::{CertificateParams, KeyPair, SerialNumber};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let path = |what: &str| self.dir.join(format!("{serial}.{what}.pem"));
        std::fs::write(path("cert"), cert.pem()).unwrap();
        std::fs::write(path("key"), key.serialize_pem()).unwrap();
        (path("cert"), path("key"))
    }

    /// The list now revokes `serials` (a new file renamed over the old, as an operator does).
    fn revoke(&self, serials: &[u8]) {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber,
        };
        let pem = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from_slice(&[serials.len() as u8 + 1]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&[*s]),
                    revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca, &self.ca_key)
        .unwrap()
        .pem()
        .unwrap();
        let next = self.dir.join("clients.crl.new");
        std::fs::write(&next, pem).unwrap();
        std::fs::rename(&next, &self.crl).unwrap();
    }

    fn client(
        &self,
        (cert, key): &(std::path::PathBuf, std::path::PathBuf),
    ) -> blazedb_net::transport::TlsClientOptions {
        blazedb_net::transport::TlsClientOptions {
            ca_pem: Some(self.ca_pem.clone()),
            client_cert_pem: Some(cert.clone()),
            client_key_pem: Some(key.clone()),
            danger_accept_invalid_certs: false,
        }
    }
}

/// A device is lost while it syncs: its CA's next revocation list names its certificate. The
/// relay reads the list again within a second and ends the device's open sessions, over WSS
/// and TLS over TCP alike, telling the client why (a watching client stops); other devices
/// go on. Each counts as a refused credential of kind `client_certificate`, as a handshake
/// refused for the certificate does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_of_a_certificate_revoked_while_they_run_end() {
    use blazedb_net::transport::Endpoint;
    use blazedb_net::{sync_once, sync_watch};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = RevokingPki::new(pki_dir.path());
    let server = pki.leaf(&["127.0.0.1", "localhost"], 1);
    let (lost, kept) = (pki.leaf(&["lost.test"], 2), pki.leaf(&["kept.test"], 3));
    let relay = TestRelay::start(|c| {
        c.tls = Some(TlsFiles {
            cert: server.0.clone(),
            key: server.1.clone(),
            client_ca: Some(pki.ca_pem.clone()),
            client_crls: vec![pki.crl.clone()],
        });
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    relay.db.insert("notes", [("text", "first")]).unwrap();
    let options = |cert| watching_client(pki.client(cert));
    let urls: [Endpoint; 2] = [
        format!("wss://localhost:{}/v1/sync", relay.addr.port())
            .parse()
            .unwrap(),
        format!("tls://127.0.0.1:{}", relay.tcp_addr.unwrap().port())
            .parse()
            .unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut watching = Vec::new();
    for (i, (url, cert)) in [(&urls[0], &lost), (&urls[1], &lost), (&urls[0], &kept)]
        .into_iter()
        .enumerate()
    {
        let db = open(dir.path(), &format!("device{i}"));
        let (url, options, stop) = (url.clone(), options(cert), stop.clone());
        let task = tokio::spawn({
            let db = db.clone();
            async move { sync_watch(db, &url, &options, stop.cancelled_owned(), |_| {}).await }
        });
        watching.push((db, task));
    }
    for (db, _) in &watching {
        let db = db.clone();
        wait_until(Duration::from_secs(20), move || {
            db.count("notes").unwrap_or(0) == 1
        })
        .await;
    }

    pki.revoke(&[2]);
    let kept_watch = watching.pop().unwrap();
    for (i, (_, task)) in watching.into_iter().enumerate() {
        let ended = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap_or_else(|_| panic!("session {i} of the revoked certificate goes on"))
            .unwrap();
        let e = ended.expect_err("ends with an error").to_string();
        assert!(
            e.contains("revoked this client's TLS certificate"),
            "{i}: {e}"
        );
    }
    // The other device's session goes on.
    relay.db.insert("notes", [("text", "second")]).unwrap();
    let db = kept_watch.0.clone();
    wait_until(Duration::from_secs(20), move || {
        db.count("notes").unwrap_or(0) == 2
    })
    .await;
    assert!(!kept_watch.1.is_finished());
    // And the lost device is refused at the handshake now.
    let again = open(dir.path(), "again");
    assert!(sync_once(again, &urls[1], &options(&lost)).await.is_err());

    let metrics = metrics_over_tls(relay.addr, &pki.client(&kept)).await;
    assert_eq!(
        auth_failures(&metrics, "client_certificate"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sessions_closed(&metrics, "auth_failed"),
        Some(2.0),
        "{metrics}"
    );
    stop.cancel();
    kept_watch.1.await.unwrap().unwrap();
    relay.stop().await;
}

/// A renewed certificate (the files replaced, as an ACME client does) is served by both TLS
/// listeners from the next handshake on, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    use blazedb_net::transport::{connect, ConnectOptions, Endpoint, TlsClientOptions};
    let pki_dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        RevokingPki::new(&pki_dir.path().join("old")),
        RevokingPki::new(&pki_dir.path().join("new")),
    );
    let (old_pair, new_pair) = (
        old.leaf(&["127.0.0.1", "localhost"], 1),
        new.leaf(&["127.0.0.1", "localhost"], 1),
    );
    let served = (
        pki_dir.path().join("cert.pem"),
        pki_dir.path().join("key.pem"),
    );
    std::fs::copy(&old_pair.0, &served.0).unwrap();
    std::fs::copy(&old_pair.1, &served.1).unwrap();
    let relay = TestRelay::start(|c| {
        c.tls = Some(TlsFiles {
            cert: served.0.clone(),
            key: served.1.clone(),
            client_ca: None,
            client_crls: Vec::new(),
        });
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let urls: [Endpoint; 2] = [
        format!("wss://localhost:{}/v1/sync", relay.addr.port())
            .parse()
            .unwrap(),
        format!("tls://127.0.0.1:{}", relay.tcp_addr.unwrap().port())
            .parse()
            .unwrap(),
    ];
    let trusting = |ca: &Path| ConnectOptions {
        tls: TlsClientOptions {
            ca_pem: Some(ca.to_path_buf()),
            ..TlsClientOptions::default()
        },
        bearer_token: Some(TOKEN.into()),
        ..ConnectOptions::default()
    };
    for url in &urls {
        connect(url, &trusting(&old.ca_pem))
            .await
            .expect("the first certificate");
    }
    // Renewed: key first, then the certificate (each a new file renamed over the old).
    for (from, to) in [(&new_pair.1, &served.1), (&new_pair.0, &served.0)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    for url in &urls {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while connect(url, &trusting(&new.ca_pem)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: the renewed certificate is never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            connect(url, &trusting(&old.ca_pem)).await.is_err(),
            "{url}: still the old certificate"
        );
    }
    relay.stop().await;
}

/// A client that connects without TLS to a TLS port is told in plaintext to use TLS (the relay
/// looks at the first byte before the handshake): `ws://` gets HTTP 400 `tls_required`,
/// `tcp://` an ERROR frame. Both are permanent errors that name the scheme to use, and the
/// relay goes on serving clients that use TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_clients_on_tls_ports_are_told_to_use_tls() {
    use blazedb_net::reconnect::ClientError;
    use blazedb_net::transport::{ConnectOptions, TlsClientOptions, TransportError};
    use blazedb_net::{sync_once, ClientOptions, Endpoint, NetError};

    let relay = start_tls_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    a.insert("notes", [("n", 1)]).unwrap();
    let client = |tls: TlsClientOptions| ClientOptions {
        connect: ConnectOptions {
            tls,
            ..ConnectOptions::default()
        },
        session: SessionConfig {
            token: TOKEN.into(),
            ..SessionConfig::default()
        },
        ..ClientOptions::default()
    };

    let ws: Endpoint = format!("ws://127.0.0.1:{}/v1/sync", relay.addr.port())
        .parse()
        .unwrap();
    match sync_once(a.clone(), &ws, &client(TlsClientOptions::default())).await {
        Err(ClientError::Transport(e @ TransportError::Refused { status: 400, .. })) => {
            let text = e.to_string();
            assert!(text.contains("wss://"), "{text}");
            assert!(e.is_permanent(), "{text}");
        }
        other => panic!("expected HTTP 400 saying to use wss://, got {other:?}"),
    }
    let tcp: Endpoint = format!("tcp://{}", relay.tcp_addr.unwrap())
        .parse()
        .unwrap();
    match sync_once(a.clone(), &tcp, &client(TlsClientOptions::default())).await {
        Err(ClientError::Session(NetError::Sync { error, .. })) => {
            assert!(error.remote, "{error:?}");
            assert!(error.message.contains("tls://"), "{}", error.message);
        }
        other => panic!("expected an ERROR frame saying to use tls://, got {other:?}"),
    }

    let trusted = TlsClientOptions {
        ca_pem: Some(fixtures().join("tls_ca.pem")),
        ..TlsClientOptions::default()
    };
    let wss: Endpoint = format!("wss://localhost:{}/v1/sync", relay.addr.port())
        .parse()
        .unwrap();
    sync_once(a.clone(), &wss, &client(trusted.clone()))
        .await
        .unwrap();
    let tls: Endpoint = format!("tls://localhost:{}", relay.tcp_addr.unwrap().port())
        .parse()
        .unwrap();
    sync_once(a.clone(), &tls, &client(trusted)).await.unwrap();
    wait_until(Duration::from_secs(10), || {
        relay.db.count("notes").unwrap() == 1
    })
    .await;
    relay.stop().await;
}
