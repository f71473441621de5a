//! The embedded store: one SQLite (or SQLCipher) file per database.
//!
//! [`Database`] is `Send + Sync`; share it behind an `Arc`. All access goes through one
//! connection guarded by a mutex, so writes are serialized; other processes may open the
//! same file and SQLite serializes them too (the in-memory caches notice their commits
//! through `PRAGMA data_version`).

mod body;
mod cipher_key;
mod copied_file;
mod evict;
mod feed;
mod feed_cache;
mod file_pin;
mod gc;
mod history;
mod index;
mod maintenance;
mod nodes;
mod noted_cursors;
mod open;
mod read;
mod record_cache;
mod rekey;
mod schema;
mod snapshot;
mod unit;
mod upgrade_backup;
pub(crate) mod volume;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use zeroize::Zeroizing;

pub use evict::{EvictGuard, EvictOutcome, FieldEviction, RefusedBy};
pub use feed::{ApplyOutcome, Change, ChangeBatch, Conflict, PeerDirection, PeerInfo};
pub(crate) use feed::{NOTE_EVICTS, NOTE_EVICTS_UNAPPLIED};
pub use gc::{GcOptions, GcReport, SyncMetadata};
pub(crate) use gc::{PUSHES_ONLY_NOTE, SERVER_NOTE};
pub use history::{HistoryEntry, HistoryRetention, PastVisibility};
pub use maintenance::{Checkpoint, CollectionStats, IntegrityReport, Stats};
pub use open::PAGE_HMAC;
pub use read::{OrderBy, Query, QueryStats, Record};
pub use snapshot::{
    PeerHolds, SnapshotApplied, SnapshotKey, SnapshotPage, SnapshotProgress, SnapshotScope,
    SnapshotSelect,
};
pub use unit::{StagedParts, StagingId, UNIT_STAGING_ABANDONED_MS};
pub use write::{validate_field_name, validate_value, FieldOp, Patch, Tx};

use self::nodes::{FieldTable, NodeTable};
pub(crate) use self::schema::FORMAT_VERSION;
use crate::error::{OpenError, Result, WriteError};
use crate::hash::FastMap;
use crate::limits::{CLOCK_SKEW_MS_MAX_DEFAULT, COLLECTIONS_MAX, COLLECTION_NAME_BYTES_MAX};
use crate::types::{Clock, Hlc, Seq};
use crate::watch::Registry;
use crate::NodeId;

/// How a collection handles conflicts. The default records every concurrent overwrite as an
/// open conflict for the application to resolve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectionPolicy {
    /// Fields whose conflicts always stay open until the application resolves them.
    pub manual_fields: BTreeSet<String>,
    /// Conflicts on the other fields are recorded already resolved (last writer wins; the
    /// loser stays on record for audit, see `Database::conflicts_all`).
    pub auto_resolve: bool,
    /// On a server-role replica, a peer's concurrent write does not beat the server's own
    /// value: the server writes its value again (a new version, which syncs out), and the
    /// peer's value is kept as the conflict's loser.
    pub server_priority: bool,
}

/// A source of wall-clock milliseconds since the Unix epoch. Tests pass a fake one to skew
/// clocks; the default reads the system clock.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock in ms.
pub fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How to open a database.
#[derive(Clone)]
pub struct OpenOptions {
    /// Encrypt the file with SQLCipher under this password. `None`: a plain SQLite file. An
    /// empty password is refused (SQLCipher would read it as "no encryption"). The open
    /// moves it into a string that is wiped when the database closes.
    pub password: Option<String>,
    /// Create the file if it does not exist (default true).
    pub create: bool,
    /// Refuse remote timestamps further than this ahead of the local clock.
    pub clock_skew_ms_max: u64,
    /// How long history is kept.
    pub history: HistoryRetention,
    /// The wall clock (default: the system clock).
    pub wall_clock: WallClock,
    /// The node id a new file gets (default: random). For reproducible tests only: two
    /// replicas with the same node id corrupt each other's sync.
    pub danger_node_id: Option<NodeId>,
    /// Before upgrading a file of an older storage format, keep a copy of it as it is
    /// beside it (`<file>.format-N.backup`, see [`Database::upgrade_backup`]), the way back
    /// to builds of that format (default true). Off: the upgrade keeps no copy and needs no
    /// room for one, and cannot be undone.
    pub upgrade_backup: bool,
    /// Give a copy of another database file a node id of its own at this open (default
    /// true; see [`Database::copied_from`]). Off: a copy keeps the id it carries for this
    /// handle, and the file is not written; the next open with it on gives the copy its
    /// id. For handles that only read: a look at a backup (`blazedb stats`, `export`...)
    /// would otherwise make it a device of its own, so that restoring it in place later
    /// brought it back as a new device (a full resync). A handle that writes or syncs under
    /// the carried id beside the original loses writes of one of them: leave it on there.
    pub identify_copy: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            password: None,
            create: true,
            clock_skew_ms_max: CLOCK_SKEW_MS_MAX_DEFAULT,
            history: HistoryRetention::default(),
            wall_clock: Arc::new(system_ms),
            danger_node_id: None,
            upgrade_backup: true,
            identify_copy: true,
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("create", &self.create)
            .field("clock_skew_ms_max", &self.clock_skew_ms_max)
            .field("history", &self.history)
            .field("upgrade_backup", &self.upgrade_backup)
            .field("identify_copy", &self.identify_copy)
            .finish()
    }
}

