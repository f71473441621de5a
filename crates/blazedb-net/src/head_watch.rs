//! Notice commits made by other processes on the same database file.
//!
//! A session's driver wakes on commits made through this process's `Database` (its commit
//! listener). Another process writing the same file — `blazedb put` beside a running
//! `blazedb listen`, or a writer beside `blazedb sync DB URL --watch` — reaches no listener
//! here, nor does another handle of this process on the same file. A [`HeadWatch`] checks
//! the feed head (`Database::last_seq`, one small query) when
//! the operating system says the file changed (`file_changes.rs`: a commit writes the WAL),
//! and every [`HEAD_POLL_INTERVAL_MS`] in case it does not say (SQLite has no cross-process commit
//! notification, and file-system watches are missing on some file systems; a watch started
//! with [`HeadWatch::spawn_event_driven`] polls only where the file is not watched); when the head
//! moved, it wakes every subscribed session (its first read wakes them too: it cannot tell a
//! commit made while they started from the starting head). This process's own commits write
//! the file too, so checks prompted by the file system are at most one per
//! [`HEAD_CHECK_GAP_US`].

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use blazedb::Database;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::file_changes::FileChanges;
use crate::limits::{HEAD_CHECK_GAP_US, HEAD_POLL_INTERVAL_MS};

/// Checks one database's feed head and wakes subscribers when it moves. Stops when dropped.
#[derive(Debug)]
pub struct HeadWatch {
    subscribers: Arc<Mutex<Vec<Weak<Notify>>>>,
    /// Why the operating system does not tell of changes to the file (then only the poll
    /// notices other processes' commits).
    file_watch_error: Option<String>,
    task: JoinHandle<()>,
}

impl HeadWatch {
    /// Start watching `db` (needs a tokio runtime), with the poll every
    /// [`HEAD_POLL_INTERVAL_MS`] as the safety net behind the file system's word.
    pub fn spawn(db: Arc<Database>) -> HeadWatch {
        Self::spawn_polling_every(db, Some(Duration::from_millis(HEAD_POLL_INTERVAL_MS)))
    }

    /// Start watching `db` (needs a tokio runtime) without the safety-net poll while the
    /// operating system watches the file: the head is read when the file is written (and
    /// once at the start), and nothing runs while it is not, however many databases a
    /// process watches so (a `Topology` watches each of its nodes). Where the file system
    /// says nothing of a commit it should have told of, the sessions' next PING wakes them
    /// (`SessionConfig::ping_interval_ms`). Where the operating system refuses to watch the
    /// file ([`HeadWatch::file_watch_error`]), it polls every [`HEAD_POLL_INTERVAL_MS`], as
    /// [`HeadWatch::spawn`] does.
    pub fn spawn_event_driven(db: Arc<Database>) -> HeadWatch {
        Self::spawn_polling_every(db, None)
    }

