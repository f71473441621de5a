//! Every limit of the database and of the protocol, named in one place.
//!
//! Exceeding a limit is always a clear error (`LimitError` / `DecodeError`), never a panic, a
//! silent truncation or an unbounded allocation.

/// Longest collection name, in bytes of UTF-8.
pub const COLLECTION_NAME_BYTES_MAX: usize = 128;
/// Longest field name, in bytes of UTF-8.
pub const FIELD_NAME_BYTES_MAX: usize = 255;
/// Most top-level fields one record may have.
pub const RECORD_FIELDS_MAX: usize = 1024;
/// Largest encoded record (values plus per-field versions).
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest single encoded value (a text, a bytes value, a whole list or map).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Deepest nesting of lists and maps inside one value.
pub const VALUE_DEPTH_MAX: usize = 32;
/// Most elements one set field may hold.
pub const SET_ELEMENTS_MAX: usize = 10_000;
/// Most cells one transaction may change. A transaction travels to peers as one unit, so
/// this is also the protocol's transaction size limit: a receiver stages at most this many
/// cells before applying a unit.
pub const TRANSACTION_CELLS_MAX: usize = 1_000_000;
/// Most writes in one transaction.
pub const TRANSACTION_WRITES_MAX: usize = 100_000;
/// Longest query expression, in bytes.
pub const EXPRESSION_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of a query expression.
pub const EXPRESSION_DEPTH_MAX: usize = 64;
/// Most collections one database may hold.
pub const COLLECTIONS_MAX: usize = 10_000;
/// Most cells one `changes_since` call returns when the caller asks for more.
pub const FEED_PAGE_CELLS_MAX: usize = 100_000;
/// Default capacity of a watch subscription's buffer, in events.
pub const WATCH_BUFFER_EVENTS_DEFAULT: usize = 1024;
/// Largest capacity a watch subscription may ask for.
pub const WATCH_BUFFER_EVENTS_MAX: usize = 1_000_000;
/// How far ahead of our own clock a remote timestamp may be before it is refused, in ms.
pub const CLOCK_SKEW_MS_MAX_DEFAULT: u64 = 60_000;
/// Records per transaction when the CLI imports JSON lines.
pub const IMPORT_BATCH_RECORDS: usize = 10_000;
