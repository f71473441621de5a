//! Snapshot bootstrap on real files: a snapshot (fields, counters, sets, tombstones) read in
//! pages, staged chunk by chunk (surviving restarts, interrupted at every chunk boundary) and
//! applied in one transaction makes an empty or encrypted copy equal to the source, removes
//! only what it may, refuses damaged chunks, files and zstd bombs, and old files migrate. A
//! snapshot that only adds can instead be merged chunk by chunk as it arrives, with the same
//! result, resuming the same way, and meeting local records of the same ids correctly.

mod common;

use std::io::Write as _;
use std::path::Path;

use blazedb::crdt::Cell;
use blazedb::limits::{SNAPSHOT_CHUNK_CELLS_MAX, SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX};
use blazedb::store::{SnapshotKey, SnapshotScope, SnapshotSelect};
use blazedb::sync::snapshot::{
    bounded_parts, decode_chunk, encode_chunk, import_snapshot_file, page_chunks, verify_chunk,
    write_snapshot_file,
};
use blazedb::{
    Database, EventKind, NodeId, OpenOptions, Patch, PeerDirection, RecordId, Seq, Value, WatchItem,
};

use common::dump;

/// The records a snapshot carries, as chunks with their last key.
struct Snap {
    position: Seq,
    chunks: Vec<(SnapshotKey, Vec<u8>)>,
    records: usize,
}

fn open(path: &Path) -> Database {
    Database::open(path, OpenOptions::default()).unwrap()
}

/// Two collections: fields, counters, sets, updates, and deletes (tombstones). Returns every
/// id written, deleted ones included.
fn populate(db: &Database, n: usize) -> Vec<(String, RecordId)> {
    let mut ids = Vec::new();
    for i in 0..n {
        let coll = if i % 3 == 0 { "tags" } else { "notes" };
        let id = db
            .insert(
                coll,
                [
                    ("title", Value::from(format!("note {i}"))),
                    ("n", Value::Int(i as i64)),
                ],
            )
            .unwrap();
        if i % 4 == 0 {
            db.increment(coll, id, "votes", i as i64 + 1).unwrap();
        }
        if i % 5 == 0 {
            db.set_add(coll, id, "labels", vec!["a".into(), Value::Int(i as i64)])
                .unwrap();
            db.set_remove(coll, id, "labels", vec!["a".into()]).unwrap();
        }
        if i % 6 == 1 {
            db.update(coll, id, Patch::new().set("title", "changed").unset("n"))
                .unwrap();
        }
        if i % 7 == 2 {
            db.delete(coll, id).unwrap();
        }
        ids.push((coll.to_owned(), id));
    }
    ids
}

/// Read a whole snapshot in pages of at most `cells_max` cells.
fn take(db: &Database, cells_max: usize) -> Snap {
    take_selected(db, cells_max, &mut |_, _, _, _| true)
}

fn take_selected(db: &Database, cells_max: usize, select: &mut SnapshotSelect<'_>) -> Snap {
    let mut snap = Snap {
        position: Seq(0),
        chunks: Vec::new(),
        records: 0,
    };
    let mut after: Option<SnapshotKey> = None;
    loop {
        let page = db
            .snapshot_page(after.as_ref(), None, cells_max, select)
            .unwrap();
        if after.is_none() {
            snap.position = page.position;
        }
        if let Some(last) = page.changes.last() {
            let key = SnapshotKey {
                collection: last.collection.clone(),
                id: last.id,
            };
            snap.records += page.changes.len();
            snap.chunks.push((key, encode_chunk(&page.changes)));
        }
        match page.next {
            Some(k) => after = Some(k),
            None => return snap,
        }
    }
}

/// Begin, stage every chunk and finish, with the whole database in scope.
fn receive(
    db: &Database,
    from: NodeId,
    snap_id: u64,
    snap: &Snap,
) -> blazedb::store::SnapshotApplied {
    let acked = db.peer_cursor(from, PeerDirection::Acked).unwrap();
    db.snapshot_begin(from, snap_id, snap.position, acked)
        .unwrap();
    for (i, (key, chunk)) in snap.chunks.iter().enumerate() {
        db.snapshot_stage_chunk(from, snap_id, i as u32, key, chunk)
            .unwrap();
    }
    db.snapshot_finish(
        from,
        snap_id,
        snap.chunks.len() as u32,
        &SnapshotScope::default(),
    )
    .unwrap()
}

/// A record's cells without their local seqs (which differ per replica by design).
fn cells(db: &Database, coll: &str, id: RecordId) -> Option<Vec<Cell>> {
    db.record_state(coll, id).unwrap().map(|s| {
        s.into_cells()
            .into_iter()
            .map(|mut c| {
                c.seq = Seq(0);
                c
            })
            .collect()
    })
}

fn assert_same(a: &Database, b: &Database, ids: &[(String, RecordId)]) {
    assert_eq!(dump(a), dump(b));
    for (coll, id) in ids {
        assert_eq!(cells(a, coll, *id), cells(b, coll, *id), "{coll}/{id}");
    }
}

