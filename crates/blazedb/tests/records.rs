//! Records: insert, get, update of named fields, upsert, delete, counters, sets, typed
//! values, transactions, per-record versions, limits.

use std::collections::BTreeMap;

use blazedb::{Database, Error, OpenOptions, Patch, RecordId, Timestamp, Value, WriteError};

fn db() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("t.db"), OpenOptions::default()).unwrap();
    (dir, db)
}

#[test]
fn typed_values_round_trip() {
    let (_d, db) = db();
    let mut map = BTreeMap::new();
    map.insert(
        "k".to_owned(),
        Value::List(vec![Value::Null, Value::Bool(true)]),
    );
    let u = uuid::Uuid::now_v7();
    let fields: Vec<(&str, Value)> = vec![
        ("null", Value::Null),
        ("bool", Value::Bool(false)),
        ("int", Value::Int(i64::MIN)),
        ("float", Value::Float(-1.25)),
        ("text", Value::from("héllo\0")),
        ("bytes", Value::Bytes(vec![0, 255, 7])),
        ("uuid", Value::Uuid(u)),
        ("ts", Value::Timestamp(Timestamp(1_700_000_000_123_456))),
        ("list", Value::List(vec![1.into(), "a".into()])),
        ("map", Value::Map(map)),
    ];
    let id = db.insert("c", fields.clone()).unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    for (k, v) in fields {
        assert_eq!(r.fields[k], v, "{k}");
    }
    assert_eq!(r.rev, 1);
}

#[test]
fn update_changes_only_named_fields_and_bumps_rev() {
    let (_d, db) = db();
    let id = db.insert("c", [("a", 1), ("b", 2)]).unwrap();
    db.update("c", id, Patch::new().set("b", 20).set("c", 30).unset("a"))
        .unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    assert_eq!(r.fields.len(), 2);
    assert_eq!(r.fields["b"], Value::Int(20));
    assert_eq!(r.fields["c"], Value::Int(30));
    assert_eq!(r.rev, 2);
    let missing = RecordId::new_v7();
    assert!(matches!(
        db.update("c", missing, Patch::new().set("a", 1)),
        Err(Error::Write(WriteError::NotFound { .. }))
    ));
}

#[test]
fn insert_with_existing_id_fails_upsert_merges() {
    let (_d, db) = db();
    let id = RecordId::new_v7();
    db.insert_with_id("c", id, [("a", 1)]).unwrap();
    assert!(matches!(
        db.insert_with_id("c", id, [("a", 2)]),
        Err(Error::Write(WriteError::AlreadyExists { .. }))
    ));
    db.upsert("c", id, [("b", 2)]).unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    assert_eq!(
        (r.fields["a"].clone(), r.fields["b"].clone()),
        (Value::Int(1), Value::Int(2))
    );
    let fresh = RecordId::new_v7();
    db.upsert("c", fresh, [("z", 9)]).unwrap();
    assert_eq!(
        db.get("c", fresh).unwrap().unwrap().fields["z"],
        Value::Int(9)
    );
}

#[test]
fn delete_then_reinsert() {
    let (_d, db) = db();
    let id = db.insert("c", [("a", 1), ("b", 2)]).unwrap();
    assert!(db.delete("c", id).unwrap());
    assert!(!db.delete("c", id).unwrap());
    assert!(db.get("c", id).unwrap().is_none());
    assert_eq!(db.count("c").unwrap(), 0);
    db.insert_with_id("c", id, [("c", 3)]).unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    assert_eq!(
        r.fields.len(),
        1,
        "a re-insert does not bring back deleted fields"
    );
    assert_eq!(r.fields["c"], Value::Int(3));
}

