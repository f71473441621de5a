//! Maintenance: statistics, checkpoints, vacuum, integrity check (changing the password is
//! `rekey.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode};

use super::cipher_key::CipherKey;
use super::{data_version, Database, Inner};
use crate::error::{Error, Result};
use crate::limits::{
    PAGE_CHECK_CHECKPOINT_WAIT_MS, PAGE_CHECK_SETTLE_RETRY_MS, PAGE_CHECK_SETTLE_WAIT_MS,
};

/// Numbers about one collection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectionStats {
    /// Live records.
    pub records: u64,
    /// Deleted records still remembered (tombstones).
    pub tombstones: u64,
    /// Bytes of encoded record bodies (values and versions).
    pub body_bytes: u64,
    /// Index entries per indexed field.
    pub index_entries: BTreeMap<String, u64>,
}

/// Numbers about the whole database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Per collection.
    pub collections: BTreeMap<String, CollectionStats>,
    /// The file's size in bytes (without the WAL).
    pub file_bytes: u64,
    /// The write-ahead log's size in bytes.
    pub wal_bytes: u64,
    /// History entries.
    pub history_entries: u64,
    /// Bytes used by the history table (from `dbstat` when available).
    pub history_bytes: Option<u64>,
    /// Bytes used by the index entries table.
    pub index_bytes: Option<u64>,
    /// Rows in the change feed.
    pub feed_rows: u64,
    /// Unresolved conflicts.
    pub open_conflicts: u64,
    /// The last feed position.
    pub last_seq: u64,
    /// This node.
    pub node_id: String,
    /// Whether the file is encrypted.
    pub encrypted: bool,
}

/// What one [`Database::checkpoint`] did, in WAL frames (pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames in the WAL.
    pub wal_frames: u64,
    /// Frames copied into the database file (all of them once no reader holds older ones).
    pub checkpointed_frames: u64,
}

/// The connection [`Database::checkpoint`] runs on.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    conn: rusqlite::Connection,
    /// The file's `data_version` (as this connection sees it) when this connection last
    /// started the WAL over: while it is unchanged, the WAL holds only that write.
    restarted_at: Option<i64>,
}

impl Checkpointer {
    /// The checkpoint connection in `slot`, opened first if it is not yet.
    fn opened<'a>(
        slot: &'a mut Option<Checkpointer>,
        path: &Path,
        key: Option<&CipherKey>,
    ) -> rusqlite::Result<&'a mut Checkpointer> {
        if slot.is_none() {
            *slot = Some(Checkpointer {
                conn: super::open::open_checkpointer(path, key)?,
                restarted_at: None,
            });
        }
        Ok(slot.as_mut().expect("opened above"))
    }

    /// Start the WAL over with a one-row write (its commit does what the application's next
    /// commit would otherwise do, fsync included). False when a writer held the file, which
    /// then restarts the WAL itself.
    ///
    /// That write is another connection's commit to the handle's own connection, so its next
    /// transaction would see `data_version` move and drop every cache (`Inner::refresh`):
    /// the record cache of a subscriber applying a hot set of 10,000 records emptied once a
    /// second, and each row was read and decoded again (measured: half to three quarters of
    /// the subscribers' record loads in the encrypted fan-out benchmark missed). The restart
    /// changes nothing those caches hold, so the handle is told its new `data_version`
    /// instead ([`Checkpointer::vouch`]), when this write was provably the only commit it had
    /// not seen.
    fn restart_wal(&self, main: &Mutex<Inner>) -> Result<bool> {
        match self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
        let written = (|| -> rusqlite::Result<(i64, Option<i64>)> {
            // This connection holds the write lock: no other commit can land until ours.
            // Its `data_version` now names every commit before ours; its own commit will not
            // move it.
            let before = data_version(&self.conn)?;
            // Whether the handle has seen every commit so far (a busy handle is not waited
            // for: it then refreshes as usual).
            let handle_before = match try_lock(main) {
                Some(inner) => {
                    let seen = inner.data_version;
                    (seen >= 0 && inner.data_version_now()? == seen).then_some(seen)
                }
                None => None,
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('wal_restarts', 1) \
                     ON CONFLICT (key) DO UPDATE SET value = value + 1",
                )?
                .execute([])?;
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok((before, handle_before))
        })();
        let (before, handle_before) = match written {
            Ok(w) => w,
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                return Err(e.into());
            }
        };
        if let Some(seen) = handle_before {
            self.vouch(main, before, seen)?;
        }
        Ok(true)
    }

    /// After this connection's restart write: if the handle has not refreshed since it was
    /// current just before that write (`seen`), and no other connection has committed since
    /// then (this connection's `data_version` is still `before`), then the handle's next
    /// `data_version` differs from `seen` by that write alone, which changed nothing it
    /// caches: store the new value, so that its caches stay.
    ///
    /// The order matters: the handle's value is read first, and the check that nobody else
    /// committed comes after it, so a commit landing between the two is caught.
    fn vouch(&self, main: &Mutex<Inner>, before: i64, seen: i64) -> rusqlite::Result<()> {
        let Some(mut inner) = try_lock(main) else {
            return Ok(());
        };
        if inner.data_version != seen {
            return Ok(());
        }
        let now = inner.data_version_now()?;
        if data_version(&self.conn)? == before {
            inner.data_version = now;
        }
        Ok(())
    }
}

