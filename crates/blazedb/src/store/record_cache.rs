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
//! Beside a row's bytes it keeps the record decoded, as the transaction that wrote it left
//! it: a load takes that state out ([`RecordCache::checkout`]) instead of decoding the bytes,
//! and the next commit of the record puts its new state back. Decoding was ~6% of a
//! subscriber's CPU in the encrypted fan-out benchmark, and dropping the states at commit
//! another ~3% (perf, 2026-12-05). A state taken out and not given back (the record was only
//! read) leaves the bytes, which the next load decodes.
//!
//! Bounded by [`RECORD_CACHE_ROWS_MAX`] rows and [`RECORD_CACHE_BYTES_MAX`] bytes (bodies,
//! and decoded states by an estimate of their size), least recently used out first.

use hashlink::LruCache;

use crate::crdt::RecordState;
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

/// A cached row, and the record decoded from it while no transaction has taken it.
#[derive(Debug)]
struct Entry {
    row: CachedRow,
    state: Option<RecordState>,
}

impl Entry {
    /// What the entry counts against [`RECORD_CACHE_BYTES_MAX`].
    fn bytes(&self) -> usize {
        self.row.body.len() + self.state.as_ref().map_or(0, |s| state_bytes(s, &self.row))
    }
}

/// An estimate of a decoded state's memory: its cells, plus what their keys and values hold
/// on the heap, taken to be about the size of the encoded body.
fn state_bytes(state: &RecordState, row: &CachedRow) -> usize {
    std::mem::size_of_val(state.cells()) + row.body.len()
}

/// See the module documentation.
pub(crate) struct RecordCache {
    /// Hashed with foldhash, as `FastMap` is, not SipHash: `get` and `remove` took 244
    /// samples of a whole encrypted fan-out run with SipHash, 184 with foldhash (perf,
    /// 2026-12-05; the rest is the LRU list and memory access).
    rows: LruCache<Key, Entry, foldhash::fast::RandomState>,
    /// What `rows` counts against the byte bound (see [`Entry::bytes`]).
    bytes: usize,
    /// Changes of the open transaction, oldest first: `None` removes the key.
    staged: Vec<(Key, Option<Entry>)>,
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
    /// The committed row of a record, if cached (it becomes the most recently used), and its
    /// decoded state if the cache still holds it: the state is taken out (the transaction
    /// changes it, and its commit stages the new one).
    pub fn checkout(
        &mut self,
        coll: i64,
        id: RecordId,
    ) -> Option<(&CachedRow, Option<RecordState>)> {
        let entry = self.rows.get_mut(&(coll, id))?;
        let state = entry.state.take();
        if let Some(s) = &state {
            self.bytes -= state_bytes(s, &entry.row);
        }
        Some((&entry.row, state))
    }

    /// Note a row the open transaction wrote, and the record as it encoded it (if kept):
    /// applied at commit.
    pub fn stage(&mut self, coll: i64, id: RecordId, row: CachedRow, state: Option<RecordState>) {
        self.staged.push(((coll, id), Some(Entry { row, state })));
    }

    /// Forget a record now (its row changed in a way the cache does not follow), and again
    /// at commit, after any change staged for it earlier in the transaction.
    pub fn forget(&mut self, coll: i64, id: RecordId) {
        self.remove(&(coll, id));
        self.staged.push(((coll, id), None));
    }

