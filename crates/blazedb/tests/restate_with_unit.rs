//! A peer's unit whose write is refused, or whose value overwrites a server-priority value,
//! commits together with the restatement (the receiver's copy written again) or the
//! reassertion (the server's value written again), and with the received cursor: no crash
//! can leave the unit counted as received while the writer's copy stays unrestated. The
//! restated rows sit after the unit's positions and count as written here, so they are sent
//! back to the peer the unit came from.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use blazedb::crdt::{Cell, CellKey, CellValue};
use blazedb::sync::AccessControl;
use blazedb::{
    Change, CollectionPolicy, Database, Hlc, NodeId, PeerDirection, RecordId, Seq, Value, Version,
};
use common::open;

/// Refuses any write that leaves a record locked.
#[derive(Debug)]
struct LockedAreReadOnly;

impl AccessControl for LockedAreReadOnly {
    fn can_write(
        &self,
        _: &str,
        _: RecordId,
        _before: Option<&BTreeMap<String, Value>>,
        after: Option<&BTreeMap<String, Value>>,
    ) -> Result<(), String> {
        match after {
            Some(f) if f.get("locked") == Some(&Value::Bool(true)) => {
                Err("locked records are read-only".into())
            }
            _ => Ok(()),
        }
    }
}

/// A version of `node` a second ahead of the wall clock (newer than anything written here
/// so far, within the allowed skew).
fn newer_version(node: NodeId) -> Version {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Version {
        hlc: Hlc::new(now_ms + 1_000, 0),
        node,
    }
}

/// A cell written with no knowledge of the record's earlier cells (concurrent with them).
fn cell(key: CellKey, value: CellValue, version: Version) -> Cell {
    Cell {
        key,
        value,
        version,
        prev: None,
        seen: blazedb::crdt::Seen::default(),
        seq: Seq(0),
    }
}

fn field(name: &str, value: &str, version: Version) -> Cell {
    let value = CellValue::Value(Value::from(value));
    cell(CellKey::Field(name.into()), value, version)
}

/// Runs `probe` on `db` after each of its commits from now on; returns what it saw.
fn probe_each_commit<T: Send + 'static>(
    db: &Arc<Database>,
    probe: impl Fn(&Database) -> T + Send + Sync + 'static,
) -> Arc<Mutex<Vec<T>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let weak: Weak<Database> = Arc::downgrade(db);
    let into = seen.clone();
    db.on_commit(Arc::new(move || {
        if let Some(db) = weak.upgrade() {
            into.lock().unwrap().push(probe(&db));
        }
    }));
    seen
}

/// The changes of `record` that `db`'s feed after `since` holds for `peer` (rows that came
/// from `peer` are never sent back to it).
fn sent_to(db: &Database, peer: NodeId, since: Seq, record: RecordId) -> Vec<Change> {
    let batch = db.changes_since(since, 10_000, Some(peer)).unwrap();
    assert!(!batch.more);
    batch
        .changes
        .into_iter()
        .filter(|c| c.id == record)
        .collect()
}

fn text(change: &Change, name: &str) -> Option<Value> {
    change.cells.iter().find_map(|c| match (&c.key, &c.value) {
        (CellKey::Field(f), CellValue::Value(v)) if f.as_ref() == name => Some(v.clone()),
        _ => None,
    })
}

