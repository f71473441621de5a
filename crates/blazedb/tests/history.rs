//! History: every change is recorded with old and new values; time-travel reads rebuild a
//! record as it was; retention compacts and then refuses reads before its horizon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blazedb::{
    Database, Error, HistoryRetention, OpenOptions, PastVisibility, Patch, Seq, Timestamp, Value,
};

/// A database on a hand-driven clock.
fn db_with_clock(retention: HistoryRetention) -> (tempfile::TempDir, Database, Arc<AtomicU64>) {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_700_000_000_000));
    let n = now.clone();
    let opts = OpenOptions {
        wall_clock: Arc::new(move || n.load(Ordering::SeqCst)),
        history: retention,
        ..Default::default()
    };
    let db = Database::open(dir.path().join("h.db"), opts).unwrap();
    (dir, db, now)
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(ms as i64)
}

#[test]
fn history_lists_every_change() {
    let (_d, db, now) = db_with_clock(HistoryRetention::default());
    let id = db
        .insert("c", [("title", "a"), ("status", "open")])
        .unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.update(
        "c",
        id,
        Patch::new().set("title", "b").increment("votes", 2),
    )
    .unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.delete("c", id).unwrap();
    let h = db.history("c", id).unwrap();
    let ops: Vec<(&str, String)> = h.iter().map(|e| (e.op, e.cell.clone())).collect();
    assert!(ops.contains(&("insert", "$record".into())));
    let title_set = h
        .iter()
        .find(|e| e.op == "set" && e.cell == "title" && e.new == Some(Value::from("b")))
        .unwrap();
    assert_eq!(title_set.old, Some(Value::from("a")));
    assert!(h.iter().any(|e| e.op == "count"));
    assert!(h.iter().any(|e| e.op == "delete"));
    // The delete removed the fields: recorded as resets with their old values.
    assert!(h
        .iter()
        .any(|e| e.op == "reset" && e.cell == "status" && e.old == Some(Value::from("open"))));
}

#[test]
fn time_travel_reads_past_states() {
    let (_d, db, now) = db_with_clock(HistoryRetention::default());
    let t0 = now.load(Ordering::SeqCst);
    let id = db.insert("c", [("title", "first"), ("n", "x")]).unwrap();
    now.store(t0 + 10_000, Ordering::SeqCst);
    db.update("c", id, Patch::new().set("title", "second").unset("n"))
        .unwrap();
    now.store(t0 + 20_000, Ordering::SeqCst);
    db.delete("c", id).unwrap();
    now.store(t0 + 30_000, Ordering::SeqCst);
    db.insert_with_id("c", id, [("title", "third")]).unwrap();

    assert!(
        db.get_at("c", id, at(t0 - 1)).unwrap().is_none(),
        "before it existed"
    );
    // Before 1970 on a file whose history was never compacted: nothing then, not an error.
    assert!(
        db.get_at("c", id, Timestamp::from_unix_ms(-86_400_000))
            .unwrap()
            .is_none(),
        "before 1970"
    );
    let r = db.get_at("c", id, at(t0 + 5_000)).unwrap().unwrap();
    assert_eq!(r.fields["title"], Value::from("first"));
    assert_eq!(r.fields["n"], Value::from("x"));
    let r = db.get_at("c", id, at(t0 + 15_000)).unwrap().unwrap();
    assert_eq!(r.fields["title"], Value::from("second"));
    assert!(!r.fields.contains_key("n"));
    assert!(
        db.get_at("c", id, at(t0 + 25_000)).unwrap().is_none(),
        "deleted then"
    );
    let r = db.get_at("c", id, at(t0 + 35_000)).unwrap().unwrap();
    assert_eq!(r.fields.len(), 1);
    assert_eq!(r.fields["title"], Value::from("third"));
}

