//! Peer cursors noted by sync sessions (acknowledged, and received without a unit) are
//! stored together: nothing is written per note, one transaction stores every noted cursor
//! once the oldest has waited `ACK_PERSIST_INTERVAL_MS`, and the handle that noted them reads
//! them at once. A write of the cursor itself (explicit, or a unit's with its data) replaces
//! a note. A second handle on the same file (another connection, as another process would
//! have) shows what the file holds.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blazedb::limits::ACK_PERSIST_INTERVAL_MS;
use blazedb::sync::{Session, SessionConfig};
use blazedb::{Database, GcOptions, NodeId, OpenOptions, PeerDirection, Seq, StagedParts};

const T0: u64 = 1_700_000_000_000;

fn open_at(path: &std::path::Path, clock: &Arc<AtomicU64>) -> Database {
    let c = clock.clone();
    Database::open(
        path,
        OpenOptions {
            wall_clock: Arc::new(move || c.load(Ordering::SeqCst)),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn peer(i: u32) -> NodeId {
    let mut id = [0xA0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    NodeId(id)
}

/// (peer, acked) of every peer the file holds, as another connection reads it.
fn stored_acked(other: &Database) -> Vec<(NodeId, Seq)> {
    other
        .peers()
        .unwrap()
        .into_iter()
        .filter(|p| p.acked > Seq(0))
        .map(|p| (p.node, p.acked))
        .collect()
}

#[test]
fn a_thousand_sessions_notes_are_one_write_once_the_oldest_has_waited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let clock = Arc::new(AtomicU64::new(T0));
    let db = open_at(&path, &clock);
    let other = open_at(&path, &clock);
    for round in 1..=3u64 {
        for i in 0..1_000 {
            db.note_peer_cursor(
                peer(i),
                PeerDirection::Acked,
                Seq(round * 10 + u64::from(i)),
            )
            .unwrap();
        }
        clock.fetch_add(ACK_PERSIST_INTERVAL_MS / 4, Ordering::SeqCst);
    }
    // This handle sees the latest notes; the file holds none of them yet.
    assert_eq!(
        db.peer_cursor(peer(7), PeerDirection::Acked).unwrap(),
        Seq(37)
    );
    let listed = db.peers().unwrap();
    assert_eq!(listed.len(), 1_000);
    assert!(
        listed.windows(2).all(|w| w[0].node < w[1].node),
        "sorted by node"
    );
    assert_eq!(listed[7].acked, Seq(37));
    assert_eq!(
        other.peer_cursor(peer(7), PeerDirection::Acked).unwrap(),
        Seq(0)
    );
    assert!(stored_acked(&other).is_empty(), "a note wrote to the file");

    // The first note once the oldest has waited the interval stores them all.
    clock.store(T0 + ACK_PERSIST_INTERVAL_MS, Ordering::SeqCst);
    db.note_peer_cursor(peer(0), PeerDirection::Acked, Seq(99))
        .unwrap();
    let stored = stored_acked(&other);
    assert_eq!(stored.len(), 1_000);
    assert!(stored.iter().all(|(p, c)| *c
        == if *p == peer(0) {
            Seq(99)
        } else {
            db.peer_cursor(*p, PeerDirection::Acked).unwrap()
        }));
    assert_eq!(
        other.peer_cursor(peer(7), PeerDirection::Acked).unwrap(),
        Seq(37)
    );
    let info = other.peers().unwrap();
    assert!(
        info.iter().all(|p| p.last_contact_ms >= T0),
        "{:?}",
        info[0]
    );

    // The interval starts again with the next note.
    clock.fetch_add(10, Ordering::SeqCst);
    db.note_peer_cursor(peer(1), PeerDirection::Acked, Seq(500))
        .unwrap();
    assert_eq!(
        other.peer_cursor(peer(1), PeerDirection::Acked).unwrap(),
        Seq(31)
    );
    db.store_noted_cursors().unwrap();
    assert_eq!(
        other.peer_cursor(peer(1), PeerDirection::Acked).unwrap(),
        Seq(500)
    );
}

#[test]
fn an_explicit_write_or_forgetting_the_peer_replaces_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let clock = Arc::new(AtomicU64::new(T0));
    let db = open_at(&path, &clock);
    let other = open_at(&path, &clock);
    db.note_peer_cursor(peer(1), PeerDirection::Acked, Seq(50))
        .unwrap();
    db.set_peer_cursor(peer(1), PeerDirection::Acked, Seq(10))
        .unwrap();
    assert_eq!(
        db.peer_cursor(peer(1), PeerDirection::Acked).unwrap(),
        Seq(10)
    );
    db.note_peer_cursor(peer(2), PeerDirection::Acked, Seq(20))
        .unwrap();
    assert!(!db.forget_peer(peer(2)).unwrap(), "peer 2 was never stored");
    assert_eq!(
        db.peer_cursor(peer(2), PeerDirection::Acked).unwrap(),
        Seq(0)
    );
    db.store_noted_cursors().unwrap();
    assert_eq!(stored_acked(&other), vec![(peer(1), Seq(10))]);
}

#[test]
fn dropping_the_handle_or_collecting_garbage_stores_the_notes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let clock = Arc::new(AtomicU64::new(T0));
    let other = open_at(&path, &clock);
    {
        let db = open_at(&path, &clock);
        db.note_peer_cursor(peer(3), PeerDirection::Acked, Seq(30))
            .unwrap();
        assert!(stored_acked(&other).is_empty());
    }
    assert_eq!(stored_acked(&other), vec![(peer(3), Seq(30))]);

    let db = open_at(&path, &clock);
    db.note_peer_cursor(peer(4), PeerDirection::Acked, Seq(40))
        .unwrap();
    db.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        stored_acked(&other),
        vec![(peer(3), Seq(30)), (peer(4), Seq(40))]
    );
}

