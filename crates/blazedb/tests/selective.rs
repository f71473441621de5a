//! Selective sync: a replica receives only its view (collections, filter, excluded fields);
//! records move in whole and move out as evictions (never deletes); the view can change on a
//! live session and at reconnect; snapshots bootstrap, resume and replace.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use blazedb::sync::frame::FrameEncoder;
use blazedb::sync::message::encode_simple;
use blazedb::sync::{
    ErrorCode, Hello, Message, Session, SessionConfig, SnapshotWish, SyncMode, SyncPolicy,
};
use blazedb::{Database, GcOptions, Patch, PeerDirection, RecordId, Seq, StagedParts, Value};
use common::{open, pump, pump_until, sync_pair};

fn full() -> SessionConfig {
    SessionConfig::default()
}

fn partial(policy: SyncPolicy) -> SessionConfig {
    SessionConfig {
        policy,
        ..SessionConfig::default()
    }
}

/// A source and a replica session in memory, where everything the replica sends from its
/// first CHANGES frame on is held back (its write has not reached the source yet) while the
/// source's frames go through.
#[derive(Default)]
struct HeldLink {
    from_replica: blazedb::sync::frame::FrameDecoder,
    held: Vec<Vec<u8>>,
}

impl HeldLink {
    /// Exchange frames until neither side has more to send.
    fn exchange(
        &mut self,
        source: &Database,
        ss: &mut Session,
        replica: &Database,
        sr: &mut Session,
    ) {
        for _ in 0..100 {
            let mut progress = false;
            while let Some(f) = ss.poll_transmit(0, source) {
                sr.handle_bytes(0, &f, replica).unwrap();
                progress = true;
            }
            while let Some(f) = sr.poll_transmit(0, replica) {
                self.from_replica.push(&f);
                let frame = self.from_replica.next_frame().unwrap().unwrap();
                if frame.kind == blazedb::sync::message::kind::CHANGES || !self.held.is_empty() {
                    self.held.push(f);
                } else {
                    ss.handle_bytes(0, &f, source).unwrap();
                }
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }

    /// Hand the source what was held back.
    fn release(&mut self, source: &Database, ss: &mut Session) {
        for f in std::mem::take(&mut self.held) {
            ss.handle_bytes(0, &f, source).unwrap();
        }
    }
}

/// Later, offline, the replica closes and reopens `x` (which the source has closed): its
/// reopening is the newest write. Then the source's frames reach it, and it refuses the
/// EVICT of `x` (its write is not acknowledged yet), while everything it sends from its
/// write on is held back. Returns the sessions (source, replica) and the link.
fn replica_reopens_with_its_frames_held(
    source: &Database,
    replica: &Database,
    policy: &SyncPolicy,
    x: RecordId,
) -> (Session, Session, HeldLink) {
    later();
    replica
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    replica
        .update("todos", x, Patch::new().set("done", false))
        .unwrap();
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, partial(policy.clone()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(source, &mut ss, replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's write is held back");
    (ss, sr, link)
}

fn open_todos(p: &SyncPolicy) -> SyncPolicy {
    let _ = p;
    SyncPolicy {
        collections: Some(vec!["todos".into()]),
        filter: Some("done == false".into()),
        exclude_fields: vec!["attachment".into()],
    }
}

/// `source` with 100 todos (every 4th open), 50 notes; each todo has an attachment.
fn seeded(dir: &std::path::Path) -> (Database, Vec<RecordId>) {
    let source = open(dir, "source");
    let mut ids = Vec::new();
    source
        .transaction(|tx| {
            for i in 0..100 {
                ids.push(tx.insert(
                    "todos",
                    [
                        ("n", Value::Int(i)),
                        ("done", Value::Bool(i % 4 != 0)),
                        ("attachment", Value::Bytes(vec![7; 200])),
                    ],
                )?);
            }
            for i in 0..50 {
                tx.insert("notes", [("n", Value::Int(i))])?;
            }
            Ok(())
        })
        .unwrap();
    (source, ids)
}

/// [`seeded`], with a replica of the open todos synced from it: (dir, source, ids, replica,
/// the replica's policy).
fn seeded_with_replica() -> (
    tempfile::TempDir,
    Database,
    Vec<RecordId>,
    Database,
    SyncPolicy,
) {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::everything());
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    (dir, source, ids, replica, policy)
}

#[test]
fn a_partial_replica_gets_only_its_view_without_excluded_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::everything());
    let moved = sync_pair(&source, &replica, full(), partial(policy.clone()));
    assert_eq!(replica.count("todos").unwrap(), 25);
    assert_eq!(replica.count("notes").unwrap(), 0);
    for r in replica.scan("todos").unwrap() {
        assert_eq!(r.fields["done"], Value::Bool(false));
        assert!(!r.fields.contains_key("attachment"), "excluded field sent");
        assert_eq!(r.fields.len(), 2);
    }
    // A full replica for comparison moves far more.
    let whole = open(dir.path(), "whole");
    let moved_full = sync_pair(&source, &whole, full(), full());
    assert!(
        moved.a_to_b * 3 < moved_full.a_to_b,
        "partial {moved:?} vs full {moved_full:?}"
    );
    // Nothing flows back from the replica (it has nothing of its own), and the source is
    // intact.
    assert_eq!(source.count("todos").unwrap(), 100);
    assert!(replica.get("todos", ids[0]).unwrap().is_some());
    assert!(replica.get("todos", ids[1]).unwrap().is_none());
}

#[test]
fn move_in_sends_the_whole_record_and_move_out_evicts_without_a_delete() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();

    // Move in: ids[1] is done; reopen it (one field changes) → the whole record arrives.
    source
        .update("todos", ids[1], Patch::new().set("done", false))
        .unwrap();
    // Move out: ids[0] is open; close it.
    source
        .update("todos", ids[0], Patch::new().set("done", true))
        .unwrap();
    // A change that moves nothing: a field the filter does not read, on a record in view.
    source
        .update("todos", ids[4], Patch::new().set("n", 1000))
        .unwrap();
    sync_pair(&source, &replica, full(), partial(policy.clone()));

    let moved_in = replica.get("todos", ids[1]).unwrap().expect("moved in");
    assert_eq!(
        moved_in.fields["n"],
        Value::Int(1),
        "whole record, not the delta"
    );
    assert!(!moved_in.fields.contains_key("attachment"));
    assert!(replica.get("todos", ids[0]).unwrap().is_none(), "evicted");
    assert_eq!(
        replica.get("todos", ids[4]).unwrap().unwrap().fields["n"],
        Value::Int(1000)
    );
    // The eviction is not a delete: the source keeps the record after syncing both ways,
    // and the replica holds no tombstone for it.
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    assert!(source.get("todos", ids[0]).unwrap().is_some());
    assert!(replica.record_state("todos", ids[0]).unwrap().is_none());
    assert_eq!(replica.count("todos").unwrap(), 25);

    // A real delete of a record in view reaches the replica.
    source.delete("todos", ids[8]).unwrap();
    sync_pair(&source, &replica, full(), partial(policy));
    assert!(replica.get("todos", ids[8]).unwrap().is_none());
    assert_eq!(replica.count("todos").unwrap(), 24);
}

#[test]
fn a_replica_keeps_and_sends_its_pending_edit_of_a_record_leaving_its_view() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();
    // Concurrently: the source closes ids[0]; the replica edits another field of it.
    source
        .update("todos", ids[0], Patch::new().set("done", true))
        .unwrap();
    replica
        .update("todos", ids[0], Patch::new().set("note", "mine"))
        .unwrap();
    sync_pair(&source, &replica, full(), partial(policy));
    // Nothing is lost: the replica's edit reached the source.
    let at_source = source.get("todos", ids[0]).unwrap().unwrap();
    assert_eq!(at_source.fields["note"], Value::from("mine"));
    assert_eq!(at_source.fields["done"], Value::Bool(true));
}

/// Two partial replicas with one filter, syncing with each other: one closes a record
/// (moving it out of both views). The other is sent an EVICT, not the change, so its ACK
/// does not mean it holds the closed record, and the closer must keep it until a peer that
/// holds it has it: it dropped it on that ACK, and the record was gone from both, with no
/// tombstone or conflict (found through the in-process topology, which gave one policy to
/// both ends). A full peer then gets it, and only then does the closer let it go.
#[test]
fn a_record_leaving_two_partial_replicas_views_stays_until_a_full_peer_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), "source");
    let (phone, tablet) = (open(dir.path(), "phone"), open(dir.path(), "tablet"));
    let open_only = SyncPolicy {
        filter: Some("done == false".into()),
        ..SyncPolicy::default()
    };
    let id = source
        .insert(
            "todos",
            [("title", Value::from("x")), ("done", Value::Bool(false))],
        )
        .unwrap();
    sync_pair(&source, &phone, full(), partial(open_only.clone()));
    sync_pair(&source, &tablet, full(), partial(open_only.clone()));
    phone
        .update("todos", id, Patch::new().set("done", true))
        .unwrap();
    // Twice: the second session's SUBSCRIBE runs the eviction on the first one's ACKs.
    for _ in 0..2 {
        sync_pair(
            &phone,
            &tablet,
            partial(open_only.clone()),
            partial(open_only.clone()),
        );
    }
    // (The tablet may still show the open version it got from the source: its copy counts
    // as a change the phone had not acknowledged, so it kept it past the EVICT. The source
    // brings it the closed one.)
    let kept = phone
        .get("todos", id)
        .unwrap()
        .expect("kept for the full peer");
    assert_eq!(kept.fields["done"], Value::Bool(true));
    for _ in 0..2 {
        sync_pair(&source, &phone, full(), partial(open_only.clone()));
    }
    let at_source = source.get("todos", id).unwrap().unwrap();
    assert_eq!(at_source.fields["done"], Value::Bool(true));
    assert!(
        phone.get("todos", id).unwrap().is_none(),
        "let go once held"
    );
}

