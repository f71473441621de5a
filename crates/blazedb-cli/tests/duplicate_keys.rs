//! A JSON object that names a key twice (`{"a": 1, "a": 2}`) is refused by `put`, `update`
//! and `import`, at any depth, naming the key (and for `import` the line), instead of keeping
//! the last value and dropping the first without a word.

mod common;

use common::TestDb;
use serde_json::json;

#[test]
fn put_refuses_a_key_named_twice_at_any_depth() {
    let db = TestDb::new();
    for (json, key, column) in [
        (r#"{"a": 1, "a": 2}"#, "a", 12),
        (r#"{"m": {"x": [{"k": 1, "k": 1}]}}"#, "k", 25),
        (r#"{"d": {"$date": 1, "$date": 2}}"#, "$date", 26),
    ] {
        let run = db.run("put", &["bugs", json]).failure(2);
        let told = format!("duplicate key {key:?} at column {column}: a key may appear once");
        assert!(run.stderr.contains(&told), "{json}: {}", run.stderr);
    }
    assert!(!db.path.exists(), "a refused put created the database");
    // The same keys in different objects are fine.
    let id = db.put("bugs", r#"{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}"#);
    assert_eq!(
        db.get("bugs", &id),
        json!({"_id": id, "a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]})
    );
}

#[test]
fn update_refuses_a_key_named_twice() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"votes": 1}"#);
    for json in [
        r#"{"votes": {"$inc": 1}, "votes": {"$inc": 2}}"#,
        r#"{"votes": {"$inc": 1, "$inc": 2}}"#,
    ] {
        let run = db.run("update", &["bugs", &id, json]).failure(2);
        assert!(
            run.stderr.contains(r#"duplicate key "votes""#)
                || run.stderr.contains(r#"duplicate key "$inc""#),
            "{json}: {}",
            run.stderr
        );
    }
    assert_eq!(db.get("bugs", &id)["votes"], 1);
}

#[test]
fn import_refuses_a_key_named_twice_naming_its_line() {
    let db = TestDb::new();
    let id = "0190b3c4-0000-7000-8000-000000000001";
    let lines = format!(
        "{{\"n\": 1}}\n\n{{\"_id\": \"{id}\", \"n\": 2, \"_id\": \"{id}\"}}\n{{\"n\": 3}}\n"
    );
    let run = db
        .run_with_stdin("import", &["bugs", "-"], &lines)
        .failure(1);
    let told = r#"import stopped at line 3: duplicate key "_id" at column"#;
    assert!(run.stderr.contains(told), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
}
