//! Watch: events arrive after commit, filters apply, rolled-back writes send nothing, and a
//! slow subscriber is told it lagged instead of the buffer growing.

use std::time::Duration;

use blazedb::{Database, Error, EventKind, OpenOptions, Patch, Value, WatchItem};

#[test]
fn events_follow_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap();
    let all = db.watch("bugs", None, None).unwrap();
    let open = db.watch("bugs", Some("status == \"open\""), None).unwrap();
    let id = db.insert("bugs", [("status", "open")]).unwrap();
    db.update("bugs", id, Patch::new().set("status", "closed"))
        .unwrap();
    db.insert("other", [("x", 1)]).unwrap();
    let _: Result<(), Error> = db.transaction(|tx| {
        tx.insert("bugs", [("status", "open")])?;
        Err(Error::InvalidArgument("rollback".into()))
    });
    db.delete("bugs", id).unwrap();

    let kinds: Vec<EventKind> = std::iter::from_fn(|| all.try_recv())
        .map(|i| match i {
            WatchItem::Event(e) => e.kind,
            WatchItem::Lagged(n) => panic!("lagged {n}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![EventKind::Inserted, EventKind::Updated, EventKind::Deleted]
    );
    let Some(WatchItem::Event(e)) = open.recv_timeout(Duration::from_secs(1)) else {
        panic!()
    };
    assert_eq!(e.kind, EventKind::Inserted);
    // The update that closed it took it out of the filter's view: reported as a removal
    // from the view, with the record as it is now (it was never reported until 2026-12-06).
    let Some(WatchItem::Event(e)) = open.try_recv() else {
        panic!("the record leaving the view is reported")
    };
    assert_eq!(e.kind, EventKind::Deleted);
    assert_eq!(e.record.fields["status"], Value::from("closed"));
    assert!(
        open.try_recv().is_none(),
        "its delete, outside the view, is not reported"
    );
}

/// A filtered watch reports a record entering its view as `Inserted`, changing inside it as
/// `Updated` and leaving it as `Deleted`; changes outside the view are not reported.
#[test]
fn a_filtered_watch_reports_records_entering_and_leaving_its_view() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap();
    let open = db.watch("bugs", Some("status == \"open\""), None).unwrap();
    let id = db.insert("bugs", [("status", "closed")]).unwrap();
    let set = |fields: Patch| db.update("bugs", id, fields).unwrap();
    set(Patch::new().set("title", "outside"));
    set(Patch::new().set("status", "open"));
    set(Patch::new().set("title", "inside"));
    set(Patch::new().set("status", "closed"));
    set(Patch::new().set("title", "outside again"));
    set(Patch::new().set("status", "open"));
    db.delete("bugs", id).unwrap();
    let seen: Vec<(EventKind, Value)> = std::iter::from_fn(|| open.try_recv())
        .map(|i| match i {
            WatchItem::Event(e) => (e.kind, e.record.fields["title"].clone()),
            WatchItem::Lagged(n) => panic!("lagged {n}"),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Inserted, Value::from("outside")),
            (EventKind::Updated, Value::from("inside")),
            (EventKind::Deleted, Value::from("inside")),
            (EventKind::Inserted, Value::from("outside again")),
            (EventKind::Deleted, Value::from("outside again")),
        ]
    );
}

#[test]
fn slow_subscriber_lags_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap();
    let w = db.watch("c", None, Some(4)).unwrap();
    for i in 0..10 {
        db.insert("c", [("i", i)]).unwrap();
    }
    // The four queued events come first, in order, then the lag where the six missed ones
    // would have been: a subscriber that re-reads on `Lagged` is not then taken back by
    // older events (the lag came first until 2026-12-06).
    for i in 0..4 {
        let Some(WatchItem::Event(e)) = w.try_recv() else {
            panic!("event {i} first")
        };
        assert_eq!(e.record.fields["i"], Value::Int(i));
    }
    assert_eq!(w.try_recv(), Some(WatchItem::Lagged(6)));
    assert_eq!(w.try_recv(), None);
    // Room again: new events flow, and a second lag is reported after them too.
    for i in 10..16 {
        db.insert("c", [("i", i)]).unwrap();
    }
    let mut items = Vec::new();
    while let Some(item) = w.try_recv() {
        items.push(match item {
            WatchItem::Event(e) => format!("{:?}", e.record.fields["i"]),
            WatchItem::Lagged(n) => format!("lagged {n}"),
        });
    }
    assert_eq!(
        items,
        ["Int(10)", "Int(11)", "Int(12)", "Int(13)", "lagged 2"],
        "{items:?}"
    );
    assert!(db.watch("c", None, Some(0)).is_err());
    assert!(db.watch("c", Some("a =="), None).is_err());
    // A parameter would never have a value in a watch: refused, not silently matching nothing.
    match db.watch("c", Some("owner == $user.id"), None) {
        Err(blazedb::Error::InvalidArgument(m)) => {
            assert!(m.contains("cannot use parameters ($user)"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn dropped_watch_is_unsubscribed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap();
    drop(db.watch("c", None, Some(1)).unwrap());
    for i in 0..3 {
        db.insert("c", [("i", i)]).unwrap();
    }
}

/// Writers on several threads: each commit's events are queued before the next writer may
/// commit, so a watcher sees one record's revisions in increasing order (publishing after
/// the lock was released let a later commit's event overtake an earlier one).
#[test]
fn events_arrive_in_commit_order_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(
        Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap(),
    );
    let id = blazedb::RecordId([1; 16]);
    db.insert_with_id("c", id, [("n", 0)]).unwrap();
    let w = db.watch("c", None, Some(1_000_000)).unwrap();
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    db.update("c", id, Patch::new().set("n", t * 100_000 + i))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut revs = Vec::new();
    while let Some(item) = w.try_recv() {
        match item {
            WatchItem::Event(e) => revs.push(e.record.rev),
            WatchItem::Lagged(n) => panic!("lagged {n}"),
        }
    }
    assert_eq!(revs.len(), 2000);
    let out_of_order = revs.windows(2).filter(|p| p[0] >= p[1]).count();
    assert_eq!(out_of_order, 0, "revisions out of commit order");
}

/// A watch on a name no collection can have is refused with the error a write to that name
/// gets: no write could reach it, and it was accepted and never fired. A collection that
/// does not exist yet is watched as before: its first insert arrives.
#[test]
fn a_watch_on_a_name_no_collection_can_have_is_refused_as_a_write_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("w.db"), OpenOptions::default()).unwrap();
    let long = "c".repeat(blazedb::limits::COLLECTION_NAME_BYTES_MAX + 1);
    for name in ["", "a\nb", long.as_str()] {
        let write = db.insert(name, [("x", 1)]).unwrap_err();
        for filter in [None, Some("x == 1")] {
            match db.watch(name, filter, None) {
                Err(e @ Error::Write(blazedb::WriteError::InvalidName { .. })) => {
                    assert_eq!(e.to_string(), write.to_string())
                }
                other => panic!(
                    "{name:?}: expected InvalidName, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }
    let later = db.watch("later", None, None).unwrap();
    db.insert("later", [("x", 1)]).unwrap();
    assert!(matches!(later.try_recv(), Some(WatchItem::Event(_))));
}