/// Whether `db`'s copy of the record holds the field `att`.
fn holds_att(db: &Database, id: RecordId) -> bool {
    db.get("bugs", id)
        .unwrap()
        .unwrap()
        .fields
        .contains_key("att")
}

/// A replica that already excludes a field and then writes it (an app storing an attachment
/// the phone does not sync down) sends the value and drops it at the peer's ACK: kept, its
/// value went stale as soon as another replica changed the field, which it
/// never receives (an audit, 2026-12-07, through `blazedb sync --exclude-fields`).
#[test]
fn a_replica_that_writes_a_field_it_excludes_drops_it_once_the_peer_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (open(dir.path(), "source"), open(dir.path(), "replica"));
    let id = source
        .insert("bugs", [("title", "t"), ("att", "BIG")])
        .unwrap();
    let no_att = || {
        partial(SyncPolicy {
            exclude_fields: vec!["att".into()],
            ..SyncPolicy::default()
        })
    };
    sync_pair(&source, &replica, full(), no_att());
    assert!(!holds_att(&replica, id));

    replica
        .update("bugs", id, Patch::new().set("att", "from-replica"))
        .unwrap();
    sync_pair(&source, &replica, full(), no_att());
    assert_eq!(
        source.get("bugs", id).unwrap().unwrap().fields["att"],
        Value::from("from-replica"),
        "the write was sent"
    );
    // Dropped in the session that sent it, at its ACK.
    assert!(!holds_att(&replica, id), "dropped once the source has it");

    source
        .update("bugs", id, Patch::new().set("att", "newer"))
        .unwrap();
    sync_pair(&source, &replica, full(), no_att());
    let copy = replica.get("bugs", id).unwrap().unwrap();
    assert!(!copy.fields.contains_key("att"), "{copy:?}");
    assert_eq!(copy.fields["title"], Value::from("t"));
    assert!(replica
        .query(
            "bugs",
            &blazedb::Query::filter("att == \"from-replica\"").unwrap()
        )
        .unwrap()
        .is_empty());
}

/// The session that sent the write ended before its ACK came back: the next one drops the
/// field (the peer acknowledges our feed's head there, though nothing is left to send).
#[test]
fn an_excluded_field_whose_write_reached_the_peer_unacknowledged_goes_at_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (open(dir.path(), "source"), open(dir.path(), "replica"));
    let id = source.insert("bugs", [("title", "t")]).unwrap();
    let no_att = || {
        partial(SyncPolicy {
            exclude_fields: vec!["att".into()],
            ..SyncPolicy::default()
        })
    };
    sync_pair(&source, &replica, full(), no_att());
    replica
        .update("bugs", id, Patch::new().set("att", "from-replica"))
        .unwrap();
    let source_has_it = || {
        source.get("bugs", id).unwrap().unwrap().fields.get("att")
            == Some(&Value::from("from-replica"))
    };
    let mut sr = Session::new(&replica, no_att(), 0).unwrap();
    let mut ss = Session::new(&source, full(), 0).unwrap();
    pump_until(&replica, &mut sr, &source, &mut ss, |_| source_has_it());
    // The source acknowledges (and notes that it received the write); the ACK is lost.
    while ss.poll_transmit(0, &source).is_some() {}
    drop((sr, ss));
    assert!(holds_att(&replica, id), "kept: no ACK came");
    sync_pair(&source, &replica, full(), no_att());
    assert!(!holds_att(&replica, id));
}

/// A replica that starts excluding a field it has edited but not yet synced sends the edit
/// first and drops its copy of the field only once the source has it: the exclusion used to
/// evict the field before the session read the feed, so the edit was lost everywhere, with no
/// conflict (found by exercising `blazedb sync --exclude-fields`). At reconnect and on a live
/// session alike.
#[test]
fn a_replica_excluding_a_field_it_edited_sends_the_edit_before_dropping_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (open(dir.path(), "source"), open(dir.path(), "replica"));
    let id = source
        .insert("bugs", [("title", "orig"), ("att", "A0")])
        .unwrap();
    let other = source
        .insert("bugs", [("title", "other"), ("att", "B0")])
        .unwrap();
    sync_pair(&source, &replica, full(), full());
    replica
        .update(
            "bugs",
            id,
            Patch::new().set("title", "edited").set("att", "A-replica"),
        )
        .unwrap();
    let no_att = SyncPolicy {
        exclude_fields: vec!["att".into()],
        ..SyncPolicy::default()
    };
    // At reconnect, with the new policy.
    sync_pair(&source, &replica, full(), partial(no_att.clone()));
    let at_source = source.get("bugs", id).unwrap().unwrap();
    assert_eq!(
        at_source.fields["att"],
        Value::from("A-replica"),
        "the edit arrived"
    );
    assert_eq!(at_source.fields["title"], Value::from("edited"));
    for r in [id, other] {
        let copy = replica.get("bugs", r).unwrap().unwrap();
        assert!(
            !copy.fields.contains_key("att"),
            "dropped once sent: {copy:?}"
        );
    }
    assert_eq!(
        source.get("bugs", other).unwrap().unwrap().fields["att"],
        Value::from("B0")
    );

    // On a live session: the edit and the new policy in one breath.
    sync_pair(&source, &replica, full(), full());
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, full(), 0).unwrap();
    pump(&source, &mut ss, &replica, &mut sr);
    assert_eq!(
        replica.get("bugs", id).unwrap().unwrap().fields["att"],
        Value::from("A-replica")
    );
    replica
        .update("bugs", id, Patch::new().set("att", "A-live"))
        .unwrap();
    sr.set_policy(0, &replica, no_att).unwrap();
    pump(&source, &mut ss, &replica, &mut sr);
    assert_eq!(
        source.get("bugs", id).unwrap().unwrap().fields["att"],
        Value::from("A-live")
    );
    assert!(!replica
        .get("bugs", id)
        .unwrap()
        .unwrap()
        .fields
        .contains_key("att"));
}

#[test]
fn the_policy_changes_on_a_live_session_and_at_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let replica = open(dir.path(), "replica");
    let narrow = open_todos(&SyncPolicy::everything());
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(narrow.clone()), 0).unwrap();
    pump(&source, &mut ss, &replica, &mut sr);
    assert_eq!(replica.count("todos").unwrap(), 25);

    // Live: widen to done todos only, with attachments, plus notes — while the source
    // keeps writing.
    let wide = SyncPolicy {
        collections: Some(vec!["todos".into(), "notes".into()]),
        filter: Some("done == true || exists(n)".into()),
        exclude_fields: vec![],
    };
    sr.set_policy(0, &replica, wide.clone()).unwrap();
    source
        .update("todos", ids[2], Patch::new().set("n", -2))
        .unwrap();
    pump(&source, &mut ss, &replica, &mut sr);
    assert_eq!(replica.count("todos").unwrap(), 100);
    assert_eq!(replica.count("notes").unwrap(), 50);
    let r = replica.get("todos", ids[2]).unwrap().unwrap();
    assert_eq!(r.fields["n"], Value::Int(-2));
    assert_eq!(r.fields["attachment"], Value::Bytes(vec![7; 200]));
    assert!(ss.stats().snapshots_sent >= 2);

    // Live: narrow to notes only. Todos leave (evicted), notes stay.
    let notes_only = SyncPolicy {
        collections: Some(vec!["notes".into()]),
        ..SyncPolicy::default()
    };
    sr.set_policy(0, &replica, notes_only.clone()).unwrap();
    pump(&source, &mut ss, &replica, &mut sr);
    assert_eq!(replica.count("todos").unwrap(), 0, "left the view");
    assert_eq!(replica.count("notes").unwrap(), 50);
    assert_eq!(
        source.count("todos").unwrap(),
        100,
        "evictions are not deletes"
    );
    drop((ss, sr));

    // At reconnect, with yet another policy: the open todos again, without attachments.
    sync_pair(&source, &replica, full(), partial(narrow.clone()));
    assert_eq!(replica.count("todos").unwrap(), 25);
    assert_eq!(replica.count("notes").unwrap(), 0);
    assert!(replica
        .scan("todos")
        .unwrap()
        .iter()
        .all(|r| !r.fields.contains_key("attachment")));
    // Same policy again: incremental, a few hundred bytes.
    let again = sync_pair(&source, &replica, full(), partial(narrow));
    assert!(again.a_to_b + again.b_to_a < 400, "{again:?}");
    assert_eq!(source.count("todos").unwrap(), 100);
    assert_eq!(source.count("notes").unwrap(), 50);
}

