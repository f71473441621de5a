//! A full disk, met for real on a small tmpfs (root only: elsewhere each test says it was
//! skipped): every command says that the disk is full, which one (its directory), and what
//! to do, fitted to what it was doing; nothing is lost, and the same command works once
//! there is room.

mod common;

use common::{json_lines, run_blazedb, Run, SmallDisk, TestDb};

/// `blazedb ARGS..` with no password, on paths anywhere.
fn blazedb(args: &[&str]) -> Run {
    run_blazedb(None, args)
}

/// With nothing left on its disk, SQLite cannot even size the shared-memory file that a read
/// needs: the read commands fail at open. They say the disk is full, where, and to free
/// space, not "disk I/O error ... xShmMap" (an audit, 2026-12-07).
#[test]
fn read_commands_on_a_full_disk_say_it_is_full_and_where() {
    let Some(disk) = SmallDisk::mount(8 << 20) else {
        return;
    };
    let db = disk.path("a.db");
    let db = db.to_str().unwrap();
    let lines = disk.path("lines.jsonl");
    std::fs::write(&lines, json_lines(100, 50)).unwrap();
    blazedb(&["import", db, "c", lines.to_str().unwrap()]).success();
    let first = blazedb(&["export", db, "c"]).success().json_lines()[0]["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    disk.fill_leaving(0);
    let dir = disk.dir().display().to_string();
    for args in [
        vec!["stats", db],
        vec!["get", db, "c", &first],
        vec!["export", db, "c"],
        vec!["query", db, "c", "--where", "n == 1"],
        vec!["check", db],
    ] {
        let run = blazedb(&args).failure(1);
        let e = &run.stderr;
        assert!(
            e.contains(&format!(
                "cannot open {db}: the disk that holds {dir} is full"
            )),
            "{args:?}: {e}"
        );
        assert!(
            e.contains(
                "-wal and -shm files, even to read it: free space on that disk, then try again"
            ),
            "{args:?}: {e}"
        );
    }
    disk.unfill();
    let record = blazedb(&["get", db, "c", &first]).success().json();
    assert_eq!(record["n"], 0);
}

/// `vacuum` and `rekey` write a copy of the whole database: on a disk without room for it
/// they say how much they need (about the file's size) and that nothing was changed, not
/// that "a sync sends it again" (which fits only a sync), nor, for `rekey`, "database or
/// disk is full: Error code 1" with no advice (an audit, 2026-12-07). A transaction that
/// does not fit (`index`) says it was rolled back.
#[test]
fn maintenance_on_a_full_disk_says_what_it_needs_and_that_nothing_changed() {
    let Some(disk) = SmallDisk::mount(24 << 20) else {
        return;
    };
    let db = disk.path("a.db");
    let db = db.to_str().unwrap();
    let lines = disk.path("lines.jsonl");
    std::fs::write(&lines, json_lines(12_000, 300)).unwrap();
    blazedb(&["import", db, "c", lines.to_str().unwrap()]).success();
    std::fs::remove_file(&lines).unwrap();
    let size = std::fs::metadata(db).unwrap().len();
    assert!(size > 3 << 20, "{size} bytes: too small to tell");
    let size_text = format!("{:.1} MB", size as f64 / (1 << 20) as f64);
    disk.fill_leaving(1 << 20);

    let vacuum = blazedb(&["vacuum", db]).failure(1);
    let rekey = Run::of(
        {
            let mut c = common::blazedb_command(None);
            c.env("BLAZEDB_NEW_PASSWORD", "new").args(["rekey", db]);
            c
        },
        None,
    )
    .failure(1);
    for (what, run) in [("vacuum", &vacuum), ("the password change (rekey)", &rekey)] {
        let e = &run.stderr;
        assert!(
            e.contains(&format!(
                "{what} of {db} failed for want of room on its disk, and nothing was changed"
            )),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "it needs about {size_text} free (the file's size)"
            )),
            "{size_text}: {e}"
        );
        assert!(
            e.contains(&format!("on the disk that holds {}", disk.dir().display())),
            "{e}"
        );
        assert!(!e.contains("sync sends it again"), "{e}");
    }

    // Room to open it, not to write the index.
    disk.fill_leaving(128 << 10);
    let index = blazedb(&["index", db, "c", "n"]).failure(1);
    let e = &index.stderr;
    assert!(
        e.contains("free space on the disk that holds the database")
            && e.contains("the transaction that failed was rolled back, nothing of it was kept"),
        "{e}"
    );
    assert!(!e.contains("sync sends it again"), "{e}");

    disk.unfill();
    let stats = blazedb(&["stats", db]).success().json();
    assert_eq!(stats["collections"]["c"]["records"], 12_000);
    assert_eq!(
        stats["encrypted"], false,
        "the failed rekey changed the file"
    );
    blazedb(&["check", db]).success();
    blazedb(&["vacuum", db]).success();
}

/// `sync A B` where only B's disk is full, either way round: the error is STORAGE_FULL and
/// names B, not INTERNAL naming neither file (an audit, 2026-12-07). A sync once there is
/// room delivers everything.
#[test]
fn a_file_sync_names_the_file_whose_disk_is_full() {
    let Some(disk) = SmallDisk::mount(8 << 20) else {
        return;
    };
    let a = TestDb::new();
    let lines = a.file("lines.jsonl");
    std::fs::write(&lines, json_lines(20_000, 200)).unwrap();
    a.run("import", &["c", lines.to_str().unwrap()]).success();
    let a_path = a.path.to_str().unwrap();
    let b = disk.path("b.db");
    let b = b.to_str().unwrap();
    blazedb(&["put", b, "x", r#"{"y": 1}"#]).success();
    for args in [[a_path, b], [b, a_path]] {
        // Room to open B, not to store A's records (the first sync stored some).
        disk.unfill();
        disk.fill_leaving(1 << 20);
        let run = blazedb(&["sync", args[0], args[1], "--once"]).failure(1);
        let e = &run.stderr;
        assert!(e.contains("STORAGE_FULL"), "{args:?}: {e}");
        assert!(
            e.contains(&format!("the disk that holds {b} is full")),
            "{args:?}: {e}"
        );
        assert!(!e.contains("INTERNAL"), "{args:?}: {e}");
    }
    disk.unfill();
    blazedb(&["sync", a_path, b, "--once"]).success();
    let stats = blazedb(&["stats", b]).success().json();
    assert_eq!(stats["collections"]["c"]["records"], 20_000);
}
