//! A file of an older storage format meets this build: the command that upgrades it says so
//! once on stderr; a file another process has open (a running `blazedb listen`) is not
//! upgraded under it, and the error says to stop that process; a file this process may not
//! write says it must be upgraded once where it may be written; processes racing to upgrade
//! one file all succeed; a relay logs the upgrade of its store once (an upgrade audit,
//! 2026-12-07: F2, F3, F4).

#![cfg(unix)]

mod common;
mod net_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blazedb::limits::FORMAT_VERSION;
use common::{run_blazedb, SmallDisk, TestDb};

/// Back to format 10, as a build of that format left it (its migration to 11 only added
/// `history.old_seen`). No handle of this process is open on the file.
fn downgrade_to_format_10(path: &Path) {
    assert_eq!(FORMAT_VERSION, 11, "update this test for the new format");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "ALTER TABLE history DROP COLUMN old_seen;
         UPDATE meta SET value = 10 WHERE key = 'format_version';",
    )
    .unwrap();
}

fn format_of(path: &Path) -> u32 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'format_version'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn notice(path: &Path) -> String {
    format!(
        "note: upgraded {} from storage format 10 to 11; BlazeDB builds that read only up to \
         format 10 can no longer open it; the file as it was is kept at {}, the way back to \
         them (delete it once you will not go back)",
        path.display(),
        backup_of(path).display()
    )
}

/// Where the upgrade keeps the file as it was.
fn backup_of(path: &Path) -> std::path::PathBuf {
    let mut b = path.as_os_str().to_owned();
    b.push(".format-10.backup");
    b.into()
}

