//! Two replicas sync through a pair of sessions: full, incremental and delta sync, both
//! directions, modes, conflicts recorded and resolved (one lost to a delete restores the
//! record), restart resumes from persisted cursors; two sessions receiving from one peer into
//! one file stage their units apart.

mod common;

use blazedb::sync::{ErrorCode, Session, SessionConfig, SessionEvent, SyncMode};
use blazedb::{
    Change, Database, Patch, PeerDirection, RecordId, Seq, StagedParts, StagingId, Value,
};
use common::{dump, open, pump, sync_pair};

fn cfg(mode: SyncMode) -> SessionConfig {
    SessionConfig {
        mode,
        ..SessionConfig::default()
    }
}

#[test]
fn full_then_incremental_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let mut ids = Vec::new();
    a.transaction(|tx| {
        for i in 0..10_000 {
            ids.push(tx.insert(
                "bugs",
                [
                    ("title", Value::from(format!("bug number {i}"))),
                    ("status", Value::from("open")),
                    ("priority", Value::Int(i % 10)),
                    ("assignee", Value::from("someone")),
                    ("votes", Value::Int(0)),
                ],
            )?);
        }
        Ok(())
    })
    .unwrap();
    b.insert("notes", [("text", "from b")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(b.count("bugs").unwrap(), 10_000);

    // One field changes: the whole resync, handshake included, is tiny.
    a.update("bugs", ids[1234], Patch::new().set("status", "closed"))
        .unwrap();
    let moved = sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let total = moved.a_to_b + moved.b_to_a;
    assert!(
        total <= 300,
        "incremental resync moved {total} bytes ({moved:?})"
    );

    // Nothing changed: nothing but handshakes.
    let moved = sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(moved.a_to_b + moved.b_to_a <= 200, "{moved:?}");
}

#[test]
fn cells_do_not_echo_back() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.transaction(|tx| {
        for i in 0..500 {
            tx.insert(
                "c",
                [("n", Value::Int(i)), ("pad", Value::from("x".repeat(50)))],
            )?;
        }
        Ok(())
    })
    .unwrap();
    let first = sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(first.b_to_a < 300, "b sent {} bytes back", first.b_to_a);
    let again = sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(again.a_to_b + again.b_to_a < 200, "{again:?}");
}

#[test]
fn pull_only_replica_never_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("c", [("x", 1)]).unwrap();
    let local = b.insert("c", [("only_b", 1)]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Push), cfg(SyncMode::Pull));
    assert_eq!(b.count("c").unwrap(), 2);
    assert!(
        a.get("c", local).unwrap().is_none(),
        "the pull side kept its write to itself"
    );
}

#[test]
fn concurrent_writes_converge_and_record_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a
        .insert("c", [("title", Value::from("v0")), ("n", Value::Int(0))])
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    a.update(
        "c",
        id,
        Patch::new().set("title", "from a").increment("n", 1),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.update(
        "c",
        id,
        Patch::new().set("title", "from b").increment("n", 10),
    )
    .unwrap();
    b.set_add("c", id, "tags", vec!["x".into()]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let r = a.get("c", id).unwrap().unwrap();
    assert_eq!(
        r.fields["title"],
        Value::from("from b"),
        "the later write wins"
    );
    assert_eq!(r.fields["n"], Value::Int(11), "counters add up");
    // The loser is not lost: A recorded it when B's write overwrote its own.
    let conflicts = a.conflicts(Some("c")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(a.open_conflict_count().unwrap(), 1);
    assert_eq!(conflicts[0].loser, Some(Value::from("from a")));
    assert_eq!(conflicts[0].winner, Some(Value::from("from b")));
    // Resolving writes a new value that syncs like any other.
    a.resolve_conflict(conflicts[0].id, Some(Value::from("merged")))
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(
        b.get("c", id).unwrap().unwrap().fields["title"],
        Value::from("merged")
    );
    assert!(a.conflicts(None).unwrap().is_empty());
    assert_eq!(a.open_conflict_count().unwrap(), 0);
}

#[test]
fn deletes_propagate_and_concurrent_update_after_delete_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a.insert("c", [("x", 1), ("y", 2)]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    a.delete("c", id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.update("c", id, Patch::new().set("y", 3)).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let r = a
        .get("c", id)
        .unwrap()
        .expect("the later update keeps the record alive");
    assert_eq!(r.fields.len(), 1);
    assert_eq!(r.fields["y"], Value::Int(3));
    b.delete("c", id).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(a.get("c", id).unwrap().is_none());
}

/// Two databases on fake clocks (ms since the epoch, moved by hand), so that which write is
/// newer is decided by the test, not by scheduling.
fn open_pair_on_clocks(
    dir: &std::path::Path,
) -> (
    Database,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Database,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let open_at = |name: &str, clock: &std::sync::Arc<std::sync::atomic::AtomicU64>| {
        let c = clock.clone();
        Database::open(
            dir.join(format!("{name}.db")),
            blazedb::OpenOptions {
                wall_clock: std::sync::Arc::new(move || c.load(Ordering::SeqCst)),
                ..blazedb::OpenOptions::default()
            },
        )
        .unwrap()
    };
    const T0: u64 = 1_700_000_000_000;
    let (ca, cb) = (common::counter(T0), common::counter(T0));
    (open_at("a", &ca), ca, open_at("b", &cb), cb)
}

/// B edits `f` offline (at t+10); A, which never saw that edit, edits `g` (t+12) and then
/// deletes the record (t+13). The delete's `prev` (A's own t+12) is newer than B's edit,
/// but A never held it: when the delete reaches B, B's edit is dropped as a concurrent loser
/// and listed, not lost silently.
#[test]
fn a_delete_over_an_edit_its_writer_never_saw_lists_the_edit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, clock_a, b, clock_b) = open_pair_on_clocks(dir.path());
    let id = a.insert("c", [("f", "f0"), ("g", "g0")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    common::tick(&clock_b, 10);
    b.update("c", id, Patch::new().set("f", "from b")).unwrap();
    common::tick(&clock_a, 12);
    a.update("c", id, Patch::new().set("g", "from a")).unwrap();
    common::tick(&clock_a, 1);
    a.delete("c", id).unwrap();
    let delete_version = a.record_state("c", id).unwrap().unwrap().cells()[0].version;
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(b.get("c", id).unwrap().is_none(), "the later delete wins");
    assert_eq!(dump(&a), dump(&b));
    let conflicts = b.conflicts(Some("c")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c.field.as_deref(), Some("f"));
    assert_eq!((&c.winner, &c.loser), (&None, &Some(Value::from("from b"))));
    assert_eq!(c.winner_version, delete_version);
}

/// The same for a plain write over a set field: B adds an element A never saw, A adds one
/// and then replaces the whole set. B's element goes with the old set, and B lists it.
#[test]
fn a_plain_write_over_a_set_lists_an_element_its_writer_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (a, clock_a, b, clock_b) = open_pair_on_clocks(dir.path());
    let id = a
        .insert("c", [("tags", Value::List(vec!["x".into()]))])
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    common::tick(&clock_b, 10);
    b.update("c", id, Patch::new().add("tags", vec!["from b".into()]))
        .unwrap();
    common::tick(&clock_a, 12);
    a.update("c", id, Patch::new().add("tags", vec!["from a".into()]))
        .unwrap();
    common::tick(&clock_a, 1);
    a.update(
        "c",
        id,
        Patch::new().set("tags", Value::List(vec!["w".into()])),
    )
    .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        b.get("c", id).unwrap().unwrap().fields["tags"],
        Value::List(vec!["w".into()])
    );
    let conflicts = b.conflicts(Some("c")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].field.as_deref(), Some("tags"));
    assert!(
        conflicts[0].cell.contains("from b"),
        "the loser is B's element: {conflicts:?}"
    );
}

