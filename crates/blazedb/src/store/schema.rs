//! The SQLite schema, its format version and the migration path.
//!
//! | table           | one row per                | purpose                                   |
//! |-----------------|----------------------------|-------------------------------------------|
//! | `meta`          | setting                    | magic, format version, node id            |
//! | `clock`         | (one row; format 1–5)      | last feed seq and HLC; in `peers` since format 6 |
//! | `nodes`         | node ever seen             | node id ↔ small local number              |
//! | `fields`        | field name ever used       | field name ↔ small local number           |
//! | `collections`   | collection                 | name ↔ small local number                 |
//! | `records`       | record (live or tombstone) | cells with versions (see `body.rs`)       |
//! | `feed`          | (seq, record) with cells at that seq | the change feed; `src` = peer it came from |
//! | `feed_links`    | partly overwritten commit  | `s` must be delivered together with `t`   |
//! | `indexes`       | declared secondary index   |                                           |
//! | `index_entries` | (index, value, record)     | order-preserving keys (`codec::keys`)     |
//! | `history`       | cell change                | audit trail and time travel; compacted; `prev` chains a record's entries from `records.hist` (format 4); `old_seq` (format 5); the replaced cell's own prev, `old_prev_age`/`_node` (format 9); its `seen` list, `old_seen` (format 11) |
//! | `conflicts`     | concurrent overwrite       | losers kept for the application; by record (format 8) |
//! | `policies`      | collection with a policy   | conflict handling (see `CollectionPolicy`) |
//! | `peers`         | peer and direction         | sync cursors; the row (X'', 'clock') holds the local clock (format 6) |
//! | `snapshot_progress` | peer sending a snapshot | the snapshot being received (format 2); `acked` at its start (format 7) |
//! | `snapshot_staging`  | received snapshot chunk | raw chunks until the snapshot is applied  |
//! | `unit_staging`  | part of a received unit    | a large unit until its last frame (format 3); by receiving session (format 10) |

use rusqlite::Connection;

/// Written in `meta` so that a foreign SQLite file is told apart from ours.
pub const MAGIC: &str = "blazedb";
/// The format this build writes. Bump it and add a step to [`MIGRATIONS`] to change the schema.
pub const FORMAT_VERSION: u32 = 11;

/// The format version a file says it has (its `meta` row), on `conn` as it reads now.
pub(crate) fn read_format(conn: &rusqlite::Connection) -> rusqlite::Result<u32> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'format_version'")?
        .query_row([], |r| r.get(0))
}

/// `MIGRATIONS[i]` upgrades a file from format `i + 1` to `i + 2`. Each runs in the same
/// transaction as the version bump, so a crash mid-migration leaves the old format intact.
pub const MIGRATIONS: &[&str] = &[
    SNAPSHOT_TABLES,
    UNIT_STAGING,
    HISTORY_CHAINS,
    HISTORY_OLD_SEQ,
    CLOCK_IN_PEERS,
    SNAPSHOT_ACKED,
    CONFLICTS_BY_RECORD,
    HISTORY_OLD_PREV,
    UNIT_STAGING_BY_SESSION,
    RESET_SEEN,
];

/// Format 2: staging for snapshots received from peers (`store/snapshot.rs`). A chunk is
/// kept until the whole snapshot is applied, so a disconnect or a restart resumes instead of
/// starting over.
const SNAPSHOT_TABLES: &str = "
CREATE TABLE snapshot_progress (
    peer BLOB PRIMARY KEY,
    snap_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    next_index INTEGER NOT NULL,
    last_coll TEXT,
    last_id BLOB
) WITHOUT ROWID;
CREATE TABLE snapshot_staging (
    peer BLOB NOT NULL,
    snap_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (peer, idx)
);
";

/// Format 3: a unit of linked transactions too large to hold in memory is staged here, part
/// by part, while it arrives, and applied in one transaction with its last frame
/// (`store/unit.rs`). Rows of a unit that never completed are discarded when the next one
/// starts.
const UNIT_STAGING: &str = "
CREATE TABLE unit_staging (
    peer BLOB NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (peer, idx)
) WITHOUT ROWID;
";

