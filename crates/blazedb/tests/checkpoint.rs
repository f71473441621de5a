//! WAL checkpoints: small commits do not checkpoint the WAL themselves (SQLite's default of
//! 1,000 pages would make every ~140th commit wait for an fsync); `Database::checkpoint`
//! copies it back into the file, and everything committed survives a reopen.

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
