//! Client-side garbage collection: the one place the soak calls [`Database::gc`], the way an
//! application that owns a replica would run it on a timer (the relay runs its own, see
//! `blazedb serve --gc-interval`).

use anyhow::Result;
use blazedb::{Database, GcOptions};

/// Run one GC on `db` with the default options (peers heard from within 30 days hold it
/// back) and the handle's own history retention. Returns how many rows it removed:
/// tombstones, history rows, feed rows and feed links.
pub fn collect(db: &Database) -> Result<u64> {
    let r = db.gc(&GcOptions::default())?;
    Ok(r.tombstones_purged + r.history_rows_removed + r.feed_rows_pruned + r.links_pruned)
}
