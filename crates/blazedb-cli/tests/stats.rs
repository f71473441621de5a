//! `stats` prints one JSON object with per-collection counts and file, history, index and
//! feed figures.

mod common;

use common::TestDb;

#[test]
fn stats_count_records_tombstones_and_index_entries() {
    let db = TestDb::new();
    let a = db.put("bugs", r#"{"priority": 1}"#);
    db.put("bugs", r#"{"priority": 2}"#);
    db.put("notes", r#"{"text": "x"}"#);
    db.run("delete", &["bugs", &a]).success();
    db.run("index", &["bugs", "priority"]).success();

    let stats = db.run("stats", &[]).success().json();
    let bugs = &stats["collections"]["bugs"];
    assert_eq!(bugs["records"], 1);
    assert_eq!(bugs["tombstones"], 1);
    assert_eq!(bugs["index_entries"]["priority"], 1);
    assert!(bugs["body_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["collections"]["notes"]["records"], 1);
    assert!(stats["file_bytes"].as_u64().unwrap() > 0);
    // Creations are not stored as history rows (the record holds them); the delete stored
    // its record cell and the field it removed.
    assert_eq!(stats["history_entries"], 2);
    assert_eq!(stats["last_seq"], 4);
    assert_eq!(stats["open_conflicts"], 0);
    assert_eq!(stats["encrypted"], false);
    assert_eq!(stats["node_id"].as_str().unwrap().len(), 32);
    for key in ["wal_bytes", "history_bytes", "index_bytes", "feed_rows"] {
        assert!(stats.get(key).is_some(), "{key} missing: {stats}");
    }
}

#[test]
fn vacuum_keeps_every_record() {
    let db = TestDb::new();
    let ids: Vec<String> = (0..20)
        .map(|n| db.put("bugs", &format!(r#"{{"n": {n}}}"#)))
        .collect();
    for id in &ids[..10] {
        db.run("delete", &["bugs", id]).success();
    }
    db.run("vacuum", &[]).success();
    assert_eq!(db.run("export", &["bugs"]).success().json_lines().len(), 10);
    assert_eq!(db.run("stats", &[]).success().json()["wal_bytes"], 0);
}