#[test]
fn a_refused_write_is_restated_in_the_units_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(open(dir.path(), "server"));
    let locked = server
        .insert(
            "notes",
            [("text", Value::from("v1")), ("locked", Value::Bool(true))],
        )
        .unwrap();
    let note = server.insert("notes", [("text", "n1")]).unwrap();
    let head_before = server.last_seq().unwrap();
    let writer = NodeId([9; 16]);
    let v = newer_version(writer);
    let allowed = RecordId::new_v7();
    let change = |seq: u64, id: RecordId, cells: Vec<Cell>| Change {
        seq: Seq(seq),
        collection: "notes".into(),
        id,
        cells,
    };
    // The writer's transactions: an edit of the locked record (refused), an edit of `note`
    // (applied), locking `note` (refused: the unit's positions now hold a row of it from the
    // writer), and an insert of its own (applied).
    let unit = vec![
        change(1, locked, vec![field("text", "hacked", v)]),
        change(2, note, vec![field("text", "edited", v)]),
        change(
            3,
            note,
            vec![cell(
                CellKey::Field("locked".into()),
                CellValue::Value(Value::Bool(true)),
                v,
            )],
        ),
        change(
            4,
            allowed,
            vec![
                cell(CellKey::Record, CellValue::Present, v),
                field("text", "fine", v),
            ],
        ),
    ];
    // At each commit: the received cursor, and which of the refused records are in the
    // feed for the writer.
    let commits = probe_each_commit(&server, move |db| {
        let sent = |id| !sent_to(db, writer, head_before, id).is_empty();
        (
            db.peer_cursor(writer, PeerDirection::Received).unwrap(),
            sent(locked),
            sent(note),
        )
    });

    let outcome = server
        .apply_changes_checked(writer, &unit, Some(Seq(4)), Some(&LockedAreReadOnly))
        .unwrap();

    let refused: Vec<_> = outcome.rejected.iter().map(|r| r.id).collect();
    assert_eq!(refused, vec![locked, note]);
    assert_eq!(
        *commits.lock().unwrap(),
        vec![(Seq(4), true, true)],
        "one commit: the unit, its cursor and the restatements together"
    );
    // The restatements follow the unit's positions, and are the server's values of what
    // the refused writes touched: `locked`'s text, `note`'s `locked` field (unset here).
    // `note`'s applied text edit came from the writer and is not sent back.
    let (_, unit_last) = outcome.sender_seqs.expect("the unit applied");
    for (id, expected) in [(locked, "v1"), (note, "edited")] {
        let restated = sent_to(&server, writer, head_before, id);
        assert_eq!(restated.len(), 1, "{restated:?}");
        assert!(restated[0].seq > unit_last, "{restated:?} {unit_last:?}");
        let keys: Vec<&CellKey> = restated[0].cells.iter().map(|c| &c.key).collect();
        if id == locked {
            assert_eq!(text(&restated[0], "text"), Some(Value::from(expected)));
            assert_eq!(keys, [&CellKey::Field("text".into())]);
        } else {
            assert_eq!(keys, [&CellKey::Field("locked".into())]);
            assert_eq!(restated[0].cells[0].value, CellValue::Absent);
        }
        let stored = server.get("notes", id).unwrap().unwrap();
        assert_eq!(stored.fields["text"], Value::from(expected));
    }
    let note_now = server.get("notes", note).unwrap().unwrap();
    assert!(!note_now.fields.contains_key("locked"), "{note_now:?}");
    // The outcome names their position: a session counts what goes back from there as
    // restated, not as changes forwarded from elsewhere.
    let restated_at = sent_to(&server, writer, head_before, locked)[0].seq;
    assert_eq!(outcome.restated_at, Some(restated_at));
    assert_eq!(
        sent_to(&server, writer, head_before, note)[0].seq,
        restated_at
    );
    // The writer's own insert applied and is not sent back to it.
    assert!(server.get("notes", allowed).unwrap().is_some());
    assert!(sent_to(&server, writer, head_before, allowed).is_empty());
}

