//! A client that gives a token (`--token`, BLAZEDB_TOKEN) to a peer that checks none — a
//! `blazedb listen` without `--token`, a relay without authentication — is warned on stderr
//! (a `warning` event of kind `token_unchecked`; `sync --once` also says it in its report)
//! and syncs all the same; a listener or relay that checks the token raises no warning. Real
//! processes on 127.0.0.1.

mod net_common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use net_common::{blazedb, export, put, start_listener, start_relay_announced, Daemon};

/// `blazedb sync DB URL --once ARGS..` (with `env` set), which must succeed: its report and
/// the JSON lines of its stderr.
fn sync_once(db: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Json, Vec<Json>) {
    let mut cmd = blazedb();
    cmd.arg("sync").arg(db).arg(url).arg("--once").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{url} {args:?}: {stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap();
    let lines = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    (report, lines)
}

/// The `token_unchecked` warnings among stderr's JSON lines.
fn warnings(lines: &[Json]) -> Vec<&Json> {
    lines
        .iter()
        .filter(|l| l["event"] == "warning" && l["kind"] == "token_unchecked")
        .collect()
}

#[track_caller]
fn assert_warned(url: &str, report: &Json, lines: &[Json]) {
    let w = warnings(lines);
    assert_eq!(w.len(), 1, "one warning: {lines:?}");
    assert_eq!(w[0]["peer"], url);
    let text = w[0]["warning"].as_str().unwrap();
    assert!(
        text.contains(url) && text.contains("checks no token") && text.contains("--token"),
        "{text}"
    );
    assert_eq!(report["token_unchecked"], true, "{report}");
}

#[track_caller]
fn assert_not_warned(report: &Json, lines: &[Json]) {
    assert!(warnings(lines).is_empty(), "{lines:?}");
    assert!(report.get("token_unchecked").is_none(), "{report}");
}

#[test]
fn a_token_given_to_a_listener_without_one_is_warned_about_and_the_sync_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    put(&hub, "notes", r#"{"from": "hub"}"#);
    put(&a, "notes", r#"{"from": "a"}"#);
    let (_listener, url) = start_listener(&hub, &["--tcp", "127.0.0.1:0"], None);

    let (report, lines) = sync_once(&a, &url, &["--token", "s3cret"], &[]);
    assert_warned(&url, &report, &lines);
    assert_eq!(export(&a, "notes").len(), 2, "synced all the same");
    assert_eq!(export(&hub, "notes").len(), 2);

    // The same from BLAZEDB_TOKEN.
    let (report, lines) = sync_once(&a, &url, &[], &[("BLAZEDB_TOKEN", "s3cret")]);
    assert_warned(&url, &report, &lines);

    // Without a token there is nothing to be warned of.
    let (report, lines) = sync_once(&a, &url, &[], &[]);
    assert_not_warned(&report, &lines);
}

#[test]
fn a_listener_that_checks_the_token_raises_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    put(&hub, "notes", r#"{"from": "hub"}"#);
    let (_listener, url) = start_listener(
        &hub,
        &["--tcp", "127.0.0.1:0", "--token", "t0k3n-of-the-listener"],
        None,
    );
    let (report, lines) = sync_once(&a, &url, &["--token", "t0k3n-of-the-listener"], &[]);
    assert_not_warned(&report, &lines);
    assert_eq!(export(&a, "notes").len(), 1);
}

#[test]
fn a_relay_with_authentication_raises_no_warning_over_websocket_or_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"from": "a"}"#);
    let (_relay, v) = start_relay_announced(
        &dir.path().join("data"),
        &[
            "--token",
            "t0k3n-of-the-relay",
            "--tcp-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    let tcp = format!("tcp://{}", v["tcp"].as_str().unwrap());
    for url in [v["sync"].as_str().unwrap(), &tcp] {
        let (report, lines) = sync_once(&a, url, &["--token", "t0k3n-of-the-relay"], &[]);
        assert_not_warned(&report, &lines);
    }
}

#[test]
fn a_relay_without_authentication_warns_a_client_that_gave_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"from": "a"}"#);
    let data = dir.path().join("data");
    let (_relay, v) = start_relay_announced(&data, &["--tcp-listen", "127.0.0.1:0"], None);
    let ws = v["sync"].as_str().unwrap().to_owned();
    let tcp = format!("tcp://{}", v["tcp"].as_str().unwrap());
    for url in [&ws, &tcp] {
        let (report, lines) = sync_once(&a, url, &["--token", "s3cret"], &[]);
        assert_warned(url, &report, &lines);
    }
    assert_eq!(export(&data.join("relay.db"), "notes").len(), 1);

    // A watching client is told once, as the session starts, and keeps syncing.
    let log = dir.path().join("watch.log");
    let mut cmd = blazedb();
    cmd.arg("sync")
        .arg(&a)
        .arg(&ws)
        .args(["--watch", "--token", "s3cret"]);
    let watcher = Daemon::spawn("watcher", cmd, Some(&log));
    let read_log = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    while warnings(&read_log()).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    put(&a, "notes", r#"{"from": "a, later"}"#);
    let t = Instant::now();
    while export(&data.join("relay.db"), "notes").len() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the watch stopped syncing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = watcher.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let lines = read_log();
    let w = warnings(&lines);
    assert_eq!(w.len(), 1, "{lines:?}");
    assert_eq!(w[0]["peer"], ws.as_str());
}
