//! A one-field update of an existing record, received over a session, commits one
//! transaction on the receiver that writes five pages (records, feed, history, feed_links,
//! peers: ARCHITECTURE.md, "Pages per commit"), each one WAL frame and, encrypted, one page
//! encryption and HMAC. Counted from the WAL frame headers, which SQLCipher leaves in clear.

mod common;

use std::path::Path;

use blazedb::sync::{Session, SessionConfig};
use blazedb::{Database, OpenOptions, Patch, Value};
use common::pump;

/// Size of the WAL's header, and of each frame's before its page.
const WAL_HEADER_BYTES: u64 = 32;
const FRAME_HEADER_BYTES: u64 = 24;

/// (frames, commits) in `wal` after byte `from`, and where the last whole frame ends.
fn frames_after(wal: &Path, from: u64) -> (u64, u64, u64) {
    let bytes = std::fs::read(wal).unwrap();
    let page = u64::from(u32::from_be_bytes(bytes[8..12].try_into().unwrap()));
    let frame = page + FRAME_HEADER_BYTES;
    let (mut at, mut frames, mut commits) = (from.max(WAL_HEADER_BYTES), 0, 0);
    while at + frame <= bytes.len() as u64 {
        let h = &bytes[at as usize..at as usize + FRAME_HEADER_BYTES as usize];
        // A commit's last frame holds the database size after it; the others hold 0.
        if u32::from_be_bytes(h[4..8].try_into().unwrap()) != 0 {
            commits += 1;
        }
        frames += 1;
        at += frame;
    }
    (frames, commits, at)
}

fn frames_per_received_update(options: fn() -> OpenOptions) {
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path().join("a.db"), options()).unwrap();
    let b = Database::open(dir.path().join("b.db"), options()).unwrap();
    let ids = a
        .transaction(|tx| {
            (0..500)
                .map(|i| {
                    tx.insert(
                        "bugs",
                        [
                            ("title", Value::from(format!("bug {i}"))),
                            ("status", "open".into()),
                            ("points", Value::from(i64::from(i % 13))),
                        ],
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    let cfg = SessionConfig {
        snapshot_new_peers: false,
        ..SessionConfig::default()
    };
    let mut sa = Session::new(&a, cfg.clone(), 0).unwrap();
    let mut sb = Session::new(&b, cfg, 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    let wal = dir.path().join("b.db-wal");
    let (_, _, mut at) = frames_after(&wal, 0);
    let updates = 100u64;
    let (mut frames, mut commits) = (0, 0);
    for k in 0..updates {
        // Each record once: its status cell is still at the insert's position.
        let id = ids[(k as usize * 3) % ids.len()];
        a.update("bugs", id, Patch::new().set("status", format!("s{k}")))
            .unwrap();
        pump(&a, &mut sa, &b, &mut sb);
        let (f, c, end) = frames_after(&wal, at);
        (frames, commits, at) = (frames + f, commits + c, end);
    }
    assert_eq!(commits, updates, "one commit per received unit");
    // Five per apply, and now and then a b-tree splits (a new leaf, its parent, page 1:
    // ~0.3 more a apply here, depending on where the random record ids fall). One more
    // b-tree written by every apply would make it six.
    assert!(
        frames >= 5 * updates && frames < 6 * updates,
        "{frames} frames for {updates} applies"
    );
}

#[test]
fn a_received_one_field_update_writes_five_pages() {
    frames_per_received_update(OpenOptions::default);
}

#[test]
fn a_received_one_field_update_writes_five_pages_encrypted() {
    frames_per_received_update(|| OpenOptions::with_password("pw"));
}
