//! A database file restored from an older copy of itself (a backup put back in place of the
//! live file) syncs again without losing anything that reached a peer before the restore:
//!
//! - the peers get the restored node's new commits, even when they sit at feed positions the
//!   peers already received from the lost history (its feed went past their cursors again);
//! - the restored node gets back its own writes that were lost with the newer file, from the
//!   peers that hold them (they otherwise never send a node the cells that came from it).

mod common;

use std::path::{Path, PathBuf};

use blazedb::sync::{Session, SessionConfig, SyncMode};
use blazedb::{Database, PeerDirection, Value};
use common::{dump, open, sync_pair};

fn both() -> SessionConfig {
    SessionConfig {
        mode: SyncMode::Both,
        ..SessionConfig::default()
    }
}

/// The files of database `name` in `dir` (the database and its WAL).
fn files(dir: &Path, name: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{name}.db")),
        dir.join(format!("{name}.db-wal")),
    ]
}

/// Copy the closed database `name`'s files to `to` (a backup as a file copy takes it).
fn back_up(dir: &Path, name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in files(dir, name) {
        if f.exists() {
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Put the backup in `from` back in place of the closed database `name`: copied over the
/// database file (which keeps its inode and birth time, and so its node id: a backup put
/// back as a new file is a device of its own, `copied_file.rs`), its WAL replaced.
fn restore(dir: &Path, name: &str, from: &Path) {
    let [db, wal] = files(dir, name);
    let _ = std::fs::remove_file(&wal);
    let _ = std::fs::remove_file(dir.join(format!("{name}.db-shm")));
    std::fs::copy(from.join(db.file_name().unwrap()), &db).unwrap();
    let saved_wal = from.join(wal.file_name().unwrap());
    if saved_wal.exists() {
        std::fs::copy(&saved_wal, &wal).unwrap();
    }
}

fn insert_n(db: &Database, label: &str, n: i64) {
    for i in 0..n {
        db.insert("c", [("label", Value::from(label)), ("i", Value::Int(i))])
            .unwrap();
    }
}

/// How many records of `c` carry `label`.
fn count_label(db: &Database, label: &str) -> usize {
    dump(db)
        .iter()
        .filter(|(_, _, fields)| fields.contains(&format!("\"{label}\"")))
        .count()
}

/// A and B in sync; A backed up, then A writes `lost` records that reach B; A is restored
/// from the backup. Returns (dir, a, b) with A reopened on the restored file.
fn restored_after_lost_writes(lost: i64) -> (tempfile::TempDir, Database, Database) {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    insert_n(&a, "before", 2);
    insert_n(&b, "from-b", 2);
    sync_pair(&a, &b, both(), both());
    drop(a);
    back_up(dir.path(), "a", &backup);
    let a = open(dir.path(), "a");
    insert_n(&a, "lost", lost);
    sync_pair(&a, &b, both(), both());
    assert_eq!(count_label(&b, "lost"), lost as usize);
    drop(a);
    restore(dir.path(), "a", &backup);
    let a = open(dir.path(), "a");
    assert_eq!(count_label(&a, "lost"), 0, "the restore took A back");
    assert_eq!(
        a.copied_from(),
        None,
        "restored in place, A is the same node"
    );
    (dir, a, b)
}

#[test]
fn a_restored_node_whose_feed_went_past_its_peers_cursor_reaches_them() {
    let (_dir, a, b) = restored_after_lost_writes(3);
    // More commits than were lost: A's feed is now past where B's cursor for it stands, at
    // positions B already received from the lost history.
    insert_n(&a, "after", 6);
    assert!(a.last_seq().unwrap() > b.peer_cursor(a.node_id(), PeerDirection::Received).unwrap());
    sync_pair(&a, &b, both(), both());
    assert_eq!(
        count_label(&b, "after"),
        6,
        "B got A's commits after the restore"
    );
    assert_eq!(
        count_label(&a, "lost"),
        3,
        "A got back its writes that B held"
    );
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_restored_node_gets_back_its_own_writes_that_reached_a_peer() {
    let (_dir, a, b) = restored_after_lost_writes(3);
    // A's feed is shorter than B's cursor for it (the case B detects from HELLO alone).
    sync_pair(&a, &b, both(), both());
    assert_eq!(
        count_label(&a, "lost"),
        3,
        "A got back its writes that B held"
    );
    assert_eq!(dump(&a), dump(&b));
    // And from then on both sides are back to sending only what is new.
    insert_n(&a, "next", 1);
    let moved = sync_pair(&a, &b, both(), both());
    assert!(moved.b_to_a < 200, "{moved:?}");
    assert!(moved.a_to_b < 300, "{moved:?}");
}

#[test]
fn a_restored_receiver_gets_back_its_own_writes_and_what_it_had_received() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    insert_n(&a, "before", 2);
    sync_pair(&a, &b, both(), both());
    drop(b);
    back_up(dir.path(), "b", &backup);
    let b = open(dir.path(), "b");
    insert_n(&a, "from-a", 4);
    insert_n(&b, "lost-b", 2);
    sync_pair(&a, &b, both(), both());
    drop(b);
    restore(dir.path(), "b", &backup);
    let b = open(dir.path(), "b");
    assert_eq!(count_label(&b, "from-a"), 0);
    assert_eq!(count_label(&b, "lost-b"), 0);
    sync_pair(&a, &b, both(), both());
    assert_eq!(count_label(&b, "from-a"), 4);
    assert_eq!(
        count_label(&b, "lost-b"),
        2,
        "B got back its writes that A held"
    );
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_resync_without_a_restore_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    insert_n(&a, "a", 50);
    insert_n(&b, "b", 50);
    sync_pair(&a, &b, both(), both());
    // Each side's record of the other's ACKs is what the other holds of its feed (else the
    // next SUBSCRIBE looks like a restored file's, and gets its own changes back).
    for (x, y) in [(&a, &b), (&b, &a)] {
        assert_eq!(
            x.peer_cursor(y.node_id(), PeerDirection::Acked).unwrap(),
            y.peer_cursor(x.node_id(), PeerDirection::Received).unwrap(),
        );
    }
    drop((a, b));
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let moved = sync_pair(&a, &b, both(), both());
    assert!(moved.a_to_b < 120 && moved.b_to_a < 120, "{moved:?}");
}

#[test]
fn a_peer_told_it_holds_more_of_a_feed_acknowledges_it() {
    // B passes over the positions its applies of A's units took (they hold A's own changes)
    // and tells A with a CAUGHT_UP once a second. A acknowledges that position like a unit:
    // B's record of A's ACKs must keep up with A's cursor, or A's next SUBSCRIBE looks like
    // a restored file's and gets its own changes sent back.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let mut sa = Session::new(&a, both(), 0).unwrap();
    let mut sb = Session::new(&b, both(), 0).unwrap();
    let mut now = 0;
    for round in 0..4 {
        insert_n(&a, &format!("round-{round}"), 1);
        now += 1_500;
        for _ in 0..20 {
            while let Some(f) = sa.poll_transmit(now, &a) {
                sb.handle_bytes(now, &f, &b).unwrap();
            }
            while let Some(f) = sb.poll_transmit(now, &b) {
                sa.handle_bytes(now, &f, &a).unwrap();
            }
        }
    }
    let received = a.peer_cursor(b.node_id(), PeerDirection::Received).unwrap();
    assert!(
        received > blazedb::Seq(0),
        "B's CAUGHT_UPs moved A's cursor"
    );
    assert_eq!(
        b.peer_cursor(a.node_id(), PeerDirection::Acked).unwrap(),
        received
    );
    drop((sa, sb));
    // The next session sends nothing back (HELLO, SUBSCRIBE, CAUGHT_UP and ACKs: 60 bytes).
    let moved = sync_pair(&a, &b, both(), both());
    assert!(moved.b_to_a <= 60, "{moved:?}");
}