impl OpenOptions {
    /// Options with a password (an encrypted file).
    pub fn with_password(password: impl Into<String>) -> OpenOptions {
        OpenOptions {
            password: Some(password.into()),
            ..OpenOptions::default()
        }
    }
}

/// An open database.
pub struct Database {
    path: PathBuf,
    node: NodeId,
    /// As opened, without the password (`password`).
    options: OpenOptions,
    /// The password (`None`: a plain file), kept for `rekey` to reopen the file should the
    /// rekey fail, and wiped when the handle closes.
    password: Option<Zeroizing<String>>,
    /// The derived key of an encrypted file, for the checkpointer's connection (see
    /// `cipher_key.rs`).
    key: Option<cipher_key::CipherKey>,
    inner: Mutex<Inner>,
    /// A second connection to the file that only runs [`Database::checkpoint`], opened on
    /// the first one. A checkpoint on `inner`'s connection held this handle's lock through
    /// its fsyncs, so every session applying to or reading from the file waited for the disk
    /// once a second (measured: 1,000 clients each checkpointing so had a 1.6–2× slower
    /// median). SQLite runs a PASSIVE checkpoint beside another connection's reads and
    /// writes.
    checkpointer: Mutex<Option<maintenance::Checkpointer>>,
    pub(crate) watchers: Registry,
    server_role: std::sync::atomic::AtomicBool,
    commit_listeners: Mutex<Vec<(u64, CommitListener)>>,
    /// Peer cursors noted by sessions, stored together (see `noted_cursors.rs`).
    noted_cursors: Mutex<noted_cursors::NotedCursors>,
    /// When the holder of `inner` took it ([`lock_clock_ns`]), 0 while it is free: lets an
    /// async caller see that the lock is taken by a long operation (a bulk apply, a
    /// snapshot, a rekey) and wait for it off its executor's thread
    /// ([`Database::lock_held_for`]).
    lock_taken_ns: AtomicU64,
    /// The holder of `inner` runs work of unknown length: an application's transaction
    /// (its closure is the application's code), an index build, a vacuum. Set just after
    /// the lock is taken, cleared with `lock_taken_ns` ([`Database::lock_held_long`]).
    lock_unbounded: AtomicBool,
    /// The [`thread_token`] of the thread holding `inner`, 0 while it is free: a call on
    /// this handle from code that already holds its lock (the application's `transaction`
    /// closure calling `db.get`) is refused with [`Error::Reentrant`](crate::Error::Reentrant) instead of waiting
    /// for itself forever (the mutex is not re-entrant).
    lock_owner: AtomicU64,
    /// The feed head after this handle's newest commit (see
    /// [`Database::last_seq_committed_here`]).
    committed_head: Arc<AtomicU64>,
    /// The storage format the file had before this handle's open upgraded it (see
    /// [`Database::upgraded_from`]).
    upgraded_from: Option<u32>,
    /// The copy kept before that upgrade ([`Database::upgrade_backup`]).
    upgrade_backup: Option<PathBuf>,
    /// The node id the file had before this handle's open found it to be a copy (see
    /// [`Database::copied_from`]).
    copied_from: Option<NodeId>,
    /// The file held open for this process while the handle lives (see `file_pin.rs`).
    /// Last, so that it is dropped after the handle's connections have closed.
    pin: Arc<file_pin::FilePin>,
}

/// Nanoseconds since this process first took a database lock, plus one (0 means "free").
fn lock_clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// A number naming the calling thread, never 0 and never reused (for `lock_owner`).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

impl Drop for Database {
    fn drop(&mut self) {
        // Best effort: a cursor not stored only makes the next session repeat a little.
        let _ = self.store_noted_cursors();
    }
}

/// Called after every commit that changed something (local or applied from a peer).
pub type CommitListener = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("node", &self.node)
            .finish()
    }
}

/// State behind the mutex.
pub(crate) struct Inner {
    pub conn: Connection,
    pub clock: Clock,
    pub nodes: NodeTable,
    pub fields: FieldTable,
    pub collections: FastMap<String, i64>,
    pub collection_names: FastMap<i64, String>,
    pub indexes: FastMap<i64, BTreeSet<String>>,
    pub policies: FastMap<i64, CollectionPolicy>,
    pub data_version: i64,
    /// Whether [`Database::lock`]'s read snapshot is open (ended by [`Inner::end_read`]).
    pub read_open: bool,
    pub history_rows_since_compaction: u64,
    /// Conflict rows this handle's writes inserted open (not resolved at once by the
    /// collection's policy), ever: a transaction's count is the difference across it (see
    /// `Database::transaction_bounded_summary`). Rolled-back inserts stay counted, so only a
    /// committed transaction's difference means anything.
    pub conflicts_opened: u64,
    /// Recent change-feed reads (see `feed_cache`).
    pub feed_cache: feed_cache::FeedCache,
    /// The feed head as last read outside a transaction, and the state it was read at.
    pub head_cache: Option<(feed_cache::FeedState, Seq)>,
    /// `meta.gc_horizon` as last read, and the state it was read at (see
    /// [`Database::changes_since_shared_and_horizon`]).
    pub gc_horizon_cache: Option<(feed_cache::FeedState, Seq)>,
    /// When `head_cache` was last checked against other connections' commits, and
    /// `file_commits` then (see [`Database::last_seq`]).
    pub head_checked: Option<(std::time::Instant, u64)>,
    /// Commits to this file by every handle in this process (see [`file_commits`]).
    pub file_commits: Arc<AtomicU64>,
    /// The feed head after this handle's newest commit, set before its commit listeners run
    /// (shared with [`Database`]).
    pub committed_head: Arc<AtomicU64>,
    /// Records' pasts rebuilt from history for delete filtering (see `history.rs`).
    pub past_cache: std::cell::RefCell<history::PastCache>,
    /// Committed record rows recently written by this handle's write transactions.
    pub record_cache: record_cache::RecordCache,
    /// Why this handle has no file any more (a password change that could not reopen it:
    /// see `rekey.rs`); then every read and write fails with it rather than with what the
    /// in-memory stand-in connection would say ("no such table").
    pub lost: Option<String>,
    /// The file the connection writes to (the handle's pin, see `file_pin.rs`): a commit
    /// to it once it has no name is refused ([`Inner::commit`]).
    pub file: Arc<file_pin::FilePin>,
}

