//! `sync_files_watch` keeps two files in sync, including commits made through other
//! connections to the files (as another process would), until told to stop.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blazedb::{Database, OpenOptions, RecordId, Value};
use blazedb_net::{sync_files_watch, SyncFilesOptions};
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