/// Format 4: a record's history entries are found through a chain instead of an index:
/// `records.hist` is the newest entry's `hid`, each entry's `prev` the one before it (of the
/// same record). The `history_by_record` index it replaces put one random page write per
/// changed record into every commit (a 100-record update transaction wrote ~100 index pages);
/// measured 2026-12-03: one-field updates in 100-record transactions went from 33k to 53–56k
/// per second without it. History is appended in `hid` order, compaction deletes the oldest
/// `hid`s, so a chain stays whole down to the retention horizon.
const HISTORY_CHAINS: &str = "
ALTER TABLE history ADD COLUMN prev INTEGER;
ALTER TABLE records ADD COLUMN hist INTEGER;
UPDATE history SET prev = (SELECT max(h.hid) FROM history h
    WHERE h.coll = history.coll AND h.id = history.id AND h.hid < history.hid);
UPDATE records SET hist = (SELECT max(h.hid) FROM history h
    WHERE h.coll = records.coll AND h.id = records.id);
DROP INDEX history_by_record;
";

/// Format 5: a history entry also keeps the local seq of the cell it replaced (`old_seq`),
/// so that a record's past states can be rebuilt seq by seq (`store/history.rs`,
/// `Inner::past_visibility`): a cell created after a seq and overwritten later must not
/// appear in the state at that seq. The sender uses it to send a delete only to peers that
/// may hold the record. Entries written before format 5 have no `old_seq`: their record's
/// past counts as unknown (the delete is sent, as before).
const HISTORY_OLD_SEQ: &str = "
ALTER TABLE history ADD COLUMN old_seq INTEGER;
";

/// Format 6: the local clock (last seq, HLC) moves from its own one-row table into `peers`, as
/// the row `(node = X'', direction = 'clock', cursor = seq, last_contact_ms = hlc)`. Every
/// commit writes the clock, and a received batch writes its peer's cursor in the same commit;
/// in one table, and with the empty node first in key order, both rows sit on the same leaf
/// while there are few peers, so such a commit writes one page (one WAL frame, one page
/// encryption) less. Measured 2026-12-03: a one-change apply wrote 6 pages, now 5.
const CLOCK_IN_PEERS: &str = "
INSERT INTO peers (node, direction, cursor, last_contact_ms)
    SELECT X'', 'clock', seq, hlc FROM clock WHERE id = 0;
DROP TABLE clock;
";

/// Format 7: a snapshot being received remembers how far the sender had acknowledged our feed
/// when it began (`acked`). Every cell at or below it was in the sender's hands before the
/// snapshot's first page was read, so a cell the snapshot lacks there was let go by the
/// sender (deleted, collected) rather than not yet received (`store/snapshot.rs`). A
/// snapshot staged by an older build has none: it counts as 0 (nothing seen, nothing let go).
const SNAPSHOT_ACKED: &str = "
ALTER TABLE snapshot_progress ADD COLUMN acked INTEGER;
";

/// Format 8: conflicts by record. Applying a partial replica's unit looks up whether each
/// write of it that lost without being applied is listed already (a unit may arrive twice),
/// and without this index every such lookup read the whole table.
const CONFLICTS_BY_RECORD: &str = "
CREATE INDEX conflicts_by_record ON conflicts (coll, id);
";

/// Format 9: a history entry also keeps the `prev` of the cell it replaced (the version that
/// cell's writer had seen), so that a record rebuilt as it was at an earlier position
/// (`Inner::state_at`: a record moving into a partial replica's view, a restatement) carries
/// every cell exactly as it was, and the receiver classifies a later write of that cell the
/// way the source does. Kept small, as every change writes an entry: `old_prev_age` is
/// `old_hlc` minus the prev's HLC (a few bytes, not eight), `old_prev_node` is NULL when the
/// prev's writer is `old_node`; no prev, both NULL. Entries written before format 9 have
/// none: their cells are rebuilt with `prev` absent, as before (a receiver may then list a
/// spurious conflict).
const HISTORY_OLD_PREV: &str = "
ALTER TABLE history ADD COLUMN old_prev_age INTEGER;
ALTER TABLE history ADD COLUMN old_prev_node INTEGER;
";

/// Format 10: staged unit parts belong to the receiving session that staged them
/// (`session`, random per session), not only to the peer. Two sessions with the same peer —
/// two processes on one file syncing with one relay, a relay with two connections from one
/// node — otherwise replaced each other's parts, and the one that finished applied the
/// other's parts with its own tail and stored its cursor at the unit's end: transactions in
/// between were lost. `staged_ms` lets a session discard parts abandoned by a session that
/// is gone. The table only holds units in flight, which are sent again after a reconnect:
/// it is recreated empty.
const UNIT_STAGING_BY_SESSION: &str = "
DROP TABLE unit_staging;
CREATE TABLE unit_staging (
    peer BLOB NOT NULL,
    session INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    staged_ms INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (peer, session, idx)
) WITHOUT ROWID;
";