impl Database {
    /// Open (or create) the database at `path`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use blazedb::{Database, OpenOptions, Value};
    /// let db = Database::open(dir.path().join("bugs.db"), OpenOptions::with_password("s3cret"))?;
    /// let id = db.insert("bugs", [("title", Value::from("crash on save")), ("priority", 5.into())])?;
    /// let bug = db.get("bugs", id)?.expect("just inserted");
    /// assert_eq!(bug.fields["priority"], Value::Int(5));
    /// # Ok::<(), blazedb::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, mut options: OpenOptions) -> Result<Database> {
        let path = path.as_ref().to_path_buf();
        // Moved, not copied, into a string that is wiped when the handle closes (or now, if
        // the open fails); the options the handle keeps hold no password.
        let password = options.password.take().map(Zeroizing::new);
        if password.as_ref().is_some_and(|p| p.is_empty()) {
            // SQLCipher reads an empty key as "no encryption".
            return Err(crate::Error::InvalidArgument(format!(
                "{}: the password is empty; pass None to open an unencrypted file",
                path.display()
            )));
        }
        let now = (options.wall_clock)();
        let opened = open::open(
            &path,
            password.as_ref().map(|p| p.as_str()),
            options.create,
            now,
            options.danger_node_id,
            options.upgrade_backup,
            options.identify_copy,
        )?;
        let p = path.display().to_string();
        let corrupt = |e: rusqlite::Error| OpenError::Corrupted {
            path: p.clone(),
            reason: e.to_string(),
        };
        let committed_head = Arc::new(AtomicU64::new(0));
        let mut inner = Inner {
            clock: Clock::new(Hlc::ZERO, options.clock_skew_ms_max),
            nodes: NodeTable::default(),
            fields: FieldTable::default(),
            collections: FastMap::default(),
            collection_names: FastMap::default(),
            indexes: FastMap::default(),
            policies: FastMap::default(),
            data_version: -1,
            read_open: false,
            history_rows_since_compaction: 0,
            conflicts_opened: 0,
            feed_cache: feed_cache::FeedCache::default(),
            head_cache: None,
            gc_horizon_cache: None,
            head_checked: None,
            file_commits: file_commits(&path),
            committed_head: committed_head.clone(),
            past_cache: Default::default(),
            record_cache: Default::default(),
            lost: None,
            file: opened.pin.clone(),
            conn: opened.conn,
        };
        inner.refresh().map_err(|e| match e {
            crate::Error::Sqlite(e) => crate::Error::Open(corrupt(e)),
            e => e,
        })?;
        Ok(Database {
            path,
            node: opened.node,
            options,
            password,
            key: opened.key,
            inner: Mutex::new(inner),
            checkpointer: Mutex::new(None),
            watchers: Registry::default(),
            server_role: std::sync::atomic::AtomicBool::new(false),
            commit_listeners: Mutex::new(Vec::new()),
            noted_cursors: Mutex::default(),
            lock_taken_ns: AtomicU64::new(0),
            lock_unbounded: AtomicBool::new(false),
            lock_owner: AtomicU64::new(0),
            committed_head,
            pin: opened.pin,
            upgraded_from: opened.upgraded_from,
            upgrade_backup: opened.upgrade_backup,
            copied_from: opened.copied_from,
        })
    }

    /// The feed head as of this handle's newest commit (`Seq(0)` before any): every feed
    /// position up to it was in the file when this handle's commit listeners last ran. A
    /// head past it was moved by another process (or another handle): what a `HeadWatch`
    /// (blazedb-net) must wake sessions for, since no listener of this handle did. Set before
    /// the listeners run; read without the lock.
    pub fn last_seq_committed_here(&self) -> Seq {
        Seq(self.committed_head.load(Ordering::Acquire))
    }

    /// Call `f` after every commit that changed something. Sync drivers use this to wake
    /// the sessions that have something to send, instead of polling. `f` runs on the
    /// committing thread: keep it short (e.g. wake a task). Returns a handle for
    /// [`Database::remove_commit_listener`].
    pub fn on_commit(&self, f: CommitListener) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.commit_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, f));
        id
    }

    /// Stop calling a listener.
    pub fn remove_commit_listener(&self, id: u64) {
        self.commit_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }

    pub(crate) fn notify_commit(&self) {
        let listeners: Vec<CommitListener> = self
            .commit_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        for f in listeners {
            f();
        }
    }

    /// Mark this database as a server (relay) replica: collections whose policy gives the
    /// server priority then keep the server's value when a peer's concurrent write would
    /// overwrite it.
    pub fn set_server_role(&self, server: bool) {
        self.server_role
            .store(server, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this database acts as a server (see [`Database::set_server_role`]).
    pub fn is_server(&self) -> bool {
        self.server_role.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The conflict policy of a collection (the default when none was set).
    pub fn policy(&self, collection: &str) -> Result<CollectionPolicy> {
        let inner = self.lock()?;
        Ok(inner
            .read_collection_id(collection)?
            .and_then(|c| inner.policies.get(&c).cloned())
            .unwrap_or_default())
    }

    /// Set the conflict policy of a collection. Policies are local settings: give every
    /// replica the same one (the relay's matters most, since it has the server role).
    pub fn set_policy(&self, collection: &str, policy: CollectionPolicy) -> Result<()> {
        validate_collection_name(collection)?;
        let mut inner = self.lock_write()?;
        let r = (|| -> Result<()> {
            let coll = inner.collection_id_or_create(collection)?;
            let manual: Vec<&str> = policy.manual_fields.iter().map(String::as_str).collect();
            inner.conn.execute(
                "INSERT OR REPLACE INTO policies (coll, manual_fields, auto_resolve, server_priority) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![coll, manual.join("\n"), policy.auto_resolve, policy.server_priority],
            )?;
            inner.commit()?;
            inner.policies.insert(coll, policy);
            Ok(())
        })();
        if r.is_err() {
            inner.rollback();
        }
        r
    }

    /// This replica's node id (generated when the file was created).
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The storage format the file had before this handle's open upgraded it to this
    /// build's ([`FORMAT_VERSION`](crate::limits::FORMAT_VERSION)), or `None` when the open
    /// upgraded nothing (the file was at this build's format, or new, or another process
    /// upgraded it meanwhile). The upgrade is one-way: builds that read only up to the old
    /// format refuse the file from then on. A program tells its user so once (the CLI on
    /// stderr, the relay in its log).
    pub fn upgraded_from(&self) -> Option<u32> {
        self.upgraded_from
    }

    /// Where the copy of the file as it was before [this handle's upgrade](Self::upgraded_from)
    /// is kept (`<file>.format-N.backup`, N the old format; `None` when this open upgraded
    /// nothing, or [`OpenOptions::upgrade_backup`] was off). It is the file byte for byte,
    /// under the same password: a build of format N opens it once it is renamed back to the
    /// file's name (with its `-wal` beside it when there is one), after the upgraded file
    /// and its `-wal` are moved away. Writes made since the upgrade are not in it. BlazeDB
    /// never deletes it: delete it once going back is no longer wanted.
    pub fn upgrade_backup(&self) -> Option<&Path> {
        self.upgrade_backup.as_deref()
    }

    /// The node id the file had until this handle's open found it to be a copy of another
    /// database file, and gave it a node id of its own ([`node_id`](Self::node_id)); `None`
    /// when the open found the file it had stamped (or could not write, see below).
    ///
    /// A file notes its inode and birth time. A copy (`cp` to a new name, a file moved to
    /// another machine or file system, a backup put back as a new file) has others, and
    /// syncing under the original's node id alongside it would lose writes of one of them.
    /// With an id of its own the copy is a new device: its peers receive its whole feed once,
    /// and send it every write of the old id it lacks. Renames within a file system, hard
    /// links and [`rekey`](Self::rekey) keep the id; a backup copied *over* the live file
    /// keeps it too (the same file, older: the protocol's restore rules cover it). An open
    /// that cannot write (read-only file or mount, full disk) keeps the id it found, and the
    /// next one that can write checks again. A program tells its user once (the CLI on
    /// stderr, the relay in its log).
    pub fn copied_from(&self) -> Option<NodeId> {
        self.copied_from
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file this handle has open was deleted (or another file renamed over it)
    /// since it was opened: it has no name in any directory left. Such a file still works,
    /// but only until the last handle on it closes, so every write to it is refused with
    /// [`Error::FileGone`](crate::Error::FileGone); reads go on. A long-running process
    /// (the relay's `/health`) asks this to report the loss before anyone writes. One
    /// `fstat` of a descriptor the handle holds; `false` on platforms where it cannot be
    /// told.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use blazedb::{Database, OpenOptions};
    /// let path = dir.path().join("app.db");
    /// let db = Database::open(&path, OpenOptions::default())?;
    /// db.insert("notes", [("n", 1)])?;
    /// std::fs::remove_file(&path)?;
    /// # #[cfg(unix)] {
    /// assert!(db.file_is_gone());
    /// assert!(matches!(db.insert("notes", [("n", 2)]), Err(blazedb::Error::FileGone { .. })));
    /// assert_eq!(db.count("notes")?, 1, "reads still see the open file");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_is_gone(&self) -> bool {
        self.pin.unlinked()
    }

    /// Whether a write found the file system that holds the file turned read-only while
    /// it was open ([`Error::FileSystemReadOnly`](crate::Error::FileSystemReadOnly)): ext4
    /// mounted with `errors=remount-ro` does so after an I/O error on its disk. Nothing is
    /// asked of the file system here (nothing else tells that kind of read-only mount: its
    /// `statvfs` still says read-write), so this is `false` until a write has failed. Final:
    /// such a mount takes writes again only once unmounted, which needs the file closed.
    pub fn file_system_read_only(&self) -> bool {
        self.pin.read_only_fs()
    }

    /// Ask the file system that holds the file whether it still takes writes, by creating
    /// (and removing) an empty file beside it; when it refuses with `EROFS` it turned
    /// read-only while the file was open, and that is noted as a failed write notes it
    /// ([`Database::file_system_read_only`] is `true` from then on, every write is refused
    /// saying so). For a process that may not write for a long time and must tell its
    /// operator before then (a relay's `/health`). Returns [`Database::file_system_read_only`].
    pub fn probe_file_system_read_only(&self) -> bool {
        self.pin.check_read_only_fs()
    }

    /// Bytes the database holds on disk: its file and its write-ahead log (`-wal`), measured
    /// through descriptors open on them, so also after they were deleted while open (the
    /// data a deleted file still holds is what the process would lose on closing it; a
    /// size by path said 0 there). The file through the handle's own descriptor (`fstat`);
    /// the log by its path while the file has a name, else, on Linux, through the
    /// descriptor SQLite holds on the deleted log (`FilePin::deleted_sibling_len`). A part
    /// that cannot be measured counts 0.
    pub fn stored_bytes(&self) -> u64 {
        let file = self.pin.len().unwrap_or(0);
        let wal_bytes = if self.pin.unlinked() {
            self.pin.deleted_sibling_len("-wal")
        } else {
            let mut wal = self.path.as_os_str().to_owned();
            wal.push("-wal");
            std::fs::metadata(wal).ok().map(|m| m.len())
        };
        file + wal_bytes.unwrap_or(0)
    }

    /// True when the file is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.password.is_some()
    }

    /// Current wall time from the configured clock, in ms.
    pub fn now_ms(&self) -> u64 {
        (self.options.wall_clock)()
    }

    /// The last local change-feed position. A commit by another process may show up to
    /// [`HEAD_RECHECK_US`](crate::limits::HEAD_RECHECK_US) late; commits through any handle
    /// of this process show at once.
    pub fn last_seq(&self) -> Result<Seq> {
        // Sync sessions ask on every poll (a relay: every session, every commit); the answer
        // only changes with the file, which `feed_state` names. While it holds, one statement
        // (`PRAGMA data_version` in its own read transaction) answers, not `lock`'s three;
        // and within HEAD_RECHECK_US of that check, with no commit by this process's handles
        // since, nothing does. A relay's thousand sessions asked a hundred times a second
        // each: that statement (a shared-memory lock and unlock, two `fcntl` calls) was 17% of
        // all CPU (measured 2026-12-04, 1,000 clients, writer at 100 commits/s).
        {
            let mut inner = self.lock_bare()?;
            if let Some((s, seq)) = inner.head_cache {
                if s == inner.feed_state() {
                    let commits = inner.file_commits.load(Ordering::Acquire);
                    let recent = inner.head_checked.is_some_and(|(at, c)| {
                        c == commits
                            && at.elapsed() < Duration::from_micros(crate::limits::HEAD_RECHECK_US)
                    });
                    if recent {
                        return Ok(seq);
                    }
                    if inner.data_version_now()? == inner.data_version {
                        inner.head_checked = Some((Instant::now(), commits));
                        return Ok(seq);
                    }
                }
            }
        }
        let mut inner = self.lock()?;
        let state = inner.feed_state();
        if let Some((s, seq)) = inner.head_cache {
            if s == state {
                return Ok(seq);
            }
        }
        // Read in `lock`'s snapshot, the state `feed_state` names: cacheable.
        let seq = inner.clock_row()?.0;
        inner.head_cache = Some((state, seq));
        Ok(seq)
    }

    /// The connection, inside a read snapshot that is current with the file (caches
    /// refreshed if another connection committed). Every statement run through the guard
    /// reads that one snapshot; it ends when the guard drops. Writes need
    /// [`Inner::begin_write`] (or [`Database::lock_write`]).
    ///
    /// Why one snapshot per guard rather than one implicit transaction per statement: each
    /// read transaction of a WAL database takes and releases a shared-memory lock (two
    /// `fcntl` calls), and the freshness check itself (`PRAGMA data_version`) is a
    /// statement. A sync round ran ~25 of those per side; inside one snapshot the check is
    /// free and the statements share the lock.
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        let mut l = self.lock_bare()?;
        l.exec_cached("BEGIN")?;
        l.read_open = true;
        l.refresh()?;
        Ok(l)
    }

    /// The connection inside a write transaction (`BEGIN IMMEDIATE`, caches refreshed
    /// inside it). The holder commits with [`Inner::commit`]; a guard dropped with the
    /// transaction still open rolls it back.
    pub(crate) fn lock_write(&self) -> Result<Locked<'_>> {
        let mut l = self.lock_bare()?;
        l.begin_write()?;
        Ok(l)
    }

    /// [`Database::lock_write`] for work of unknown length (see
    /// [`Database::lock_held_long`]): marked before the transaction begins, which may
    /// itself wait for another process's writer.
    pub(crate) fn lock_write_unbounded(&self) -> Result<Locked<'_>> {
        let mut l = self.lock_bare()?;
        l.mark_unbounded();
        l.begin_write()?;
        Ok(l)
    }

    /// The connection with no transaction and no freshness check: for maintenance that
    /// must run outside any transaction (checkpoints, VACUUM, rekey), and for paths that
    /// begin their own write transaction ([`Inner::begin_write`] checks the file then).
    pub(crate) fn lock_bare(&self) -> Result<Locked<'_>> {
        let me = thread_token();
        if self.lock_owner.load(Ordering::Relaxed) == me {
            // Only this thread stores its token, and clears it before letting go: equal
            // means this thread holds the lock now, and waiting would never end.
            return Err(crate::Error::Reentrant);
        }
        // A panic while holding the lock cannot leave SQLite half-written (the guard's drop
        // rolls an open transaction back), so a poisoned lock is safe to reuse.
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.lock_owner.store(me, Ordering::Relaxed);
        self.lock_taken_ns.store(lock_clock_ns(), Ordering::Relaxed);
        let changes_at_start = guard.conn.total_changes();
        Ok(Locked {
            held: HeldMark {
                taken: &self.lock_taken_ns,
                unbounded: &self.lock_unbounded,
                owner: &self.lock_owner,
            },
            guard,
            changes_at_start,
        })
    }

    /// How long another caller has held this handle's lock, `None` when it is free. A hint
    /// for async drivers: every database call takes the lock, and one that waits behind a
    /// long holder on an executor thread stalls every task of that thread (a bulk apply of
    /// 630k cells on the blocking pool left a runtime's timers 150–180 ms late while idle
    /// sessions of the same database waited for it inline). The answer may be stale by the
    /// time it is read; callers use it only to choose where to wait.
    pub fn lock_held_for(&self) -> Option<Duration> {
        match self.lock_taken_ns.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_nanos(lock_clock_ns().saturating_sub(at))),
        }
    }

    /// Whether another caller holds this handle's lock and has held it for `long` or more,
    /// or holds it for work of unknown length however young its hold is: an application's
    /// [`Database::transaction`] (its closure may run for as long as the application
    /// likes), [`Database::create_index`], [`Database::vacuum`]. A hint for async drivers,
    /// as [`Database::lock_held_for`] is: a driver that checked the age alone met such a
    /// holder in its first `long` (a session woken by the application's commit, which then
    /// began a long transaction at once) and blocked its executor thread, and its session
    /// with it, for the whole transaction.
    pub fn lock_held_long(&self, long: Duration) -> bool {
        self.lock_held_for()
            .is_some_and(|held| held >= long || self.lock_unbounded.load(Ordering::Relaxed))
    }

    /// Block until this handle's lock is free (take it and let it go): for a caller that
    /// saw [`Database::lock_held_for`] long and waits on a thread that may block.
    pub fn wait_for_lock(&self) {
        // Refused at once when this thread holds it: there is nothing to wait for.
        let _ = self.lock_bare();
    }
}