    /// The transaction committed: its rows are the file's now.
    pub fn commit_staged(&mut self) {
        for (key, entry) in std::mem::take(&mut self.staged) {
            self.remove(&key);
            if let Some(entry) = entry {
                self.insert(key, entry);
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
            self.bytes -= old.bytes();
        }
    }

    fn insert(&mut self, key: Key, mut entry: Entry) {
        if entry.row.body.len() > RECORD_CACHE_BYTES_MAX / 8 {
            return;
        }
        if entry.bytes() > RECORD_CACHE_BYTES_MAX / 8 {
            entry.state = None;
        }
        self.bytes += entry.bytes();
        // A full map drops its least recently used row by itself; the byte bound is kept
        // here.
        if self.rows.len() == self.rows.capacity() {
            if let Some((_, old)) = self.rows.remove_lru() {
                self.bytes -= old.bytes();
            }
        }
        self.rows.insert(key, entry);
        while self.bytes > RECORD_CACHE_BYTES_MAX {
            match self.rows.remove_lru() {
                Some((_, old)) => self.bytes -= old.bytes(),
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

    fn get(c: &mut RecordCache, coll: i64, id: RecordId) -> Option<CachedRow> {
        c.checkout(coll, id).map(|(row, _)| row.clone())
    }

    #[test]
    fn staged_rows_appear_only_at_commit_and_in_order() {
        let mut c = RecordCache::default();
        c.stage(1, id(1), row(1, 10), None);
        assert!(get(&mut c, 1, id(1)).is_none(), "visible before the commit");
        c.stage(1, id(1), row(2, 10), None);
        c.forget(1, id(2));
        c.commit_staged();
        assert_eq!(
            get(&mut c, 1, id(1)).map(|r| r.rev),
            Some(2),
            "the later write wins"
        );
        c.stage(1, id(1), row(3, 10), None);
        c.forget(1, id(1));
        assert!(get(&mut c, 1, id(1)).is_none(), "forget acts at once");
        c.commit_staged();
        assert!(
            get(&mut c, 1, id(1)).is_none(),
            "forget also overrides what was staged before"
        );
    }

    #[test]
    fn a_checkout_takes_the_decoded_state_and_its_bytes() {
        let mut c = RecordCache::default();
        c.stage(1, id(1), row(1, 10), Some(RecordState::default()));
        c.commit_staged();
        // The body, and the state's estimate (no cells: about the body again).
        assert_eq!(c.bytes, 20);
        let (r, state) = c.checkout(1, id(1)).unwrap();
        assert_eq!(r.rev, 1);
        assert_eq!(state, Some(RecordState::default()));
        assert_eq!(c.bytes, 10, "the state's bytes left with it");
        let (_, state) = c.checkout(1, id(1)).unwrap();
        assert!(state.is_none(), "a state is handed out once");
        // A commit puts a state back; a later write replaces the entry and its bytes.
        c.stage(1, id(1), row(2, 30), Some(RecordState::default()));
        c.commit_staged();
        assert_eq!(c.bytes, 60);
        assert!(c.checkout(1, id(1)).unwrap().1.is_some());

        // An entry whose state would take it past the per-entry bound keeps only its row.
        let mut c = RecordCache::default();
        let body = RECORD_CACHE_BYTES_MAX / 8 - 1;
        c.stage(2, id(2), row(1, body), Some(RecordState::default()));
        c.commit_staged();
        assert_eq!(c.bytes, body);
        assert!(c.checkout(2, id(2)).unwrap().1.is_none());
    }

    #[test]
    fn clear_drops_rows_and_staged_changes() {
        let mut c = RecordCache::default();
        c.stage(1, id(1), row(1, 10), None);
        c.commit_staged();
        c.stage(1, id(2), row(1, 10), None);
        c.clear();
        c.commit_staged();
        assert!(get(&mut c, 1, id(1)).is_none() && get(&mut c, 1, id(2)).is_none());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn bounded_by_rows_and_by_bytes() {
        let mut c = RecordCache::default();
        for n in 0..(RECORD_CACHE_ROWS_MAX + 10) {
            c.stage(n as i64, id(0), row(1, 1), None);
        }
        c.commit_staged();
        assert_eq!(c.len(), RECORD_CACHE_ROWS_MAX);
        assert!(
            get(&mut c, 0, id(0)).is_none(),
            "the oldest rows went first"
        );
        assert_eq!(c.bytes, RECORD_CACHE_ROWS_MAX);

        let mut c = RecordCache::default();
        let big = RECORD_CACHE_BYTES_MAX / 8;
        for n in 0..20 {
            c.stage(n, id(0), row(1, big), None);
        }
        c.stage(99, id(0), row(1, big + 1), None);
        c.commit_staged();
        assert!(c.bytes <= RECORD_CACHE_BYTES_MAX);
        assert_eq!(c.len(), 8);
        assert!(
            get(&mut c, 99, id(0)).is_none(),
            "a body over the per-row bound is not cached"
        );
        assert!(get(&mut c, 19, id(0)).is_some());
    }
}
