//! A database in a directory nothing may be created in (a read-only mount, a directory this
//! user may not write) cannot be opened, even to read: SQLite creates its `-wal` and `-shm`
//! files beside it. The error says so and what to do: make the directory writable, or copy
//! the file somewhere writable, which then reads (an audit, 2026-12-07: "unable to open
//! database file: Error code 14" and "attempt to write a readonly database: Error code 1544:
//! SQLITE_READONLY_DIRECTORY", with no advice). Root only (a mount, another user): elsewhere
//! each test says it was skipped.
//!
//! Reading in place instead (SQLite's `immutable` flag) was not taken: it reads without
//! locks, and another process writing the file meanwhile (through a read-write mount of the
//! same directory, or as a user who may write there) would have the reader see a torn file.

#![cfg(unix)]

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{run_blazedb, Run, TestDb};

/// `source` mounted read-only on a directory of its own; unmounted when dropped.
struct ReadOnlyView {
    dir: tempfile::TempDir,
}

impl ReadOnlyView {
    fn of(source: &Path) -> Option<ReadOnlyView> {
        let dir = tempfile::tempdir().unwrap();
        let mount = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let target = dir.path().to_str().unwrap().to_owned();
        let target = target.as_str();
        if !mount(&["--bind", source.to_str().unwrap(), target]) {
            eprintln!("skipped: cannot bind-mount a directory here (it needs root)");
            return None;
        }
        let view = ReadOnlyView { dir };
        if !mount(&["-o", "remount,bind,ro", target]) {
            eprintln!("skipped: cannot make a bind mount read-only here");
            return None;
        }
        Some(view)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for ReadOnlyView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_database_on_a_read_only_mount_says_to_copy_it_somewhere_writable() {
    let db = TestDb::new();
    db.put("c", r#"{"x": 1}"#);
    let Some(view) = ReadOnlyView::of(db.dir.path()) else {
        return;
    };
    let path = view.path("test.db");
    let p = path.to_str().unwrap();
    for command in ["stats", "check"] {
        let run = run_blazedb(None, &[command, p]).failure(1);
        let e = &run.stderr;
        assert!(
            e.contains(&format!(
                "cannot open {p}: {} is on a read-only file system, and SQLite creates a \
                 database's -wal and -shm files beside it, even to read it",
                view.dir.path().display()
            )),
            "{command}: {e}"
        );
        assert!(
            e.contains(
                "to only read it, copy test.db (with its test.db-wal file, if there is one) \
                 into a writable directory and read the copy"
            ),
            "{command}: {e}"
        );
    }
    // The advice works.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&path, copy.path().join("test.db")).unwrap();
    let stats = run_blazedb(
        None,
        &["stats", copy.path().join("test.db").to_str().unwrap()],
    )
    .success()
    .json();
    assert_eq!(stats["collections"]["c"]["records"], 1);
}

/// The user `nobody` reads a database in a directory it may not write.
#[test]
fn a_database_in_a_directory_this_user_may_not_write_says_so() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("a.db");
    let p = path.to_str().unwrap();
    run_blazedb(None, &["put", p, "c", r#"{"x": 1}"#]).success();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(root.path(), 0o755);
    mode(&dir, 0o555);
    mode(&path, 0o666);
    let mut cmd = common::blazedb_command(None);
    cmd.args(["stats", p]).uid(65534).gid(65534);
    let run = match cmd.stdin(Stdio::null()).output() {
        Ok(out) => Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        },
        Err(e) => {
            eprintln!("skipped: cannot run a command as another user here ({e})");
            return;
        }
    };
    let e = run.failure(1).stderr;
    assert!(
        e.contains(&format!(
            "cannot open {p}: {} is not writable by this user, and SQLite creates a \
             database's -wal and -shm files beside it",
            dir.display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("make {} writable for this user", dir.display())),
        "{e}"
    );
    mode(&dir, 0o755);
}
