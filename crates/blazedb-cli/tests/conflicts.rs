//! `conflicts` lists concurrent overwrites as JSON lines: when a replica's newer write of a
//! field arrives over a local write it never saw, the local loser is listed with both
//! versions.

mod common;

use blazedb::{Database, OpenOptions, Patch, Seq};
use common::TestDb;
use serde_json::json;

/// Send every change of `from` to `to`, as sync would.
fn exchange(from: &Database, to: &Database) {
    let batch = from.changes_since(Seq(0), 1000, None).unwrap();
    to.apply_changes(from.node_id(), &batch.changes, None)
        .unwrap();
}

#[test]
fn a_concurrent_overwrite_is_listed_with_both_versions() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "original"}"#);
    let replica_path = db.file("replica.db");
    {
        let main = Database::open(&db.path, OpenOptions::default()).unwrap();
        let replica = Database::open(&replica_path, OpenOptions::default()).unwrap();
        exchange(&main, &replica);
        let record = id.parse().unwrap();
        main.update("bugs", record, Patch::new().set("title", "main's"))
            .unwrap();
        // A later millisecond, so the replica's write wins without a tie-break on node ids.
        std::thread::sleep(std::time::Duration::from_millis(5));
        replica
            .update("bugs", record, Patch::new().set("title", "replica's"))
            .unwrap();
        exchange(&replica, &main);
    }

    let conflicts = db.run("conflicts", &[]).success().json_lines();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(
        (&c["collection"], &c["record"], &c["field"]),
        (&json!("bugs"), &json!(id), &json!("title"))
    );
    assert_eq!(
        (&c["winner"], &c["loser"]),
        (&json!("replica's"), &json!("main's"))
    );
    assert_eq!(db.get("bugs", &id)["title"], "replica's");
    for version in [&c["winner_version"], &c["loser_version"]] {
        assert!(
            version["hlc"].is_string() && version["time"].is_string(),
            "{version}"
        );
        assert_eq!(version["node"].as_str().unwrap().len(), 32);
    }

    assert_eq!(
        db.run("conflicts", &["bugs"]).success().json_lines().len(),
        1
    );
    assert!(db.run("conflicts", &["other"]).success().stdout.is_empty());
}
