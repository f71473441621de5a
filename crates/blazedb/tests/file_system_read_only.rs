//! A database whose file system turns read-only while a handle has it open (ext4 on a loop
//! device, aborted as `errors=remount-ro` does after an I/O error on the disk): the failed
//! write is told as `Error::FileSystemReadOnly` with what to do, not a bare "disk I/O
//! error"; every later write, of this handle and a second one, is refused the same way;
//! `file_system_read_only` says so; reads go on.
//!
//! Needs root, `losetup`, `mkfs.ext4` and a free loop device (as CI runs); elsewhere the test
//! says why and passes.
#![cfg(target_os = "linux")]

use blazedb::{Database, Error, OpenOptions};
use blazedb_test_disks::LoopExt4;

#[test]
fn writes_on_a_file_system_turned_read_only_are_refused_saying_why_and_reads_go_on() {
    let Some(disk) = LoopExt4::mount(16 << 20) else {
        return;
    };
    let path = disk.mount_point().join("app.db");
    let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let kept = db.insert("notes", [("n", 1)]).unwrap();
    let other = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    assert!(!db.file_system_read_only());

    disk.abort();
    // Before: "storage error: disk I/O error", and the next write tried again.
    let e = db.insert("notes", [("n", 2)]).unwrap_err();
    assert!(matches!(e, Error::FileSystemReadOnly { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("app.db is on a file system that turned read-only while it was open")
            && m.contains("writes are refused")
            && m.contains("fsck"),
        "{m}"
    );
    assert!(db.file_system_read_only() && other.file_system_read_only());
    assert!(matches!(
        db.update("notes", kept, blazedb::Patch::new().set("n", 3)),
        Err(Error::FileSystemReadOnly { .. })
    ));
    assert!(matches!(
        other.insert("notes", [("n", 4)]),
        Err(Error::FileSystemReadOnly { .. })
    ));
    // Reads see what the file held; nothing of the refused writes.
    assert_eq!(db.count("notes").unwrap(), 1);
    assert_eq!(
        other.get("notes", kept).unwrap().unwrap().fields["n"],
        1.into()
    );
    // No probe file was left behind (the file system refused it).
    let names: Vec<_> = std::fs::read_dir(disk.mount_point())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("probe"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    drop((db, other));
}