#[test]
fn the_command_that_upgrades_a_file_says_so_once() {
    let db = TestDb::new();
    let id = db.put("c", r#"{"n": 1}"#);
    downgrade_to_format_10(&db.path);
    let run = db.run("get", &["c", &id]).success();
    assert_eq!(run.json()["n"], 1);
    assert!(run.stderr.starts_with(&notice(&db.path)), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(format_of(&db.path), FORMAT_VERSION);
    assert_eq!(format_of(&backup_of(&db.path)), 10, "the copy kept");
    let again = db.run("get", &["c", &id]).success();
    assert_eq!(again.stderr, "", "said once");
}

#[test]
fn syncing_two_files_says_which_it_upgraded() {
    let db = TestDb::new();
    db.put("c", r#"{"n": 1}"#);
    let other = db.file("other.db");
    let sync = || {
        let args = [db.path.as_os_str(), other.as_os_str(), "--once".as_ref()];
        run_blazedb(None, &[&["sync".as_ref()], &args[..]].concat()).success()
    };
    sync();
    downgrade_to_format_10(&other);
    let run = sync();
    assert!(run.stderr.starts_with(&notice(&other)), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(format_of(&other), FORMAT_VERSION);
}

#[test]
fn an_old_file_without_room_for_its_copy_is_not_upgraded_and_says_how_much_room_it_needs() {
    let Some(disk) = SmallDisk::mount(8 << 20) else {
        return;
    };
    // A file of about 1 MB, made off the small disk and copied onto it.
    let made = tempfile::tempdir().unwrap();
    let source = made.path().join("big.db");
    let id = {
        let db = blazedb::Database::open(&source, blazedb::OpenOptions::default()).unwrap();
        let text = "x".repeat(500);
        let mut first = None;
        for i in 0..2000i64 {
            let id = db
                .insert(
                    "c",
                    [("n", blazedb::Value::Int(i)), ("t", text.as_str().into())],
                )
                .unwrap();
            first.get_or_insert(id);
        }
        first.unwrap().to_string()
    };
    downgrade_to_format_10(&source);
    let path = disk.path("big.db");
    std::fs::copy(&source, &path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 800_000, "{size}");
    // Room to open it (its -wal and -shm), not for a copy of it.
    disk.fill_leaving(size / 2);

    let refused = run_blazedb(
        None,
        &["get".as_ref(), path.as_os_str(), "c".as_ref(), id.as_ref()],
    );
    assert_ne!(refused.code, Some(0), "{refused:?}");
    let m = &refused.stderr;
    assert!(
        m.contains(&format!(
            "{} is storage format 10, which this build upgrades to format 11 after keeping a \
             copy of the file as it is at {}",
            path.display(),
            backup_of(&path).display()
        )),
        "{m}"
    );
    assert!(
        m.contains("(the file's size) on the disk that holds"),
        "{m}"
    );
    assert!(m.contains("nothing was changed"), "{m}");
    assert_eq!(format_of(&path), 10, "not upgraded");
    let leftovers: Vec<_> = std::fs::read_dir(disk.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("backup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With the room, the same command upgrades it.
    disk.unfill();
    let run = run_blazedb(
        None,
        &["get".as_ref(), path.as_os_str(), "c".as_ref(), id.as_ref()],
    )
    .success();
    assert!(run.stderr.starts_with(&notice(&path)), "{}", run.stderr);
    assert_eq!(run.json()["n"], 0);
}

#[test]
fn an_old_file_a_running_listener_has_open_is_not_upgraded_under_it() {
    let db = TestDb::new();
    let id = db.put("c", r#"{"n": 1}"#);
    let (listener, _url) = net_common::start_listener(&db.path, &["--tcp", "127.0.0.1:0"], None);
    // The listener stands for a process of the build before a format bump; this build is
    // the newer one.
    downgrade_to_format_10(&db.path);
    let refused = db.run("get", &["c", &id]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    let m = &refused.stderr;
    assert!(
        m.contains(&format!(
            "{} is storage format 10, which this build upgrades to format 11 before using it, \
             but another process has it open (e.g. a `blazedb listen` or `sync --watch` service",
            db.path.display()
        )),
        "{m}"
    );
    assert!(
        m.contains("stop that process and try again") && m.contains("nothing was changed"),
        "{m}"
    );
    assert_eq!(format_of(&db.path), 10, "nothing was changed");

    let (code, _) = listener.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let run = db.run("get", &["c", &id]).success();
    assert!(run.stderr.starts_with(&notice(&db.path)), "{}", run.stderr);
    assert_eq!(format_of(&db.path), FORMAT_VERSION);
}

#[test]
fn processes_racing_to_upgrade_one_file_all_succeed_and_one_says_so() {
    let db = TestDb::new();
    let id = db.put("c", r#"{"n": 1}"#);
    downgrade_to_format_10(&db.path);
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let mut cmd = db.command("get", &["c", &id]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut notices = 0;
    for child in runs {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{stderr}");
        notices += stderr
            .lines()
            .filter(|l| l.starts_with("note: upgraded"))
            .count();
    }
    assert_eq!(notices, 1, "the one that ran the migration says so");
    assert_eq!(format_of(&db.path), FORMAT_VERSION);
}

/// `chattr +i` on the file; cleared when dropped.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

#[test]
fn an_old_file_this_process_may_not_write_says_to_upgrade_it_where_it_can_be_written() {
    let db = TestDb::new();
    let id = db.put("c", r#"{"n": 1}"#);
    downgrade_to_format_10(&db.path);
    // Root ignores file modes: an immutable file is one no process may write.
    let made = Command::new("chattr")
        .arg("+i")
        .arg(&db.path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "skipped: chattr +i is not available here (needs root and a file system with it)"
        );
        return;
    }
    let _immutable = Immutable(&db.path);
    let refused = db.run("get", &["c", &id]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    let m = &refused.stderr;
    assert!(
        m.contains(&format!(
            "{} is storage format 10, and this build reads it only once it has upgraded it to \
             format 11, which writes to the file, but this process may not write it",
            db.path.display()
        )),
        "{m}"
    );
    assert!(
        m.contains("open it once with write access") && m.contains("copy it somewhere writable"),
        "{m}"
    );
    assert!(!m.contains("check their permissions"), "{m}");
    assert_eq!(format_of(&db.path), 10);
    assert!(
        !backup_of(&db.path).exists(),
        "no copy kept of an upgrade that changed nothing"
    );

    // The advice works: a copy somewhere writable reads (and is upgraded).
    let copy = db.file("copy.db");
    std::fs::copy(&db.path, &copy).unwrap();
    let run = run_blazedb(
        None,
        &["get".as_ref(), copy.as_os_str(), "c".as_ref(), id.as_ref()],
    )
    .success();
    assert_eq!(run.json()["n"], 1);
}

#[test]
fn a_relay_that_upgrades_its_store_logs_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = data.join("relay.db");
    let log = dir.path().join("relay.log");
    let (relay, _) = net_common::start_relay(&data, &[], None);
    relay.terminate(Duration::from_secs(10));
    downgrade_to_format_10(&store);
    for _ in 0..2 {
        let (relay, _) = net_common::start_relay(&data, &[], Some(&log));
        relay.terminate(Duration::from_secs(10));
    }
    let upgraded: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "store_upgraded")
        .collect();
    assert_eq!(upgraded.len(), 1, "logged by the start that upgraded it");
    let e = &upgraded[0];
    assert_eq!(e["path"], store.display().to_string());
    assert_eq!(e["from_format"], 10);
    assert_eq!(e["to_format"], FORMAT_VERSION);
    assert_eq!(e["backup"], backup_of(&store).display().to_string());
    assert_eq!(format_of(&backup_of(&store)), 10);
    assert!(
        e["note"]
            .as_str()
            .unwrap()
            .contains("can no longer open this store"),
        "{e}"
    );
    assert_eq!(format_of(&store), FORMAT_VERSION);
}
