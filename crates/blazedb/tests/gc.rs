//! GC and eviction on real files: tombstones and removal cells go only once every peer that
//! counts acknowledged them, expired peers stop holding GC back, sync metadata per live record
//! stays flat under delete churn, eviction leaves no trace in the feed, and replicas still
//! converge after GC.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blazedb::sync::{Session, SessionConfig, SyncMode};
use blazedb::{
    Database, EvictGuard, GcOptions, NodeId, OpenOptions, Patch, PeerDirection, RecordId, Seq,
    Value,
};

const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

fn open_at(dir: &std::path::Path, name: &str, clock: &Arc<AtomicU64>) -> Database {
    let c = clock.clone();
    Database::open(
        dir.join(format!("{name}.db")),
        OpenOptions {
            wall_clock: Arc::new(move || c.load(Ordering::SeqCst)),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn tombstones(db: &Database, coll: &str) -> u64 {
    db.stats()
        .unwrap()
        .collections
        .get(coll)
        .map_or(0, |c| c.tombstones)
}

fn insert_many(db: &Database, n: usize) -> Vec<RecordId> {
    db.transaction(|tx| {
        (0..n)
            .map(|i| {
                tx.insert(
                    "items",
                    [
                        ("name", Value::from(format!("item {i}"))),
                        ("n", Value::Int(i as i64)),
                    ],
                )
            })
            .collect()
    })
    .unwrap()
}

fn delete_all(db: &Database, ids: &[RecordId]) {
    db.transaction(|tx| {
        for id in ids {
            tx.delete("items", *id)?;
        }
        Ok(())
    })
    .unwrap();
}

/// Every change after 0, flattened to (collection, id, cell name).
fn feed_cells(db: &Database) -> Vec<(String, RecordId, String)> {
    let batch = db.changes_since(Seq(0), 1_000_000, None).unwrap();
    assert!(!batch.more);
    batch
        .changes
        .iter()
        .flat_map(|c| {
            c.cells
                .iter()
                .map(move |cell| (c.collection.clone(), c.id, cell.key.display_name()))
        })
        .collect()
}

#[test]
fn tombstones_go_only_after_every_peer_acked_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let db = open_at(dir.path(), "a", &clock);
    let (p1, p2) = (NodeId([1; 16]), NodeId([2; 16]));
    let ids = insert_many(&db, 10);
    let before_deletes = db.last_seq().unwrap();
    delete_all(&db, &ids[..5]);
    let head = db.last_seq().unwrap();
    db.set_peer_cursor(p1, PeerDirection::Acked, before_deletes)
        .unwrap();
    db.set_peer_cursor(p2, PeerDirection::Acked, head).unwrap();

    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        r.horizon, before_deletes,
        "the slowest peer sets the horizon"
    );
    assert_eq!(r.tombstones_purged, 0);
    assert_eq!(tombstones(&db, "items"), 5);
    assert!(r.expired_peers.is_empty());

    db.set_peer_cursor(p1, PeerDirection::Acked, head).unwrap();
    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.horizon, head);
    assert_eq!(r.tombstones_purged, 5);
    assert!(r.feed_rows_pruned >= 5);
    assert_eq!(tombstones(&db, "items"), 0);
    assert_eq!(db.gc_horizon().unwrap(), head);
    assert_eq!(db.count("items").unwrap(), 5);
    // The feed no longer names the purged records; the live ones are all there.
    let named: std::collections::BTreeSet<RecordId> =
        feed_cells(&db).into_iter().map(|c| c.1).collect();
    assert_eq!(named, ids[5..].iter().copied().collect());
    // A second run finds nothing and leaves the persisted horizon alone.
    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        (r.tombstones_purged, r.cells_pruned, r.links_pruned),
        (0, 0, 0)
    );
    assert_eq!(db.gc_horizon().unwrap(), head);
}

#[test]
fn a_peer_past_retention_stops_holding_gc_back_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let db = open_at(dir.path(), "a", &clock);
    let (away, here) = (NodeId([1; 16]), NodeId([2; 16]));
    db.set_peer_cursor(away, PeerDirection::Acked, Seq(0))
        .unwrap();
    let ids = insert_many(&db, 4);
    delete_all(&db, &ids[..2]);
    db.set_peer_cursor(here, PeerDirection::Acked, db.last_seq().unwrap())
        .unwrap();
    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.horizon, Seq(0));
    assert_eq!(r.tombstones_purged, 0);

    common::tick(&clock, 31 * DAY_MS);
    db.set_peer_cursor(here, PeerDirection::Acked, db.last_seq().unwrap())
        .unwrap();
    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.expired_peers, vec![away]);
    assert_eq!(r.tombstones_purged, 2);
    assert_eq!(tombstones(&db, "items"), 0);
    // Expired is reported, not deleted: the operator forgets it explicitly.
    assert_eq!(db.peers().unwrap().len(), 2);
    assert!(db.forget_peer(away).unwrap());
    assert!(!db.forget_peer(away).unwrap());
    assert_eq!(db.peers().unwrap().len(), 1);

    // A shorter retention expires the other peer too.
    common::tick(&clock, 2 * DAY_MS);
    let r = db
        .gc(&GcOptions {
            peer_retention_ms: DAY_MS,
        })
        .unwrap();
    assert_eq!(r.expired_peers, vec![here]);
}

#[test]
fn removal_cells_are_pruned_without_changing_what_records_show() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path(), "a");
    let id = db
        .insert(
            "items",
            [
                ("a", Value::from("x")),
                ("b", Value::Int(1)),
                // A plain list: removing one of its values needs the removal cell forever.
                ("base", Value::List(vec!["p".into(), "q".into()])),
            ],
        )
        .unwrap();
    db.set_add("items", id, "tags", vec!["t1".into(), "t2".into()])
        .unwrap();
    db.set_remove("items", id, "tags", vec!["t1".into()])
        .unwrap();
    db.set_remove("items", id, "base", vec!["p".into()])
        .unwrap();
    db.update("items", id, Patch::new().unset("a")).unwrap();
    // Later writes, so that neither removal below is the newest cell of its record or set
    // (those stay: see `newest_removals_stay_for_a_delete_still_on_its_way`).
    db.set_add("items", id, "tags", vec!["t3".into()]).unwrap();
    let shown = db.get("items", id).unwrap().unwrap().fields;
    let cells_before = feed_cells(&db).len();

    // No peers: the horizon is the head.
    let r = db.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.horizon, db.last_seq().unwrap());
    // `a` (unset) and tags[t1] (removed) go; base[p] hides a base value and stays.
    assert_eq!(r.cells_pruned, 2, "{r:?}");
    assert_eq!(db.get("items", id).unwrap().unwrap().fields, shown);
    let cells = feed_cells(&db);
    assert_eq!(cells.len(), cells_before - 2);
    let names: Vec<&str> = cells.iter().map(|c| c.2.as_str()).collect();
    assert!(!names.contains(&"a"), "{names:?}");
    assert!(names.contains(&"base[element:\"p\"]"), "{names:?}");
    assert_eq!(db.integrity_check().unwrap().problems, Vec::<String>::new());

    // Writes after GC still work on the pruned record.
    db.update("items", id, Patch::new().set("a", "back"))
        .unwrap();
    assert_eq!(
        db.get("items", id).unwrap().unwrap().fields["a"],
        Value::from("back")
    );
}

