//! Every limit of the database and of the protocol, named in one place.
//!
//! Exceeding a limit is always a clear error (`LimitError` / `DecodeError`), never a panic, a
//! silent truncation or an unbounded allocation.

/// Longest collection name, in bytes of UTF-8.
pub const COLLECTION_NAME_BYTES_MAX: usize = 128;
/// Longest field name, in bytes of UTF-8.
pub const FIELD_NAME_BYTES_MAX: usize = 255;
/// Most characters of a caller's text (an invalid name, a record id, a sort key) an error
/// message repeats: beyond it, the message shows its start and its length in bytes
/// (`error::excerpt`), so that a name of a megabyte makes an error of a line, not of a
/// megabyte, in a log, an HTTP reply or a panic message.
pub const ERROR_ECHO_CHARS_MAX: usize = 64;
/// Free space below which a database's shared-memory file (`-shm`) that would not grow is
/// reported as a full disk (SQLite grows it 32 KiB at a time, at open too); with more room
/// left, the failure is reported as SQLite's own.
pub const DISK_NEARLY_FULL_BYTES: u64 = 1024 * 1024;
/// Most top-level fields one record may have.
pub const RECORD_FIELDS_MAX: usize = 1024;
/// Largest encoded record (values plus per-field versions).
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest single encoded value (a text, a bytes value, a whole list or map).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Deepest nesting of lists and maps inside one value.
pub const VALUE_DEPTH_MAX: usize = 32;
/// Most entries (writer nodes) in a reset cell's `seen` list (`crdt::Seen`). A list over it
/// keeps its newest entries: a node left out counts as unseen, so a bound costs at most a
/// spurious conflict, never a silent loss.
pub const SEEN_VERSIONS_MAX: usize = 256;
/// Most elements one set field may hold.
pub const SET_ELEMENTS_MAX: usize = 10_000;
/// Most cells one transaction may change. A transaction travels to peers as one commit
/// (group) of a unit, so this is also the protocol's limit on a commit's size, and on the
/// cells of an incoming unit a receiver holds in memory (past `UNIT_STAGE_CELLS` it stages
/// the unit's complete commits on disk, which do not count).
pub const TRANSACTION_CELLS_MAX: usize = 1_000_000;
/// A receiver holds at most about this many cells of an incoming unit of linked transactions
/// in memory; beyond it, the unit's complete transactions are staged on disk until its last
/// frame arrives (`store/unit.rs`), so units of any length apply whole.
pub const UNIT_STAGE_CELLS: usize = 50_000;
/// Most writes in one transaction.
pub const TRANSACTION_WRITES_MAX: usize = 100_000;
/// Most records [`Database::for_each`](crate::Database::for_each) reads under one lock before
/// handing them to its callback (which runs unlocked): the lock is taken once per page, not
/// per record, and the page stays small.
pub const FOR_EACH_PAGE_RECORDS: usize = 256;
/// Encoded bytes after which a page of [`Database::for_each`](crate::Database::for_each) ends
/// early (records may be up to [`RECORD_BYTES_MAX`]: a page bounds memory, not only count).
pub const FOR_EACH_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Longest query expression, in bytes.
pub const EXPRESSION_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of a query expression.
pub const EXPRESSION_DEPTH_MAX: usize = 64;
/// Most sort keys (`order_by`) one query may have. A sort reads every key of every record it
/// orders: with no bound, one `/v1/query` body of 64 KiB named ~16,000 keys and kept the
/// relay's store busy for about a minute.
pub const ORDER_BY_KEYS_MAX: usize = 8;
/// Most collections one database may hold.
pub const COLLECTIONS_MAX: usize = 10_000;
/// Most cells one `changes_since` call returns when the caller asks for more.
pub const FEED_PAGE_CELLS_MAX: usize = 100_000;
/// WAL pages after which a commit checkpoints the WAL itself (SQLite's `wal_autocheckpoint`;
/// 40 MB at 4 KiB pages). The sync drivers call `Database::checkpoint` off the commit path
/// well before this, so a commit pays for a checkpoint (and its fsync) only when nobody does;
/// the bound keeps the WAL from growing without limit then.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// Size the WAL file is truncated to after a checkpoint (SQLite's `journal_size_limit`):
/// above what `WAL_AUTOCHECKPOINT_PAGES` lets it reach, so a busy file's WAL keeps its
/// blocks and later commits overwrite them in place. (At 4 MiB, every checkpoint of a busy
/// file truncated it and the next commits grew it again, allocating and zeroing blocks:
/// measured 2026-12-03, one-field commits took 20-30% longer and a 100k-record bulk insert
/// 1.6x as long.) Still a bound, unlike SQLite's default of never truncating.
pub const WAL_FILE_BYTES_KEPT: i64 = 48 * 1024 * 1024;
/// How long `Database::integrity_check` of an encrypted file waits, at most, for a moment when
/// every committed page is in the main file, the only state in which SQLCipher's page check
/// of that file can be trusted (`store/maintenance.rs`, `settle_for_page_check`). Past it,
/// a reader in another connection has kept an older state of the file all along, and the
/// check fails as busy instead of guessing.
pub const PAGE_CHECK_SETTLE_WAIT_MS: u64 = 10_000;
/// Pause between two tries for that moment: the writer that was committing, or the
/// checkpoint another connection was running, has usually finished by then.
pub const PAGE_CHECK_SETTLE_RETRY_MS: u64 = 5;
/// How long that check, holding the write lock, waits for another connection's checkpoint to
/// finish before it lets the writers go on and tries again later. That checkpoint has at most
/// the WAL to copy (about `WAL_AUTOCHECKPOINT_PAGES`) and one fsync; the bound stays well
/// inside the writers' busy timeout (10 s), which they spend waiting meanwhile.
pub const PAGE_CHECK_CHECKPOINT_WAIT_MS: u64 = 1_000;
/// Times `Database::open` starts over when the path led to another file once the first read
/// was done: a `rekey` elsewhere renamed its re-encrypted copy over the file meanwhile
/// (`store/open.rs`). One rekey costs one attempt; more mean rekeys back to back.
pub const OPEN_ATTEMPTS_FILE_REPLACED_MAX: usize = 3;
/// How long `Database::open` waits, on a file of an older storage format, for the other
/// holders of its format lock to go before it refuses to migrate the file (`store/open.rs`,
/// `OpenError::UpgradeBlocked`). Another process opening the file at the same moment holds
/// the lock for two system calls at a time while it looks (and a racing migration, once it
/// has the lock exclusively, is waited for up to the open's 10 s); a handle that has the file
/// open holds it for as long as it lives. A second tells the two apart with a wide margin.
pub const OPEN_UPGRADE_WAIT_FOR_HANDLES_MS: u64 = 1_000;
/// How long `Database::open` waits for the format lock in all (a migration in another
/// process, which holds it exclusively: the audit of 2026-12-07 measured 80 ms for 53 MB),
/// as long as SQLite's busy timeout.
pub const OPEN_FORMAT_LOCK_WAIT_MS: u64 = 10_000;
/// Record rows a database handle keeps in memory after its own transactions wrote them
/// (`store/record_cache.rs`), so that the next write to a hot record skips reading its row
/// back from SQLite.
pub const RECORD_CACHE_ROWS_MAX: usize = 16_384;
/// Bytes that cache holds at most: bodies, and the decoded records kept beside them by an
/// estimate of their size (a 5-field record decoded takes ~1 KB, ~10× its body). A body
/// larger than an eighth of this is not cached, nor a decoded record that large. At 4 MiB it
/// would hold about 4,000 decoded records, fewer than the fan-out benchmark's 10,000 hot
/// ones: its writer's 300k commits took ~10% longer than with no decoded records at all.
pub const RECORD_CACHE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Default capacity of a watch subscription's buffer, in events.
pub const WATCH_BUFFER_EVENTS_DEFAULT: usize = 1024;
/// Largest capacity a watch subscription may ask for.
pub const WATCH_BUFFER_EVENTS_MAX: usize = 1_000_000;
/// How far ahead of our own clock a remote timestamp may be before it is refused, in ms.
pub const CLOCK_SKEW_MS_MAX_DEFAULT: u64 = 60_000;
/// Records per transaction when the CLI imports JSON lines.
pub const IMPORT_BATCH_RECORDS: usize = 10_000;

