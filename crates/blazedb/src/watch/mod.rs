//! Watch: subscribe to committed changes of a collection.
//!
//! Events are published after the transaction commits, never before, and in commit order:
//! a commit's events are queued before the database's lock is released, so a subscriber sees
//! a record's revisions in increasing order. Each subscription has a bounded buffer; when a
//! slow subscriber lets it fill up, further events are dropped and the subscriber receives
//! [`WatchItem::Lagged`] with the number it missed (after the events queued before them),
//! instead of the buffer growing without bound. A subscriber that lagged can re-read the
//! collection (or resume from the change feed) to catch up. A filtered watch reports records
//! entering and leaving its view (see [`Event`]).

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
///
/// To a watch with a filter, `kind` is relative to the filter's view, as query listeners
/// elsewhere report it: an update that makes a record match is `Inserted`, one that makes it
/// stop matching is `Deleted` (the record still exists: `record` is as it is now, outside
/// the view). Before 2026-12-06 a record that stopped matching was never reported, and a
/// UI mirroring the view kept showing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The feed position of the commit.
    pub seq: Seq,
    /// The record after the change (for a delete: as it was before).
    pub record: Record,
    /// An update's fields before it, built only while a filtered watch of the collection
    /// exists (to tell whether the record entered or left its view).
    pub(crate) before: Option<Arc<std::collections::BTreeMap<String, crate::Value>>>,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// A change.
    Event(Event),
    /// The buffer was full and this many events were dropped.
    Lagged(u64),
}

/// What a subscription's channel carries: events, and where the events it missed were.
enum Queued {
    Event(Event),
    /// Events were dropped here (after every event queued before it): the count is in the
    /// shared `Lag`, since more may be dropped after the marker went in.
    Missed,
}

/// Events dropped for a full buffer, shared by the publisher and the `Watch`.
#[derive(Default)]
struct Lag {
    /// Dropped and not yet reported.
    count: AtomicU64,
    /// A `Queued::Missed` marker is in the channel, not yet received.
    marked: std::sync::atomic::AtomicBool,
}

struct Subscriber {
    collection: String,
    filter: Option<Expr>,
    params: Params,
    /// Unbounded, but held to `capacity` events by `publish`: the one `Missed` marker per
    /// lag must go in even when the events fill the buffer.
    tx: Sender<Queued>,
    capacity: usize,
    lag: Arc<Lag>,
}

/// The subscriptions of a database.
#[derive(Default)]
pub(crate) struct Registry {
    subs: Mutex<Vec<Subscriber>>,
}

impl Registry {
    /// Whether any subscription exists (events are only built then).
    /// The collections a watch with a filter follows (their events then carry an update's
    /// fields before it). Asked once per commit.
    pub(crate) fn filtered_collections(&self) -> Vec<String> {
        let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = Vec::new();
        for s in subs.iter().filter(|s| s.filter.is_some()) {
            if !out.contains(&s.collection) {
                out.push(s.collection.clone());
            }
        }
        out
    }

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
                let mut relabelled;
                let mut e = e;
                if let Some(f) = &s.filter {
                    let matches = |fields| f.matches(&e.record.id.0, fields, &s.params);
                    let now = matches(&e.record.fields);
                    let kind = match (e.kind, e.before.as_deref()) {
                        (EventKind::Updated, Some(before)) => match (matches(before), now) {
                            (true, true) => EventKind::Updated,
                            (false, true) => EventKind::Inserted,
                            (true, false) => EventKind::Deleted,
                            (false, false) => continue,
                        },
                        (kind, _) if now => kind,
                        _ => continue,
                    };
                    if kind != e.kind {
                        relabelled = e.clone();
                        relabelled.kind = kind;
                        e = &relabelled;
                    }
                }
                let sent = if s.tx.len() >= s.capacity {
                    // Counted first, then marked: a `Watch` that clears the mark before it
                    // takes the count either sees this one or gets a new marker for it.
                    s.lag.count.fetch_add(1, Ordering::SeqCst);
                    if s.lag.marked.swap(true, Ordering::SeqCst) {
                        Ok(())
                    } else {
                        s.tx.try_send(Queued::Missed)
                    }
                } else {
                    s.tx.try_send(Queued::Event(e.clone()))
                };
                match sent {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }
}

/// A subscription. Drop it to unsubscribe.
///
/// Items come in commit order. [`WatchItem::Lagged`] comes where the missed events would
/// have: after every event queued before them, so a subscriber that re-reads on `Lagged`
/// is not then taken back by older events (it came first until 2026-12-06). Events queued
/// after a re-read may predate it; their `seq` (and the record's `rev`) tells.
pub struct Watch {
    rx: Receiver<Queued>,
    lag: Arc<Lag>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// What a received item means: `None` for a marker whose count an earlier one took.
    fn item(&self, q: Queued) -> Option<WatchItem> {
        match q {
            Queued::Event(e) => Some(WatchItem::Event(e)),
            Queued::Missed => {
                // Unmarked first, then counted (see `Registry::publish`).
                self.lag.marked.store(false, Ordering::SeqCst);
                let n = self.lag.count.swap(0, Ordering::SeqCst);
                (n > 0).then_some(WatchItem::Lagged(n))
            }
        }
    }

    /// Wait for the next item. `None` when the database was dropped.
    pub fn recv(&self) -> Option<WatchItem> {
        loop {
            let q = self.rx.recv().ok()?;
            if let Some(item) = self.item(q) {
                return Some(item);
            }
        }
    }

    /// Wait at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WatchItem> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let q = self.rx.recv_deadline(deadline).ok()?;
            if let Some(item) = self.item(q) {
                return Some(item);
            }
        }
    }

    /// The next item if one is ready.
    pub fn try_recv(&self) -> Option<WatchItem> {
        loop {
            let q = self.rx.try_recv().ok()?;
            if let Some(item) = self.item(q) {
                return Some(item);
            }
        }
    }
}

impl Database {
    /// Subscribe to committed changes of `collection`, optionally only of records matching
    /// `filter` (for deletes: that matched before the delete). `capacity` bounds the buffer
    /// (default 1024 events). A name no collection can have (empty, too long, with control
    /// characters) is refused with the error a write to it gets
    /// ([`WriteError::InvalidName`](crate::WriteError::InvalidName)): no write could ever
    /// reach such a watch (before 2026-12-07 `watch("")` was accepted and never fired). A
    /// collection that does not exist yet is fine: its first insert is an event.
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
        crate::store::validate_collection_name(collection)?;
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let lag = Arc::new(Lag::default());
        self.watchers
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                collection: collection.to_owned(),
                filter,
                params: Params::new(),
                tx,
                capacity,
                lag: lag.clone(),
            });
        Ok(Watch { rx, lag })
    }
}