#[test]
fn pages_hold_whole_records_in_key_order_with_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 40);
    let mut seen: Vec<SnapshotKey> = Vec::new();
    let mut tombstones = 0;
    let mut after: Option<SnapshotKey> = None;
    let head = src.last_seq().unwrap();
    loop {
        let page = src
            .snapshot_page(after.as_ref(), None, 7, &mut |_, _, fields, live| {
                if !live {
                    assert!(fields.is_empty());
                    tombstones += 1;
                }
                true
            })
            .unwrap();
        assert_eq!(page.position, head);
        let n: usize = page.changes.iter().map(|c| c.cells.len()).sum();
        assert!(n <= 7 || page.changes.len() == 1, "a page of {n} cells");
        for ch in &page.changes {
            let stored = src.record_state(&ch.collection, ch.id).unwrap().unwrap();
            assert_eq!(ch.cells, stored.cells(), "a record is never split");
            assert_eq!(ch.seq, stored.max_seq());
            seen.push(SnapshotKey {
                collection: ch.collection.clone(),
                id: ch.id,
            });
        }
        match page.next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        ids.len(),
        "every record once, tombstones included"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
    assert_eq!(tombstones, ids.len() / 7 + 1);

    // A selection skips records but keeps the order and the position.
    let snap = take_selected(&src, 1000, &mut |coll, _, _, _| coll == "tags");
    assert_eq!(
        snap.records,
        ids.iter().filter(|(c, _)| c == "tags").count()
    );
}

#[test]
fn snapshot_into_an_empty_database_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    let ids = populate(&src, 300);
    let snap = take(&src, 100);
    assert!(snap.chunks.len() >= 5, "{} chunks", snap.chunks.len());

    let applied = receive(&dst, src.node_id(), 1, &snap);
    assert_eq!(applied.records, ids.len() as u64);
    assert_eq!(applied.position, src.last_seq().unwrap());
    assert_eq!((applied.evicted, applied.kept_pending), (0, 0));
    assert!(applied.cells_applied > ids.len() as u64);
    assert_same(&src, &dst, &ids);
    // One local commit per chunk, linked: a peer replicating from here gets them as one
    // unit (the chunks cut the source's transactions by key), however small its pages.
    assert_eq!(dst.last_seq().unwrap(), Seq(snap.chunks.len() as u64));
    let first_page = dst.changes_since(Seq(0), 1, None).unwrap();
    assert_eq!(first_page.needs_through, dst.last_seq().unwrap());
    assert_eq!(
        dst.peer_cursor(src.node_id(), PeerDirection::Received)
            .unwrap(),
        applied.position
    );
    assert_eq!(dst.snapshot_progress(src.node_id()).unwrap(), None);

    // Nothing needs to move afterwards, either way.
    let to_dst = src
        .changes_since(applied.position, 100_000, Some(dst.node_id()))
        .unwrap();
    assert!(to_dst.changes.is_empty());
    let to_src = dst
        .changes_since(Seq(0), 100_000, Some(src.node_id()))
        .unwrap();
    assert!(to_src.changes.is_empty(), "{:?}", to_src.changes.len());

    // Applying the same snapshot again changes nothing.
    let again = receive(&dst, src.node_id(), 2, &snap);
    assert_eq!(again.cells_applied, 0);
    assert_eq!(dst.last_seq().unwrap(), Seq(snap.chunks.len() as u64));
}

#[test]
fn snapshot_into_an_encrypted_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 120);
    let snap = take(&src, 64);
    let path = dir.path().join("dst.db");
    {
        let dst = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
        receive(&dst, src.node_id(), 9, &snap);
        assert_same(&src, &dst, &ids);
    }
    let dst = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    assert!(dst.is_encrypted());
    assert_same(&src, &dst, &ids);
}

/// How a receiver takes a snapshot's chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Take {
    /// Staged, applied at the finish in one transaction.
    Staged,
    /// Merged as each arrives.
    Merged,
}

fn take_chunk(
    db: &Database,
    take: Take,
    peer: NodeId,
    snap_id: u64,
    i: usize,
    key: &SnapshotKey,
    chunk: &[u8],
) {
    match take {
        Take::Staged => db
            .snapshot_stage_chunk(peer, snap_id, i as u32, key, chunk)
            .unwrap(),
        Take::Merged => {
            db.snapshot_merge_chunk(peer, snap_id, i as u32, key, chunk)
                .unwrap();
        }
    }
}

/// Receive the first `cut` chunks of a snapshot of `src` (then `check_cut(copy, src,
/// snapshot, cut)` looks at the copy), reopen the copy as after a restart, check the
/// progress, receive the rest (the last chunk before the cut arrives twice) and finish: the
/// copy equals the source, at every cut.
fn resume_at_every_boundary(how: Take, check_cut: impl Fn(&Database, &Database, &Snap, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 80);
    let snap = take(&src, 40);
    let n = snap.chunks.len();
    assert!(n >= 4, "{n} chunks");
    let peer = src.node_id();
    let scope = match how {
        Take::Staged => SnapshotScope::default(),
        Take::Merged => SnapshotScope {
            collections: Some(Vec::new()),
            ..SnapshotScope::default()
        },
    };
    for cut in 0..=n {
        let path = dir.path().join(format!("dst{cut}.db"));
        {
            let dst = open(&path);
            dst.snapshot_begin(peer, 7, snap.position, Seq(0)).unwrap();
            for (i, (key, chunk)) in snap.chunks[..cut].iter().enumerate() {
                take_chunk(&dst, how, peer, 7, i, key, chunk);
            }
            check_cut(&dst, &src, &snap, cut);
        }
        // Reopened (a restart): the progress says where to go on.
        let dst = open(&path);
        let p = dst.snapshot_progress(peer).unwrap().expect("in progress");
        assert_eq!(
            (p.snap_id, p.position, p.next_index),
            (7, snap.position, cut as u32)
        );
        assert_eq!(
            p.last_key,
            cut.checked_sub(1).map(|i| snap.chunks[i].0.clone())
        );
        // The session begins the same snapshot again: what was received stays.
        dst.snapshot_begin(peer, 7, snap.position, Seq(0)).unwrap();
        let from = cut.saturating_sub(1); // the last chunk arrives twice
        for (i, (key, chunk)) in snap.chunks.iter().enumerate().skip(from) {
            take_chunk(&dst, how, peer, 7, i, key, chunk);
        }
        dst.snapshot_finish(peer, 7, n as u32, &scope).unwrap();
        assert_same(&src, &dst, &ids);
        // One local commit per chunk either way.
        assert_eq!(dst.last_seq().unwrap(), Seq(n as u64), "{how:?} cut {cut}");
    }
}

