//! A file system with free space but no free inodes (a small tmpfs filled with empty files;
//! root only, elsewhere the test says it was skipped): SQLite cannot create a database's
//! `-wal` and `-shm` files, needed also to read, nor a new database file. Each command says
//! that this file system has no free inodes, where, and what to do — not "unable to open
//! database file ... check that the database's directory exists" (before) — and works again
//! once files were deleted.

mod common;

use common::{run_blazedb, Run, SmallDisk};

/// `blazedb ARGS..` with no password.
fn blazedb(args: &[&str]) -> Run {
    run_blazedb(None, args)
}

#[test]
fn a_file_system_out_of_inodes_says_so_and_where() {
    let Some(disk) = SmallDisk::mount_with_inodes(16 << 20, 64) else {
        return;
    };
    let db = disk.path("a.db");
    let db = db.to_str().unwrap();
    let id = blazedb(&["put", db, "c", r#"{"n": 1}"#])
        .success()
        .stdout
        .trim()
        .to_owned();
    // Every inode taken by an empty file (the database's -wal and -shm went when it closed).
    let mut fillers = Vec::new();
    loop {
        let f = disk.path(&format!("empty-{}", fillers.len()));
        match std::fs::File::create(&f) {
            Ok(_) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the inodes: {e}"),
        }
    }
    assert!(disk.free_bytes() > 8 << 20, "space is left");

    let dir = disk.dir().display().to_string();
    let new_db = disk.path("new.db");
    let new_db = new_db.to_str().unwrap();
    for (args, path) in [
        (vec!["get", db, "c", &id], db),
        (vec!["stats", db], db),
        (vec!["put", new_db, "c", r#"{"n": 2}"#], new_db),
    ] {
        let e = blazedb(&args).failure(1).stderr;
        assert!(
            e.starts_with(&format!(
                "error: cannot open {path}: the file system that holds {dir} has no free \
                 inodes (files) left, and SQLite creates a database's -wal and -shm files \
                 beside it, even to read it, and this file system can create no more files"
            )),
            "{args:?}: {e}"
        );
        assert!(
            e.contains("`df -i` shows them): delete files there that are no longer needed"),
            "{args:?}: {e}"
        );
    }

    // Room for the -wal and the -shm: the same read works.
    for f in &fillers[..2] {
        std::fs::remove_file(f).unwrap();
    }
    let record = blazedb(&["get", db, "c", &id]).success().json();
    assert_eq!(record["n"], 1);
}
