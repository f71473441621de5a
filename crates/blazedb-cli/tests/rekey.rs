//! `rekey` changes the password to `BLAZEDB_NEW_PASSWORD` or `--new-password-file`, and only
//! with `--decrypt` removes it; the records survive each change.

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
    let run = db.run("rekey", &["--decrypt"]).success();
    assert_eq!(run.json()["encrypted"], false);

    db.password = None;
    assert_eq!(db.get("bugs", &id)["title"], "survivor");
    db.run("check", &[]).success();
}

#[test]
fn rekey_of_a_missing_file_does_not_create_it() {
    let db = TestDb::new();
    let run = db.run("rekey", &["--decrypt"]).failure(1);
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
    db.run("rekey", &["--decrypt"]).success();
    let mode = std::fs::metadata(&db.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

/// A new password that is missing, empty or contradicted never decrypts the file: only
/// `--decrypt` does. (`BLAZEDB_NEW_PASSWORD="$(cat typo.txt)"` is set but empty.)
#[test]
fn no_new_password_is_refused_rather_than_read_as_decrypt() {
    let mut db = TestDb::encrypted("abc");
    let id = db.put("bugs", r#"{"title": "secret"}"#);
    let refused = |cmd: std::process::Command, says: &str| {
        let run = common::Run::of(cmd, None).failure(2);
        assert!(run.stderr.contains(says), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    };
    let mut empty = db.command("rekey", &[]);
    empty.env("BLAZEDB_NEW_PASSWORD", "");
    refused(empty, "BLAZEDB_NEW_PASSWORD is set but empty");
    refused(db.command("rekey", &[]), "pass --decrypt");
    let mut both = db.command("rekey", &["--decrypt"]);
    both.env("BLAZEDB_NEW_PASSWORD", "new");
    refused(both, "--decrypt removes the encryption");
    let empty_file = db.file("empty.txt");
    std::fs::write(&empty_file, "").unwrap();
    let run = db
        .run(
            "rekey",
            &["--new-password-file", empty_file.to_str().unwrap()],
        )
        .failure(1);
    assert!(run.stderr.contains("is empty"), "{}", run.stderr);

    assert!(
        !file_contains(&db.path, b"secret"),
        "the file is still encrypted"
    );
    assert_eq!(db.get("bugs", &id)["title"], "secret");
    db.password = None;
    db.run("get", &["bugs", &id]).failure(1);
}

/// `--decrypt` with `BLAZEDB_NEW_PASSWORD` set but empty decrypts: the empty variable agrees
/// with the explicit request (a script may clear the variable instead of unsetting it).
#[test]
fn decrypt_with_an_empty_new_password_variable_decrypts() {
    let mut db = TestDb::encrypted("abc");
    let id = db.put("bugs", r#"{"title": "secret"}"#);
    let mut decrypt = db.command("rekey", &["--decrypt"]);
    decrypt.env("BLAZEDB_NEW_PASSWORD", "");
    let run = common::Run::of(decrypt, None).success();
    assert_eq!(run.json()["encrypted"], false, "{}", run.stdout);
    db.password = None;
    assert_eq!(db.get("bugs", &id)["title"], "secret");
}