    /// [`HeadWatch::spawn`] with another safety-net poll (tests: an hour, so that only the
    /// file system's word can wake it); `None`: poll only while the file is not watched.
    fn spawn_polling_every(db: Arc<Database>, poll: Option<Duration>) -> HeadWatch {
        let subscribers: Arc<Mutex<Vec<Weak<Notify>>>> = Arc::default();
        let subs = subscribers.clone();
        let changes = FileChanges::watch(db.path());
        let file_watch_error = changes.error().map(str::to_owned);
        let poll = poll.or_else(|| {
            (!changes.is_watching()).then(|| Duration::from_millis(HEAD_POLL_INTERVAL_MS))
        });
        let task = tokio::spawn(async move {
            let mut head = None;
            let start = tokio::time::Instant::now();
            let mut tick = poll.map(|every| {
                let mut tick = tokio::time::interval_at(start + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
            let gap = Duration::from_micros(HEAD_CHECK_GAP_US);
            let mut checked = start;
            // A second look after a change the first look did not see (see below); the
            // first look is at once.
            let mut look_again: Option<tokio::time::Instant> = Some(start);
            loop {
                let prompted = tokio::select! {
                    _ = async { tick.as_mut().expect("checked").tick().await },
                        if tick.is_some() => false,
                    _ = changes.changed() => {
                        tokio::time::sleep_until(checked + gap).await;
                        true
                    }
                    _ = tokio::time::sleep_until(look_again.unwrap_or(checked)),
                        if look_again.is_some() => false,
                };
                look_again = None;
                checked = tokio::time::Instant::now();
                // The query waits for the database lock, which a large apply may hold: run
                // it on the blocking pool, never on a session's task.
                let d = db.clone();
                let now = tokio::task::spawn_blocking(move || d.last_seq().ok())
                    .await
                    .ok()
                    .flatten();
                // An error here is left for the sessions to report. The first read wakes
                // too: a commit that landed after a subscribed session last read its feed
                // but before this read looks like the starting head, and would otherwise
                // wait for the next PING. A needless wake costs each session one feed read.
                // A head this handle's own newest commit explains is left alone: that
                // commit's listeners woke the sessions after every position up to it was in
                // the file (read after the head, so a commit in between counts as ours only
                // if its listeners run after it). Only another process's commit (or another
                // handle's) past it needs this watch: a relay serving a thousand sessions
                // must not wake them all again for each of its own commits.
                let foreign = match (now, head) {
                    (Some(n), Some(_)) => n > db.last_seq_committed_here(),
                    (Some(_), None) => true,
                    _ => false,
                };
                let woke = foreign && now != head;
                if woke {
                    let mut list = subs.lock().expect("head watch lock");
                    list.retain(|w: &Weak<Notify>| match w.upgrade() {
                        Some(n) => {
                            n.notify_one();
                            true
                        }
                        None => false,
                    });
                }
                // `last_seq` may answer from a cache checked up to `HEAD_RECHECK_US` ago (by
                // a session, say) and miss the commit the file system just told of: look
                // once more when that cache must have been checked again. Also when the head
                // moved by this handle's own commit alone: another process's commit just
                // after it may be the change told of, still hidden by that cache. (Reads
                // stay at most one per gap: a file event in the meantime waits for it too.)
                if prompted && now.is_some() && !woke {
                    look_again = Some(checked + gap);
                }
                if now.is_some() {
                    head = now;
                }
            }
        });
        HeadWatch {
            subscribers,
            file_watch_error,
            task,
        }
    }

    /// Why other processes' commits are noticed only by the poll (the operating system
    /// refused to watch the file), said for the user; `None` when it watches.
    pub fn file_watch_error(&self) -> Option<&str> {
        self.file_watch_error.as_deref()
    }

    /// A notifier woken whenever the head moves; pass it as
    /// [`DriverOptions::wake`](crate::DriverOptions::wake). It stays subscribed while any
    /// clone of it lives.
    pub fn subscribe(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        let mut list = self.subscribers.lock().expect("head watch lock");
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&n));
        n
    }
}

impl Drop for HeadWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session subscribes and reads its feed, then another process commits before the
    /// watch's first poll: the watch never saw the head before it, yet must wake the session.
    #[tokio::test(flavor = "current_thread")]
    async fn a_commit_before_the_first_poll_wakes_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = Arc::new(Database::open(&path, blazedb::OpenOptions::default()).unwrap());
        let other_process = Database::open(&path, blazedb::OpenOptions::default()).unwrap();
        // One thread: the watch's task runs only once this task waits, so its first poll
        // comes after the subscription and the commit.
        let watch = HeadWatch::spawn(db);
        let wake = watch.subscribe();
        other_process
            .insert("notes", [("t", blazedb::Value::from("late"))])
            .unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
        assert!(woken.is_ok(), "the subscribed session was never woken");
    }

    /// Another process's commit wakes the subscribers through the file system, not the poll:
    /// with the poll an hour apart, the wake can only come from the watch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_process_commit_wakes_through_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = Arc::new(Database::open(&path, blazedb::OpenOptions::default()).unwrap());
        let other_process = Database::open(&path, blazedb::OpenOptions::default()).unwrap();
        let watch = HeadWatch::spawn_polling_every(db, Some(Duration::from_secs(3600)));
        let wake = watch.subscribe();
        // The first read (the poll's first tick, at once) may wake once; let it pass and take
        // its wake away, so that from here on only a change can wake.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        for n in 0..3 {
            other_process
                .insert("notes", [("n", blazedb::Value::Int(n))])
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), wake.notified())
                .await
                .unwrap_or_else(|_| panic!("commit {n} by another handle woke nobody"));
        }
    }

    /// This handle commits, a session reads the head (filling `last_seq`'s cache), and
    /// another process commits right after, thirty times: each time the other commit wakes
    /// the subscribers, without the poll. (When the file system's word for both commits
    /// comes as one, the read it prompts may answer from that cache, which shows this
    /// handle's commit alone; the watch then looks again once the cache is stale. That
    /// interleaving depends on when the watch's task runs, so this test does not force it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_right_after_one_of_this_handle_still_wakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = Arc::new(Database::open(&path, blazedb::OpenOptions::default()).unwrap());
        let other_process = Database::open(&path, blazedb::OpenOptions::default()).unwrap();
        let watch = HeadWatch::spawn_polling_every(db.clone(), Some(Duration::from_secs(3600)));
        let wake = watch.subscribe();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        for n in 0..30 {
            db.insert("notes", [("mine", blazedb::Value::Int(n))])
                .unwrap();
            db.last_seq().unwrap();
            other_process
                .insert("notes", [("theirs", blazedb::Value::Int(n))])
                .unwrap();
            tokio::time::timeout(Duration::from_secs(5), wake.notified())
                .await
                .unwrap_or_else(|_| panic!("round {n}: the other process's commit woke nobody"));
            // Both commits' events are over before the next round.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tokio::time::timeout(Duration::from_millis(1), wake.notified()).await;
        }
    }
}
