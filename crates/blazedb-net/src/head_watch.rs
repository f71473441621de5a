//! Notice commits made by other processes on the same database file.
//!
//! A session's driver wakes on commits made through this process's `Database` (its commit
//! listener). Another process writing the same file — `blazedb put` beside a running
//! `blazedb listen`, or a writer beside `blazedb sync DB URL --watch` — reaches no listener
//! here. A [`HeadWatch`] checks the feed head (`Database::last_seq`, one small query) every
//! [`HEAD_POLL_INTERVAL_MS`] and, when it moved, wakes every subscribed session. SQLite has
//! no cross-process commit notification; see `files` for the same trade-off.

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
                // An error here is left for the sessions to report.
                if head.is_some() && now.is_some() && now != head {
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