#[test]
fn staged_chunks_survive_reopening_and_every_boundary_resumes() {
    resume_at_every_boundary(Take::Staged, |dst, _, _, _| {
        assert!(dst.scan("notes").unwrap().is_empty(), "nothing applied yet");
    });
}

#[test]
fn staging_refuses_what_does_not_follow() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    populate(&src, 30);
    let snap = take(&src, 20);
    let peer = src.node_id();
    let (key, chunk) = &snap.chunks[0];
    let err = dst
        .snapshot_stage_chunk(peer, 1, 0, key, chunk)
        .unwrap_err();
    assert!(err.to_string().contains("begin"), "{err}");
    dst.snapshot_begin(peer, 1, snap.position, Seq(0)).unwrap();
    let err = dst
        .snapshot_stage_chunk(peer, 1, 1, key, chunk)
        .unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    let err = dst
        .snapshot_stage_chunk(peer, 2, 0, key, chunk)
        .unwrap_err();
    assert!(err.to_string().contains("not the one in progress"), "{err}");
    dst.snapshot_stage_chunk(peer, 1, 0, key, chunk).unwrap();
    let err = dst
        .snapshot_finish(peer, 1, 2, &SnapshotScope::default())
        .unwrap_err();
    assert!(err.to_string().contains("1 chunks staged"), "{err}");
    // A new snapshot from that peer replaces the staged one.
    dst.snapshot_begin(peer, 2, snap.position, Seq(0)).unwrap();
    assert_eq!(dst.snapshot_progress(peer).unwrap().unwrap().next_index, 0);
    dst.snapshot_abort(peer).unwrap();
    assert_eq!(dst.snapshot_progress(peer).unwrap(), None);
}

#[test]
fn absent_records_go_unless_unseen_or_out_of_scope() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    let kept_by_src = src.insert("notes", [("x", Value::Int(1))]).unwrap();
    let dropped_by_src = src.insert("notes", [("x", Value::Int(2))]).unwrap();
    src.create_index("notes", "x").unwrap();
    dst.create_index("notes", "x").unwrap();
    let other = src.insert("other", [("x", Value::Int(3))]).unwrap();
    receive(&dst, src.node_id(), 1, &take(&src, 1000));
    assert_eq!(dump(&src), dump(&dst));
    // Conflicting history on the record that will be dropped: it must go with it.
    let acked_before = dst.last_seq().unwrap();
    dst.update("notes", dropped_by_src, Patch::new().set("x", 20))
        .unwrap();
    let unseen = dst.insert("notes", [("local", Value::Int(1))]).unwrap();

    // The source's view no longer has `dropped_by_src` (as after a collected delete, or a
    // policy change); the snapshot covers "notes" only.
    let snap = take_selected(&src, 1000, &mut |coll, id, _, _| {
        coll == "notes" && id != dropped_by_src
    });
    let w = dst.watch("notes", None, None).unwrap();
    dst.snapshot_begin(src.node_id(), 2, snap.position, acked_before)
        .unwrap();
    for (i, (k, c)) in snap.chunks.iter().enumerate() {
        dst.snapshot_stage_chunk(src.node_id(), 2, i as u32, k, c)
            .unwrap();
    }
    let scope = SnapshotScope {
        collections: Some(vec!["notes".into()]),
        ..SnapshotScope::default()
    };
    let applied = dst
        .snapshot_finish(src.node_id(), 2, snap.chunks.len() as u32, &scope)
        .unwrap();
    // `dropped_by_src` was updated here too, after `acked_before`: kept as unseen, like
    // `unseen`. Nothing was evicted yet.
    assert_eq!((applied.evicted, applied.kept_pending), (0, 2));

    // Once the source has acknowledged everything, they go, without tombstones.
    let acked = dst.last_seq().unwrap();
    dst.snapshot_begin(src.node_id(), 3, snap.position, acked)
        .unwrap();
    for (i, (k, c)) in snap.chunks.iter().enumerate() {
        dst.snapshot_stage_chunk(src.node_id(), 3, i as u32, k, c)
            .unwrap();
    }
    let applied = dst
        .snapshot_finish(src.node_id(), 3, snap.chunks.len() as u32, &scope)
        .unwrap();
    assert_eq!((applied.evicted, applied.kept_pending), (2, 0));
    assert_eq!(dst.record_state("notes", dropped_by_src).unwrap(), None);
    assert_eq!(dst.record_state("notes", unseen).unwrap(), None);
    assert!(dst.get("notes", kept_by_src).unwrap().is_some());
    assert!(dst.get("other", other).unwrap().is_some(), "out of scope");
    assert!(dst.history("notes", dropped_by_src).unwrap().is_empty());
    let by_index = dst
        .query("notes", &blazedb::Query::filter("x == 20").unwrap())
        .unwrap();
    assert!(by_index.is_empty());
    let feed = dst.changes_since(Seq(0), 100_000, None).unwrap();
    assert!(feed
        .changes
        .iter()
        .all(|c| c.id != dropped_by_src && c.id != unseen));
    // Watchers see the evicted records disappear.
    let mut deleted = Vec::new();
    while let Some(WatchItem::Event(e)) = w.try_recv() {
        if e.kind == EventKind::Deleted {
            deleted.push(e.record.id);
        }
    }
    deleted.sort();
    let mut expected = vec![dropped_by_src, unseen];
    expected.sort();
    assert_eq!(deleted, expected);
    // The source still has everything: an eviction is not a delete.
    assert!(src.get("notes", dropped_by_src).unwrap().is_some());
}

