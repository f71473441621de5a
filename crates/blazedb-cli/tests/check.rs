//! `check` runs the integrity check: a healthy file prints `{"ok": true}` and exits 0; a
//! damaged one exits 1 with a one-line error.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::TestDb;
use serde_json::json;

#[test]
fn a_healthy_file_passes() {
    let db = TestDb::encrypted("pw");
    db.run_with_stdin("import", &["bugs", "-"], &lines(50))
        .success();
    assert_eq!(
        db.run("check", &[]).success().json(),
        json!({"ok": true, "problems": []})
    );
}

#[test]
fn a_damaged_file_fails() {
    let db = TestDb::new();
    db.run_with_stdin("import", &["bugs", "-"], &lines(200))
        .success();
    // Move everything into the main file, then overwrite a page in its middle.
    db.run("vacuum", &[]).success();
    let len = std::fs::metadata(&db.path).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db.path)
        .unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[0xA5; 4096]).unwrap();
    drop(file);

    // Either opening notices (the damage hit the schema) or the check does; both are one
    // line and exit 1.
    db.run("check", &[]).failure(1);
}

/// `count` JSON lines of about 200 bytes each.
fn lines(count: usize) -> String {
    let text = "x".repeat(200);
    (0..count)
        .map(|n| format!("{{\"n\": {n}, \"text\": \"{text}\"}}\n"))
        .collect()
}