#[test]
fn retention_compacts_and_sets_a_horizon() {
    let policy = HistoryRetention {
        max_age_ms: Some(60_000),
        max_entries: None,
    };
    let (_d, db, now) = db_with_clock(policy);
    let t0 = now.load(Ordering::SeqCst);
    let id = db.insert("c", [("v", 0)]).unwrap();
    for i in 1..=10 {
        now.store(t0 + i * 10_000, Ordering::SeqCst);
        db.update("c", id, Patch::new().set("v", i as i64)).unwrap();
    }
    let before = db.history_len().unwrap();
    let removed = db.compact_history().unwrap();
    // Now t0 + 100 s: the entries recorded at t0 + 10, 20 and 30 s are older than 60 s.
    assert_eq!(removed, 3);
    assert_eq!(db.history_len().unwrap(), before - removed);
    assert_eq!(
        db.compact_history().unwrap(),
        0,
        "nothing more is old enough"
    );
    // Reads after the horizon still work; before it they are refused, not wrong.
    let r = db.get_at("c", id, at(t0 + 95_000)).unwrap().unwrap();
    assert_eq!(r.fields["v"], Value::Int(9));
    match db.get_at("c", id, at(t0 + 1_000)) {
        Err(Error::HistoryCompacted { .. }) => {}
        other => panic!("expected HistoryCompacted, got {other:?}"),
    }
    // The live data is untouched.
    assert_eq!(
        db.get("c", id).unwrap().unwrap().fields["v"],
        Value::Int(10)
    );
}

#[test]
fn max_entries_bounds_history() {
    let policy = HistoryRetention {
        max_age_ms: None,
        max_entries: Some(50),
    };
    let (_d, db, _now) = db_with_clock(policy);
    let id = db.insert("c", [("v", 0)]).unwrap();
    for i in 0..500 {
        db.update("c", id, Patch::new().set("v", i)).unwrap();
    }
    // Compaction also runs by itself as history grows (every max_entries/10, at least 100 rows).
    assert!(
        db.history_len().unwrap() <= 50 + 100 + 1,
        "{}",
        db.history_len().unwrap()
    );
    db.compact_history().unwrap();
    assert_eq!(db.history_len().unwrap(), 50);
}