#[test]
fn metadata_per_live_record_stays_flat_as_deletes_grow() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::open(dir.path(), "a");
    let peer = NodeId([7; 16]);
    let mut ids = insert_many(&db, 1000);
    db.set_peer_cursor(peer, PeerDirection::Acked, db.last_seq().unwrap())
        .unwrap();
    db.gc(&GcOptions::default()).unwrap();
    let start = db.sync_metadata().unwrap();
    assert_eq!(start.live_records, 1000);
    let mut per_record = Vec::new();
    for _ in 0..10 {
        let gone: Vec<RecordId> = ids.drain(..500).collect();
        delete_all(&db, &gone);
        ids.extend(insert_many(&db, 500));
        db.set_peer_cursor(peer, PeerDirection::Acked, db.last_seq().unwrap())
            .unwrap();
        let r = db.gc(&GcOptions::default()).unwrap();
        assert_eq!(r.tombstones_purged, 500);
        let m = db.sync_metadata().unwrap();
        assert_eq!((m.live_records, m.tombstones), (1000, 0));
        per_record.push(m.bytes_per_live_record());
    }
    let first = start.bytes_per_live_record();
    println!("sync metadata per live record: start {first:.1}, after rounds {per_record:.1?}");
    for b in &per_record {
        assert!(*b <= 64.0, "{b} bytes of sync metadata per live record");
        assert!(*b <= first * 1.1, "grew from {first} to {b}");
    }
    assert_eq!(
        db.sync_metadata_bytes().unwrap(),
        db.sync_metadata().unwrap().total_bytes()
    );
}

#[test]
fn eviction_leaves_no_tombstone_and_nothing_in_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    a.create_index("items", "n").unwrap();
    let ids = insert_many(&a, 3);
    a.update("items", ids[0], Patch::new().set("n", 100))
        .unwrap();
    common::sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    let seq = a.last_seq().unwrap();

    let out = a.evict("items", &ids[..2], None).unwrap();
    assert_eq!((out.evicted, out.kept_pending), (2, 0));
    assert_eq!(
        a.last_seq().unwrap(),
        seq,
        "eviction takes no feed position"
    );
    assert!(a.get("items", ids[0]).unwrap().is_none());
    assert_eq!(tombstones(&a, "items"), 0);
    assert!(a.history("items", ids[0]).unwrap().is_empty());
    assert_eq!(
        a.stats().unwrap().collections["items"].index_entries["n"],
        1
    );
    let named: Vec<RecordId> = feed_cells(&a).into_iter().map(|c| c.1).collect();
    assert!(named.iter().all(|id| *id == ids[2]), "{named:?}");
    // Evicting again, or an unknown id, does nothing.
    let out = a
        .evict("items", &[ids[0], RecordId::new_v7()], None)
        .unwrap();
    assert_eq!(out.evicted, 0);
    assert_eq!(a.evict("nothing", &ids, None).unwrap().evicted, 0);

    // Syncing again sends nothing that would delete them at the peer.
    common::sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    assert_eq!(b.count("items").unwrap(), 3);
    assert_eq!(
        b.get("items", ids[0]).unwrap().unwrap().fields["n"],
        Value::Int(100)
    );
    assert_eq!(tombstones(&b, "items"), 0);
}

#[test]
fn guarded_eviction_keeps_records_the_peer_has_not_seen() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let ids = insert_many(&a, 4);
    common::sync_pair(&a, &b, SessionConfig::default(), SessionConfig::default());
    let acked = a.last_seq().unwrap();
    // A local change b has not seen, and a change that came from b itself.
    a.update("items", ids[0], Patch::new().set("n", -1))
        .unwrap();
    b.update("items", ids[1], Patch::new().set("n", -2))
        .unwrap();
    common::sync_pair(&b, &a, SessionConfig::default(), SessionConfig::default());
    let guard = EvictGuard {
        peer: b.node_id(),
        acked,
    };
    let out = a.evict("items", &ids[..3], Some(guard)).unwrap();
    assert_eq!((out.evicted, out.kept_pending), (2, 1));
    assert_eq!(
        a.get("items", ids[0]).unwrap().unwrap().fields["n"],
        Value::Int(-1)
    );
    assert!(a.get("items", ids[1]).unwrap().is_none());
    assert!(a.get("items", ids[2]).unwrap().is_none());
    // Once b has it, the record may go.
    let guard = EvictGuard {
        peer: b.node_id(),
        acked: a.last_seq().unwrap(),
    };
    let out = a.evict("items", &ids[..1], Some(guard)).unwrap();
    assert_eq!((out.evicted, out.kept_pending), (1, 0));
}

#[test]
fn evicting_fields_removes_their_cells_locally_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    a.create_index("docs", "attachment").unwrap();
    let id = a
        .insert(
            "docs",
            [
                ("title", Value::from("t")),
                ("attachment", Value::Bytes(vec![0u8; 4096])),
            ],
        )
        .unwrap();
    a.update(
        "docs",
        id,
        Patch::new().set("attachment", Value::Bytes(vec![1u8; 10])),
    )
    .unwrap();
    a.set_add("docs", id, "labels", vec!["x".into()]).unwrap();
    let only = a
        .insert("docs", [("attachment", Value::Bytes(vec![2u8; 8]))])
        .unwrap();
    let seq = a.last_seq().unwrap();

    let changed = a
        .evict_fields("docs", &["attachment".to_owned(), "labels".to_owned()])
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(a.last_seq().unwrap(), seq);
    let rec = a.get("docs", id).unwrap().unwrap();
    assert_eq!(rec.fields.keys().collect::<Vec<_>>(), vec!["title"]);
    // The record that held only the evicted field keeps its record cell: it still exists.
    assert!(a.get("docs", only).unwrap().unwrap().fields.is_empty());
    assert!(feed_cells(&a)
        .iter()
        .all(|c| c.2 != "attachment" && !c.2.starts_with("labels")));
    assert!(a
        .history("docs", id)
        .unwrap()
        .iter()
        .all(|h| h.field.as_deref() != Some("attachment")));
    assert_eq!(
        a.stats().unwrap().collections["docs"].index_entries["attachment"],
        0
    );
    assert_eq!(a.integrity_check().unwrap().problems, Vec::<String>::new());
}

/// Ship everything `from` has past `since` to `to`, as the sync session would, and record the
/// acknowledgement on `from`.
fn ship(from: &Database, to: &Database, since: Seq) -> Seq {
    let batch = from
        .changes_since(since, 1_000_000, Some(to.node_id()))
        .unwrap();
    to.apply_changes(from.node_id(), &batch.changes, Some(batch.next))
        .unwrap();
    from.set_peer_cursor(to.node_id(), PeerDirection::Acked, batch.next)
        .unwrap();
    batch.next
}

#[test]
fn replicas_converge_after_gc() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let (mut ab, mut ba) = (Seq(0), Seq(0));
    let ids = insert_many(&a, 20);
    a.set_add("items", ids[5], "tags", vec!["x".into(), "y".into()])
        .unwrap();
    ab = ship(&a, &b, ab);
    delete_all(&a, &ids[..5]);
    b.update("items", ids[6], Patch::new().unset("name"))
        .unwrap();
    b.set_remove("items", ids[5], "tags", vec!["x".into()])
        .unwrap();
    // Newer cells, so that those removals are not their record's or set's newest (which GC
    // keeps).
    b.update("items", ids[6], Patch::new().set("other", 1))
        .unwrap();
    b.set_add("items", ids[5], "tags", vec!["z".into()])
        .unwrap();
    ab = ship(&a, &b, ab);
    ba = ship(&b, &a, ba);
    // Both have seen everything: GC on both.
    ab = ship(&a, &b, ab);
    let ra = a.gc(&GcOptions::default()).unwrap();
    let rb = b.gc(&GcOptions::default()).unwrap();
    assert_eq!(ra.tombstones_purged, 5, "{ra:?}");
    assert_eq!(rb.tombstones_purged, 5, "{rb:?}");
    assert!(ra.cells_pruned + rb.cells_pruned >= 2, "{ra:?} {rb:?}");
    assert_eq!(common::dump(&a), common::dump(&b));

    // Concurrent writes after GC, including to records whose removals were pruned.
    a.update("items", ids[6], Patch::new().set("name", "again"))
        .unwrap();
    b.update("items", ids[7], Patch::new().unset("n")).unwrap();
    b.set_add("items", ids[5], "tags", vec!["x".into()])
        .unwrap();
    delete_all(&b, &ids[8..10]);
    let more = insert_many(&b, 3);
    ab = ship(&a, &b, ab);
    ba = ship(&b, &a, ba);
    let _ = ship(&a, &b, ab);
    let _ = ship(&b, &a, ba);
    a.gc(&GcOptions::default()).unwrap();
    b.gc(&GcOptions::default()).unwrap();
    assert_eq!(common::dump(&a), common::dump(&b));
    assert_eq!(a.count("items").unwrap(), 20 - 5 - 2 + more.len() as u64);
    assert_eq!(
        a.get("items", ids[5]).unwrap().unwrap().fields["tags"],
        Value::List(vec!["x".into(), "y".into(), "z".into()])
    );
    assert_eq!(tombstones(&a, "items"), 0);
    assert_eq!(tombstones(&b, "items"), 0);
}

