//! A snapshot is read in pages while its sender goes on committing, and a receiver may take
//! it chunk by chunk: a transaction of the sender must still never be seen half-applied by a
//! reader of the receiver (simulation seed 2400337: a node held one record of a pair written
//! in one transaction as it was after it and the other as it was before).
//!
//! Each test writes `x` (collection "a", read by the first page) and `y` (collection "z",
//! read by the second) in one transaction, with 12,000 records between them, and checks the
//! receiver after every frame it handles.

mod common;

use blazedb::sync::{Session, SessionConfig};
use blazedb::{Database, Patch, RecordId, Value};

/// The pair and the filler on `a`: `x` and `y` hold `p` = 0, written together.
fn populate(a: &Database) -> (RecordId, RecordId) {
    a.transaction(|tx| {
        for i in 0..12_000i64 {
            tx.insert("m", [("n", Value::Int(i))])?;
        }
        Ok(())
    })
    .unwrap();
    a.transaction(|tx| {
        let x = tx.insert("a", [("p", Value::Int(0))])?;
        let y = tx.insert("z", [("p", Value::Int(0))])?;
        Ok((x, y))
    })
    .unwrap()
}

/// Write `p` on both, in one transaction.
fn write_pair(a: &Database, (x, y): (RecordId, RecordId), p: i64) {
    a.transaction(|tx| {
        tx.update("a", x, Patch::new().set("p", p))?;
        tx.update("z", y, Patch::new().set("p", p))?;
        Ok(())
    })
    .unwrap();
}

/// Where both records are there, they hold the same `p`.
fn assert_whole(b: &Database, (x, y): (RecordId, RecordId), when: &str) {
    let p = |coll: &str, id| {
        b.get(coll, id)
            .unwrap()
            .and_then(|r| r.fields.get("p").cloned())
    };
    if let (Some(px), Some(py)) = (p("a", x), p("z", y)) {
        assert_eq!(px, py, "{when}: the pair is seen half-written");
    }
}

