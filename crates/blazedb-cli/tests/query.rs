//! `query` filters with `--where`, sorts with repeatable `--order-by FIELD[:desc]`, pages with
//! `--limit`/`--offset`, and prints one JSON object per line.

mod common;

use common::{column, TestDb};
use serde_json::json;

fn bugs() -> TestDb {
    let db = TestDb::new();
    for (title, priority, status) in [
        ("a", 5, "open"),
        ("b", 1, "open"),
        ("c", 5, "closed"),
        ("d", 3, "open"),
        ("e", 5, "open"),
    ] {
        db.put(
            "bugs",
            &json!({"title": title, "priority": priority, "status": status}).to_string(),
        );
    }
    db
}

fn titles(db: &TestDb, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["bugs"];
    all.extend(args);
    column(&db.run("query", &all).success().json_lines(), "title")
}

#[test]
fn where_filters() {
    let db = bugs();
    let open = titles(
        &db,
        &[
            "--where",
            r#"status == "open" && priority >= 3"#,
            "--order-by",
            "title",
        ],
    );
    assert_eq!(open, ["a", "d", "e"]);
}

#[test]
fn order_by_is_repeatable_and_takes_desc() {
    let db = bugs();
    let sorted = titles(
        &db,
        &["--order-by", "priority:desc", "--order-by", "title:desc"],
    );
    assert_eq!(sorted, ["e", "c", "a", "d", "b"]);
}

#[test]
fn limit_and_offset_page_through_the_sorted_rows() {
    let db = bugs();
    assert_eq!(
        titles(&db, &["--order-by", "title", "--limit", "2"]),
        ["a", "b"]
    );
    assert_eq!(
        titles(
            &db,
            &["--order-by", "title", "--offset", "2", "--limit", "2"]
        ),
        ["c", "d"]
    );
}

#[test]
fn every_line_is_a_whole_record_with_its_id() {
    let db = bugs();
    let rows = db
        .run("query", &["bugs", "--where", r#"title == "b""#])
        .success()
        .json_lines();
    assert_eq!(rows.len(), 1);
    let id = rows[0]["_id"].as_str().unwrap();
    assert_eq!(
        rows[0],
        json!({"_id": id, "priority": 1, "status": "open", "title": "b"})
    );
}

#[test]
fn an_unknown_collection_has_no_rows() {
    let db = bugs();
    assert!(db.run("query", &["nothing"]).success().stdout.is_empty());
}
