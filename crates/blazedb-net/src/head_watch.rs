//! Notice commits made by other processes on the same database file.
//!
//! A session's driver wakes on commits made through this process's `Database` (its commit
//! listener). Another process writing the same file — `blazedb put` beside a running
//! `blazedb listen`, or a writer beside `blazedb sync DB URL --watch` — reaches no listener
//! here. A [`HeadWatch`] checks the feed head (`Database::last_seq`, one small query) every
//! [`HEAD_POLL_INTERVAL_MS`] and, when it moved, wakes every subscribed session (its first
//! read wakes them too: it cannot tell a commit made while they started from the starting
//! head). SQLite has no cross-process commit notification; see `files` for the same
//! trade-off.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use blazedb::Database;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::limits::HEAD_POLL_INTERVAL_MS;

/// Polls one database's feed head and wakes subscribers when it moves. Stops when dropped.
#[derive(Debug)]
pub struct HeadWatch {
    subscribers: Arc<Mutex<Vec<Weak<Notify>>>>,
    task: JoinHandle<()>,
}

impl HeadWatch {
    /// Start polling `db` (needs a tokio runtime).
    pub fn spawn(db: Arc<Database>) -> HeadWatch {
        let subscribers: Arc<Mutex<Vec<Weak<Notify>>>> = Arc::default();
        let subs = subscribers.clone();
        let task = tokio::spawn(async move {
            let mut head = None;
            let mut tick = tokio::time::interval(Duration::from_millis(HEAD_POLL_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
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
                if now.is_some() && now != head {
                    let mut list = subs.lock().expect("head watch lock");
                    list.retain(|w: &Weak<Notify>| match w.upgrade() {
                        Some(n) => {
                            n.notify_one();
                            true
                        }
                        None => false,
                    });
                }
                if now.is_some() {
                    head = now;
                }
            }
        });
        HeadWatch { subscribers, task }
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
}