#[test]
fn a_server_priority_value_is_reasserted_in_the_units_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(open(dir.path(), "server"));
    server.set_server_role(true);
    let policy = CollectionPolicy {
        server_priority: true,
        ..Default::default()
    };
    server.set_policy("docs", policy).unwrap();
    let x = server.insert("docs", [("t", "the server's")]).unwrap();
    let head_before = server.last_seq().unwrap();
    let peer = NodeId([8; 16]);
    // Concurrent with the server's value and newer: it wins the merge.
    let unit = vec![Change {
        seq: Seq(1),
        collection: "docs".into(),
        id: x,
        cells: vec![field("t", "the peer's", newer_version(peer))],
    }];
    // At each commit: the received cursor, the value stored, and whether the value in the
    // feed for the peer is the server's.
    let commits = probe_each_commit(&server, move |db| {
        let stored = db.get("docs", x).unwrap().unwrap().fields["t"].clone();
        let sent = sent_to(db, peer, head_before, x);
        let reasserted = sent
            .iter()
            .any(|c| text(c, "t") == Some("the server's".into()));
        (
            db.peer_cursor(peer, PeerDirection::Received).unwrap(),
            stored,
            reasserted,
        )
    });

    let outcome = server
        .apply_changes_checked(peer, &unit, Some(Seq(1)), None)
        .unwrap();

    assert_eq!(outcome.applied, 1);
    assert_eq!(
        *commits.lock().unwrap(),
        vec![(Seq(1), Value::from("the server's"), true)],
        "one commit: the unit, its cursor and the reassertion together"
    );
    let (_, unit_last) = outcome.sender_seqs.expect("the peer's value applied");
    let sent = sent_to(&server, peer, head_before, x);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].seq > unit_last, "{sent:?} {unit_last:?}");
    assert_eq!(outcome.restated_at, Some(sent[0].seq));
    // The conflict names what everyone shows as the winner.
    let conflicts = server.conflicts_all(Some("docs")).unwrap();
    let labels: Vec<_> = conflicts
        .iter()
        .map(|c| (c.winner.clone(), c.winner_version.node, c.loser.clone()))
        .collect();
    assert_eq!(
        labels,
        vec![(
            Some(Value::from("the server's")),
            server.node_id(),
            Some(Value::from("the peer's"))
        )]
    );
}

/// A unit refusing more cells of updates than `REFUSED_CELLS_KEPT_MAX` (100,000) restates
/// the records past that bound whole, so what the apply holds in memory for the
/// restatements stops growing with the refused cells; those within it are restated by the
/// fields they touched.
#[test]
fn refused_updates_past_the_kept_bound_are_restated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = open(dir.path(), "server");
    const RECORDS: usize = 50_001;
    let ids: Vec<RecordId> = server
        .transaction(|tx| {
            (0..RECORDS)
                .map(|_| {
                    tx.insert(
                        "notes",
                        [("text", Value::from("v1")), ("locked", Value::Bool(true))],
                    )
                })
                .collect()
        })
        .unwrap();
    let head_before = server.last_seq().unwrap();
    let writer = NodeId([7; 16]);
    let v = newer_version(writer);
    // One transaction editing two fields of every record: 100,002 refused cells.
    let unit: Vec<Change> = ids
        .iter()
        .map(|&id| Change {
            seq: Seq(1),
            collection: "notes".into(),
            id,
            cells: vec![field("text", "hacked", v), field("note", "x", v)],
        })
        .collect();
    let outcome = server
        .apply_changes_checked(writer, &unit, Some(Seq(1)), Some(&LockedAreReadOnly))
        .unwrap();
    assert_eq!(outcome.rejected.len(), RECORDS);
    let keys = |id: RecordId| -> Vec<CellKey> {
        let mut k: Vec<CellKey> = sent_to(&server, writer, head_before, id)
            .into_iter()
            .flat_map(|c| c.cells.into_iter().map(|c| c.key))
            .collect();
        k.sort_by_key(|k| k.display_name());
        k
    };
    let touched = vec![CellKey::Field("note".into()), CellKey::Field("text".into())];
    assert_eq!(
        keys(ids[0]),
        touched,
        "within the bound: the fields touched"
    );
    assert_eq!(keys(ids[RECORDS - 2]), touched);
    let whole = keys(ids[RECORDS - 1]);
    assert!(
        whole.contains(&CellKey::Record) && whole.contains(&CellKey::Field("locked".into())),
        "past the bound: the whole record ({whole:?})"
    );
    for id in [ids[0], ids[RECORDS - 1]] {
        let r = server.get("notes", id).unwrap().unwrap();
        assert_eq!(r.fields["text"], Value::from("v1"));
        assert!(!r.fields.contains_key("note"));
    }
}
