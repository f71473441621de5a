//! `put` prints a new id and `get` prints the record back with its fields and "_id".

mod common;

use common::TestDb;
use serde_json::json;

#[test]
fn put_then_get_returns_the_fields_and_id() {
    let db = TestDb::new();
    let id = db.put(
        "bugs",
        r#"{"title": "Crash", "priority": 5, "tags": ["ui"], "ok": false}"#,
    );
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        db.get("bugs", &id),
        json!({"_id": id, "ok": false, "priority": 5, "tags": ["ui"], "title": "Crash"})
    );
}

#[test]
fn put_with_an_id_uses_it_and_refuses_a_second_insert() {
    let db = TestDb::new();
    let id = "0190b3c4-0000-7000-8000-000000000001";
    let printed = db
        .run("put", &["bugs", r#"{"title": "a"}"#, "--id", id])
        .success();
    assert_eq!(printed.stdout, format!("{id}\n"));
    assert_eq!(db.get("bugs", id)["title"], "a");

    let again = db
        .run("put", &["bugs", r#"{"title": "b"}"#, "--id", id])
        .failure(1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(db.get("bugs", id)["title"], "a");
}

#[test]
fn put_takes_the_id_from_an_id_key() {
    let db = TestDb::new();
    let id = "0190b3c4-0000-7000-8000-000000000002";
    let json = format!(r#"{{"_id": "{id}", "title": "a"}}"#);
    assert_eq!(db.put("bugs", &json), id);
    assert_eq!(db.get("bugs", id), json!({"_id": id, "title": "a"}));
}

#[test]
fn two_puts_get_two_ids() {
    let db = TestDb::new();
    let a = db.put("bugs", "{}");
    let b = db.put("bugs", "{}");
    assert_ne!(a, b);
}

/// A value over the 1 MiB limit names its field and says what to do instead.
#[test]
fn an_over_size_value_names_its_field_and_what_to_do() {
    let db = TestDb::new();
    let big = format!(
        r#"{{"title": "x", "body": "{}"}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    // Through import: one argument of 2 MiB is more than the kernel passes to a program.
    let run = db
        .run_with_stdin("import", &["notes", "-"], &format!("{big}\n"))
        .failure(1);
    assert!(
        run.stderr.contains("the value of field \"body\" is 2097")
            && run
                .stderr
                .contains("over the limit of 1048576 bytes for one value")
            && run.stderr.contains("outside the database"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("blazedb::limits"), "{}", run.stderr);
}

/// `get`, `query` and `export` of a name no collection can have say so, with the error
/// `put` gets (exit 1), instead of answering "no record" or nothing at all, as for a
/// collection with no records: an empty name from an unset shell variable looked like
/// missing data.
#[test]
fn reads_of_a_name_no_collection_can_have_fail_as_put_does() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"n": 1}"#);
    for name in ["", "tab\there"] {
        let put = db.run("put", &[name, "{}"]).failure(1).stderr;
        assert!(put.starts_with("error: invalid collection name"), "{put}");
        for (command, args) in [
            ("get", vec![name, id.as_str()]),
            ("query", vec![name]),
            ("query", vec![name, "--where", "n == 1"]),
            ("export", vec![name]),
        ] {
            let run = db.run(command, &args).failure(1);
            assert_eq!(run.stderr, put, "{command} {name:?}");
            assert!(run.stdout.is_empty(), "{command} {name:?}: {}", run.stdout);
        }
    }
    // A valid name without records is empty, as before.
    assert!(db.run("query", &["nothing"]).success().stdout.is_empty());
}
