//! A few recent change-feed reads, shared by the sessions that ask for the same range.
//!
//! One commit on a relay wakes every session; each asks `changes_since(its cursor, batch,
//! its peer)`, and the cursors of peers that keep up are the same. Each read is a SQLite scan
//! plus a decode of every record it touches, so N sessions did the same work N times. This
//! cache keeps the last few results, and a read that finds its range here takes a shared
//! pointer instead.
//!
//! A cached result is only used when it is exactly what the read would return now:
//!
//! - **Nothing changed since it was read.** Every entry was read at one state of the file,
//!   named by this connection's `total_changes()` (every row this connection inserted,
//!   updated or deleted, rolled back or not, moves it) and `PRAGMA data_version` (moves on
//!   every commit by another connection). Any other state empties the cache.
//! - **Same range.** `since` and `cells_max` match.
//! - **Same exclusion, or none that mattered.** Rows from the excluded source are skipped,
//!   which changes where the page stops. A result read with exclusion `a` answers a read
//!   with exclusion `b` when `a == b`, or when no row the scan went through came from `a`
//!   or `b` (then both scans went through the same rows and kept all of them).

use std::sync::Arc;

use super::feed::ChangeBatch;
use crate::limits::{FEED_CACHE_CELLS_MAX, FEED_CACHE_ENTRIES};
use crate::types::Seq;

/// The state of the file a read saw: `(total_changes, data_version)`.
pub(crate) type FeedState = (u64, i64);

#[derive(Debug)]
struct Entry {
    since: Seq,
    cells_max: usize,
    /// The excluded source's index in the feed's `src` column (`None`: nothing excluded).
    exclude: Option<i64>,
    /// Distinct `src` of every row the scan went through (kept or skipped).
    srcs: Vec<i64>,
    batch: Arc<ChangeBatch>,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct FeedCache {
    state: Option<FeedState>,
    /// Oldest first.
    entries: Vec<Entry>,
}

impl FeedCache {
    /// The cached answer to `changes_since(since, cells_max, exclude)` at `state`, if any.
    pub(crate) fn get(
        &mut self,
        state: FeedState,
        since: Seq,
        cells_max: usize,
        exclude: Option<i64>,
    ) -> Option<Arc<ChangeBatch>> {
        if self.state != Some(state) {
            self.entries.clear();
            self.state = None;
            return None;
        }
        self.entries
            .iter()
            .rev()
            .find(|e| {
                e.since == since
                    && e.cells_max == cells_max
                    && (e.exclude == exclude
                        || (e.exclude.is_none_or(|x| !e.srcs.contains(&x))
                            && exclude.is_none_or(|x| !e.srcs.contains(&x))))
            })
            .map(|e| e.batch.clone())
    }

    /// Keep a result read at `state`.
    pub(crate) fn put(
        &mut self,
        state: FeedState,
        since: Seq,
        cells_max: usize,
        exclude: Option<i64>,
        srcs: Vec<i64>,
        batch: Arc<ChangeBatch>,
    ) {
        let cells: usize = batch.changes.iter().map(|c| c.cells.len()).sum();
        if cells > FEED_CACHE_CELLS_MAX {
            return;
        }
        if self.state != Some(state) {
            self.entries.clear();
            self.state = Some(state);
        }
        if self.entries.len() >= FEED_CACHE_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            since,
            cells_max,
            exclude,
            srcs,
            batch,
        });
    }

    /// Forget everything (after a rollback, or when the caches are reloaded).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.state = None;
    }
}