#[test]
fn a_damaged_chunk_fails_the_whole_snapshot_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    populate(&src, 60);
    let mut snap = take(&src, 40);
    let last = snap.chunks.len() - 1;
    let c = &mut snap.chunks[last].1;
    let mid = c.len() / 2;
    c[mid] ^= 0xff;
    assert!(verify_chunk(c).is_err());
    dst.insert("notes", [("mine", Value::Int(1))]).unwrap();
    let before = dump(&dst);
    let peer = src.node_id();
    dst.snapshot_begin(peer, 5, snap.position, Seq(0)).unwrap();
    for (i, (k, c)) in snap.chunks.iter().enumerate() {
        dst.snapshot_stage_chunk(peer, 5, i as u32, k, c).unwrap();
    }
    let err = dst
        .snapshot_finish(peer, 5, snap.chunks.len() as u32, &SnapshotScope::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("chunk {last}")), "{msg}");
    assert_eq!(dump(&dst), before);
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        Seq(0)
    );
    assert!(
        dst.snapshot_progress(peer).unwrap().is_some(),
        "still staged"
    );
    dst.snapshot_abort(peer).unwrap();
}

#[test]
fn zstd_bombs_and_oversized_chunks_are_refused_without_inflating() {
    // 64 MiB of zeros compress to a few KiB; the chunk claims a small raw size.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let frame = enc.finish().unwrap();
    assert!(frame.len() < 100_000);
    let chunk = |declared: u32| {
        let mut c = vec![1u8];
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&declared.to_le_bytes());
        c.extend_from_slice(&frame);
        c
    };
    let err = decode_chunk(&chunk(4096), SNAPSHOT_CHUNK_CELLS_MAX).unwrap_err();
    assert!(err.to_string().contains("decompress"), "{err}");
    let err = decode_chunk(&chunk(u32::MAX), SNAPSHOT_CHUNK_CELLS_MAX).unwrap_err();
    assert!(
        err.to_string()
            .contains(&SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX.to_string()),
        "{err}"
    );
    assert!(decode_chunk(&[1, 2, 3], 10).is_err());
    assert!(decode_chunk(&[], 10).is_err());
}

#[test]
fn a_snapshot_file_seeds_a_copy_and_bad_files_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 200);
    let file = dir.path().join("seed.blzsnap");
    let info = write_snapshot_file(&src, &file).unwrap();
    assert_eq!(info.node, src.node_id());
    assert_eq!(info.position, src.last_seq().unwrap());
    assert_eq!(info.records, ids.len() as u64);
    assert_eq!(info.bytes, std::fs::metadata(&file).unwrap().len());
    let bytes = std::fs::read(&file).unwrap();

    let bad = |name: &str, data: &[u8], expect: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, data).unwrap();
        let db = open(&dir.path().join(format!("{name}.db")));
        let err = import_snapshot_file(&db, &f).unwrap_err().to_string();
        assert!(err.contains(expect), "{name}: {err}");
        assert!(dump(&db).is_empty(), "{name}: database untouched");
        assert_eq!(db.snapshot_progress(src.node_id()).unwrap(), None);
        assert_eq!(db.last_seq().unwrap(), Seq(0));
    };
    bad("truncated", &bytes[..bytes.len() / 2], "truncated");
    bad("no-trailer", &bytes[..bytes.len() - 12], "truncated");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x01;
    bad("flipped", &flipped, "checksum");
    bad(
        "foreign",
        b"PK\x03\x04 not a snapshot at all, a zip perhaps",
        "BLZSNAP1",
    );
    bad("empty", b"", "truncated");
    let mut longer = bytes.clone();
    longer.push(0);
    bad("trailing", &longer, "after its trailer");

    // Its own export is refused.
    let err = import_snapshot_file(&src, &file).unwrap_err().to_string();
    assert!(err.contains("exported from this database"), "{err}");

    let dst = Database::open(dir.path().join("dst.db"), OpenOptions::with_password("pw")).unwrap();
    let applied = import_snapshot_file(&dst, &file).unwrap();
    assert_eq!(applied.records, ids.len() as u64);
    assert_eq!(applied.position, info.position);
    assert_same(&src, &dst, &ids);
    assert_eq!(
        dst.peer_cursor(src.node_id(), PeerDirection::Received)
            .unwrap(),
        info.position
    );
    // Importing it again is harmless; a file older than what was received is refused.
    assert_eq!(import_snapshot_file(&dst, &file).unwrap().cells_applied, 0);
    let ahead = Seq(info.position.0 + 5);
    dst.set_peer_cursor(src.node_id(), PeerDirection::Received, ahead)
        .unwrap();
    let err = import_snapshot_file(&dst, &file).unwrap_err().to_string();
    assert!(err.contains("older than what this database holds"), "{err}");
    assert_eq!(
        dst.peer_cursor(src.node_id(), PeerDirection::Received)
            .unwrap(),
        ahead
    );
}

