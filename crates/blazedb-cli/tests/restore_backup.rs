//! A client database restored from a file copy (a backup put back over the live file) syncs
//! through a relay again without losing anything that reached the relay before the restore:
//! the relay gets the client's new writes even once its feed is past the relay's cursor
//! again, and the client gets back its own writes that the restore took from it. Separate
//! processes over real sockets: `blazedb serve`, `blazedb put`, `blazedb sync --once`.

mod net_common;

use std::path::Path;

use net_common::{blazedb, export, put, start_relay};

fn put_n(db: &Path, label: &str, n: usize) {
    for i in 0..n {
        put(db, "notes", &format!(r#"{{"label": "{label}", "i": {i}}}"#));
    }
}

fn sync_once(db: &Path, url: &str) {
    let out = blazedb()
        .arg("sync")
        .arg(db)
        .args([url, "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sync --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn labelled(db: &Path, label: &str) -> usize {
    export(db, "notes")
        .values()
        .filter(|r| r["label"] == label)
        .count()
}

/// Copy `db` (closed: no process has it open) and its WAL, if any, to `to`.
fn copy_db(db: &Path, to: &Path) {
    std::fs::copy(db, to).unwrap();
    let wal = db.with_extension("db-wal");
    let to_wal = to.with_extension("db-wal");
    let _ = std::fs::remove_file(&to_wal);
    if wal.exists() {
        std::fs::copy(&wal, &to_wal).unwrap();
    }
    let _ = std::fs::remove_file(to.with_extension("db-shm"));
}

#[test]
fn a_client_restored_from_a_backup_loses_nothing_that_reached_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay(&dir.path().join("relay"), &[], None);
    let (client, other) = (dir.path().join("client.db"), dir.path().join("other.db"));
    let backup = dir.path().join("backup.db");

    put_n(&client, "before", 2);
    sync_once(&client, &url);
    copy_db(&client, &backup);
    put_n(&client, "lost", 3);
    sync_once(&client, &url);

    // The backup goes back in place of the file; the client writes more than it lost, so its
    // feed is past the relay's cursor for it again.
    copy_db(&backup, &client);
    assert_eq!(labelled(&client, "lost"), 0);
    put_n(&client, "after", 6);
    sync_once(&client, &url);
    assert_eq!(
        labelled(&client, "lost"),
        3,
        "the client got its lost writes back"
    );

    // Everything reached the relay: a new client gets it all from there.
    sync_once(&other, &url);
    for (label, n) in [("before", 2), ("lost", 3), ("after", 6)] {
        assert_eq!(labelled(&other, label), n, "{label}");
    }
    assert_eq!(export(&client, "notes"), export(&other, "notes"));
}
