//! `import` loads JSON lines from a file or stdin (lines with "_id" upsert), and `export`
//! prints every record as JSON lines that `import` reads back unchanged.

mod common;

use common::TestDb;
use serde_json::json;

const ID: &str = "0190b3c4-0000-7000-8000-000000000001";

#[test]
fn import_from_a_file_inserts_and_upserts() {
    let db = TestDb::new();
    db.run(
        "put",
        &["bugs", r#"{"title": "old", "keep": true}"#, "--id", ID],
    )
    .success();
    let lines = format!(
        "{{\"title\": \"one\"}}\n\n{{\"title\": \"two\"}}\r\n{{\"_id\": \"{ID}\", \"title\": \"new\"}}\n"
    );
    let file = db.file("in.jsonl");
    std::fs::write(&file, lines).unwrap();
    let run = db
        .run("import", &["bugs", file.to_str().unwrap()])
        .success();
    assert_eq!(run.json(), json!({"imported": 3}));
    // The upsert changed only the fields it named.
    assert_eq!(
        db.get("bugs", ID),
        json!({"_id": ID, "keep": true, "title": "new"})
    );
    assert_eq!(db.run("export", &["bugs"]).success().json_lines().len(), 3);
}

#[test]
fn import_from_stdin_creates_the_database() {
    let db = TestDb::new();
    let lines: String = (0..250).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let run = db
        .run_with_stdin("import", &["bugs", "-"], &lines)
        .success();
    assert_eq!(run.json(), json!({"imported": 250}));
    let rows = db
        .run("query", &["bugs", "--where", "n >= 100"])
        .success()
        .json_lines();
    assert_eq!(rows.len(), 150);
}

#[test]
fn export_then_import_round_trips_every_record() {
    let source = TestDb::new();
    source.put(
        "bugs",
        r#"{"title": "a", "nested": {"x": [1, 2.5, null]}, "ok": true}"#,
    );
    source.put(
        "bugs",
        r#"{"id": {"$uuid": "0190b3c4-0000-7000-8000-0000000000ff"}}"#,
    );
    source.put(
        "bugs",
        r#"{"blob": {"$bytes": "AAEC"}, "at": {"$date": "2026-01-01T00:00:00Z"}}"#,
    );
    let exported = source.run("export", &["bugs"]).success().stdout;
    assert_eq!(exported.lines().count(), 3);

    let copy = TestDb::new();
    copy.run_with_stdin("import", &["bugs", "-"], &exported)
        .success();
    assert_eq!(copy.run("export", &["bugs"]).success().stdout, exported);
}

#[test]
fn export_of_an_unknown_collection_is_empty() {
    let db = TestDb::new();
    db.put("bugs", "{}");
    assert!(db.run("export", &["other"]).success().stdout.is_empty());
}

/// Wide records fill a transaction's cell limit (1,000,000) before its record count: 10,000
/// lines of 100 fields import whole, the batches cut by cells.
#[test]
fn wide_records_import_in_batches_cut_by_cells() {
    let db = TestDb::new();
    let line: serde_json::Map<String, serde_json::Value> =
        (0..100).map(|k| (format!("f{k}"), json!(k))).collect();
    let line = serde_json::Value::Object(line).to_string();
    let text = format!("{line}\n").repeat(10_000);
    let path = db.file("wide.jsonl");
    std::fs::write(&path, text).unwrap();
    let run = db.run("import", &["c", path.to_str().unwrap()]).success();
    assert_eq!(run.json()["imported"], 10_000);
}