#[test]
fn a_format_1_file_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let (id, head) = {
        let db = open(&path);
        let id = db.insert("notes", [("x", Value::Int(1))]).unwrap();
        (id, db.last_seq().unwrap())
    };
    {
        // Make it a format-1 file: what formats 2 to 11 changed goes back, the version too.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL, hlc INTEGER NOT NULL);
             INSERT INTO clock SELECT 0, cursor, last_contact_ms FROM peers WHERE direction = 'clock';
             DELETE FROM peers WHERE direction = 'clock';
             DROP TABLE snapshot_progress; DROP TABLE snapshot_staging; DROP TABLE unit_staging;
             ALTER TABLE history DROP COLUMN prev; ALTER TABLE records DROP COLUMN hist;
             ALTER TABLE history DROP COLUMN old_seq;
             DROP INDEX conflicts_by_record;
             ALTER TABLE history DROP COLUMN old_prev_age;
             ALTER TABLE history DROP COLUMN old_prev_node;
             ALTER TABLE history DROP COLUMN old_seen;
             CREATE INDEX history_by_record ON history (coll, id, hid);
             UPDATE meta SET value = 1 WHERE key = 'format_version';",
        )
        .unwrap();
    }
    let db = open(&path);
    assert_eq!(
        db.get("notes", id).unwrap().unwrap().fields["x"],
        Value::Int(1)
    );
    // The clock came along (format 6 keeps it in `peers`, where no peer lists it).
    assert_eq!(db.last_seq().unwrap(), head);
    assert!(db.peers().unwrap().is_empty());
    db.insert("notes", [("x", Value::Int(2))]).unwrap();
    assert!(db.last_seq().unwrap() > head);
    let peer = NodeId([9; 16]);
    db.snapshot_begin(peer, 1, Seq(3), Seq(0)).unwrap();
    assert_eq!(
        db.snapshot_progress(peer).unwrap().unwrap().position,
        Seq(3)
    );
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'format_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, 11);
    // Format 3's table is there too.
    let n: i64 = conn
        .query_row("SELECT count(*) FROM unit_staging", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn snapshot_paths_for_new_records_keep_indexes_events_and_sources() {
    // "notes" is new here but indexed (written through the general writer), "tags" already
    // has a record (merged record by record), and a second copy is watched: every path must
    // give the same records, index entries, events and feed sources.
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 120);
    let snap = take(&src, 50);
    for watched in [false, true] {
        let dst = open(&dir.path().join(format!("dst-{watched}.db")));
        dst.create_index("notes", "n").unwrap();
        let own = dst.insert("tags", [("mine", Value::Int(1))]).unwrap();
        let watch = watched.then(|| dst.watch("notes", None, Some(10_000)).unwrap());
        receive(&dst, src.node_id(), 1, &snap);
        for (c, id) in &ids {
            assert_eq!(cells(&src, c, *id), cells(&dst, c, *id), "{c} {id}");
        }
        // Index entries were written: an indexed query gives the same rows as the source.
        let q = |db: &Database| {
            let q = blazedb::Query {
                filter: Some(blazedb::query::parse("n >= 50").unwrap()),
                ..Default::default()
            };
            let mut r: Vec<RecordId> = db
                .query("notes", &q)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            r.sort();
            r
        };
        assert_eq!(q(&dst), q(&src));
        assert!(!q(&dst).is_empty());
        // Our own record stays (it has changes the source never saw); the rest is the source's.
        assert!(dst.get("tags", own).unwrap().is_some());
        let back = dst
            .changes_since(Seq(0), 100_000, Some(src.node_id()))
            .unwrap();
        assert_eq!(back.changes.len(), 1, "only our own record goes back");
        if let Some(w) = watch {
            let live = src.count("notes").unwrap();
            let mut n = 0;
            while let Some(item) = w.try_recv() {
                assert!(matches!(item, blazedb::WatchItem::Event(_)), "{item:?}");
                n += 1;
            }
            assert_eq!(n, live, "one event per live record received");
        }
    }
}

/// Begin, merge every chunk as it "arrives", and finish with nothing in scope.
fn receive_merged(
    db: &Database,
    from: NodeId,
    snap_id: u64,
    snap: &Snap,
) -> blazedb::store::SnapshotApplied {
    db.snapshot_begin(from, snap_id, snap.position, Seq(0))
        .unwrap();
    let mut merged = blazedb::store::SnapshotApplied::default();
    for (i, (key, chunk)) in snap.chunks.iter().enumerate() {
        let a = db
            .snapshot_merge_chunk(from, snap_id, i as u32, key, chunk)
            .unwrap();
        merged.records += a.records;
        merged.cells_applied += a.cells_applied;
    }
    let end = db
        .snapshot_finish(
            from,
            snap_id,
            snap.chunks.len() as u32,
            &SnapshotScope {
                collections: Some(Vec::new()),
                ..SnapshotScope::default()
            },
        )
        .unwrap();
    assert_eq!((end.records, end.evicted), (0, 0), "nothing left to merge");
    merged.position = end.position;
    merged
}

#[test]
fn merged_chunk_by_chunk_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let ids = populate(&src, 200);
    let snap = take(&src, 60);
    let n = snap.chunks.len();
    assert!(n >= 4, "{n} chunks");
    let peer = src.node_id();

    // In one go: the same copy as the staged path, one local commit per chunk.
    let dst = open(&dir.path().join("whole.db"));
    let applied = receive_merged(&dst, peer, 1, &snap);
    assert_eq!(applied.records, ids.len() as u64);
    assert_eq!(applied.position, src.last_seq().unwrap());
    assert_same(&src, &dst, &ids);
    assert_eq!(dst.last_seq().unwrap(), Seq(n as u64));
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        applied.position
    );
    assert_eq!(dst.snapshot_progress(peer).unwrap(), None);
    let to_src = dst.changes_since(Seq(0), 100_000, Some(peer)).unwrap();
    assert!(to_src.changes.is_empty(), "{:?}", to_src.changes.len());
    // Merging the same snapshot again changes nothing.
    let again = receive_merged(&dst, peer, 2, &snap);
    assert_eq!(again.cells_applied, 0);
    assert_eq!(dst.last_seq().unwrap(), Seq(n as u64));
}

