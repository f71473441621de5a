//! A database file copied to a new file is a device of its own (`store/copied_file.rs`): its
//! first open gives it a node id of its own, so that it and the original, both syncing, lose
//! nothing of each other's writes. Moving, linking, rekeying or restoring a file in place
//! keeps its id.

mod common;

use std::path::Path;

use blazedb::sync::{SessionConfig, SyncMode};
use blazedb::{Database, OpenOptions, Patch, Query, Value};
use common::{dump, open, sync_pair};

fn both() -> SessionConfig {
    SessionConfig {
        mode: SyncMode::Both,
        ..SessionConfig::default()
    }
}

/// Copy the closed database `from` (and its WAL, if any) to the new file `to`, as `cp` does.
fn copy_db(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let wal = |p: &Path| p.with_extension("db-wal");
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

/// A file `a.db` in `dir` holding one record, closed, and its copy `copy.db`: the original's
/// node id and the copy's path.
fn file_and_copy(dir: &Path) -> (blazedb::NodeId, std::path::PathBuf) {
    let a = open(dir, "a");
    insert(&a, "one");
    let original = a.node_id();
    drop(a);
    let copy = dir.join("copy.db");
    copy_db(&dir.join("a.db"), &copy);
    (original, copy)
}

/// Options of a handle that only reads: it leaves a copy as it is.
fn looking() -> OpenOptions {
    OpenOptions {
        identify_copy: false,
        ..OpenOptions::default()
    }
}

fn labels(db: &Database) -> Vec<String> {
    let mut l: Vec<String> = db
        .query("c", &Query::default())
        .unwrap()
        .into_iter()
        .map(|r| match &r.fields["label"] {
            Value::Text(t) => t.clone(),
            other => panic!("label {other:?}"),
        })
        .collect();
    l.sort();
    l
}

fn insert(db: &Database, label: &str) {
    db.insert("c", [("label", Value::from(label))]).unwrap();
}

#[test]
fn a_copy_gets_a_node_id_of_its_own_at_its_first_open_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (original, _) = file_and_copy(dir.path());

    let copy = open(dir.path(), "copy");
    assert_ne!(copy.node_id(), original);
    assert_eq!(copy.copied_from(), Some(original));
    assert_eq!(labels(&copy), ["one"], "the copy holds what the file held");
    let own = copy.node_id();
    drop(copy);
    let copy = open(dir.path(), "copy");
    assert_eq!(copy.node_id(), own, "reopened, the copy keeps its new id");
    assert_eq!(copy.copied_from(), None);

    let a = open(dir.path(), "a");
    assert_eq!(a.node_id(), original, "the original keeps its id");
    assert_eq!(a.copied_from(), None, "the original is no copy");
}

#[test]
fn a_second_handle_opened_on_a_copy_meanwhile_gets_the_same_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = file_and_copy(dir.path());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let db = Database::open(&path, OpenOptions::default()).unwrap();
                (db.node_id(), db.copied_from())
            })
        })
        .collect();
    let opened: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ids: std::collections::BTreeSet<_> = opened.iter().map(|o| o.0).collect();
    assert_eq!(ids.len(), 1, "one new id for the copy: {opened:?}");
    assert_eq!(
        opened.iter().filter(|o| o.1.is_some()).count(),
        1,
        "one open gave it: {opened:?}"
    );
}

#[test]
fn a_file_renamed_linked_or_rekeyed_keeps_its_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    insert(&a, "one");
    let id = a.node_id();
    drop(a);

    std::fs::rename(dir.path().join("a.db"), dir.path().join("moved.db")).unwrap();
    let _ = std::fs::rename(dir.path().join("a.db-wal"), dir.path().join("moved.db-wal"));
    let moved = open(dir.path(), "moved");
    assert_eq!((moved.node_id(), moved.copied_from()), (id, None));
    drop(moved);

    #[cfg(unix)]
    {
        std::fs::hard_link(dir.path().join("moved.db"), dir.path().join("link.db")).unwrap();
        let linked = open(dir.path(), "link");
        assert_eq!((linked.node_id(), linked.copied_from()), (id, None));
        drop(linked);
        // (A rekey refuses a file with two names.)
        std::fs::remove_file(dir.path().join("link.db")).unwrap();
    }

    // A rekey writes a re-encrypted copy and renames it over the file.
    let mut db = open(dir.path(), "moved");
    db.rekey(Some("s3cret")).unwrap();
    assert_eq!(db.node_id(), id);
    drop(db);
    let db = Database::open(
        dir.path().join("moved.db"),
        OpenOptions::with_password("s3cret"),
    )
    .unwrap();
    assert_eq!((db.node_id(), db.copied_from()), (id, None));
    assert_eq!(labels(&db), ["one"]);
}

