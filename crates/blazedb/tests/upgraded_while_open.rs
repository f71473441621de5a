//! A file upgraded to a newer storage format by another process while a handle has it open:
//! the handle's next read or write says so and to restart with the newer build, instead of
//! calling the intact file corrupt and advising to restore it from a peer (which would throw
//! away its unsynced writes). An upgrade audit (2026-12-07, F4) found a format-10 `listen`
//! doing the latter after a format-11 build wrote to its file.

use blazedb::limits::FORMAT_VERSION;
use blazedb::{Database, Error, OpenOptions, Patch};

#[test]
fn a_format_bump_by_another_connection_is_reported_as_an_upgrade_not_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let id = db.insert("notes", [("n", 1i64)]).unwrap();
    assert!(db.get("notes", id).unwrap().is_some());

    // What a newer build's migration does, as far as this build can tell: a higher format
    // number, and records it cannot decode. Kept open to the end: closing a second
    // connection in this process would drop the handle's SQLite locks (file_pin.rs).
    let newer = rusqlite::Connection::open(&path).unwrap();
    newer
        .execute_batch(&format!(
            "UPDATE meta SET value = {} WHERE key = 'format_version';
             UPDATE records SET body = X'FFFFFFFF';",
            FORMAT_VERSION + 1
        ))
        .unwrap();

    let read = db.get("notes", id).unwrap_err();
    assert!(
        matches!(read, Error::UpgradedWhileOpen { found, supported, .. }
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{read:?}"
    );
    let m = read.to_string();
    assert!(
        m.contains(&format!(
            "was upgraded to storage format {} by a newer BlazeDB while this process had it open",
            FORMAT_VERSION + 1
        )),
        "{m}"
    );
    assert!(m.contains("not damaged") && m.contains("restart"), "{m}");
    assert!(!m.contains("restore"), "{m}");

    // Writes too, before they could insert rows of the old layout.
    let write = db
        .update("notes", id, Patch::new().set("n", 2))
        .unwrap_err();
    assert!(
        matches!(write, Error::UpgradedWhileOpen { .. }),
        "{write:?}"
    );
    let insert = db.insert("notes", [("n", 3i64)]).unwrap_err();
    assert!(
        matches!(insert, Error::UpgradedWhileOpen { .. }),
        "{insert:?}"
    );
    drop(db);
    drop(newer);
}
