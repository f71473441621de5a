//! Merge: the state of one record as a set of versioned cells, and the rules that combine
//! cells from any number of replicas into the same state whatever the delivery order.
//!
//! A record is a sorted list of [`Cell`]s. Every cell has a key, a value and a
//! [`Version`](crate::Version) `(hlc, node)`; two cells with the same key merge by
//! last-writer-wins under that total order (equal or older incoming versions are no-ops, so
//! apply is idempotent).
//!
//! | key                    | value                   | meaning                               |
//! |------------------------|-------------------------|---------------------------------------|
//! | `Record`               | `Present` / `Absent`    | insert / delete of the whole record   |
//! | `Field(f)`             | `Value(v)` / `Absent`   | plain field write / field removal     |
//! | `Counter(f, node)`     | `Count(n)`              | `node`'s contribution to counter `f`  |
//! | `Element(f, bytes)`    | `Present` / `Absent`    | set `f` contains / lacks an element   |
//!
//! Resets, which make the state a join of independent LWW registers filtered by the newest
//! reset (so the merge stays commutative, associative and idempotent):
//! - the `Record` cell's version is the record's reset point: cells older than it are dropped.
//!   An insert writes `Record = Present` (so an insert replaces the whole record), a delete
//!   writes `Record = Absent` (a tombstone). A field write that is newer than a concurrent
//!   delete survives it: the record comes back holding only the fields written after the
//!   delete. A field write older than the delete is discarded.
//! - a `Field(f)` cell's version is field `f`'s reset point: counter contributions and set
//!   elements of `f` older than it are dropped. Its value is the base: a counter reads as
//!   base (if an int) + contributions, a set as base (if a list) + present elements − absent
//!   elements.
//!
//! A record is live when its `Record` cell is `Present` or any other cell exists (every other
//! cell is newer than the reset point by construction).

mod cell;
pub mod encoding;
mod record;

pub use cell::{Cell, CellKey, CellValue, FieldName, Seen};
pub use record::{MergeOutcome, Overwritten, RecordState};
