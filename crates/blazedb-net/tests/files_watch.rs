//! `sync_files_watch` keeps two files in sync, including commits made through other
//! connections to the files (as another process would), until told to stop.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blazedb::{Database, OpenOptions, RecordId, Value};
use blazedb_net::{sync_files_watch, FilesNotice, SyncFilesOptions};
use common::{dump, fill};

fn open_file(path: &Path) -> Database {
    Database::open(path, OpenOptions::default()).unwrap()
}

/// Wait until `db` holds the record. The handle is not the watcher's, so there is nothing
/// to be notified by: check every few ms.
async fn arrives(db: &Database, collection: &str, id: RecordId) {
    let started = Instant::now();
    while db.get(collection, id).unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_by_other_connections_are_synced_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    // Separate connections to the same files: their commits do not reach the watcher's
    // commit listeners, exactly like another process's.
    let (other_a, other_b) = (open_file(&pa), open_file(&pb));
    fill(&other_a, "c", 100, 100, "a");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn({
        let (pa, pb) = (pa.clone(), pb.clone());
        async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            sync_files_watch(&pa, &pb, SyncFilesOptions::default(), stop, |n| {
                panic!("{n}")
            })
            .await
        }
    });

    let first = other_a.insert("c", [("n", Value::Int(-1))]).unwrap();
    arrives(&other_b, "c", first).await;
    for i in 0..5 {
        let from_b = other_b.insert("c", [("from_b", Value::Int(i))]).unwrap();
        arrives(&other_a, "c", from_b).await;
        let from_a = other_a.insert("c", [("from_a", Value::Int(i))]).unwrap();
        arrives(&other_b, "c", from_a).await;
    }

    stop_tx.send(()).unwrap();
    let report = watch.await.unwrap().unwrap();
    assert!(report.a_to_b.cells_applied >= 106 * 2, "{report:?}");
    assert!(report.b_to_a.cells_applied >= 5, "{report:?}");
    assert_eq!(dump(&other_a), dump(&other_b));
    assert_eq!(other_b.count("c").unwrap(), 111);
}

/// A session that fails for a reason that passes (here: file B's write lock held by another
/// connection past the busy timeout, as another process's long transaction would) used to
/// end the whole watch with that error, and `blazedb sync A B` with it. Now the pair of
/// sessions is started again after a backoff, the user is told, and the change arrives
/// once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_fails_for_a_passing_reason_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (other_a, other_b) = (open_file(&pa), open_file(&pb));
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn({
        let (pa, pb, notices) = (pa.clone(), pb.clone(), notices.clone());
        async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            sync_files_watch(&pa, &pb, SyncFilesOptions::default(), stop, |n| {
                notices.lock().unwrap().push(n)
            })
            .await
        }
    });
    let first = other_a.insert("c", [("n", Value::Int(1))]).unwrap();
    arrives(&other_b, "c", first).await;

    // Hold B's write lock past the busy timeout (10 s) from another connection, and
    // write on A meanwhile: B's session cannot apply it.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        other_b
            .transaction(|tx| {
                tx.insert("held", [("n", Value::Int(0))])?;
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(12));
                Ok(())
            })
            .unwrap();
        other_b
    });
    held_rx.recv().unwrap();
    let during = other_a.insert("c", [("n", Value::Int(2))]).unwrap();
    let other_b = tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert!(!watch.is_finished(), "the watch ended: {:?}", watch.await);
    arrives(&other_b, "c", during).await;
    let told = notices.lock().unwrap().clone();
    assert!(
        told.iter().any(|n| matches!(n,
            FilesNotice::Retrying { error, .. } if error.contains("database is locked"))),
        "the user is told the sync stopped and restarts: {told:?}"
    );

    stop_tx.send(()).unwrap();
    let report = watch.await.unwrap().unwrap();
    assert!(report.rounds >= 2, "{report:?}");
    assert_eq!(dump(&other_a), dump(&other_b));
}
