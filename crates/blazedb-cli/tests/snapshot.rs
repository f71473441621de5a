//! `blazedb snapshot export` then `import` seeds a copy offline: it equals the source, a bad
//! file changes nothing, and a later `sync --once` with the source moves none of the
//! snapshotted data.

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

fn export(db: &str, collection: &str) -> Vec<Json> {
    let mut rows = lines(&blazedb(&["export", db, collection]).1);
    rows.sort_by_key(|r| r["_id"].as_str().unwrap().to_owned());
    rows
}

#[test]
fn export_import_then_sync_moves_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (a, b, file) = (path("a.db"), path("b.db"), path("a.blzsnap"));
    let rows: String = (0..500)
        .map(|i| format!("{{\"title\": \"note {i}\", \"n\": {i}}}\n"))
        .collect();
    std::fs::write(path("rows.jsonl"), rows).unwrap();
    assert!(blazedb(&["import", &a, "notes", &path("rows.jsonl")]).0);
    let (ok, out, _) = blazedb(&["put", &a, "notes", r#"{"title": "gone"}"#]);
    assert!(ok);
    let gone = out.trim().trim_matches('"').to_owned();
    assert!(blazedb(&["delete", &a, "notes", &gone]).0);

    let (ok, out, err) = blazedb(&["snapshot", "export", &a, &file]);
    assert!(ok, "{err}");
    let exported = &lines(&out)[0];
    assert_eq!(exported["records"], 501, "{exported}");

    let (ok, out, err) = blazedb(&["snapshot", "import", &b, &file]);
    assert!(ok, "{err}");
    let imported = lines(&out);
    assert_eq!(imported.len(), 1, "one JSON line: {out}");
    let r = &imported[0];
    assert_eq!(r["records"], 501, "{r}");
    assert!(r["cells"].as_u64().unwrap() >= 1500, "{r}");
    assert_eq!(r["position"], exported["position"], "{r}");
    assert_eq!(
        r["bytes"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(export(&a, "notes"), export(&b, "notes"));

    // A change after the export travels; the snapshotted data does not travel again.
    assert!(blazedb(&["put", &a, "notes", r#"{"title": "after"}"#]).0);
    let (ok, out, err) = blazedb(&["sync", &a, &b, "--once"]);
    assert!(ok, "{err}");
    let s = &lines(&out)[0];
    // The new record is two cells ($record and title): none of the snapshot is sent again.
    assert_eq!(s["a_to_b"]["cells_sent"], 2, "only the new record: {s}");
    assert_eq!(s["a_to_b"]["cells_applied"], 2, "{s}");
    // B holds nothing A lacks, and sends none of A's own cells back (it did, all of them:
    // A never got an ACK for the file, which looked like A restored from an older copy).
    assert_eq!(s["b_to_a"]["cells_sent"], 0, "{s}");
    assert_eq!(s["b_to_a"]["cells_applied"], 0, "{s}");
    assert_eq!(export(&a, "notes"), export(&b, "notes"));
}

#[test]
fn a_bad_snapshot_file_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (a, b, file) = (path("a.db"), path("b.db"), path("a.blzsnap"));
    for i in 0..50 {
        assert!(blazedb(&["put", &a, "notes", &format!("{{\"n\": {i}}}")]).0);
    }
    assert!(blazedb(&["snapshot", "export", &a, &file]).0);
    assert!(blazedb(&["put", &b, "notes", r#"{"mine": true}"#]).0);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 20]).unwrap();
    let (ok, out, err) = blazedb(&["snapshot", "import", &b, &file]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(
        err.starts_with("error: ") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(export(&b, "notes").len(), 1);

    // Into a new path, the failed import leaves no empty database behind.
    let (ok, _, err) = blazedb(&["snapshot", "import", &path("fresh.db"), &file]);
    assert!(!ok);
    assert!(err.contains("truncated"), "{err}");
    for name in ["fresh.db", "fresh.db-wal", "fresh.db-shm"] {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }

    let (ok, _, err) = blazedb(&["snapshot", "import", &path("new.db"), &path("missing")]);
    assert!(!ok);
    assert!(err.contains("cannot open snapshot file"), "{err}");
    assert!(
        !dir.path().join("new.db").exists(),
        "no empty database left behind"
    );
}

/// `snapshot export` onto the database itself (or its WAL) would rename the snapshot over
/// it: refused, and the database still reads; a directory as the target is refused too,
/// with no `.partial` file left behind. So is any existing file that is not a snapshot
/// (another database, by a slip of the arguments), while an older snapshot is replaced.
#[test]
fn a_snapshot_never_replaces_its_database_or_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sn.db");
    let db = db.to_str().unwrap();
    assert!(blazedb(&["put", db, "c", r#"{"a": 1}"#]).0);
    let wal = format!("{db}-wal");
    for target in [db, wal.as_str()] {
        let (ok, _, err) = blazedb(&["snapshot", "export", db, target]);
        assert!(!ok, "{target}");
        assert!(err.contains("the database's own file"), "{err}");
    }
    assert_eq!(export(db, "c").len(), 1, "the database still reads");
    let (ok, _, err) = blazedb(&["snapshot", "export", db, dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is a directory"), "{err}");
    let partial = std::fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    });
    assert!(!partial, "a .partial file was left behind");

    let other = dir.path().join("other.db");
    let other = other.to_str().unwrap();
    assert!(blazedb(&["put", other, "c", r#"{"b": 2}"#]).0);
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "keep me").unwrap();
    for target in [other, notes.to_str().unwrap()] {
        let (ok, _, err) = blazedb(&["snapshot", "export", db, target]);
        assert!(!ok, "{target}");
        assert!(err.contains("exists and is not a snapshot file"), "{err}");
    }
    assert_eq!(export(other, "c").len(), 1, "the other database is intact");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me");
    let snap = dir.path().join("x.snap");
    let snap = snap.to_str().unwrap();
    assert!(blazedb(&["snapshot", "export", db, snap]).0);
    assert!(blazedb(&["put", db, "c", r#"{"a": 2}"#]).0);
    let (ok, out, err) = blazedb(&["snapshot", "export", db, snap]);
    assert!(ok, "an older snapshot is replaced: {err}");
    assert_eq!(lines(&out)[0]["records"], 2);
    let (ok, _, err) = blazedb(&["snapshot", "export", db, "/nonexistent-dir/x.snap"]);
    assert!(!ok);
    assert!(
        err.contains("cannot write the snapshot file /nonexistent-dir/x.snap"),
        "{err}"
    );
}

/// A snapshot holds every record in clear, even of an encrypted database: it is created
/// readable by its owner only, also over a stale `.partial` or an old snapshot left readable.
#[cfg(unix)]
#[test]
fn a_snapshot_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secret.db");
    let file = dir.path().join("secret.snap");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN)
            .args(args)
            .env("BLAZEDB_PASSWORD", "pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "put".as_ref(),
        db.as_os_str(),
        "c".as_ref(),
        r#"{"a": 1}"#.as_ref(),
    ]);
    let everyone = std::fs::Permissions::from_mode(0o644);
    std::fs::write(&file, "BLZSNAP1, an old snapshot").unwrap();
    std::fs::set_permissions(&file, everyone.clone()).unwrap();
    let partial = dir.path().join("secret.snap.partial");
    std::fs::write(&partial, "stale").unwrap();
    std::fs::set_permissions(&partial, everyone).unwrap();
    run(&[
        "snapshot".as_ref(),
        "export".as_ref(),
        db.as_os_str(),
        file.as_os_str(),
    ]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

/// A partial replica's snapshot file, imported into a full copy that had received a record
/// from it which has since left the replica's view: the record missing from the file is not
/// evicted (the file says its writer holds part of the data only), and the full copy still
/// equals the origin after syncing with it. Evicted, the full copy got back only the change
/// that took the record out of the view, and kept a record of one field for good.
#[test]
fn a_partial_replicas_file_evicts_nothing_from_a_full_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (o, p, d, file) = (path("o.db"), path("p.db"), path("d.db"), path("p.blzsnap"));
    let put = |db: &str, json: &str| {
        let (ok, out, err) = blazedb(&["put", db, "bugs", json]);
        assert!(ok, "{err}");
        out.trim().trim_matches('"').to_owned()
    };
    let sync = |a: &str, b: &str, filter: Option<&str>| {
        let mut args = vec!["sync", a, b, "--once"];
        if let Some(f) = filter {
            args.extend(["--where", f]);
        }
        let (ok, _, err) = blazedb(&args);
        assert!(ok, "{err}");
    };
    let open_only = Some(r#"status == "open""#);
    let crash = put(&o, r#"{"title": "crash", "status": "open", "prio": 5}"#);
    put(&o, r#"{"title": "typo", "status": "closed", "prio": 1}"#);
    sync(&p, &o, open_only);
    sync(&d, &p, None);
    sync(&d, &o, None);
    assert_eq!(export(&d, "bugs"), export(&o, "bugs"));
    // The crash leaves the replica's view, and the replica evicts it.
    let (ok, _, err) = blazedb(&["update", &o, "bugs", &crash, r#"{"status": "closed"}"#]);
    assert!(ok, "{err}");
    sync(&p, &o, open_only);
    assert!(export(&p, "bugs").is_empty());

    let (ok, out, err) = blazedb(&["snapshot", "export", &p, &file]);
    assert!(ok, "{err}");
    assert_eq!(lines(&out)[0]["partial"], true, "{out}");
    let (ok, out, err) = blazedb(&["snapshot", "import", &d, &file]);
    assert!(ok, "{err}");
    assert_eq!(lines(&out)[0]["evicted"], 0, "{out}");
    sync(&d, &o, None);
    assert_eq!(export(&d, "bugs"), export(&o, "bugs"));
    // A whole copy's file still says it is one.
    let (ok, out, err) = blazedb(&["snapshot", "export", &o, &path("o.blzsnap")]);
    assert!(ok, "{err}");
    assert_eq!(lines(&out)[0]["partial"], false, "{out}");
}

/// The source of a snapshot file restored from an older backup before it ever synced with
/// the copy seeded from the file: the copy gives it back its own writes that the restore
/// took (its feed is shorter than what the file held). Sending nothing back to the source is
/// right only while its feed still reaches the file's position.
#[test]
fn a_restored_source_gets_its_writes_back_from_a_copy_seeded_by_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (a, b, file, backup) = (
        path("a.db"),
        path("b.db"),
        path("a.blzsnap"),
        path("old.db"),
    );
    let put = |db: &str, json: &str| assert!(blazedb(&["put", db, "notes", json]).0);
    put(&a, r#"{"n": 1}"#);
    // A backup of `a` with one record (closed files: the database and its WAL).
    std::fs::copy(&a, &backup).unwrap();
    if std::path::Path::new(&format!("{a}-wal")).exists() {
        std::fs::copy(format!("{a}-wal"), format!("{backup}-wal")).unwrap();
    }
    put(&a, r#"{"n": 2}"#);
    put(&a, r#"{"n": 3}"#);
    let (ok, _, err) = blazedb(&["snapshot", "export", &a, &file]);
    assert!(ok, "{err}");
    let (ok, _, err) = blazedb(&["snapshot", "import", &b, &file]);
    assert!(ok, "{err}");
    // `a` is put back from the backup: it lost records 2 and 3.
    std::fs::copy(&backup, &a).unwrap();
    let _ = std::fs::remove_file(format!("{a}-wal"));
    let _ = std::fs::remove_file(format!("{a}-shm"));
    if std::path::Path::new(&format!("{backup}-wal")).exists() {
        std::fs::copy(format!("{backup}-wal"), format!("{a}-wal")).unwrap();
    }
    assert_eq!(export(&a, "notes").len(), 1);
    let (ok, _, err) = blazedb(&["sync", &b, &a, "--once"]);
    assert!(ok, "{err}");
    assert_eq!(
        export(&a, "notes").len(),
        3,
        "the restore's losses came back"
    );
    assert_eq!(export(&a, "notes"), export(&b, "notes"));
}
