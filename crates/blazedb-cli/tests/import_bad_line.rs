//! A bad import line stops the import with its line number; the batches committed before it
//! stay, the batch it was in is rolled back, and the message says which lines were kept.

mod common;

use blazedb::limits::IMPORT_BATCH_RECORDS;
use common::TestDb;

#[test]
fn malformed_json_names_its_line_and_nothing_is_kept() {
    let db = TestDb::new();
    db.put("other", r#"{"b": 2}"#);
    let run = db
        .run_with_stdin("import", &["bugs", "-"], "{\"a\": 1}\n{\"a\": \n")
        .failure(1);
    assert!(
        run.stderr
            .contains("import stopped at line 2: invalid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(db.run("export", &["bugs"]).success().stdout.is_empty());
}

#[test]
fn a_line_that_is_not_an_object_is_refused() {
    let db = TestDb::new();
    let run = db
        .run_with_stdin("import", &["bugs", "-"], "[1, 2]\n")
        .failure(1);
    assert!(
        run.stderr
            .contains("line 1: expected a JSON object, got an array"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_line_the_database_refuses_names_its_line() {
    let db = TestDb::new();
    let run = db
        .run_with_stdin("import", &["bugs", "-"], "{\"a\": 1}\n{\"$bad\": 1}\n")
        .failure(1);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("$bad"), "{}", run.stderr);
}

#[test]
fn earlier_batches_stay_committed() {
    let db = TestDb::new();
    let bad_line = IMPORT_BATCH_RECORDS + 3;
    let mut lines: String = (1..bad_line).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    lines.push_str("not json\n");
    let run = db
        .run_with_stdin("import", &["bugs", "-"], &lines)
        .failure(1);
    let stopped = format!("import stopped at line {bad_line}: invalid JSON");
    let kept = format!(
        "the {IMPORT_BATCH_RECORDS} records of lines 1-{IMPORT_BATCH_RECORDS} were committed"
    );
    let resume = format!("import from line {} on", IMPORT_BATCH_RECORDS + 1);
    assert!(
        run.stderr.contains(&stopped) && run.stderr.contains(&kept) && run.stderr.contains(&resume),
        "{}",
        run.stderr
    );
    let exported = db.run("export", &["bugs"]).success().json_lines();
    assert_eq!(exported.len(), IMPORT_BATCH_RECORDS);
}

#[test]
fn a_missing_input_file_does_not_create_the_database() {
    let db = TestDb::new();
    let missing = db.file("missing.jsonl");
    let run = db
        .run("import", &["bugs", missing.to_str().unwrap()])
        .failure(1);
    assert!(run.stderr.contains("missing.jsonl"), "{}", run.stderr);
    assert!(!db.path.exists());
}

/// An import into a new path that fails before committing anything (a bad first line, a bad
/// line in the first batch) leaves no empty database behind; one into an existing database
/// leaves it as it was.
#[test]
fn a_failed_import_into_a_new_path_leaves_no_file() {
    let db = TestDb::new();
    for input in ["not json\n", "{\"a\": 1}\n[2]\n"] {
        db.run_with_stdin("import", &["bugs", "-"], input)
            .failure(1);
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.path.clone().into_os_string();
            path.push(suffix);
            assert!(
                !std::path::Path::new(&path).exists(),
                "{path:?} left behind after {input:?}"
            );
        }
    }
    let id = db.put("bugs", r#"{"a": 0}"#);
    db.run_with_stdin("import", &["bugs", "-"], "not json\n")
        .failure(1);
    assert_eq!(db.get("bugs", &id)["a"], 0);
}

/// A path that is a symbolic link to a missing file: SQLite creates the database at the
/// link's target. A failed import removes that new target and keeps the link, which was
/// there before (the cleanup once took the dangling link for a new path and deleted it,
/// leaving the created target behind).
#[cfg(unix)]
#[test]
fn a_failed_import_through_a_dangling_link_keeps_the_link_and_removes_its_target() {
    let db = TestDb::new();
    let target = db.file("target.db");
    std::os::unix::fs::symlink(&target, &db.path).unwrap();
    db.run_with_stdin("import", &["bugs", "-"], "not json\n")
        .failure(1);
    let link = std::fs::symlink_metadata(&db.path).expect("the link was deleted");
    assert!(link.file_type().is_symlink());
    for suffix in ["", "-wal", "-shm"] {
        let mut path = target.clone().into_os_string();
        path.push(suffix);
        assert!(
            !std::path::Path::new(&path).exists(),
            "{path:?} left behind"
        );
    }
    // The link still leads where it did: a later import creates the target through it.
    db.run_with_stdin("import", &["bugs", "-"], "{\"a\": 1}\n")
        .success();
    assert!(target.is_file());
}

/// A file saved with a UTF-8 byte order mark imports (the mark is not JSON, but editors on
/// Windows write it).
#[test]
fn a_byte_order_mark_at_the_start_is_skipped() {
    let db = TestDb::new();
    let run = db.run_with_stdin("import", &["c", "-"], "\u{feff}{\"a\": 1}\n{\"a\": 2}\n");
    run.success();
    assert_eq!(db.run("export", &["c"]).success().json_lines().len(), 2);
}
