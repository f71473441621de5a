//! # BlazeDB
//!
//! An embedded, encrypted document database that keeps any number of copies in sync,
//! offline-first, with per-field conflict resolution and nothing silently lost.
//!
//! ```text
//!            application
//!                │  insert / update / query / watch
//!   ┌────────────▼────────────┐
//!   │ store (Database, Tx)     │── history (audit, time travel; compacted)
//!   │   crdt::RecordState      │── conflicts (losers of concurrent writes)
//!   │   SQLite / SQLCipher     │── feed (seq → changed cells) ──► sync (sans-IO)
//!   └──────────────────────────┘
//! ```
//!
//! - [`types`]: ids, hybrid logical clock, values.
//! - [`crdt`]: cells and the merge rules (last-writer-wins per cell, counters, sets,
//!   tombstones).
//! - [`store`]: the SQLite file, writes, reads, queries, history, indexes, change feed.
//! - [`query`]: the expression language shared by filters, rules and server-side queries.
//! - [`codec`]: byte encodings specified in docs/PROTOCOL.md.
//! - [`watch`]: subscriptions to committed changes.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use blazedb::{Database, OpenOptions, Patch, Query, Value};
//!
//! let db = Database::open(dir.path().join("app.db"), OpenOptions::default())?;
//! let id = db.insert("bugs", [("title", Value::from("Crash")), ("priority", 5.into())])?;
//! db.update("bugs", id, Patch::new().set("status", "open").increment("votes", 1))?;
//! let open = db.query("bugs", &Query::filter("status == \"open\" && priority >= 5")?)?;
//! assert_eq!(open.len(), 1);
//! assert_eq!(open[0].fields["votes"], Value::Int(1));
//! # Ok::<(), blazedb::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod crdt;
pub mod error;
mod hash;
pub mod limits;
pub mod query;
pub mod store;
pub mod sync;
pub mod types;
pub mod watch;

pub use error::{ApplyError, Error, OpenError, Result, WriteError};
/// The checks every write makes of names and values, for callers that want to refuse input
/// before they open (or create) a database.
pub use store::{validate_collection_name, validate_field_name, validate_value};
pub use store::{
    Change, ChangeBatch, Checkpoint, CollectionPolicy, Conflict, Database, FieldOp, HistoryEntry,
    HistoryRetention, OpenOptions, OrderBy, PastVisibility, Patch, PeerDirection, PeerInfo, Query,
    QueryStats, Record, Stats, Tx,
};
pub use store::{
    EvictGuard, EvictOutcome, FieldEviction, GcOptions, GcReport, RefusedBy, SyncMetadata,
};
pub use store::{StagedParts, StagingId};
pub use types::{Hlc, NodeId, RecordId, Seq, Timestamp, Value, Version};
pub use watch::{Event, EventKind, Watch, WatchItem};