#[test]
fn a_session_that_ends_stores_what_its_peer_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(T0));
    let a = open_at(&dir.path().join("a.db"), &clock);
    let b = open_at(&dir.path().join("b.db"), &clock);
    let a_file = open_at(&dir.path().join("a.db"), &clock);
    for i in 0..20 {
        a.insert("notes", [("n", i as i64)]).unwrap();
    }
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    common::pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(b.count("notes").unwrap(), 20);
    // The peer is new: GC was held for it at its SUBSCRIBE, at what it held then, nothing
    // (stored then, for GC through any handle). The ACKs after it are only noted.
    let subscribed_at = Seq(0);
    for i in 20..25 {
        a.insert("notes", [("n", i as i64)]).unwrap();
    }
    common::pump(&a, &mut sa, &b, &mut sb);
    let head = a.last_seq().unwrap();
    assert_eq!(
        a.peer_cursor(b.node_id(), PeerDirection::Acked).unwrap(),
        head
    );
    assert_eq!(
        a_file
            .peer_cursor(b.node_id(), PeerDirection::Acked)
            .unwrap(),
        subscribed_at,
        "stored at an ACK: expected only noted"
    );
    sa.close(0, &a, blazedb::sync::ErrorCode::ShuttingDown, "done");
    assert_eq!(
        a_file
            .peer_cursor(b.node_id(), PeerDirection::Acked)
            .unwrap(),
        head
    );
}

#[test]
fn a_unit_that_stores_the_received_cursor_replaces_an_older_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let clock = Arc::new(AtomicU64::new(T0));
    let db = open_at(&path, &clock);
    let other = open_at(&path, &clock);
    let from = peer(9);
    db.note_peer_cursor(from, PeerDirection::Received, Seq(100))
        .unwrap();
    assert_eq!(
        db.peer_cursor(from, PeerDirection::Received).unwrap(),
        Seq(100)
    );
    assert_eq!(
        other.peer_cursor(from, PeerDirection::Received).unwrap(),
        Seq(0)
    );
    let info = db.peers().unwrap();
    assert_eq!((info[0].received, info[0].acked), (Seq(100), Seq(0)));
    db.apply_unit(from, StagedParts::NONE, Vec::new(), Some(Seq(150)), None)
        .unwrap();
    db.store_noted_cursors().unwrap();
    // Storing the note after the unit would have moved the cursor back to 100.
    assert_eq!(
        other.peer_cursor(from, PeerDirection::Received).unwrap(),
        Seq(150)
    );
}

#[test]
fn noting_storing_reading_and_forgetting_from_many_threads_neither_deadlocks_nor_loses_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let clock = Arc::new(AtomicU64::new(T0));
    let db = Arc::new(open_at(&path, &clock));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    // Four "sessions" noting both directions, the clock moving so that notes also store.
    for t in 0..4u32 {
        let (db, clock, done) = (db.clone(), clock.clone(), done_tx.clone());
        threads.push(std::thread::spawn(move || {
            for k in 1..=500u64 {
                let p = peer(t * 10 + (k % 3) as u32);
                db.note_peer_cursor(p, PeerDirection::Acked, Seq(k))
                    .unwrap();
                db.note_peer_cursor(p, PeerDirection::Received, Seq(k))
                    .unwrap();
                clock.fetch_add(7, Ordering::SeqCst);
            }
            done.send(()).unwrap();
        }));
    }
    // Readers, GC, an explicit write and forgetting a peer nobody notes, all the while.
    {
        let (db, done) = (db.clone(), done_tx.clone());
        threads.push(std::thread::spawn(move || {
            for k in 0..200u64 {
                db.peers().unwrap();
                db.peer_cursor(peer(1), PeerDirection::Acked).unwrap();
                if k % 20 == 0 {
                    db.gc(&GcOptions::default()).unwrap();
                }
                db.set_peer_cursor(peer(999), PeerDirection::Acked, Seq(k))
                    .unwrap();
                db.forget_peer(peer(998)).unwrap();
                db.store_noted_cursors().unwrap();
            }
            done.send(()).unwrap();
        }));
    }
    drop(done_tx);
    for _ in 0..threads.len() {
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a thread is stuck: lock order broken?");
    }
    for t in threads {
        t.join().unwrap();
    }
    db.store_noted_cursors().unwrap();
    let other = open_at(&path, &clock);
    // Each thread's last note per peer: k = 500, 499, 498 for k % 3 = 2, 1, 0.
    for t in 0..4u32 {
        for (r, last) in [(2u32, 500u64), (1, 499), (0, 498)] {
            let p = peer(t * 10 + r);
            for d in [PeerDirection::Acked, PeerDirection::Received] {
                assert_eq!(other.peer_cursor(p, d).unwrap(), Seq(last), "{t} {r} {d:?}");
            }
        }
    }
}