/// Sessions `a` → `b`, run until `b` has handled the snapshot's first chunk (its first
/// page, `x` among it) and `a` has not read the second page yet.
fn first_chunk(a: &Database, b: &Database) -> (Session, Session) {
    let mut sa = Session::new(a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(b, SessionConfig::default(), 0).unwrap();
    common::pump_until(a, &mut sa, b, &mut sb, |sa| sa.stats().cells_sent > 0);
    assert!(sa.progress().sending_snapshot, "one page of two sent");
    (sa, sb)
}

/// `a` with the pair and the filler, `c` a full copy of it, `b` empty and `a`'s snapshot to
/// it half sent: the setup of the tests where `b` also takes `c`'s changes.
fn with_a_full_copy(dir: &std::path::Path) -> Nodes {
    let a = common::open(dir, "a");
    let b = common::open(dir, "b");
    let c = common::open(dir, "c");
    let pair = populate(&a);
    common::sync_pair(&a, &c, SessionConfig::default(), SessionConfig::default());
    let (sa, sb) = first_chunk(&a, &b);
    Nodes {
        a,
        b,
        c,
        sa,
        sb,
        pair,
    }
}

struct Nodes {
    a: Database,
    b: Database,
    c: Database,
    sa: Session,
    sb: Session,
    pair: (RecordId, RecordId),
}

/// [`common::pump`], checking `b` after every frame it handles, and handing `b`'s session
/// to `after_frame` then.
fn pump_checking(
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
    pair: (RecordId, RecordId),
    mut after_frame: impl FnMut(&Session),
) {
    for _ in 0..100_000 {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(0, a) {
            sb.handle_bytes(0, &f, b).unwrap();
            assert_whole(b, pair, "after a frame from the sender");
            after_frame(sb);
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(0, b) {
            sa.handle_bytes(0, &f, a).unwrap();
            progress = true;
        }
        if !progress && sa.is_caught_up(a).unwrap() && sb.is_caught_up(b).unwrap() {
            return;
        }
        assert!(progress, "stalled");
    }
    panic!("did not converge");
}

/// An empty replica merges chunks as they arrive. The pair is written between the pages:
/// the second page's chunks carry `x` again as it is now, so the replica never holds the
/// new `y` beside the old `x`.
#[test]
fn a_transaction_between_pages_is_never_seen_half_by_a_new_replica() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let pair = populate(&a);
    let (mut sa, mut sb) = first_chunk(&a, &b);
    assert!(
        b.get("a", pair.0).unwrap().is_some(),
        "merged as it arrived"
    );
    let first = b.count("m").unwrap();
    write_pair(&a, pair, 1);
    // Nothing else commits here: the second page is merged as it arrives too.
    let mut more_before_the_end = false;
    pump_checking(&a, &mut sa, &b, &mut sb, pair, |sb| {
        more_before_the_end |= sb.progress().receiving_snapshot && b.count("m").unwrap() > first;
    });
    assert!(more_before_the_end, "the rest was staged");
    assert_eq!(common::dump(&a), common::dump(&b));
    assert_eq!(sa.stats().snapshots_sent, 1);
}

/// A replica that takes another peer's changes while its bootstrap is merged chunk by chunk
/// stages the rest and applies it together at the end: merged one chunk at a time, `x` as
/// of now (sent again) met the other peer's older `y` before the chunk with the new `y`
/// came.
#[test]
fn a_bootstrap_that_meets_other_changes_applies_the_rest_whole() {
    let dir = tempfile::tempdir().unwrap();
    let Nodes {
        a,
        b,
        c,
        mut sa,
        mut sb,
        pair,
    } = with_a_full_copy(dir.path());
    // `c` brings everything, the old pair included.
    common::sync_pair(&b, &c, SessionConfig::default(), SessionConfig::default());
    assert!(b.get("z", pair.1).unwrap().is_some());
    write_pair(&a, pair, 1);
    pump_checking(&a, &mut sa, &b, &mut sb, pair, |_| {});
    assert_eq!(common::dump(&a), common::dump(&b));
}

/// The same, the bootstrap cut off after its first chunk and resumed by a new session,
/// which cannot tell what committed since: it stages the rest.
#[test]
fn a_resumed_bootstrap_applies_the_rest_whole() {
    let dir = tempfile::tempdir().unwrap();
    let Nodes {
        a,
        b,
        c,
        mut sa,
        mut sb,
        pair,
    } = with_a_full_copy(dir.path());
    sa.transport_closed(0, &a);
    sb.transport_closed(0, &b);
    common::sync_pair(&b, &c, SessionConfig::default(), SessionConfig::default());
    write_pair(&a, pair, 1);
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    pump_checking(&a, &mut sa, &b, &mut sb, pair, |_| {});
    assert_eq!(common::dump(&a), common::dump(&b));
    assert_eq!(sa.stats().snapshots_sent, 1, "resumed, not begun again");
}

/// A local write during the bootstrap is no older copy of the sender's records (it is newer
/// than all it saw): the rest of the bootstrap is still merged as it arrives.
#[test]
fn a_local_write_during_a_bootstrap_leaves_it_merging() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let pair = populate(&a);
    let (mut sa, mut sb) = first_chunk(&a, &b);
    let first = b.count("m").unwrap();
    b.insert("notes", [("text", Value::from("written while syncing"))])
        .unwrap();
    write_pair(&a, pair, 1);
    let mut more_before_the_end = false;
    pump_checking(&a, &mut sa, &b, &mut sb, pair, |sb| {
        more_before_the_end |= sb.progress().receiving_snapshot && b.count("m").unwrap() > first;
    });
    assert!(more_before_the_end, "the rest was staged");
    assert_eq!(b.count("notes").unwrap(), 1);
    assert_eq!(b.count("m").unwrap(), a.count("m").unwrap());
}