/// The handle's state if no one holds it now (a poisoned lock is safe to reuse: see
/// `Database::lock_bare`).
fn try_lock(main: &Mutex<Inner>) -> Option<MutexGuard<'_, Inner>> {
    match main.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Result of [`Database::integrity_check`].
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrityReport {
    /// True when everything checked out.
    pub ok: bool,
    /// What was wrong, one line per problem.
    pub problems: Vec<String>,
}

impl Database {
    /// Statistics.
    pub fn stats(&self) -> Result<Stats> {
        let inner = self.lock()?;
        let mut s = Stats {
            node_id: self.node.to_string(),
            encrypted: self.is_encrypted(),
            ..Stats::default()
        };
        let mut names: Vec<(i64, String)> = inner
            .collection_names
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        names.sort();
        for (coll, name) in names {
            let (live, dead, bytes): (u64, u64, Option<u64>) = inner.conn.query_row(
                "SELECT coalesce(sum(live), 0), coalesce(sum(1 - live), 0), sum(length(body)) FROM records WHERE coll = ?1",
                [coll],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut cs = CollectionStats {
                records: live,
                tombstones: dead,
                body_bytes: bytes.unwrap_or(0),
                ..Default::default()
            };
            for f in inner.indexes.get(&coll).into_iter().flatten() {
                let n: u64 = inner.conn.query_row(
                    "SELECT count(*) FROM index_entries WHERE coll = ?1 AND field = ?2",
                    params![coll, f],
                    |r| r.get(0),
                )?;
                cs.index_entries.insert(f.clone(), n);
            }
            s.collections.insert(name, cs);
        }
        s.file_bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let wal = format!("{}-wal", self.path.display());
        s.wal_bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        s.history_entries = inner
            .conn
            .query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
        s.feed_rows = inner
            .conn
            .query_row("SELECT count(*) FROM feed", [], |r| r.get(0))?;
        s.open_conflicts = inner.conn.query_row(
            "SELECT count(*) FROM conflicts WHERE resolved = 0",
            [],
            |r| r.get(0),
        )?;
        s.last_seq = inner.clock_row()?.0 .0;
        s.history_bytes = table_bytes(&inner, &["history"]);
        s.index_bytes = table_bytes(&inner, &["index_entries"]);
        Ok(s)
    }

    /// Copy committed pages from the WAL into the database file without waiting for readers
    /// or writers (SQLite's PASSIVE checkpoint), so the WAL can be reused from the start.
    ///
    /// Commits no longer checkpoint themselves until the WAL holds
    /// [`WAL_AUTOCHECKPOINT_PAGES`](crate::limits::WAL_AUTOCHECKPOINT_PAGES): an application
    /// that writes steadily calls this every second or so from outside its write path (the
    /// tokio layer's `spawn_checkpointer` does), so no commit waits for a checkpoint's fsync.
    /// It runs on a connection of its own (opened by the first call, keyed with the key the
    /// open derived), so reads and writes through this handle go on meanwhile.
    ///
    /// When every frame was copied, it also starts the WAL over itself with a one-row write
    /// (the `wal_restarts` counter in `meta`): SQLite fsyncs the WAL header when a commit
    /// starts the WAL over, and otherwise the next commit of the application would wait for
    /// that fsync (measured: 1,000 clients checkpointing every second spent ~2 s a second of
    /// their two workers' time in it). When nothing was committed since that write, the call
    /// does nothing and returns zeros: the WAL holds only that write's frames.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut slot = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner());
        let ck = Checkpointer::opened(&mut slot, &self.path, self.key.as_ref())?;
        // `data_version` moves when another connection commits, never for this one's own.
        // The statements are cached: a client checkpoints every second or so, and parsing
        // them each time was ~1.5% of the CPU of 1,000 clients on one machine (perf,
        // 2026-12-04).
        let version = data_version(&ck.conn)?;
        if ck.restarted_at == Some(version) {
            return Ok(Checkpoint::default());
        }
        let (wal, done): (i64, i64) = ck
            .conn
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
            .query_row([], |r| Ok((r.get(1)?, r.get(2)?)))?;
        // -1 means the file is not in WAL mode; nothing to do then.
        let c = Checkpoint {
            wal_frames: wal.max(0) as u64,
            checkpointed_frames: done.max(0) as u64,
        };
        if c.wal_frames > 0 && c.checkpointed_frames == c.wal_frames {
            ck.restarted_at = ck.restart_wal(&self.inner)?.then_some(version);
        }
        Ok(c)
    }