/// A format-3 file (history found through the `history_by_record` index) migrates to
/// format 4: every record's entries are chained from its row, so its history lists the same
/// entries as before, new changes extend the chain, and evicting the record removes exactly
/// its own entries.
#[test]
fn a_format_3_history_migrates_to_chains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let (a, b, before_a, before_b) = {
        let db = Database::open(&path, OpenOptions::default()).unwrap();
        let a = db.insert("c", [("n", 0)]).unwrap();
        let b = db.insert("c", [("n", 100)]).unwrap();
        for k in 1..=5 {
            db.update("c", a, Patch::new().set("n", k)).unwrap();
            db.update("c", b, Patch::new().set("n", 100 + k)).unwrap();
        }
        let (ha, hb) = (db.history("c", a).unwrap(), db.history("c", b).unwrap());
        // The insert, the first value, five changes.
        assert_eq!(ha.len(), 7, "{ha:?}");
        (a, b, ha, hb)
    };
    {
        // Back to format 3: no chains, the index instead (and no `old_seq`, format 5; the
        // clock in its own table, format 6; no snapshot `acked`, format 7; no conflicts by
        // record, format 8; no replaced cell's `prev`, format 9; no replaced cell's `seen`,
        // format 11).
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL, hlc INTEGER NOT NULL);
             INSERT INTO clock SELECT 0, cursor, last_contact_ms FROM peers WHERE direction = 'clock';
             DELETE FROM peers WHERE direction = 'clock';
             ALTER TABLE history DROP COLUMN prev; ALTER TABLE records DROP COLUMN hist;
             ALTER TABLE history DROP COLUMN old_seq;
             ALTER TABLE snapshot_progress DROP COLUMN acked;
             DROP INDEX conflicts_by_record;
             ALTER TABLE history DROP COLUMN old_prev_age;
             ALTER TABLE history DROP COLUMN old_prev_node;
             ALTER TABLE history DROP COLUMN old_seen;
             CREATE INDEX history_by_record ON history (coll, id, hid);
             UPDATE meta SET value = 3 WHERE key = 'format_version';",
        )
        .unwrap();
    }
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(db.history("c", a).unwrap(), before_a);
    assert_eq!(db.history("c", b).unwrap(), before_b);
    db.update("c", a, Patch::new().set("n", 6)).unwrap();
    let after = db.history("c", a).unwrap();
    assert_eq!(after.len(), 8);
    assert_eq!(&after[..7], &before_a[..]);
    assert_eq!(after[7].new, Some(Value::Int(6)));
    // Entries from before format 5 do not say when the cell they replaced was written: a
    // past that reaches them is unknown; one that stays after them is known.
    let mut never = |_: &BTreeMap<String, Value>| false;
    assert_eq!(
        db.past_visibility("c", a, Seq(0), &mut never).unwrap(),
        PastVisibility::Unknown
    );
    let since = db.last_seq().unwrap();
    db.update("c", a, Patch::new().set("n", 7)).unwrap();
    assert_eq!(
        db.past_visibility("c", a, since, &mut never).unwrap(),
        PastVisibility::NeverSeen
    );
    let mut seven = |f: &BTreeMap<String, Value>| f["n"] == Value::Int(7);
    assert_eq!(
        db.past_visibility("c", a, since, &mut seven).unwrap(),
        PastVisibility::Seen
    );
    // Evicting b removes exactly b's stored entries (the listing's first two are rebuilt
    // from the record, not stored); a's chain is untouched.
    let total = db.history_len().unwrap();
    db.evict("c", &[b], None).unwrap();
    assert_eq!(db.history_len().unwrap(), total - 5);
    assert!(db.history("c", b).unwrap().is_empty());
    assert_eq!(db.history("c", a).unwrap()[..8], after[..]);
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'history_by_record'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0, "the index is gone");
    let version: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'format_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 11);
}

/// Each record's history is its own chain, also when many records change in one
/// transaction and one record changes several times in it; compaction cuts every chain at
/// the same place, and entries never leak from one record's listing into another's.
#[test]
fn chains_stay_per_record_through_transactions_and_compaction() {
    let (_d, db, now) = db_with_clock(HistoryRetention {
        max_age_ms: None,
        max_entries: Some(30),
    });
    let ids: Vec<_> = (0..10)
        .map(|i| db.insert("c", [("n", i), ("m", 0)]).unwrap())
        .collect();
    for round in 1..=4i64 {
        now.fetch_add(1000, Ordering::SeqCst);
        db.transaction(|tx| {
            for (i, id) in ids.iter().enumerate() {
                tx.update("c", *id, Patch::new().set("n", round * 100 + i as i64))?;
                if i % 3 == 0 {
                    // Twice in one transaction, and two fields at once.
                    tx.update("c", *id, Patch::new().set("n", -round).set("m", round))?;
                }
            }
            Ok(())
        })
        .unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let h = db.history("c", *id).unwrap();
        let ns: Vec<_> = h
            .iter()
            .filter(|e| e.field.as_deref() == Some("n"))
            .filter_map(|e| e.new.clone())
            .collect();
        let last = if i % 3 == 0 {
            Value::Int(-4)
        } else {
            Value::Int(400 + i as i64)
        };
        assert_eq!(ns.last(), Some(&last), "record {i}: {h:?}");
        assert_eq!(db.get("c", *id).unwrap().unwrap().fields["n"], last);
    }
    let total_before = db.history_len().unwrap();
    assert!(total_before > 30, "{total_before}");
    db.compact_history().unwrap();
    assert!(db.history_len().unwrap() <= 30);
    // Every record still lists only its own changes, newest kept.
    for (i, id) in ids.iter().enumerate() {
        let h = db.history("c", *id).unwrap();
        let last_n = h
            .iter()
            .rev()
            .filter(|e| e.field.as_deref() == Some("n") && e.op == "set")
            .find_map(|e| e.new.clone());
        let want = if i % 3 == 0 {
            Value::Int(-4)
        } else {
            Value::Int(400 + i as i64)
        };
        assert_eq!(last_n, Some(want), "record {i}");
    }
}

