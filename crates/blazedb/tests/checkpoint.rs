//! WAL checkpoints: small commits do not checkpoint the WAL themselves (SQLite's default of
//! 1,000 pages would make every ~140th commit wait for an fsync); `Database::checkpoint`
//! copies it back into the file, and everything committed survives a reopen. It runs on a
//! connection of its own, so it never waits for the handle's transactions (nor they for its
//! fsyncs).

use std::sync::mpsc;
use std::time::Duration;

use blazedb::{Database, OpenOptions};

#[test]
fn commits_leave_the_wal_to_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    // About three pages a commit: without the raised bound, a commit would have checkpointed
    // (and restarted the WAL) at 1,000 pages.
    for i in 0..1_000 {
        db.insert("notes", [("n", i as i64)]).unwrap();
    }
    let c = db.checkpoint().unwrap();
    assert!(
        c.wal_frames > 2_000,
        "the WAL was checkpointed inside a commit: {c:?}"
    );
    assert_eq!(
        c.checkpointed_frames, c.wal_frames,
        "no reader holds old pages"
    );
    // The next commit starts the WAL over.
    db.insert("notes", [("n", -1i64)]).unwrap();
    let again = db.checkpoint().unwrap();
    assert!(again.wal_frames < c.wal_frames, "{again:?} after {c:?}");
    drop(db);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.count("notes").unwrap(), 1_001);
}

#[test]
fn a_checkpoint_runs_while_a_write_transaction_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("c.db"), OpenOptions::with_password("pw")).unwrap();
    for i in 0..100 {
        db.insert("notes", [("n", i as i64)]).unwrap();
    }
    let (in_tx, wait_in_tx) = mpsc::channel();
    let (done, wait_done) = mpsc::channel();
    let db = &db;
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            db.transaction(|tx| {
                tx.insert("notes", [("n", -1i64)])?;
                in_tx.send(()).unwrap();
                // Holds the handle's lock until the checkpoint has returned; a checkpoint
                // that needed that lock would only return after this gives up.
                Ok(wait_done.recv_timeout(Duration::from_secs(30)).is_ok())
            })
            .unwrap()
        });
        wait_in_tx.recv().unwrap();
        let c = db.checkpoint().unwrap();
        done.send(()).unwrap();
        assert!(
            writer.join().unwrap(),
            "the checkpoint waited for the write transaction"
        );
        // Every committed frame was copied; the open transaction's are not in the WAL yet.
        assert!(c.wal_frames > 0, "{c:?}");
        assert_eq!(c.checkpointed_frames, c.wal_frames, "{c:?}");
    });
    assert_eq!(db.count("notes").unwrap(), 101);
}

#[test]
fn checkpoints_follow_a_changed_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut db = Database::open(&path, OpenOptions::with_password("old")).unwrap();
    db.insert("notes", [("n", 1i64)]).unwrap();
    db.checkpoint().unwrap();
    db.rekey(Some("new")).unwrap();
    db.insert("notes", [("n", 2i64)]).unwrap();
    let c = db.checkpoint().unwrap();
    assert_eq!(c.checkpointed_frames, c.wal_frames, "{c:?}");
    db.rekey(None).unwrap();
    db.insert("notes", [("n", 3i64)]).unwrap();
    db.checkpoint().unwrap();
    drop(db);
    assert!(Database::open(&path, OpenOptions::with_password("new")).is_err());
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.count("notes").unwrap(), 3);
}

/// The WAL header's checkpoint sequence and salts: SQLite changes them whenever a commit
/// starts the WAL over (and fsyncs the header then).
fn wal_generation(path: &std::path::Path) -> [u8; 12] {
    let wal = std::fs::read(format!("{}-wal", path.display())).unwrap();
    wal[12..24].try_into().unwrap()
}

#[test]
fn the_checkpointer_starts_the_wal_over_so_commits_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    for i in 0..100 {
        db.insert("notes", [("n", i as i64)]).unwrap();
    }
    let before = wal_generation(&path);
    let c = db.checkpoint().unwrap();
    assert!(
        c.wal_frames > 0 && c.checkpointed_frames == c.wal_frames,
        "{c:?}"
    );
    let restarted = wal_generation(&path);
    assert_ne!(
        before, restarted,
        "the checkpoint call started the WAL over"
    );
    // The application's next commit appends to that WAL: no restart (and no fsync) in it.
    db.insert("notes", [("n", 100i64)]).unwrap();
    assert_eq!(wal_generation(&path), restarted);
    // Idle: with nothing committed since, a checkpoint does nothing at all.
    let c = db.checkpoint().unwrap();
    assert!(c.wal_frames > 0, "the commit above is checkpointed: {c:?}");
    let generation = wal_generation(&path);
    assert_eq!(db.checkpoint().unwrap(), Default::default());
    assert_eq!(wal_generation(&path), generation);
    drop(db);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.count("notes").unwrap(), 101);
    assert!(db.integrity_check().unwrap().ok);
}

/// The checkpointer vouches for its WAL restart so that the handle keeps its caches
/// (`maintenance.rs`); a commit through another connection racing it must still be seen. Two
/// handles on one file (another process, as far as each can tell) update the same records,
/// each its own field, while a thread checkpoints the first handle as fast as it can. A
/// stale cached row in the first handle would write the other handle's field back to an old
/// value (and, in a debug build, fail the check in `Tx::load` at once).
#[test]
fn checkpoints_racing_writes_through_two_handles_lose_nothing() {
    use blazedb::{Patch, Value};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const RECORDS: usize = 20;
    const ROUNDS: i64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let a = Arc::new(Database::open(&path, OpenOptions::with_password("pw")).unwrap());
    let ids: Vec<_> = (0..RECORDS)
        .map(|_| a.insert("notes", [("a", 0i64), ("b", 0i64)]).unwrap())
        .collect();
    let b = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let checkpoints = {
        let (a, done) = (a.clone(), done.clone());
        std::thread::spawn(move || {
            let mut restarted = false;
            // Until the writers are done, and at least one restart has happened (on a
            // loaded machine the writers may keep every checkpoint short of one).
            while !done.load(Ordering::Acquire) || !restarted {
                let c = a.checkpoint().unwrap();
                restarted |= c.wal_frames > 0 && c.checkpointed_frames == c.wal_frames;
            }
        })
    };
    let writer_b = {
        let ids = ids.clone();
        std::thread::spawn(move || {
            for round in 1..=ROUNDS {
                for id in &ids {
                    b.update("notes", *id, Patch::new().set("b", round))
                        .unwrap();
                }
                // Pauses leave the first handle behind the file while checkpoints run.
                std::thread::sleep(Duration::from_micros(300));
            }
            b
        })
    };
    for round in 1..=ROUNDS {
        for id in &ids {
            a.update("notes", *id, Patch::new().set("a", round))
                .unwrap();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let b = writer_b.join().unwrap();
    done.store(true, Ordering::Release);
    checkpoints.join().unwrap();
    for db in [&*a, &b] {
        for id in &ids {
            let r = db.get("notes", *id).unwrap().unwrap();
            assert_eq!(r.fields["a"], Value::from(ROUNDS), "{id}");
            assert_eq!(
                r.fields["b"],
                Value::from(ROUNDS),
                "{id}: lost the other handle's write"
            );
        }
    }
}