    /// Close the checkpoint connection (the next [`Database::checkpoint`] opens it again):
    /// before the file is replaced, or its key changes.
    pub(super) fn close_checkpointer(&self) -> Result<()> {
        let conn = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = conn {
            c.conn.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    /// Rebuild the file to reclaim free pages.
    ///
    /// It writes a copy of the whole database (into the write-ahead log, which is then
    /// copied back into the file), so it needs about the file's size free on its disk; without
    /// that room it fails with [`Error::NoRoomForCopy`], saying how much, and changes nothing.
    pub fn vacuum(&self) -> Result<()> {
        let inner = self.lock_bare()?;
        // Rewrites the whole file.
        inner.mark_unbounded();
        let vacuumed = inner.conn.execute_batch(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        );
        if let Err(e) = vacuumed {
            // The rolled-back copy's frames stay in the write-ahead log, holding the room
            // they took, until the log starts over: give it back now (best effort).
            let _ = inner.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
            return Err(self.no_room_for_copy(e.into(), "vacuum"));
        }
        Ok(())
    }

    /// `e` as [`Error::NoRoomForCopy`] when it says the disk is full: an `operation` that
    /// writes a copy of the whole database (`vacuum`, a password change) then says how much
    /// room it needs (the file's size) and how much there is. Any other error as it is.
    pub(super) fn no_room_for_copy(&self, e: Error, operation: &'static str) -> Error {
        if !e.is_disk_full() {
            return e;
        }
        let dir = super::volume::directory_of(&self.path);
        Error::NoRoomForCopy {
            operation,
            path: self.path.display().to_string(),
            dir: dir.display().to_string(),
            needed_bytes: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
            free_bytes: super::volume::free_bytes(&dir),
        }
    }

    /// Check the file: SQLite's integrity check (and SQLCipher's page authentication when
    /// encrypted), then that every record decodes.
    ///
    /// Other connections and processes may go on writing meanwhile: what they do is never
    /// reported as damage. On an encrypted file the check copies the WAL into the main file
    /// first (a checkpoint), holding other writers back while it copies the last commits, and fails
    /// as busy (see [`Error::is_busy`]) if it finds no moment to do so within
    /// [`PAGE_CHECK_SETTLE_WAIT_MS`](crate::limits::PAGE_CHECK_SETTLE_WAIT_MS).
    pub fn integrity_check(&self) -> Result<IntegrityReport> {
        // First, outside the handle's read snapshot below, whose read mark would keep the
        // checkpoint from copying the newer commits (see `settle_for_page_check`).
        let cipher = if self.is_encrypted() {
            self.cipher_check()?
        } else {
            Vec::new()
        };
        let inner = self.lock()?;
        let mut problems = Vec::new();
        // A file damaged enough makes a step fail outright ("database disk image is
        // malformed"): that is a finding of the check, reported with the others, not an
        // error of the check.
        let pragma = |sql: &str, problems: &mut Vec<String>| check_rows(&inner.conn, sql, problems);
        if let Err(e) = pragma("PRAGMA integrity_check", &mut problems) {
            problems.push(format!("integrity check: {e}"));
        }
        problems.extend(cipher.into_iter().map(|p| format!("cipher: {p}")));
        let records = |problems: &mut Vec<String>| -> rusqlite::Result<()> {
            let mut stmt = inner
                .conn
                .prepare("SELECT coll, id, seq, body FROM records")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let seq: u64 = r.get(2)?;
                let bytes: Vec<u8> = r.get(3)?;
                if let Err(e) =
                    super::body::decode(&bytes, crate::types::Seq(seq), &inner.nodes, &inner.fields)
                {
                    let id: Vec<u8> = r.get(1)?;
                    problems.push(format!(
                        "record {:02x?} of collection {}: {e}",
                        id,
                        r.get::<_, i64>(0)?
                    ));
                }
            }
            Ok(())
        };
        if let Err(e) = records(&mut problems) {
            problems.push(format!("reading the records: {e}"));
        }
        Ok(IntegrityReport {
            ok: problems.is_empty(),
            problems,
        })
    }

    /// SQLCipher's page authentication (`PRAGMA cipher_integrity_check`): the HMAC of every
    /// page of the main file, one line per page that fails it.
    ///
    /// That pragma reads the main file directly, outside SQLite's WAL and its locks, so it
    /// can be trusted only while the file holds every committed page and nothing writes to
    /// it. Run inside a plain read transaction (as it was), it failed healthy files while
    /// another process wrote (an audit: 1–2 of ~10 checks during a bulk import), as
    /// another connection's checkpoint
    /// - was copying pages from the WAL into the file: a page read half-written;
    /// - had stopped short of the WAL's end (at some reader's snapshot): the file had grown
    ///   past pages still only in the WAL, which read as zeros.
    ///
    /// A read transaction stops a checkpoint from copying only the frames newer than its
    /// snapshot, not those it sees. So [`Database::settle_for_page_check`] first copies the
    /// whole WAL into the file and then pins it so, which makes those false alarms
    /// impossible rather than rare. The ways not taken: checking the failed pages again (a
    /// busy writer can tear a page again, and a hole stays until the next checkpoint:
    /// rarer, not impossible), and checking a copy made with the backup API (a second file
    /// as large as the database, and it checks the pages it reads through SQLite, the WAL's
    /// among them, not the main file).
    ///
    /// A failure to get there that comes from a damaged file is a finding (returned as a
    /// problem); anything else (busy, I/O) is an error of the check.
    fn cipher_check(&self) -> Result<Vec<String>> {
        // Taken before the handle's lock, as `checkpoint` does; it also keeps this handle's
        // own checkpoints (the tokio layer's `spawn_checkpointer`) out until the end.
        let mut slot = self.checkpointer.lock().unwrap_or_else(|e| e.into_inner());
        // A handle a failed rekey closed says so here, as everywhere (`Inner::refresh`),
        // before its path is opened again with its key.
        drop(self.lock()?);
        let ck = match Checkpointer::opened(&mut slot, &self.path, self.key.as_ref()) {
            Ok(ck) => ck,
            Err(e) if is_damage(&e) => return Ok(vec![e.to_string()]),
            Err(e) => return Err(e.into()),
        };
        match self.settle_for_page_check(&ck.conn) {
            Ok(()) => {}
            Err(Error::Sqlite(e)) if is_damage(&e) => return Ok(vec![e.to_string()]),
            Err(e) => return Err(e),
        }
        let mut problems = Vec::new();
        let checked = check_rows(&ck.conn, "PRAGMA cipher_integrity_check", &mut problems);
        if let Err(e) = checked {
            problems.push(e.to_string());
        }
        // Lets checkpoints into the file again.
        ck.conn.execute_batch("ROLLBACK")?;
        Ok(problems)
    }

    /// Bring the main file to hold every committed page, and keep it so: on success, `ck`
    /// (the checkpoint connection) is left in a read transaction during which no connection
    /// of any process writes to the main file; the caller ends it (`ROLLBACK`). Writers go on
    /// meanwhile, into the WAL.
    ///
    /// Why that holds (SQLite 3.45's `walCheckpoint` and `walTryBeginRead`):
    /// 1. This handle's connection takes the write lock (`BEGIN IMMEDIATE`, waiting for a
    ///    writer up to its busy timeout): no commit can add frames to the WAL, or start it
    ///    over, until it is released.
    /// 2. `ck` runs a PASSIVE checkpoint. When it copied every frame (`checkpointed` equals
    ///    `log`), the main file holds every committed page (and no more: the checkpoint also
    ///    truncated it to the database's size).
    /// 3. Still under the write lock, `ck` opens a read transaction. The WAL is all copied,
    ///    so SQLite gives it read lock 0 ("read the main file, ignore the WAL"), or, should
    ///    that lock be taken for an instant, a read mark at the WAL's end, which is no
    ///    further than what was copied.
    /// 4. The write lock is released. A checkpoint writes to the main file (and truncates
    ///    it) only while holding read lock 0 exclusively, which `ck`'s shared lock 0 bars;
    ///    with a read mark instead, it may copy frames only up to that mark, all copied
    ///    already, and the WAL cannot start over under a reader that uses it. Nothing else
    ///    writes the main file of a database in WAL mode (leaving WAL mode, or the last
    ///    connection's checkpoint at close, needs an exclusive lock that our open
    ///    connections deny).
    ///
    /// Step 2 falls short while another connection checkpoints (`busy`), or while a reader
    /// elsewhere holds an older snapshot, whose frames a checkpoint may not overwrite yet:
    /// the write lock is released and the steps tried again, every
    /// [`PAGE_CHECK_SETTLE_RETRY_MS`] for up to [`PAGE_CHECK_SETTLE_WAIT_MS`], then the check
    /// fails as busy. Writers wait (within their busy timeout) while the write lock is held:
    /// for one checkpoint, of what was committed since the checkpoint just before it, which
    /// copied the rest without the lock.
    fn settle_for_page_check(&self, ck: &Connection) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(PAGE_CHECK_SETTLE_WAIT_MS);
        loop {
            if self.try_settle_for_page_check(ck)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let message = format!(
                    "the page check of an encrypted file needs a moment when every commit is \
                     in the main file, and for {} s another connection kept reading an older \
                     state of the file (a long read transaction) or checkpointing it: run the \
                     check again once that is over",
                    PAGE_CHECK_SETTLE_WAIT_MS / 1000
                );
                return Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(message),
                )));
            }
            std::thread::sleep(Duration::from_millis(PAGE_CHECK_SETTLE_RETRY_MS));
        }
    }

    /// One try of [`Database::settle_for_page_check`]'s steps: true when `ck` holds its read
    /// transaction, false (and no transaction open) when it is to be tried again.
    fn try_settle_for_page_check(&self, ck: &Connection) -> Result<bool> {
        let checkpoint = || -> rusqlite::Result<(i64, i64, i64)> {
            ck.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        };
        // First without the write lock, so that the one under it has only what was committed
        // in between to copy: writers wait for that one, and a WAL that checkpoints were
        // kept from (by a reader elsewhere, or the last check) may be large.
        checkpoint()?;
        let inner = self.lock_bare()?;
        inner.exec_cached("BEGIN IMMEDIATE")?;
        let pinned = (|| -> rusqlite::Result<bool> {
            // Another connection's checkpoint (`busy`) has a bounded amount to copy while no
            // commit can add to it: wait for it here, rather than release the write lock and
            // have to win it from the writers again.
            let busy_until = Instant::now() + Duration::from_millis(PAGE_CHECK_CHECKPOINT_WAIT_MS);
            let (log, checkpointed) = loop {
                let (busy, log, checkpointed) = checkpoint()?;
                if busy == 0 {
                    break (log, checkpointed);
                }
                if Instant::now() >= busy_until {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // (-1, -1 when the file is not in WAL mode: then the reader's shared lock alone
            // keeps writers out of the file.)
            if checkpointed < log {
                return Ok(false);
            }
            ck.execute_batch("BEGIN")?;
            match ck.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
                Ok(()) => Ok(true),
                Err(e) => {
                    let _ = ck.execute_batch("ROLLBACK");
                    // `ck` has no busy timeout: a lock held for an instant is tried again.
                    match e.sqlite_error_code() {
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Ok(false),
                        _ => Err(e),
                    }
                }
            }
        })();
        // Nothing was written: this ends the write lock, and writers go on.
        let released = inner.exec_cached("ROLLBACK");
        drop(inner);
        if let (Ok(true), Err(_)) = (&pinned, &released) {
            let _ = ck.execute_batch("ROLLBACK");
        }
        released?;
        Ok(pinned?)
    }
}