#[test]
fn counters_and_sets() {
    let (_d, db) = db();
    let id = db
        .insert(
            "c",
            [
                ("likes", Value::Int(10)),
                ("tags", Value::List(vec!["a".into()])),
            ],
        )
        .unwrap();
    assert_eq!(db.increment("c", id, "likes", 5).unwrap(), 15);
    assert_eq!(db.increment("c", id, "likes", -20).unwrap(), -5);
    assert_eq!(db.increment("c", id, "fresh", 1).unwrap(), 1);
    db.set_add("c", id, "tags", vec!["b".into(), "c".into(), "b".into()])
        .unwrap();
    db.set_remove("c", id, "tags", vec!["a".into()]).unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    assert_eq!(r.fields["likes"], Value::Int(-5));
    assert_eq!(r.fields["tags"], Value::List(vec!["b".into(), "c".into()]));
    // A plain write resets a counter.
    db.update("c", id, Patch::new().set("likes", 0)).unwrap();
    assert_eq!(db.increment("c", id, "likes", 2).unwrap(), 2);
    // Wrong types are refused with a clear error.
    db.update("c", id, Patch::new().set("title", "x")).unwrap();
    let e = db.increment("c", id, "title", 1).unwrap_err();
    assert!(e.to_string().contains("increment"), "{e}");
    assert!(db.increment("c", id, "likes", i64::MAX).is_err());
}

/// Removing elements from a set field the record does not have (never written, or unset)
/// changes nothing: no write, and no empty set appears. It is not refused either, even when
/// the record is at its field limit (it adds no field).
#[test]
fn removing_from_a_missing_set_changes_nothing() {
    use blazedb::limits::RECORD_FIELDS_MAX;
    let (_d, db) = db();
    let id = db
        .insert("c", [("title", Value::from("t")), ("old", Value::Int(1))])
        .unwrap();
    db.update("c", id, Patch::new().unset("old")).unwrap();
    let before = db.get("c", id).unwrap().unwrap();
    let head = db.last_seq().unwrap();
    for field in ["tags", "old"] {
        db.set_remove("c", id, field, vec!["x".into()]).unwrap();
    }
    let after = db.get("c", id).unwrap().unwrap();
    assert_eq!(after.fields, before.fields, "no field appeared");
    assert_eq!(
        (after.rev, db.last_seq().unwrap()),
        (before.rev, head),
        "nothing written"
    );

    let full: Vec<(String, Value)> = (0..RECORD_FIELDS_MAX)
        .map(|i| (format!("f{i}"), Value::Int(1)))
        .collect();
    let full = db.insert("c", full).unwrap();
    db.set_remove("c", full, "tags", vec!["x".into()]).unwrap();
    assert_eq!(
        db.get("c", full).unwrap().unwrap().fields.len(),
        RECORD_FIELDS_MAX
    );
}

/// A set holds values, and numerically equal encodings are one value (`1` and `1.0`, `0.0`
/// and `-0.0`): whichever encoding added it, removing it by the other takes it out, on the
/// writer and on a replica; adding it again by another encoding keeps one element.
#[test]
fn a_set_element_is_removed_whatever_number_encoding_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Database::open(dir.path().join(name), OpenOptions::default()).unwrap();
    let (a, b) = (open("a.db"), open("b.db"));
    let id = a.insert("c", [("title", "t")]).unwrap();
    let tags = |db: &Database| db.get("c", id).unwrap().unwrap().fields["tags"].clone();
    let raw = |v: &Value| blazedb::codec::value::to_bytes(v);
    a.set_add("c", id, "tags", vec![Value::Float(1.0), Value::Float(-0.0)])
        .unwrap();
    a.set_add("c", id, "tags", vec![Value::Int(2)]).unwrap();
    a.set_add("c", id, "tags", vec![Value::Float(2.0)]).unwrap();
    let shown = tags(&a);
    let Value::List(elements) = &shown else {
        panic!("{shown:?}")
    };
    assert_eq!(elements.len(), 3, "2 and 2.0 are one element: {shown:?}");
    // The newest encoding is the one shown.
    assert_eq!(raw(&elements[2]), raw(&Value::Float(2.0)), "{shown:?}");

    a.set_remove("c", id, "tags", vec![Value::Int(1), Value::Float(0.0)])
        .unwrap();
    a.set_remove("c", id, "tags", vec![Value::Int(2)]).unwrap();
    assert_eq!(tags(&a), Value::List(vec![]));
    let all = a.changes_since(blazedb::Seq(0), 1000, None).unwrap();
    b.apply_changes(a.node_id(), &all.changes, None).unwrap();
    assert_eq!(tags(&b), Value::List(vec![]));

    // Added again by another encoding, on the replica: one element, everywhere.
    b.set_add("c", id, "tags", vec![Value::Int(1)]).unwrap();
    let from_b = b.changes_since(blazedb::Seq(0), 1000, None).unwrap();
    a.apply_changes(b.node_id(), &from_b.changes, None).unwrap();
    for db in [&a, &b] {
        assert_eq!(raw(&tags(db)), raw(&Value::List(vec![Value::Int(1)])));
    }
}