/// Clears [`Database`]'s `lock_taken_ns`, `lock_unbounded` and `lock_owner` when a
/// [`Locked`] goes, before its mutex guard (fields drop in order), so the marks never name
/// a later holder's time as free, its work as unbounded, or its thread as another's.
struct HeldMark<'a> {
    taken: &'a AtomicU64,
    unbounded: &'a AtomicBool,
    owner: &'a AtomicU64,
}

impl Drop for HeldMark<'_> {
    fn drop(&mut self) {
        self.unbounded.store(false, Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
    }
}

/// [`Inner`] behind the database's mutex, with the transaction [`Database::lock`] or
/// [`Database::lock_write`] opened; dropping it ends a read snapshot and rolls back a write
/// transaction its holder left open (an error path or a panic).
pub(crate) struct Locked<'a> {
    /// Declared before `guard`: cleared while the lock is still held.
    held: HeldMark<'a>,
    guard: MutexGuard<'a, Inner>,
    /// Rows changed on the connection when the guard was taken: a read snapshot must not
    /// have written (its commit at drop could fail unseen).
    changes_at_start: u64,
}

impl Locked<'_> {
    /// Say that this holder runs work of unknown length (see
    /// [`Database::lock_held_long`]), right after taking the lock.
    pub(crate) fn mark_unbounded(&self) {
        self.held.unbounded.store(true, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let inner = &mut *self.guard;
        if inner.conn.is_autocommit() {
            inner.read_open = false;
            return;
        }
        if inner.read_open {
            debug_assert_eq!(
                inner.conn.total_changes(),
                self.changes_at_start,
                "a write ran inside a read snapshot: it needs Inner::begin_write"
            );
            if inner.end_read().is_ok() {
                return;
            }
        }
        inner.rollback();
    }
}