#[test]
fn an_invalid_policy_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path(), "replica");
    let bad = SyncPolicy {
        filter: Some("done = false".into()),
        ..SyncPolicy::default()
    };
    let err = Session::new(&replica, partial(bad.clone()), 0).unwrap_err();
    assert!(err.to_string().contains("did you mean `==`?"), "{err}");
    let (source, _) = seeded(dir.path());
    let mut sr = Session::new(&replica, full(), 0).unwrap();
    assert!(
        sr.set_policy(0, &replica, bad.clone()).is_err(),
        "refused locally"
    );

    // A peer that sends one anyway gets INVALID_POLICY, and nothing is sent to it.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut enc = FrameEncoder::default();
    let mut wire = Vec::new();
    for m in [
        Message::Hello(Hello {
            version: blazedb::limits::PROTOCOL_VERSION,
            node: replica.node_id(),
            last_seq: Seq(0),
            mode: SyncMode::Both,
            server: false,
            caps: 0,
            token: String::new(),
        }),
        Message::Subscribe {
            from: Seq(0),
            policy: bad,
            snapshot: SnapshotWish::No,
            acked: Seq(0),
        },
    ] {
        let (k, p) = encode_simple(&m);
        wire.extend(enc.encode(k, false, &p));
    }
    let err = ss.handle_bytes(0, &wire, &source).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy);
    assert!(err.message.contains("did you mean"), "{}", err.message);
    assert!(ss.is_closed());
}

#[test]
fn a_peer_behind_the_gc_horizon_is_rebootstrapped_and_drops_what_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let a = open(dir.path(), "a");
    let b = open(dir.path(), "b");
    sync_pair(&source, &a, full(), full());
    sync_pair(&source, &b, full(), full());
    // b goes away. The source deletes records, a sees the deletes, and GC (b past its
    // retention) purges the tombstones.
    for id in &ids[..10] {
        source.delete("todos", *id).unwrap();
    }
    source
        .update("todos", ids[50], Patch::new().set("n", 5050))
        .unwrap();
    sync_pair(&source, &a, full(), full());
    std::thread::sleep(std::time::Duration::from_millis(20));
    sync_pair(&source, &a, full(), full());
    let report = source
        .gc(&GcOptions {
            peer_retention_ms: 10,
        })
        .unwrap();
    assert!(report.tombstones_purged >= 10, "{report:?}");
    assert!(source.gc_horizon().unwrap() > Seq(0));
    // b returns: its cursor predates the horizon, so it gets a replacing snapshot and drops
    // the records whose tombstones are gone.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sb = Session::new(&b, full(), 0).unwrap();
    pump(&source, &mut ss, &b, &mut sb);
    assert_eq!(ss.stats().snapshots_sent, 1);
    assert_eq!(sb.stats().snapshots_applied, 1);
    assert_eq!(b.count("todos").unwrap(), 90);
    assert_eq!(
        b.get("todos", ids[50]).unwrap().unwrap().fields["n"],
        Value::Int(5050)
    );
    assert_eq!(common::dump(&b), common::dump(&source));
}

#[test]
fn a_snapshot_interrupted_at_every_chunk_boundary_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), "source");
    // Enough cells for several chunks.
    source
        .transaction(|tx| {
            for i in 0..12_000 {
                tx.insert(
                    "c",
                    [("n", Value::Int(i)), ("s", Value::from(format!("v{i}")))],
                )?;
            }
            Ok(())
        })
        .unwrap();
    let reference = open(dir.path(), "reference");
    sync_pair(&source, &reference, full(), full());

    // Count the chunks of a full snapshot.
    let chunks = {
        let probe = open(dir.path(), "probe");
        let mut ss = Session::new(&source, full(), 0).unwrap();
        let mut sp = Session::new(&probe, full(), 0).unwrap();
        pump(&source, &mut ss, &probe, &mut sp);
        assert_eq!(sp.stats().snapshots_applied, 1);
        count_chunks(&source, &probe)
    };
    assert!(chunks >= 3, "{chunks} chunks");

    for cut in 1..chunks {
        let replica = open(dir.path(), &format!("r{cut}"));
        // First connection: deliver HELLO, SUBSCRIBE and `cut` chunks, then drop it.
        {
            let mut ss = Session::new(&source, full(), 0).unwrap();
            let mut sr = Session::new(&replica, full(), 0).unwrap();
            let mut seen = 0;
            'outer: for _ in 0..1000 {
                while let Some(f) = sr.poll_transmit(0, &replica) {
                    ss.handle_bytes(0, &f, &source).unwrap();
                }
                while let Some(f) = ss.poll_transmit(0, &source) {
                    sr.handle_bytes(0, &f, &replica).unwrap();
                    if sr.progress().receiving_snapshot {
                        seen = chunk_count(&replica, &source);
                        if seen >= cut {
                            break 'outer;
                        }
                    }
                }
            }
            assert_eq!(seen, cut);
            sr.transport_closed(0, &replica);
        }
        // A new replica's snapshot only adds, so its chunks were merged as they came: the
        // records of the chunks received are already there, before the snapshot ends.
        let early = replica.count("c").unwrap();
        assert!(
            early > 0 && early < 12_000,
            "cut {cut}: {early} records early"
        );
        // Changes made meanwhile come with the feed after the snapshot.
        source
            .insert("c", [("n", Value::Int(-(cut as i64)))])
            .unwrap();
        reference
            .insert("c", [("n", Value::Int(-(cut as i64)))])
            .unwrap();
        // Second connection: resumes after the chunks already received.
        let mut ss = Session::new(&source, full(), 0).unwrap();
        let mut sr = Session::new(&replica, full(), 0).unwrap();
        let moved = pump(&source, &mut ss, &replica, &mut sr);
        assert_eq!(sr.stats().snapshots_applied, 1, "cut {cut}");
        assert_eq!(replica.count("c").unwrap(), source.count("c").unwrap());
        let want: Vec<_> = common::dump(&source);
        assert_eq!(common::dump(&replica), want, "cut {cut}");
        // Only the rest was sent again: less than a whole snapshot.
        assert!(moved.a_to_b > 0);
    }
}

/// Chunks staged at `replica` for a snapshot from `source`.
fn chunk_count(replica: &Database, source: &Database) -> u32 {
    replica
        .snapshot_progress(source.node_id())
        .unwrap()
        .map_or(0, |p| p.next_index)
}

fn count_chunks(source: &Database, probe: &Database) -> u32 {
    // The probe applied everything; count how many chunks a snapshot of the source has by
    // reading pages the way the sender does.
    let _ = probe;
    let mut after = None;
    let mut n = 0;
    loop {
        let page = source
            .snapshot_page(
                after.as_ref(),
                None,
                blazedb::limits::SNAPSHOT_CHUNK_CELLS,
                &mut |_, _, _, _| true,
            )
            .unwrap();
        if !page.changes.is_empty() {
            n += 1;
        }
        match page.next {
            Some(k) => after = Some(k),
            None => return n,
        }
    }
}

#[test]
fn an_evict_lost_with_the_connection_after_its_unit_is_sent_again() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();
    assert!(replica.get("todos", ids[0]).unwrap().is_some());

    // ids[0] leaves the view, in a transaction that also edits ids[4] (in view). The unit
    // that carries it is applied and acknowledged; the EVICT that follows the unit is lost
    // with the link.
    source
        .transaction(|tx| {
            tx.update("todos", ids[0], Patch::new().set("done", true))?;
            tx.update("todos", ids[4], Patch::new().set("n", 1000))
        })
        .unwrap();
    let head = source.last_seq().unwrap();
    {
        let mut ss = Session::new(&source, full(), 0).unwrap();
        let mut sr = Session::new(&replica, partial(policy.clone()), 0).unwrap();
        let mut delivered_unit = false;
        for _ in 0..1_000 {
            while let Some(f) = sr.poll_transmit(0, &replica) {
                ss.handle_bytes(0, &f, &source).unwrap();
            }
            let Some(f) = ss.poll_transmit(0, &source) else {
                break;
            };
            if delivered_unit {
                // Everything after the unit (the EVICT among it) is lost.
                continue;
            }
            sr.handle_bytes(0, &f, &replica).unwrap();
            let received = replica
                .peer_cursor(source.node_id(), blazedb::PeerDirection::Received)
                .unwrap();
            if received >= head {
                delivered_unit = true;
                // The replica's ACK reaches the source.
                while let Some(f) = sr.poll_transmit(0, &replica) {
                    ss.handle_bytes(0, &f, &source).unwrap();
                }
            }
        }
        assert!(delivered_unit);
        assert!(
            replica.get("todos", ids[0]).unwrap().is_some(),
            "the EVICT was lost"
        );
    }
    // Next session: the source derives the lost EVICT again.
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    assert!(
        replica.get("todos", ids[0]).unwrap().is_none(),
        "evicted after reconnect"
    );
    assert!(source.get("todos", ids[0]).unwrap().is_some());
    assert_eq!(replica.count("todos").unwrap(), 24);
    // And once confirmed, nothing more is re-derived: the note is gone.
    sync_pair(&source, &replica, full(), partial(policy));
    assert_eq!(
        source
            .peer_note(replica.node_id(), "evicts_unconfirmed_after")
            .unwrap(),
        None
    );
}

