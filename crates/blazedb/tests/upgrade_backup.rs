//! The copy an upgrade keeps of a file of an older storage format before it changes it
//! (`store/upgrade_backup.rs`): beside the file, the file as it was byte for byte (an
//! encrypted one under its password), with the WAL frames a reader outside BlazeDB kept;
//! put back in the file's place, it is the old file again. A copy that cannot be written
//! refuses the upgrade and changes nothing.

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use blazedb::{Database, Error, OpenError, OpenOptions};
use common::{downgrade_to_format_10, format_of, old_file};

fn backup_of(path: &Path) -> PathBuf {
    let mut b = path.as_os_str().to_owned();
    b.push(".format-10.backup");
    PathBuf::from(b)
}

/// Put the copy back in the file's place, as README's "Upgrading" says to go back; the
/// upgraded file is moved to `<file>.upgraded`.
fn restore(path: &Path) {
    std::fs::rename(path, path.with_extension("upgraded")).unwrap();
    std::fs::rename(backup_of(path), path).unwrap();
}

#[test]
fn an_upgrade_keeps_the_file_as_it_was_beside_it() {
    let (_dir, path, before) = old_file("notes");

    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    assert_eq!(db.upgrade_backup(), Some(backup_of(&path).as_path()));
    assert_eq!(
        format_of(&backup_of(&path)),
        10,
        "the copy is the old format"
    );
    assert_eq!(format_of(&path), blazedb::limits::FORMAT_VERSION);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&backup_of(&path)), 0o600, "as private as the file");
    let after = db.insert("notes", [("n", 2i64)]).unwrap();
    drop(db);

    // Going back: the copy in the file's place is the file before the upgrade (which this
    // build upgrades again, keeping a copy again).
    restore(&path);
    let back = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(back.upgraded_from(), Some(10));
    assert!(back.get("notes", before).unwrap().is_some());
    assert!(
        back.get("notes", after).unwrap().is_none(),
        "writes since the upgrade are not in the copy"
    );
}

#[test]
fn an_encrypted_file_s_copy_opens_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.db");
    let pw = || OpenOptions::with_password("correct horse");
    let id = Database::open(&path, pw())
        .unwrap()
        .insert("notes", [("n", 1i64)])
        .unwrap();
    {
        // The downgrade, through SQLCipher with the file's settings.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "key", "correct horse").unwrap();
        conn.pragma_update(None, "cipher_hmac_algorithm", blazedb::store::PAGE_HMAC)
            .unwrap();
        conn.execute_batch(
            "ALTER TABLE history DROP COLUMN old_seen;
             UPDATE meta SET value = 10 WHERE key = 'format_version';",
        )
        .unwrap();
    }
    let db = Database::open(&path, pw()).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    assert!(db.upgrade_backup().is_some());
    drop(db);

    restore(&path);
    let wrong = Database::open(&path, OpenOptions::with_password("wrong")).unwrap_err();
    assert!(
        matches!(wrong, Error::Open(OpenError::WrongPassword { .. })),
        "the copy is encrypted: {wrong:?}"
    );
    let back = Database::open(&path, pw()).unwrap();
    assert_eq!(back.upgraded_from(), Some(10));
    assert!(back.get("notes", id).unwrap().is_some());
}

#[test]
fn no_copy_is_kept_without_an_upgrade_or_when_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgrade_backup(), None, "a new file");
    db.insert("notes", [("n", 1i64)]).unwrap();
    drop(db);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgrade_backup(), None, "already at this build's format");
    drop(db);

    downgrade_to_format_10(&path);
    let options = OpenOptions {
        upgrade_backup: false,
        ..OpenOptions::default()
    };
    let db = Database::open(&path, options).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    assert_eq!(db.upgrade_backup(), None);
    assert!(!backup_of(&path).exists());
}

#[test]
fn frames_a_reader_keeps_in_the_wal_are_copied_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let id = Database::open(&path, OpenOptions::default())
        .unwrap()
        .insert("notes", [("n", 1i64)])
        .unwrap();
    // An `sqlite3` shell, say: it made the downgrade's commit (kept in the WAL, no
    // checkpoint) and then holds a read transaction, so no checkpoint can empty the WAL.
    let shell = rusqlite::Connection::open(&path).unwrap();
    shell
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             ALTER TABLE history DROP COLUMN old_seen;
             UPDATE meta SET value = 10 WHERE key = 'format_version';
             BEGIN;
             SELECT count(*) FROM meta;",
        )
        .unwrap();

    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    let mut wal = backup_of(&path).into_os_string();
    wal.push("-wal");
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the WAL's frames are copied beside the copy"
    );
    drop(db);
    shell.execute_batch("COMMIT").unwrap();
    drop(shell);

    // SQLite reads the copy with its WAL, where the downgrade's commit is (the file alone
    // says format 11), and folds it in when it closes.
    assert_eq!(format_of(&backup_of(&path)), 10);
    assert!(!Path::new(&wal).exists(), "folded into the copy");
    restore(&path);
    let back = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(back.upgraded_from(), Some(10));
    assert!(back.get("notes", id).unwrap().is_some());
}

#[test]
fn a_copy_that_cannot_be_written_refuses_the_upgrade_and_changes_nothing() {
    let (_dir, path, id) = old_file("notes");
    // Something in the way of the copy (a directory where it is written): the copy fails
    // whoever runs the test, root included.
    let mut partial = backup_of(&path).into_os_string();
    partial.push(".partial");
    std::fs::create_dir(&partial).unwrap();

    let refused = Database::open(&path, OpenOptions::default()).unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::Open(OpenError::UpgradeBackupFailed {
                found: 10,
                supported: 11,
                ..
            })
        ),
        "{refused:?}"
    );
    let m = refused.to_string();
    assert!(
        m.starts_with(&format!(
            "{} is storage format 10, which this build upgrades to format 11 after keeping a \
             copy of the file as it is at {} (the way back to builds of format 10), and that \
             copy could not be written (",
            path.display(),
            backup_of(&path).display()
        )),
        "{m}"
    );
    assert!(m.ends_with("; nothing was changed"), "{m}");
    assert!(m.contains("let this user create files in"), "{m}");
    assert_eq!(format_of(&path), 10, "not upgraded");
    assert!(!backup_of(&path).exists());

    // Out of the way, the same open upgrades it.
    std::fs::remove_dir(&partial).unwrap();
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.upgraded_from(), Some(10));
    assert!(db.get("notes", id).unwrap().is_some());
}
