//! A record whose cells at one feed position exceed a frame still syncs.
//!
//! Per-record limits bound local writes only: three writers that each add ~3.6 MB of fields
//! to one record concurrently merge, on any node, into a ~10.8 MB record, more than one frame
//! (`FRAME_BYTES_MAX`, 8 MiB) holds. A sender sent such a record whole, in one CHANGES frame or
//! one SNAPSHOT_CHUNK, and every receiver refused the frame (`TOO_LARGE`), again at each
//! reconnect: sync between the two stopped for good. Now the sender splits the record's cells
//! across several frames of one unit (or several chunks of the snapshot), and the receiver
//! joins them into one record at one local position.

mod common;

use blazedb::limits::FRAME_BYTES_MAX;
use blazedb::store::{SnapshotKey, SnapshotScope};
use blazedb::sync::snapshot::page_chunks;
use blazedb::sync::{Session, SessionConfig, SyncPolicy};
use blazedb::{Change, Database, Patch, RecordId, Seq, Value};
use common::{dump, open, pump_watching, sync_pair};

const ID: RecordId = RecordId([7; 16]);
/// Fields per writer and bytes per field: 3.6 MB a writer, under `RECORD_BYTES_MAX`
/// (4 MiB), and 10.8 MB merged, well over a frame.
const FIELDS: usize = 4;
const FIELD_BYTES: usize = 900_000;

/// Incompressible bytes (neither LZ4 nor zstd may shrink the record under a frame).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Each writer adds its own fields to the record `ID` of "docs".
fn grow(db: &Database, writer: &str, seed: u64) {
    let mut patch = Patch::new();
    for f in 0..FIELDS {
        patch = patch.set(
            format!("{writer}{f}"),
            Value::Bytes(noise(seed * 100 + f as u64, FIELD_BYTES)),
        );
    }
    db.update("docs", ID, patch).unwrap();
}

/// Three writers grow one record concurrently, then merge pairwise into the first, which
/// is returned with the directory holding every file.
fn merged(dir: &std::path::Path) -> Database {
    let (a, b, c) = (open(dir, "a"), open(dir, "b"), open(dir, "c"));
    a.insert_with_id("docs", ID, [("title", Value::from("big"))])
        .unwrap();
    a.insert("docs", [("title", Value::from("small"))]).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    sync_pair(&a, &c, SessionConfig::default(), SessionConfig::default());
    // Concurrently: no sync between these writes.
    grow(&a, "a", 1);
    grow(&b, "b", 2);
    grow(&c, "c", 3);
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    sync_pair(&a, &c, SessionConfig::default(), SessionConfig::default());
    let record = a.get("docs", ID).unwrap().unwrap();
    assert_eq!(record.fields.len(), 1 + 3 * FIELDS);
    a
}

/// Sync `from` to `to` with fresh sessions; returns the largest frame either side sent.
fn sync_watching(from: &Database, to: &Database, cf: SessionConfig, ct: SessionConfig) -> usize {
    let mut sf = Session::new(from, cf, 0).unwrap();
    let mut st = Session::new(to, ct, 0).unwrap();
    let mut largest = 0;
    pump_watching(from, &mut sf, to, &mut st, |f| {
        largest = largest.max(f.len())
    });
    largest
}

/// The cells of `ID` at each position of `db`'s feed.
fn feed_cells(db: &Database) -> Vec<(Seq, usize)> {
    let batch = db.changes_since(Seq(0), 1_000_000, None).unwrap();
    batch
        .changes
        .iter()
        .filter(|c| c.id == ID)
        .map(|c| (c.seq, c.cells.len()))
        .collect()
}

fn feed_only() -> SessionConfig {
    SessionConfig {
        snapshot_new_peers: false,
        ..SessionConfig::default()
    }
}

/// The merged record reaches a new peer by snapshot (chunks merged as they arrive), a replacing
/// snapshot (chunks staged, applied at the end, dropping what the sender let go) reaches a peer
/// that already holds it without losing a cell, and the feed carries it on from there, where
/// it sits at one position: every frame under the limit, every copy equal.
#[test]
fn a_merged_record_larger_than_a_frame_syncs_by_snapshot_and_by_feed() {
    let dir = tempfile::tempdir().unwrap();
    let a = merged(dir.path());

    // A new peer: a merge-only snapshot.
    let d = open(dir.path(), "d");
    let largest = sync_watching(&a, &d, SessionConfig::default(), SessionConfig::default());
    assert!(largest < FRAME_BYTES_MAX, "a frame of {largest} bytes");
    assert_eq!(dump(&d), dump(&a));
    // The pieces joined into one record at one position, more than a frame holds.
    let at = feed_cells(&d);
    assert_eq!(at.len(), 1, "{at:?}");

    // A new policy: a replacing snapshot, staged, to a peer that holds the record already.
    let docs_only = SessionConfig {
        policy: SyncPolicy {
            collections: Some(vec!["docs".into()]),
            ..SyncPolicy::default()
        },
        ..SessionConfig::default()
    };
    let largest = sync_watching(&a, &d, SessionConfig::default(), docs_only);
    assert!(largest < FRAME_BYTES_MAX, "a frame of {largest} bytes");
    assert_eq!(dump(&d), dump(&a));

    // On through the feed, from the copy that holds the record at one position.
    let e = open(dir.path(), "e");
    let largest = sync_watching(&d, &e, feed_only(), SessionConfig::default());
    assert!(largest < FRAME_BYTES_MAX, "a frame of {largest} bytes");
    assert_eq!(dump(&e), dump(&a));
    assert_eq!(feed_cells(&e), vec![(feed_cells(&e)[0].0, at[0].1)]);

    // And the merging node's own feed to a new peer that takes no snapshot.
    let f = open(dir.path(), "f");
    let largest = sync_watching(&a, &f, feed_only(), SessionConfig::default());
    assert!(largest < FRAME_BYTES_MAX, "a frame of {largest} bytes");
    assert_eq!(dump(&f), dump(&a));
}