/// A record written early in its transaction (an insert goes out at once) and changed again
/// in the same transaction chains its history from the row as written, not as first read.
#[test]
fn a_record_inserted_and_changed_in_one_transaction_keeps_one_chain() {
    let (_d, db, now) = db_with_clock(HistoryRetention::default());
    let id = db
        .transaction(|tx| {
            let id = tx.insert("c", [("n", 1)])?;
            tx.update("c", id, Patch::new().set("n", 2))?;
            tx.update("c", id, Patch::new().set("n", 3))?;
            Ok(id)
        })
        .unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.update("c", id, Patch::new().set("n", 4)).unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.transaction(|tx| {
        tx.update("c", id, Patch::new().set("n", 5))?;
        tx.update("c", id, Patch::new().set("n", 6))
    })
    .unwrap();
    let news: Vec<_> = db
        .history("c", id)
        .unwrap()
        .iter()
        .filter(|e| e.field.as_deref() == Some("n"))
        .filter_map(|e| e.new.clone())
        .collect();
    let want: Vec<Value> = (1..=6).map(Value::Int).collect();
    assert_eq!(news, want);
}

/// A record's past states are rebuilt seq by seq from its history: every state it had after
/// a commit from `since` on is judged, and no other — a field created after a seq (not a
/// history row of its own) is not in the state at that seq.
#[test]
fn past_states_are_rebuilt_from_history() {
    let (_d, db, now) = db_with_clock(HistoryRetention::default());
    let id = db.insert("c", [("a", 1)]).unwrap();
    let s1 = db.last_seq().unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.update("c", id, Patch::new().set("b", 2)).unwrap();
    let s2 = db.last_seq().unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.update("c", id, Patch::new().set("a", 3)).unwrap();
    let s3 = db.last_seq().unwrap();
    now.fetch_add(1000, Ordering::SeqCst);
    db.delete("c", id).unwrap();
    let s4 = db.last_seq().unwrap();
    let judged = |since: Seq| {
        let mut seen = BTreeSet::new();
        let verdict = db
            .past_visibility("c", id, since, &mut |f| {
                seen.insert(
                    f.iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                false
            })
            .unwrap();
        (verdict, seen.into_iter().collect::<Vec<_>>())
    };
    let (a1, a1b2, a3b2) = ("a=Int(1)", "a=Int(1),b=Int(2)", "a=Int(3),b=Int(2)");
    assert_eq!(
        judged(Seq(0)),
        (
            PastVisibility::NeverSeen,
            vec![a1.into(), a1b2.into(), a3b2.into()]
        )
    );
    assert_eq!(judged(s1).1, vec![a1.to_string(), a1b2.into(), a3b2.into()]);
    assert_eq!(judged(s2).1, vec![a1b2.to_string(), a3b2.into()]);
    assert_eq!(judged(s3).1, vec![a3b2.to_string()]);
    assert_eq!(judged(s4), (PastVisibility::NeverSeen, vec![]));
    // A state that passes makes it seen.
    let mut b_set = |f: &BTreeMap<String, Value>| f.contains_key("b");
    assert_eq!(
        db.past_visibility("c", id, s2, &mut b_set).unwrap(),
        PastVisibility::Seen
    );
    let mut a_is_1 = |f: &BTreeMap<String, Value>| f["a"] == Value::Int(1);
    assert_eq!(
        db.past_visibility("c", id, s3, &mut a_is_1).unwrap(),
        PastVisibility::NeverSeen
    );
    // A record that was never live here (a delete of something this node never held) and
    // one whose past retention cut are unknown.
    assert_eq!(
        db.past_visibility("c", blazedb::RecordId::new_v7(), Seq(0), &mut |_| false)
            .unwrap(),
        PastVisibility::Unknown
    );
}

/// Where retention removed entries the check would need, the past is unknown; where the
/// check stays after the cut, it is known.
#[test]
fn a_past_cut_by_retention_is_unknown() {
    let (_d, db, now) = db_with_clock(HistoryRetention {
        max_age_ms: None,
        max_entries: Some(3),
    });
    let id = db.insert("c", [("n", 0)]).unwrap();
    for k in 1..=6 {
        now.fetch_add(1000, Ordering::SeqCst);
        db.update("c", id, Patch::new().set("n", k)).unwrap();
    }
    db.compact_history().unwrap();
    let since = db.last_seq().unwrap();
    db.delete("c", id).unwrap();
    let mut never = |_: &BTreeMap<String, Value>| false;
    assert_eq!(
        db.past_visibility("c", id, Seq(0), &mut never).unwrap(),
        PastVisibility::Unknown
    );
    assert_eq!(
        db.past_visibility("c", id, since, &mut never).unwrap(),
        PastVisibility::NeverSeen
    );
    let mut six = |f: &BTreeMap<String, Value>| f["n"] == Value::Int(6);
    assert_eq!(
        db.past_visibility("c", id, since, &mut six).unwrap(),
        PastVisibility::Seen
    );
}

mod past_states {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Set(usize, &'static str, i64),
        Unset(usize, &'static str),
        Increment(usize, i64),
        Add(usize, i64),
        Remove(usize, i64),
        Delete(usize),
    }

    const RECORDS: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        let rec = 0..RECORDS;
        let field = prop_oneof![Just("a"), Just("b")];
        prop_oneof![
            4 => (rec.clone(), field.clone(), 0..4i64).prop_map(|(r, f, v)| Op::Set(r, f, v)),
            1 => (rec.clone(), field).prop_map(|(r, f)| Op::Unset(r, f)),
            2 => (rec.clone(), -2..3i64).prop_map(|(r, v)| Op::Increment(r, v)),
            2 => (rec.clone(), 0..3i64).prop_map(|(r, v)| Op::Add(r, v)),
            1 => (rec.clone(), 0..3i64).prop_map(|(r, v)| Op::Remove(r, v)),
            1 => rec.prop_map(Op::Delete),
        ]
    }

    fn canonical(f: &BTreeMap<String, Value>) -> String {
        f.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For every record and every position a peer could be at, the states
        /// `past_visibility` judges are exactly the live states the record had after the
        /// commits from that position on — none missing (a delete could then be withheld
        /// from a peer that holds the record), none made up.
        #[test]
        fn past_visibility_judges_exactly_the_committed_states(
            txs in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..20)
        ) {
            let (_d, db, now) = db_with_clock(HistoryRetention::default());
            let ids: Vec<_> = db
                .transaction(|tx| {
                    (0..RECORDS)
                        .map(|i| tx.insert("c", [("a", Value::Int(i as i64)), ("s", Value::List(vec![]))]))
                        .collect::<blazedb::Result<Vec<_>>>()
                })
                .unwrap();
            // After every commit: (seq, each record's fields, None when deleted).
            let snapshot = |db: &Database| {
                let seq = db.last_seq().unwrap();
                let states: Vec<Option<String>> = ids
                    .iter()
                    .map(|id| db.get("c", *id).unwrap().map(|r| canonical(&r.fields)))
                    .collect();
                (seq, states)
            };
            let mut committed = vec![(Seq(0), vec![None; RECORDS]), snapshot(&db)];
            for ops in &txs {
                now.fetch_add(10, Ordering::SeqCst);
                db.transaction(|tx| {
                    for op in ops {
                        let r = match op {
                            Op::Set(r, ..) | Op::Unset(r, _) | Op::Increment(r, _)
                            | Op::Add(r, _) | Op::Remove(r, _) | Op::Delete(r) => *r,
                        };
                        if tx.get("c", ids[r])?.is_none() {
                            continue;
                        }
                        let patch = match op {
                            Op::Set(_, f, v) => Patch::new().set(*f, *v),
                            Op::Unset(_, f) => Patch::new().unset(*f),
                            Op::Increment(_, v) => Patch::new().increment("n", *v),
                            Op::Add(_, v) => Patch::new().add("s", vec![Value::Int(*v)]),
                            Op::Remove(_, v) => Patch::new().remove("s", vec![Value::Int(*v)]),
                            Op::Delete(_) => {
                                tx.delete("c", ids[r])?;
                                continue;
                            }
                        };
                        tx.update("c", ids[r], patch)?;
                    }
                    Ok(())
                })
                .unwrap();
                let s = snapshot(&db);
                if s.0 != committed.last().unwrap().0 {
                    committed.push(s);
                }
                // Judged along the way too: a past kept from before a change must not answer
                // for the record after it.
                for id in &ids {
                    db.past_visibility("c", *id, Seq(0), &mut |_| false).unwrap();
                }
            }
            for (r, id) in ids.iter().enumerate() {
                for k in 0..committed.len() {
                    let since = committed[k].0;
                    let want: BTreeSet<String> = committed[k..]
                        .iter()
                        .filter_map(|(_, states)| states[r].clone())
                        .collect();
                    let mut judged = BTreeSet::new();
                    let verdict = db
                        .past_visibility("c", *id, since, &mut |f| {
                            judged.insert(canonical(f));
                            false
                        })
                        .unwrap();
                    prop_assert_eq!(verdict, PastVisibility::NeverSeen);
                    prop_assert_eq!(&judged, &want, "record {} since {:?}", r, since);
                }
            }
        }
    }
}