#[test]
fn merged_chunks_survive_reopening_and_every_boundary_resumes() {
    resume_at_every_boundary(Take::Merged, |dst, src, snap, cut| {
        // The merged chunks' records are readable already, exactly as the source has them;
        // the cursor has not moved.
        for (_, chunk) in &snap.chunks[..cut] {
            for ch in decode_chunk(chunk, SNAPSHOT_CHUNK_CELLS_MAX).unwrap() {
                assert_eq!(
                    cells(dst, &ch.collection, ch.id),
                    cells(src, &ch.collection, ch.id)
                );
            }
        }
        assert_eq!(
            dst.peer_cursor(src.node_id(), PeerDirection::Received)
                .unwrap(),
            Seq(0)
        );
    });
}

#[test]
fn staged_chunks_may_follow_merged_ones_not_precede_them_and_a_bad_chunk_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    let ids = populate(&src, 60);
    let snap = take(&src, 20);
    assert!(snap.chunks.len() >= 3);
    let peer = src.node_id();
    let (k0, c0) = &snap.chunks[0];
    let (k1, c1) = &snap.chunks[1];

    // Not begun, then out of order.
    let err = dst.snapshot_merge_chunk(peer, 1, 0, k0, c0).unwrap_err();
    assert!(err.to_string().contains("begin"), "{err}");
    dst.snapshot_begin(peer, 1, snap.position, Seq(0)).unwrap();
    let err = dst.snapshot_merge_chunk(peer, 1, 1, k1, c1).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");

    // A damaged chunk: a clear error, nothing merged, the progress unmoved.
    let mut bad = c0.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    let err = dst.snapshot_merge_chunk(peer, 1, 0, k0, &bad).unwrap_err();
    assert!(
        matches!(err, blazedb::Error::Apply(_)),
        "a chunk that does not decode is invalid input: {err}"
    );
    assert_eq!(dst.last_seq().unwrap(), Seq(0));
    assert_eq!(dst.snapshot_progress(peer).unwrap().unwrap().next_index, 0);

    // Merged first, then staged (a receiver that took other changes meanwhile stages the
    // rest): a finish that would evict on the word of a snapshot this transaction never
    // held is refused; one that only adds applies the staged chunks.
    dst.snapshot_merge_chunk(peer, 1, 0, k0, c0).unwrap();
    let after_first = dst.last_seq().unwrap();
    assert!(after_first > Seq(0));
    for (i, (k, c)) in snap.chunks.iter().enumerate().skip(1) {
        dst.snapshot_stage_chunk(peer, 1, i as u32, k, c).unwrap();
    }
    assert_eq!(dst.last_seq().unwrap(), after_first, "staged, not applied");
    let n = snap.chunks.len() as u32;
    let err = dst
        .snapshot_finish(peer, 1, n, &SnapshotScope::default())
        .unwrap_err();
    assert!(err.to_string().contains("cannot replace"), "{err}");
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        Seq(0)
    );
    let only_adds = SnapshotScope {
        collections: Some(Vec::new()),
        ..SnapshotScope::default()
    };
    dst.snapshot_finish(peer, 1, n, &only_adds).unwrap();
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        snap.position
    );
    assert_same(&src, &dst, &ids);

    // Staged first: merging the next chunk is refused.
    dst.snapshot_begin(peer, 2, snap.position, Seq(0)).unwrap();
    dst.snapshot_stage_chunk(peer, 2, 0, k0, c0).unwrap();
    let err = dst.snapshot_merge_chunk(peer, 2, 1, k1, c1).unwrap_err();
    assert!(err.to_string().contains("staged chunks"), "{err}");
    dst.snapshot_abort(peer).unwrap();
}

#[test]
fn a_merged_chunk_meets_local_records_in_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    // Ids in one range: the first and last go to the source, the middle two to the copy,
    // one of them also written at the source (two writers of one record, never synced).
    let id = |b: u8| RecordId([b; 16]);
    src.insert_with_id("notes", id(1), [("title", Value::from("first"))])
        .unwrap();
    src.insert_with_id("notes", id(5), [("title", Value::from("shared at src"))])
        .unwrap();
    src.insert_with_id("notes", id(9), [("title", Value::from("last"))])
        .unwrap();
    // The copy's insert of the shared id comes later, so it replaces the source's record
    // whole (an insert resets the fields it does not name).
    std::thread::sleep(std::time::Duration::from_millis(5));
    dst.insert_with_id("notes", id(3), [("title", Value::from("only here"))])
        .unwrap();
    dst.insert_with_id("notes", id(5), [("body", Value::from("shared at dst"))])
        .unwrap();
    let snap = take(&src, 1_000);
    assert_eq!(snap.chunks.len(), 1);
    let applied = receive_merged(&dst, src.node_id(), 1, &snap);
    assert_eq!(applied.records, 3);
    // The copy's own record stays; the shared one was merged (not inserted over: that
    // would have failed or lost the copy's write), and the later insert won; the new ones
    // arrived.
    let get = |b: u8| dst.get("notes", id(b)).unwrap().map(|r| r.fields);
    assert_eq!(get(3).unwrap()["title"], Value::from("only here"));
    let shared = get(5).unwrap();
    assert_eq!(shared.get("body"), Some(&Value::from("shared at dst")));
    assert_eq!(shared.get("title"), None);
    assert_eq!(get(1).unwrap()["title"], Value::from("first"));
    assert_eq!(get(9).unwrap()["title"], Value::from("last"));
    assert_eq!(dst.count("notes").unwrap(), 4);
    // The copy's own changes are still owed to the source.
    let owed = dst
        .changes_since(Seq(0), 1_000, Some(src.node_id()))
        .unwrap();
    let owed_ids: Vec<RecordId> = owed.changes.iter().map(|c| c.id).collect();
    assert!(
        owed_ids.contains(&id(3)) && owed_ids.contains(&id(5)),
        "{owed_ids:?}"
    );
}

