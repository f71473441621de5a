//! `index` creates a secondary index (idempotently) that queries then use with the same
//! results; `--drop` removes it, and dropping a missing one is an error.

mod common;

use common::{column, TestDb};

#[test]
fn queries_return_the_same_rows_with_and_without_the_index() {
    let db = TestDb::new();
    for n in 0..30 {
        db.put("bugs", &format!(r#"{{"priority": {}, "n": {n}}}"#, n % 5));
    }
    let query = [
        "bugs",
        "--where",
        "priority >= 3 && priority < 5",
        "--order-by",
        "n",
    ];
    let before = db.run("query", &query).success().json_lines();
    assert_eq!(before.len(), 12);

    db.run("index", &["bugs", "priority"]).success();
    db.run("index", &["bugs", "priority"]).success();
    let stats = db.run("stats", &[]).success().json();
    assert_eq!(
        stats["collections"]["bugs"]["index_entries"]["priority"],
        30
    );
    assert_eq!(
        column(&db.run("query", &query).success().json_lines(), "n"),
        column(&before, "n")
    );

    db.run("index", &["bugs", "priority", "--drop"]).success();
    let stats = db.run("stats", &[]).success().json();
    assert!(stats["collections"]["bugs"]["index_entries"]
        .get("priority")
        .is_none());
    let run = db.run("index", &["bugs", "priority", "--drop"]).failure(1);
    assert!(run.stderr.contains("no index"), "{}", run.stderr);
}

#[test]
fn an_invalid_field_name_is_refused() {
    let db = TestDb::new();
    db.put("bugs", "{}");
    let run = db.run("index", &["bugs", "$nope"]).failure(1);
    assert!(run.stderr.contains("$nope"), "{}", run.stderr);
}