#[test]
fn newest_removals_stay_for_a_delete_still_on_its_way() {
    // C deletes a record concurrently with B's removals, and the delete reaches B only after
    // B collected garbage. What B then shows must be what it would have shown without GC:
    // the set field, emptied by a removal newer than the delete (found by the simulation:
    // GC kept the older removal, which the delete then killed).
    let dir = tempfile::tempdir().unwrap();
    let b = common::open(dir.path(), "b");
    let c = common::open(dir.path(), "c");
    let id = b.insert("items", [("name", Value::from("n"))]).unwrap();
    b.set_add("items", id, "tags", vec!["x".into(), "y".into()])
        .unwrap();
    ship(&b, &c, Seq(0));
    // B removes `y`; then C deletes the record, unaware of that; then B removes `x`, unaware
    // of the delete. By clock: y's removal < the delete < x's removal.
    b.set_remove("items", id, "tags", vec!["y".into()]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    c.delete("items", id).unwrap();
    let delete = c.changes_since(Seq(0), 1_000, None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.set_remove("items", id, "tags", vec!["x".into()]).unwrap();
    // Reference: a copy that receives the delete with every cell still in place.
    let reference = common::open(dir.path(), "ref");
    ship(&b, &reference, Seq(0));
    reference
        .apply_changes(c.node_id(), &delete.changes, None)
        .unwrap();
    // C acknowledges B's removals (its delete is still on its way to B): as far as B
    // knows, every peer has seen them, so they are collectable.
    ship(&b, &c, Seq(0));
    let r = b.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.horizon, b.last_seq().unwrap());
    b.apply_changes(c.node_id(), &delete.changes, None).unwrap();
    let shown = reference.get("items", id).unwrap().map(|r| r.fields);
    assert_eq!(
        shown.as_ref().map(|f| f.get("tags").cloned()),
        Some(Some(Value::List(vec![]))),
        "{shown:?}"
    );
    assert_eq!(b.get("items", id).unwrap().map(|r| r.fields), shown);
}

/// A client offline for longer than the peer retention keeps the tombstones of the deletes
/// it made meanwhile, because its relay never expires (a relay refuses snapshots, so a
/// delete collected before it arrived would never reach it). When the client is back, the
/// relay receives the deletes. A peer that is not a relay still expires.
#[test]
fn a_relay_never_expires_so_deletes_made_offline_reach_it() {
    use blazedb::sync::Session;
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let client = open_at(dir.path(), "client", &clock);
    let relay = open_at(dir.path(), "relay", &clock);
    let relay_cfg = SessionConfig {
        server: true,
        ..SessionConfig::default()
    };
    let ids = insert_many(&client, 6);
    let sync = |client: &Database, relay: &Database| {
        let mut sc = Session::new(client, SessionConfig::default(), 0).unwrap();
        let mut sr = Session::new(relay, relay_cfg.clone(), 0).unwrap();
        common::pump(client, &mut sc, relay, &mut sr);
    };
    sync(&client, &relay);
    assert_eq!(relay.count("items").unwrap(), 6);
    // Another peer, not a relay, went quiet long ago.
    let other = NodeId([9; 16]);
    client
        .set_peer_cursor(other, PeerDirection::Acked, Seq(0))
        .unwrap();

    // Offline: the client deletes, 31 days pass, GC runs.
    delete_all(&client, &ids[..3]);
    common::tick(&clock, 31 * DAY_MS);
    let r = client.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.expired_peers, vec![other], "{r:?}");
    assert_eq!(r.tombstones_purged, 0, "{r:?}");
    assert_eq!(tombstones(&client, "items"), 3);
    // The report says who holds GC back, and that it is a relay kept past the retention
    // (`blazedb gc` warns, naming `peers --forget`).
    assert_eq!(r.held_by, Some(relay.node_id()), "{r:?}");
    assert_eq!(r.relays_past_retention, vec![relay.node_id()], "{r:?}");

    // Back online: the relay gets the deletes; then GC may collect them.
    sync(&client, &relay);
    assert_eq!(relay.count("items").unwrap(), 3);
    let r = client.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 3, "{r:?}");
    assert_eq!(r.held_by, None, "the relay has everything: {r:?}");
    assert!(
        r.relays_past_retention.is_empty(),
        "heard from just now: {r:?}"
    );
}

/// Full sessions between two files until both are caught up.
fn sync(a: &Database, b: &Database) {
    common::sync_pair(a, b, SessionConfig::default(), SessionConfig::default());
}

/// A hub forgets a leaf that is away, then collects a delete the leaf never saw. When the
/// leaf is back, the hub resumes the leaf's feed where it stopped: pulling it from the start
/// again would apply the leaf's old insert once more, and the deleted record would come back
/// everywhere (simulation, known gap 6). The leaf gets a snapshot and lets the record go.
#[test]
fn a_forgotten_peer_back_after_gc_does_not_bring_back_what_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let hub = common::open(dir.path(), "hub");
    let leaf = common::open(dir.path(), "leaf");
    let other = common::open(dir.path(), "other");
    let ids = insert_many(&leaf, 3);
    sync(&leaf, &hub);
    sync(&other, &hub);
    // The leaf is away: another node deletes one of its records; the hub forgets the leaf
    // and collects the tombstone.
    delete_all(&other, &ids[..1]);
    sync(&other, &hub);
    // A later change on the hub that `other` acknowledges: its acknowledgement then covers
    // the delete's position too (its own change is not sent back to it to acknowledge).
    hub.insert("marks", [("m", Value::Int(1))]).unwrap();
    sync(&other, &hub);
    let received = hub
        .peer_cursor(leaf.node_id(), PeerDirection::Received)
        .unwrap();
    assert!(hub.forget_peer(leaf.node_id()).unwrap());
    assert_eq!(
        hub.peer_cursor(leaf.node_id(), PeerDirection::Received)
            .unwrap(),
        received,
        "how far the hub received the leaf stays"
    );
    assert_eq!(
        hub.peer_cursor(leaf.node_id(), PeerDirection::Acked)
            .unwrap(),
        Seq(0)
    );
    let r = hub.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 1, "{r:?}");

    sync(&leaf, &hub);
    sync(&other, &hub);
    for db in [&hub, &leaf, &other] {
        assert!(db.get("items", ids[0]).unwrap().is_none());
        assert_eq!(db.count("items").unwrap(), 2);
    }
    assert_eq!(common::dump(&leaf), common::dump(&hub));
    assert_eq!(common::dump(&other), common::dump(&hub));
}