#[test]
fn transactions_are_atomic() {
    let (_d, db) = db();
    let a = db.insert("acct", [("balance", 100)]).unwrap();
    let b = db.insert("acct", [("balance", 0)]).unwrap();
    // A failing transaction leaves nothing behind, not even new collections.
    let r: Result<(), Error> = db.transaction(|tx| {
        tx.increment("acct", a, "balance", -50)?;
        tx.increment("acct", b, "balance", 50)?;
        tx.insert("newcoll", [("x", 1)])?;
        Err(Error::InvalidArgument("abort".into()))
    });
    assert!(r.is_err());
    assert_eq!(
        db.get("acct", a).unwrap().unwrap().fields["balance"],
        Value::Int(100)
    );
    assert!(!db.collections().unwrap().contains(&"newcoll".to_owned()));
    // A successful one applies everything and reads its own writes.
    db.transaction(|tx| {
        tx.increment("acct", a, "balance", -50)?;
        tx.increment("acct", b, "balance", 50)?;
        assert_eq!(
            tx.get("acct", b)?.unwrap().fields["balance"],
            Value::Int(50)
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(
        db.get("acct", b).unwrap().unwrap().fields["balance"],
        Value::Int(50)
    );
    // One commit, one feed position for both records.
    let batch = db.changes_since(blazedb::Seq(2), 100, None).unwrap();
    assert_eq!(batch.changes.len(), 2);
    assert_eq!(batch.changes[0].seq, batch.changes[1].seq);
}

/// A call on the database from inside its own transaction closure waited for itself forever
/// (the handle's lock is not re-entrant; API audit). Now it is refused with
/// `Error::Reentrant`, the closure may go on with its `Tx`, and the handle stays usable.
/// Run on a thread with a deadline, so a regression fails instead of hanging the suite.
#[test]
fn a_call_on_the_database_inside_its_own_transaction_is_refused_not_a_deadlock() {
    let (_d, db) = db();
    let db = std::sync::Arc::new(db);
    let id = db.insert("c", [("n", 1)]).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let inside = db.clone();
    std::thread::spawn(move || {
        let r = inside.transaction(|tx| {
            let read = inside.get("c", id).map(|_| ());
            let write = inside.update("c", id, Patch::new().set("n", 3)).map(|_| ());
            let nested = inside.transaction(|_| Ok(()));
            let query = inside.count("c").map(|_| ());
            tx.update("c", id, Patch::new().set("n", 2))?;
            Ok([read, write, nested, query])
        });
        let _ = done.send(r);
    });
    let calls = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a call inside the transaction closure hung")
        .unwrap();
    for r in calls {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Reentrant), "{e:?}");
        assert!(e.to_string().contains("through the Tx"), "{e}");
    }
    // The transaction's own write committed; the refused one did not happen.
    assert_eq!(db.get("c", id).unwrap().unwrap().fields["n"], Value::Int(2));
    // Other threads may still wait for the lock as before: no false refusal.
    let other = db.clone();
    let held = db
        .transaction(|tx| {
            let t = std::thread::spawn(move || other.get("c", id).map(|r| r.is_some()));
            std::thread::sleep(std::time::Duration::from_millis(50));
            tx.update("c", id, Patch::new().set("n", 4))?;
            Ok(t)
        })
        .unwrap();
    assert!(held.join().unwrap().unwrap());
    assert_eq!(db.get("c", id).unwrap().unwrap().fields["n"], Value::Int(4));
}

#[test]
fn limits_are_clear_errors() {
    let (_d, db) = db();
    let big = Value::Bytes(vec![0; blazedb::limits::VALUE_BYTES_MAX + 1]);
    let e = db.insert("c", [("x", big)]).unwrap_err();
    assert!(
        matches!(&e, Error::Write(WriteError::ValueTooLarge { field, .. }) if field == "x"),
        "{e}"
    );
    assert!(e.to_string().contains("over the limit of"), "{e}");
    let long = "f".repeat(blazedb::limits::FIELD_NAME_BYTES_MAX + 1);
    assert!(matches!(
        db.insert("c", [(long.as_str(), 1)]),
        Err(Error::Write(WriteError::InvalidName { .. }))
    ));
    assert!(matches!(
        db.insert("", [("a", 1)]),
        Err(Error::Write(WriteError::InvalidName { .. }))
    ));
    assert!(matches!(
        db.insert("c", [("_id", 1)]),
        Err(Error::Write(WriteError::InvalidName { .. }))
    ));
    let many: Vec<(String, Value)> = (0..=blazedb::limits::RECORD_FIELDS_MAX)
        .map(|i| (format!("f{i}"), Value::Int(1)))
        .collect();
    assert!(matches!(
        db.insert("c", many),
        Err(Error::Write(WriteError::Limit { .. }))
    ));
    let mut deep = Value::Null;
    for _ in 0..=blazedb::limits::VALUE_DEPTH_MAX {
        deep = Value::List(vec![deep]);
    }
    let e = db.insert("c", [("d", deep)]).unwrap_err();
    assert!(
        matches!(&e, Error::Write(WriteError::ValueTooDeep { field, .. }) if field == "d"),
        "{e}"
    );
    // Nothing was written by the failures.
    assert_eq!(db.count("c").unwrap(), 0);
}

/// An invalid name, id or sort key of a megabyte is named in its error by its first 64
/// characters and its length: the message stays a line (it repeated all of it, a megabyte,
/// into logs, HTTP replies and panic messages). The cut falls between characters, here of
/// two bytes each. Names that fit are named whole.
#[test]
fn an_invalid_name_of_a_megabyte_is_named_by_its_start_and_length() {
    let (_d, db) = db();
    let id = db.insert("c", [("a", 1)]).unwrap();
    let huge = "é".repeat(500_000); // 1,000,000 bytes
    let start = "é".repeat(blazedb::limits::ERROR_ECHO_CHARS_MAX);
    // 1,000,000 bytes, or a few more for the texts built around the name.
    let named = format!("\"{start}… (1000");
    let errors: Vec<(&str, String)> = vec![
        (
            "insert collection",
            db.insert(&huge, [("a", 1)]).unwrap_err().to_string(),
        ),
        (
            "insert field",
            db.insert("c", [(huge.as_str(), 1)])
                .unwrap_err()
                .to_string(),
        ),
        (
            "update collection",
            db.update(&huge, id, Patch::new().set("a", 2))
                .unwrap_err()
                .to_string(),
        ),
        (
            "update field",
            db.update("c", id, Patch::new().set(huge.clone(), 2))
                .unwrap_err()
                .to_string(),
        ),
        (
            "increment collection",
            db.increment(&huge, id, "a", 1).unwrap_err().to_string(),
        ),
        (
            "create_index",
            db.create_index("c", &huge).unwrap_err().to_string(),
        ),
        (
            "set_policy",
            db.set_policy(&huge, Default::default())
                .unwrap_err()
                .to_string(),
        ),
        ("record id", huge.parse::<RecordId>().unwrap_err()),
        ("node id", huge.parse::<blazedb::NodeId>().unwrap_err()),
        ("time", Timestamp::parse_rfc3339(&huge).unwrap_err()),
        (
            "order_by",
            blazedb::OrderBy::parse(&format!("{huge}:sideways")).unwrap_err(),
        ),
        (
            "sync policy",
            blazedb::sync::SyncPolicy {
                collections: Some(vec![huge.clone()]),
                ..Default::default()
            }
            .compile()
            .map(|_| ())
            .unwrap_err(),
        ),
    ];
    for (what, m) in &errors {
        let head: String = m.chars().take(200).collect();
        assert!(m.len() < 400, "{what}: {} bytes: {head}", m.len());
        assert!(m.contains(&named), "{what}: {m}");
    }
    assert!(
        errors[0].1.contains(" (1000000 bytes)\": "),
        "{}",
        errors[0].1
    );
    // An update of a collection no name can have is refused as the insert was, not as a
    // record missing from it.
    assert!(
        errors[2].1.starts_with("invalid collection name"),
        "{}",
        errors[2].1
    );
    let e = db.insert("c", [("$x", 1)]).unwrap_err();
    assert!(
        matches!(&e, Error::Write(WriteError::InvalidName { name, .. }) if name == "$x"),
        "{e}"
    );
    let longest = "f".repeat(blazedb::limits::ERROR_ECHO_CHARS_MAX);
    let e = db.insert("c", [(format!("${longest}"), 1)]).unwrap_err();
    assert!(e.to_string().contains("(65 bytes)"), "{e}");
    let e = db.insert("c", [(format!("{longest}\n"), 1)]).unwrap_err();
    assert!(
        e.to_string().contains(&format!("{longest}… (65 bytes)")),
        "{e}"
    );
    let e = db
        .insert("c", [(format!("{}\n", &longest[1..]), 1)])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("\"{}\\n\":", &longest[1..])),
        "{e}"
    );
}