/// Format 11: reset cells (a record's insert or delete, a plain write over a counter or set)
/// carry `seen`, the newest version their writer held per writer node (`crdt::Seen`), so
/// that a cell a reset drops is a conflict when its writer's node is missing from the list,
/// not only when it is newer than the reset's `prev`. Record bodies keep it under cell flag
/// 0x80 (`body.rs`), which builds before this one refuse: the format number keeps them from
/// opening the file instead of failing on its first such record. A history entry keeps the
/// list of the cell it replaced in `old_seen` (NULL: none), so a record rebuilt at an
/// earlier position carries it. Files of earlier formats have no lists anywhere and need no
/// rewrite: their resets are judged by `prev` alone, as before.
const RESET_SEEN: &str = "
ALTER TABLE history ADD COLUMN old_seen BLOB;
";

/// The format-1 schema; `create` adds the tables of every migration on top of it.
pub const CREATE: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL, hlc INTEGER NOT NULL);
INSERT INTO clock (id, seq, hlc) VALUES (0, 0, 0);
CREATE TABLE nodes (idx INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE);
CREATE TABLE fields (idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE collections (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE records (
    coll INTEGER NOT NULL,
    id BLOB NOT NULL,
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    live INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (coll, id)
) WITHOUT ROWID;
CREATE TABLE feed (
    seq INTEGER NOT NULL,
    coll INTEGER NOT NULL,
    id BLOB NOT NULL,
    src INTEGER NOT NULL,
    PRIMARY KEY (seq, coll, id)
) WITHOUT ROWID;
CREATE TABLE feed_links (s INTEGER PRIMARY KEY, t INTEGER NOT NULL);
CREATE TABLE indexes (coll INTEGER NOT NULL, field TEXT NOT NULL, PRIMARY KEY (coll, field))
    WITHOUT ROWID;
CREATE TABLE index_entries (
    coll INTEGER NOT NULL,
    field TEXT NOT NULL,
    key BLOB NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (coll, field, key, id)
) WITHOUT ROWID;
CREATE TABLE history (
    hid INTEGER PRIMARY KEY,
    coll INTEGER NOT NULL,
    id BLOB NOT NULL,
    cell TEXT NOT NULL,
    old BLOB,
    old_hlc INTEGER,
    old_node INTEGER,
    new BLOB,
    hlc INTEGER NOT NULL,
    node INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX history_by_record ON history (coll, id, hid);
CREATE TABLE conflicts (
    cid INTEGER PRIMARY KEY AUTOINCREMENT,
    coll INTEGER NOT NULL,
    id BLOB NOT NULL,
    cell TEXT NOT NULL,
    winner BLOB,
    winner_hlc INTEGER NOT NULL,
    winner_node INTEGER NOT NULL,
    loser BLOB,
    loser_hlc INTEGER NOT NULL,
    loser_node INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX conflicts_open ON conflicts (resolved, coll);
CREATE TABLE policies (
    coll INTEGER PRIMARY KEY,
    manual_fields TEXT NOT NULL,
    auto_resolve INTEGER NOT NULL,
    server_priority INTEGER NOT NULL
);
CREATE TABLE peers (
    node BLOB NOT NULL,
    direction TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    last_contact_ms INTEGER NOT NULL,
    PRIMARY KEY (node, direction)
) WITHOUT ROWID;
";

/// Create the schema in an empty database.
pub fn create(conn: &Connection, node: &[u8; 16], now_ms: u64) -> rusqlite::Result<()> {
    conn.execute_batch(CREATE)?;
    // A new file gets every table the migrations add, so CREATE stays the format-1 schema
    // and both paths end with the same tables.
    for step in MIGRATIONS {
        conn.execute_batch(step)?;
    }
    let mut put = conn.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
    put.execute(rusqlite::params!["magic", MAGIC])?;
    put.execute(rusqlite::params!["format_version", FORMAT_VERSION])?;
    put.execute(rusqlite::params!["node_id", &node[..]])?;
    put.execute(rusqlite::params!["created_ms", now_ms as i64])?;
    put.execute(rusqlite::params!["history_horizon_ms", 0i64])?;
    Ok(())
}