/// The feed alone: a record imported from a snapshot file sits at one position of the
/// importer's feed, with more cells there than a frame holds; sending it on splits it across
/// CHANGES frames of one unit, and the receiver applies it as one commit.
#[test]
fn a_record_larger_than_a_frame_at_one_feed_position_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let a = merged(dir.path());
    let file = dir.path().join("a.blzsnap");
    let info = blazedb::sync::snapshot::write_snapshot_file(&a, &file).unwrap();
    // The record goes in pieces of about 2 MiB, each a chunk of its own: whole, a record
    // merged from more writers would outgrow what an import decompresses.
    assert!(info.chunks >= 5, "{} chunks", info.chunks);
    let d = open(dir.path(), "d");
    blazedb::sync::snapshot::import_snapshot_file(&d, &file).unwrap();
    assert_eq!(dump(&d), dump(&a));
    let at = feed_cells(&d);
    assert_eq!(at.len(), 1, "{at:?}");

    let e = open(dir.path(), "e");
    let largest = sync_watching(&d, &e, feed_only(), SessionConfig::default());
    assert!(largest < FRAME_BYTES_MAX, "a frame of {largest} bytes");
    assert_eq!(dump(&e), dump(&a));
    // One commit at the receiver, as at the sender.
    assert_eq!(feed_cells(&e).len(), 1);
}

/// A receiver given one record's cells as several changes of one commit (what the frames of
/// a split record decode to) ends up as with the record in one piece: the same record, the
/// same conflicts, and the record at one position of its feed.
#[test]
fn a_record_in_pieces_applies_as_in_one_piece() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(dir.path(), "src");
    let id = RecordId([3; 16]);
    src.insert_with_id("docs", id, [("x", Value::Int(0))])
        .unwrap();
    // Two receivers that hold the record and have written some of its fields concurrently.
    let (whole, pieces) = (open(dir.path(), "whole"), open(dir.path(), "pieces"));
    for r in [&whole, &pieces] {
        sync_pair(&src, r, SessionConfig::default(), SessionConfig::default());
    }
    let patch = |tag: &str| {
        (0..20).fold(Patch::new(), |p, f| {
            p.set(format!("f{f:02}"), Value::from(format!("{tag} {f}")))
        })
    };
    for r in [&whole, &pieces] {
        r.update(
            "docs",
            id,
            Patch::new().set("f03", "mine").set("f15", "mine"),
        )
        .unwrap();
    }
    src.update("docs", id, patch("src")).unwrap();
    let feed = src.changes_since(Seq(1), 1_000, None).unwrap().changes;
    assert_eq!(feed.len(), 1);
    let change = &feed[0];
    whole
        .apply_changes(src.node_id(), std::slice::from_ref(change), None)
        .unwrap();
    let split: Vec<Change> = change
        .cells
        .chunks(7)
        .map(|cells| Change {
            cells: cells.to_vec(),
            ..change.clone()
        })
        .collect();
    assert_eq!(split.len(), 3);
    pieces.apply_changes(src.node_id(), &split, None).unwrap();

    assert_eq!(dump(&pieces), dump(&whole));
    let conflicts = |db: &Database| {
        db.conflicts(None)
            .unwrap()
            .into_iter()
            .map(|c| (c.cell, c.winner, c.loser))
            .collect::<Vec<_>>()
    };
    assert_eq!(conflicts(&whole).len(), 2);
    assert_eq!(conflicts(&pieces), conflicts(&whole));
    let positions = |db: &Database| {
        db.changes_since(Seq(0), 1_000, None)
            .unwrap()
            .changes
            .into_iter()
            .map(|c| (c.seq, c.cells))
            .collect::<Vec<_>>()
    };
    assert_eq!(positions(&pieces), positions(&whole));
}

/// The message type of one frame (`varint body_len | type | flags | payload | crc`).
fn frame_kind(frame: &[u8]) -> u8 {
    let len_bytes = frame.iter().take_while(|b| **b & 0x80 != 0).count() + 1;
    frame[len_bytes]
}