impl Inner {
    /// Run a statement without parameters or rows through the statement cache (`BEGIN`,
    /// `COMMIT`: parsing them on every transaction showed in profiles).
    fn exec_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// End [`Database::lock`]'s read snapshot, if open (before a write transaction, and
    /// when the guard drops).
    fn end_read(&mut self) -> rusqlite::Result<()> {
        if std::mem::take(&mut self.read_open) && !self.conn.is_autocommit() {
            self.exec_cached("COMMIT")?;
        }
        Ok(())
    }

    /// Start a write transaction (`BEGIN IMMEDIATE`: the write lock now, so it cannot fail
    /// later on a stale snapshot) and bring the caches up to date inside it, where no other
    /// connection can commit before ours.
    ///
    /// Refused at once ([`Error::FileSystemReadOnly`](crate::Error::FileSystemReadOnly)) once
    /// a write found the file system turned read-only: every write would fail there.
    pub(crate) fn begin_write(&mut self) -> crate::Result<()> {
        if self.file.read_only_fs() {
            return Err(self.read_only_fs_error());
        }
        self.end_read()?;
        self.exec_cached("BEGIN IMMEDIATE")
            .map_err(|e| self.write_failed(e.into()))?;
        self.record_cache.discard_staged();
        if let Err(e) = self.refresh() {
            self.rollback();
            return Err(e);
        }
        Ok(())
    }

