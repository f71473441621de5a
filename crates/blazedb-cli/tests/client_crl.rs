//! `blazedb serve --tls-client-crl FILE`: a relay requiring client certificates refuses a
//! device whose certificate its CA revoked, tells that client so, and reads the list again
//! when the file changes (a device lost while the relay runs is refused at its next
//! connection, no restart, and a session it has open ends). A list it cannot use stops it
//! from starting, naming the file; one that turns unusable while it runs is logged.
//! Real processes, real certificates and a real revocation list.

mod net_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use net_common::{
    blazedb, log_events, put, start_relay_announced, sync_once_status, wait_for_event, Daemon,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

const TOKEN: &str = "t0k3n-of-the-relay";

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "blazedb CLI CRL test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `names` with serial number `serial`: (cert, key) files in `dir`.
    fn leaf(&self, dir: &Path, name: &str, names: &[&str], serial: u8) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn crl(&self, number: u8, serials: &[u8]) -> String {
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from_slice(&[number]),
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
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

#[test]
fn a_relay_refuses_revoked_client_certificates_and_reads_its_list_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_pem = d.join("ca.pem");
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    let (server_cert, server_key) = ca.leaf(d, "server", &["127.0.0.1"], 1);
    let laptop = ca.leaf(d, "laptop", &["laptop.test"], 2);
    let phone = ca.leaf(d, "phone", &["phone.test"], 3);
    let crl = d.join("clients.crl.pem");
    std::fs::write(&crl, ca.crl(1, &[3])).unwrap();

    let data = d.join("relay-data");
    let log = d.join("relay.log");
    let (_relay, announced) = start_relay_announced(
        &data,
        &[
            "--token",
            TOKEN,
            "--tls-cert",
            server_cert.to_str().unwrap(),
            "--tls-key",
            server_key.to_str().unwrap(),
            "--tls-client-ca",
            ca_pem.to_str().unwrap(),
            "--tls-client-crl",
            crl.to_str().unwrap(),
        ],
        Some(&log),
    );
    let url = announced["sync"].as_str().unwrap().to_owned();
    assert!(url.starts_with("wss://"), "{announced}");
    let sync = |db: &Path, (cert, key): &(PathBuf, PathBuf)| {
        sync_once_status(
            db,
            &url,
            &[
                "--token",
                TOKEN,
                "--tls-ca",
                ca_pem.to_str().unwrap(),
                "--tls-client-cert",
                cert.to_str().unwrap(),
                "--tls-client-key",
                key.to_str().unwrap(),
            ],
        )
    };

    let laptop_db = d.join("laptop.db");
    put(&laptop_db, "notes", r#"{"text": "from the laptop"}"#);
    let (code, stderr) = sync(&laptop_db, &laptop);
    assert_eq!(code, Some(0), "{stderr}");

    // The phone's certificate is on the list.
    let phone_db = d.join("phone.db");
    let (code, stderr) = sync(&phone_db, &phone);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("revoked this client's TLS certificate"),
        "{stderr}"
    );
    // The relay's operator reads about it.
    wait_for_event(&log, "tls_refused");
    let refused = &log_events(&log, "tls_refused")[0];
    assert_eq!(refused["reason"], "client_certificate", "{refused}");
    assert_eq!(refused["client"], "127.0.0.1", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("Revoked"),
        "{refused}"
    );

    // The laptop keeps a session open (`--watch`).
    let watch_log = d.join("laptop-watch.log");
    let mut watching = Daemon::spawn(
        "laptop --watch",
        {
            let mut cmd = blazedb();
            cmd.arg("sync")
                .arg(&laptop_db)
                .args([&url, "--watch"])
                .args([
                    "--token",
                    TOKEN,
                    "--tls-ca",
                    ca_pem.to_str().unwrap(),
                    "--tls-client-cert",
                    laptop.0.to_str().unwrap(),
                    "--tls-client-key",
                    laptop.1.to_str().unwrap(),
                ]);
            cmd
        },
        Some(&watch_log),
    );
    wait_for_event(&watch_log, "connected");
    let replace = |text: &str| {
        let next = d.join("clients.crl.new");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &crl).unwrap();
    };

    // A list caught unusable is logged; the open session stays.
    replace("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n");
    wait_for_event(&log, "tls_client_crl_unusable");
    let unusable = &log_events(&log, "tls_client_crl_unusable")[0];
    assert!(
        unusable["error"]
            .as_str()
            .unwrap()
            .contains("clients.crl.pem"),
        "{unusable}"
    );
    assert!(watching.child.try_wait().unwrap().is_none());

    // The laptop is lost; the CA's next list names it. Its open session ends at once (the
    // relay looks at the file every second), the client is told why and stops; the running
    // relay refuses it next time too.
    replace(&ca.crl(2, &[2, 3]));
    wait_for_event(&log, "tls_client_crl_usable");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = watching.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the revoked laptop's session goes on: {}",
            std::fs::read_to_string(&watch_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = std::fs::read_to_string(&watch_log).unwrap();
    assert!(
        said.contains("revoked this client's TLS certificate"),
        "{said}"
    );
    wait_for_event(&log, "session_closed");
    let closed = &log_events(&log, "session_closed")[0];
    assert_eq!(closed["reason"], "auth_failed", "{closed}");
    assert!(
        closed["message"].as_str().unwrap().contains("revoked"),
        "{closed}"
    );
    let (code, stderr) = sync(&laptop_db, &laptop);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("revoked this client's TLS certificate"),
        "{stderr}"
    );
}

#[test]
fn a_relay_does_not_start_with_a_list_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_pem = d.join("ca.pem");
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    let (server_cert, server_key) = ca.leaf(d, "server", &["127.0.0.1"], 1);
    // `blazedb serve` with TLS, these more arguments: its exit code and stderr.
    let serve = |data: &str, more: &[&std::ffi::OsStr]| {
        let out = blazedb()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(d.join(data))
            .args(["--token", TOKEN, "--tls-cert"])
            .arg(&server_cert)
            .arg("--tls-key")
            .arg(&server_key)
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The server certificate given where the list should be.
    let (code, stderr) = serve(
        "data",
        &[
            "--tls-client-ca".as_ref(),
            ca_pem.as_os_str(),
            "--tls-client-crl".as_ref(),
            server_cert.as_os_str(),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("server.pem") && stderr.contains("no X509 CRL block"),
        "{stderr}"
    );
    // Without --tls-client-ca the option is refused by the command line itself.
    let (code, stderr) = serve(
        "data2",
        &["--tls-client-crl".as_ref(), server_cert.as_os_str()],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--tls-client-ca"), "{stderr}");
}
