//! The record cache (`store/record_cache.rs`) never hands a write a row that is not the
//! file's: after another handle's commit, after a rollback, after an eviction. (Debug builds
//! also compare every cache hit with the stored row, so every other test checks it too.)

use blazedb::{Database, OpenOptions, Patch, RecordId, Value};

fn fields(db: &Database, id: RecordId) -> Vec<(String, Value)> {
    let r = db.get("c", id).unwrap().expect("record exists");
    let mut f: Vec<_> = r.fields.into_iter().collect();
    f.sort_by(|a, b| a.0.cmp(&b.0));
    f
}

fn set(field: &str, v: i64) -> Patch {
    Patch::new().set(field, Value::Int(v))
}

#[test]
fn a_write_after_another_handle_changed_the_record_builds_on_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let one = Database::open(&path, OpenOptions::default()).unwrap();
    let two = Database::open(&path, OpenOptions::default()).unwrap();
    let id = one
        .insert("c", [("a", Value::Int(1)), ("b", Value::Int(1))])
        .unwrap();
    // `one` has written the row twice now: the second write left it in its cache.
    one.update("c", id, set("a", 2)).unwrap();
    two.update("c", id, set("b", 5)).unwrap();
    one.update("c", id, set("a", 3)).unwrap();
    let want = vec![
        ("a".to_owned(), Value::Int(3)),
        ("b".to_owned(), Value::Int(5)),
    ];
    assert_eq!(fields(&one, id), want, "one lost two's write");
    assert_eq!(fields(&two, id), want);
    // And the other way round, with `two` holding the row in its cache.
    two.update("c", id, set("b", 6)).unwrap();
    one.update("c", id, set("a", 4)).unwrap();
    two.update("c", id, set("b", 7)).unwrap();
    let want = vec![
        ("a".to_owned(), Value::Int(4)),
        ("b".to_owned(), Value::Int(7)),
    ];
    assert_eq!(fields(&one, id), want, "two lost one's write");
}

#[test]
fn a_rolled_back_write_leaves_nothing_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("c.db"), OpenOptions::default()).unwrap();
    let id = db
        .insert("c", [("a", Value::Int(1)), ("b", Value::Int(1))])
        .unwrap();
    db.update("c", id, set("a", 2)).unwrap();
    let missing = RecordId([7; 16]);
    let err = db
        .transaction(|tx| {
            tx.update("c", id, set("a", 99))?;
            // Fails, so the whole transaction (a = 99 included) rolls back.
            tx.update("c", missing, set("a", 1))
        })
        .unwrap_err();
    assert!(err.to_string().contains("no record"), "{err}");
    db.update("c", id, set("b", 7)).unwrap();
    assert_eq!(
        fields(&db, id),
        vec![
            ("a".to_owned(), Value::Int(2)),
            ("b".to_owned(), Value::Int(7))
        ],
        "the rolled-back a = 99 came back"
    );
}

#[test]
fn an_evicted_record_is_not_brought_back_by_a_cached_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("c.db"), OpenOptions::default()).unwrap();
    let id = db.insert("c", [("a", Value::Int(1))]).unwrap();
    db.update("c", id, set("a", 2)).unwrap();
    let out = db.evict("c", &[id], None).unwrap();
    assert_eq!(out.evicted, 1);
    let err = db.update("c", id, set("a", 3)).unwrap_err();
    assert!(err.to_string().contains("no record"), "{err}");
    assert!(db.get("c", id).unwrap().is_none());
    // Received again later, it starts from nothing, not from the evicted row.
    db.transaction(|tx| {
        tx.upsert("c", id, [("b", Value::Int(1))])?;
        Ok(())
    })
    .unwrap();
    assert_eq!(fields(&db, id), vec![("b".to_owned(), Value::Int(1))]);
}