#[test]
fn a_move_in_overwritten_by_the_replicas_own_write_still_brings_the_whole_record() {
    // The replica's clock runs ahead, so its write wins over a third node's later one.
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let third = open(dir.path(), "third");
    let replica = Database::open(
        dir.path().join("replica.db"),
        blazedb::OpenOptions {
            wall_clock: std::sync::Arc::new(|| blazedb::store::system_ms() + 2_000),
            ..blazedb::OpenOptions::default()
        },
    )
    .unwrap();
    let policy = open_todos(&SyncPolicy::everything());
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    sync_pair(&source, &third, full(), full());
    let x = ids[0];
    // Offline, the replica edits x (a field its filter reads), newest of all writes.
    replica
        .update("todos", x, Patch::new().set("done", false))
        .unwrap();
    // Elsewhere: x leaves the view and its counter moves while it is out.
    third
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    third.increment("todos", x, "votes", 3).unwrap();
    sync_pair(&source, &third, full(), full());
    // The source sends the replica its feed while x is out of view (the counter is filtered
    // out); the replica's own frames (its edit) are held back.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(policy.clone()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(&source, &mut ss, &replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's edit is held back");
    assert!(!replica
        .get("todos", x)
        .unwrap()
        .unwrap()
        .fields
        .contains_key("votes"));
    // x moves back in at the source (a third node reopens it) — and then the replica's held
    // edit arrives and overwrites that move-in before it was sent.
    third
        .update("todos", x, Patch::new().set("done", false))
        .unwrap();
    sync_pair(&source, &third, full(), full());
    link.release(&source, &mut ss);
    pump(&source, &mut ss, &replica, &mut sr);
    let got = replica.get("todos", x).unwrap().unwrap();
    assert_eq!(got.fields.get("votes"), Some(&Value::Int(3)), "{got:?}");
    assert_eq!(
        got.fields,
        source
            .get("todos", x)
            .unwrap()
            .unwrap()
            .fields
            .into_iter()
            .filter(|(k, _)| k != "attachment")
            .collect()
    );
}

/// A partial replica that re-bootstraps a full peer (the peer's cursor fell below the
/// replica's GC horizon) sends a replacing snapshot of its view only. The full peer drops the
/// records of that view the snapshot lacks (the replica deleted them), and keeps everything
/// outside it: the replica never had those, so their absence says nothing.
#[test]
fn a_replacing_snapshot_from_a_partial_replica_drops_nothing_outside_its_view() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, ids) = seeded(dir.path());
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::default());
    sync_pair(&hub, &replica, full(), partial(policy.clone()));
    assert_eq!(replica.count("todos").unwrap(), 25);
    assert_eq!(replica.count("notes").unwrap(), 0);
    // The hub goes away. The replica deletes an open todo and, the hub past its retention,
    // GC purges the tombstone.
    replica.delete("todos", ids[0]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = replica
        .gc(&GcOptions {
            peer_retention_ms: 10,
        })
        .unwrap();
    assert_eq!(report.tombstones_purged, 1, "{report:?}");
    // The hub returns below the replica's horizon: a replacing snapshot.
    let mut sh = Session::new(&hub, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(policy), 0).unwrap();
    pump(&hub, &mut sh, &replica, &mut sr);
    assert_eq!(sr.stats().snapshots_sent, 1);
    assert_eq!(sh.stats().snapshots_applied, 1);
    assert!(
        hub.get("todos", ids[0]).unwrap().is_none(),
        "the delete was lost"
    );
    assert_eq!(
        hub.count("notes").unwrap(),
        50,
        "notes outside the view dropped"
    );
    assert_eq!(
        hub.count("todos").unwrap(),
        99,
        "done todos outside the view dropped"
    );
    assert_eq!(
        hub.get("todos", ids[4]).unwrap().unwrap().fields["attachment"],
        Value::Bytes(vec![7; 200]),
        "an excluded field was lost"
    );
}

/// The replica moves a record out of its own view offline (so it must refuse the source's
/// EVICT of it: its write is not acknowledged yet), and another node deletes the record
/// before the source gets the replica's write. The source holds that delete back from the
/// replica: none of the record's states since what it last sent was in the replica's view.
/// So the EVICT that answers the replica's write has to go although the record is deleted,
/// or the replica keeps a live copy for good. (Found by the simulation: seed 12114 with
/// `BLAZEDB_SIM_PERTURB`.)
#[test]
fn a_record_the_replica_moved_out_and_another_node_deleted_leaves_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let third = open(dir.path(), "third");
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::everything());
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    sync_pair(&source, &third, full(), full());
    let x = ids[0];
    assert!(
        replica.get("todos", x).unwrap().is_some(),
        "x starts in view"
    );
    // Offline, the replica closes x: its own write takes x out of its view. Elsewhere x is
    // closed too, so the source has an EVICT of x for the replica.
    replica
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    third
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    sync_pair(&source, &third, full(), full());
    // The source's feed reaches the replica; the replica's frames from its write on are held.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(policy.clone()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(&source, &mut ss, &replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's write is held back");
    assert!(
        replica.get("todos", x).unwrap().is_some(),
        "the replica kept x: its write was not acknowledged"
    );
    // Another node deletes x; the source has the delete before the replica's write.
    third.delete("todos", x).unwrap();
    sync_pair(&source, &third, full(), full());
    link.exchange(&source, &mut ss, &replica, &mut sr);
    link.release(&source, &mut ss);
    pump(&source, &mut ss, &replica, &mut sr);
    assert!(source.get("todos", x).unwrap().is_none());
    assert!(
        replica.get("todos", x).unwrap().is_none(),
        "the replica still holds a record deleted everywhere and outside its view"
    );
}

/// A record leaves the replica's view and is then deleted, and the source reads that stretch
/// of its feed for the replica as one unit sent in several parts, the delete in a later part
/// than the change that took the record out. The replica never got that change (the delete
/// overwrote it before it was read) and still holds the record as it was in its view, so the
/// delete must reach it: judged from where the unit began, not from how far it was sent.
/// (Found by the simulation: seed 25404 with `BLAZEDB_SIM_PERTURB`.)
#[test]
fn a_delete_sent_in_a_later_part_of_a_unit_still_reaches_a_replica_holding_the_record() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();
    let x = ids[0];
    assert!(
        replica.get("todos", x).unwrap().is_some(),
        "x starts in view"
    );
    // While the replica is away: x is closed (out of its view), other open todos change,
    // then x is deleted. The delete overwrites the close, so they travel as one unit.
    source
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    for &other in ids.iter().skip(4).step_by(4).take(6) {
        source
            .update("todos", other, Patch::new().set("n", -1))
            .unwrap();
    }
    source.delete("todos", x).unwrap();
    // Small batches: the unit goes out in parts.
    let small = SessionConfig {
        batch_cells_max: 1,
        ..full()
    };
    sync_pair(&source, &replica, small, partial(policy));
    assert!(source.get("todos", x).unwrap().is_none());
    assert!(
        replica.get("todos", x).unwrap().is_none(),
        "the replica still holds a record deleted while it was away"
    );
}

