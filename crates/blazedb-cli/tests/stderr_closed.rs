//! A `blazedb` whose stderr takes nothing — a pipe whose reader is gone, a full disk, or
//! closed by the shell (`2>&-`) — still does its work and exits with its usual code. std's
//! `eprintln!` panicked there, and the panic hook's own line then aborted the process (exit
//! 134): a failed `get` looked like a crash, a `put` that stored its record and could not
//! say so lost its exit code 4, and `blazedb serve` died at its first log line.

mod common;
mod net_common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestDb, BIN};

const ABSENT: &str = "0190b3c4-0000-7000-8000-00000000dead";

/// The writing end of a pipe whose reader has gone: every write fails with EPIPE. (A FIFO
/// opened at both ends, the reading one then closed: the reader is gone before the child
/// starts, so no write of it can get through first.)
fn pipe_without_reader(dir: &Path) -> File {
    let fifo = dir.join("stderr.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // O_NONBLOCK (Linux's value): open the reading end without waiting for a writer.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(0o4000)
        .open(&fifo)
        .unwrap();
    let writer = OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(reader);
    writer
}

/// Exit code of `cmd` with stdin empty, stdout piped (and returned) and stderr `stderr`.
fn run(mut cmd: Command, stderr: impl Into<Stdio>) -> (Option<i32>, String) {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn failures_keep_their_exit_codes_when_stderr_takes_nothing() {
    let db = TestDb::new();
    db.put("bugs", r#"{"title": "present"}"#);
    let missing = || db.command("get", &["bugs", ABSENT]);

    // A pipe whose reader left (before: 134).
    let broken = pipe_without_reader(db.dir.path());
    assert_eq!(run(missing(), broken.try_clone().unwrap()).0, Some(1));
    // The command line refused (clap's error): 2.
    let mut usage = db.command("get", &["bugs"]);
    usage.arg("--no-such-flag");
    assert_eq!(run(usage, broken).0, Some(2));

    // A full disk.
    if let Ok(full) = OpenOptions::new().write(true).open("/dev/full") {
        assert_eq!(run(missing(), full).0, Some(1));
    }

    // Closed by the shell.
    let mut closed = Command::new("sh");
    closed
        .arg("-c")
        .arg(r#""$0" "$@" 2>&-"#)
        .arg(BIN)
        .arg("get")
        .arg(&db.path)
        .args(["bugs", ABSENT]);
    assert_eq!(run(closed, Stdio::null()).0, Some(1));
}

/// A `put` whose id cannot be printed (stdout on a full disk) exits 4, saying it stored the
/// record — also when stderr, where it says so, is full as well (before: 134, and a script
/// would have run the `put` again).
#[test]
fn a_stored_write_keeps_exit_4_when_neither_stream_takes_anything() {
    let db = TestDb::new();
    let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full here");
        return;
    };
    let out = db
        .command("put", &["bugs", r#"{"title": "stored"}"#])
        .stdin(Stdio::null())
        .stdout(full.try_clone().unwrap())
        .stderr(full)
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(4));
    let all = db.run("export", &["bugs"]).success().json_lines();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["title"], "stored");
}

/// `blazedb serve` logs on stderr (the store it created, its sessions that end badly, GC):
/// with nobody reading its stderr it serves as usual and stops cleanly (before: it died at
/// the `store_created` line, before it announced its address).
#[test]
fn a_relay_whose_log_goes_nowhere_serves() {
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("client.db");
    let mut cmd = net_common::blazedb();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(pipe_without_reader(dir.path()));
    let mut relay = net_common::Daemon {
        child: cmd.spawn().unwrap(),
        name: "relay".into(),
    };
    let mut line = String::new();
    BufReader::new(relay.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let announced: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = announced["sync"].as_str().unwrap();

    net_common::put(&client, "notes", r#"{"n": 1}"#);
    let synced = net_common::blazedb()
        .arg("sync")
        .arg(&client)
        .args([url, "--once"])
        .output()
        .unwrap();
    assert_eq!(
        synced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
}