/// Sync `from` to `to` until `chunks` SNAPSHOT_CHUNKs have arrived, then cut the connection.
fn sync_cut_after_chunks(
    from: &Database,
    to: &Database,
    cf: SessionConfig,
    ct: SessionConfig,
    chunks: usize,
) {
    const SNAPSHOT_CHUNK: u8 = 0x0C;
    let mut sf = Session::new(from, cf, 0).unwrap();
    let mut st = Session::new(to, ct, 0).unwrap();
    let mut seen = 0;
    for _ in 0..1_000 {
        while let Some(f) = sf.poll_transmit(0, from) {
            st.handle_bytes(0, &f, to).unwrap();
            if frame_kind(&f) == SNAPSHOT_CHUNK {
                seen += 1;
                if seen == chunks {
                    st.transport_closed(0, to);
                    sf.transport_closed(0, from);
                    return;
                }
            }
        }
        while let Some(f) = st.poll_transmit(0, to) {
            sf.handle_bytes(0, &f, from).unwrap();
        }
    }
    panic!("only {seen} chunks came");
}

/// A snapshot cut off after a chunk that ends inside the large record resumes before the
/// record and sends it again from its start: merged as they arrive, the pieces held back are
/// simply sent again; staged, the record's first pieces are staged twice, and joined they
/// still apply as the record. Both copies end equal to the source.
#[test]
fn a_snapshot_cut_inside_a_split_record_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let a = merged(dir.path());
    let docs_only = || SessionConfig {
        policy: SyncPolicy {
            collections: Some(vec!["docs".into()]),
            ..SyncPolicy::default()
        },
        ..SessionConfig::default()
    };
    // Chunk 0 holds the small record; 1 and 2 the large one's first pieces, of more.
    let d = open(dir.path(), "d");
    sync_cut_after_chunks(
        &a,
        &d,
        SessionConfig::default(),
        SessionConfig::default(),
        3,
    );
    assert_eq!(
        d.snapshot_progress(a.node_id())
            .unwrap()
            .unwrap()
            .next_index,
        3
    );
    assert!(d.get("docs", ID).unwrap().is_none(), "merged a part of it");
    sync_watching(&a, &d, SessionConfig::default(), SessionConfig::default());
    assert_eq!(dump(&d), dump(&a));
    assert_eq!(feed_cells(&d).len(), 1);

    // Staged: a replacing snapshot (a new policy) to the copy that holds the record.
    sync_cut_after_chunks(&a, &d, SessionConfig::default(), docs_only(), 3);
    assert_eq!(
        d.snapshot_progress(a.node_id())
            .unwrap()
            .unwrap()
            .next_index,
        3
    );
    sync_watching(&a, &d, SessionConfig::default(), docs_only());
    assert!(d.snapshot_progress(a.node_id()).unwrap().is_none());
    assert_eq!(dump(&d), dump(&a));
}

/// The chunks a sender makes of every page after `after`, each with the key it names last.
fn chunks_after(db: &Database, mut after: Option<SnapshotKey>) -> Vec<(SnapshotKey, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let page = db
            .snapshot_page_of_collections(after.as_ref(), None, 16_384, &mut |_| true)
            .unwrap();
        out.extend(page_chunks(&page.changes, after.as_ref(), true));
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Staged, a snapshot resumed inside the large record holds the record's first pieces twice
/// (staged before the cut, and sent again from the record's start after it): joined, they
/// apply as the record, and the copy that held it keeps every cell (applied piece by piece,
/// a piece that lacked cells of an earlier one dropped them as let go by the sender).
#[test]
fn a_staged_snapshot_resumed_inside_a_split_record_applies_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let a = merged(dir.path());
    let d = open(dir.path(), "d");
    sync_pair(&a, &d, SessionConfig::default(), SessionConfig::default());
    assert_eq!(dump(&d), dump(&a));

    let peer = a.node_id();
    let position = a.last_seq().unwrap();
    d.snapshot_begin(peer, 9, position, Seq(0)).unwrap();
    let first = chunks_after(&a, None);
    assert!(first.len() > 3, "{} chunks", first.len());
    for (i, (key, chunk)) in first.iter().take(3).enumerate() {
        d.snapshot_stage_chunk(peer, 9, i as u32, key, chunk)
            .unwrap();
    }
    // Cut: resumed after the key the last staged chunk named, before the large record.
    let progress = d.snapshot_progress(peer).unwrap().unwrap();
    let resumed = chunks_after(&a, progress.last_key);
    assert!(resumed.len() > 1, "{} chunks", resumed.len());
    for (i, (key, chunk)) in resumed.iter().enumerate() {
        d.snapshot_stage_chunk(peer, 9, 3 + i as u32, key, chunk)
            .unwrap();
    }
    let scope = SnapshotScope {
        collections: None,
        replace_seen_cells: true,
    };
    let chunks = 3 + resumed.len() as u32;
    let applied = d.snapshot_finish(peer, 9, chunks, &scope).unwrap();
    assert_eq!(applied.evicted, 0);
    assert_eq!(dump(&d), dump(&a));
}
