//! The format lock (`store/file_pin.rs`): every open handle holds a shared `flock` on its
//! file, which another process (here `flock(1)`, as a migration of a newer build would) cannot
//! take exclusively while any handle of this process lives; handles of one process share it,
//! and processes of this build racing to migrate the same old file all open it.

#![cfg(unix)]

use std::path::Path;
use std::process::Command;

mod common;

use blazedb::limits::FORMAT_VERSION;
use blazedb::{Database, OpenOptions};
use common::{format_of, old_file};

/// Whether another process could take the file's lock exclusively now (`flock -xn`).
fn another_process_may_migrate(path: &Path) -> bool {
    Command::new("flock")
        .args(["-x", "-n"])
        .arg(path)
        .arg("true")
        .status()
        .expect("flock(1) from util-linux")
        .success()
}

#[test]
fn every_handle_holds_the_lock_shared_and_another_process_cannot_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    Database::open(&path, OpenOptions::default())
        .unwrap()
        .insert("c", [("n", 1i64)])
        .unwrap();
    assert!(another_process_may_migrate(&path), "no handle open");

    let first = Database::open(&path, OpenOptions::default()).unwrap();
    assert!(!another_process_may_migrate(&path), "one handle");
    // A second handle in the same process opens beside the first (the relay's query handle).
    let second = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(second.count("c").unwrap(), 1);
    assert!(!another_process_may_migrate(&path), "two handles");
    drop(first);
    assert!(!another_process_may_migrate(&path), "the second still open");
    drop(second);
    assert!(another_process_may_migrate(&path), "all closed");
}

#[test]
fn threads_of_one_process_opening_an_old_file_at_once_all_open_it_and_one_upgrades_it() {
    let (_dir, path, _) = old_file("c");
    let handles: Vec<Database> = std::thread::scope(|s| {
        let opens: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Database::open(&path, OpenOptions::default()).unwrap()))
            .collect();
        opens.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let upgraded: Vec<_> = handles.iter().filter_map(|h| h.upgraded_from()).collect();
    assert_eq!(upgraded, [10], "exactly one handle ran the migration");
    assert!(!another_process_may_migrate(&path));
    drop(handles);
    assert_eq!(format_of(&path), FORMAT_VERSION);
    let again = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(again.upgraded_from(), None);
    assert_eq!(again.count("c").unwrap(), 1);
}

#[test]
fn an_old_file_another_process_has_open_is_not_upgraded() {
    let (_dir, path, _) = old_file("c");
    // Another process with the file open, as a handle of a build that takes the lock holds
    // it (`flock -s`), until its stdin closes.
    let mut holder = Command::new("flock")
        .arg("-s")
        .arg(&path)
        .args(["cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while another_process_may_migrate(&path) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "flock -s never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let refused = Database::open(&path, OpenOptions::default()).unwrap_err();
    assert!(
        matches!(
            refused,
            blazedb::Error::Open(blazedb::OpenError::UpgradeBlocked {
                found: 10,
                supported: 11,
                ..
            })
        ),
        "{refused:?}"
    );
    let m = refused.to_string();
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(
        m.contains("is storage format 10, which this build upgrades to format 11"),
        "{m}"
    );
    assert!(m.contains("stop that process and try again"), "{m}");
    assert!(m.contains("nothing was changed"), "{m}");
    assert_eq!(format_of(&path), 10, "nothing was changed");

    drop(holder.stdin.take());
    holder.wait().unwrap();
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    assert_eq!(db.count("c").unwrap(), 1);
    drop(db);
    assert_eq!(format_of(&path), FORMAT_VERSION);
}
