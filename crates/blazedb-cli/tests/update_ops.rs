//! `update` changes only the named fields, with `$inc`, `$add`, `$remove`, `$unset` or a
//! plain value per field.

mod common;

use common::TestDb;
use serde_json::json;

#[test]
fn each_operator_changes_its_field_and_nothing_else() {
    let db = TestDb::new();
    let id = db.put(
        "bugs",
        r#"{"title": "Crash", "status": "new", "note": "tmp"}"#,
    );
    let update = r#"{"votes": {"$inc": 3}, "tags": {"$add": ["ui", "db"]},
                     "note": {"$unset": true}, "status": "open"}"#;
    db.run("update", &["bugs", &id, update]).success();
    assert_eq!(
        db.get("bugs", &id),
        json!({"_id": id, "status": "open", "tags": ["db", "ui"], "title": "Crash", "votes": 3})
    );

    db.run(
        "update",
        &[
            "bugs",
            &id,
            r#"{"votes": {"$inc": -1}, "tags": {"$remove": ["ui"]}}"#,
        ],
    )
    .success();
    let bug = db.get("bugs", &id);
    assert_eq!(bug["votes"], 2);
    assert_eq!(bug["tags"], json!(["db"]));
    assert_eq!(bug["title"], "Crash");
}

#[test]
fn a_typed_value_is_set_not_taken_for_an_operator() {
    let db = TestDb::new();
    let id = db.put("bugs", "{}");
    db.run(
        "update",
        &["bugs", &id, r#"{"due": {"$date": "2026-03-01T00:00:00Z"}}"#],
    )
    .success();
    assert_eq!(
        db.get("bugs", &id)["due"],
        json!({"$date": "2026-03-01T00:00:00Z"})
    );
}

#[test]
fn a_misspelled_or_malformed_operator_is_a_usage_error() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"votes": 1}"#);
    for bad in [
        r#"{"votes": {"$incr": 1}}"#,
        r#"{"votes": {"$inc": "one"}}"#,
        r#"{"tags": {"$add": "ui"}}"#,
        r#"{"votes": {"$unset": 1}}"#,
        // Two operators in one object: stored as a map, the counter would be lost.
        r#"{"votes": {"$inc": 1, "$unset": true}}"#,
        // An integer the 64-bit range cannot hold would become a float of another value.
        r#"{"votes": 18446744073709551615}"#,
    ] {
        let run = db.run("update", &["bugs", &id, bad]).failure(2);
        assert!(run.stderr.contains("field \""), "{bad}: {}", run.stderr);
    }
    assert_eq!(db.get("bugs", &id)["votes"], 1);
}

#[test]
fn incrementing_a_text_field_is_refused() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "Crash"}"#);
    let run = db
        .run("update", &["bugs", &id, r#"{"title": {"$inc": 1}}"#])
        .failure(1);
    assert!(run.stderr.contains("title"), "{}", run.stderr);
}
