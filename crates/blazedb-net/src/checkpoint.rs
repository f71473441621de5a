//! Background WAL checkpoints for a database that syncs.
//!
//! The core library never spawns: commits leave the WAL to grow (up to
//! `blazedb::limits::WAL_AUTOCHECKPOINT_PAGES`) and [`Database::checkpoint`] copies it back
//! into the database file on request. [`spawn_checkpointer`] is that request, every interval,
//! on tokio's blocking pool, so no commit waits for a checkpoint's fsync. For a file written
//! slowly it waits longer (up to [`CHECKPOINT_BACKOFF_MAX`] intervals), so that each
//! checkpoint copies about [`CHECKPOINT_FRAMES_WORTHWHILE`] frames: a checkpoint's fsyncs
//! cost the same for one frame as for hundreds, and a process with many databases (a test
//! of 1,000 clients: 84 threads spent 12 s of CPU in 16 s on them) pays them per file.
//! Every wait is jittered ([`CHECKPOINT_JITTER_PERCENT`]), so the checkpointers of files
//! opened together do not all fsync at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use blazedb::Database;
use tokio::task::JoinHandle;

use crate::limits::{
    CHECKPOINT_BACKOFF_MAX, CHECKPOINT_FRAMES_WORTHWHILE, CHECKPOINT_JITTER_PERCENT,
};

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

/// Checkpoint `db`'s WAL every `interval` (PASSIVE: it never waits for readers or writers),
/// or less often while checkpoints find little to copy (see the [module docs](self)), until
/// the returned handle is dropped or the database is. The task holds the database only
/// weakly, so it never keeps the file open. Must be called inside a tokio runtime.
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
    let mut wait = Backoff::new(interval);
    loop {
        tokio::time::sleep(jittered(wait.current, rand::random())).await;
        let Some(db) = db.upgrade() else {
            return;
        };
        // A checkpoint does file I/O and fsyncs: never on the sessions' worker threads. A
        // failure (e.g. the disk is full) is left for the next commit to report.
        let copied = tokio::task::spawn_blocking(move || db.checkpoint())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map_or(0, |c| c.checkpointed_frames);
        wait.after(copied);
    }
}

/// `d` made longer or shorter by `random`'s share of up to `CHECKPOINT_JITTER_PERCENT`.
fn jittered(d: Duration, random: u64) -> Duration {
    let j = u64::from(CHECKPOINT_JITTER_PERCENT.min(100));
    let percent = 100 - j + random % (2 * j + 1);
    d * percent as u32 / 100
}

/// The wait before the next checkpoint: `interval` while checkpoints are worthwhile, up to
/// `CHECKPOINT_BACKOFF_MAX` times it while they copy little.
#[derive(Debug)]
struct Backoff {
    interval: Duration,
    current: Duration,
}

impl Backoff {
    fn new(interval: Duration) -> Backoff {
        Backoff {
            interval,
            current: interval,
        }
    }

    fn after(&mut self, copied_frames: u64) {
        let max = self.interval * CHECKPOINT_BACKOFF_MAX;
        if copied_frames < CHECKPOINT_FRAMES_WORTHWHILE {
            self.current = (self.current * 2).min(max);
        } else if copied_frames >= 2 * CHECKPOINT_FRAMES_WORTHWHILE {
            self.current = (self.current / 2).max(self.interval);
        }
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

    #[test]
    fn waits_are_jittered_both_ways() {
        let d = Duration::from_millis(1_000);
        let j = u64::from(CHECKPOINT_JITTER_PERCENT);
        let all: Vec<Duration> = (0..=2 * j).map(|r| jittered(d, r)).collect();
        let pct = |p: u64| d * p as u32 / 100;
        assert_eq!(all.iter().min(), Some(&pct(100 - j)));
        assert_eq!(all.iter().max(), Some(&pct(100 + j)));
        assert!(all.contains(&d));
        // Any random number lands in the range.
        for r in [u64::MAX, 12_345, 2 * j + 1] {
            let w = jittered(d, r);
            assert!(w >= pct(100 - j) && w <= pct(100 + j), "{w:?}");
        }
    }

    #[test]
    fn backs_off_while_checkpoints_copy_little() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(1_000));
        assert_eq!(b.current, ms(1_000));
        b.after(CHECKPOINT_FRAMES_WORTHWHILE); // worthwhile, not plenty: stays
        assert_eq!(b.current, ms(1_000));
        for want in [2_000, 4_000, 8_000, 8_000] {
            b.after(CHECKPOINT_FRAMES_WORTHWHILE - 1);
            assert_eq!(b.current, ms(want));
        }
        b.after(CHECKPOINT_FRAMES_WORTHWHILE); // between: stays
        assert_eq!(b.current, ms(8_000));
        for want in [4_000, 2_000, 1_000, 1_000] {
            b.after(2 * CHECKPOINT_FRAMES_WORTHWHILE);
            assert_eq!(b.current, ms(want));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_a_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = Arc::new(Database::open(&path, OpenOptions::default()).unwrap());
        for i in 0..200 {
            db.insert("notes", [("n", i as i64)]).unwrap();
        }
        let wal = format!("{}-wal", path.display());
        let generation = || std::fs::read(&wal).unwrap()[12..24].to_vec();
        let before = generation();
        let _checkpointer = spawn_checkpointer(db.clone(), Duration::from_millis(5));
        // The checkpointer copies the WAL and starts it over (a new salt in its header).
        let mut changed = false;
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if generation() != before {
                changed = true;
                break;
            }
        }
        assert!(changed, "no checkpoint in 5 s");
        db.insert("notes", [("n", -1i64)]).unwrap();
        assert_eq!(db.count("notes").unwrap(), 201);
    }
}
