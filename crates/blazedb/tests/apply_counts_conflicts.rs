//! An apply says how many conflicts it recorded open (`ApplyOutcome::conflicts`): one per
//! concurrent overwrite it settled, none for a second delivery of the same changes, none in
//! a collection whose policy resolves its conflicts at once (they are on record, not open).

mod common;

use blazedb::{CollectionPolicy, Database, Patch, Seq};
use common::open;

/// `from`'s changes after `since` applied to `to`, as a sync session applies a unit.
fn deliver(from: &Database, to: &Database, since: Seq) -> blazedb::store::ApplyOutcome {
    let batch = from.changes_since(since, 10_000, None).unwrap();
    assert!(!batch.more);
    to.apply_changes_checked(from.node_id(), &batch.changes, Some(batch.next), None)
        .unwrap()
}

#[test]
fn an_apply_counts_the_conflicts_it_records_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let b = open(dir.path(), "b");
    for db in [&a, &b] {
        let settled = CollectionPolicy {
            auto_resolve: true,
            ..Default::default()
        };
        db.set_policy("settled", settled).unwrap();
    }
    let x = a.insert("notes", [("t", 0), ("u", 0)]).unwrap();
    let y = a.insert("settled", [("t", 0)]).unwrap();
    let first = deliver(&a, &b, Seq(0));
    assert_eq!(first.conflicts, 0, "nothing concurrent yet");
    assert!(first.applied > 0);
    let a_head = a.last_seq().unwrap();
    let b_head = b.last_seq().unwrap();

    // Both change both fields of `x`, and `y`'s field, without seeing each other's writes.
    a.update("notes", x, Patch::new().set("t", 1).set("u", 1))
        .unwrap();
    a.update("settled", y, Patch::new().set("t", 1)).unwrap();
    b.update("notes", x, Patch::new().set("t", 2).set("u", 2))
        .unwrap();
    b.update("settled", y, Patch::new().set("t", 2)).unwrap();

    // Each overwrite is recorded once, by the side whose write lost there (which side that
    // is depends on the two clocks): both deliveries together record two.
    let to_a = deliver(&b, &a, b_head);
    let to_b = deliver(&a, &b, a_head);
    assert_eq!(to_a.conflicts + to_b.conflicts, 2, "{to_a:?} {to_b:?}");
    assert_eq!(a.open_conflict_count().unwrap(), to_a.conflicts);
    assert_eq!(b.open_conflict_count().unwrap(), to_b.conflicts);
    // `y`'s conflict is recorded, and resolved at once: not counted.
    let settled = a.conflicts_all(Some("settled")).unwrap().len()
        + b.conflicts_all(Some("settled")).unwrap().len();
    assert_eq!(settled, 1);
    assert!(a.conflicts(Some("settled")).unwrap().is_empty());
    assert!(b.conflicts(Some("settled")).unwrap().is_empty());

    // The same changes again (a duplicate delivery) settle nothing new.
    let again = deliver(&b, &a, b_head).conflicts + deliver(&a, &b, a_head).conflicts;
    assert_eq!(again, 0);
    assert_eq!(
        a.open_conflict_count().unwrap() + b.open_conflict_count().unwrap(),
        2
    );
    for (collection, id) in [("notes", x), ("settled", y)] {
        let fields = |db: &Database| db.get(collection, id).unwrap().unwrap().fields;
        assert_eq!(fields(&a), fields(&b), "they converged");
    }
}