/// As above, but the leaf edited the record while away (before the delete, which it never
/// saw). The hub's replacing snapshot lacks the record; the leaf keeps it for its unsent edit,
/// but must let go of the cells the hub had received and collected with the delete, as it
/// does for a record the snapshot holds: it kept them, sent the hub its edit alone, and the
/// two held different records for good (found exercising the CLI: `peers --forget`, `gc`,
/// then the peer back with an offline edit). Both now hold the record with the edit alone, as
/// a field written after a delete brings a record back (the hub cannot tell that the edit is
/// older than a delete it no longer has: known gap 5).
#[test]
fn a_forgotten_peer_back_after_gc_with_an_edit_of_a_collected_record_converges() {
    let dir = tempfile::tempdir().unwrap();
    let hub = common::open(dir.path(), "hub");
    let leaf = common::open(dir.path(), "leaf");
    let other = common::open(dir.path(), "other");
    let ids = insert_many(&hub, 2);
    sync(&leaf, &hub);
    sync(&other, &hub);
    // Away: the leaf edits one record; the hub deletes it, `other` acknowledges the delete,
    // and the hub forgets the leaf and collects the tombstone.
    leaf.update(
        "items",
        ids[1],
        Patch::new().set("note", Value::from("kept")),
    )
    .unwrap();
    leaf.update(
        "items",
        ids[0],
        Patch::new().set("note", Value::from("offline")),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    delete_all(&hub, &ids[..1]);
    hub.insert("marks", [("m", Value::Int(1))]).unwrap();
    sync(&other, &hub);
    assert!(hub.forget_peer(leaf.node_id()).unwrap());
    let r = hub.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 1, "{r:?}");

    // The leaf first only receives, so the hub's snapshot is read before the leaf's edits
    // reach it (as over a network, where both directions run at once); then both ways.
    let pull = SessionConfig {
        mode: SyncMode::Pull,
        ..SessionConfig::default()
    };
    common::sync_pair(&leaf, &hub, pull, SessionConfig::default());
    sync(&leaf, &hub);
    sync(&leaf, &hub);
    let shown = |db: &Database| {
        let mut names: Vec<String> = db
            .get("items", ids[0])
            .unwrap()
            .map(|r| r.fields.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(shown(&hub), vec!["note".to_owned()]);
    assert_eq!(shown(&leaf), vec!["note".to_owned()]);
    assert_eq!(common::dump(&leaf), common::dump(&hub));
    // The other record took the other edit, everywhere.
    for db in [&hub, &leaf] {
        let fields = db.get("items", ids[1]).unwrap().unwrap().fields;
        assert_eq!(fields.get("note"), Some(&Value::from("kept")), "{fields:?}");
        assert_eq!(fields.len(), 3, "{fields:?}");
    }
}

/// As above, but a write concurrent with the delete brought the record back (a tag added
/// by a node that had not seen the delete), so the record is in the hub's snapshot, without
/// the delete GC collected. The leaf must drop the cells the delete overwrote, which the
/// hub had received from it and let go: merging would keep them beside the snapshot's for
/// good (simulation, known gap 6: the leaf kept a stale field).
#[test]
fn a_forgotten_peer_back_after_gc_drops_the_cells_a_collected_delete_overwrote() {
    let dir = tempfile::tempdir().unwrap();
    let hub = common::open(dir.path(), "hub");
    let leaf = common::open(dir.path(), "leaf");
    let deleter = common::open(dir.path(), "deleter");
    let tagger = common::open(dir.path(), "tagger");
    let id = insert_many(&leaf, 1)[0];
    sync(&leaf, &hub);
    sync(&deleter, &hub);
    sync(&tagger, &hub);
    // While the leaf is away: a delete, and concurrently (later by clock, unaware of it) a
    // tag added elsewhere. The record lives on with the tag only.
    delete_all(&deleter, &[id]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    tagger
        .set_add("items", id, "tags", vec!["t".into()])
        .unwrap();
    sync(&deleter, &hub);
    sync(&tagger, &hub);
    sync(&deleter, &hub);
    let shown = hub.get("items", id).unwrap().expect("revived").fields;
    assert_eq!(shown.keys().collect::<Vec<_>>(), vec!["tags"], "{shown:?}");
    assert!(hub.forget_peer(leaf.node_id()).unwrap());
    let r = hub.gc(&GcOptions::default()).unwrap();
    assert!(
        r.cells_pruned >= 1,
        "the delete's cells were collected: {r:?}"
    );

    sync(&leaf, &hub);
    assert_eq!(leaf.get("items", id).unwrap().unwrap().fields, shown);
    assert_eq!(common::dump(&leaf), common::dump(&hub));
    // The leaf's feed no longer holds the dropped cells; nothing goes back to the hub.
    sync(&leaf, &hub);
    assert_eq!(hub.get("items", id).unwrap().unwrap().fields, shown);
}

/// 12,000 records on `a` (two snapshot chunks), and sessions `a` → `b` run until `b` has
/// applied the first chunk and `a` has not yet sent the rest.
fn start_a_snapshot(a: &Database, b: &Database) -> (Session, Session) {
    a.transaction(|tx| {
        for i in 0..12_000i64 {
            tx.insert("c", [("n", Value::Int(i))])?;
        }
        Ok(())
    })
    .unwrap();
    let mut sa = Session::new(a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(b, SessionConfig::default(), 0).unwrap();
    common::pump_until(a, &mut sa, b, &mut sb, |_| b.count("c").unwrap() > 0);
    assert!(
        sa.progress().sending_snapshot,
        "the snapshot is still in transit"
    );
    (sa, sb)
}

/// A new replica gets an `acked` row only with its first ACK, at the end of its snapshot.
/// GC at the source ignored it until then and collected the tombstone of a record the
/// replica already held from an early chunk; the feed after the snapshot no longer had the
/// delete, and the replica kept the record for good. The source now holds GC for the peer
/// from SUBSCRIBE on.
#[test]
fn gc_during_a_new_replicas_snapshot_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let (mut sa, mut sb) = start_a_snapshot(&a, &b);
    let victim = b.scan("c").unwrap()[0].id;
    assert!(a.delete("c", victim).unwrap());
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 0, "GC waits for the replica: {r:?}");
    common::pump(&a, &mut sa, &b, &mut sb);
    assert!(
        b.get("c", victim).unwrap().is_none(),
        "the replica kept a record the source deleted"
    );
    assert_eq!(b.count("c").unwrap(), 11_999);
    assert_eq!(sa.stats().snapshots_sent, 1);
    // Acknowledged now: GC collects the tombstone.
    assert_eq!(a.gc(&GcOptions::default()).unwrap().tombstones_purged, 1);
}

/// The same gap, smaller, for a new peer that replays the feed instead (no snapshot): GC
/// waits for it from its SUBSCRIBE, before its first ACK.
#[test]
fn gc_waits_for_a_new_peer_replaying_the_feed_before_its_first_ack() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let ids = insert_many(&a, 3);
    let no_snapshot = SessionConfig {
        snapshot_new_peers: false,
        ..SessionConfig::default()
    };
    let mut sa = Session::new(&a, no_snapshot, 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    // Everything `a` sends reaches `b`; `b`'s ACKs are held back.
    let mut held = Vec::new();
    for _ in 0..10 {
        while let Some(f) = sb.poll_transmit(0, &b) {
            if sa.progress().peer_subscribed {
                held.push(f);
            } else {
                sa.handle_bytes(0, &f, &a).unwrap();
            }
        }
        while let Some(f) = sa.poll_transmit(0, &a) {
            sb.handle_bytes(0, &f, &b).unwrap();
        }
    }
    assert!(b.get("items", ids[0]).unwrap().is_some());
    assert_eq!(
        a.peers()
            .unwrap()
            .iter()
            .find(|p| p.node == b.node_id())
            .map(|p| p.acked),
        Some(Seq(0)),
        "held from where it started"
    );
    delete_all(&a, &ids[..1]);
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.horizon, r.tombstones_purged), (Seq(0), 0), "{r:?}");
    for f in held {
        sa.handle_bytes(0, &f, &a).unwrap();
    }
    common::pump(&a, &mut sa, &b, &mut sb);
    assert!(b.get("items", ids[0]).unwrap().is_none());
    assert_eq!(common::dump(&a), common::dump(&b));
}

