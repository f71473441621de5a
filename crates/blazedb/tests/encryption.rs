//! Opening files: encryption hides everything, wrong passwords, foreign and damaged files get
//! their own errors, and rekeying keeps the data.

use blazedb::{Database, Error, OpenError, OpenOptions, Value};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{}-wal", path.display())) {
        all.extend(wal);
    }
    all
}

#[test]
fn encrypted_file_contains_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.db");
    {
        let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
        for i in 0..200 {
            db.insert(
                "zebracollection",
                [("giraffefield", Value::from(format!("okapivalue{i}")))],
            )
            .unwrap();
        }
        db.create_index("zebracollection", "giraffefield").unwrap();
        assert!(db.is_encrypted());
    }
    let bytes = file_bytes(&path);
    for needle in [
        &b"zebracollection"[..],
        b"giraffefield",
        b"okapivalue",
        b"SQLite format 3",
        b"blazedb",
    ] {
        assert!(
            !contains(&bytes, needle),
            "found {:?} in the encrypted file",
            String::from_utf8_lossy(needle)
        );
    }
    // The same data unencrypted does show up, so the scan above can find things.
    let plain = dir.path().join("plain.db");
    {
        let db = Database::open(&plain, OpenOptions::default()).unwrap();
        db.insert(
            "zebracollection",
            [("giraffefield", Value::from("okapivalue"))],
        )
        .unwrap();
    }
    assert!(contains(&file_bytes(&plain), b"okapivalue"));
}

#[test]
fn wrong_password_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let id = {
        let db = Database::open(&path, OpenOptions::with_password("right")).unwrap();
        db.insert("c", [("x", 1)]).unwrap()
    };
    match Database::open(&path, OpenOptions::with_password("wrong")) {
        Err(Error::Open(OpenError::WrongPassword { .. })) => {}
        other => panic!("expected WrongPassword, got {other:?}"),
    }
    match Database::open(&path, OpenOptions::default()) {
        Err(Error::Open(OpenError::PasswordRequired { .. })) => {}
        other => panic!("expected PasswordRequired, got {other:?}"),
    }
    // The failed attempts changed nothing.
    let db = Database::open(&path, OpenOptions::with_password("right")).unwrap();
    assert_eq!(db.get("c", id).unwrap().unwrap().fields["x"], Value::Int(1));
}

/// The password errors speak to a program calling `Database::open`: they say to open the
/// file with its password, not which environment variable or command-line flag to set (a
/// library user has none; the CLI adds its own advice, `blazedb-cli/tests/encryption.rs`).
#[test]
fn password_errors_say_what_to_do_in_terms_of_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let encrypted = dir.path().join("e.db");
    let plain = dir.path().join("p.db");
    Database::open(&encrypted, OpenOptions::with_password("right")).unwrap();
    Database::open(&plain, OpenOptions::default()).unwrap();
    let missing = Database::open(&encrypted, OpenOptions::default()).unwrap_err();
    let m = missing.to_string();
    assert!(
        m.contains(
            "is encrypted (or is not a database) and no password was given: open it \
                    with its password"
        ),
        "{m}"
    );
    let wrong = Database::open(&encrypted, OpenOptions::with_password("wrong")).unwrap_err();
    let needless = Database::open(&plain, OpenOptions::with_password("pw")).unwrap_err();
    for e in [missing, wrong, needless] {
        let m = e.to_string();
        assert!(matches!(e, Error::Open(_)), "{e:?}");
        for cli in ["BLAZEDB_PASSWORD", "--password", "password-file"] {
            assert!(!m.contains(cli), "{cli} in {m}");
        }
    }
}

#[test]
fn password_on_a_plain_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    Database::open(&path, OpenOptions::default())
        .unwrap()
        .insert("c", [("x", 1)])
        .unwrap();
    match Database::open(&path, OpenOptions::with_password("pw")) {
        Err(Error::Open(OpenError::NotEncrypted { .. })) => {}
        other => panic!("expected NotEncrypted, got {other:?}"),
    }
}

