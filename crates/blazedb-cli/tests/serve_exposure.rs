//! What a relay says at startup about what it exposes and what it can hold (security audit,
//! 2026-12-07): a Unix socket beside the loopback HTTP listener of a relay without
//! credentials (the socket is owner-only, the listener serves every local user), and an
//! open-files limit below `--max-connections` — raised to the hard limit first, as servers
//! holding many connections do. A real `blazedb serve` started under `ulimit`.

mod net_common;

use std::path::Path;
use std::process::Command;

use net_common::{announcement, log_events, Daemon, BIN};
use serde_json::Value as Json;

/// Start `blazedb serve ARGS..`, under `ulimit -Hn HARD -Sn SOFT` (bash) when given, logging
/// stderr to `log`, and wait for its announcement.
fn serve_limited(limits: Option<(u64, u64)>, args: &[&str], log: &Path) -> (Daemon, Json) {
    let ulimit = limits
        .map(|(hard, soft)| format!("ulimit -Sn {soft} && ulimit -Hn {hard} && "))
        .unwrap_or_default();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "{ulimit}exec \"$0\" serve --listen 127.0.0.1:0 \"$@\""
        ))
        .arg(BIN)
        .args(args)
        .env_remove("BLAZEDB_PASSWORD")
        .env_remove("BLAZEDB_TOKEN");
    let mut d = Daemon::spawn("relay", cmd, Some(log));
    let v = announcement(&mut d);
    (d, v)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The `config_warning` messages in the log.
fn warnings(log: &Path) -> Vec<String> {
    log_events(log, "config_warning")
        .iter()
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The soft and hard limits on open files of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut parts = line["Max open files".len()..].split_whitespace();
    (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    )
}

#[test]
fn an_open_files_limit_below_the_connections_is_raised_and_what_remains_said() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let data = dir.path().join("data").display().to_string();
    // Soft 256, hard 2,048: raised to 2,048, still short of the default 10,000 connections.
    let (relay, _) = serve_limited(
        Some((2048, 256)),
        &["--data", &data, "--token", "a-token-of-some-length"],
        &log,
    );
    assert_eq!(
        open_files_limits(relay.child.id()),
        ("2048".to_owned(), "2048".to_owned())
    );
    let w = warnings(&log);
    assert_eq!(w.len(), 1, "{w:?}");
    for part in [
        "the limit on open files is 2048, which allows about 1984 connections",
        "fewer than the 10000 of --max-connections",
        "ulimit -n 10064",
        "LimitNOFILE=10064",
    ] {
        assert!(w[0].contains(part), "{part:?} in {w:?}");
    }
    drop(relay);

    // Within the limit once --max-connections says fewer: nothing to say.
    let log = dir.path().join("relay-fewer.log");
    let (relay, _) = serve_limited(
        Some((2048, 256)),
        &[
            "--data",
            &data,
            "--token",
            "a-token-of-some-length",
            "--max-connections",
            "1000",
        ],
        &log,
    );
    assert_eq!(open_files_limits(relay.child.id()).0, "2048");
    assert!(warnings(&log).is_empty(), "{}", read(&log));
}

/// Without credentials, loopback answers every user of the machine: a `--unix` socket's
/// owner-only mode does not make the relay owner-only, and the relay says so. With a token
/// it says nothing (every way in asks for it).
#[test]
fn a_unix_socket_beside_an_anonymous_loopback_listener_is_said_not_to_be_the_only_way_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let sock = dir.path().join("relay.sock").display().to_string();
    // Few connections: no word about the open-files limit, whatever it is here.
    let few = ["--max-connections", "100"];
    let log = dir.path().join("anonymous.log");
    let args = [&["--data", &data, "--unix", &sock][..], &few].concat();
    let (relay, v) = serve_limited(None, &args, &log);
    let http = v["http"].as_str().unwrap().to_owned();
    let w = warnings(&log);
    assert_eq!(w.len(), 1, "{w:?}");
    for part in [
        format!("the Unix socket {sock} is owner-only"),
        format!("serves every local user through {http}"),
        "give --token or --jwt-secret/--jwt-public-key".to_owned(),
    ] {
        assert!(w[0].contains(&part), "{part:?} in {w:?}");
    }
    drop(relay);

    let log = dir.path().join("token.log");
    let token = ["--token", "a-token-of-some-length"];
    let args = [&["--data", &data, "--unix", &sock][..], &few, &token].concat();
    let (_relay, _) = serve_limited(None, &args, &log);
    assert!(warnings(&log).is_empty(), "{}", read(&log));
}