/// A value nested far deeper than the limit is refused with the same error on a thread with
/// a 2 MiB stack (the default for threads and tokio's workers): checking the depth used to
/// count all of it, recursively, and overflowed the stack first, aborting the process.
#[test]
fn a_value_nested_ten_thousand_levels_deep_is_refused_not_a_stack_overflow() {
    let (_d, db) = db();
    let db = std::sync::Arc::new(db);
    let id = db.insert("c", [("a", 1)]).unwrap();
    let on_small_stack = {
        let db = db.clone();
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let deep = || {
                    let mut v = Value::Int(1);
                    for _ in 0..10_000 {
                        v = Value::List(vec![v]);
                    }
                    v
                };
                let errors = [
                    db.insert("c", [("d", deep())]).unwrap_err(),
                    db.update("c", id, Patch::new().set("d", deep()))
                        .unwrap_err(),
                    db.set_add("c", id, "s", vec![deep()]).unwrap_err(),
                ];
                errors.map(|e| e.to_string())
            })
            .unwrap()
    };
    for e in on_small_stack
        .join()
        .expect("the thread overflowed its stack")
    {
        assert!(e.contains("more than 32 levels deep"), "{e}");
    }
    assert_eq!(db.count("c").unwrap(), 1);
}

#[test]
fn change_feed_returns_only_changed_fields_in_seq_order() {
    let (_d, db) = db();
    let id = db.insert("c", [("a", 1), ("b", 2), ("c", 3)]).unwrap();
    let s1 = db.last_seq().unwrap();
    db.update("c", id, Patch::new().set("b", 20)).unwrap();
    let other = db.insert("c", [("z", 1)]).unwrap();
    let batch = db.changes_since(s1, 100, None).unwrap();
    assert_eq!(batch.changes.len(), 2);
    assert_eq!(batch.changes[0].id, id);
    assert_eq!(batch.changes[0].cells.len(), 1, "only the changed field");
    assert_eq!(batch.changes[1].id, other);
    assert!(batch.changes[0].seq < batch.changes[1].seq);
    assert!(!batch.more);
    assert_eq!(batch.next, db.last_seq().unwrap());
    // Paging: at most about 1 cell per page, transactions never split.
    let mut cursor = blazedb::Seq(0);
    let mut pages = 0;
    loop {
        let b = db.changes_since(cursor, 1, None).unwrap();
        pages += 1;
        cursor = b.next;
        if !b.more {
            break;
        }
    }
    assert_eq!(cursor, db.last_seq().unwrap());
    assert!(pages >= 2);
}

