//! `--tls-client-ca` beside `--unix`: mutual TLS guards the TCP addresses only, and both
//! `serve` and `listen` say at startup that clients on the Unix socket are not asked for a
//! certificate; without `--unix` they say nothing of it. Real processes, real certificates.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

/// A throwaway CA and a server certificate for 127.0.0.1: (cert, key, ca) files in `dir`.
fn make_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "blazedb CLI test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    (
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
        write("ca.pem", ca.pem()),
    )
}

/// Start `blazedb ARGS`, wait for its first stdout line (it listens then), stop it, and
/// return that line and everything it wrote on stderr.
fn start_and_stop(args: &[&std::ffi::OsStr]) -> (String, String) {
    let mut child: Child = Command::new(BIN)
        .args(args)
        .env_remove("BLAZEDB_PASSWORD")
        .env_remove("BLAZEDB_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    (line, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The startup warning's JSON line in `stderr`, if any.
fn client_ca_warning(stderr: &str) -> Option<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "warning" && v["kind"] != "secret_in_command_line")
}

#[test]
fn serve_says_clients_on_its_unix_socket_are_not_asked_for_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_pki(dir.path());
    let socket = dir.path().join("relay.sock");
    let common: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--token".as_ref(),
        "t0k3n-of-the-relay".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--tls-client-ca".as_ref(),
        ca.as_os_str(),
    ];
    let data = dir.path().join("data");
    let mut with_unix = common.clone();
    with_unix.extend(["--data".as_ref(), data.as_os_str()]);
    with_unix.extend(["--unix".as_ref(), socket.as_os_str()]);
    let (started, stderr) = start_and_stop(&with_unix);
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(started["event"], "listening", "{stderr}");
    assert!(started["http"].as_str().unwrap().starts_with("https://"));
    let w = client_ca_warning(&stderr).expect("a warning");
    let text = w["warning"].as_str().unwrap();
    assert!(
        text.contains("--tls-client-ca applies to TLS connections only")
            && text.contains(&socket.display().to_string())
            && text.contains("Leave out --unix"),
        "{text}"
    );

    let data2 = dir.path().join("data2");
    let mut without = common;
    without.extend(["--data".as_ref(), data2.as_os_str()]);
    let (started, stderr) = start_and_stop(&without);
    assert!(started.contains("listening"), "{stderr}");
    assert_eq!(client_ca_warning(&stderr), None, "{stderr}");
}

#[test]
fn listen_says_peers_on_its_unix_socket_are_not_asked_for_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_pki(dir.path());
    let socket = dir.path().join("peer.sock");
    let db = dir.path().join("hub.db");
    let args: Vec<&std::ffi::OsStr> = vec![
        "listen".as_ref(),
        db.as_os_str(),
        "--tcp".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--unix".as_ref(),
        socket.as_os_str(),
        "--token".as_ref(),
        "t0k3n-of-the-relay".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--tls-client-ca".as_ref(),
        ca.as_os_str(),
    ];
    let (started, stderr) = start_and_stop(&args);
    assert!(started.contains("\"listening\""), "{started} {stderr}");
    let w = client_ca_warning(&stderr).expect("a warning");
    assert!(
        w["warning"]
            .as_str()
            .unwrap()
            .contains(&socket.display().to_string()),
        "{w}"
    );
}
