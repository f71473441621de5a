//! With `BLAZEDB_PASSWORD` (or `--password-file`) the file is encrypted; a wrong or missing
//! password is a clear one-line error, never a panic.

mod common;

use common::{file_contains, TestDb};

#[test]
fn an_encrypted_database_works_with_its_password_and_hides_the_data() {
    let db = TestDb::encrypted("correct horse");
    let id = db.put(
        "secret_collection",
        r#"{"secret_field": "plaintext-marker"}"#,
    );
    assert_eq!(
        db.get("secret_collection", &id)["secret_field"],
        "plaintext-marker"
    );
    assert_eq!(db.run("stats", &[]).success().json()["encrypted"], true);
    db.run("vacuum", &[]).success();
    for needle in [
        "plaintext-marker",
        "secret_field",
        "secret_collection",
        "SQLite format",
    ] {
        assert!(
            !file_contains(&db.path, needle.as_bytes()),
            "{needle} is in the file"
        );
    }
}

#[test]
fn a_wrong_password_says_so() {
    let db = TestDb::encrypted("correct horse");
    let id = db.put("bugs", r#"{"a": 1}"#);
    let run = db
        .run_with_password(Some("battery staple"), "get", &["bugs", &id])
        .failure(1);
    assert!(run.stderr.contains("wrong password"), "{}", run.stderr);
}

/// The library says to open the file with its password; the CLI adds how its user gives
/// one (the library's message named these flags itself until 2026-12-07, which a program
/// calling `Database::open` has none of).
#[test]
fn no_password_for_an_encrypted_file_says_to_give_one() {
    let db = TestDb::encrypted("correct horse");
    db.put("bugs", "{}");
    let run = db.run_with_password(None, "export", &["bugs"]).failure(1);
    assert!(
        run.stderr
            .contains("no password was given: open it with its password")
            && run.stderr.contains(
                "(give the password in BLAZEDB_PASSWORD or in a file named by \
                 --password-file; `sync` of two files takes one for each with \
                 --password-file-a/-b)"
            ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn a_password_for_a_plain_file_is_refused() {
    let db = TestDb::new();
    db.put("bugs", "{}");
    let run = db
        .run_with_password(Some("unneeded"), "stats", &[])
        .failure(1);
    assert!(run.stderr.contains("not encrypted"), "{}", run.stderr);
}

#[test]
fn a_password_file_works_and_its_trailing_newline_is_ignored() {
    let db = TestDb::encrypted("from file");
    let id = db.put("bugs", r#"{"a": 1}"#);
    let file = db.file("password.txt");
    std::fs::write(&file, "from file\n").unwrap();
    let file = file.to_str().unwrap();
    let run = db.run_with_password(None, "get", &["bugs", &id, "--password-file", file]);
    assert_eq!(run.success().json()["a"], 1);
}

#[test]
fn a_missing_password_file_is_an_error() {
    let db = TestDb::new();
    let missing = db.file("nope.txt");
    let run = db.run(
        "put",
        &["bugs", "{}", "--password-file", missing.to_str().unwrap()],
    );
    let run = run.failure(1);
    assert!(
        run.stderr.contains("cannot read password file"),
        "{}",
        run.stderr
    );
    assert!(!db.path.exists());
}

/// A file named by mistake (a database, a log, a device) is not read into memory whole as a
/// password, and a file that is not text says so; nothing is created either way.
#[test]
fn a_password_file_that_cannot_be_a_password_is_refused_with_the_reason() {
    let db = TestDb::new();
    let large = db.file("large.txt");
    std::fs::write(&large, "x".repeat(1024 * 1024)).unwrap();
    let binary = db.file("binary.key");
    std::fs::write(&binary, [0xff, 0xfe, b'p', b'w']).unwrap();
    for (file, reason) in [(&large, "larger than"), (&binary, "not UTF-8 text")] {
        let run = db
            .run(
                "put",
                &["bugs", "{}", "--password-file", file.to_str().unwrap()],
            )
            .failure(1);
        assert!(run.stderr.contains(reason), "{}", run.stderr);
        assert!(
            run.stderr.contains(file.to_str().unwrap()),
            "{}",
            run.stderr
        );
        assert!(!db.path.exists(), "a database was created");
    }
}