    /// Commit the write transaction, unless the file was deleted while open: then nothing
    /// is committed ([`Error::FileGone`](crate::Error::FileGone)), and the transaction is
    /// rolled back on the caller's error path (or when its lock guard drops).
    ///
    /// Checked at every commit, not on a timer: it is one `fstat` of a held descriptor
    /// (measured 2026-12-07 on the project's 2-core VM: ~0.3 µs, against ~24 µs for the
    /// cheapest commit), and a commit acknowledged after a timer's last check would be lost
    /// all the same. A relay whose data directory was removed went on acknowledging every
    /// client's writes into the deleted file, and came back empty after a restart (a
    /// durability audit, 2026-12-07).
    pub(crate) fn commit(&mut self) -> Result<()> {
        if self.file.unlinked() {
            return Err(crate::Error::FileGone {
                path: self.file.path().display().to_string(),
            });
        }
        // No other handle can commit while this transaction holds the write lock, so a move
        // of the counter between here and our own move below is a commit after ours.
        let before = self.file_commits.load(Ordering::Acquire);
        self.exec_cached("COMMIT")
            .map_err(|e| self.write_failed(e.into()))?;
        // Moved after COMMIT: a handle that checked the file before our commit was visible
        // holds an older count and checks again.
        let moved = self.file_commits.fetch_add(1, Ordering::AcqRel);
        // The write transaction saw every earlier commit (`begin_write` refreshed inside it),
        // so unless another handle committed since, the file is known as of now.
        self.head_checked = (moved == before).then(|| (Instant::now(), moved + 1));
        self.record_cache.commit_staged();
        Ok(())
    }