/// A and B share a record; B edits `title` while A deletes the record, later. The delete
/// wins, and B lists its edit as the loser. Resolving that conflict with a value undoes the
/// delete: the record comes back whole, as B held it before the delete, with the chosen
/// value (not holding `title` alone, which is what a bare field write after a delete gives).
#[test]
fn resolving_a_conflict_lost_to_a_delete_restores_the_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a
        .insert("c", [("title", Value::from("v0")), ("n", Value::Int(7))])
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    b.update("c", id, Patch::new().set("title", "from b"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    a.delete("c", id).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(b.get("c", id).unwrap().is_none(), "the later delete wins");
    let conflicts = b.conflicts(Some("c")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c.field.as_deref(), Some("title"));
    assert_eq!((&c.winner, &c.loser), (&None, &Some(Value::from("from b"))));

    b.resolve_conflict(c.id, Some(Value::from("kept"))).unwrap();
    let restored = b.get("c", id).unwrap().expect("resolving undid the delete");
    assert_eq!(
        restored.fields,
        [
            ("n".to_owned(), Value::Int(7)),
            ("title".to_owned(), Value::from("kept"))
        ]
        .into()
    );
    assert!(b.conflicts(None).unwrap().is_empty());
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(a.get("c", id).unwrap().unwrap().fields, restored.fields);
}

/// Resolving with a value a conflict whose record was deleted by anything but the delete
/// that won it (here: deleted afterwards, by a node that had seen both writes), or whose
/// state before that delete history no longer holds, is refused: writing the field alone
/// would bring the record back holding that field only. The conflict stays open, the record
/// deleted, and resolving without a value still settles it.
#[test]
fn resolving_a_conflict_of_a_record_that_cannot_be_restored_is_refused() {
    use blazedb::{Error, HistoryRetention, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a.insert("c", [("title", "v0"), ("other", "x")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    a.update("c", id, Patch::new().set("title", "from a"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.update("c", id, Patch::new().set("title", "from b"))
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let conflict = a.conflicts(Some("c")).unwrap().remove(0);
    assert_eq!(conflict.winner, Some(Value::from("from b")));
    a.delete("c", id).unwrap();

    let refused = a
        .resolve_conflict(conflict.id, Some(Value::from("from a again")))
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("deleted")
            && m.contains("insert")),
        "{refused}"
    );
    assert!(a.get("c", id).unwrap().is_none(), "still deleted");
    assert_eq!(a.conflicts(Some("c")).unwrap().len(), 1, "still open");
    a.resolve_conflict(conflict.id, None).unwrap();
    assert!(a.get("c", id).unwrap().is_none());

    // A conflict lost to a delete, on a node whose history no longer goes back to before it.
    let id = a.insert("c", [("title", "v0"), ("other", "x")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    b.update("c", id, Patch::new().set("title", "from b"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    a.delete("c", id).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    drop(b);
    let forgetful = Database::open(
        dir.path().join("b.db"),
        OpenOptions {
            history: HistoryRetention {
                max_age_ms: None,
                max_entries: Some(0),
            },
            ..OpenOptions::default()
        },
    )
    .unwrap();
    forgetful.compact_history().unwrap();
    let conflict = forgetful.conflicts(Some("c")).unwrap().remove(0);
    assert_eq!(conflict.winner, None, "lost to the delete");
    let refused = forgetful
        .resolve_conflict(conflict.id, Some(Value::from("kept")))
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("history")
            && m.contains("insert")),
        "{refused}"
    );
    assert!(forgetful.get("c", id).unwrap().is_none());
    assert_eq!(forgetful.conflicts(Some("c")).unwrap().len(), 1);
}

#[test]
fn restart_resumes_from_persisted_cursor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        a.transaction(|tx| {
            for i in 0..2000 {
                tx.insert("c", [("n", Value::Int(i))])?;
            }
            Ok(())
        })
        .unwrap();
        sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    }
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("c", [("n", -1)]).unwrap();
    let moved = sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert!(moved.a_to_b < 200, "resent acked data: {moved:?}");
    assert_eq!(b.count("c").unwrap(), 2001);
    let peers = b.peers().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].received, a.last_seq().unwrap());
}

#[test]
fn policies_auto_resolve_and_server_priority() {
    use blazedb::CollectionPolicy;
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = (open(dir.path(), "server"), open(dir.path(), "client"));
    server.set_server_role(true);
    let policy = CollectionPolicy {
        manual_fields: ["title".to_owned()].into(),
        auto_resolve: true,
        server_priority: true,
    };
    server.set_policy("c", policy.clone()).unwrap();
    client
        .set_policy(
            "c",
            CollectionPolicy {
                server_priority: false,
                ..policy
            },
        )
        .unwrap();
    let id = server
        .insert(
            "c",
            [("title", Value::from("t0")), ("price", Value::Int(1))],
        )
        .unwrap();
    sync_pair(&server, &client, cfg(SyncMode::Both), cfg(SyncMode::Both));
    server
        .update(
            "c",
            id,
            Patch::new().set("price", 100).set("title", "server title"),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    client
        .update(
            "c",
            id,
            Patch::new().set("price", 5).set("title", "client title"),
        )
        .unwrap();
    sync_pair(&server, &client, cfg(SyncMode::Both), cfg(SyncMode::Both));
    sync_pair(&server, &client, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&server), dump(&client));
    let r = client.get("c", id).unwrap().unwrap();
    assert_eq!(
        r.fields["price"],
        Value::Int(100),
        "the server's concurrent write wins"
    );
    assert_eq!(r.fields["title"], Value::from("server title"));
    // On the server: the manual field's conflict stays open; the other was auto-resolved.
    let open_conflicts = server.conflicts(Some("c")).unwrap();
    assert_eq!(open_conflicts.len(), 1, "{open_conflicts:?}");
    assert_eq!(open_conflicts[0].field.as_deref(), Some("title"));
    let all = server.conflicts_all(Some("c")).unwrap();
    assert!(all
        .iter()
        .any(|c| c.field.as_deref() == Some("price") && c.resolved));
    // The peer's values are the losers, the server's (written again) the winners: what
    // every replica shows. They were labelled the other way round.
    let labels: Vec<_> = all
        .iter()
        .map(|c| {
            (
                c.field.clone().unwrap(),
                c.winner.clone(),
                c.loser.clone(),
                c.winner_version.node == server.node_id(),
                c.loser_version.node == client.node_id(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        vec![
            (
                "price".to_owned(),
                Some(Value::Int(100)),
                Some(Value::Int(5)),
                true,
                true
            ),
            (
                "title".to_owned(),
                Some(Value::from("server title")),
                Some(Value::from("client title")),
                true,
                true
            ),
        ],
        "{all:?}"
    );
    // Resolving with `None` keeps what is shown: the server's value.
    server.resolve_conflict(open_conflicts[0].id, None).unwrap();
    sync_pair(&server, &client, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(
        client.get("c", id).unwrap().unwrap().fields["title"],
        Value::from("server title")
    );
}

#[test]
fn far_future_timestamps_are_refused_not_adopted() {
    use blazedb::sync::{ErrorCode, Session};
    use blazedb::OpenOptions;
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    // B's clock runs ten minutes fast: beyond the 60 s default limit.
    let fast = OpenOptions {
        wall_clock: std::sync::Arc::new(|| blazedb::store::system_ms() + 600_000),
        ..OpenOptions::default()
    };
    let b = blazedb::Database::open(dir.path().join("b.db"), fast).unwrap();
    let keep = a.insert("c", [("x", 1)]).unwrap();
    b.insert("c", [("y", 2)]).unwrap();
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    let mut error = None;
    for _ in 0..100 {
        while let Some(f) = sb.poll_transmit(0, &b) {
            if let Err(e) = sa.handle_bytes(0, &f, &a) {
                error = Some(e);
            }
        }
        while let Some(f) = sa.poll_transmit(0, &a) {
            let _ = sb.handle_bytes(0, &f, &b);
        }
        if error.is_some() {
            break;
        }
    }
    let e = error.expect("A refuses B's timestamps");
    assert_eq!(e.code, ErrorCode::ClockSkew);
    assert!(e.message.contains("ahead"), "{}", e.message);
    // A is intact, kept its data, and its clock did not jump ahead.
    assert_eq!(a.count("c").unwrap(), 1);
    assert!(a.get("c", keep).unwrap().is_some());
    let next = a.insert("c", [("z", 3)]).unwrap();
    let v = a.history("c", next).unwrap()[0].version;
    assert!(v.hlc.wall_ms() < blazedb::store::system_ms() + 60_000);
}

/// Transactions that each overwrite part of the one before (a hot record every transaction
/// updates) link into one unit however many there are: `batches` transactions, each setting
/// `hot.n = i` and inserting `per_batch` items of batch `i` with known ids.
fn linked_chain(
    db: &blazedb::Database,
    batches: i64,
    per_batch: u128,
) -> (RecordId, Vec<Vec<RecordId>>) {
    let hot = RecordId(1u128.to_be_bytes());
    let mut ids = Vec::new();
    for i in 1..=batches {
        let batch: Vec<RecordId> = (0..per_batch)
            .map(|k| RecordId(((i as u128) << 32 | k | 1 << 100).to_be_bytes()))
            .collect();
        db.transaction(|tx| {
            tx.upsert("hot", hot, [("n", Value::Int(i))])?;
            for id in &batch {
                tx.insert_with_id(
                    "items",
                    *id,
                    [("batch", Value::Int(i)), ("x", Value::Int(7))],
                )?;
            }
            Ok(())
        })
        .unwrap();
        ids.push(batch);
    }
    (hot, ids)
}

/// The chain is visible at `db` all at once or not at all: with `hot.n = n`, every item of
/// batch `n` is there and none of batch `n + 1`.
fn check_chain_whole(db: &blazedb::Database, hot: RecordId, ids: &[Vec<RecordId>]) -> i64 {
    let n = match db.get("hot", hot).unwrap() {
        Some(r) => match r.fields["n"] {
            Value::Int(n) => n,
            ref v => panic!("hot.n = {v:?}"),
        },
        None => 0,
    };
    if n > 0 {
        for id in [ids[n as usize - 1][0], *ids[n as usize - 1].last().unwrap()] {
            assert!(
                db.get("items", id).unwrap().is_some(),
                "hot.n = {n} but batch {n} is missing"
            );
        }
    }
    if let Some(next) = ids.get(n as usize) {
        assert!(
            db.get("items", next[0]).unwrap().is_none(),
            "batch {} visible before hot.n moved",
            n + 1
        );
    }
    n
}

/// Pump two sessions until both are caught up, calling `after` after every frame B receives
/// (to check what B shows between frames). Returns the frames B received.
fn pump_watching(
    (a, sa): (&blazedb::Database, &mut Session),
    (b, sb): (&blazedb::Database, &mut Session),
    mut after: impl FnMut(),
) -> usize {
    let mut frames = 0;
    loop {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(0, a) {
            sb.handle_bytes(0, &f, b).unwrap();
            frames += 1;
            after();
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(0, b) {
            sa.handle_bytes(0, &f, a).unwrap();
            progress = true;
        }
        if !progress && sa.is_caught_up(a).unwrap() && sb.is_caught_up(b).unwrap() {
            return frames;
        }
        assert!(progress, "stalled");
    }
}

fn unit_rows(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM unit_staging", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_unit_too_large_for_memory_is_staged_on_disk_and_applied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    // Known to each other first, so the chain travels in the feed (not a new peer's snapshot).
    a.insert("notes", [("text", "hello")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    // 1,000 transactions of 31 records, 3 cells each: ~93k cells in one unit, beyond what a
    // receiver holds in memory (UNIT_STAGE_CELLS).
    let (hot, ids) = linked_chain(&a, 1_000, 30);
    const { assert!(93_000 > blazedb::limits::UNIT_STAGE_CELLS) };
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    // After every frame: the chain is all there or not at all.
    let frames = pump_watching((&a, &mut sa), (&b, &mut sb), || {
        check_chain_whole(&b, hot, &ids);
    });
    assert!(frames > 10, "the unit came in {frames} frames");
    assert!(sb.stats().unit_parts_staged >= 1, "{:?}", sb.stats());
    assert_eq!(check_chain_whole(&b, hot, &ids), 1_000);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(
        unit_rows(&dir.path().join("b.db")),
        0,
        "staged parts are deleted with the apply"
    );
}

/// Pump a new pair of sessions until B has staged part of A's unit on disk; B's session is
/// returned in the middle of the unit.
fn until_b_staged_a_part(a: &Database, b: &Database) -> Session {
    let mut sa = Session::new(a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(b, cfg(SyncMode::Both), 0).unwrap();
    for _ in 0..10_000 {
        while let Some(f) = sb.poll_transmit(0, b) {
            sa.handle_bytes(0, &f, a).unwrap();
        }
        while let Some(f) = sa.poll_transmit(0, a) {
            sb.handle_bytes(0, &f, b).unwrap();
            if sb.stats().unit_parts_staged >= 1 {
                return sb;
            }
        }
    }
    panic!("B never staged a part of A's unit");
}

#[test]
fn a_unit_cut_off_by_a_disconnect_is_discarded_and_sent_again_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("notes", [("text", "hello")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let (hot, ids) = linked_chain(&a, 1_000, 30);
    // Deliver A's frames until B has staged part of the unit on disk, then drop the link
    // (the session goes without being told: the process died).
    drop(until_b_staged_a_part(&a, &b));
    assert_eq!(
        check_chain_whole(&b, hot, &ids),
        0,
        "nothing of a cut-off unit is visible"
    );
    assert!(unit_rows(&dir.path().join("b.db")) >= 1);
    // B restarts from its file; the unit comes again, whole. The cut-off session's parts are
    // not the new session's to delete (another process could still be receiving them) until
    // they are abandoned: here a day passes, by ageing the rows.
    drop(b);
    rusqlite::Connection::open(dir.path().join("b.db"))
        .unwrap()
        .execute("UPDATE unit_staging SET staged_ms = 0", [])
        .unwrap();
    let b = open(dir.path(), "b");
    assert_eq!(check_chain_whole(&b, hot, &ids), 0);
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(check_chain_whole(&b, hot, &ids), 1_000);
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(unit_rows(&dir.path().join("b.db")), 0);
}

/// A session whose connection ends in the middle of a unit lets go of the parts it staged
/// (the sender sends the unit again whole): they are not left on disk until they count as
/// abandoned, a day later.
#[test]
fn a_session_cut_off_mid_unit_discards_its_staged_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("notes", [("text", "hello")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let (hot, ids) = linked_chain(&a, 1_000, 30);
    let mut sb = until_b_staged_a_part(&a, &b);
    assert!(unit_rows(&dir.path().join("b.db")) >= 1);
    sb.transport_closed(1, &b);
    assert_eq!(unit_rows(&dir.path().join("b.db")), 0);
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(check_chain_whole(&b, hot, &ids), 1_000);
    assert_eq!(dump(&a), dump(&b));
}

#[test]
fn a_chain_longer_than_the_transaction_limit_still_arrives_as_one_unit() {
    // ~1.05M cells linked into one unit: more than one transaction may carry
    // (TRANSACTION_CELLS_MAX), so no receiver could hold it in memory.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("notes", [("text", "hello")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let (hot, ids) = linked_chain(&a, 3_500, 100);
    const { assert!(3_500 * 301 > blazedb::limits::TRANSACTION_CELLS_MAX) };
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    pump_watching((&a, &mut sa), (&b, &mut sb), || {
        check_chain_whole(&b, hot, &ids);
    });
    assert!(sb.stats().unit_parts_staged >= 10, "{:?}", sb.stats());
    assert_eq!(check_chain_whole(&b, hot, &ids), 3_500);
    assert_eq!(b.count("items").unwrap(), 350_000);
}

#[test]
fn watchers_see_a_staged_unit_once_after_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("notes", [("text", "hello")]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let (hot, ids) = linked_chain(&a, 1_000, 30);
    let items = b.watch("items", None, Some(100_000)).unwrap();
    let hots = b.watch("hot", None, Some(100_000)).unwrap();
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    let mut events = Vec::new();
    pump_watching((&a, &mut sa), (&b, &mut sb), || {
        let n = check_chain_whole(&b, hot, &ids);
        while let Some(item) = items.try_recv() {
            // Events come after the commit, never for a part of the unit.
            assert_eq!(n, 1_000, "an event before the unit committed");
            events.push(item);
        }
    });
    assert!(sb.stats().unit_parts_staged >= 1, "{:?}", sb.stats());
    let mut seen = std::collections::BTreeSet::new();
    for item in events {
        match item {
            blazedb::WatchItem::Event(e) => {
                assert_eq!(e.kind, blazedb::EventKind::Inserted);
                assert_eq!(e.record.rev, 1);
                assert!(seen.insert(e.record.id), "two events for {}", e.record.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.len(), 30_000);
    // The hot record's last event holds its final value.
    let mut last = None;
    while let Some(item) = hots.try_recv() {
        last = Some(item);
    }
    match last {
        Some(blazedb::WatchItem::Event(e)) => assert_eq!(e.record.fields["n"], Value::Int(1_000)),
        other => panic!("{other:?}"),
    }
}

/// Two synced databases whose sessions send every commit as its own unit at once (a full
/// batch goes out even while units are unacknowledged).
fn unit_per_commit_pair(dir: &std::path::Path) -> (Database, Session, Database, Session) {
    let (a, b) = (open(dir, "a"), open(dir, "b"));
    let small_batches = SessionConfig {
        batch_cells_max: 1,
        window_units: 1_000,
        ..cfg(SyncMode::Both)
    };
    let mut sa = Session::new(&a, small_batches.clone(), 0).unwrap();
    let mut sb = Session::new(&b, small_batches, 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    (a, sa, b, sb)
}

#[test]
fn units_that_arrive_in_one_read_are_applied_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut sa, b, mut sb) = unit_per_commit_pair(dir.path());
    let b_commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    b.on_commit({
        let n = b_commits.clone();
        std::sync::Arc::new(move || {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    });

    // 30 commits, each sent as its own unit before the next is made; B has read none yet.
    let mut read = Vec::new();
    let mut units = 0;
    for i in 0..30i64 {
        a.insert("notes", [("n", Value::Int(i))]).unwrap();
        while let Some(f) = sa.poll_transmit(0, &a) {
            read.extend(f);
            units += 1;
        }
    }
    assert!(units >= 30, "expected a frame per commit, got {units}");
    // Then a transaction of 50 records: several frames, of which B gets only the first.
    a.transaction(|tx| {
        for i in 0..50i64 {
            tx.insert("bulk", [("n", Value::Int(i))])?;
        }
        Ok(())
    })
    .unwrap();
    let mut bulk_frames = Vec::new();
    while let Some(f) = sa.poll_transmit(0, &a) {
        bulk_frames.push(f);
    }
    assert!(bulk_frames.len() > 1, "the bulk unit fits one frame");
    read.extend(bulk_frames.remove(0));

    // One read: the 30 complete units are applied in ONE transaction and acknowledged once;
    // the unit in progress is not visible.
    sb.handle_bytes(0, &read, &b).unwrap();
    assert_eq!(b_commits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(b.count("notes").unwrap(), 30);
    assert_eq!(b.count("bulk").unwrap(), 0);
    // B's answers (frame kind is the byte after the one-byte length).
    let mut acks = Vec::new();
    while let Some(f) = sb.poll_transmit(0, &b) {
        acks.push(f);
    }
    for f in &acks {
        sa.handle_bytes(0, f, &a).unwrap();
    }
    let ack_frames = acks.iter().filter(|f| f[1] == 0x04).count();
    assert_eq!(ack_frames, 1, "one ACK for the whole group");
    let progress = sa.progress();
    assert_eq!(
        progress.unacked_units, 1,
        "only the bulk unit is unacknowledged"
    );
    assert!(progress.acked < progress.sent_through);

    // The rest of the bulk unit completes it: applied whole, in one more transaction.
    let rest: Vec<u8> = bulk_frames.concat();
    sb.handle_bytes(0, &rest, &b).unwrap();
    assert_eq!(b_commits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(b.count("bulk").unwrap(), 50);
    pump(&a, &mut sa, &b, &mut sb);
    assert!(sa.is_caught_up(&a).unwrap() && sb.is_caught_up(&b).unwrap());
    assert_eq!(dump(&a), dump(&b));
}

/// A bad frame ends the session, but the complete units that arrived in the same read
/// before it are applied first — also when the bad frame is one that does not break a group
/// (a PING whose payload does not decode).
#[test]
fn units_before_a_malformed_ping_in_the_same_read_are_applied() {
    use blazedb::sync::frame::FrameEncoder;
    use blazedb::sync::message::kind;

    let dir = tempfile::tempdir().unwrap();
    let (a, mut sa, b, mut sb) = unit_per_commit_pair(dir.path());
    let mut read = Vec::new();
    for i in 0..5i64 {
        a.insert("notes", [("n", Value::Int(i))]).unwrap();
        while let Some(f) = sa.poll_transmit(0, &a) {
            read.extend(f);
        }
    }
    // The next frame in A's sequence (so its index and checksum are right): a PING whose
    // nonce is not a varint.
    let mut enc = FrameEncoder::default();
    for _ in 0..sa.stats().frames_sent {
        enc.encode(kind::PING, false, &[]);
    }
    read.extend(enc.encode(kind::PING, false, &[0xff; 11]));
    let e = sb.handle_bytes(0, &read, &b).unwrap_err();
    assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
    assert_eq!(
        b.count("notes").unwrap(),
        5,
        "the units before it were applied"
    );
}

/// While A waits for B's ACK of a unit and only a trickle is left, A's commits may wait
/// (`commit_can_wait`: drivers then skip waking on them); the ACK lets A send them all as
/// one unit, and nothing is lost.
#[test]
fn commits_wait_for_the_ack_of_the_unit_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    assert!(!sa.commit_can_wait(&a), "nothing in flight");

    a.insert("notes", [("n", Value::Int(1))]).unwrap();
    let mut to_b = Vec::new();
    while let Some(f) = sa.poll_transmit(0, &a) {
        to_b.push(f);
    }
    assert!(!to_b.is_empty());
    for f in &to_b {
        sb.handle_bytes(0, f, &b).unwrap();
    }
    assert!(
        sa.commit_can_wait(&a),
        "a unit in flight, nothing left to send"
    );
    // Two more commits while B's ACK is held back: A sends nothing for them yet.
    a.insert("notes", [("n", Value::Int(2))]).unwrap();
    a.insert("notes", [("n", Value::Int(3))]).unwrap();
    assert!(sa.commit_can_wait(&a), "a trickle waits for the ACK");
    assert!(sa.poll_transmit(0, &a).is_none());

    while let Some(f) = sb.poll_transmit(0, &b) {
        sa.handle_bytes(0, &f, &a).unwrap();
    }
    assert!(
        !sa.commit_can_wait(&a),
        "acknowledged: the waiting commits go now"
    );
    pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(b.count("notes").unwrap(), 3);
}

/// The frames `s` has to send now.
fn drain(s: &mut Session, db: &Database) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit(0, db)).collect()
}

/// A unit's apply takes new local feed positions that hold only the sender's changes: the
/// receiver answers with its ACK alone (no feed read, no CAUGHT_UP for them). A local commit
/// made before the apply and not sent yet still goes out, and a reconnect later re-sends
/// nothing.
#[test]
fn an_applied_unit_is_answered_with_its_ack_alone() {
    const ACK: u8 = 0x04;
    const CHANGES: u8 = 0x03;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);

    for i in 0..3i64 {
        a.insert("notes", [("n", Value::Int(i))]).unwrap();
        for f in drain(&mut sa, &a) {
            sb.handle_bytes(0, &f, &b).unwrap();
        }
        let answer = drain(&mut sb, &b);
        let kinds: Vec<u8> = answer.iter().map(|f| f[1]).collect();
        assert_eq!(kinds, [ACK], "round {i}: B answered more than its ACK");
        for f in &answer {
            sa.handle_bytes(0, f, &a).unwrap();
        }
        assert_eq!(sb.progress().sent_through, b.last_seq().unwrap());
        assert!(sa.is_caught_up(&a).unwrap() && sb.is_caught_up(&b).unwrap());
    }

    // B commits a change of its own and, before its session sends it, applies a unit from A
    // at the positions after it: B's change is not passed over with A's.
    let mine = b.insert("notes", [("from", "b")]).unwrap();
    a.insert("notes", [("n", Value::Int(3))]).unwrap();
    for f in drain(&mut sa, &a) {
        sb.handle_bytes(0, &f, &b).unwrap();
    }
    let answer = drain(&mut sb, &b);
    assert!(
        answer.iter().any(|f| f[1] == CHANGES),
        "B's own change waits"
    );
    for f in &answer {
        sa.handle_bytes(0, f, &a).unwrap();
    }
    pump(&a, &mut sa, &b, &mut sb);
    assert!(
        a.get("notes", mine).unwrap().is_some(),
        "B's change was lost"
    );
    assert_eq!(dump(&a), dump(&b));
    drop((sa, sb));

    // A reconnect resumes from A's received cursor, which stayed behind B's passed-over
    // positions: they are read again and skipped; no cell travels either way.
    let mut sa = Session::new(&a, cfg(SyncMode::Both), 0).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(sa.stats().cells_sent + sb.stats().cells_sent, 0);
    assert_eq!(dump(&a), dump(&b));
}

/// [`pump`] at time `now_ms`.
fn pump_at(a: &Database, sa: &mut Session, b: &Database, sb: &mut Session, now_ms: u64) {
    for _ in 0..10_000 {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(now_ms, a) {
            sb.handle_bytes(now_ms, &f, b).unwrap();
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(now_ms, b) {
            sa.handle_bytes(now_ms, &f, a).unwrap();
            progress = true;
        }
        if !progress && sa.is_caught_up(a).unwrap() && sb.is_caught_up(b).unwrap() {
            return;
        }
        assert!(progress, "stalled before catching up");
    }
    panic!("did not converge");
}

/// A node that only receives still announces how far it is, at most once per
/// `ECHO_CAUGHT_UP_INTERVAL_MS`: its peer's received cursor follows, so when they reconnect
/// (SUBSCRIBE from that cursor) its acknowledged cursor reaches its head, and its GC
/// collects the tombstones the peer sent it.
#[test]
fn a_node_that_only_receives_collects_the_tombstones_it_received() {
    use blazedb::limits::ECHO_CAUGHT_UP_INTERVAL_MS;
    use blazedb::{GcOptions, PeerDirection};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let mut now = 1_000_000;
    let mut sa = Session::new(&a, cfg(SyncMode::Both), now).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), now).unwrap();
    let ids: Vec<RecordId> = (0..5i64)
        .map(|i| a.insert("notes", [("n", Value::Int(i))]).unwrap())
        .collect();
    pump_at(&a, &mut sa, &b, &mut sb, now);
    for id in &ids[..3] {
        now += ECHO_CAUGHT_UP_INTERVAL_MS;
        a.delete("notes", *id).unwrap();
        pump_at(&a, &mut sa, &b, &mut sb, now);
    }
    assert_eq!(b.count("notes").unwrap(), 2);
    assert_eq!(
        a.peer_cursor(b.node_id(), PeerDirection::Received).unwrap(),
        b.last_seq().unwrap(),
        "B did not announce its head"
    );
    drop((sa, sb));
    let mut sa = Session::new(&a, cfg(SyncMode::Both), now).unwrap();
    let mut sb = Session::new(&b, cfg(SyncMode::Both), now).unwrap();
    pump_at(&a, &mut sa, &b, &mut sb, now);
    assert_eq!(
        b.peer_cursor(a.node_id(), PeerDirection::Acked).unwrap(),
        b.last_seq().unwrap(),
        "B's acknowledged cursor stayed behind its head"
    );
    let report = b.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.horizon, b.last_seq().unwrap());
    assert_eq!(report.tombstones_purged, 3, "{report:?}");
    assert_eq!(dump(&a), dump(&b));
}

/// A CAUGHT_UP waits for the complete units before it to be applied. When the unit after it
/// completes with more cells than the receiver keeps in memory, that unit and the waiting
/// ones are applied at once, and the CAUGHT_UP must still count: it was dropped, so the
/// receiver did not know it had everything until the sender's next one, which never comes
/// when nothing more is committed (simulation, seed 211786 with `BLAZEDB_SIM_PERTURB`).
#[test]
fn a_caught_up_before_a_unit_that_overflows_the_group_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let one_cell_frames = SessionConfig {
        batch_cells_max: 1,
        window_units: 1_000,
        ..cfg(SyncMode::Both)
    };
    let small_memory = SessionConfig {
        unit_stage_cells: 4,
        ..cfg(SyncMode::Both)
    };
    let mut sa = Session::new(&a, one_cell_frames, 0).unwrap();
    let mut sb = Session::new(&b, small_memory, 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    // One read brings: the first commit's unit (2 cells, 2 frames), the CAUGHT_UP after it,
    // then the second commit's unit, whose last frame takes what waits past 4 cells.
    a.insert("notes", [("n", Value::Int(1))]).unwrap();
    let mut read: Vec<u8> = drain(&mut sa, &a).concat();
    let first = a.last_seq().unwrap();
    a.insert("notes", [("n", Value::Int(2))]).unwrap();
    let second = drain(&mut sa, &a);
    // Its own CAUGHT_UP (the last frame) comes in a later read.
    let (later, unit) = second.split_last().unwrap();
    read.extend(unit.concat());
    sb.handle_bytes(0, &read, &b).unwrap();
    assert_eq!(b.count("notes").unwrap(), 2);
    assert_eq!(
        sb.progress().peer_caught_up,
        Some(first),
        "the CAUGHT_UP before the second unit was dropped"
    );
    sb.handle_bytes(0, later, &b).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    assert!(sa.is_caught_up(&a).unwrap() && sb.is_caught_up(&b).unwrap());
    assert_eq!(dump(&a), dump(&b));
}

/// Records whose size is in their set elements (an element's value is part of its cell's
/// key) are split over CHANGES frames by that size: three records of three 950 kB elements,
/// written in one transaction to a copy already in sync (so no snapshot carries them),
/// travel in frames under the 8 MiB limit, and the copy converges (they made one 9 MB frame
/// that the receiver refused with TOO_LARGE, again at every reconnect; found by review).
#[test]
fn large_set_elements_stay_within_the_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    a.insert("files", [("name", Value::Int(-1))]).unwrap();
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    pump(&a, &mut sa, &b, &mut sb);
    // Incompressible bytes (LZ4 would shrink a repeated byte to nothing).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    // Per record three sets of one 950 kB element (a set stays within the 1 MiB value
    // limit as a whole): 8.5 MB in all.
    let parts: Vec<Vec<Value>> = (0..3)
        .map(|_| (0..3).map(|_| Value::Bytes(noise(950_000))).collect())
        .collect();
    // One transaction: a unit never splits a commit, so only the frame split parts them.
    a.transaction(|tx| {
        for (r, p) in parts.iter().enumerate() {
            let id = tx.insert("files", [("name", Value::Int(r as i64))])?;
            let mut patch = Patch::new();
            for (k, e) in p.iter().enumerate() {
                patch = patch.add(format!("part{k}"), vec![e.clone()]);
            }
            tx.update("files", id, patch)?;
        }
        Ok(())
    })
    .unwrap();
    let largest = std::cell::Cell::new(0usize);
    common::pump_watching(&a, &mut sa, &b, &mut sb, |f| {
        largest.set(largest.get().max(f.len()))
    });
    assert!(
        largest.get() < blazedb::limits::FRAME_BYTES_MAX,
        "a frame of {} bytes",
        largest.get()
    );
    assert_eq!(dump(&a), dump(&b));
}

/// Intervals configured near `u64::MAX` mean "never": the next timer saturates instead of
/// wrapping into the past (a panic in debug builds, a timer firing in a loop in release).
#[test]
fn huge_intervals_never_fire() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let cfg = SessionConfig {
        ping_interval_ms: u64::MAX,
        idle_timeout_ms: u64::MAX,
        ..SessionConfig::default()
    };
    let s = Session::new(&a, cfg, 5).unwrap();
    assert_eq!(s.poll_timeout(), Some(u64::MAX));
}

/// A peer that keeps sending but never reads what it is sent: each PING queues a PONG, and
/// without a bound a session held one per frame in memory for good (a relay grew by 213 MB
/// for one client sending 4 million PINGs). Past `QUEUED_FRAMES_MAX` unsent frames the
/// session ends with `RATE_LIMITED`, and what it holds stays bounded.
#[test]
fn a_peer_that_never_reads_cannot_pile_up_replies() {
    use blazedb::limits::{PROTOCOL_VERSION, QUEUED_FRAMES_MAX};
    use blazedb::sync::frame::FrameEncoder;
    use blazedb::sync::message::encode_simple;
    use blazedb::sync::{ErrorCode, Hello, Message, Session, SessionConfig, SyncMode};
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "a");
    let mut session = Session::new(&db, SessionConfig::default(), 0).unwrap();
    let mut enc = FrameEncoder::default();
    let frame = |enc: &mut FrameEncoder, m: &Message| {
        let (k, p) = encode_simple(m);
        enc.encode(k, false, &p)
    };
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        node: blazedb::NodeId([3; 16]),
        last_seq: blazedb::Seq(0),
        mode: SyncMode::Both,
        server: false,
        caps: 0,
        token: String::new(),
    });
    session
        .handle_bytes(0, &frame(&mut enc, &hello), &db)
        .unwrap();
    let mut pings = Vec::new();
    for nonce in 0..(QUEUED_FRAMES_MAX as u64 * 2) {
        pings.extend(frame(&mut enc, &Message::Ping { nonce }));
    }
    let err = session.handle_bytes(1, &pings, &db).unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited, "{}", err.message);
    let mut queued = 0;
    while session.poll_transmit(2, &db).is_some() {
        queued += 1;
    }
    assert!(queued <= QUEUED_FRAMES_MAX + 8, "{queued} frames queued");
}

/// The bound counts replies only: a page of the feed that makes more than
/// `QUEUED_FRAMES_MAX` frames (here one transaction of 10,000 inserts, one cell per frame)
/// waits in the queue while it drains, and the peer's PING meanwhile is no reason to end.
#[test]
fn a_long_page_of_the_feed_is_not_taken_for_unread_replies() {
    use blazedb::limits::QUEUED_FRAMES_MAX;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    // Known to each other, so the page goes as feed frames, not as a snapshot.
    a.insert("c", [("n", Value::Int(-1))]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let n = QUEUED_FRAMES_MAX as i64 + 1_000;
    a.transaction(|tx| {
        for i in 0..n {
            tx.insert("c", [("n", Value::Int(i))])?;
        }
        Ok(())
    })
    .unwrap();
    let small = || SessionConfig {
        batch_cells_max: 1,
        ..SessionConfig::default()
    };
    let mut sa = Session::new(&a, small(), 0).unwrap();
    let mut sb = Session::new(&b, small(), 0).unwrap();
    // Handshake and SUBSCRIBE, then the first frame of A's page; B pings meanwhile.
    for _ in 0..4 {
        while let Some(f) = sb.poll_transmit(0, &b) {
            sa.handle_bytes(0, &f, &a).unwrap();
        }
        if let Some(f) = sa.poll_transmit(0, &a) {
            sb.handle_bytes(0, &f, &b).unwrap();
        }
    }
    sb.handle_timeout(6_000, &b);
    let mut pinged = false;
    while let Some(f) = sb.poll_transmit(6_000, &b) {
        pinged = true;
        sa.handle_bytes(6_000, &f, &a).unwrap();
    }
    assert!(pinged, "B pinged while A's page waited");
    pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(b.count("c").unwrap(), n as u64 + 1);
}

/// Two replicas each grow one record to 3 MB, under `RECORD_BYTES_MAX` (4 MiB); merged, it is
/// 6 MB. Each side must take the other's changes (a merge refused for its size is refused on
/// every retry: sync would stop for good), and writes here may then keep or shrink the record,
/// but not grow it.
#[test]
fn concurrent_writes_merging_over_the_record_size_limit_still_sync() {
    use blazedb::limits::RECORD_BYTES_MAX;
    use blazedb::{Error, WriteError};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "sa"), open(dir.path(), "sb"));
    let id = RecordId([9; 16]);
    a.insert_with_id("c", id, [("x", 1)]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let big = |c: char| Value::from(c.to_string().repeat(1_000_000));
    let grow = |db: &Database, names: [&str; 3], fill: [char; 3]| {
        let mut patch = Patch::new();
        for (name, c) in names.into_iter().zip(fill) {
            patch = patch.set(name, big(c));
        }
        db.update("c", id, patch).unwrap();
    };
    grow(&a, ["a1", "a2", "a3"], ['a', 'b', 'c']);
    grow(&b, ["b1", "b2", "b3"], ['d', 'e', 'f']);

    // Applied directly, each side takes the other's changes.
    let from_a = a.changes_since(blazedb::Seq(0), 100_000, None).unwrap();
    b.apply_changes(a.node_id(), &from_a.changes, None).unwrap();
    // And through a session, both copies converge on the merged record.
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let merged = a.get("c", id).unwrap().unwrap();
    assert_eq!(merged.fields.len(), 7);

    // Over the limit now: a write that adds to it is refused, with nothing stored...
    let refused = a.update("c", id, Patch::new().set("a4", big('g')));
    assert!(
        matches!(
            refused,
            Err(Error::Write(WriteError::Limit { what: "encoded record size", max, .. }))
                if max == RECORD_BYTES_MAX
        ),
        "{refused:?}"
    );
    assert_eq!(a.get("c", id).unwrap().unwrap().fields.len(), 7);
    // ... one that keeps or shrinks it passes, and syncs.
    a.update("c", id, Patch::new().set("x", 2)).unwrap();
    b.update("c", id, Patch::new().unset("b3")).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let fields = b.get("c", id).unwrap().unwrap().fields;
    assert_eq!(fields.len(), 6);
    assert_eq!(fields["x"], Value::Int(2));
}

/// A ping interval of 0 (or anything below the minimum) counts as
/// `PING_INTERVAL_MS_MIN`: the session does not ping at every timer tick, which made a driver
/// send PINGs in a tight loop.
#[test]
fn a_ping_interval_below_the_minimum_counts_as_the_minimum() {
    use blazedb::limits::PING_INTERVAL_MS_MIN;
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let cfg = SessionConfig {
        ping_interval_ms: 0,
        ..SessionConfig::default()
    };
    let start = 5;
    let mut s = Session::new(&a, cfg, start).unwrap();
    assert_eq!(s.poll_timeout(), Some(start + PING_INTERVAL_MS_MIN));
    drain(&mut s, &a); // The HELLO.
    s.handle_timeout(start + PING_INTERVAL_MS_MIN - 1, &a);
    assert_eq!(
        drain(&mut s, &a).len(),
        0,
        "no PING before the minimum interval"
    );
    s.handle_timeout(start + PING_INTERVAL_MS_MIN, &a);
    assert_eq!(
        drain(&mut s, &a).len(),
        1,
        "one PING at the minimum interval"
    );
}

/// The error a closed session ended with (its `Closed` event).
fn closed_error(s: &mut Session) -> blazedb::sync::SyncError {
    std::iter::from_fn(|| s.poll_event())
        .find_map(|e| match e {
            SessionEvent::Closed(error) => Some(error),
            _ => None,
        })
        .expect("closed with an error")
}

/// A connection that stays silent from the start (no HELLO: another kind of server on the
/// port) times out saying so, not "the peer or the network is down"; one that went quiet
/// after its HELLO keeps that message.
#[test]
fn a_peer_that_never_says_hello_is_named_as_probably_not_blazedb() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let cfg = SessionConfig {
        idle_timeout_ms: 15_000,
        ..SessionConfig::default()
    };
    let mut s = Session::new(&a, cfg, 0).unwrap();
    drain(&mut s, &a); // Our HELLO.
    s.handle_timeout(15_000, &a);
    assert!(s.is_closed());
    let ended = closed_error(&mut s);
    assert_eq!(ended.code, ErrorCode::Timeout);
    assert!(
        ended
            .message
            .contains("said no HELLO in 15000 ms although the connection is open"),
        "{ended}"
    );
    assert!(
        ended
            .to_string()
            .starts_with("sync session ended (TIMEOUT): "),
        "{ended}"
    );
}

/// A peer of another protocol version is refused at its HELLO with UNSUPPORTED_VERSION,
/// naming both versions, which side is older and what to upgrade, before anything else of it
/// is read; the ERROR frame it gets says the same from its side, and our side's report says
/// we detected it.
#[test]
fn a_peer_of_another_protocol_version_is_told_both_versions() {
    use blazedb::limits::PROTOCOL_VERSION;
    use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
    use blazedb::sync::message::{decode_simple, encode_simple, kind, Hello, Message};
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let mut s = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let old = Hello {
        version: PROTOCOL_VERSION - 1,
        node: blazedb::NodeId([7; 16]),
        last_seq: blazedb::Seq(0),
        mode: SyncMode::Both,
        server: false,
        caps: 0,
        token: String::new(),
    };
    let (k, payload) = encode_simple(&Message::Hello(old));
    let frame = FrameEncoder::default().encode(k, false, &payload);
    let _ = s.handle_bytes(1, &frame, &a);
    assert!(s.is_closed());
    let ended = closed_error(&mut s);
    assert_eq!(ended.code, ErrorCode::UnsupportedVersion);
    assert!(!ended.remote);
    let expected = format!(
        "the peer speaks sync protocol {}, this build {PROTOCOL_VERSION}: the peer is older, \
         upgrade the peer's BlazeDB",
        PROTOCOL_VERSION - 1
    );
    assert!(ended.message.contains(&expected), "{ended}");
    assert!(ended.message.contains("README, \"Upgrading\""), "{ended}");
    assert!(ended
        .to_string()
        .starts_with("sync session ended (UNSUPPORTED_VERSION): "));
    // What the old peer reads: our HELLO, then the ERROR.
    let mut dec = FrameDecoder::default();
    for bytes in drain(&mut s, &a) {
        dec.push(&bytes);
    }
    let mut said = None;
    while let Some(f) = dec.next_frame().unwrap() {
        if f.kind == kind::ERROR {
            said = Some(decode_simple(f.kind, &f.payload).unwrap());
        }
    }
    match said {
        Some(Message::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            let told = format!(
                "this peer speaks sync protocol {PROTOCOL_VERSION}, yours {}: yours is older, \
                 upgrade your BlazeDB",
                PROTOCOL_VERSION - 1
            );
            assert!(message.contains(&told), "{message}");
            assert!(message.contains("README, \"Upgrading\""), "{message}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
}

/// Two sessions receiving from the same peer into one file (two processes on the file, a
/// relay with two connections from one node) stage their units apart: one starting a unit
/// neither replaces nor deletes the other's parts, each applies exactly its own, and an apply
/// that does not find exactly its parts fails without moving the cursor (the unit is sent
/// again) instead of storing it past transactions it never applied.
#[test]
fn two_sessions_with_one_peer_stage_their_units_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (open(dir.path(), "src"), open(dir.path(), "dst"));
    for n in 1..=3 {
        src.insert("docs", [("n", Value::Int(n))]).unwrap();
    }
    let feed = src.changes_since(Seq(0), 1_000, None).unwrap().changes;
    let tx =
        |seq: u64| -> Vec<Change> { feed.iter().filter(|c| c.seq == Seq(seq)).cloned().collect() };
    let peer = src.node_id();
    let (x, y) = (StagingId::random(), StagingId::random());
    dst.unit_stage(peer, x, 0, &tx(1)).unwrap();
    dst.unit_stage(peer, x, 1, &tx(2)).unwrap();
    // The other session starts its own unit of the same peer, its part 0 among x's indexes.
    dst.unit_stage(peer, y, 0, &tx(2)).unwrap();

    let x_parts = StagedParts {
        staging: x,
        count: 2,
    };
    dst.apply_unit(peer, x_parts, tx(3), Some(Seq(3)), None)
        .unwrap();
    assert_eq!(
        dst.count("docs").unwrap(),
        3,
        "x's parts and tail, all of them"
    );
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        Seq(3)
    );

    // y staged one part: an apply expecting two finds a part missing and changes nothing.
    let too_many = StagedParts {
        staging: y,
        count: 2,
    };
    let err = dst
        .apply_unit(peer, too_many, Vec::new(), Some(Seq(9)), None)
        .unwrap_err();
    assert!(err.to_string().contains("sent again"), "{err}");
    assert_eq!(
        dst.peer_cursor(peer, PeerDirection::Received).unwrap(),
        Seq(3)
    );
    // Its one part is still there, untouched by x's apply.
    let y_parts = StagedParts {
        staging: y,
        count: 1,
    };
    dst.apply_unit(peer, y_parts, Vec::new(), Some(Seq(3)), None)
        .unwrap();
    assert_eq!(dump(&src), dump(&dst));
}

/// Two handles on one file resolving the same conflict at the same time: exactly one
/// succeeds, the other is told it is no longer open. (The check ran before the write
/// transaction, so both could find it open and both write their value; the unit test
/// `a_conflict_resolved_meanwhile_through_another_handle_is_refused` forces that order.)
#[test]
fn a_conflict_is_resolved_once_when_two_handles_race() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let ids: Vec<RecordId> = (0..16)
        .map(|i| a.insert("c", [("t", Value::Int(i))]).unwrap())
        .collect();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    for (db, v) in [(&a, "from a"), (&b, "from b")] {
        std::thread::sleep(std::time::Duration::from_millis(2));
        db.transaction(|tx| {
            for id in &ids {
                tx.update("c", *id, Patch::new().set("t", v))?;
            }
            Ok(())
        })
        .unwrap();
    }
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let conflicts = a.conflicts(Some("c")).unwrap();
    assert_eq!(conflicts.len(), ids.len(), "{conflicts:?}");
    let a2 = open(dir.path(), "a");
    for c in conflicts {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<blazedb::Result<()>> = std::thread::scope(|s| {
            let racers: Vec<_> = [(&a, "one"), (&a2, "two")]
                .into_iter()
                .map(|(db, v)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        db.resolve_conflict(c.id, Some(Value::from(v)))
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(refused.len(), 1, "exactly one resolves: {results:?}");
        assert!(refused[0].contains("no open conflict"), "{refused:?}");
    }
    assert!(a.conflicts(None).unwrap().is_empty());
    assert!(a.resolve_conflict(1, None).is_err(), "resolved already");
}

/// Both copies record a conflict; one resolves it with a value, which syncs as a write. The
/// other copy still lists its own entry (conflicts are each copy's bookkeeping), now marked
/// superseded: its winner is no longer the value (a black-box audit, 2026-12-07, found such
/// entries inviting a `--loser` over the value already agreed).
#[test]
fn a_conflict_settled_elsewhere_is_listed_as_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        open(dir.path(), "a"),
        open(dir.path(), "b"),
        open(dir.path(), "c"),
    );
    let id = a.insert("c", [("t", "orig")]).unwrap();
    let both = || cfg(SyncMode::Both);
    sync_pair(&a, &b, both(), both());
    sync_pair(&a, &c, both(), both());
    a.update("c", id, Patch::new().set("t", "from a")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    c.update("c", id, Patch::new().set("t", "from c")).unwrap();
    sync_pair(&a, &b, both(), both());
    sync_pair(&c, &b, both(), both());
    sync_pair(&a, &b, both(), both());
    let listed = |db: &blazedb::Database| db.conflicts(Some("c")).unwrap();
    let (at_a, at_b) = (listed(&a), listed(&b));
    assert_eq!((at_a.len(), at_b.len()), (1, 1), "{at_a:?} {at_b:?}");
    assert!(!at_a[0].superseded && !at_b[0].superseded);

    a.resolve_conflict(at_a[0].id, Some(Value::from("agreed")))
        .unwrap();
    sync_pair(&a, &b, both(), both());
    assert_eq!(
        b.get("c", id).unwrap().unwrap().fields["t"],
        Value::from("agreed")
    );
    let at_b = listed(&b);
    assert_eq!(at_b.len(), 1, "still b's to settle: {at_b:?}");
    assert!(at_b[0].superseded, "{at_b:?}");
    assert_eq!(at_b[0].winner, Some(Value::from("from c")));
    // Settling it as it stands writes nothing.
    b.resolve_conflict(at_b[0].id, None).unwrap();
    assert_eq!(
        b.get("c", id).unwrap().unwrap().fields["t"],
        Value::from("agreed")
    );
}

/// Two copies delete the same record concurrently: the record is deleted either way, so no
/// conflict is listed (it was a `$record` conflict of null against null, to be settled for
/// nothing); a field one side wrote before the other's delete still is.
#[test]
fn two_concurrent_deletes_of_a_record_are_no_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let gone = a.insert("c", [("t", "x")]).unwrap();
    let edited = a.insert("c", [("t", "y")]).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    assert!(a.delete("c", gone).unwrap());
    b.update("c", edited, Patch::new().set("t", "b's edit"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(b.delete("c", gone).unwrap());
    assert!(a.delete("c", edited).unwrap());
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    for db in [&a, &b] {
        assert!(db.get("c", gone).unwrap().is_none());
        let listed: Vec<_> = db
            .conflicts(None)
            .unwrap()
            .into_iter()
            .map(|c| (c.record, c.cell))
            .collect();
        assert!(
            !listed.iter().any(|(r, _)| *r == gone),
            "two deletes are no conflict: {listed:?}"
        );
    }
    // b's edit lost to a's later delete of that record: listed where the delete met it.
    assert!(b
        .conflicts(None)
        .unwrap()
        .iter()
        .any(|c| c.record == edited && c.cell == "t"));
}

/// A set element added on one side and removed on the other, neither having seen the other's
/// write: the newer wins (sets are newest-write-wins per element), and the older is listed
/// as a conflict where it lived, with the element named; resolving it with `true` or
/// `false` writes that element alone, not the whole field. Before 2026-12-06 such an
/// element was dropped with no record (found by an audit of merge semantics). Two adds of
/// one element agree and are no conflict.
#[test]
fn a_set_element_added_and_removed_concurrently_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a.insert("c", [("t", "x")]).unwrap();
    a.set_add("c", id, "tags", vec!["x".into(), "keep".into()])
        .unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    // a removes x; b, later and unaware, removes and adds it back; both add y.
    a.set_remove("c", id, "tags", vec!["x".into()]).unwrap();
    a.set_add("c", id, "tags", vec!["y".into()]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.set_add("c", id, "tags", vec!["x".into(), "y".into()])
        .unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    let tags = |db: &Database| db.get("c", id).unwrap().unwrap().fields["tags"].clone();
    let want = Value::List(vec!["keep".into(), "x".into(), "y".into()]);
    assert_eq!(tags(&a), want);
    assert_eq!(tags(&b), want);
    let listed = a.conflicts(None).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(c.element, Some(Value::from("x")));
    assert_eq!(
        (c.winner.clone(), c.loser.clone()),
        (Some(Value::Bool(true)), None)
    );
    assert!(b.conflicts(None).unwrap().is_empty(), "b's add won");
    // Resolved with the loser's choice: x leaves the set, and only x.
    assert!(a.resolve_conflict(c.id, Some(Value::Int(3))).is_err());
    a.resolve_conflict(c.id, Some(Value::Bool(false))).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    let want = Value::List(vec!["keep".into(), "y".into()]);
    assert_eq!(tags(&a), want);
    assert_eq!(tags(&b), want);
}

/// A set element added on one side while the other deleted the record: the element is listed
/// as lost to the delete, and resolving it with `true` brings the record back as this node
/// held it, with the element (it failed with "no record" once element conflicts were
/// resolved element by element; found by an audit).
#[test]
fn a_set_element_lost_to_a_delete_resolves_by_restoring_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let id = a.insert("c", [("t", "x")]).unwrap();
    a.set_add("c", id, "tags", vec!["keep".into()]).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    a.set_add("c", id, "tags", vec!["new".into()]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(b.delete("c", id).unwrap());
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    assert!(a.get("c", id).unwrap().is_none());
    let lost = a.conflicts(None).unwrap();
    let c = lost
        .iter()
        .find(|c| c.element == Some(Value::from("new")))
        .unwrap_or_else(|| panic!("{lost:?}"));
    assert_eq!(c.winner, None, "lost to the delete");
    a.resolve_conflict(c.id, Some(Value::Bool(true))).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    for db in [&a, &b] {
        let f = db.get("c", id).unwrap().expect("restored").fields;
        assert_eq!(f["t"], Value::from("x"));
        assert_eq!(f["tags"], Value::List(vec!["keep".into(), "new".into()]));
    }
}

/// A conflict about a record as a whole (two replicas inserted the same id) has no field to
/// write a value into: resolving it with one is refused, saying what to do, and leaves it
/// open (it was marked resolved with the value ignored); resolved without a value, it goes.
#[test]
fn a_record_conflict_resolved_with_a_value_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "ra"), open(dir.path(), "rb"));
    let id = RecordId([7; 16]);
    a.insert_with_id("c", id, [("x", 1)]).unwrap();
    b.insert_with_id("c", id, [("x", 2), ("y", 3)]).unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let (db, whole) = [&a, &b]
        .into_iter()
        .find_map(|db| {
            let c = db.conflicts(Some("c")).unwrap();
            c.into_iter().find(|c| c.field.is_none()).map(|c| (db, c))
        })
        .expect("a conflict about the whole record");
    let before = db.get("c", id).unwrap();
    let e = db
        .resolve_conflict(whole.id, Some(Value::from(9)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("as a whole") && e.contains("without a value"),
        "{e}"
    );
    assert_eq!(db.get("c", id).unwrap(), before);
    assert!(db
        .conflicts(Some("c"))
        .unwrap()
        .iter()
        .any(|c| c.id == whole.id));
    db.resolve_conflict(whole.id, None).unwrap();
    assert!(!db
        .conflicts(Some("c"))
        .unwrap()
        .iter()
        .any(|c| c.id == whole.id));
}

/// The receiver applies a unit whole, in one transaction, and reads nothing meanwhile: a
/// sender that counted that silence against the idle timeout cut a live peer off during
/// the apply of a large transaction (API audit: a unit applied for longer than the idle
/// timeout). The sender now allows for applying the cells it has not had acknowledged
/// (`SNAPSHOT_APPLY_CELLS_PER_MS_MIN`), and still finds a peer that stays silent past
/// that.
#[test]
fn a_sender_waits_out_the_apply_of_a_large_unit_but_not_for_ever() {
    use blazedb::limits::SNAPSHOT_APPLY_CELLS_PER_MS_MIN;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    // Synced once first: a new, empty peer would get a snapshot, not the feed.
    a.insert("c", [("f0", -1)]).unwrap();
    sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    let (records, fields) = (8_000u64, 5u64);
    let one_transaction = || {
        a.transaction(|tx| {
            for i in 0..records as i64 {
                tx.insert("c", (0..fields).map(|f| (format!("f{f}"), i)))?;
            }
            Ok(())
        })
        .unwrap();
        a.count("c").unwrap()
    };
    let idle = 1_000;
    let cfg = SessionConfig {
        idle_timeout_ms: idle,
        ..SessionConfig::default()
    };
    // The record's id is a cell too.
    let grace = records * (fields + 1) / SNAPSHOT_APPLY_CELLS_PER_MS_MIN;
    assert!(
        grace > 2 * idle,
        "a unit that takes the receiver long: {grace} ms"
    );

    // Handshake, then the whole unit from A to B at t=0; B's ACK does not reach A.
    let run = |answered_at: Option<u64>| {
        let total = one_transaction();
        let mut sa = Session::new(&a, cfg.clone(), 0).unwrap();
        let mut sb = Session::new(&b, cfg.clone(), 0).unwrap();
        // Until B has applied the unit; then its answers (the ACK) are held back.
        let held = loop {
            while let Some(f) = sa.poll_transmit(0, &a) {
                sb.handle_bytes(0, &f, &b).unwrap();
            }
            if b.count("c").unwrap() == total {
                break drain(&mut sb, &b);
            }
            let answers = drain(&mut sb, &b);
            assert!(!answers.is_empty(), "stalled");
            for f in answers {
                sa.handle_bytes(0, &f, &a).unwrap();
            }
        };
        assert!(sa.progress().unacked_units > 0);
        // Past the idle timeout, inside the apply's allowance: A waits.
        sa.handle_timeout(2 * idle, &a);
        assert!(!sa.is_closed(), "cut off during the peer's apply");
        match answered_at {
            Some(t) => {
                for f in held {
                    sa.handle_bytes(t, &f, &a).unwrap();
                }
                assert_eq!(sa.progress().unacked_units, 0, "the ACK came");
            }
            None => {
                // A peer that never answers is still found out, after the allowance.
                sa.handle_timeout(idle + grace - 1, &a);
                assert!(!sa.is_closed());
                sa.handle_timeout(idle + grace, &a);
                assert!(sa.is_closed());
                assert_eq!(closed_error(&mut sa).code, ErrorCode::Timeout);
            }
        }
    };
    run(None);
    run(Some(2 * idle));
    assert_eq!(b.count("c").unwrap(), 2 * records + 1);
}

/// Two replicas insert a record with the same id, neither having seen the other's: one with
/// `insert_with_id`, one with `upsert` of a record neither held. The newer insert replaces the
/// record everywhere; where the older one lived, the conflicts name both records as their
/// fields and each field the winner dropped or overwrote with the value it now has. Until
/// 2026-12-07 they showed the insert's marker, `true`, as the winner of every one of them
/// (and as both sides of the whole-record one), whatever the winning record held (API audit).
#[test]
fn concurrent_inserts_of_one_id_list_both_records_not_the_insert_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let (inserted, upserted) = (RecordId([1; 16]), RecordId([2; 16]));
    let fields = |pairs: &[(&str, i64)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Int(*v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    a.insert_with_id("c", inserted, fields(&[("a", 1), ("x", 1)]))
        .unwrap();
    a.upsert("c", upserted, fields(&[("a", 1), ("x", 1)]))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.insert_with_id("c", inserted, fields(&[("b", 2), ("x", 2)]))
        .unwrap();
    b.upsert("c", upserted, fields(&[("b", 2), ("x", 2)]))
        .unwrap();
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    let record = |pairs: &[(&str, i64)]| Some(Value::Map(fields(pairs)));
    for id in [inserted, upserted] {
        // The converged record is b's, as before.
        assert_eq!(
            a.get("c", id).unwrap().unwrap().fields,
            fields(&[("b", 2), ("x", 2)])
        );
        let mut listed: Vec<_> = a
            .conflicts_all(Some("c"))
            .unwrap()
            .into_iter()
            .filter(|c| c.record == id)
            .collect();
        listed.sort_by(|p, q| p.cell.cmp(&q.cell));
        for c in &listed {
            assert_eq!(c.winner_version.node, b.node_id(), "{c:?}");
            assert_eq!(c.loser_version.node, a.node_id(), "{c:?}");
        }
        let shown: Vec<_> = listed
            .iter()
            .map(|c| {
                (
                    c.cell.as_str(),
                    c.field.as_deref(),
                    c.winner.clone(),
                    c.loser.clone(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "$record",
                    None,
                    record(&[("b", 2), ("x", 2)]),
                    record(&[("a", 1), ("x", 1)])
                ),
                ("a", Some("a"), None, Some(Value::Int(1))),
                ("x", Some("x"), Some(Value::Int(2)), Some(Value::Int(1))),
            ],
            "{listed:?}"
        );
        // The whole-record conflict still takes no value; the field ones do.
        let whole = &listed[0];
        assert!(a.resolve_conflict(whole.id, Some(Value::Int(1))).is_err());
    }
    assert!(b.conflicts_all(None).unwrap().is_empty(), "b's inserts won");
}

/// One replica deletes a record while the other deletes and inserts it again with the same
/// id, neither having seen the other's write: whichever is newer wins, and the conflict over
/// the record as a whole shows the insert as the record it inserted (it showed `true`), the
/// delete as `None`; the inserted field the delete dropped is listed on its own.
#[test]
fn an_insert_against_a_concurrent_delete_is_listed_as_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let (delete_wins, insert_wins) = (RecordId([3; 16]), RecordId([4; 16]));
    for id in [delete_wins, insert_wins] {
        a.insert_with_id("c", id, [("t", "v0")]).unwrap();
    }
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    let again = |db: &Database, id| {
        assert!(db.delete("c", id).unwrap());
        db.insert_with_id("c", id, [("t", "again")]).unwrap();
    };
    assert!(a.delete("c", insert_wins).unwrap());
    again(&b, delete_wins);
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(a.delete("c", delete_wins).unwrap());
    again(&b, insert_wins);
    sync_pair(&a, &b, cfg(SyncMode::Both), cfg(SyncMode::Both));
    assert_eq!(dump(&a), dump(&b));
    assert!(a.get("c", delete_wins).unwrap().is_none());
    assert!(a.get("c", insert_wins).unwrap().is_some());
    let shown = |db: &Database, id| {
        let mut listed: Vec<_> = db
            .conflicts(Some("c"))
            .unwrap()
            .into_iter()
            .filter(|c| c.record == id)
            .map(|c| (c.cell, c.winner, c.loser))
            .collect();
        listed.sort_by(|p, q| p.0.cmp(&q.0));
        listed
    };
    let record = Some(Value::Map([("t".to_owned(), Value::from("again"))].into()));
    // b's insert lost to a's newer delete, where it lived.
    assert_eq!(
        shown(&b, delete_wins),
        vec![
            ("$record".to_owned(), None, record.clone()),
            ("t".to_owned(), None, Some(Value::from("again"))),
        ]
    );
    // a's delete lost to b's newer insert.
    assert_eq!(
        shown(&a, insert_wins),
        vec![("$record".to_owned(), record, None)]
    );
    assert!(shown(&a, delete_wins).is_empty() && shown(&b, insert_wins).is_empty());
}