/// The replica edits a record offline while the source takes it out of the replica's view;
/// the replica refuses the source's EVICT (its edit is not acknowledged yet), and the EVICT
/// the source sends again once it has the edit is lost with the connection. Meanwhile another
/// node changes the record again, so the source's feed holds it only past where the replica
/// resumes. At the next connection the source must still evict it. (Found by the simulation:
/// seed 32086 with `BLAZEDB_SIM_PERTURB`.)
#[test]
fn an_evict_made_up_for_a_refused_one_and_lost_is_sent_again_at_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let third = open(dir.path(), "third");
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::everything());
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    sync_pair(&source, &third, full(), full());
    let x = ids[0];
    assert!(
        replica.get("todos", x).unwrap().is_some(),
        "x starts in view"
    );
    // Offline, the replica edits x (a field its filter does not read); later the source
    // closes x, taking it out of the replica's view.
    replica
        .update("todos", x, Patch::new().set("note", "mine"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    source
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    // The replica gets the close and its EVICT, which it refuses; its own frames are held.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(policy.clone()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(&source, &mut ss, &replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's edit is held back");
    assert!(
        replica.get("todos", x).unwrap().is_some(),
        "the replica kept x: its edit was not acknowledged"
    );
    // The source gets the edit; what it answers (the ACK, the EVICT made up for the refused
    // one) is lost with the connection.
    link.release(&source, &mut ss);
    while ss.poll_transmit(0, &source).is_some() {}
    drop((ss, sr));
    assert_eq!(
        source.get("todos", x).unwrap().unwrap().fields["note"],
        Value::from("mine")
    );
    // Another node closes x again, overwriting the close the EVICT came from: the source's
    // feed now holds x only past where the replica resumes.
    sync_pair(&source, &third, full(), full());
    third
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    sync_pair(&source, &third, full(), full());
    sync_pair(&source, &replica, full(), partial(policy));
    assert!(
        replica.get("todos", x).unwrap().is_none(),
        "the replica still holds a record outside its view"
    );
}

/// A restatement (the whole record, sent when the replica's own write moves a record back
/// into its view) carries fields the replica missed while the record was out of its view.
/// It does not move the replica's cursor, so when it is lost with the connection the feed
/// never brings those fields again: the source must restate the record at the next
/// connection. (Found by the simulation: seed 36866 with `BLAZEDB_SIM_PERTURB`.)
#[test]
fn a_restatement_lost_with_the_connection_is_sent_again_at_reconnect() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();
    let x = ids[0];
    // The source closes x (out of the replica's view) and counts votes on it, which the
    // replica is not sent while x is out.
    source
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    source.increment("todos", x, "votes", 3).unwrap();
    let (mut ss, sr, mut link) =
        replica_reopens_with_its_frames_held(&source, &replica, &policy, x);
    // The source gets the reopening, which moves x back into the replica's view; what it
    // answers (the ACK, the restatement of x with its votes) is lost with the connection.
    link.release(&source, &mut ss);
    while ss.poll_transmit(0, &source).is_some() {}
    drop((ss, sr));
    let at_source = source.get("todos", x).unwrap().unwrap();
    assert_eq!(at_source.fields["done"], Value::Bool(false));
    assert_eq!(at_source.fields["votes"], Value::Int(3));
    sync_pair(&source, &replica, full(), partial(policy));
    let got = replica.get("todos", x).unwrap().unwrap();
    assert_eq!(
        got.fields.get("votes"),
        Some(&Value::Int(3)),
        "the replica lacks what only the lost restatement carried: {got:?}"
    );
}

/// Like the test above, but the replica's write loses at the source without being applied
/// (it is older than the source's write that took the record out of its view, which the
/// replica acknowledged before its write arrived), so it leaves no feed row there to derive
/// the lost EVICT from again; and the source restarts before the replica reconnects. The
/// source notes the record with the unit that lost, and evicts it at the next connection
/// (found by the simulation: seed 185132).
#[test]
fn an_evict_made_up_for_an_ignored_write_and_lost_is_sent_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), "source");
    let replica = open(dir.path(), "replica");
    let id = source.insert("docs", [("a", Value::Int(0))]).unwrap();
    sync_pair(&replica, &source, partial(not_three()), full());
    // Offline, the replica edits the record; later the source takes it out of the
    // replica's view, so the replica's edit loses.
    replica
        .update("docs", id, Patch::new().set("a", 1))
        .unwrap();
    later();
    source.update("docs", id, Patch::new().set("a", 3)).unwrap();
    // A pulling connection: the replica acknowledges the source's write and refuses its
    // EVICT (the edit is not acknowledged yet), and sends nothing.
    let pull = SessionConfig {
        mode: SyncMode::Pull,
        ..partial(not_three())
    };
    sync_pair(&replica, &source, pull, full());
    assert!(replica.get("docs", id).unwrap().is_some(), "EVICT refused");
    // Both ways: the source ignores the older edit (recording the conflict) and
    // acknowledges it; the replica gets the ACK, but the EVICT made up for the refused one
    // is lost with the connection.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(not_three()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(&source, &mut ss, &replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's edit is held back");
    link.release(&source, &mut ss);
    let acked = || {
        replica
            .peer_cursor(source.node_id(), PeerDirection::Acked)
            .unwrap()
    };
    let before = acked();
    let ack = ss.poll_transmit(0, &source).unwrap();
    sr.handle_bytes(0, &ack, &replica).unwrap();
    assert!(acked() > before, "the first frame is the ACK");
    while ss.poll_transmit(0, &source).is_some() {}
    drop((ss, sr));
    assert_eq!(
        source.get("docs", id).unwrap().unwrap().fields["a"],
        Value::Int(3)
    );
    assert_eq!(source.conflicts(Some("docs")).unwrap().len(), 1);
    // The source restarts: nothing of the session survives but what its file holds.
    drop(source);
    let source = open(dir.path(), "source");
    let note = || {
        source
            .peer_note(replica.node_id(), "evicts_for_unapplied_writes")
            .unwrap()
    };
    assert_eq!(note(), Some(format!("{id}\tdocs")), "noted with the unit");
    sync_pair(&replica, &source, partial(not_three()), full());
    assert!(
        replica.get("docs", id).unwrap().is_none(),
        "the replica still holds a record outside its view"
    );
    assert_eq!(note(), None, "confirmed, the note goes");
}

/// The view of the conflict tests: records whose `a` is not 3.
fn not_three() -> SyncPolicy {
    SyncPolicy {
        collections: Some(vec!["docs".into()]),
        filter: Some("a != 3".into()),
        exclude_fields: vec![],
    }
}

/// A later write by another node, unaware of the replica's (so concurrent with it).
fn later() {
    std::thread::sleep(std::time::Duration::from_millis(3));
}

/// A source, a replica with the view [`not_three`] and another full peer, all holding one
/// record `id` of "docs" that the source inserted with `fields`.
struct Trio {
    _dir: tempfile::TempDir,
    source: Database,
    replica: Database,
    other: Database,
    id: RecordId,
}

impl Trio {
    fn new(fields: &[(&str, i64)]) -> Trio {
        let dir = tempfile::tempdir().unwrap();
        let source = open(dir.path(), "source");
        let replica = open(dir.path(), "replica");
        let other = open(dir.path(), "other");
        let id = source
            .insert("docs", fields.iter().map(|(f, v)| (*f, Value::Int(*v))))
            .unwrap();
        let t = Trio {
            _dir: dir,
            source,
            replica,
            other,
            id,
        };
        t.sync_replica();
        t.sync_other();
        t
    }

    fn sync_replica(&self) {
        sync_pair(&self.replica, &self.source, partial(not_three()), full());
    }

    fn sync_other(&self) {
        sync_pair(&self.other, &self.source, full(), full());
    }
}

/// The replica's write loses to a concurrent one that also takes the record out of its view,
/// and the winner reaches the source first. The replica never receives the winner (an EVICT
/// instead), so it cannot record the conflict; the source does, when it ignores the losing
/// write (simulation, seed 832 once the exemption for the replica's writes was lifted; seed
/// 4882: the replica's own write took the record out of its view, and the replica dropped
/// its copy before the winner came).
#[test]
fn a_replica_write_lost_to_a_write_taking_the_record_out_of_view_is_a_conflict_at_the_source() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);
    replica
        .update("docs", id, Patch::new().set("a", 1))
        .unwrap();
    later();
    other.update("docs", id, Patch::new().set("a", 3)).unwrap();
    t.sync_other();
    t.sync_replica();

    assert!(
        replica.get("docs", id).unwrap().is_none(),
        "out of its view"
    );
    assert_eq!(
        source.get("docs", id).unwrap().unwrap().fields["a"],
        Value::Int(3)
    );
    let conflicts = source.conflicts(Some("docs")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(
        (c.record, c.field.as_deref(), &c.loser, &c.winner),
        (id, Some("a"), &Some(Value::Int(1)), &Some(Value::Int(3)))
    );
    assert_eq!(c.loser_version.node, replica.node_id());
    // Sent again (a duplicate delivery after a reconnect), it is not listed twice.
    let again = replica.changes_since(Seq(0), 1000, None).unwrap();
    source
        .apply_unit_from_partial_replica(
            replica.node_id(),
            StagedParts::NONE,
            again.changes,
            None,
            None,
            Seq(0),
        )
        .unwrap();
    assert_eq!(source.conflicts(Some("docs")).unwrap().len(), 1);
    // A full peer sees everything: its losing writes are its own to record.
    assert!(other.conflicts(Some("docs")).unwrap().is_empty());
}

