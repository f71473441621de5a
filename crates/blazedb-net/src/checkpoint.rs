//! Background WAL checkpoints for a database that syncs.
//!
//! The core library never spawns: commits leave the WAL to grow (up to
//! `blazedb::limits::WAL_AUTOCHECKPOINT_PAGES`) and [`Database::checkpoint`] copies it back
//! into the database file on request. [`spawn_checkpointer`] is that request, every interval,
//! on tokio's blocking pool, so no commit waits for a checkpoint's fsync.

use std::sync::{Arc, Weak};
use std::time::Duration;

use blazedb::Database;
use tokio::task::JoinHandle;

/// A running checkpointer; dropping it stops it.
#[derive(Debug)]
pub struct Checkpointer {
    task: JoinHandle<()>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checkpoint `db`'s WAL every `interval` (PASSIVE: it never waits for readers or writers)
/// until the returned handle is dropped or the database is. The task holds the database
/// only weakly, so it never keeps the file open. Must be called inside a tokio runtime.
///
/// ```no_run
/// # async fn f(db: std::sync::Arc<blazedb::Database>) {
/// let _checkpoints = blazedb_net::spawn_checkpointer(db, std::time::Duration::from_secs(1));
/// # }
/// ```
pub fn spawn_checkpointer(db: Arc<Database>, interval: Duration) -> Checkpointer {
    let weak = Arc::downgrade(&db);
    drop(db);
    Checkpointer {
        task: tokio::spawn(run(weak, interval.max(Duration::from_millis(1)))),
    }
}

async fn run(db: Weak<Database>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; there is nothing to checkpoint yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(db) = db.upgrade() else {
            return;
        };
        // A checkpoint does file I/O and fsyncs: never on the sessions' worker threads. A
        // failure (e.g. the disk is full) is left for the next commit to report.
        let _ = tokio::task::spawn_blocking(move || db.checkpoint()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blazedb::OpenOptions;

    #[tokio::test(flavor = "current_thread")]
    async fn does_not_keep_the_database_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap());
        let checkpointer = spawn_checkpointer(db.clone(), Duration::from_millis(1));
        for i in 0..50 {
            db.insert("notes", [("n", i as i64)]).unwrap();
            tokio::task::yield_now().await;
        }
        let weak = Arc::downgrade(&db);
        drop(db);
        // A checkpoint in flight holds the database until it returns; then it is gone.
        for _ in 0..500 {
            if weak.upgrade().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            weak.upgrade().is_none(),
            "the checkpointer keeps the database open"
        );
        drop(checkpointer);
    }
}
