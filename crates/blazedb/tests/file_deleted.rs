//! A database file deleted (or replaced by a rename) while a handle has it open: the handle
//! says so (`file_is_gone`), refuses every write with `Error::FileGone` (SQLite would take it
//! into the deleted file, where it is lost when the handle closes) and still reads; a file
//! that keeps a name (its directory renamed, a hard link left) is not gone and keeps its
//! writes.
#![cfg(unix)]

use blazedb::{Database, Error, OpenOptions};

#[test]
fn writes_to_a_deleted_file_are_refused_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let path = data.join("app.db");
    let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let kept = db.insert("notes", [("n", 1)]).unwrap();
    assert!(!db.file_is_gone());

    // What `rm -rf` of the data directory does while the application runs.
    std::fs::remove_dir_all(&data).unwrap();
    assert!(db.file_is_gone());
    let e = db.insert("notes", [("n", 2)]).unwrap_err();
    assert!(matches!(e, Error::FileGone { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("app.db was deleted (or replaced by another file) while open")
            && m.contains("writes are refused")
            && m.contains("put the database back"),
        "{m}"
    );
    // Every kind of write, not only inserts: nothing is committed to the deleted file.
    assert!(matches!(
        db.update("notes", kept, blazedb::Patch::new().set("n", 3)),
        Err(Error::FileGone { .. })
    ));
    assert!(matches!(
        db.delete("notes", kept),
        Err(Error::FileGone { .. })
    ));
    // Reads see the open file as it was; the handle stays usable for them.
    assert_eq!(db.count("notes").unwrap(), 1);
    assert_eq!(
        db.get("notes", kept).unwrap().unwrap().fields["n"],
        1.into()
    );
    assert!(matches!(
        db.insert("notes", [("n", 4)]),
        Err(Error::FileGone { .. })
    ));
}

#[test]
fn a_file_replaced_by_a_rename_is_gone_for_the_handle_on_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let other = dir.path().join("restored.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    db.insert("notes", [("n", 1)]).unwrap();
    Database::open(&other, OpenOptions::default())
        .unwrap()
        .insert("notes", [("n", 2)])
        .unwrap();
    // A backup restored over the file while it is open: the old file has no name left.
    std::fs::rename(&other, &path).unwrap();
    assert!(db.file_is_gone());
    assert!(matches!(
        db.insert("notes", [("n", 3)]),
        Err(Error::FileGone { .. })
    ));
    // The file now at the path is whole and takes writes through a new handle.
    drop(db);
    let reopened = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(reopened.count("notes").unwrap(), 1);
    reopened.insert("notes", [("n", 4)]).unwrap();
}

#[test]
fn a_file_that_keeps_a_name_is_not_gone_and_keeps_its_writes() {
    let dir = tempfile::tempdir().unwrap();

    // Its directory moved: the file has a name, so its writes are not lost.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = Database::open(data.join("app.db"), OpenOptions::default()).unwrap();
    db.insert("notes", [("n", 1)]).unwrap();
    let moved = dir.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    assert!(!db.file_is_gone());
    db.insert("notes", [("n", 2)]).unwrap();
    drop(db);
    let reopened = Database::open(moved.join("app.db"), OpenOptions::default()).unwrap();
    assert_eq!(reopened.count("notes").unwrap(), 2);

    // Deleted by one name while another (a hard link) remains.
    let path = dir.path().join("app.db");
    let link = dir.path().join("link.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    db.insert("notes", [("n", 1)]).unwrap();
    std::fs::hard_link(&path, &link).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!db.file_is_gone());
    db.insert("notes", [("n", 2)]).unwrap();
    assert_eq!(db.count("notes").unwrap(), 2);
}

/// A deleted file still holds what the handle would lose on closing it, and says how much:
/// its size and its write-ahead log's, measured through the open descriptors (the relay's
/// `/health` reports it; by path, it said 0).
#[test]
fn a_deleted_file_still_says_how_many_bytes_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let path = data.join("app.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    for n in 0..200 {
        db.insert("notes", [("n", n)]).unwrap();
    }
    let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let (file, wal) = (len(&path), len(&data.join("app.db-wal")));
    assert!(file > 0 && wal > 0, "{file} {wal}");
    assert_eq!(db.stored_bytes(), file + wal);

    std::fs::remove_dir_all(&data).unwrap();
    assert!(db.file_is_gone());
    #[cfg(target_os = "linux")]
    assert_eq!(db.stored_bytes(), file + wal, "the file and its log");
    assert!(db.stored_bytes() >= file, "at least the file itself");
}