/// A relay's session: server role, and an access control whose view (its read rules and
/// the client's claims) is not the default one.
fn relay_config() -> SessionConfig {
    #[derive(Debug)]
    struct RelayRules;
    impl blazedb::sync::AccessControl for RelayRules {
        fn filters_reads(&self) -> bool {
            false
        }
        fn view(&self) -> String {
            "read rules of the relay|claims of the client".into()
        }
    }
    SessionConfig {
        server: true,
        access: Some(std::sync::Arc::new(RelayRules)),
        ..SessionConfig::default()
    }
}

/// A bootstrap from a relay cut off part-way resumes after the last chunk the client merged:
/// the relay had not yet noted the view it serves the client (it does once the client
/// applied the snapshot), judged the client's view changed, and began a new, replacing
/// snapshot, which the client refused (MALFORMED: its chunks of the first were merged) before
/// a third session sent everything again (an audit, 2026-12-06).
#[test]
fn a_bootstrap_from_a_relay_cut_off_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    let pair = populate(&a);
    let mut sa = Session::new(&a, relay_config(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    common::pump_until(&a, &mut sa, &b, &mut sb, |sa| sa.stats().cells_sent > 0);
    assert!(sa.progress().sending_snapshot, "one page of two sent");
    let first = sa.stats().cells_sent;
    let merged = b.count("m").unwrap();
    assert!(merged > 0, "the first chunk was merged");
    // The client's session counts what it merged, though the snapshot never finished.
    assert!(sb.stats().cells_received > 0 && sb.stats().cells_applied > 0);
    sa.transport_closed(0, &a);
    sb.transport_closed(0, &b);
    let mut sa = Session::new(&a, relay_config(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    pump_checking(&a, &mut sa, &b, &mut sb, pair, |_| {});
    assert_eq!(common::dump(&a), common::dump(&b));
    // What a whole bootstrap sends, for comparison.
    let c = common::open(dir.path(), "c");
    let mut sa_whole = Session::new(&a, relay_config(), 0).unwrap();
    let mut sc = Session::new(&c, SessionConfig::default(), 0).unwrap();
    common::pump(&a, &mut sa_whole, &c, &mut sc);
    let whole = sa_whole.stats().cells_sent;
    assert_eq!(sc.stats().cells_received, whole, "each cell counted once");
    assert!(
        first + sa.stats().cells_sent <= whole,
        "resumed: {} cells sent after the {first} of the first session; a whole bootstrap \
         sends {whole}",
        sa.stats().cells_sent
    );
}

/// The view a relay serves a client under is noted as its digest, however long its rules and
/// claims are (noted as it is, a 1.6 KB rules file cost 9.6 KB of store pages per client node,
/// kept for good). A note written before, holding the view itself, still counts as that view:
/// the client resumes incrementally, without a snapshot, and the note is replaced by the digest.
#[test]
fn the_served_view_is_noted_as_a_digest_and_an_older_note_of_it_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::open(dir.path(), "a");
    let b = common::open(dir.path(), "b");
    populate(&a);
    let mut sa = Session::new(&a, relay_config(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    common::pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(common::dump(&a), common::dump(&b));
    let note = || a.peer_note(b.node_id(), "served_view").unwrap().unwrap();
    let digest = note();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );

    // The note as builds before this one wrote it: the view itself.
    let everything = blazedb::sync::SyncPolicy::everything().fingerprint();
    let legacy = format!("{everything}#read rules of the relay|claims of the client");
    a.set_peer_note(b.node_id(), "served_view", Some(&legacy))
        .unwrap();
    a.insert("notes", [("text", Value::from("after the upgrade"))])
        .unwrap();
    let mut sa = Session::new(&a, relay_config(), 10).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 10).unwrap();
    common::pump(&a, &mut sa, &b, &mut sb);
    assert_eq!(sb.stats().snapshots_applied, 0, "{:?}", sb.stats());
    // The new record only (its record cell and its field), no snapshot of the rest.
    assert_eq!(sa.stats().cells_sent, 2, "{:?}", sa.stats());
    assert_eq!(common::dump(&a), common::dump(&b));
    assert_eq!(note(), digest);
}
