//! `sync_files_once` syncs two database files until both are caught up, reports exact cell
//! counts each way, and a second run moves nothing but the handshakes.

mod common;

use std::path::Path;

use blazedb::sync::SyncMode;
use blazedb::{Database, OpenOptions};
use blazedb_net::{sync_files_once, NetError, SyncFilesOptions};
use common::{dump, fill, live_cells};

fn open_file(path: &Path, password: Option<&str>) -> Database {
    let options = OpenOptions {
        password: password.map(str::to_owned),
        ..OpenOptions::default()
    };
    Database::open(path, options).unwrap()
}

/// Handshakes, CAUGHT_UP, the goodbye: what a run with nothing to send costs, generously.
const IDLE_RUN_BYTES_MAX: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_and_a_second_run_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (cells_a, cells_b) = {
        let (a, b) = (open_file(&pa, None), open_file(&pb, None));
        fill(&a, "bugs", 3_000, 500, "a");
        fill(&b, "notes", 700, 100, "b");
        (live_cells(&a), live_cells(&b))
    };

    let r = sync_files_once(&pa, &pb, SyncFilesOptions::default())
        .await
        .unwrap();
    assert!(r.rounds >= 1);
    assert_eq!(r.a_to_b.cells_sent, cells_a);
    assert_eq!(r.a_to_b.cells_received, cells_a);
    assert_eq!(r.a_to_b.cells_applied, cells_a);
    assert_eq!(r.b_to_a.cells_sent, cells_b);
    assert_eq!(r.b_to_a.cells_received, cells_b);
    assert_eq!(r.b_to_a.cells_applied, cells_b);
    for d in [&r.a_to_b, &r.b_to_a] {
        assert!(
            d.bytes_received > 0 && d.bytes_received <= d.bytes_sent,
            "{d:?}"
        );
    }
    let json = r.to_json();
    assert_eq!(json["a_to_b"]["cells_sent"], cells_a);
    assert_eq!(json["b_to_a"]["cells_applied"], cells_b);
    assert_eq!(json["mode"], "both");
    {
        let (a, b) = (open_file(&pa, None), open_file(&pb, None));
        assert_eq!(dump(&a), dump(&b));
        assert_eq!(b.count("bugs").unwrap(), 3_000);
    }

    let again = sync_files_once(&pa, &pb, SyncFilesOptions::default())
        .await
        .unwrap();
    assert_eq!(
        again.a_to_b.cells_sent + again.b_to_a.cells_sent,
        0,
        "{again:?}"
    );
    assert!(again.a_to_b.bytes_sent <= IDLE_RUN_BYTES_MAX, "{again:?}");
    assert!(again.b_to_a.bytes_sent <= IDLE_RUN_BYTES_MAX, "{again:?}");

    // One change: one record's worth of cells, one way.
    {
        let a = open_file(&pa, None);
        a.insert("bugs", [("title", "one more")]).unwrap();
    }
    let one = sync_files_once(&pa, &pb, SyncFilesOptions::default())
        .await
        .unwrap();
    assert!(
        one.a_to_b.cells_sent >= 1 && one.a_to_b.cells_sent <= 2,
        "{one:?}"
    );
    assert_eq!(one.b_to_a.cells_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_leaves_the_source_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    {
        let (a, b) = (open_file(&pa, None), open_file(&pb, None));
        fill(&a, "c", 50, 50, "a");
        fill(&b, "c", 20, 20, "b");
    }
    let opts = SyncFilesOptions {
        mode: SyncMode::Push,
        ..SyncFilesOptions::default()
    };
    let r = sync_files_once(&pa, &pb, opts).await.unwrap();
    assert_eq!(r.b_to_a.cells_sent, 0);
    assert!(r.a_to_b.cells_applied > 0);
    assert_eq!(r.to_json()["mode"], "push");
    let (a, b) = (open_file(&pa, None), open_file(&pb, None));
    assert_eq!(a.count("c").unwrap(), 50);
    assert_eq!(b.count("c").unwrap(), 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_files_and_new_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (
        dir.path().join("plain.db"),
        dir.path().join("new-secret.db"),
    );
    {
        let a = open_file(&pa, None);
        fill(&a, "c", 10, 10, "a");
    }
    // B does not exist yet: it is created, encrypted, and filled.
    let opts = SyncFilesOptions {
        password_b: Some(String::from("s3cret").into()),
        ..SyncFilesOptions::default()
    };
    sync_files_once(&pa, &pb, opts).await.unwrap();
    let b = open_file(&pb, Some("s3cret"));
    assert!(b.is_encrypted());
    assert_eq!(b.count("c").unwrap(), 10);
    drop(b);

    let wrong = SyncFilesOptions {
        password_b: Some(String::from("wrong").into()),
        ..SyncFilesOptions::default()
    };
    let err = sync_files_once(&pa, &pb, wrong).await.unwrap_err();
    assert!(
        matches!(err, NetError::Open { ref path, .. } if path == &pb),
        "{err}"
    );

    let missing = SyncFilesOptions {
        create_missing: false,
        ..SyncFilesOptions::default()
    };
    let err = sync_files_once(&pa, &dir.path().join("nope.db"), missing)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Open { .. }), "{err}");

    let err = sync_files_once(&pa, &pa, SyncFilesOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::SameFile { .. }), "{err}");
}

/// A replica synced only by one-shot runs, that never writes, collects the deletes it
/// received. Its applies of the source's units take positions in its own feed that hold only
/// the source's changes; a run now ends once the source acknowledged the replica's feed up
/// to its head, which is the replica's GC horizon. Before, those positions were announced at
/// most once a second (`ECHO_CAUGHT_UP_INTERVAL_MS`), runs ended sooner, and every later run
/// resumed from the replica's stale record of the source's ACKs, skipped to its head and
/// said so, unacknowledged: `gc` named the source in `held_by` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_synced_only_by_one_shot_runs_collects_the_deletes_it_received() {
    use blazedb::{GcOptions, PeerDirection, Value};
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let mut ids = {
        let a = open_file(&pa, None);
        (0..60)
            .map(|n| a.insert("items", [("n", Value::from(n))]).unwrap())
            .collect::<Vec<_>>()
    };
    sync_files_once(&pa, &pb, SyncFilesOptions::default())
        .await
        .unwrap();
    for round in 0..3 {
        {
            let a = open_file(&pa, None);
            for id in ids.drain(..10) {
                assert!(a.delete("items", id).unwrap());
            }
        }
        let r = sync_files_once(&pa, &pb, SyncFilesOptions::default())
            .await
            .unwrap();
        assert_eq!(r.a_to_b.cells_applied, 10, "round {round}: {r:?}");
        let (a, b) = (open_file(&pa, None), open_file(&pb, None));
        assert_eq!(b.count("items").unwrap(), ids.len() as u64);
        assert_eq!(
            b.peer_cursor(a.node_id(), PeerDirection::Acked).unwrap(),
            b.last_seq().unwrap(),
            "round {round}: the source's ACKs of the replica's feed"
        );
        let gc = b.gc(&GcOptions::default()).unwrap();
        assert_eq!(
            (gc.tombstones_purged, gc.held_by),
            (10, None),
            "round {round}: {gc:?}"
        );
    }
}
