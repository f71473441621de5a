//! A relay is never expired by a client's GC (deletes made while it is away must reach it),
//! so one that is gone for good would hold the client's tombstones forever without a word:
//! `blazedb gc` names it (`held_by`, `relays_past_retention`) and warns on stderr with the
//! `peers --forget` that lets GC move on. Separate processes over real sockets.

mod net_common;

use std::path::Path;

use net_common::{put, run_on, start_relay};
use serde_json::Value as Json;

/// `run_on`, with the last line of stdout as JSON.
fn run(db: &Path, args: &[&str]) -> (Json, String) {
    let (stdout, stderr) = run_on(db, args);
    let last = stdout.lines().last().unwrap_or("null");
    (serde_json::from_str(last).unwrap(), stderr)
}

#[test]
fn gc_names_a_relay_that_holds_it_back_and_how_to_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, url) = start_relay(
        &dir.path().join("data"),
        &["--token", "a-token-for-the-tests"],
        None,
    );
    let db = dir.path().join("client.db");
    let id = put(&db, "notes", r#"{"n": 1}"#);
    run(
        &db,
        &["sync", &url, "--once", "--token", "a-token-for-the-tests"],
    );
    let (relay_peer, _) = run(&db, &["peers"]);
    let relay_node = relay_peer["node"].as_str().unwrap().to_owned();
    assert_eq!(
        (&relay_peer["relay"], &relay_peer["pushes_only"]),
        (&Json::Bool(true), &Json::Bool(false)),
        "{relay_peer}"
    );
    // The relay goes away for good; the client deletes.
    relay.kill9();
    run(&db, &["delete", "notes", &id]);
    std::thread::sleep(std::time::Duration::from_millis(20));

    let (report, stderr) = run(&db, &["gc", "--peer-retention", "10ms"]);
    assert_eq!(report["tombstones_purged"], 0, "{report}");
    assert_eq!(report["held_by"], relay_node.as_str(), "{report}");
    assert_eq!(
        report["relays_past_retention"],
        serde_json::json!([relay_node]),
        "{report}"
    );
    let warning: Json = serde_json::from_str(stderr.lines().next().expect("a warning")).unwrap();
    let text = warning["warning"].as_str().unwrap();
    assert!(
        text.contains(&relay_node) && text.contains("--forget") && text.contains("10ms"),
        "{text}"
    );

    // Told to let go, GC collects the delete.
    run(&db, &["peers", "--forget", &relay_node]);
    let (report, stderr) = run(&db, &["gc", "--peer-retention", "10ms"]);
    assert_eq!(report["tombstones_purged"], 1, "{report}");
    assert_eq!(report["held_by"], Json::Null, "{report}");
    assert!(stderr.is_empty(), "{stderr}");
}