/// As above for a set element: the replica adds one, and another node, later and unaware,
/// removes it and takes the record out of the replica's view. The source records the
/// replica's lost add when it ignores it (it recorded only plain fields and records, so the
/// add was lost unrecorded once element conflicts counted: simulation seed 6351425
/// perturbed).
#[test]
fn a_replica_element_add_lost_to_a_write_taking_the_record_out_of_view_is_a_conflict_at_the_source()
{
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);
    other
        .set_add("docs", id, "tags", vec![Value::from("x")])
        .unwrap();
    t.sync_other();
    t.sync_replica();
    replica
        .set_add("docs", id, "tags", vec![Value::from("y")])
        .unwrap();
    later();
    other
        .update(
            "docs",
            id,
            Patch::new()
                .set("a", 3)
                .remove("tags", vec![Value::from("y")]),
        )
        .unwrap();
    t.sync_other();
    t.sync_replica();
    assert!(
        replica.get("docs", id).unwrap().is_none(),
        "out of its view"
    );
    let conflicts = source.conflicts(Some("docs")).unwrap();
    assert!(
        conflicts
            .iter()
            .any(|c| c.element == Some(Value::from("y")) && c.loser == Some(Value::Bool(true))),
        "{conflicts:?}"
    );
}

/// As above for a whole record: the replica inserts an id that another node, later and
/// unaware, also inserts, out of the replica's view. The source ignores the replica's insert
/// and lists it as the record it inserted against the record that won, each as its fields,
/// and each field besides with what the winner holds there (they showed the insert's
/// marker, `true`, as the winner of every one, and as the replica's record: API audit).
#[test]
fn a_replica_insert_lost_to_a_concurrent_insert_of_its_id_is_listed_as_both_records() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other) = (&t.source, &t.replica, &t.other);
    let id = RecordId([9; 16]);
    replica
        .insert_with_id("docs", id, [("a", 1), ("r", 1)])
        .unwrap();
    later();
    other
        .insert_with_id("docs", id, [("a", 3), ("o", 2)])
        .unwrap();
    t.sync_other();
    t.sync_replica();
    assert!(
        replica.get("docs", id).unwrap().is_none(),
        "out of its view"
    );
    let record = |pairs: &[(&str, i64)]| {
        Some(Value::Map(
            pairs
                .iter()
                .map(|(f, v)| (f.to_string(), Value::Int(*v)))
                .collect(),
        ))
    };
    let mut listed = source.conflicts(Some("docs")).unwrap();
    listed.sort_by(|p, q| p.cell.cmp(&q.cell));
    for c in &listed {
        assert_eq!(c.record, id);
        assert_eq!(c.winner_version.node, other.node_id(), "{c:?}");
        assert_eq!(c.loser_version.node, replica.node_id(), "{c:?}");
    }
    let shown: Vec<_> = listed
        .iter()
        .map(|c| (c.cell.as_str(), c.winner.clone(), c.loser.clone()))
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                "$record",
                record(&[("a", 3), ("o", 2)]),
                record(&[("a", 1), ("r", 1)])
            ),
            ("a", Some(Value::Int(3)), Some(Value::Int(1))),
            ("r", None, Some(Value::Int(1))),
        ]
    );
}

/// The replica records its write's loss itself (the winner kept the record in its view),
/// then a later write takes the record out of its view: the record is evicted, the conflict
/// stays listed until the application resolves it.
#[test]
fn a_conflict_the_replica_recorded_stays_when_the_record_leaves_its_view() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);
    replica
        .update("docs", id, Patch::new().set("a", 1))
        .unwrap();
    later();
    other.update("docs", id, Patch::new().set("a", 4)).unwrap();
    t.sync_other();
    t.sync_replica();
    let conflicts = replica.conflicts(Some("docs")).unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].loser, Some(Value::Int(1)));
    // The source lists it too: the replica might have dropped its copy before the winner
    // came (its own write may take the record out of its view).
    let at_source = source.conflicts(Some("docs")).unwrap();
    assert_eq!(at_source.len(), 1, "{at_source:?}");
    assert_eq!(at_source[0].loser_version, conflicts[0].loser_version);

    other.update("docs", id, Patch::new().set("a", 3)).unwrap();
    t.sync_other();
    t.sync_replica();
    assert!(replica.get("docs", id).unwrap().is_none(), "evicted");
    assert_eq!(replica.conflicts(Some("docs")).unwrap(), conflicts);
    // Resolving it writes the chosen value (the record comes back as a local one).
    replica
        .resolve_conflict(conflicts[0].id, Some(Value::Int(7)))
        .unwrap();
    assert!(replica.conflicts(Some("docs")).unwrap().is_empty());
}