#[test]
fn data_survives_reopen_and_clock_is_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let id;
    let v1;
    {
        let db = Database::open(&path, OpenOptions::default()).unwrap();
        id = db.insert("c", [("a", 1)]).unwrap();
        v1 = db.history("c", id).unwrap().last().unwrap().version;
    }
    // A clock that went back an hour still produces later versions.
    let opts = OpenOptions {
        wall_clock: std::sync::Arc::new(|| blazedb::store::system_ms() - 3_600_000),
        ..Default::default()
    };
    let db = Database::open(&path, opts).unwrap();
    db.update("c", id, Patch::new().set("a", 2)).unwrap();
    let v2 = db.history("c", id).unwrap().last().unwrap().version;
    assert!(v2 > v1);
    assert_eq!(db.get("c", id).unwrap().unwrap().rev, 2);
}

/// A set is one value when read (and exported): its elements together stay within the
/// value limits, so what a write lets in can always be exported and imported again.
#[test]
fn a_set_is_held_to_the_value_limits_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("s.db"), OpenOptions::default()).unwrap();
    let id = db.insert("c", [("n", 1)]).unwrap();
    let big = |k: usize| Value::Text(format!("{k:06}{}", "x".repeat(100_000)));
    for k in 0..10 {
        db.set_add("c", id, "tags", vec![big(k)]).unwrap();
    }
    let e = db.set_add("c", id, "tags", vec![big(10)]).unwrap_err();
    assert!(
        e.to_string().contains("the value of field \"tags\" is "),
        "{e}"
    );
    let Value::List(tags) = &db.get("c", id).unwrap().unwrap().fields["tags"] else {
        panic!("not a list")
    };
    assert_eq!(tags.len(), 10, "the refused add left nothing");
    // One level of nesting is the set's own.
    let mut deep = Value::Int(0);
    for _ in 0..32 {
        deep = Value::List(vec![deep]);
    }
    let e = db.set_add("c", id, "deep", vec![deep]).unwrap_err();
    assert!(e.to_string().contains("levels deep"), "{e}");
}