    /// `e`, the failure of a write, as [`Error::FileSystemReadOnly`](crate::Error::FileSystemReadOnly)
    /// when it was an I/O error and the file's directory now refuses a new file: the file
    /// system turned read-only while open (ext4's `errors=remount-ro`; SQLite only says
    /// `SQLITE_IOERR_WRITE`, and `statvfs` still says read-write). Noted on the file's pin,
    /// so every later write of every handle is refused without trying, and
    /// [`Database::file_system_read_only`] says so. Other errors are returned as they are.
    pub(crate) fn write_failed(&self, e: crate::Error) -> crate::Error {
        if !e.may_be_read_only_fs() || !self.file.check_read_only_fs() {
            return e;
        }
        self.read_only_fs_error()
    }

    fn read_only_fs_error(&self) -> crate::Error {
        crate::Error::FileSystemReadOnly {
            path: self.file.path().display().to_string(),
        }
    }

    /// Roll back the open transaction, if any, and forget what the caches learned in it.
    pub(crate) fn rollback(&mut self) {
        self.read_open = false;
        if !self.conn.is_autocommit() {
            let _ = self.exec_cached("ROLLBACK");
        }
        self.rollback_caches();
    }

    /// `PRAGMA data_version` of the handle's connection now (see [`data_version`]).
    fn data_version_now(&self) -> rusqlite::Result<i64> {
        data_version(&self.conn)
    }