/// Whether `e` says the file is damaged (rather than busy, unreadable, or out of space).
pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn table_bytes(inner: &Inner, names: &[&str]) -> Option<u64> {
    let mut total = 0u64;
    for n in names {
        let b: Option<i64> = inner
            .conn
            .query_row("SELECT sum(pgsize) FROM dbstat WHERE name = ?1", [n], |r| {
                r.get(0)
            })
            .ok()?;
        total += b.unwrap_or(0) as u64;
    }
    Some(total)
}

/// Run a checking pragma (`integrity_check`, `cipher_integrity_check`...) and add every row
/// but "ok" to `problems`. `prepare`, not `prepare_cached`: SQLCipher reads the file and
/// computes `cipher_integrity_check`'s rows when the statement is prepared.
fn check_rows(conn: &Connection, sql: &str, problems: &mut Vec<String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for r in rows {
        let r = r?;
        if r != "ok" {
            problems.push(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpenOptions, Patch, RecordId, Value};

    /// A database with `n` records, each updated once (so each row is in the record cache),
    /// and a second handle on the same file: another process, as far as the first can tell.
    fn two_handles(path: &std::path::Path, n: usize) -> (Database, Database, Vec<RecordId>) {
        let opts = || OpenOptions::with_password("pw");
        let db = Database::open(path, opts()).unwrap();
        let ids: Vec<RecordId> = (0..n)
            .map(|i| db.insert("notes", [("n", i as i64)]).unwrap())
            .collect();
        for id in &ids {
            db.update("notes", *id, Patch::new().set("n", -1)).unwrap();
        }
        let other = Database::open(path, opts()).unwrap();
        (db, other, ids)
    }

    fn cached_rows(db: &Database) -> usize {
        db.lock_bare().unwrap().record_cache.len()
    }

    fn n_of(db: &Database, id: RecordId) -> Value {
        db.get("notes", id).unwrap().unwrap().fields["n"].clone()
    }

    #[test]
    fn the_checkpointers_wal_restart_leaves_the_handles_caches() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _other, ids) = two_handles(&dir.path().join("a.db"), 20);
        assert_eq!(cached_rows(&db), 20);
        let c = db.checkpoint().unwrap();
        assert!(
            c.wal_frames > 0 && c.checkpointed_frames == c.wal_frames,
            "{c:?}"
        );
        let restarts = db.lock().unwrap().meta_i64("wal_restarts").unwrap();
        assert_eq!(restarts, 1, "the checkpoint started the WAL over");
        // The handle's next transactions see the file as it knew it: nothing reloaded.
        assert_eq!(n_of(&db, ids[0]), Value::from(-1));
        assert_eq!(cached_rows(&db), 20, "the restart emptied the record cache");
        {
            let inner = db.lock_bare().unwrap();
            assert_eq!(inner.data_version_now().unwrap(), inner.data_version);
        }
        // And writes through it go on from the cached rows (a stale row fails the debug
        // check in `Tx::load`).
        for id in &ids {
            db.update("notes", *id, Patch::new().set("n", 7)).unwrap();
        }
        assert_eq!(n_of(&db, ids[19]), Value::from(7));
    }

    #[test]
    fn a_commit_the_handle_had_not_seen_before_the_restart_still_refreshes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, other, ids) = two_handles(&dir.path().join("a.db"), 5);
        other
            .update("notes", ids[0], Patch::new().set("n", 42))
            .unwrap();
        let c = db.checkpoint().unwrap();
        assert!(
            c.checkpointed_frames == c.wal_frames && c.wal_frames > 0,
            "{c:?}"
        );
        assert_eq!(
            n_of(&db, ids[0]),
            Value::from(42),
            "the other handle's write"
        );
        assert_eq!(cached_rows(&db), 0, "the caches were refreshed");
        db.update("notes", ids[0], Patch::new().set("m", 1))
            .unwrap();
        let r = db.get("notes", ids[0]).unwrap().unwrap();
        assert_eq!(
            (r.fields["n"].clone(), r.fields["m"].clone()),
            (42.into(), 1.into())
        );
    }

    #[test]
    fn a_commit_after_the_restart_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (db, other, ids) = two_handles(&dir.path().join("a.db"), 5);
        db.checkpoint().unwrap();
        other
            .update("notes", ids[1], Patch::new().set("n", 9))
            .unwrap();
        assert_eq!(n_of(&db, ids[1]), Value::from(9));
        assert_eq!(cached_rows(&db), 0);
        db.update("notes", ids[1], Patch::new().set("n", 10))
            .unwrap();
        assert_eq!(n_of(&other, ids[1]), Value::from(10));
    }

    /// The window `vouch` guards: another connection commits after the restart write and
    /// before the handle's new `data_version` is read. The handle must not take that value
    /// as the restart's alone.
    #[test]
    fn a_commit_racing_the_vouch_is_not_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let (db, other, ids) = two_handles(&dir.path().join("a.db"), 5);
        db.checkpoint().unwrap();
        let slot = db.checkpointer.lock().unwrap();
        let ck = slot.as_ref().expect("opened by the checkpoint");
        let before = data_version(&ck.conn).unwrap();
        let seen = db.lock_bare().unwrap().data_version;
        other
            .update("notes", ids[2], Patch::new().set("n", 5))
            .unwrap();
        ck.vouch(&db.inner, before, seen).unwrap();
        assert_eq!(
            db.lock_bare().unwrap().data_version,
            seen,
            "vouched for a foreign commit"
        );
        drop(slot);
        assert_eq!(n_of(&db, ids[2]), Value::from(5));
        assert_eq!(cached_rows(&db), 0);
    }
}
