//! Record rows this handle's write transactions recently wrote, so that a write to a hot
//! record does not read its row back from SQLite.
//!
//! Profiles of the fan-out workload (a writer updating records over and over, a relay and
//! subscribers applying the same records again and again) showed `Tx::load`, mostly its
//! `SELECT … FROM records` by primary key, at about a quarter of all CPU. The row a
//! transaction needs is usually the one this handle wrote a moment ago.
//!
//! What the cache holds is always a committed row of the file:
//! - each row a transaction writes is *staged* and reaches the cache only when
//!   `Inner::commit` succeeds, in the order written; a rollback drops the staged entries (and
//!   the whole cache, with the other caches: `Inner::rollback_caches`);
//! - a path that changes a row outside `RecordWriter` (eviction) forgets the key at once;
//! - when another connection commits to the file (`PRAGMA data_version` moved), the cache
//!   is cleared with the other caches in `Inner::refresh`.
//!
//! Bounded by [`RECORD_CACHE_ROWS_MAX`] rows and [`RECORD_CACHE_BYTES_MAX`] bytes of bodies,
//! least recently used out first.

use hashlink::LruCache;

use crate::limits::{RECORD_CACHE_BYTES_MAX, RECORD_CACHE_ROWS_MAX};
use crate::types::RecordId;

/// A `records` row, as `Tx::load` reads it and `RecordWriter::write` writes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CachedRow {
    pub rev: u64,
    pub seq: u64,
    pub body: Vec<u8>,
    pub hist: Option<i64>,
}

/// (collection id, record id).
type Key = (i64, RecordId);

/// See the module documentation.
pub(crate) struct RecordCache {
    /// Hashed with foldhash, as `FastMap` is, not SipHash: `get` and `remove` took 244
    /// samples of a whole encrypted fan-out run with SipHash, 184 with foldhash (perf,
    /// 2026-12-05; the rest is the LRU list and memory access).
    rows: LruCache<Key, CachedRow, foldhash::fast::RandomState>,
    /// Bytes of bodies in `rows`.
    bytes: usize,
    /// Changes of the open transaction, oldest first: `None` removes the key.
    staged: Vec<(Key, Option<CachedRow>)>,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache")
            .field("rows", &self.rows.len())
            .field("bytes", &self.bytes)
            .field("staged", &self.staged.len())
            .finish()
    }
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache {
            rows: LruCache::with_hasher(RECORD_CACHE_ROWS_MAX, Default::default()),
            bytes: 0,
            staged: Vec::new(),
        }
    }
}

impl RecordCache {
    /// The committed row of a record, if cached (it becomes the most recently used).
    pub fn get(&mut self, coll: i64, id: RecordId) -> Option<&CachedRow> {
        self.rows.get(&(coll, id))
    }

    /// Note a row the open transaction wrote: applied at commit.
    pub fn stage(&mut self, coll: i64, id: RecordId, row: CachedRow) {
        self.staged.push(((coll, id), Some(row)));
    }

    /// Forget a record now (its row changed in a way the cache does not follow), and again
    /// at commit, after any change staged for it earlier in the transaction.
    pub fn forget(&mut self, coll: i64, id: RecordId) {
        self.remove(&(coll, id));
        self.staged.push(((coll, id), None));
    }

    /// The transaction committed: its rows are the file's now.
    pub fn commit_staged(&mut self) {
        for (key, row) in std::mem::take(&mut self.staged) {
            self.remove(&key);
            if let Some(row) = row {
                self.insert(key, row);
            }
        }
    }

    /// Drop what a transaction staged without committing it (a new one starts).
    pub fn discard_staged(&mut self) {
        self.staged.clear();
    }

    /// Forget everything (the file changed under us, or a transaction rolled back).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.staged.clear();
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.rows.remove(key) {
            self.bytes -= old.body.len();
        }
    }

    fn insert(&mut self, key: Key, row: CachedRow) {
        if row.body.len() > RECORD_CACHE_BYTES_MAX / 8 {
            return;
        }
        self.bytes += row.body.len();
        // A full map drops its least recently used row by itself; the byte bound is kept
        // here.
        if self.rows.len() == self.rows.capacity() {
            if let Some((_, old)) = self.rows.remove_lru() {
                self.bytes -= old.body.len();
            }
        }
        self.rows.insert(key, row);
        while self.bytes > RECORD_CACHE_BYTES_MAX {
            match self.rows.remove_lru() {
                Some((_, old)) => self.bytes -= old.body.len(),
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rev: u64, body_len: usize) -> CachedRow {
        CachedRow {
            rev,
            seq: rev,
            body: vec![7; body_len],
            hist: None,
        }
    }

    fn id(n: u8) -> RecordId {
        RecordId([n; 16])
    }

    #[test]
    fn staged_rows_appear_only_at_commit_and_in_order() {
        let mut c = RecordCache::default();
        c.stage(1, id(1), row(1, 10));
        assert!(c.get(1, id(1)).is_none(), "visible before the commit");
        c.stage(1, id(1), row(2, 10));
        c.forget(1, id(2));
        c.commit_staged();
        assert_eq!(
            c.get(1, id(1)).map(|r| r.rev),
            Some(2),
            "the later write wins"
        );
        c.stage(1, id(1), row(3, 10));
        c.forget(1, id(1));
        assert!(c.get(1, id(1)).is_none(), "forget acts at once");
        c.commit_staged();
        assert!(
            c.get(1, id(1)).is_none(),
            "forget also overrides what was staged before"
        );
    }

    #[test]
    fn clear_drops_rows_and_staged_changes() {
        let mut c = RecordCache::default();
        c.stage(1, id(1), row(1, 10));
        c.commit_staged();
        c.stage(1, id(2), row(1, 10));
        c.clear();
        c.commit_staged();
        assert!(c.get(1, id(1)).is_none() && c.get(1, id(2)).is_none());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn bounded_by_rows_and_by_bytes() {
        let mut c = RecordCache::default();
        for n in 0..(RECORD_CACHE_ROWS_MAX + 10) {
            c.stage(n as i64, id(0), row(1, 1));
        }
        c.commit_staged();
        assert_eq!(c.len(), RECORD_CACHE_ROWS_MAX);
        assert!(c.get(0, id(0)).is_none(), "the oldest rows went first");
        assert_eq!(c.bytes, RECORD_CACHE_ROWS_MAX);

        let mut c = RecordCache::default();
        let big = RECORD_CACHE_BYTES_MAX / 8;
        for n in 0..20 {
            c.stage(n, id(0), row(1, big));
        }
        c.stage(99, id(0), row(1, big + 1));
        c.commit_staged();
        assert!(c.bytes <= RECORD_CACHE_BYTES_MAX);
        assert_eq!(c.len(), 8);
        assert!(
            c.get(99, id(0)).is_none(),
            "a body over the per-row bound is not cached"
        );
        assert!(c.get(19, id(0)).is_some());
    }
}