#[test]
fn a_backup_copied_over_the_live_file_keeps_its_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    insert(&a, "one");
    let id = a.node_id();
    drop(a);
    let backup = dir.path().join("backup.db");
    copy_db(&dir.path().join("a.db"), &backup);
    let a = open(dir.path(), "a");
    insert(&a, "two");
    drop(a);
    // `cp backup.db a.db`: written into the existing file (the same inode and birth time).
    let _ = std::fs::remove_file(dir.path().join("a.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("a.db-shm"));
    std::fs::copy(&backup, dir.path().join("a.db")).unwrap();
    let a = open(dir.path(), "a");
    assert_eq!(labels(&a), ["one"], "the backup's contents");
    assert_eq!(
        (a.node_id(), a.copied_from()),
        (id, None),
        "the same file, older: the protocol's restore rules take it from here"
    );
}

/// The case that lost writes: a file and its copy, both writing, synced through a third
/// database (a relay or another device). Under one node id the hub never sent either the
/// other's writes (they carried its own id), and took each one's feed for the other's.
#[test]
fn a_file_and_its_copy_both_writing_lose_nothing_through_a_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (a, hub) = (open(dir.path(), "a"), open(dir.path(), "hub"));
    insert(&a, "before");
    let shared = a
        .insert(
            "c",
            [("label", Value::from("shared")), ("n", Value::Int(0))],
        )
        .unwrap();
    sync_pair(&a, &hub, both(), both());
    drop(a);
    copy_db(&dir.path().join("a.db"), &dir.path().join("copy.db"));
    let (a, copy) = (open(dir.path(), "a"), open(dir.path(), "copy"));

    for i in 0..3 {
        insert(&a, &format!("a-{i}"));
        insert(&copy, &format!("copy-{i}"));
    }
    a.update("c", shared, Patch::new().set("n", 1)).unwrap();
    copy.update("c", shared, Patch::new().set("n", 2)).unwrap();
    for _ in 0..2 {
        sync_pair(&a, &hub, both(), both());
        sync_pair(&copy, &hub, both(), both());
    }
    let mut expected = vec!["before".to_owned(), "shared".to_owned()];
    for i in 0..3 {
        expected.push(format!("a-{i}"));
        expected.push(format!("copy-{i}"));
    }
    expected.sort();
    for db in [&a, &copy, &hub] {
        assert_eq!(
            labels(db),
            expected,
            "every write reached {}",
            db.path().display()
        );
    }
    assert_eq!(dump(&a), dump(&hub));
    assert_eq!(dump(&copy), dump(&hub));
    // The concurrent updates of one field: one won everywhere, the other is on record where
    // the winner overwrote it (which copy that is depends on which update won).
    let recorded: usize = [&a, &copy, &hub]
        .iter()
        .map(|db| db.conflicts(Some("c")).unwrap().len())
        .sum();
    assert!(recorded >= 1, "the losing update is on record somewhere");
    assert_ne!(a.node_id(), copy.node_id());
}

/// A file of a build before stamps has none: its first open stamps it and keeps its id (a
/// copy made before then cannot be told apart); a copy made after is told apart.
#[test]
fn a_file_without_a_stamp_is_stamped_by_its_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let a = open(dir.path(), "a");
    insert(&a, "one");
    let id = a.node_id();
    drop(a);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        conn.execute("DELETE FROM meta WHERE key = 'file_stamp'", [])
            .unwrap(),
        1,
        "a new file is stamped"
    );
    drop(conn);
    let a = open(dir.path(), "a");
    assert_eq!((a.node_id(), a.copied_from()), (id, None));
    drop(a);
    copy_db(&path, &dir.path().join("copy.db"));
    let copy = open(dir.path(), "copy");
    assert_eq!(copy.copied_from(), Some(id));
}

/// A backup put back as a new file (the live one deleted first, or moved aside) is a new
/// device: it loses nothing that reached a peer, and the peer gets its new writes.
#[test]
fn a_backup_put_back_as_a_new_file_loses_nothing_that_reached_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    insert(&a, "before");
    insert(&b, "from-b");
    sync_pair(&a, &b, both(), both());
    let old_id = a.node_id();
    drop(a);
    let backup = dir.path().join("backup.db");
    copy_db(&dir.path().join("a.db"), &backup);
    let a = open(dir.path(), "a");
    insert(&a, "lost");
    sync_pair(&a, &b, both(), both());
    drop(a);
    for suffix in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("a.{suffix}")));
    }
    copy_db(&backup, &dir.path().join("a.db"));
    let a = open(dir.path(), "a");
    assert_eq!(a.copied_from(), Some(old_id));
    assert_eq!(labels(&a), ["before", "from-b"], "the backup's contents");
    insert(&a, "after");
    sync_pair(&a, &b, both(), both());
    assert_eq!(labels(&a), ["after", "before", "from-b", "lost"]);
    assert_eq!(dump(&a), dump(&b));
    // From then on only what is new moves.
    insert(&a, "next");
    let moved = sync_pair(&a, &b, both(), both());
    assert!(moved.a_to_b < 300 && moved.b_to_a < 300, "{moved:?}");
}

