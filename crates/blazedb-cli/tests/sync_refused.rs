//! A write the relay's rules refuse is not silent at the client: `blazedb sync --once` lists
//! each refused record with the relay's reason in its JSON line, says on stderr where the
//! refused values went (`blazedb conflicts`) and exits 3 (synced, but changes refused);
//! `blazedb sync` (continuous) says so as a `rejected` event while it runs. The refused values are listed by `blazedb conflicts`, and
//! the allowed write is on the relay. Separate processes over real sockets.

mod net_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use net_common::{blazedb, export, put, start_relay};
use serde_json::Value as Json;

const TOKEN: &str = "s3cret-relay-token";
const RULES: &str = "[bugs]\nread = \"true\"\nwrite = \"priority < 5\"\n";

fn json_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[test]
fn refused_writes_are_reported_with_the_relays_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let (_relay, url) = start_relay(
        &dir.path().join("data"),
        &["--token", TOKEN, "--rules", rules.to_str().unwrap()],
        None,
    );
    let db = dir.path().join("client.db");
    let allowed = put(&db, "bugs", r#"{"title": "small", "priority": 3}"#);
    let refused = put(&db, "bugs", r#"{"title": "too important", "priority": 9}"#);

    // --once: the summary lists the refusal and its reason; stderr says what to do, and the
    // exit code tells a script that not everything got through.
    let out = blazedb()
        .arg("sync")
        .arg(&db)
        .args([url.as_str(), "--once"])
        .env("BLAZEDB_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "sync --once: {stderr}");
    let summary: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rejected_by_peer"], 1, "{summary}");
    let rejections = summary["rejections"].as_array().expect("rejections listed");
    assert_eq!(rejections.len(), 1, "{summary}");
    assert_eq!(rejections[0]["collection"], "bugs");
    assert_eq!(rejections[0]["record"], refused.as_str());
    let reason = rejections[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("priority < 5"),
        "the rule is named: {reason}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: the peer refused 1 change(s)")
            && stderr.contains("blazedb conflicts"),
        "{stderr}"
    );

    // Where the refused values went: the relay's version (none) replaced the record here,
    // and the values are listed as conflicts. The allowed write reached the relay.
    let here = export(&db, "bugs");
    assert!(
        here.contains_key(&allowed) && !here.contains_key(&refused),
        "{here:?}"
    );
    let conflicts = blazedb().arg("conflicts").arg(&db).output().unwrap();
    let conflicts = json_lines(&String::from_utf8_lossy(&conflicts.stdout));
    assert!(
        conflicts
            .iter()
            .any(|c| c["record"] == refused.as_str() && c["loser"] == "too important"),
        "{conflicts:?}"
    );
    // The record-level conflict (the relay's "no such record" against our insert) is settled
    // by keeping the winner; writing the loser back is a field's business and is refused.
    let record_level = conflicts
        .iter()
        .find(|c| c["record"] == refused.as_str() && c["cell"] == "$record")
        .expect("a record-level conflict");
    let resolve = |extra: &[&str]| {
        blazedb()
            .arg("resolve")
            .arg(&db)
            .arg(record_level["id"].to_string())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = resolve(&["--loser"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("about the record itself"), "{err}");
    assert!(resolve(&[]).status.success());

    let other = dir.path().join("other.db");
    let out = blazedb()
        .arg("sync")
        .arg(&other)
        .args([url.as_str(), "--once"])
        .env("BLAZEDB_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    let there = export(&other, "bugs");
    assert_eq!(
        there.keys().collect::<Vec<_>>(),
        vec![&allowed],
        "what the relay holds"
    );

    // Continuous sync: a refusal is an event while the session runs, not only at the end.
    let mut watcher = blazedb()
        .arg("sync")
        .arg(&db)
        .args([url.as_str()])
        .env("BLAZEDB_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = watcher.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str, pred: &dyn Fn(&Json) -> bool| -> Json {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} event within 20 s"));
            let event: Json = serde_json::from_str(&line).unwrap();
            if pred(&event) {
                return event;
            }
        }
    };
    wait_for("connected", &|e| e["event"] == "connected");
    let refused_live = put(&db, "bugs", r#"{"title": "urgent", "priority": 7}"#);
    let event = wait_for("rejected", &|e| e["event"] == "rejected");
    assert_eq!(event["record"], refused_live.as_str(), "{event}");
    assert!(
        event["reason"].as_str().unwrap().contains("priority < 5"),
        "{event}"
    );
    assert_eq!(
        event["conflicts"],
        format!("blazedb conflicts {}", db.display()),
        "{event}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}
