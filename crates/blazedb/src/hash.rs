//! The hash map of the hot paths.
//!
//! std's `HashMap` hashes with SipHash-1-3: on a one-field update, the dictionary, collection
//! and sync-message lookups spent more instructions hashing than looking up. foldhash is
//! several times faster and still seeded per process, so keys a peer chooses (field names,
//! node ids) cannot be picked to collide.

/// A `HashMap` with foldhash's seeded fast hasher; make one with `FastMap::default()`.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