/// GC no longer waits for a peer the application forgot, even mid-snapshot. The feed after
/// the snapshot (from its position, now below the GC horizon) may lack deletes: the sender
/// replaces the snapshot instead of continuing with the feed.
#[test]
fn a_peer_forgotten_during_its_snapshot_gets_a_replacing_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let (mut sa, mut sb) = start_a_snapshot(&a, &b);
    let victim = b.scan("c").unwrap()[0].id;
    assert!(a.delete("c", victim).unwrap());
    assert!(a.forget_peer(b.node_id()).unwrap());
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 1, "{r:?}");
    common::pump(&a, &mut sa, &b, &mut sb);
    assert!(
        b.get("c", victim).unwrap().is_none(),
        "the replica kept a record the source deleted"
    );
    assert_eq!(sa.stats().snapshots_sent, 2, "the snapshot was replaced");
    assert_eq!(common::dump(&a), common::dump(&b));
}

/// Being held for from SUBSCRIBE on does not make GC wait forever for a peer that never
/// finishes its snapshot: it expires after the retention like any other.
#[test]
fn a_peer_that_never_finishes_its_snapshot_expires() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let a = open_at(dir.path(), "a", &clock);
    let b = open_at(dir.path(), "b", &clock);
    let ids = insert_many(&a, 3);
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    // `b`'s HELLO and SUBSCRIBE reach `a`; of `a`'s frames only its HELLO gets through.
    let hello = sa.poll_transmit(0, &a).unwrap();
    sb.handle_bytes(0, &hello, &b).unwrap();
    while let Some(f) = sb.poll_transmit(0, &b) {
        sa.handle_bytes(0, &f, &a).unwrap();
    }
    assert!(sa.progress().peer_subscribed);
    drop((sa, sb));
    delete_all(&a, &ids[..1]);
    assert_eq!(a.gc(&GcOptions::default()).unwrap().tombstones_purged, 0);
    common::tick(&clock, 31 * DAY_MS);
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.expired_peers, vec![b.node_id()]);
    assert_eq!(r.tombstones_purged, 1);
}

/// GC drops the links among commits at or below its horizon (a transaction whose cell a
/// later one overwrote is linked to it, so that the two travel in one unit). A peer that then
/// reads the feed from below the horizon — one new to us but holding data of its own, so not
/// sent a snapshot — got such a transaction in two units and showed half of it between them
/// (simulation seed 3101719: a transfer's debit without its credit). The collected stretch
/// now goes as one unit.
#[test]
fn a_peer_reading_below_the_gc_horizon_gets_linked_transactions_whole() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let [x, y, z] = a
        .transaction(|tx| {
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push(tx.insert("acct", [("balance", Value::Int(0))])?);
            }
            Ok([ids[0], ids[1], ids[2]])
        })
        .unwrap();
    // Two transfers into `y`: the second overwrites the first's cell of `y`.
    a.transaction(|tx| {
        tx.update("acct", x, Patch::new().set("balance", -10))?;
        tx.update("acct", y, Patch::new().set("balance", 10))
    })
    .unwrap();
    a.transaction(|tx| {
        tx.update("acct", z, Patch::new().set("balance", -5))?;
        tx.update("acct", y, Patch::new().set("balance", 15))
    })
    .unwrap();
    // No peer to wait for: GC goes up to the head and drops the link.
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.horizon, a.last_seq().unwrap());
    assert!(r.links_pruned > 0, "{r:?}");
    // `b` holds a record of its own: not a new, empty peer, so it reads the feed from 0.
    b.insert("notes", [("n", Value::Int(1))]).unwrap();
    let one_commit_per_batch = SessionConfig {
        batch_cells_max: 1,
        ..SessionConfig::default()
    };
    let mut sa = Session::new(&a, one_commit_per_batch.clone(), 0).unwrap();
    let mut sb = Session::new(&b, one_commit_per_batch, 0).unwrap();
    // The sum of the balances once all three accounts are there (a record without its
    // balance is the insert seen without the cell a transfer overwrote: half of it too).
    let sum = |db: &Database| -> Option<i64> {
        let mut total = 0;
        for id in [x, y, z] {
            match db.get("acct", id).unwrap()?.fields.get("balance") {
                Some(Value::Int(n)) => total += n,
                _ => return Some(i64::MIN),
            }
        }
        Some(total)
    };
    for _ in 0..10_000 {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(0, &a) {
            sb.handle_bytes(0, &f, &b).unwrap();
            assert!(sum(&b).is_none_or(|s| s == 0), "a transfer seen half");
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(0, &b) {
            sa.handle_bytes(0, &f, &a).unwrap();
            progress = true;
        }
        if !progress && sa.is_caught_up(&a).unwrap() && sb.is_caught_up(&b).unwrap() {
            break;
        }
    }
    assert_eq!(sum(&b), Some(0));
    assert_eq!(
        b.get("acct", y).unwrap().unwrap().fields["balance"],
        Value::Int(15)
    );
}

/// A relay and a client in sync, sharing `N` records of `items` (returned).
fn relay_and_client_sharing<const N: usize>(
    dir: &std::path::Path,
    clock: &Arc<AtomicU64>,
) -> (Database, Database, [RecordId; N]) {
    let relay = open_at(dir, "relay", clock);
    let client = open_at(dir, "client", clock);
    let ids = std::array::from_fn(|i| {
        relay
            .insert("items", [("n", Value::Int(i as i64))])
            .unwrap()
    });
    common::sync_pair(
        &relay,
        &client,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    (relay, client, ids)
}

/// An ACK can overtake the acknowledging peer's own older writes: its feed waits behind its
/// window while its ACKs go out at once. An edit the peer made offline to a record, before it
/// saw our delete, is discarded where it was made when the delete is applied there (and
/// listed as a conflict there), before any ACK of the delete exists — but one already sent
/// is not (`an_edit_already_sent_when_the_delete_arrives_meets_the_tombstone`), so GC counts
/// the ACK only once the peer's feed has arrived as far as it reached then. Pins both, with
/// the relay collecting garbage after every frame it handles: nothing comes back, and the
/// tombstone waits for the peer's offline writes.
#[test]
fn an_ack_that_overtakes_an_older_offline_edit_lets_gc_resurrect_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let (relay, client, [id]) = relay_and_client_sharing(dir.path(), &clock);
    // Offline, the client writes more units than its window holds, then edits the record.
    let bulky = Value::from("x".repeat(100_000));
    for i in 0..40 {
        client
            .insert("other", [("n", Value::Int(i)), ("data", bulky.clone())])
            .unwrap();
    }
    client
        .update("items", id, Patch::new().set("note", "edited offline"))
        .unwrap();
    // Later, and without having seen the edit, the relay deletes the record.
    common::tick(&clock, 1000);
    assert!(relay.delete("items", id).unwrap());
    let mut sr = Session::new(&relay, SessionConfig::default(), 0).unwrap();
    let mut sc = Session::new(&client, SessionConfig::default(), 0).unwrap();
    // The relay collects garbage after every frame it handles, as a busy relay might.
    let mut purged = 0;
    let mut purged_before_the_last_unit = false;
    for _ in 0..1000 {
        let mut progress = false;
        while let Some(f) = sr.poll_transmit(0, &relay) {
            sc.handle_bytes(0, &f, &client).unwrap();
            progress = true;
        }
        while let Some(f) = sc.poll_transmit(0, &client) {
            sr.handle_bytes(0, &f, &relay).unwrap();
            purged += relay.gc(&GcOptions::default()).unwrap().tombstones_purged;
            purged_before_the_last_unit |= purged > 0 && relay.count("other").unwrap() < 40;
            progress = true;
        }
        if !progress && sr.is_caught_up(&relay).unwrap() && sc.is_caught_up(&client).unwrap() {
            break;
        }
    }
    assert!(
        !purged_before_the_last_unit,
        "the tombstone went while the client's offline writes were still arriving"
    );
    assert_eq!(purged, 1, "collected once they all came");
    assert!(client.get("items", id).unwrap().is_none());
    assert!(
        relay.get("items", id).unwrap().is_none(),
        "the offline edit brought back a record deleted after it"
    );
    assert_eq!(common::dump(&relay), common::dump(&client));
    assert_eq!(relay.count("other").unwrap(), 40);
    let lost = client.conflicts(Some("items")).unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].loser, Some(Value::from("edited offline")));
    assert_eq!(lost[0].winner, None, "lost to the delete");
}

