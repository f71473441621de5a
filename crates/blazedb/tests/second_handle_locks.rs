//! A second handle on a file this process has open must not drop the first one's locks.
//! SQLite locks with POSIX advisory locks, which a process loses on a file whenever it closes
//! any descriptor of it; opening a handle reads the file's first bytes itself, and did so
//! through a descriptor it then closed. Another process then saw the file as unused: a
//! `rekey` there replaced it under the first handle (found when the relay opened a second
//! handle for `/v1/query`, by `blazedb-cli/tests/rekey_while_served.rs`). Checked here from
//! a second process (this test binary, run again), which must be refused the rekey.

use std::process::Command;

use blazedb::{Database, OpenOptions, Value};

/// Set in the child: the file to try to rekey.
const CHILD_ENV: &str = "BLAZEDB_TEST_REKEY_FROM_ANOTHER_PROCESS";
/// The child's exit code when the rekey was refused as it must be.
const REFUSED_IN_USE: i32 = 3;

fn options(encrypted: bool) -> OpenOptions {
    if encrypted {
        OpenOptions::with_password("pw")
    } else {
        OpenOptions::default()
    }
}

/// In the child: try the rekey and exit with what happened.
fn child(path: &str, encrypted: bool) -> ! {
    let mut db = Database::open(path, options(encrypted)).unwrap();
    let code = match db.rekey(Some("new password")) {
        Err(blazedb::Error::Open(blazedb::OpenError::InUse { .. })) => REFUSED_IN_USE,
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            4
        }
    };
    std::process::exit(code);
}

/// Run this test again as another process, trying to rekey `path`.
fn rekey_from_another_process(test: &str, path: &std::path::Path) -> Option<i32> {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads", "1"])
        .env(CHILD_ENV, path)
        .output()
        .unwrap()
        .status
        .code()
}

fn check(test: &str, encrypted: bool) {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path, encrypted);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let first = Database::open(&path, options(encrypted)).unwrap();
    first.insert("c", [("n", Value::Int(1))]).unwrap();
    assert_eq!(
        rekey_from_another_process(test, &path),
        Some(REFUSED_IN_USE),
        "one handle"
    );
    let second = Database::open(&path, options(encrypted)).unwrap();
    assert_eq!(
        rekey_from_another_process(test, &path),
        Some(REFUSED_IN_USE),
        "the second handle's open dropped the first one's locks"
    );
    drop(second);
    assert_eq!(
        rekey_from_another_process(test, &path),
        Some(REFUSED_IN_USE),
        "closing the second handle dropped the first one's locks"
    );
    assert_eq!(first.count("c").unwrap(), 1);
    drop(first);
    assert_eq!(
        rekey_from_another_process(test, &path),
        Some(0),
        "with no handle open here, the rekey goes ahead"
    );
}

#[test]
fn a_second_handle_keeps_the_first_ones_locks_encrypted() {
    check("a_second_handle_keeps_the_first_ones_locks_encrypted", true);
}

#[test]
fn a_second_handle_keeps_the_first_ones_locks_plain() {
    check("a_second_handle_keeps_the_first_ones_locks_plain", false);
}