/// The replica's conflict is about a record it no longer holds (evicted: it left the view,
/// and lives on elsewhere). Resolving it with a value writes that field, as an update of the
/// record where it lives: not an insert, which would replace the record there with one
/// holding that field alone.
#[test]
fn resolving_a_conflict_of_an_evicted_record_updates_the_record_where_it_lives() {
    let t = Trio::new(&[("a", 0), ("b", 5)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);
    replica
        .update("docs", id, Patch::new().set("a", 1))
        .unwrap();
    later();
    other.update("docs", id, Patch::new().set("a", 4)).unwrap();
    t.sync_other();
    t.sync_replica();
    let conflict = replica.conflicts(Some("docs")).unwrap().remove(0);
    other.update("docs", id, Patch::new().set("a", 3)).unwrap();
    t.sync_other();
    t.sync_replica();
    assert!(replica.get("docs", id).unwrap().is_none(), "evicted");

    // The replica never received the evicting write's cells, so its clock may not be past
    // them: resolve a millisecond later, as a user would.
    later();
    replica
        .resolve_conflict(conflict.id, Some(Value::Int(7)))
        .unwrap();
    t.sync_replica();
    t.sync_other();
    let expected: BTreeMap<String, Value> = [
        ("a".to_owned(), Value::Int(7)),
        ("b".to_owned(), Value::Int(5)),
    ]
    .into();
    for db in [source, other] {
        assert_eq!(db.get("docs", id).unwrap().unwrap().fields, expected);
    }
}

/// Another node takes a record out of the replica's view while the replica writes to it
/// offline: the replica refuses the EVICT (its write is not acknowledged) and keeps the
/// record. Then a third node deletes the record; the source withholds the delete, since by
/// what it sent, the replica no longer holds the record. The replica's write then revives the
/// record in its view: the source must send it whole, the delete's reset included, or the
/// replica keeps the fields the delete removed (found by the simulation: seed 116352).
#[test]
fn a_record_deleted_while_the_replica_kept_it_past_a_refused_evict_comes_back_whole() {
    let t = Trio::new(&[("b", 0), ("n", 0)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);

    // Out of the replica's view elsewhere, then deleted there (not yet at the source); the
    // replica, unaware of both, writes `a` offline, after the delete by the clock.
    other.update("docs", id, Patch::new().set("a", 3)).unwrap();
    t.sync_other();
    other.delete("docs", id).unwrap();
    later();
    replica
        .update("docs", id, Patch::new().set("a", 4))
        .unwrap();
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, partial(not_three()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(source, &mut ss, replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's write is held back");
    assert!(replica.get("docs", id).unwrap().is_some(), "EVICT refused");

    // The delete reaches the source before the replica's write.
    t.sync_other();
    link.exchange(source, &mut ss, replica, &mut sr);
    link.release(source, &mut ss);
    pump(source, &mut ss, replica, &mut sr);

    let want: std::collections::BTreeMap<String, Value> = [("a".to_owned(), Value::Int(4))].into();
    assert_eq!(source.get("docs", id).unwrap().unwrap().fields, want);
    assert_eq!(replica.get("docs", id).unwrap().unwrap().fields, want);
}

/// A partial replica's losing write is stored as a conflict even when nothing else changes
/// in the transaction, from a node never seen before: the conflict names that node, whose
/// number must be stored too (a reopened file listed "unknown node"; simulation, a perturbed
/// seed under 40,000).
#[test]
fn a_conflict_from_a_node_never_seen_before_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path(), "replica");
    let id = RecordId([0xd0, 9, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 1]);
    replica
        .insert_with_id("docs", id, [("a", Value::Int(1))])
        .unwrap();
    let lost = replica.changes_since(Seq(0), 1000, None).unwrap();
    later();
    {
        let source = open(dir.path(), "source");
        source
            .insert_with_id("docs", id, [("a", Value::Int(2))])
            .unwrap();
        let head = source.last_seq().unwrap();
        source
            .apply_unit_from_partial_replica(
                replica.node_id(),
                StagedParts::NONE,
                lost.changes,
                None,
                None,
                Seq(0),
            )
            .unwrap();
        assert_eq!(source.last_seq().unwrap(), head, "nothing applied");
    }
    let source = open(dir.path(), "source");
    let conflicts = source.conflicts(None).unwrap();
    assert!(!conflicts.is_empty());
    assert!(conflicts
        .iter()
        .all(|c| c.loser_version.node == replica.node_id()));
}

/// Frames both ways until quiet, `ss`'s delivered one at a time; around each, the votes on
/// `x` and `y` (counted together in one transaction) must be both there or both missing at
/// the replica. Returns whether the replica held `x` without its vote at some point.
fn exchange_checking_votes(
    source: &Database,
    ss: &mut Session,
    replica: &Database,
    sr: &mut Session,
    (x, y): (RecordId, RecordId),
) -> bool {
    let votes = |id| {
        replica
            .get("todos", id)
            .unwrap()
            .and_then(|r| r.fields.get("votes").cloned())
    };
    let mut held_x_without_vote = false;
    let mut check = || {
        let (vx, vy) = (votes(x), votes(y));
        assert_eq!(
            vx.is_some(),
            vy.is_some(),
            "the replica shows half of a transaction: votes on x {vx:?}, on y {vy:?}"
        );
        held_x_without_vote |= replica.get("todos", x).unwrap().is_some() && vx.is_none();
    };
    exchange_watching(source, ss, replica, sr, |_| {
        check();
        ControlFlow::Continue(())
    });
    check();
    assert_eq!(votes(x), Some(Value::Int(1)));
    assert_eq!(votes(y), Some(Value::Int(1)));
    held_x_without_vote
}

/// Frames both ways until quiet. `each` sees every frame the source sends before the
/// replica gets it, and may end the link there (that frame undelivered): then returns true.
fn exchange_watching(
    source: &Database,
    ss: &mut Session,
    replica: &Database,
    sr: &mut Session,
    mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> bool {
    for _ in 0..100 {
        let mut progress = false;
        while let Some(f) = ss.poll_transmit(0, source) {
            if each(&f).is_break() {
                return true;
            }
            sr.handle_bytes(0, &f, replica).unwrap();
            progress = true;
        }
        while let Some(f) = sr.poll_transmit(0, replica) {
            ss.handle_bytes(0, &f, source).unwrap();
            progress = true;
        }
        if !progress {
            break;
        }
    }
    false
}

/// A transaction at `source` counting one vote on `x` and one on `y`.
fn vote_on_both(source: &Database, x: RecordId, y: RecordId) {
    source
        .transaction(|tx| {
            tx.update("todos", x, Patch::new().increment("votes", 1))?;
            tx.update("todos", y, Patch::new().increment("votes", 1))?;
            Ok(())
        })
        .unwrap();
}

/// A record that moves into a partial replica's view is sent whole as it was where the
/// batch that moved it ends, not as it is now: the cells of a later transaction reach the
/// replica with that transaction's other records, never ahead of them.
#[test]
fn a_record_moving_into_the_view_carries_no_cells_of_a_later_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (source, ids) = seeded(dir.path());
    let replica = open(dir.path(), "replica");
    let policy = open_todos(&SyncPolicy::everything());
    // x is closed (outside the replica's view), y open.
    let (x, y) = (ids[1], ids[4]);
    sync_pair(&source, &replica, full(), partial(policy.clone()));
    assert!(replica.get("todos", x).unwrap().is_none());
    // One commit reopens x (it moves in); the next counts a vote on x and one on y.
    source
        .update("todos", x, Patch::new().set("done", false))
        .unwrap();
    vote_on_both(&source, x, y);
    // One commit per unit.
    let small = |c: SessionConfig| SessionConfig {
        batch_cells_max: 1,
        ..c
    };
    let mut ss = Session::new(&source, small(full()), 0).unwrap();
    let mut sr = Session::new(&replica, small(partial(policy)), 0).unwrap();
    assert!(
        exchange_checking_votes(&source, &mut ss, &replica, &mut sr, (x, y)),
        "x arrives in a unit of its own, before the votes"
    );
}

/// Like the test above for a restatement: the record the replica's write moved back into
/// its view is restated as it was at the replica's position (with the replica's own
/// write), not with the cells of a transaction the replica has not been sent yet.
#[test]
fn a_restatement_carries_no_cells_of_a_transaction_the_replica_has_not_been_sent() {
    let (_dir, source, ids, replica, policy) = seeded_with_replica();
    let (x, y) = (ids[0], ids[4]);
    source
        .update("todos", x, Patch::new().set("done", true))
        .unwrap();
    let (mut ss, mut sr, mut link) =
        replica_reopens_with_its_frames_held(&source, &replica, &policy, x);
    // The source counts the votes; then the replica's reopening arrives and moves x back
    // into its view, and x is restated.
    vote_on_both(&source, x, y);
    link.release(&source, &mut ss);
    assert!(
        exchange_checking_votes(&source, &mut ss, &replica, &mut sr, (x, y)),
        "x is restated before the votes arrive"
    );
    let got = replica.get("todos", x).unwrap().unwrap();
    assert_eq!(got.fields["done"], Value::Bool(false));
}

/// A record deleted where the replica is and revived since by another node's transaction
/// over two records: when the replica's own (older) write of it makes the source restate
/// it, the restatement carries the tombstone, not the revived record, whose cells reach the
/// replica with the rest of their transaction. Restated as it was now, the revived record
/// came ahead of its partner's half of the transaction (simulation seed 6343976).
#[test]
fn a_restated_record_deleted_where_the_replica_is_carries_no_cells_of_its_later_revival() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other, x) = (&t.source, &t.replica, &t.other, t.id);
    let y = source.insert("docs", [("a", Value::Int(0))]).unwrap();
    t.sync_replica();
    t.sync_other();
    // The replica writes x offline; later the source deletes it, and the replica is sent
    // the delete (and acknowledges it) without sending its write.
    replica.update("docs", x, Patch::new().set("b", 1)).unwrap();
    later();
    source.delete("docs", x).unwrap();
    let pull = || SessionConfig {
        mode: SyncMode::Pull,
        ..partial(not_three())
    };
    sync_pair(replica, source, pull(), full());
    assert_eq!(replica.get("docs", x).unwrap(), None);
    // It is sent one more commit, whose ACK is lost: the source resumes from the delete.
    source.update("docs", y, Patch::new().set("c", 1)).unwrap();
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, pull(), 0).unwrap();
    let mut from_replica = blazedb::sync::frame::FrameDecoder::default();
    for _ in 0..10 {
        while let Some(f) = ss.poll_transmit(0, source) {
            sr.handle_bytes(0, &f, replica).unwrap();
        }
        while let Some(f) = sr.poll_transmit(0, replica) {
            from_replica.push(&f);
            let frame = from_replica.next_frame().unwrap().unwrap();
            if frame.kind != blazedb::sync::message::kind::ACK {
                ss.handle_bytes(0, &f, source).unwrap();
            }
        }
    }
    drop((ss, sr));
    assert_eq!(
        replica.get("docs", y).unwrap().unwrap().fields["c"],
        Value::Int(1)
    );
    // Another node, which has not seen the delete, sets `p` on both in one transaction:
    // newer than the delete, it revives x (with `p` alone).
    later();
    other
        .transaction(|tx| {
            tx.update("docs", x, Patch::new().set("p", 2))?;
            tx.update("docs", y, Patch::new().set("p", 2))
        })
        .unwrap();
    t.sync_other();
    assert!(source.get("docs", x).unwrap().is_some());
    // The replica reconnects, and its write reaches the source with its SUBSCRIBE, before the
    // source reads its feed: the source restates x. The replica never shows one half of the
    // transaction.
    let p = |id| {
        replica
            .get("docs", id)
            .unwrap()
            .and_then(|r| r.fields.get("p").cloned())
    };
    let check = || {
        let (px, py) = (p(x), p(y));
        assert!(
            px.is_none() || py.is_some(),
            "the replica shows x revived by a transaction whose write to y it lacks: \
             p on x {px:?}, on y {py:?}"
        );
    };
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, partial(not_three()), 0).unwrap();
    // Frames cross: each round, both sides send what they have, then both receive it; but
    // the replica's SUBSCRIBE is slow, and reaches the source with its write, in one read.
    let mut slow: Vec<Vec<u8>> = Vec::new();
    for round in 0..20 {
        let to_replica: Vec<Vec<u8>> = std::iter::from_fn(|| ss.poll_transmit(0, source)).collect();
        let to_source: Vec<Vec<u8>> = std::iter::from_fn(|| sr.poll_transmit(0, replica)).collect();
        if to_replica.is_empty() && to_source.is_empty() && slow.is_empty() {
            break;
        }
        for f in to_replica {
            sr.handle_bytes(0, &f, replica).unwrap();
            check();
        }
        slow.extend(to_source);
        if round != 1 {
            ss.handle_bytes(0, &std::mem::take(&mut slow).concat(), source)
                .unwrap();
        }
    }
    assert_eq!(p(x), Some(Value::Int(2)));
    assert_eq!(p(y), Some(Value::Int(2)));
    assert_eq!(
        replica.get("docs", x).unwrap().unwrap().fields.get("b"),
        None
    );
}

