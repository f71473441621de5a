//! `blazedb serve` as a process: it prints where it listens as one JSON line, keeps its store
//! (encrypted with BLAZEDB_PASSWORD) in the data directory, answers /health (without its node
//! id, which a `relay_started` log line gives with its set-up) and refuses
//! unauthenticated queries, holds one address to `--max-connections-per-address`, and exits 0 on SIGTERM; bad rules stop it at startup with the
//! file, collection and column in one `error:` line; an empty store file becomes a new store,
//! with a warning, unless a write-ahead log with data is beside it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

fn get(addr: &str, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_listens_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "s3cret-relay-token",
            "--max-connections-per-address",
            "2",
            "--data",
        ])
        .arg(&data)
        .env("BLAZEDB_PASSWORD", "store-password")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(started["event"], "listening");
    assert_eq!(
        started["encrypted"], true,
        "BLAZEDB_PASSWORD encrypts the store"
    );
    let http = started["http"].as_str().unwrap();
    assert!(started["sync"].as_str().unwrap().ends_with("/v1/sync"));
    let addr = http.trim_start_matches("http://");

    let health = get(addr, "GET /health", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(
        !health.contains(started["node"].as_str().unwrap()),
        "the node id is not for anyone asking: {health}"
    );
    let q = get(addr, "POST /v1/query", "content-length: 2\r\n\r\n{}");
    assert!(q.starts_with("HTTP/1.1 401"), "{q}");
    assert!(data.join("relay.db").exists());

    // `--max-connections-per-address 2`: with two connections of ours open, the third gets
    // 503 saying which limit; once they close, requests are served again.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let over = get(addr, "GET /health", "");
    assert!(over.starts_with("HTTP/1.1 503"), "{over}");
    assert!(over.contains("too_many_connections_from_address"), "{over}");
    drop(held);
    let t = Instant::now();
    while !get(addr, "GET /health", "").starts_with("HTTP/1.1 200") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the slots never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A client with a wrong token is told so, and stops: retrying cannot help (even when
    // watching, which otherwise reconnects after failures).
    let sync_url = started["sync"].as_str().unwrap();
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("sync")
        .arg(dir.path().join("client.db"))
        .args([sync_url, "--token", "wrong"])
        .env_remove("BLAZEDB_PASSWORD")
        .env_remove("BLAZEDB_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("--token"),
        "{stderr}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));

    let t = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // Who the relay is and how it is set up is in its log, for the operator (`/health`
    // showed the node id and the kind of authentication to anyone until 2026-12-07).
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let relay_started: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "relay_started")
        .unwrap_or_else(|| panic!("no relay_started line in {log}"));
    assert_eq!(relay_started["node"], started["node"], "{relay_started}");
    assert_eq!(relay_started["auth"], "token", "{relay_started}");
    assert_eq!(relay_started["rules"], false, "{relay_started}");
    assert_eq!(relay_started["pid"], child.id(), "{relay_started}");
    assert!(
        relay_started["store"]
            .as_str()
            .unwrap()
            .ends_with("relay.db"),
        "{relay_started}"
    );

    // The store is encrypted with the password: opening it without one fails.
    let out = Command::new(BIN)
        .args(["stats"])
        .arg(data.join("relay.db"))
        .env_remove("BLAZEDB_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn invalid_rules_stop_the_relay_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[bugs]\nread = \"owner = $auth.sub\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: rules file "), "{err}");
    assert!(
        err.contains("[bugs] read: invalid expression at column 7"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn zero_max_connections_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "0",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Without the check, the relay would serve (refusing everything) until killed.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("the relay started with --max-connections 0");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("--max-connections"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing is created");
}

/// A 0-byte `relay.db` is what creating the store leaves when the relay is killed before its
/// first commit: the relay creates its store there, and says so with a warning (before, it
/// said nothing, and a store truncated by accident came back empty with a new node id
/// unremarked). Beside a write-ahead log that holds data, the empty file is a store cut
/// short: the relay refuses to start, and leaves both files as they were.
#[test]
fn an_empty_store_is_created_anew_with_a_warning_but_not_over_a_log_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let store = data.join("relay.db");
    std::fs::write(&store, b"").unwrap();
    let log = dir.path().join("relay.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("BLAZEDB_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&line).unwrap();
    // The line is logged before the relay announces where it listens.
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let created: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "store_created")
        .unwrap_or_else(|| panic!("no store_created line in {text}"));
    assert_eq!(created["node"], started["node"], "{created}");
    assert_eq!(
        started["encrypted"], false,
        "no BLAZEDB_PASSWORD: {started}"
    );
    let warning = created["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("was an empty file (0 bytes)")
            && warning.contains("new node id")
            && warning.contains("restore"),
        "{created}"
    );

    // Cut to 0 bytes with its log beside it.
    std::fs::write(&store, b"").unwrap();
    let wal = data.join("relay.db-wal");
    std::fs::write(&wal, vec![7u8; 5000]).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("BLAZEDB_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: the relay store")
            && err.contains("is empty (0 bytes) but its write-ahead log")
            && err.contains("holds 5000 bytes")
            && err.contains("move both files out of the data directory"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&store).unwrap().len(), 0);
    assert_eq!(std::fs::read(&wal).unwrap(), vec![7u8; 5000]);
}