/// A new peer's snapshot carries our tombstone of a record; before the peer has applied it,
/// the peer writes that record itself (a caller-chosen id), older than our delete, and that
/// write travels to us. GC here held the peer at the snapshot's position and collected the
/// tombstone meanwhile: the peer's insert then lived here, while at the peer our tombstone
/// beat it — two copies diverged for good (simulation seed 4211532 perturbed). GC now waits
/// at what the peer holds until it acknowledges the snapshot.
#[test]
fn gc_during_a_snapshot_keeps_deletes_the_peers_older_writes_must_meet() {
    let dir = tempfile::tempdir().unwrap();
    let clock_a = common::counter(T0 + 60_000);
    let clock_b = common::counter(T0);
    let a = open_at(dir.path(), "a", &clock_a);
    let b = open_at(dir.path(), "b", &clock_b);
    let x: RecordId = "d0040000-0000-7000-8000-000000000001".parse().unwrap();
    a.insert_with_id("items", x, [("n", Value::Int(1))])
        .unwrap();
    a.insert("items", [("n", Value::Int(2))]).unwrap();
    assert!(a.delete("items", x).unwrap());
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    // Everything goes through up to SNAPSHOT_BEGIN (the peer has our SUBSCRIBE, and sends
    // us its feed); from there on what we send is held.
    let mut to_b = Vec::new();
    let mut frames = blazedb::sync::frame::FrameDecoder::default();
    for _ in 0..10 {
        while let Some(f) = sa.poll_transmit(0, &a) {
            frames.push(&f);
            let kind = frames.next_frame().unwrap().unwrap().kind;
            if kind == blazedb::sync::message::kind::SNAPSHOT_BEGIN || !to_b.is_empty() {
                to_b.push(f);
            } else {
                sb.handle_bytes(0, &f, &b).unwrap();
            }
        }
        while let Some(f) = sb.poll_transmit(0, &b) {
            sa.handle_bytes(0, &f, &a).unwrap();
        }
    }
    assert!(!to_b.is_empty(), "the snapshot is on its way");
    assert!(b.get("items", x).unwrap().is_none());
    // The peer, its clock a minute behind, writes the record before the snapshot arrives.
    b.insert_with_id("items", x, [("n", Value::Int(9))])
        .unwrap();
    let r = a.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        r.tombstones_purged, 0,
        "the peer's writes may still meet it: {r:?}"
    );
    // The peer's write reaches us before the snapshot reaches it.
    while let Some(f) = sb.poll_transmit(0, &b) {
        sa.handle_bytes(0, &f, &a).unwrap();
    }
    for f in to_b {
        sb.handle_bytes(0, &f, &b).unwrap();
    }
    common::pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(common::dump(&a), common::dump(&b), "the copies converge");
    assert!(
        a.get("items", x).unwrap().is_none(),
        "the newer delete wins"
    );
    // Acknowledged now: the tombstone goes.
    assert_eq!(a.gc(&GcOptions::default()).unwrap().tombstones_purged, 1);
}

/// A replica collects the deletes it received once its peer has acknowledged its feed past
/// them. The replica's feed past its last ACK holds only what came from the peer, which is
/// never sent back, so only a CAUGHT_UP (at most one a second of them, see
/// `ECHO_CAUGHT_UP_INTERVAL_MS`) tells the peer it may acknowledge those positions: it used
/// to wait for the next unit from the peer, and a replica that only receives kept every
/// delete it received (the `gc_metadata` benchmark's replica: 154 bytes of metadata per live
/// record after 20 rounds). Two devices that stay connected, a few seconds between rounds.
#[test]
fn a_replica_collects_the_deletes_it_received_over_a_long_lived_session() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let mut ids = insert_many(&a, 200);
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    common::pump_at(0, &a, &mut sa, &b, &mut sb);
    for round in 1..=3u64 {
        // New records, then (within the second) deletes: the replica's CAUGHT_UP for the
        // first goes out at once, the one for the deletes a second later.
        let t = round * 10_000;
        ids.extend(insert_many(&a, 20));
        common::pump_at(t, &a, &mut sa, &b, &mut sb);
        let gone: Vec<RecordId> = ids.drain(..20).collect();
        delete_all(&a, &gone);
        common::pump_at(t + 10, &a, &mut sa, &b, &mut sb);
        let due = sb.poll_timeout().unwrap();
        assert!(due <= t + 1_000, "the replica's timer is set for {due}");
        common::pump_at(due, &a, &mut sa, &b, &mut sb);
        let ra = a.gc(&GcOptions::default()).unwrap();
        let rb = b.gc(&GcOptions::default()).unwrap();
        assert_eq!(ra.tombstones_purged, 20, "round {round}: A {ra:?}");
        assert_eq!(
            (rb.tombstones_purged, tombstones(&b, "items")),
            (20, 0),
            "round {round}: B {rb:?}, peers {:?}",
            b.peers().unwrap()
        );
    }
}

/// A CAUGHT_UP at the receiver's cursor is acknowledged too. When the ACK of the CAUGHT_UP
/// that announced a replica's positions is lost with the end of a session, the source has
/// them as its cursor and the replica's record of its ACKs stays behind; every later session
/// resumes from that record (a cursor past it looks like a restored file), skips to the same
/// head and announces it. Unacknowledged, because it moved no cursor, that held the
/// replica's GC back for good (found 2026-12-07 with `blazedb sync --once`).
#[test]
fn a_caught_up_at_the_cursor_is_acknowledged_so_a_lost_ack_is_made_good() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let ids = insert_many(&a, 20);
    {
        let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
        let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
        common::pump_at(0, &a, &mut sa, &b, &mut sb);
        delete_all(&a, &ids[..5]);
        common::pump_at(10, &a, &mut sa, &b, &mut sb);
        // The replica announces the positions its apply took a second later; the source
        // takes them as its cursor, and its ACK is lost with the connection.
        let due = sb.poll_timeout().unwrap();
        sb.handle_timeout(due, &b);
        let mut announced = 0;
        while let Some(f) = sb.poll_transmit(due, &b) {
            sa.handle_bytes(due, &f, &a).unwrap();
            announced += 1;
        }
        assert!(announced > 0, "the replica announced nothing");
        while sa.poll_transmit(due, &a).is_some() {}
        a.store_noted_cursors().unwrap();
        b.store_noted_cursors().unwrap();
    }
    let stale = b.peer_cursor(a.node_id(), PeerDirection::Acked).unwrap();
    assert!(stale < b.last_seq().unwrap(), "nothing was lost: {stale:?}");
    assert_eq!(
        a.peer_cursor(b.node_id(), PeerDirection::Received).unwrap(),
        b.last_seq().unwrap()
    );
    assert_eq!(b.gc(&GcOptions::default()).unwrap().tombstones_purged, 0);

    let mut sa = Session::new(&a, SessionConfig::default(), 100_000).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 100_000).unwrap();
    common::pump_at(100_000, &a, &mut sa, &b, &mut sb);
    assert_eq!(sb.acked(), b.last_seq().unwrap());
    b.store_noted_cursors().unwrap();
    let gc = b.gc(&GcOptions::default()).unwrap();
    assert_eq!((gc.tombstones_purged, gc.held_by), (5, None), "{gc:?}");
}

