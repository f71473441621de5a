//! `Database::lock_held_long`, the hint sync drivers use to wait for a holder of the lock off
//! their executor thread: an application's transaction counts as long from its first moment
//! (its closure may run for as long as the application likes), a record's write only once it
//! has held the lock that long, and a free lock never.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use blazedb::{Database, OpenOptions, Value};

/// Far longer than any hold in this test: only the mark can make a hold "long".
const LONG: Duration = Duration::from_secs(3600);

fn open(dir: &std::path::Path) -> Arc<Database> {
    Arc::new(Database::open(dir.join("a.db"), OpenOptions::default()).unwrap())
}

#[test]
fn an_application_transaction_is_long_at_once_and_a_record_write_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert!(
        !db.lock_held_long(Duration::ZERO),
        "a free lock is not held"
    );

    let (held_tx, held_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.transaction(|tx| {
                tx.insert("notes", [("n", Value::Int(1))])?;
                held_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                Ok(())
            })
            .unwrap()
        })
    };
    held_rx.recv().unwrap();
    assert!(
        db.lock_held_long(LONG),
        "an application's transaction did not count as long"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        !db.lock_held_long(Duration::ZERO),
        "the mark outlived the hold"
    );

    // Record writes one after another on another thread: each holds the lock briefly, and
    // none of them is marked.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for n in 0..2_000 {
                db.insert("notes", [("n", Value::Int(n))]).unwrap();
            }
        })
    };
    let mut held_seen = 0;
    while !writer.is_finished() {
        if db.lock_held_for().is_some() {
            held_seen += 1;
        }
        assert!(!db.lock_held_long(LONG), "a record's write counted as long");
    }
    writer.join().unwrap();
    assert!(held_seen > 0, "the writes were never seen holding the lock");
}
