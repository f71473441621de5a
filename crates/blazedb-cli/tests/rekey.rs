//! `rekey` changes the password to `BLAZEDB_NEW_PASSWORD` or `--new-password-file`, and with
//! neither decrypts the file; the records survive each change.

mod common;

use common::{file_contains, TestDb};

#[test]
fn encrypt_change_and_decrypt() {
    let mut db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "survivor"}"#);

    let mut encrypt = db.command("rekey", &[]);
    encrypt.env("BLAZEDB_NEW_PASSWORD", "first");
    let run = common::Run::of(encrypt, None).success();
    assert_eq!(run.json()["encrypted"], true);
    assert!(!file_contains(&db.path, b"survivor"));
    db.run("get", &["bugs", &id]).failure(1);

    db.password = Some("first".into());
    let second = db.file("second.txt");
    std::fs::write(&second, "second\n").unwrap();
    db.run("rekey", &["--new-password-file", second.to_str().unwrap()])
        .success();
    db.run("get", &["bugs", &id]).failure(1);

    db.password = Some("second".into());
    assert_eq!(db.get("bugs", &id)["title"], "survivor");
    let run = db.run("rekey", &[]).success();
    assert_eq!(run.json()["encrypted"], false);

    db.password = None;
    assert_eq!(db.get("bugs", &id)["title"], "survivor");
    db.run("check", &[]).success();
}

#[test]
fn rekey_of_a_missing_file_does_not_create_it() {
    let db = TestDb::new();
    let run = db.run("rekey", &[]).failure(1);
    assert!(run.stderr.contains("no such database"), "{}", run.stderr);
    assert!(!db.path.exists());
}

/// The rekeyed file keeps the old one's permissions: an 0600 database does not come back
/// readable by everyone (it is a new file, created under the umask, renamed into place).
#[test]
fn rekey_keeps_the_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let mut db = TestDb::new();
    db.put("bugs", r#"{"title": "private"}"#);
    std::fs::set_permissions(&db.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut encrypt = db.command("rekey", &[]);
    encrypt.env("BLAZEDB_NEW_PASSWORD", "pw");
    common::Run::of(encrypt, None).success();
    db.password = Some("pw".into());
    db.run("rekey", &[]).success();
    let mode = std::fs::metadata(&db.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}