/// A side ending its session once caught up announces the positions its applies took, then
/// waits for the peer's ACK of that CAUGHT_UP — at most `END_ACK_WAIT_MS`, after which it may
/// end anyway and its timer no longer fires for the wait (it would fire at once, again and
/// again, while new changes kept the session from being caught up).
#[test]
fn ending_once_caught_up_waits_a_bounded_time_for_the_last_ack() {
    use blazedb::limits::END_ACK_WAIT_MS;
    use blazedb::sync::EndReadiness;
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    insert_many(&a, 5);
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    common::pump_at(0, &a, &mut sa, &b, &mut sb);
    insert_many(&a, 5);
    common::pump_at(10, &a, &mut sa, &b, &mut sb);
    assert!(sb.is_caught_up(&b).unwrap());
    // The positions B's apply took were passed over without a CAUGHT_UP.
    assert_eq!(sb.ready_to_end(20), EndReadiness::TransmitFirst);
    let announced: Vec<Vec<u8>> = std::iter::from_fn(|| sb.poll_transmit(20, &b)).collect();
    assert_eq!(announced.len(), 1, "one CAUGHT_UP");
    // Lost: no ACK comes.
    assert_eq!(sb.ready_to_end(20), EndReadiness::AwaitAck);
    let deadline = 20 + END_ACK_WAIT_MS;
    assert!(sb.poll_timeout().unwrap() <= deadline);
    assert_eq!(sb.ready_to_end(deadline - 1), EndReadiness::AwaitAck);
    sb.handle_timeout(deadline, &b);
    assert!(
        sb.poll_timeout().unwrap() > deadline,
        "the timer is done with the wait"
    );
    assert_eq!(sb.ready_to_end(deadline), EndReadiness::Ready);

    // Delivered, the ACK ends the wait at once.
    let mut sa = Session::new(&a, SessionConfig::default(), 100_000).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 100_000).unwrap();
    common::pump_at(100_000, &a, &mut sa, &b, &mut sb);
    assert_eq!(sb.ready_to_end(100_000), EndReadiness::Ready);
}

/// A peer that only pushes to us never receives our deletes, so no cursor of ours says when
/// its older writes are all in. It holds GC back by age instead: a removal is collected only
/// once it has been here for the retention, so a pusher's update made before a delete and
/// arriving within the retention still meets the tombstone and loses, as it would without
/// GC. Before, nothing held a tombstone for such a peer: GC right after the delete let the
/// pusher's older update bring the record back holding that update's fields (ARCHITECTURE,
/// GC, known gap 5).
#[test]
fn a_peer_that_only_pushes_holds_removals_for_the_retention() {
    use blazedb::sync::SyncMode;
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let device = open_at(dir.path(), "device", &clock);
    let server = open_at(dir.path(), "server", &clock);
    let pushes = SessionConfig {
        mode: SyncMode::Push,
        ..SessionConfig::default()
    };
    let push = |device: &Database, server: &Database| {
        common::sync_pair(device, server, pushes.clone(), SessionConfig::default());
    };
    let ids = insert_many(&device, 4);
    push(&device, &server);
    assert_eq!(server.count("items").unwrap(), 4);
    assert_eq!(
        server
            .peer_cursor(device.node_id(), PeerDirection::Acked)
            .unwrap(),
        Seq(0),
        "the server never sends the device its feed"
    );
    let listed = server.peers().unwrap();
    assert!(listed[0].pushes_only && !listed[0].relay, "{listed:?}");
    server.gc(&GcOptions::default()).unwrap();

    // Offline, the device edits a record; meanwhile the server deletes it (and another).
    common::tick(&clock, 1_000);
    device
        .update("items", ids[0], Patch::new().set("name", "edited offline"))
        .unwrap();
    common::tick(&clock, 1_000);
    delete_all(&server, &ids[..2]);
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 0, "{r:?}");
    assert_eq!(r.held_by, Some(device.node_id()), "{r:?}");
    assert_eq!(tombstones(&server, "items"), 2);

    // GC costs what changed since the last one, even with the horizon held a retention
    // back: nothing changed, nothing is read again.
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.tombstones_purged, r.records_examined), (0, 0), "{r:?}");

    // The device's older edit arrives and loses to the delete.
    push(&device, &server);
    assert_eq!(server.get("items", ids[0]).unwrap(), None);
    assert_eq!(server.count("items").unwrap(), 2);

    // The device keeps pushing; once the deletes are older than the retention, they go.
    common::tick(&clock, 31 * DAY_MS);
    device
        .update("items", ids[3], Patch::new().set("name", "still here"))
        .unwrap();
    push(&device, &server);
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 2, "{r:?}");
    assert_eq!(
        r.held_by,
        Some(device.node_id()),
        "what came since is still too young: {r:?}"
    );
    assert_eq!(tombstones(&server, "items"), 0);

    // A removal made now is held again while the device is heard from; once the device is
    // forgotten, nothing waits for it.
    delete_all(&server, &ids[2..3]);
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        (r.tombstones_purged, r.held_by),
        (0, Some(device.node_id()))
    );
    assert!(server.forget_peer(device.node_id()).unwrap());
    assert!(!server.peers().unwrap()[0].pushes_only);
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.tombstones_purged, r.held_by), (1, None), "{r:?}");

    // Syncing both ways, the device gets the server's feed: its acknowledged cursor holds
    // GC from then on, not the age.
    let ids2 = insert_many(&device, 2);
    common::sync_pair(
        &device,
        &server,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    assert!(!server.peers().unwrap()[0].pushes_only);
    delete_all(&server, &ids2);
    common::sync_pair(
        &device,
        &server,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    let r = server.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.tombstones_purged, r.held_by), (2, None), "{r:?}");
}