#[test]
fn foreign_files_are_not_blazedb() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a database\n").unwrap();
    for opts in [OpenOptions::default(), OpenOptions::with_password("pw")] {
        match Database::open(&text, opts) {
            Err(Error::Open(OpenError::NotABlazeDb { .. })) => {}
            other => panic!("expected NotABlazeDb, got {other:?}"),
        }
    }
    // Another application's SQLite database.
    let other = dir.path().join("other.sqlite");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    match Database::open(&other, OpenOptions::default()) {
        Err(Error::Open(OpenError::NotABlazeDb { .. })) => {}
        other => panic!("expected NotABlazeDb, got {other:?}"),
    }
    // Untouched: not even switched to WAL (the header's version bytes 18-19 stay 1, 1).
    let header = std::fs::read(&other).unwrap();
    assert_eq!(&header[18..20], &[1, 1], "the journal mode was changed");
    let c = rusqlite::Connection::open(&other).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn truncated_files_are_corrupted_not_a_panic() {
    for password in [None, Some("pw")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let db = Database::open(
                &path,
                OpenOptions {
                    password: password.map(Into::into),
                    ..Default::default()
                },
            )
            .unwrap();
            db.transaction(|tx| {
                for i in 0..3000 {
                    tx.insert(
                        "c",
                        [("n", Value::Int(i)), ("pad", Value::from("x".repeat(100)))],
                    )?;
                }
                Ok(())
            })
            .unwrap();
            db.vacuum().unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Cut at a page boundary (so it still looks like a database) and mid-page.
        for cut in [len / 2 / 4096 * 4096, len / 3 + 7] {
            f.set_len(cut).unwrap();
            let opened = Database::open(
                &path,
                OpenOptions {
                    password: password.map(Into::into),
                    ..Default::default()
                },
            );
            let problem = match opened {
                Err(Error::Open(OpenError::Corrupted { .. } | OpenError::NotABlazeDb { .. })) => {
                    true
                }
                Err(e) => panic!("unexpected error kind for truncated file: {e:?}"),
                Ok(db) => {
                    // Opening may succeed if the schema pages survived; reading must then fail
                    // cleanly or the integrity check must report it.
                    let scan = db.scan("c");
                    let check = db.integrity_check();
                    scan.is_err() || check.is_err() || !check.unwrap().ok
                }
            };
            assert!(
                problem,
                "truncation to {cut} of {len} bytes went unnoticed (password {password:?})"
            );
        }
    }
}

#[test]
fn rekey_changes_password_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let mut db = Database::open(&path, OpenOptions::default()).unwrap();
    let id = db.insert("c", [("secretword", "platypus")]).unwrap();
    let node = db.node_id();
    db.rekey(Some("one")).unwrap();
    assert!(db.is_encrypted());
    assert_eq!(
        db.get("c", id).unwrap().unwrap().fields["secretword"],
        Value::from("platypus")
    );
    db.rekey(Some("two")).unwrap();
    db.insert("c", [("after", 1)]).unwrap();
    drop(db);
    assert!(!contains(&file_bytes(&path), b"platypus"));
    assert!(matches!(
        Database::open(&path, OpenOptions::with_password("one")),
        Err(Error::Open(OpenError::WrongPassword { .. }))
    ));
    let mut db = Database::open(&path, OpenOptions::with_password("two")).unwrap();
    assert_eq!(db.node_id(), node, "node id survives rekey");
    assert_eq!(db.count("c").unwrap(), 2);
    db.rekey(None).unwrap();
    drop(db);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.count("c").unwrap(), 2);
}

#[test]
fn node_id_is_generated_once_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let a = Database::open(&path, OpenOptions::default())
        .unwrap()
        .node_id();
    let b = Database::open(&path, OpenOptions::default())
        .unwrap()
        .node_id();
    let other = Database::open(dir.path().join("m.db"), OpenOptions::default())
        .unwrap()
        .node_id();
    assert_eq!(a, b);
    assert_ne!(a, other);
}

#[test]
fn missing_file_without_create_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = Database::open(
        dir.path().join("nope.db"),
        OpenOptions {
            create: false,
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::Open(OpenError::Io { .. }))));
    assert!(!dir.path().join("nope.db").exists());
}

/// A file another connection keeps locked for longer than an open waits (a rekey copying a
/// large file holds it so): the open says so and that it may be retried, instead of an I/O
/// error reading "database is locked"; once the lock goes, the same open works.
#[test]
fn an_open_that_meets_a_long_exclusive_lock_says_it_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    drop(Database::open(&path, OpenOptions::default()).unwrap());
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let started = std::time::Instant::now();
    let Err(e) = Database::open(&path, OpenOptions::default()) else {
        panic!("opened a file another connection holds exclusively");
    };
    assert!(matches!(&e, Error::Open(OpenError::Busy { .. })), "{e:?}");
    assert!(e.to_string().contains("try again"), "{e}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(9),
        "it waited first"
    );
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    Database::open(&path, OpenOptions::default()).unwrap();
}

