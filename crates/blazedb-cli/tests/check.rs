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

/// A file damaged so badly that reading the records fails outright still gets a report of
/// what is wrong (`ok: false` and the problems), not a bare storage error.
#[test]
fn a_badly_damaged_file_gets_a_report() {
    let db = TestDb::new();
    let lines: String = (0..3000)
        .map(|i| format!("{{\"n\": {i}, \"t\": \"{}\"}}\n", "x".repeat(200)))
        .collect();
    let input = db.file("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    db.run("import", &["c", input.to_str().unwrap()]).success();
    let mut bytes = std::fs::read(&db.path).unwrap();
    let pages = bytes.len() / 4096;
    for p in (2..pages).step_by(7) {
        for (i, b) in bytes[p * 4096..(p + 1) * 4096].iter_mut().enumerate() {
            *b = ((p * 31 + i) % 256) as u8;
        }
    }
    std::fs::write(&db.path, bytes).unwrap();
    let run = db.run("check", &[]).failure(1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], false, "{}", run.stdout);
    assert!(!report["problems"].as_array().unwrap().is_empty());
    assert!(
        run.stderr.contains("restore from a backup"),
        "{}",
        run.stderr
    );
}

/// One byte changed on an encrypted file's second page (where the metadata lives): the file
/// is reported damaged, not as "an SQLite database of another application", which would
/// not make anyone think of a backup.
#[test]
fn a_damaged_metadata_page_of_an_encrypted_file_is_damage() {
    let db = TestDb::encrypted("pw");
    db.run_with_stdin("import", &["bugs", "-"], &lines(50))
        .success();
    db.run("vacuum", &[]).success();
    // Flipped, not overwritten: an encrypted byte is 0xFF one time in 256 already.
    let mut bytes = std::fs::read(&db.path).unwrap();
    bytes[4096 + 200] ^= 0xFF;
    std::fs::write(&db.path, bytes).unwrap();
    for command in ["check", "stats"] {
        let run = db.run(command, &[]).failure(1);
        assert!(
            run.stderr.contains("is corrupted") && run.stderr.contains("backup"),
            "{command}: {}",
            run.stderr
        );
    }
}