#[test]
fn field_limit_counts_visible_fields_only() {
    use blazedb::limits::RECORD_FIELDS_MAX;
    let (_d, db) = db();
    let fields: Vec<(String, Value)> = (0..RECORD_FIELDS_MAX)
        .map(|i| (format!("f{i}"), Value::Int(1)))
        .collect();
    let id = db.insert("c", fields).unwrap();
    let mut patch = Patch::new();
    for i in 0..100 {
        patch = patch.unset(format!("f{i}"));
    }
    db.update("c", id, patch).unwrap();
    // 924 fields show: removed ones keep their cells but are no fields of the record.
    let mut patch = Patch::new();
    for i in 0..100 {
        patch = patch.set(format!("new{i}"), i);
    }
    db.update("c", id, patch).unwrap();
    assert_eq!(
        db.get("c", id).unwrap().unwrap().fields.len(),
        RECORD_FIELDS_MAX
    );
    // Full now: one more is refused.
    assert!(matches!(
        db.update("c", id, Patch::new().set("one_more", 1)),
        Err(Error::Write(WriteError::Limit { got, .. })) if got == RECORD_FIELDS_MAX + 1
    ));
    assert!(matches!(
        db.increment("c", id, "one_more", 1),
        Err(Error::Write(WriteError::Limit { .. }))
    ));
}