/// A raw SQLCipher connection to `path` keyed with `pw`, with `hmac` as its page HMAC
/// (`None`: SQLCipher's default), and whether it can read the schema.
fn raw_reads(path: &std::path::Path, pw: &str, hmac: Option<&str>) -> bool {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "key", pw).unwrap();
    if let Some(h) = hmac {
        conn.pragma_update(None, "cipher_hmac_algorithm", h)
            .unwrap();
    }
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .is_ok()
}

#[test]
fn new_encrypted_files_authenticate_pages_with_the_documented_hmac() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    {
        let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
        db.insert("c", [("x", 1)]).unwrap();
        db.checkpoint().unwrap();
    }
    assert_eq!(blazedb::store::PAGE_HMAC, "HMAC_SHA256");
    assert!(raw_reads(&path, "pw", Some(blazedb::store::PAGE_HMAC)));
    // Another SQLCipher tool with its defaults (HMAC-SHA512) must be told the setting.
    assert!(!raw_reads(&path, "pw", None));
    assert!(!raw_reads(&path, "wrong", Some(blazedb::store::PAGE_HMAC)));
}

/// Files made before the page HMAC changed (SQLCipher's default, HMAC-SHA512) open, take
/// writes and checkpoints, tell a wrong password apart, and rekeying converts them.
#[test]
fn a_file_with_sqlcipher_default_page_hmac_still_opens_and_rekeys_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made.db");
    let old = dir.path().join("old.db");
    let (id, node) = {
        let db = Database::open(&made, OpenOptions::with_password("pw")).unwrap();
        let id = db.insert("c", [("word", "platypus")]).unwrap();
        db.checkpoint().unwrap();
        (id, db.node_id())
    };
    // The same database re-encrypted with SQLCipher's defaults, as an older build wrote it.
    {
        let conn = rusqlite::Connection::open(&made).unwrap();
        conn.pragma_update(None, "key", "pw").unwrap();
        conn.pragma_update(None, "cipher_hmac_algorithm", blazedb::store::PAGE_HMAC)
            .unwrap();
        conn.execute(
            "ATTACH DATABASE ?1 AS old KEY 'pw'",
            [old.display().to_string()],
        )
        .unwrap();
        conn.query_row("SELECT sqlcipher_export('old')", [], |_| Ok(()))
            .unwrap();
        // Builds of then noted no file stamp (`copied_file.rs`), so the copy keeps the id.
        conn.execute_batch("DELETE FROM old.meta WHERE key = 'file_stamp'; DETACH DATABASE old")
            .unwrap();
    }
    assert!(raw_reads(&old, "pw", None));
    assert!(!raw_reads(&old, "pw", Some(blazedb::store::PAGE_HMAC)));

    assert!(matches!(
        Database::open(&old, OpenOptions::with_password("nope")),
        Err(Error::Open(OpenError::WrongPassword { .. }))
    ));
    {
        let db = Database::open(&old, OpenOptions::with_password("pw")).unwrap();
        assert_eq!(db.node_id(), node);
        assert_eq!(
            db.get("c", id).unwrap().unwrap().fields["word"],
            Value::from("platypus")
        );
        db.insert("c", [("word", "wombat")]).unwrap();
        // The checkpoint runs on a second connection, which must find the old HMAC too.
        let cp = db.checkpoint().unwrap();
        assert!(cp.wal_frames > 0, "the insert is in the WAL: {cp:?}");
        assert_eq!(cp.checkpointed_frames, cp.wal_frames, "{cp:?}");
    }
    // Still the old HMAC on disk: nothing rewrote the file behind the user's back.
    assert!(raw_reads(&old, "pw", None));
    let mut db = Database::open(&old, OpenOptions::with_password("pw")).unwrap();
    assert_eq!(db.count("c").unwrap(), 2);
    db.rekey(Some("pw2")).unwrap();
    assert_eq!(db.count("c").unwrap(), 2);
    drop(db);
    assert!(raw_reads(&old, "pw2", Some(blazedb::store::PAGE_HMAC)));
    assert!(!raw_reads(&old, "pw2", None));
    let db = Database::open(&old, OpenOptions::with_password("pw2")).unwrap();
    assert_eq!(db.count("c").unwrap(), 2);
}

/// BlazeDB derives an encrypted file's key itself (once per open, for both of its
/// connections) and gives a new file a random salt: two files under one password must not
/// share a salt (the file's first 16 bytes), or equal pages would encrypt alike across them.
/// The files still open in SQLCipher with the password alone (see the test above).
#[test]
fn new_encrypted_files_get_their_own_salt() {
    let dir = tempfile::tempdir().unwrap();
    let salt = |name: &str| {
        let path = dir.path().join(name);
        let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
        db.insert("c", [("x", 1)]).unwrap();
        db.checkpoint().unwrap();
        drop(db);
        assert!(raw_reads(&path, "pw", Some(blazedb::store::PAGE_HMAC)));
        let bytes = std::fs::read(&path).unwrap();
        bytes[..16].to_vec()
    };
    let (a, b) = (salt("a.db"), salt("b.db"));
    assert_ne!(a, b);
    assert_ne!(&a[..], b"SQLite format 3\0");
}