/// Evicting a field removes its history entries, which sit in the record's chain between
/// the other fields' entries: the chain is linked around them, so the other fields' history
/// stays whole (it used to end at the first evicted entry) and the record's past reads
/// without the evicted field.
#[test]
fn evicting_a_field_keeps_the_history_of_the_others() {
    let (_d, db, now) = db_with_clock(HistoryRetention::default());
    let t0 = now.load(Ordering::SeqCst);
    let id = db.insert("c", [("title", "t0"), ("secret", "s0")]).unwrap();
    let steps = [
        ("title", "t1"),
        ("secret", "s1"),
        ("title", "t2"),
        ("secret", "s2"),
    ];
    for (i, (field, value)) in steps.into_iter().enumerate() {
        now.store(t0 + 10_000 * (i as u64 + 1), Ordering::SeqCst);
        db.update("c", id, Patch::new().set(field, value)).unwrap();
    }
    let values_of = |field: &str| -> Vec<Value> {
        db.history("c", id)
            .unwrap()
            .into_iter()
            .filter(|e| e.field.as_deref() == Some(field))
            .filter_map(|e| e.new)
            .collect()
    };
    let titles = vec![Value::from("t0"), Value::from("t1"), Value::from("t2")];
    assert_eq!(values_of("title"), titles);

    db.evict_fields("c", &["secret".to_owned()]).unwrap();
    assert_eq!(values_of("title"), titles);
    assert_eq!(values_of("secret"), Vec::<Value>::new());
    for (ms, title) in [
        (5_000, "t0"),
        (15_000, "t1"),
        (25_000, "t1"),
        (35_000, "t2"),
    ] {
        let then = db.get_at("c", id, at(t0 + ms)).unwrap().unwrap();
        let expected: BTreeMap<String, Value> = [("title".to_owned(), Value::from(title))].into();
        assert_eq!(then.fields, expected, "at +{ms} ms");
    }
    // The chain still works for what comes next.
    db.update("c", id, Patch::new().set("title", "t3")).unwrap();
    assert_eq!(values_of("title").len(), 4);
    assert_eq!(db.integrity_check().unwrap().problems, Vec::<String>::new());
}