/// A replica that only pulls collects the deletes its source sent it as before: the source
/// holds them, so a write of its own older than one of them came before it in its feed, and
/// a write it receives later loses there. Only removals made here (or received from another
/// peer) wait the retention for it.
#[test]
fn a_pull_only_replica_collects_the_deletes_its_source_sent() {
    use blazedb::sync::SyncMode;
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let source = open_at(dir.path(), "source", &clock);
    let replica = open_at(dir.path(), "replica", &clock);
    let pulls = SessionConfig {
        mode: SyncMode::Pull,
        ..SessionConfig::default()
    };
    let pull = |source: &Database, replica: &Database| {
        common::sync_pair(source, replica, SessionConfig::default(), pulls.clone());
    };
    let ids = insert_many(&source, 5);
    pull(&source, &replica);
    delete_all(&source, &ids[..2]);
    pull(&source, &replica);
    assert_eq!(tombstones(&replica, "items"), 2);
    assert!(replica.peers().unwrap()[0].pushes_only);
    let r = replica.gc(&GcOptions::default()).unwrap();
    assert_eq!(r.tombstones_purged, 2, "{r:?}");
    assert_eq!(tombstones(&replica, "items"), 0);

    // A delete made here waits: the source's older writes to that record may still come.
    delete_all(&replica, &ids[2..3]);
    let r = replica.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        (r.tombstones_purged, r.held_by),
        (0, Some(source.node_id())),
        "{r:?}"
    );
    // The source's deletes keep going meanwhile, and so do the removal cells it sends (a
    // field it unset; a later write, so that the unset is not the record's newest cell,
    // which stays for a delete still on its way).
    delete_all(&source, &ids[3..4]);
    source
        .update("items", ids[4], Patch::new().unset("name"))
        .unwrap();
    source
        .update("items", ids[4], Patch::new().set("n", Value::Int(99)))
        .unwrap();
    pull(&source, &replica);
    let shown = replica.get("items", ids[4]).unwrap().unwrap().fields;
    let r = replica.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.tombstones_purged, r.cells_pruned), (1, 1), "{r:?}");
    assert_eq!(tombstones(&replica, "items"), 1);
    assert_eq!(replica.get("items", ids[4]).unwrap().unwrap().fields, shown);
    assert!(!shown.contains_key("name"), "{shown:?}");
    // A field unset here waits, like a delete made here.
    replica
        .update("items", ids[4], Patch::new().unset("n"))
        .unwrap();
    replica
        .update("items", ids[4], Patch::new().set("late", Value::Int(1)))
        .unwrap();
    let r = replica.gc(&GcOptions::default()).unwrap();
    assert_eq!((r.tombstones_purged, r.cells_pruned), (0, 0), "{r:?}");
    assert_eq!(
        replica.integrity_check().unwrap().problems,
        Vec::<String>::new()
    );
}

/// The acknowledging peer's edit is already on its way, in the first frames of a unit it
/// is sending, when our delete reaches it: it acknowledges the delete before the rest of its
/// unit, and GC here collected the tombstone meanwhile. The unit then brought the edit,
/// older than the delete, to a record we no longer held: it lived here and lost there, two
/// copies diverged for good (known gap 5). GC now counts an ACK only once the peer's feed
/// has arrived as far as it reached when it acknowledged: at its next CAUGHT_UP.
#[test]
fn an_edit_already_sent_when_the_delete_arrives_meets_the_tombstone() {
    use blazedb::sync::message::kind;
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let (relay, client, [id, hot]) = relay_and_client_sharing(dir.path(), &clock);
    // Offline, the client edits the record, then writes a chain of transactions, each
    // overwriting a field the one before wrote: one unit over many pages (links keep a
    // partly overwritten transaction whole), the edit in its first.
    client
        .transaction(|tx| {
            tx.update("items", id, Patch::new().set("note", "edited offline"))?;
            tx.update("items", hot, Patch::new().set("n", 0))
        })
        .unwrap();
    for i in 1..100 {
        client
            .transaction(|tx| {
                tx.update("items", hot, Patch::new().set("n", i))?;
                for j in 0..20 {
                    tx.insert("small", [("n", Value::Int(i * 100 + j))])?;
                }
                Ok(())
            })
            .unwrap();
    }
    // Later, and without having seen the edit, the relay deletes the record.
    common::tick(&clock, 1000);
    assert!(relay.delete("items", id).unwrap());
    let mut sr = Session::new(&relay, SessionConfig::default(), 0).unwrap();
    // Small pages: the unit goes out over many of them.
    let small_pages = SessionConfig {
        batch_cells_max: 64,
        ..SessionConfig::default()
    };
    let mut sc = Session::new(&client, small_pages, 0).unwrap();
    // The relay's CHANGES wait until the first frame of the client's unit has reached it.
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut unit_started = false;
    let mut from_relay = blazedb::sync::frame::FrameDecoder::default();
    let mut from_client = blazedb::sync::frame::FrameDecoder::default();
    let mut purged = 0;
    for _ in 0..1000 {
        let mut progress = false;
        while let Some(f) = sr.poll_transmit(0, &relay) {
            from_relay.push(&f);
            let k = from_relay.next_frame().unwrap().unwrap().kind;
            if !unit_started && (k == kind::CHANGES || !held.is_empty()) {
                held.push(f);
            } else {
                sc.handle_bytes(0, &f, &client).unwrap();
            }
            progress = true;
        }
        if unit_started {
            for f in held.drain(..) {
                sc.handle_bytes(0, &f, &client).unwrap();
            }
        }
        // One frame at a time from the client, the relay collecting garbage after each.
        if let Some(f) = sc.poll_transmit(0, &client) {
            from_client.push(&f);
            unit_started |= from_client.next_frame().unwrap().unwrap().kind == kind::CHANGES;
            sr.handle_bytes(0, &f, &relay).unwrap();
            purged += relay.gc(&GcOptions::default()).unwrap().tombstones_purged;
            progress = true;
        }
        if !progress && sr.is_caught_up(&relay).unwrap() && sc.is_caught_up(&client).unwrap() {
            break;
        }
    }
    assert!(client.get("items", id).unwrap().is_none(), "the delete won");
    assert_eq!(relay.count("small").unwrap(), 99 * 20);
    assert!(
        relay.get("items", id).unwrap().is_none(),
        "the edit, older than the delete, brought the record back (purged {purged})"
    );
    assert_eq!(common::dump(&relay), common::dump(&client));
    // Everything arrived and was acknowledged: now the tombstone goes.
    common::pump(&relay, &mut sr, &client, &mut sc);
    assert_eq!(
        relay.gc(&GcOptions::default()).unwrap().tombstones_purged + purged,
        1
    );
}

/// The stable cursor: a peer that sends us nothing (it only pulls) is stable at its ACK,
/// and a peer that sends us its feed becomes stable when it says its feed has gone whole
/// (here with the flag of the ACK that answers the last unit). `peers` lists it; it never
/// passes the acknowledged cursor, and GC collects up to it.
#[test]
fn the_stable_cursor_follows_the_ack_once_the_peers_feed_has_come() {
    use blazedb::sync::SyncMode;
    let dir = tempfile::tempdir().unwrap();
    let clock = common::counter(T0);
    let source = open_at(dir.path(), "source", &clock);
    let replica = open_at(dir.path(), "replica", &clock);
    let both = open_at(dir.path(), "both", &clock);
    let ids = insert_many(&source, 3);
    let pulls = SessionConfig {
        mode: SyncMode::Pull,
        ..SessionConfig::default()
    };
    common::sync_pair(&source, &replica, SessionConfig::default(), pulls.clone());
    common::sync_pair(
        &source,
        &both,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    delete_all(&source, &ids[..1]);
    common::sync_pair(&source, &replica, SessionConfig::default(), pulls);
    let head = source.last_seq().unwrap();
    let of = |node: NodeId| {
        source
            .peers()
            .unwrap()
            .into_iter()
            .find(|p| p.node == node)
            .unwrap()
    };
    let r = of(replica.node_id());
    assert_eq!((r.acked, r.stable), (head, head), "{r:?}");
    // The other peer has not had the delete: GC waits for it.
    let g = source.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        (g.tombstones_purged, g.held_by),
        (0, Some(both.node_id())),
        "{g:?}"
    );
    let b = of(both.node_id());
    assert!(b.stable <= b.acked && b.acked < head, "{b:?}");
    // It writes while it gets the delete; its answer to our unit says its feed went whole.
    both.insert("items", [("n", Value::Int(7))]).unwrap();
    common::sync_pair(
        &source,
        &both,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    let b = of(both.node_id());
    assert!(b.acked >= head && b.stable == b.acked, "{b:?}");
    assert_eq!(
        source.gc(&GcOptions::default()).unwrap().tombstones_purged,
        1
    );
    assert_eq!(source.count("items").unwrap(), 3);
}
