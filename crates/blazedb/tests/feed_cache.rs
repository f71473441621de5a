//! Shared change-feed reads (`changes_since_shared`, the cache a relay's sessions share) are
//! exactly what an uncached read returns, whatever the range, the page size and the excluded
//! source, and stop being used once anything commits (here or through another connection).

use blazedb::{Database, NodeId, OpenOptions, Patch, RecordId, Seq, Value};

/// Every read of `db`'s feed, shared (in a scrambled order, each twice so that the second
/// comes from the cache), against a fresh read through `other` (another connection to the
/// same file, whose reads are never kept).
fn check_all(db: &Database, other: &Database, excluded: &[Option<NodeId>]) {
    let head = db.last_seq().unwrap();
    let mut ranges = Vec::new();
    for since in 0..=head.0 + 1 {
        for cells_max in [1usize, 2, 3, 7, 1000] {
            ranges.push((Seq(since), cells_max));
        }
    }
    // A fixed scramble of the ranges; per range every exclusion, forwards then backwards, so
    // that a read finds the same range cached under each other exclusion.
    let n = ranges.len();
    let mut hits = 0;
    for i in (0..n).map(|i| (i * 7919) % n) {
        let (since, cells_max) = ranges[i];
        for ex in excluded.iter().chain(excluded.iter().rev()) {
            let shared = db.changes_since_shared(since, cells_max, *ex).unwrap();
            let again = db.changes_since_shared(since, cells_max, *ex).unwrap();
            if std::sync::Arc::ptr_eq(&shared, &again) {
                hits += 1;
            }
            let fresh = other.changes_since(since, cells_max, *ex).unwrap();
            assert_eq!(
                *shared, fresh,
                "since {since}, cells_max {cells_max}, exclude {ex:?}"
            );
            assert_eq!(db.changes_since(since, cells_max, *ex).unwrap(), fresh);
        }
    }
    assert!(hits > 0, "no read was shared");
}

#[test]
fn shared_reads_equal_uncached_reads() {
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
    let b_path = dir.path().join("b.db");
    let b = Database::open(&b_path, OpenOptions::default()).unwrap();
    let b2 = Database::open(&b_path, OpenOptions::default()).unwrap();
    let stranger = NodeId::random();
    let excluded = [None, Some(a.node_id()), Some(stranger), Some(b.node_id())];

    // A writes records and updates; B receives them (src = A) and writes its own changes
    // in between, some over A's records, so the feed mixes sources and overwritten cells.
    let mut ids: Vec<RecordId> = Vec::new();
    let mut a_sent = Seq(0);
    let mut pull = |b: &Database| {
        let batch = a.changes_since(a_sent, 100_000, None).unwrap();
        b.apply_changes(a.node_id(), &batch.changes, Some(batch.next))
            .unwrap();
        a_sent = batch.next;
    };
    for round in 0..6i64 {
        a.transaction(|tx| {
            for k in 0..4i64 {
                let id = tx.insert(
                    "bugs",
                    [
                        ("n", Value::Int(round * 10 + k)),
                        ("title", Value::from(format!("bug {round}.{k}"))),
                        ("prio", Value::Int(k)),
                    ],
                )?;
                ids.push(id);
            }
            Ok(())
        })
        .unwrap();
        a.transaction(|tx| {
            for (j, id) in ids.iter().enumerate().filter(|(j, _)| j % 3 == 0) {
                tx.update(
                    "bugs",
                    *id,
                    Patch::new().set("prio", round * 100 + j as i64),
                )?;
            }
            Ok(())
        })
        .unwrap();
        pull(&b);
        b.transaction(|tx| {
            for id in ids.iter().skip(round as usize).step_by(4) {
                tx.update("bugs", *id, Patch::new().set("title", format!("b{round}")))?;
            }
            Ok(())
        })
        .unwrap();
        b.insert("notes", [("round", Value::Int(round))]).unwrap();
    }
    check_all(&b, &b2, &excluded);

    // A local commit: what was cached before is not used after.
    let before = b.changes_since_shared(Seq(0), 1000, None).unwrap();
    b.update("bugs", ids[1], Patch::new().set("prio", -1))
        .unwrap();
    let after = b.changes_since_shared(Seq(0), 1000, None).unwrap();
    assert_ne!(*before, *after);
    assert_eq!(*after, b2.changes_since(Seq(0), 1000, None).unwrap());
    check_all(&b, &b2, &excluded);

    // A commit through the other connection (as another process would).
    let before = b.changes_since_shared(Seq(0), 1000, None).unwrap();
    b2.update("bugs", ids[2], Patch::new().set("prio", -2))
        .unwrap();
    let after = b.changes_since_shared(Seq(0), 1000, None).unwrap();
    assert_ne!(*before, *after);
    assert_eq!(b.last_seq().unwrap(), b2.last_seq().unwrap());
    check_all(&b, &b2, &excluded);

    // Applied changes from A.
    a.update("bugs", ids[3], Patch::new().set("prio", -3))
        .unwrap();
    pull(&b);
    check_all(&b, &b2, &excluded);
}
