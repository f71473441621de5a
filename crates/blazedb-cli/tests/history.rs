//! `history` prints one JSON object per change, oldest first, with the cell, op, old and new
//! values and the version that wrote it.

mod common;

use common::TestDb;
use serde_json::{json, Value};

#[test]
fn insert_set_and_unset_are_recorded_in_order() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "Crash", "status": "new"}"#);
    db.run(
        "update",
        &[
            "bugs",
            &id,
            r#"{"status": "open", "title": {"$unset": true}}"#,
        ],
    )
    .success();

    let history = db.run("history", &["bugs", &id]).success().json_lines();
    let changes: Vec<(Value, Value, Value, Value)> = history
        .iter()
        .map(|e| {
            (
                e["cell"].clone(),
                e["op"].clone(),
                e["old"].clone(),
                e["new"].clone(),
            )
        })
        .collect();
    assert!(changes.contains(&(json!("$record"), json!("insert"), json!(null), json!(true))));
    assert!(changes.contains(&(json!("status"), json!("set"), json!(null), json!("new"))));
    assert!(changes.contains(&(json!("status"), json!("set"), json!("new"), json!("open"))));
    assert!(changes.contains(&(json!("title"), json!("unset"), json!("Crash"), json!(null))));
    let first_open = changes.iter().position(|c| c.3 == json!("open")).unwrap();
    let first_new = changes.iter().position(|c| c.3 == json!("new")).unwrap();
    assert!(first_new < first_open, "oldest first: {history:?}");
}

#[test]
fn every_entry_has_its_version() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "Crash"}"#);
    let node = db.run("stats", &[]).success().json()["node_id"].clone();
    for entry in db.run("history", &["bugs", &id]).success().json_lines() {
        let keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["cell", "field", "op", "old", "new", "hlc", "time", "node", "seq"]
        );
        let (wall, logical) = entry["hlc"].as_str().unwrap().split_once('.').unwrap();
        assert!(
            wall.parse::<u64>().is_ok() && logical.parse::<u16>().is_ok(),
            "{entry}"
        );
        let time = entry["time"].as_str().unwrap();
        assert!(
            time.ends_with('Z') && time.contains('T'),
            "RFC 3339: {time}"
        );
        assert_eq!(entry["node"], node);
        assert_eq!(entry["seq"], 1);
    }
}

/// A cell's creation rebuilt from the value its overwrite replaced has no known feed
/// position: `seq` is null there, never 0 (no commit is at 0), and a real position elsewhere.
#[test]
fn a_rebuilt_creation_has_no_seq() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "Crash"}"#);
    db.run("update", &["bugs", &id, r#"{"title": "Crash on start"}"#])
        .success();
    db.run("update", &["bugs", &id, r#"{"title": "Crash on save"}"#])
        .success();
    let history = db.run("history", &["bugs", &id]).success().json_lines();
    assert!(history.iter().all(|e| e["seq"] != json!(0)), "{history:?}");
    assert!(
        history.iter().any(|e| e["seq"].is_null()),
        "the first title's creation is rebuilt: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|e| e["seq"].as_u64().is_some_and(|s| s >= 2)),
        "{history:?}"
    );
}