/// The same, over random interleavings of writes and syncs (each seed is one run): the
/// restore rules caught some of them under one id, not all.
#[test]
fn a_file_and_its_copy_converge_through_a_hub_whatever_the_order() {
    use rand::{Rng, SeedableRng};
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let (a, hub) = (open(dir.path(), "a"), open(dir.path(), "hub"));
        for i in 0..rng.gen_range(0..4) {
            insert(&a, &format!("early-{i}"));
        }
        sync_pair(&a, &hub, both(), both());
        drop(a);
        copy_db(&dir.path().join("a.db"), &dir.path().join("copy.db"));
        let dbs = [open(dir.path(), "a"), open(dir.path(), "copy")];
        let mut written = Vec::new();
        for step in 0..12 {
            let i = rng.gen_range(0..2);
            if rng.gen_bool(0.6) {
                for k in 0..rng.gen_range(1..4) {
                    let label = format!("{i}-{step}-{k}");
                    insert(&dbs[i], &label);
                    written.push(label);
                }
            } else {
                sync_pair(&dbs[i], &hub, both(), both());
            }
        }
        for _ in 0..2 {
            for db in &dbs {
                sync_pair(db, &hub, both(), both());
            }
        }
        for db in [&dbs[0], &dbs[1], &hub] {
            let have = labels(db);
            let lost: Vec<_> = written.iter().filter(|l| !have.contains(l)).collect();
            assert!(
                lost.is_empty(),
                "seed {seed}: {} lacks {lost:?}",
                db.path().display()
            );
        }
    }
}

/// A handle that only reads (`OpenOptions::identify_copy` off) leaves a copy as it is: a
/// look at a backup does not make it a new device before it is restored in place.
#[test]
fn an_open_that_does_not_identify_copies_leaves_a_copy_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (original, path) = file_and_copy(dir.path());
    let copy = Database::open(&path, looking()).unwrap();
    assert_eq!((copy.node_id(), copy.copied_from()), (original, None));
    assert_eq!(labels(&copy), ["one"]);
    drop(copy);
    let copy = open(dir.path(), "copy");
    assert_eq!(
        copy.copied_from(),
        Some(original),
        "the next open gives it its id"
    );
}

/// A rekey through a symbolic link re-encrypts the file the link leads to (renamed over the
/// link, the copy left the file in clear beside an encrypted twin with the same node id).
#[cfg(unix)]
#[test]
fn a_rekey_through_a_symbolic_link_replaces_the_file_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    insert(&a, "one");
    let id = a.node_id();
    drop(a);
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("a.db"), &link).unwrap();
    let mut db = Database::open(&link, OpenOptions::default()).unwrap();
    db.rekey(Some("s3cret")).unwrap();
    assert_eq!(labels(&db), ["one"]);
    drop(db);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        Database::open(dir.path().join("a.db"), OpenOptions::default()).is_err(),
        "the file itself is encrypted now"
    );
    for path in [dir.path().join("a.db"), link] {
        let db = Database::open(&path, OpenOptions::with_password("s3cret")).unwrap();
        assert_eq!((db.node_id(), db.copied_from()), (id, None));
        assert_eq!(labels(&db), ["one"]);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("rekey"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A file with a second name (a hard link) is not rekeyed: the other name would keep the
/// old file, under the old password, as a twin with the same node id.
#[cfg(unix)]
#[test]
fn a_rekey_of_a_file_with_two_names_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    insert(&a, "one");
    drop(a);
    std::fs::hard_link(dir.path().join("a.db"), dir.path().join("b.db")).unwrap();
    let mut db = open(dir.path(), "a");
    let e = db.rekey(Some("s3cret")).unwrap_err();
    assert!(
        matches!(e, blazedb::Error::InvalidArgument(_)) && e.to_string().contains("2 names"),
        "{e}"
    );
    insert(&db, "two");
    drop(db);
    let b = open(dir.path(), "b");
    assert_eq!(labels(&b), ["one", "two"], "still one file, unencrypted");
}

/// A rekey of a copy that a handle opened without giving it its id leaves the stamp it
/// carries: the next open still tells it is a copy.
#[test]
fn a_rekeyed_copy_not_yet_given_its_id_gets_it_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (original, path) = file_and_copy(dir.path());
    let mut copy = Database::open(&path, looking()).unwrap();
    copy.rekey(Some("s3cret")).unwrap();
    drop(copy);
    let copy = Database::open(&path, OpenOptions::with_password("s3cret")).unwrap();
    assert_eq!(copy.copied_from(), Some(original));
}