    /// Reload caches if another connection (another process) committed since we last looked.
    /// Called inside a transaction ([`Database::lock`], [`Inner::begin_write`]), where the
    /// check costs no lock of its own and what it sees is what the transaction reads.
    ///
    /// After another connection's commit, the file's format is read first: a newer build
    /// that migrated the file meanwhile (one that does not honour the format lock of
    /// `file_pin.rs`, or that took it before this handle's open) changed what the tables
    /// hold, and what this build would read there next fails to decode, or to insert, as if
    /// the file were damaged. Read here, before anything else, it is
    /// [`Error::UpgradedWhileOpen`](crate::Error::UpgradedWhileOpen) instead, on every
    /// operation from then on (an upgrade audit, 2026-12-07, F4: a format-10 process told to
    /// "restore from a peer" an intact file, which would have lost its unsynced writes). One
    /// lookup by primary key per foreign commit, beside the half-dozen reloads below.
    pub(crate) fn refresh(&mut self) -> crate::Result<()> {
        if let Some(why) = &self.lost {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(why.clone()),
            )
            .into());
        }
        let v = self.data_version_now()?;
        if v == self.data_version {
            return Ok(());
        }
        let format = schema::read_format(&self.conn)?;
        if format > FORMAT_VERSION {
            return Err(crate::Error::UpgradedWhileOpen {
                path: self.file.path().display().to_string(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        self.record_cache.clear();
        if self.data_version < 0 {
            // After a rollback: entries this handle flushed may be gone from the file.
            self.nodes = NodeTable::load(&self.conn)?;
            self.fields = FieldTable::load(&self.conn)?;
        } else {
            // Another connection committed: at most it added entries (a relay's node table
            // holds one per client; this runs after every checkpoint).
            self.nodes.load_new(&self.conn)?;
            self.fields.load_new(&self.conn)?;
        }
        self.collections.clear();
        self.collection_names.clear();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, name FROM collections")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (id, name) = row?;
                self.collections.insert(name.clone(), id);
                self.collection_names.insert(id, name);
            }
        }
        self.indexes.clear();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT coll, field FROM indexes")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (c, f) = row?;
                self.indexes.entry(c).or_default().insert(f);
            }
        }
        self.policies.clear();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT coll, manual_fields, auto_resolve, server_priority FROM policies",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })?;
            for row in rows {
                let (c, manual, auto_resolve, server_priority) = row?;
                let manual_fields = manual
                    .split('\n')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect();
                self.policies.insert(
                    c,
                    CollectionPolicy {
                        manual_fields,
                        auto_resolve,
                        server_priority,
                    },
                );
            }
        }
        let hlc = self.clock_row()?.1;
        if hlc > self.clock.last() {
            let skew = self.clock_skew();
            self.clock = Clock::new(hlc, skew);
        }
        self.data_version = v;
        Ok(())
    }

    fn clock_skew(&self) -> u64 {
        // Clock keeps the limit; read it back through a check of a zero timestamp.
        self.clock.skew_ms_max()
    }

    /// The last committed feed position and HLC: the row of `peers` no peer can have (node
    /// ids are 16 bytes; see `CLOCK_IN_PEERS` in schema.rs).
    pub fn clock_row(&self) -> rusqlite::Result<(Seq, Hlc)> {
        self.conn
            .prepare_cached(
                "SELECT cursor, last_contact_ms FROM peers WHERE node = X'' AND direction = 'clock'",
            )?
            .query_row([], |r| {
                Ok((
                    Seq(r.get::<_, i64>(0)? as u64),
                    Hlc(r.get::<_, i64>(1)? as u64),
                ))
            })
    }

    /// The committed feed head, from `head_cache` while nothing has changed the file since it
    /// was noted there (no statement of this connection changed a row, no other connection
    /// committed: `feed_state` names both), else from the clock row. For use inside a
    /// transaction that has not written yet (a write that follows moves `total_changes`, so
    /// the cache no longer matches). Every transaction and every feed read starts with it:
    /// the `SELECT` it saves was ~3% of a one-record sync round's instructions (callgrind).
    pub fn head_seq(&self) -> rusqlite::Result<Seq> {
        match self.head_cache {
            Some((state, seq)) if state == self.feed_state() => {
                // Debug builds check the cache on every use, so the whole test suite does.
                #[cfg(debug_assertions)]
                debug_assert_eq!(seq, self.clock_row()?.0, "head_cache is stale");
                Ok(seq)
            }
            _ => Ok(self.clock_row()?.0),
        }
    }

    /// The state of the file as far as this connection knows (see `feed_cache`): rows it
    /// changed so far, and the version other connections' commits move.
    pub fn feed_state(&self) -> feed_cache::FeedState {
        (self.conn.total_changes(), self.data_version)
    }

    /// Store the feed position and HLC (inside the committing transaction).
    pub fn set_clock_row(&self, seq: Seq, hlc: Hlc) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE peers SET cursor = ?1, last_contact_ms = ?2
                 WHERE node = X'' AND direction = 'clock'",
            )?
            .execute([seq.0 as i64, hlc.0 as i64])?;
        Ok(())
    }

    pub fn meta_i64(&self, key: &str) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
    }

    /// The id of an existing collection.
    pub fn collection_id(&self, name: &str) -> Option<i64> {
        self.collections.get(name).copied()
    }

    /// The id of the collection a read names: `None` when it does not exist (yet), and the
    /// error a write gets ([`WriteError::InvalidName`]) for a name no collection can have,
    /// which read as an empty collection: a typo in a name (an empty one from a script's
    /// unset variable) looked like missing data. Existing collections' names were checked
    /// when they were created, so only an unknown name is checked here.
    pub fn read_collection_id(&self, name: &str) -> Result<Option<i64>> {
        match self.collection_id(name) {
            Some(c) => Ok(Some(c)),
            None => {
                validate_collection_name(name)?;
                Ok(None)
            }
        }
    }

    /// The id of a collection, creating it (inside the caller's transaction) if new.
    pub fn collection_id_or_create(&mut self, name: &str) -> Result<i64> {
        if let Some(id) = self.collection_id(name) {
            return Ok(id);
        }
        validate_collection_name(name)?;
        if self.collections.len() >= COLLECTIONS_MAX {
            return Err(WriteError::Limit {
                what: "number of collections",
                got: self.collections.len() + 1,
                max: COLLECTIONS_MAX,
            }
            .into());
        }
        self.conn
            .execute("INSERT INTO collections (name) VALUES (?1)", [name])?;
        let id = self.conn.last_insert_rowid();
        self.collections.insert(name.to_owned(), id);
        self.collection_names.insert(id, name.to_owned());
        Ok(id)
    }

    /// Forget cache entries made inside a rolled-back transaction.
    pub fn rollback_caches(&mut self) {
        self.feed_cache.clear();
        self.record_cache.clear();
        self.head_cache = None;
        self.gc_horizon_cache = None;
        self.head_checked = None;
        self.nodes.rollback();
        self.fields.rollback();
        self.data_version = -1;
    }
}

/// `PRAGMA data_version` of `conn` now: it moves when another connection commits to the
/// file, never for `conn`'s own commits.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// Collection names: 1 to 128 bytes, no control characters.
pub fn validate_collection_name(name: &str) -> Result<(), WriteError> {
    let bad = |reason: &str| WriteError::InvalidName {
        what: "collection",
        name: crate::error::excerpt(name),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > COLLECTION_NAME_BYTES_MAX {
        return Err(bad(&format!(
            "longer than {COLLECTION_NAME_BYTES_MAX} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

/// The commit counter of the file at `path`, shared by every handle this process opens on
/// it: [`Inner::commit`] moves it, so [`Database::last_seq`] sees another handle's commit at
/// once without asking SQLite (which costs a shared-memory lock).
fn file_commits(path: &Path) -> Arc<AtomicU64> {
    static FILES: OnceLock<Mutex<HashMap<PathBuf, Weak<AtomicU64>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut files = FILES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = files.get(&key).and_then(Weak::upgrade) {
        return c;
    }
    files.retain(|_, c| c.strong_count() > 0);
    let c = Arc::new(AtomicU64::new(0));
    files.insert(key, Arc::downgrade(&c));
    c
}
