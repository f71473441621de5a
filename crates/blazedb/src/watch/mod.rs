//! Watch: subscribe to committed changes of a collection.
//!
//! Events are published after the transaction commits, never before, and in commit order:
//! a commit's events are queued before the database's lock is released, so a subscriber sees
//! a record's revisions in increasing order. Each subscription has
//! a bounded buffer; when a slow subscriber lets it fill up, further events are dropped and
//! the subscriber receives [`WatchItem::Lagged`] with the number it missed, instead of the
//! buffer growing without bound. A subscriber that lagged can re-read the collection (or
//! resume from the change feed) to catch up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{Error, Result};
use crate::limits::{WATCH_BUFFER_EVENTS_DEFAULT, WATCH_BUFFER_EVENTS_MAX};
use crate::query::{Expr, Params};
use crate::store::{Database, Record};
use crate::types::Seq;

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// It was created (or came back after a delete).
    Inserted,
    /// It changed.
    Updated,
    /// It was deleted.
    Deleted,
}

/// A committed change of one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The feed position of the commit.
    pub seq: Seq,
    /// The record after the change (for a delete: as it was before).
    pub record: Record,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// A change.
    Event(Event),
    /// The buffer was full and this many events were dropped.
    Lagged(u64),
}

struct Subscriber {
    collection: String,
    filter: Option<Expr>,
    params: Params,
    tx: Sender<Event>,
    lagged: Arc<AtomicU64>,
}

/// The subscriptions of a database.
#[derive(Default)]
pub(crate) struct Registry {
    subs: Mutex<Vec<Subscriber>>,
}

impl Registry {
    /// Whether any subscription exists (events are only built then).
    pub(crate) fn is_watched(&self) -> bool {
        !self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Queue `events` for their subscribers. Called with the database's lock held (that is
    /// what keeps events in commit order), so it must never block or run user code: it only
    /// `try_send`s, counting what does not fit as lag.
    pub(crate) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        // A subscription whose `Watch` was dropped is removed on the next publish.
        subs.retain(|s| {
            for e in events {
                if e.record.collection != s.collection {
                    continue;
                }
                if let Some(f) = &s.filter {
                    if !f.matches(&e.record.id.0, &e.record.fields, &s.params) {
                        continue;
                    }
                }
                match s.tx.try_send(e.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        s.lagged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }
}

/// A subscription. Drop it to unsubscribe.
#[derive(Debug)]
pub struct Watch {
    rx: Receiver<Event>,
    lagged: Arc<AtomicU64>,
}

impl Watch {
    fn take_lag(&self) -> Option<WatchItem> {
        let n = self.lagged.swap(0, Ordering::Relaxed);
        (n > 0).then_some(WatchItem::Lagged(n))
    }

    /// Wait for the next item. `None` when the database was dropped.
    pub fn recv(&self) -> Option<WatchItem> {
        if let Some(l) = self.take_lag() {
            return Some(l);
        }
        match self.rx.recv() {
            Ok(e) => Some(WatchItem::Event(e)),
            Err(_) => self.take_lag(),
        }
    }

    /// Wait at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WatchItem> {
        if let Some(l) = self.take_lag() {
            return Some(l);
        }
        self.rx
            .recv_timeout(timeout)
            .ok()
            .map(WatchItem::Event)
            .or_else(|| self.take_lag())
    }

    /// The next item if one is ready.
    pub fn try_recv(&self) -> Option<WatchItem> {
        if let Some(l) = self.take_lag() {
            return Some(l);
        }
        self.rx.try_recv().ok().map(WatchItem::Event)
    }
}

impl Database {
    /// Subscribe to committed changes of `collection`, optionally only of records matching
    /// `filter` (for deletes: that matched before the delete). `capacity` bounds the buffer
    /// (default 1024 events).
    ///
    /// Events come from commits made through this handle (local writes, and changes its sync
    /// sessions apply), not from other handles or processes on the same file, such as a
    /// separate `blazedb sync`: to see those, sync through this handle or re-query when
    /// `blazedb_net`'s file watch reports a new head.
    pub fn watch(
        &self,
        collection: &str,
        filter: Option<&str>,
        capacity: Option<usize>,
    ) -> Result<Watch> {
        let filter = filter.map(crate::query::parse).transpose()?;
        if let Some(f) = &filter {
            let mut params = std::collections::BTreeSet::new();
            f.root().collect_params(&mut params);
            if let Some(name) = params.first() {
                return Err(Error::InvalidArgument(format!(
                    "a watch filter cannot use parameters (${name}): a watch has none to give \
                     them, so the filter would match nothing; write the value into the filter"
                )));
            }
        }
        let capacity = capacity.unwrap_or(WATCH_BUFFER_EVENTS_DEFAULT);
        if capacity == 0 || capacity > WATCH_BUFFER_EVENTS_MAX {
            return Err(Error::InvalidArgument(format!(
                "watch capacity must be 1..={WATCH_BUFFER_EVENTS_MAX}, got {capacity}"
            )));
        }
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let lagged = Arc::new(AtomicU64::new(0));
        self.watchers
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                collection: collection.to_owned(),
                filter,
                params: Params::new(),
                tx,
                lagged: lagged.clone(),
            });
        Ok(Watch { rx, lagged })
    }
}