/// A large chunk that fails to decode only at its very end changes nothing, and a chunk
/// merged twice is merged once.
#[test]
fn a_large_chunk_fails_whole_or_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    src.transaction(|tx| {
        for i in 0..3000 {
            tx.insert("notes", [("n", Value::Int(i))])?;
        }
        Ok(())
    })
    .unwrap();
    let snap = take(&src, 100_000);
    let (key, chunk) = &snap.chunks[0];
    let records = src.count("notes").unwrap();
    assert!(records >= 3000 && snap.chunks.len() == 1, "one large chunk");
    let peer = src.node_id();
    dst.snapshot_begin(peer, 1, snap.position, Seq(0)).unwrap();

    // The same chunk with its last bytes cut off (checksum and length made to match): every
    // record decodes, the end does not.
    let raw = zstd::bulk::decompress(&chunk[9..], 64 << 20).unwrap();
    let cut = &raw[..raw.len() - 3];
    let mut bad = vec![chunk[0]];
    bad.extend_from_slice(&crc32fast::hash(cut).to_le_bytes());
    bad.extend_from_slice(&(cut.len() as u32).to_le_bytes());
    bad.extend_from_slice(&zstd::bulk::compress(cut, 3).unwrap());
    let err = dst.snapshot_merge_chunk(peer, 1, 0, key, &bad).unwrap_err();
    assert!(matches!(err, blazedb::Error::Apply(_)), "{err}");
    assert_eq!(dst.count("notes").unwrap(), 0, "nothing of it is kept");
    assert_eq!(dst.last_seq().unwrap(), Seq(0));

    let first = dst.snapshot_merge_chunk(peer, 1, 0, key, chunk).unwrap();
    assert_eq!(first.records, records);
    let again = dst.snapshot_merge_chunk(peer, 1, 0, key, chunk).unwrap();
    assert_eq!(again.records, 0, "a repeated chunk is not merged again");
    assert_eq!(dst.count("notes").unwrap(), records);
    let merged = SnapshotScope {
        collections: Some(Vec::new()),
        ..SnapshotScope::default()
    };
    dst.snapshot_finish(peer, 1, 1, &merged).unwrap();
    assert_eq!(dump(&dst), dump(&src));
}

/// A replacing snapshot that speaks for its records' cells (`replace_seen_cells`): a local
/// cell the sender had received when the snapshot began, and that its record lacks, goes
/// (the sender let it go: a delete overwrote it and GC collected the delete). Everything
/// the sender may not have had stays: a cell never sent, and what it acknowledged only after
/// the snapshot began, since pages already read do not reflect it. Eviction judges by the
/// same position: a record the sender acknowledged after the snapshot began is kept.
#[test]
fn a_snapshot_drops_only_cells_the_sender_had_when_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    let a = src.insert("notes", [("title", Value::from("a"))]).unwrap();
    receive(&dst, src.node_id(), 1, &take(&src, 1000));
    // Sent to the source and acknowledged: a field of `a`, and a record of our own.
    dst.update("notes", a, Patch::new().set("seen", 1)).unwrap();
    let evicted = dst.insert("notes", [("mine", Value::Int(1))]).unwrap();
    let sent = dst
        .changes_since(Seq(0), 1000, Some(src.node_id()))
        .unwrap();
    src.apply_changes(dst.node_id(), &sent.changes, Some(sent.next))
        .unwrap();
    dst.set_peer_cursor(src.node_id(), PeerDirection::Acked, sent.next)
        .unwrap();
    // Not sent: another field of `a`.
    dst.update("notes", a, Patch::new().set("unsent", 2))
        .unwrap();

    // The source's snapshot lacks `seen` (its cell taken out of the chunk, as a collected
    // delete would have) and the record `evicted`.
    let mut snap = take_selected(&src, 1000, &mut |_, id, _, _| id != evicted);
    assert_eq!(snap.chunks.len(), 1);
    let mut changes = decode_chunk(&snap.chunks[0].1, SNAPSHOT_CHUNK_CELLS_MAX).unwrap();
    for ch in &mut changes {
        ch.cells.retain(|c| c.key.field() != Some("seen"));
    }
    snap.chunks[0].1 = encode_chunk(&changes);

    let peer = src.node_id();
    let acked = dst.peer_cursor(peer, PeerDirection::Acked).unwrap();
    dst.snapshot_begin(peer, 2, snap.position, acked).unwrap();
    // After it began: a field and a record, acknowledged before the snapshot ends.
    dst.update("notes", a, Patch::new().set("late", 3)).unwrap();
    let late = dst.insert("notes", [("late", Value::Int(4))]).unwrap();
    dst.set_peer_cursor(peer, PeerDirection::Acked, dst.last_seq().unwrap())
        .unwrap();
    for (i, (k, c)) in snap.chunks.iter().enumerate() {
        dst.snapshot_stage_chunk(peer, 2, i as u32, k, c).unwrap();
    }
    let scope = SnapshotScope {
        replace_seen_cells: true,
        ..SnapshotScope::default()
    };
    let applied = dst.snapshot_finish(peer, 2, 1, &scope).unwrap();
    assert_eq!(
        (applied.evicted, applied.kept_pending),
        (1, 1),
        "{applied:?}"
    );

    let fields = dst.get("notes", a).unwrap().unwrap().fields;
    assert_eq!(
        fields.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["late", "title", "unsent"],
        "{fields:?}"
    );
    assert!(dst.get("notes", evicted).unwrap().is_none());
    assert!(dst.get("notes", late).unwrap().is_some());

    // Without `replace_seen_cells` (a file, a peer holding part of ours) cells only merge.
    let other = open(&dir.path().join("other.db"));
    receive(&other, src.node_id(), 1, &take(&src, 1000));
    other
        .update("notes", a, Patch::new().set("seen", 1))
        .unwrap();
    let sent = other.changes_since(Seq(0), 1000, Some(peer)).unwrap();
    other
        .set_peer_cursor(peer, PeerDirection::Acked, sent.next)
        .unwrap();
    receive(&other, peer, 2, &snap);
    assert!(other
        .get("notes", a)
        .unwrap()
        .unwrap()
        .fields
        .contains_key("seen"));
}