/// An EVICT is lost with the connection; before the replica reconnects, the record is
/// deleted. The evict made up at the reconnect finds the record deleted and restates its
/// tombstone: as it is now, not as it was at the replica's position (live, and outside the
/// view), or the replica would hold it live again and then be held back the delete, none
/// of the record's states since its position being in its view (simulation, seed 4648).
#[test]
fn a_record_deleted_after_its_evict_was_lost_is_restated_as_a_tombstone() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, id) = (&t.source, &t.replica, t.id);
    let other_doc = source.insert("docs", [("a", Value::Int(0))]).unwrap();
    t.sync_replica();
    // One commit takes the record out of the replica's view and changes another it sees:
    // the replica applies the unit (its cursor moves past the commit), and the connection
    // ends as the source sends the EVICT that follows the unit.
    source
        .transaction(|tx| {
            tx.update("docs", id, Patch::new().set("a", 3))?;
            tx.update("docs", other_doc, Patch::new().set("a", 1))
        })
        .unwrap();
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, partial(not_three()), 0).unwrap();
    let mut from_source = blazedb::sync::frame::FrameDecoder::default();
    let evicted = exchange_watching(source, &mut ss, replica, &mut sr, |f| {
        from_source.push(f);
        match from_source.next_frame().unwrap().unwrap().kind {
            blazedb::sync::message::kind::EVICT => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    });
    drop((ss, sr));
    assert!(evicted, "the EVICT was sent and lost");
    assert!(replica.get("docs", id).unwrap().is_some());
    // Another node that has seen all of it deletes the record.
    t.sync_other();
    later();
    t.other.delete("docs", id).unwrap();
    t.sync_other();
    assert!(!source.record_state("docs", id).unwrap().unwrap().is_live());
    t.sync_replica();
    assert_eq!(replica.get("docs", id).unwrap(), None);
    let state = replica.record_state("docs", id).unwrap();
    assert!(
        state.as_ref().is_none_or(|s| !s.is_live()),
        "the replica holds the record live: {state:?}"
    );
}

/// A replica's own write takes a record out of its view, and the source has a change of
/// that record from before the write that the replica has not been sent. Judged as of
/// where the batch ends, the record is in the view there; but the replica holds its own
/// write and has dropped the record, so the change must not reach it (it made a record of
/// a few stray fields: simulation, seed 1366 with `BLAZEDB_SIM_PERTURB`).
#[test]
fn a_change_from_before_the_replicas_write_took_the_record_out_is_not_sent() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, id) = (&t.source, &t.replica, t.id);
    source.update("docs", id, Patch::new().set("c", 1)).unwrap();
    later();
    replica
        .update("docs", id, Patch::new().set("a", 3))
        .unwrap();
    // Only the replica's write travels.
    let push = SessionConfig {
        mode: SyncMode::Push,
        ..partial(not_three())
    };
    sync_pair(replica, source, push, full());
    assert_eq!(
        source.get("docs", id).unwrap().unwrap().fields["a"],
        Value::Int(3)
    );
    // Both ways, one commit per batch: the source's change of `c` comes in a batch that
    // ends before the replica's write.
    let small = |c: SessionConfig| SessionConfig {
        batch_cells_max: 1,
        ..c
    };
    sync_pair(replica, source, small(partial(not_three())), small(full()));
    assert_eq!(
        replica
            .record_state("docs", id)
            .unwrap()
            .map(|s| s.cells().len()),
        None,
        "the replica holds what is left of the record: {:?}",
        replica.record_state("docs", id).unwrap()
    );
}

/// A record another commit moved into the replica's view, where the source's record of
/// the replica's ACKs is behind (the ACK for the move-in was lost with the connection): at
/// the reconnect the replica takes the source for a restored file and sends the source's
/// own cells back, that record's among them, which looks like a write moving it in. The
/// source restated it at once, as it is now: with a cell of a later transaction that also
/// wrote another record the replica sees, ahead of that transaction's unit, so the replica
/// showed the pair half-written (simulation, seed 4110682). The feed brings such a record
/// whole, as it was at the commit that moved it in; the restatement leaves it alone.
#[test]
fn a_record_another_commit_moved_in_is_not_restated_ahead_of_later_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), "source");
    let replica = open(dir.path(), "replica");
    let x = source.insert("docs", [("a", Value::Int(3))]).unwrap();
    let y = source.insert("docs", [("a", Value::Int(0))]).unwrap();
    sync_pair(&replica, &source, partial(not_three()), full());
    assert!(
        replica.get("docs", x).unwrap().is_none(),
        "outside its view"
    );
    // x moves into the view; the replica receives it, and its ACK is lost.
    source.update("docs", x, Patch::new().set("a", 1)).unwrap();
    {
        let mut ss = Session::new(&source, full(), 0).unwrap();
        let mut sr = Session::new(&replica, partial(not_three()), 0).unwrap();
        for _ in 0..100 {
            while let Some(f) = ss.poll_transmit(0, &source) {
                sr.handle_bytes(0, &f, &replica).unwrap();
            }
            let arrived = replica.get("docs", x).unwrap().is_some();
            while let Some(f) = sr.poll_transmit(0, &replica) {
                if !arrived {
                    ss.handle_bytes(0, &f, &source).unwrap();
                }
            }
            if arrived {
                break;
            }
        }
    }
    assert!(replica.get("docs", x).unwrap().is_some());
    // One transaction writes `p` on both.
    source
        .transaction(|tx| {
            tx.update("docs", x, Patch::new().set("p", 7))?;
            tx.update("docs", y, Patch::new().set("p", 7))
        })
        .unwrap();
    let p = |id| {
        replica
            .get("docs", id)
            .unwrap()
            .and_then(|r| r.fields.get("p").cloned())
    };
    // The reconnect, with the replica's SUBSCRIBE and echo reaching the source together,
    // before the source has sent anything of its feed.
    let mut ss = Session::new(&source, full(), 0).unwrap();
    let mut sr = Session::new(&replica, partial(not_three()), 0).unwrap();
    // The replica's HELLO goes through (the source then subscribes); the rest is held.
    let mut held = Vec::new();
    let mut hello_sent = false;
    for _ in 0..10 {
        while let Some(f) = ss.poll_transmit(0, &source) {
            sr.handle_bytes(0, &f, &replica).unwrap();
        }
        while let Some(f) = sr.poll_transmit(0, &replica) {
            held.push(f);
        }
        if !hello_sent && !held.is_empty() {
            ss.handle_bytes(0, &held.remove(0), &source).unwrap();
            hello_sent = true;
        }
    }
    for f in held {
        ss.handle_bytes(0, &f, &source).unwrap();
    }
    exchange_watching(&source, &mut ss, &replica, &mut sr, |_| {
        assert_eq!(p(x), p(y), "the replica shows half of the pair write");
        ControlFlow::Continue(())
    });
    pump(&replica, &mut sr, &source, &mut ss);
    assert_eq!((p(x), p(y)), (Some(Value::Int(7)), Some(Value::Int(7))));
    assert_eq!(
        source.get("docs", x).unwrap().unwrap().fields,
        replica.get("docs", x).unwrap().unwrap().fields
    );
}

/// The replica deletes a record while another node, before the delete, sets its filter field
/// to a value outside the view and, after it, writes another field (which a delete does not
/// kill: the record comes back holding only that). At the source the replica's delete leaves
/// the record live and in the view, and it reaches the replica as the source holds it (the
/// same as `access.rs::a_doc_the_readers_delete_leaves_revived_and_readable_reaches_it`, under
/// a filter instead of a read rule; simulation seed 4319553).
#[test]
fn a_record_the_replicas_delete_leaves_revived_in_its_view_reaches_it() {
    let t = Trio::new(&[("a", 0)]);
    let (source, replica, other, id) = (&t.source, &t.replica, &t.other, t.id);
    other.update("docs", id, Patch::new().set("a", 3)).unwrap();
    later();
    assert!(replica.delete("docs", id).unwrap());
    later();
    other.update("docs", id, Patch::new().set("c", 5)).unwrap();
    t.sync_other();
    // The source sends the replica everything it has before the replica's delete arrives.
    let mut ss = Session::new(source, full(), 0).unwrap();
    let mut sr = Session::new(replica, partial(not_three()), 0).unwrap();
    let mut link = HeldLink::default();
    link.exchange(source, &mut ss, replica, &mut sr);
    assert!(!link.held.is_empty(), "the replica's delete is held back");
    link.release(source, &mut ss);
    pump(source, &mut ss, replica, &mut sr);
    t.sync_other();
    let fields = |db: &Database| db.get("docs", id).unwrap().map(|r| r.fields);
    let expected = fields(source).expect("revived by the later write");
    assert_eq!(expected.get("c"), Some(&Value::Int(5)));
    assert_eq!(expected.get("a"), None, "reset by the delete");
    assert_eq!(
        fields(replica),
        Some(expected.clone()),
        "the replica has it"
    );
    assert_eq!(fields(other), Some(expected));
}
