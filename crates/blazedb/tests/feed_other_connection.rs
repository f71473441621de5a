//! Reading the change feed while another connection (as another process would) keeps
//! committing: every commit is returned by some batch — a batch's `next` never moves past a
//! commit the batch did not contain.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::{Database, OpenOptions, Seq, Value};

#[test]
fn feed_batches_miss_no_commit_of_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let reader = Database::open(&path, OpenOptions::default()).unwrap();
    let writer = Database::open(&path, OpenOptions::default()).unwrap();
    writer.insert("c", [("n", Value::Int(0))]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.insert("c", [("n", Value::Int(n))]).unwrap();
                n += 1;
            }
            writer
        })
    };
    let mut seen = BTreeSet::new();
    let mut since = Seq(0);
    let started = Instant::now();
    let mut drain = |since: &mut Seq| loop {
        let batch = reader.changes_since(*since, 64, None).unwrap();
        for ch in &batch.changes {
            seen.insert(ch.seq);
        }
        *since = batch.next;
        if !batch.more {
            break;
        }
    };
    while started.elapsed() < Duration::from_millis(1_500) {
        drain(&mut since);
    }
    stop.store(true, Ordering::Relaxed);
    let writer = w.join().unwrap();
    drain(&mut since);
    let head = writer.last_seq().unwrap();
    assert_eq!(since, head);
    // Every commit inserted one record, never overwritten: each seq has cells.
    let missing: Vec<u64> = (1..=head.0).filter(|s| !seen.contains(&Seq(*s))).collect();
    assert!(
        missing.is_empty(),
        "{} of {} commits never returned, e.g. {:?}",
        missing.len(),
        head.0,
        &missing[..missing.len().min(10)]
    );
}

/// Two handles on one file (as two processes would have): what one commits — a new
/// collection, a new field name, an index created and then dropped — is what the other's
/// next read sees, and its cached feed head follows (each read checks the file's version
/// inside the snapshot it reads).
#[test]
fn a_second_connection_sees_every_kind_of_change_at_its_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let a = Database::open(&path, OpenOptions::default()).unwrap();
    let b = Database::open(&path, OpenOptions::default()).unwrap();
    let first = a.insert("bugs", [("title", Value::from("one"))]).unwrap();
    // B caches its head now; A's next commit must move it.
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
    let second = a
        .insert("notes", [("body", Value::from("new field and collection"))])
        .unwrap();
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
    assert_eq!(b.collections().unwrap(), vec!["bugs", "notes"]);
    let note = b.get("notes", second).unwrap().expect("A's record");
    assert_eq!(note.fields["body"], Value::from("new field and collection"));

    // An index A creates is used and kept up to date by B's writes...
    a.create_index("bugs", "title").unwrap();
    assert_eq!(b.indexes("bugs").unwrap(), vec!["title".to_owned()]);
    b.insert("bugs", [("title", Value::from("two"))]).unwrap();
    let q = blazedb::Query::filter("title == \"two\"").unwrap();
    assert_eq!(a.query("bugs", &q).unwrap().len(), 1);
    // ...and once A drops it, B's queries no longer look there.
    assert!(a.drop_index("bugs", "title").unwrap());
    assert!(b.indexes("bugs").unwrap().is_empty());
    assert_eq!(b.query("bugs", &q).unwrap().len(), 1);
    a.update("bugs", first, blazedb::Patch::new().set("title", "three"))
        .unwrap();
    let q3 = blazedb::Query::filter("title == \"three\"").unwrap();
    assert_eq!(b.query("bugs", &q3).unwrap().len(), 1);
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
}

/// A transaction whose closure panics leaves nothing behind: its writes are rolled back
/// when the handle's lock is released, the next transaction on the same handle works, and
/// another connection never sees the abandoned write.
#[test]
fn a_panicking_transaction_is_rolled_back_and_the_handle_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("panic.db");
    let a = Database::open(&path, OpenOptions::default()).unwrap();
    let b = Database::open(&path, OpenOptions::default()).unwrap();
    a.insert("bugs", [("title", Value::from("kept"))]).unwrap();
    let head = a.last_seq().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.transaction(|tx| {
            tx.insert("bugs", [("title", Value::from("abandoned"))])?;
            panic!("the application fails mid-transaction");
            #[allow(unreachable_code)]
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert_eq!(a.last_seq().unwrap(), head);
    assert_eq!(a.count("bugs").unwrap(), 1);
    assert_eq!(b.count("bugs").unwrap(), 1);
    // The write lock was released: the other connection can write, and so can `a`.
    b.insert("bugs", [("title", Value::from("from b"))])
        .unwrap();
    a.insert("bugs", [("title", Value::from("from a"))])
        .unwrap();
    assert_eq!(b.count("bugs").unwrap(), 3);
    assert_eq!(a.last_seq().unwrap(), b.last_seq().unwrap());
}

/// `last_seq` answers from its cache between checks: another handle of this process is
/// seen at once (their commits move a shared counter), another connection (as another
/// process would be) within `HEAD_RECHECK_US`.
#[test]
fn last_seq_sees_other_handles_at_once_and_other_connections_soon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let a = Database::open(&path, OpenOptions::default()).unwrap();
    let b = Database::open(&path, OpenOptions::default()).unwrap();
    a.insert("c", [("n", Value::Int(0))]).unwrap();
    let first = a.last_seq().unwrap();
    assert_eq!(a.last_seq().unwrap(), first, "cached answer");
    for n in 1..=20 {
        b.insert("c", [("n", Value::Int(n))]).unwrap();
        assert_eq!(
            a.last_seq().unwrap(),
            b.last_seq().unwrap(),
            "another handle's commit {n} was not seen at once"
        );
    }
    // A connection BlazeDB does not know about moves the clock row (format 6: in `peers`).
    let head = a.last_seq().unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE peers SET cursor = cursor + 5 WHERE node = X'' AND direction = 'clock'",
        [],
    )
    .unwrap();
    drop(raw);
    std::thread::sleep(Duration::from_micros(
        blazedb::limits::HEAD_RECHECK_US * 2 + 1_000,
    ));
    assert_eq!(a.last_seq().unwrap(), Seq(head.0 + 5));
}