// ---- Formats ----

/// The storage format this build writes (`meta.format_version`): it opens files of every
/// earlier format, upgrading them in place once (one-way: builds of an earlier format refuse
/// them afterwards), and refuses files of a later one. Its history: `store/schema.rs`.
pub const FORMAT_VERSION: u32 = crate::store::FORMAT_VERSION;

// ---- Protocol ----

/// Protocol version spoken by this build (HELLO). Version 2 added selective sync (a policy in
/// SUBSCRIBE, EVICT) and snapshots (SNAPSHOT_BEGIN / CHUNK / END); version 3 added `acked` to
/// SUBSCRIBE (a peer restored from a backup gets its own lost writes back); version 4 added a
/// reset cell's `seen` list (cell flag 0x80, which a version-3 peer refuses as malformed).
pub const PROTOCOL_VERSION: u16 = 4;
/// Collections one sync policy may list.
pub const POLICY_COLLECTIONS_MAX: usize = 1024;
/// Fields one sync policy may exclude.
pub const POLICY_FIELDS_MAX: usize = 1024;
/// Longest sync filter expression.
pub const POLICY_FILTER_BYTES_MAX: usize = 16 * 1024;
/// Records per EVICT message.
pub const EVICT_RECORDS_MAX: usize = 65_536;
/// Cells per snapshot chunk the sender reads (a record is never split across pages; one
/// larger than `RECORD_BYTES_MAX` goes in several chunks: `sync::snapshot::page_chunks`).
pub const SNAPSHOT_CHUNK_CELLS: usize = 16_384;
/// The slowest snapshot or unit apply rate a peer allows for (cells per ms; measured ~500):
/// after SNAPSHOT_END both sides extend the idle timeout by `cells / this`, since the
/// receiver applies the whole snapshot in one transaction and says nothing meanwhile; a
/// sender extends it likewise by the cells of the units the receiver has not acknowledged.
pub const SNAPSHOT_APPLY_CELLS_PER_MS_MIN: u64 = 20;
/// At most this much extra idle time for a snapshot apply (ms).
pub const SNAPSHOT_APPLY_GRACE_MS_MAX: u64 = 30 * 60 * 1000;
/// Largest frame body (type, flags, payload) on the wire, compressed or not.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest payload after decompression.
pub const FRAME_DECOMPRESSED_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A sender starts a new frame once a CHANGES payload passes this size (at a record
/// boundary, or between two cells of a record larger than `RECORD_BYTES_MAX`, which only a
/// merge makes), so frames stay small enough to interleave pings and acks, and far below
/// `FRAME_BYTES_MAX`.
pub const FRAME_TARGET_BYTES: usize = 256 * 1024;
/// Payloads shorter than this are never compressed: LZ4 cannot win on them.
pub const COMPRESS_BYTES_MIN: usize = 128;
/// Cells per CHANGES batch read from the feed (default).
pub const BATCH_CELLS_DEFAULT: usize = 4096;
/// A sender whose reads keep leaving more of the feed behind (its peer fell behind) doubles
/// its page, up to this many batches: the peer catches up in fewer, larger units (one
/// receiving transaction each, and the feed only holds each cell's latest version, so a
/// larger range also carries fewer overwritten cells per change).
pub const LAGGING_PAGE_BATCHES_MAX: usize = 4;
/// Complete units a sender may have unacknowledged before it waits (per session).
pub const WINDOW_UNITS_DEFAULT: usize = 8;
/// Entries per session dictionary (node ids, collection names, field names), per direction.
pub const SESSION_DICT_ENTRIES_MAX: usize = 65_536;
/// Longest auth token in HELLO.
pub const TOKEN_BYTES_MAX: usize = 16 * 1024;
/// Largest HELLO frame body this version sends or accepts: type and flags (2), version (2),
/// node id (16), `last_seq` and `caps` (varints, at most 10 each), mode and server flag (2),
/// the token's length (a varint of at most 3 bytes for `TOKEN_BYTES_MAX`) and the token.
pub const HELLO_BODY_BYTES_MAX: usize = 2 + 2 + 16 + 10 + 2 + 10 + 3 + TOKEN_BYTES_MAX;
/// Largest body of a stream's first frame, which must be a HELLO (PROTOCOL.md §3): a longer
/// length prefix is refused with `TOO_LARGE` as soon as it is read, before anything is
/// buffered. The first frame arrives before any credential is checked, so without this bound
/// every unauthenticated connection could make its receiver hold a whole `FRAME_BYTES_MAX`
/// frame. Four times [`HELLO_BODY_BYTES_MAX`], leaving room for fields a later version may
/// add to HELLO.
pub const FIRST_FRAME_BYTES_MAX: usize = 64 * 1024;
const _: () = assert!(HELLO_BODY_BYTES_MAX <= FIRST_FRAME_BYTES_MAX);
/// Longest error message in an ERROR frame.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4096;
/// Frames a session may hold unsent for its peer when another frame of the peer arrives.
/// Replies (PONG, ACK, REJECT) pile up only while the peer sends without reading what it
/// is sent; past this many the session ends with `RATE_LIMITED` instead of keeping a reply
/// per frame in memory for good. Far above what a reading peer ever leaves queued (the
/// sender reads its feed only when the queue is empty).
pub const QUEUED_FRAMES_MAX: usize = 4096;
/// Send a PING after this long without sending anything.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// The shortest ping interval a session uses: a smaller `SessionConfig::ping_interval_ms`
/// (0 included) counts as this, so a misconfiguration cannot make it send PINGs in a tight
/// loop.
pub const PING_INTERVAL_MS_MIN: u64 = 100;
/// Close a session that received nothing for this long (a dead peer is detected within it).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 15_000;
/// Store cursors without a unit of their own at most this often: a session's received
/// cursor moved by CAUGHT_UP alone, and the acknowledged cursors every session of a handle
/// notes, stored together once the oldest has waited this long (`store/noted_cursors.rs`).
/// Both are advisory for where sync resumes: a crash repeats at most this much, idempotently.
pub const ACK_PERSIST_INTERVAL_MS: u64 = 1_000;
/// Peer notes a handle keeps in memory at once while its file takes no writes (the disk
/// full, the file deleted), over all peers (`store/noted_cursors.rs`): the bookkeeping a
/// serving session writes about its peer, which waits so that peers that only read are
/// still served. A note is a short text (an identity, a view's fingerprint), and each new
/// peer adds a few, so this bounds the memory to a few MB; past it, the session ends with
/// the write's error as it did before.
pub const PEER_NOTES_WAITING_MAX: usize = 10_000;
/// A session that applies a unit passes over the local positions the apply took (they hold
/// only the peer's own changes) without a CAUGHT_UP, unless its last CAUGHT_UP is older than
/// this: the peer's received cursor, which decides where a reconnect resumes and so the
/// acknowledged cursor (and GC horizon) a receive-only node gets back, then lags by at most
/// this long, while a stream of units costs at most one CAUGHT_UP a second, not one each.
pub const ECHO_CAUGHT_UP_INTERVAL_MS: u64 = 1_000;
/// A side that ends its session once caught up (`--once`) first announces the positions it
/// passed over, and waits at most this long for the peer's ACK of its last CAUGHT_UP
/// (`Session::ready_to_end`): that ACK is what moves its record of what the peer holds, and
/// so its GC horizon, to its head. A peer that does not answer in time (it was restarting a
/// snapshot, say) costs only that: the session ends anyway, as caught up, and the next one
/// settles it.
pub const END_ACK_WAIT_MS: u64 = 2_000;

/// How long `Database::last_seq` trusts its cached feed head before asking SQLite whether
/// another process committed, in µs. Other processes' commits reach sync sessions through
/// polling every `HEAD_POLL_INTERVAL_MS` (tokio layer) anyway; this handle's and this
/// process's other handles' commits are seen at once.
pub const HEAD_RECHECK_US: u64 = 1_000;

// ---- Garbage collection ----

/// A peer not heard from for this long (ms) no longer holds garbage collection back: GC
/// reports it as expired and, once it returns, it must be re-bootstrapped by snapshot
/// (30 days). A relay never expires (it takes no snapshot; see `store/gc.rs`).
pub const PEER_RETENTION_MS_DEFAULT: u64 = 30 * 24 * 3600 * 1000;

// ---- Snapshots ----

/// A snapshot page (one chunk) stops adding records once their stored bodies pass this many
/// bytes (a record is never split across pages), so a chunk stays well inside a frame. A
/// record larger than `RECORD_BYTES_MAX` (only a merge makes one) goes in chunks of about
/// this many bytes of cells each, to a peer that joins them (`caps::SPLIT_RECORDS`).
pub const SNAPSHOT_PAGE_BODY_BYTES_TARGET: usize = 2 * 1024 * 1024;
/// Records one snapshot page examines at most (selected or not), so that one read
/// transaction stays short even when the sender's selection skips most records.
pub const SNAPSHOT_PAGE_RECORDS_SCANNED_MAX: usize = 100_000;
/// Largest snapshot chunk, compressed, that a receiver stages or decodes.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest snapshot chunk after decompression: a chunk claiming more (a zstd bomb) is
/// refused before anything is allocated for it.
pub const SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Cells one snapshot chunk may hold when a receiver decodes it (a page holds at most
/// `FEED_PAGE_CELLS_MAX`, or one record alone).
pub const SNAPSHOT_CHUNK_CELLS_MAX: usize = TRANSACTION_CELLS_MAX;
/// Chunks one snapshot may have (staged by a receiver, or in a snapshot file).
pub const SNAPSHOT_CHUNKS_MAX: usize = 1_000_000;
/// zstd level of snapshot chunks: fast to write, several times smaller than the raw cells.
pub const SNAPSHOT_ZSTD_LEVEL: i32 = 3;
/// Recent change-feed reads a database keeps for the sessions that ask for the same range
/// (a relay's sessions woken by one commit): see `store::feed_cache`.
pub const FEED_CACHE_ENTRIES: usize = 8;
/// Largest feed read (in cells) kept in that cache; larger reads are not shared.
pub const FEED_CACHE_CELLS_MAX: usize = 32 * 1024;
