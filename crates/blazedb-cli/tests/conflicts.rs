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

/// Two concurrent overwrites of two fields, made here as in the test above.
fn two_conflicts(db: &TestDb) -> String {
    let id = db.put("bugs", r#"{"title": "original", "priority": 1}"#);
    let replica_path = db.file("replica.db");
    let main = Database::open(&db.path, OpenOptions::default()).unwrap();
    let replica = Database::open(&replica_path, OpenOptions::default()).unwrap();
    exchange(&main, &replica);
    let record = id.parse().unwrap();
    main.update(
        "bugs",
        record,
        Patch::new().set("title", "main's").set("priority", 2),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    replica
        .update(
            "bugs",
            record,
            Patch::new().set("title", "replica's").set("priority", 3),
        )
        .unwrap();
    exchange(&replica, &main);
    id
}

/// `resolve` settles a conflict by keeping the winner, writing the loser back (`--loser`) or
/// a value of the user's (`--value`); a settled conflict is no longer listed, and bad input
/// (an unknown conflict, invalid JSON, both options) is refused with what to do.
#[test]
fn resolve_keeps_the_winner_or_writes_the_loser_or_a_value() {
    let db = TestDb::new();
    let id = two_conflicts(&db);
    let listed = db.run("conflicts", &[]).success().json_lines();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let of = |field: &str| listed.iter().find(|c| c["field"] == field).unwrap()["id"].to_string();
    let (title, priority) = (of("title"), of("priority"));

    let out = db.run("resolve", &[&title, "--loser"]).success().json();
    assert_eq!(
        out,
        json!({"resolved": title.parse::<i64>().unwrap(), "wrote": "main's"})
    );
    assert_eq!(db.get("bugs", &id)["title"], "main's");

    let err = db
        .run("resolve", &[&priority, "--value", "{bad"])
        .failure(2)
        .stderr;
    assert!(err.contains("--value"), "{err}");
    let err = db
        .run("resolve", &[&priority, "--value", "1", "--loser"])
        .failure(2)
        .stderr;
    assert!(err.contains("cannot be used with"), "{err}");
    let out = db
        .run(
            "resolve",
            &[&priority, "--value", r#"{"$date": "2026-12-06T10:00:00Z"}"#],
        )
        .success()
        .json();
    assert_eq!(out["wrote"], json!({"$date": "2026-12-06T10:00:00Z"}));
    assert!(db.run("conflicts", &[]).success().stdout.is_empty());

    let err = db.run("resolve", &[&title]).failure(1).stderr;
    assert!(err.contains("no open conflict"), "{err}");
    let err = db.run("resolve", &["999", "--loser"]).failure(1).stderr;
    assert!(err.contains("no open conflict 999"), "{err}");
}

/// Without an option the winner stays and the conflict is settled.
#[test]
fn resolve_without_an_option_keeps_the_winner() {
    let db = TestDb::new();
    let id = two_conflicts(&db);
    for c in db.run("conflicts", &[]).success().json_lines() {
        let out = db.run("resolve", &[&c["id"].to_string()]).success().json();
        assert_eq!(out["wrote"], serde_json::Value::Null);
    }
    assert!(db.run("conflicts", &[]).success().stdout.is_empty());
    let record = db.get("bugs", &id);
    assert_eq!(
        (&record["title"], &record["priority"]),
        (&json!("replica's"), &json!(3))
    );
}

/// A conflict over one element of a set is listed with the element, and `resolve --loser`
/// writes that element alone: it wrote the loser's `true` over the whole field, and the set
/// became a boolean. A counter contribution's conflict takes no value.
#[test]
fn a_set_element_conflict_resolves_the_element_not_the_field() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "t"}"#);
    db.run(
        "update",
        &["bugs", &id, r#"{"tags": {"$add": ["a", "z"]}}"#],
    )
    .success();
    let replica_path = db.file("replica.db");
    {
        let main = Database::open(&db.path, OpenOptions::default()).unwrap();
        let replica = Database::open(&replica_path, OpenOptions::default()).unwrap();
        exchange(&main, &replica);
        let record = id.parse().unwrap();
        main.set_remove("bugs", record, "tags", vec!["z".into()])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        replica
            .set_add("bugs", record, "tags", vec!["z".into()])
            .unwrap();
        exchange(&replica, &main);
    }
    let conflicts = db.run("conflicts", &[]).success().json_lines();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(
        (&c["field"], &c["element"], &c["winner"], &c["loser"]),
        (&json!("tags"), &json!("z"), &json!(true), &json!(false))
    );
    assert_eq!(c["superseded"], json!(false));
    let cid = c["id"].to_string();
    assert_eq!(db.get("bugs", &id)["tags"], json!(["a", "z"]));
    let err = db.run("resolve", &[&cid, "--value", "3"]).failure(1).stderr;
    assert!(err.contains("one element of set field"), "{err}");
    let out = db.run("resolve", &[&cid, "--loser"]).success().json();
    assert_eq!(out["wrote"], json!(false));
    assert_eq!(db.get("bugs", &id)["tags"], json!(["a"]));
}