/// An empty password would make SQLCipher write a plain copy that then fails to open as an
/// encrypted one, leaving the handle without a file: it is refused before anything is
/// touched, and the handle keeps working.
#[test]
fn rekey_to_an_empty_password_is_refused_and_the_handle_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let mut db = Database::open(&path, OpenOptions::with_password("one")).unwrap();
    let id = db.insert("c", [("n", 1)]).unwrap();
    let e = db.rekey(Some("")).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("None")),
        "{e}"
    );
    assert!(db.is_encrypted());
    assert_eq!(db.get("c", id).unwrap().unwrap().fields["n"], Value::Int(1));
    db.insert("c", [("n", 2)]).unwrap();
    drop(db);
    let db = Database::open(&path, OpenOptions::with_password("one")).unwrap();
    assert_eq!(db.count("c").unwrap(), 2);
}

/// SQLCipher reads an empty key as "no encryption": an empty password made a plain file that
/// the same options then refused to open ("not encrypted"), while the handle said it was
/// encrypted. It is refused before anything is created.
#[test]
fn an_empty_password_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let e = Database::open(&path, OpenOptions::with_password("")).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("None")),
        "{e:?}"
    );
    assert!(!path.exists(), "the file was created");
}

/// An encrypted database cut short mid-page (an interrupted copy, a full disk) opened with
/// its password is reported as damaged, with what to do, not as "not a BlazeDB database",
/// wherever it was cut past the first page: inside the last page, or earlier, where SQLite
/// finds fewer pages than the header counts (an audit, 2026-12-07: cuts from 4097 bytes to
/// the second-to-last page were "not a BlazeDB database ... give its password to check",
/// though the password was given). Nothing is written to it.
#[test]
fn an_encrypted_file_cut_mid_page_is_corrupted_when_its_password_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.db");
    {
        let db = Database::open(&whole, OpenOptions::with_password("pw")).unwrap();
        db.transaction(|tx| {
            for i in 0..500 {
                tx.insert(
                    "c",
                    [("n", Value::Int(i)), ("pad", Value::from("x".repeat(100)))],
                )?;
            }
            Ok(())
        })
        .unwrap();
        db.vacuum().unwrap();
    }
    let len = std::fs::metadata(&whole).unwrap().len();
    assert!(len >= 8 * 4096, "{len} bytes: too few pages to cut between");
    let path = dir.path().join("t.db");
    for cut in [
        4097,
        10_000,
        len / 2 + 100,
        len - 4096 - 100,
        len - 1000,
        len - 1,
    ] {
        std::fs::copy(&whole, &path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let before = file_bytes(&path);
        let e = Database::open(&path, OpenOptions::with_password("pw")).unwrap_err();
        assert!(
            matches!(&e, Error::Open(OpenError::Corrupted { reason, .. }) if reason.contains("truncated")),
            "cut at {cut} of {len}: {e:?}"
        );
        let m = e.to_string();
        assert!(
            m.contains("the password opens it") && m.contains("restore"),
            "{m}"
        );
        assert!(!m.contains("not a BlazeDB database"), "{m}");
        // A wrong password cannot tell: the file is then not one this password opens.
        let e = Database::open(&path, OpenOptions::with_password("other")).unwrap_err();
        assert!(
            matches!(&e, Error::Open(OpenError::NotABlazeDb { .. })),
            "cut at {cut} of {len}: {e:?}"
        );
        assert_eq!(file_bytes(&path), before, "the damaged file was changed");
    }
}

/// SQLCipher cannot tell a wrong password from a damaged first page (both fail its HMAC):
/// the error says so, so a user with the right password restores the file instead of
/// hunting for another password. Nothing is written to the file.
#[test]
fn a_damaged_first_page_reads_as_a_wrong_password_that_mentions_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    Database::open(&path, OpenOptions::with_password("pw"))
        .unwrap()
        .insert("c", [("n", 1)])
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let e = Database::open(&path, OpenOptions::with_password("pw")).unwrap_err();
    assert!(
        matches!(&e, Error::Open(OpenError::WrongPassword { .. })),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains("damaged") && message.contains("backup"),
        "{message}"
    );
    assert_eq!(file_bytes(&path), bytes, "the damaged file was changed");
}