/// Two replicas each add 600 fields: the merge (1201 fields) is over the limit, as merges
/// may be. Writes that do not add a field must still pass; only adding one is refused.
#[test]
fn record_merged_over_the_field_and_set_limits_stays_writable() {
    use blazedb::limits::{RECORD_FIELDS_MAX, SET_ELEMENTS_MAX};
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| Database::open(dir.path().join(name), OpenOptions::default()).unwrap();
    let (a, b) = (open("a.db"), open("b.db"));
    let id = RecordId([7; 16]);
    a.insert_with_id("c", id, [("n", 0)]).unwrap();
    let first = a.changes_since(blazedb::Seq(0), 100_000, None).unwrap();
    b.apply_changes(a.node_id(), &first.changes, None).unwrap();
    let add_fields = |db: &Database, prefix: &str| {
        let mut patch = Patch::new();
        for i in 0..600 {
            patch = patch.set(format!("{prefix}{i}"), i);
        }
        db.update("c", id, patch).unwrap();
    };
    add_fields(&a, "a");
    add_fields(&b, "b");
    // A set each side fills to 6,000 elements: 12,000 merged.
    let elems = |from: i64| (from..from + 6_000).map(Value::Int).collect::<Vec<_>>();
    a.set_add("c", id, "tags", elems(0)).unwrap();
    b.set_add("c", id, "tags", elems(100_000)).unwrap();
    let from_b = b.changes_since(blazedb::Seq(0), 100_000, None).unwrap();
    a.apply_changes(b.node_id(), &from_b.changes, None).unwrap();
    let merged = a.get("c", id).unwrap().unwrap();
    assert_eq!(merged.fields.len(), 1202);
    assert!(merged.fields.len() > RECORD_FIELDS_MAX);
    assert!(matches!(&merged.fields["tags"], Value::List(l) if l.len() == 12_000));

    a.update("c", id, Patch::new().set("a1", 100)).unwrap();
    a.update("c", id, Patch::new().unset("b1")).unwrap();
    a.increment("c", id, "n", 1).unwrap();
    a.set_remove("c", id, "tags", vec![Value::Int(0)]).unwrap();
    // Adding an element already there keeps the set as it is.
    a.set_add("c", id, "tags", vec![Value::Int(1)]).unwrap();
    a.upsert("c", id, [("a2", 5)]).unwrap();
    assert!(matches!(
        a.update("c", id, Patch::new().set("new", 1)),
        Err(Error::Write(WriteError::Limit {
            what: "fields in a record",
            ..
        }))
    ));
    assert!(matches!(
        a.set_add("c", id, "tags", vec![Value::Int(-1)]),
        Err(Error::Write(WriteError::Limit { what: "set size", got, max }))
            if got == 11_999 + 1 && max == SET_ELEMENTS_MAX
    ));
    let after = a.get("c", id).unwrap().unwrap();
    assert_eq!(after.fields.len(), 1201);
    assert_eq!(after.fields["a1"], Value::Int(100));
    assert_eq!(after.fields["n"], Value::Int(1));
    assert!(matches!(&after.fields["tags"], Value::List(l) if l.len() == 11_999));
}

/// A failed operation inside a transaction that goes on and commits leaves nothing of itself.
#[test]
fn failed_operation_in_a_committed_transaction_leaves_no_trace() {
    use blazedb::limits::RECORD_FIELDS_MAX;
    let (_d, db) = db();
    let id = db.insert("c", [("a", 0)]).unwrap();
    db.transaction(|tx| {
        // The second operation has an invalid name: the first must not stay applied.
        assert!(tx
            .update("c", id, Patch::new().set("a", 1).set("", 2))
            .is_err());
        // Type mismatch after a set that merged.
        assert!(tx
            .update(
                "c",
                id,
                Patch::new()
                    .set("b", 1)
                    .increment("a", i64::MAX)
                    .increment("a", 1)
            )
            .is_err());
        let mut many = Patch::new();
        for i in 0..RECORD_FIELDS_MAX + 10 {
            many = many.set(format!("f{i}"), 1);
        }
        assert!(matches!(
            tx.update("c", id, many),
            Err(Error::Write(WriteError::Limit { .. }))
        ));
        let many: Vec<(String, Value)> = (0..RECORD_FIELDS_MAX)
            .map(|i| (format!("g{i}"), Value::Int(1)))
            .collect();
        assert!(matches!(
            tx.upsert("c", id, many),
            Err(Error::Write(WriteError::Limit { .. }))
        ));
        Ok(())
    })
    .unwrap();
    let r = db.get("c", id).unwrap().unwrap();
    assert_eq!(r.fields, BTreeMap::from([("a".to_owned(), Value::Int(0))]));
    assert_eq!(r.rev, 1);
}

/// A `for_each` callback may call the database: the records are handed over with the lock
/// released (it was held through the callback, so an update inside waited for itself
/// forever). More records than one page, so the walk resumes after writes.
#[test]
fn for_each_callback_may_write_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(
        Database::open(dir.path().join("t.db"), OpenOptions::default()).unwrap(),
    );
    let n = blazedb::limits::FOR_EACH_PAGE_RECORDS + 44;
    db.transaction(|tx| {
        for i in 0..n {
            tx.insert("c", [("n", i as i64)])?;
        }
        Ok(())
    })
    .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let walker = db.clone();
    std::thread::spawn(move || {
        let mut visited = 0usize;
        let r = walker.for_each("c", |rec| {
            visited += 1;
            let n = rec.fields["n"].clone();
            walker
                .update("c", rec.id, Patch::new().set("seen", n))
                .unwrap();
            true
        });
        let _ = done.send(r.map(|()| visited));
    });
    let visited = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("for_each with a write in its callback hung")
        .unwrap();
    assert_eq!(visited, n, "every record once");
    for rec in db.scan("c").unwrap() {
        assert_eq!(rec.fields["seen"], rec.fields["n"]);
        assert_eq!(rec.rev, 2);
    }
}