/// A page asked for what changed since the previous one reads again, whole, exactly the
/// records before it that changed since (deleted ones too), chosen like the page's own.
#[test]
fn a_page_reads_again_the_records_before_it_that_changed_since_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db.db"));
    let ids: Vec<RecordId> = (0..40)
        .map(|i| db.insert("c", [("n", Value::Int(i))]).unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let all = &mut |_: &str, _: RecordId, _: &std::collections::BTreeMap<String, Value>, _| true;
    let first = db.snapshot_page(None, None, 20, all).unwrap();
    let after = first.next.clone().expect("two pages at least");
    assert_eq!(after.id, sorted[first.changes.len() - 1]);
    assert!(first.changed_before.is_empty());

    // Two records the first page read change, one is deleted, one after it changes.
    let read = first.changes.len();
    assert!(read > 5, "{read} records on the first page");
    let (early, deleted, late) = (sorted[0], sorted[5], sorted[read + 1]);
    db.transaction(|tx| {
        tx.update("c", early, Patch::new().set("n", 100))?;
        tx.update("c", late, Patch::new().set("n", 300))?;
        tx.delete("c", deleted)?;
        Ok(())
    })
    .unwrap();
    db.update("c", sorted[1], Patch::new().set("n", 101))
        .unwrap();

    let second = db
        .snapshot_page(Some(&after), Some(first.position), 20, all)
        .unwrap();
    assert_eq!(second.position, db.last_seq().unwrap());
    let again: Vec<RecordId> = second.changed_before.iter().map(|c| c.id).collect();
    assert_eq!(again, vec![sorted[0], sorted[1], sorted[5]], "in key order");
    for ch in &second.changed_before {
        assert_eq!(
            Some(ch.cells.clone()),
            db.record_state("c", ch.id).unwrap().map(|s| s.into_cells()),
            "whole"
        );
    }
    assert!(
        second.changes.iter().any(|c| c.id == late),
        "read by the page itself"
    );

    // Nothing changed since: nothing again; without `changed_since`: never.
    let third = db
        .snapshot_page(Some(&after), Some(second.position), 20, all)
        .unwrap();
    assert!(third.changed_before.is_empty());
    let none = db.snapshot_page(Some(&after), None, 20, all).unwrap();
    assert!(none.changed_before.is_empty());

    // Chosen like the page's records: a filter that leaves `early` out leaves it out again.
    let second = db
        .snapshot_page(
            Some(&after),
            Some(first.position),
            20,
            &mut |_, id, _, _| id != early,
        )
        .unwrap();
    assert!(second.changed_before.iter().all(|c| c.id != early));
    assert_eq!(second.changed_before.len(), 2);
}

/// Pages read while the source commits between them, with what changed before each page
/// sent again, apply to one state of the source: the last page's. Without them a record an
/// early page read stays as it was, beside later records of the same transaction.
#[test]
fn a_snapshot_read_across_commits_applies_to_the_state_of_its_last_page() {
    let dir = tempfile::tempdir().unwrap();
    let src = open(&dir.path().join("src.db"));
    let dst = open(&dir.path().join("dst.db"));
    let mut ids = populate(&src, 120);
    let mut chunks: Vec<(SnapshotKey, Vec<u8>)> = Vec::new();
    let (mut after, mut since): (Option<SnapshotKey>, Option<Seq>) = (None, None);
    let mut position = Seq(0);
    let mut round = 0i64;
    loop {
        let page = src
            .snapshot_page(after.as_ref(), since, 30, &mut |_, _, _, _| true)
            .unwrap();
        if after.is_none() {
            position = page.position;
        }
        since = Some(page.position);
        for part in bounded_parts(page.changed_before) {
            chunks.extend(page_chunks(&part, after.as_ref(), true));
        }
        chunks.extend(page_chunks(&page.changes, after.as_ref(), true));
        let Some(next) = page.next else { break };
        after = Some(next);
        // A transaction over the first record and a new one, and a delete, between pages.
        round += 1;
        let (coll, first) = ids[0].clone();
        src.transaction(|tx| {
            tx.update(&coll, first, Patch::new().set("round", round))?;
            let id = tx.insert("zzz", [("round", Value::Int(round))])?;
            ids.push(("zzz".into(), id));
            Ok(())
        })
        .unwrap();
        let (coll, victim) = ids[round as usize].clone();
        let _ = src.delete(&coll, victim).unwrap();
    }
    assert!(round >= 3, "{round} commits between pages");
    let peer = src.node_id();
    dst.snapshot_begin(peer, 1, position, Seq(0)).unwrap();
    for (i, (k, c)) in chunks.iter().enumerate() {
        dst.snapshot_stage_chunk(peer, 1, i as u32, k, c).unwrap();
    }
    dst.snapshot_finish(peer, 1, chunks.len() as u32, &SnapshotScope::default())
        .unwrap();
    assert_same(&src, &dst, &ids);
}
