//! `blazedb sync A B --once` brings two files on this machine into the same state, reports
//! what moved as one JSON line, moves nearly nothing the second time, and honours modes.

use std::process::Command;

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

fn blazedb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("BLAZEDB_PASSWORD")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lines(s: &str) -> Vec<Json> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn once_converges_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert!(blazedb(&["put", a, "notes", r#"{"text": "from a", "n": 1}"#]).0);
    assert!(blazedb(&["put", b, "notes", r#"{"text": "from b"}"#]).0);

    let (ok, out, err) = blazedb(&["sync", a, b, "--once"]);
    assert!(ok, "{err}");
    let report = lines(&out);
    assert_eq!(report.len(), 1, "one JSON line: {out}");
    let r = &report[0];
    assert!(r["a_to_b"]["cells_sent"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["b_to_a"]["cells_sent"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["a_to_b"]["bytes_sent"].as_u64().unwrap() > 0, "{r}");

    let export = |db: &str| {
        let mut rows = lines(&blazedb(&["export", db, "notes"]).1);
        rows.sort_by_key(|r| r["_id"].as_str().unwrap().to_owned());
        rows
    };
    assert_eq!(export(a), export(b));
    assert_eq!(export(a).len(), 2);

    // Nothing changed: nothing but handshakes moves.
    let (ok, out, _) = blazedb(&["sync", a, b, "--once"]);
    assert!(ok);
    let r = &lines(&out)[0];
    assert_eq!(r["a_to_b"]["cells_sent"], 0, "{r}");
    assert_eq!(r["b_to_a"]["cells_sent"], 0, "{r}");
}

#[test]
fn push_mode_makes_a_read_only_replica() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert!(blazedb(&["put", a, "c", r#"{"x": 1}"#]).0);
    assert!(blazedb(&["put", b, "c", r#"{"only_b": 1}"#]).0);
    let (ok, _, err) = blazedb(&["sync", a, b, "--once", "--mode", "push"]);
    assert!(ok, "{err}");
    assert_eq!(lines(&blazedb(&["export", b, "c"]).1).len(), 2);
    assert_eq!(
        lines(&blazedb(&["export", a, "c"]).1).len(),
        1,
        "A only sent"
    );
    let (ok, _, err) = blazedb(&["sync", a, b, "--once", "--mode", "sideways"]);
    assert!(!ok);
    assert!(err.contains("sideways"), "{err}");
}

#[test]
fn wrong_password_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "right\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let a = a.to_str().unwrap();
    let b = dir.path().join("b.db");
    let out = Command::new(BIN)
        .args([
            "--password-file",
            pw.to_str().unwrap(),
            "put",
            a,
            "c",
            r#"{"x": 1}"#,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (ok, _, err) = blazedb(&[
        "sync",
        a,
        b.to_str().unwrap(),
        "--once",
        "--password-file-a",
        wrong.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("wrong password"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The global `--password-file` (which every command takes) opens both sides of `sync`,
/// and creates a missing one encrypted; `--password-file-a/-b` still override it.
#[test]
fn the_global_password_file_opens_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "right\n").unwrap();
    let pw = pw.to_str().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (ok, _, err) = blazedb(&["--password-file", pw, "put", a, "c", r#"{"x": 1}"#]);
    assert!(ok, "{err}");
    let (ok, _, err) = blazedb(&["--password-file", pw, "sync", a, b, "--once"]);
    assert!(ok, "{err}");
    // The new copy is encrypted with it: no SQLite header, unreadable without it.
    let head = std::fs::read(b).unwrap();
    assert!(
        !head.starts_with(b"SQLite format 3"),
        "b.db was created in plaintext"
    );
    let (ok, _, err) = blazedb(&["stats", b]);
    assert!(!ok, "b.db opened without its password");
    assert!(err.contains("password"), "{err}");
    let (ok, out, err) = blazedb(&["--password-file", pw, "query", b, "c"]);
    assert!(ok, "{err}");
    assert_eq!(lines(&out).len(), 1);
}