/// Processes (here: threads with handles of their own) opening the same new file at once:
/// each step of creating the schema now takes the write lock and looks again, so every
/// opener succeeds on the one database (one failed with `table meta already exists`).
#[test]
fn openers_of_one_new_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let path = dir.path().join(format!("race-{round}.db"));
        let gate = std::sync::Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (path, gate) = (path.clone(), gate.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    Database::open(&path, OpenOptions::default()).map(|db| db.node_id())
                })
            })
            .collect();
        let nodes: Vec<_> = openers
            .into_iter()
            .map(|t| t.join().unwrap().expect("every opener succeeds"))
            .collect();
        assert!(nodes.windows(2).all(|w| w[0] == w[1]), "{nodes:?}");
    }
}

/// A path that names no file — empty, `:memory:`, an SQLite URI — is refused saying so, not
/// "the file SQLite opened is gone (removed by another process)", which sent users looking
/// for another process.
#[test]
fn a_path_that_names_no_file_is_refused_saying_so() {
    for path in ["", ":memory:", "file:x.db?mode=memory"] {
        let e = Database::open(path, OpenOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{path:?} opened"))
            .to_string();
        assert!(
            e.contains("keeps a database in a file") && !e.contains("gone"),
            "{path:?}: {e}"
        );
    }
}

/// Reads of a name no collection can have (empty, with a control character, too long) are
/// refused with the error a write to it gets; before, they answered nothing, as for a
/// collection with no records, so a typo (an empty name from a script's unset variable)
/// looked like missing data. A collection that does not exist yet still reads as empty.
#[test]
fn reads_of_a_name_no_collection_can_have_are_refused_as_writes_are() {
    let (_d, db) = db();
    let id = db.insert("c", [("a", 1)]).unwrap();
    let too_long = "n".repeat(blazedb::limits::COLLECTION_NAME_BYTES_MAX + 1);
    let at = Timestamp::from_unix_ms(0);
    for name in ["", "tab\there", too_long.as_str()] {
        let write = db.insert(name, [("a", 1)]).unwrap_err().to_string();
        assert!(write.starts_with("invalid collection name"), "{write}");
        let query = blazedb::Query::default();
        let reads: Vec<(&str, Error)> = vec![
            ("get", db.get(name, id).unwrap_err()),
            ("scan", db.scan(name).unwrap_err()),
            ("for_each", db.for_each(name, |_| true).unwrap_err()),
            ("query", db.query(name, &query).unwrap_err()),
            ("count", db.count(name).unwrap_err()),
            ("history", db.history(name, id).unwrap_err()),
            ("get_at", db.get_at(name, id, at).unwrap_err()),
            ("record_state", db.record_state(name, id).unwrap_err()),
            ("policy", db.policy(name).unwrap_err()),
            ("indexes", db.indexes(name).unwrap_err()),
            ("drop_index", db.drop_index(name, "a").unwrap_err()),
            ("evict", db.evict(name, &[id], None).unwrap_err()),
            (
                "evict_fields",
                db.evict_fields(name, &["a".to_string()]).unwrap_err(),
            ),
            (
                "transaction get",
                db.transaction(|tx| tx.get(name, id).map(|_| ()))
                    .unwrap_err(),
            ),
        ];
        for (what, e) in reads {
            assert!(
                matches!(e, Error::Write(WriteError::InvalidName { .. })),
                "{what} {name:?}: {e:?}"
            );
            assert_eq!(e.to_string(), write, "{what} {name:?}");
        }
    }
    // A valid name nobody wrote to is an empty collection, not an error.
    assert_eq!(db.get("other", id).unwrap(), None);
    assert!(db.scan("other").unwrap().is_empty());
    assert_eq!(db.count("other").unwrap(), 0);
    assert!(db.history("other", id).unwrap().is_empty());
}
