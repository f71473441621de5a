//! Maintenance: statistics, checkpoints, vacuum, integrity check (changing the password is
//! `rekey.rs`).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::params;

use super::{data_version, Database, Inner};
use crate::error::Result;

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
        if slot.is_none() {
            *slot = Some(Checkpointer {
                conn: super::open::open_checkpointer(&self.path, self.key.as_ref())?,
                restarted_at: None,
            });
        }
        let ck = slot.as_mut().expect("opened above");
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
    pub fn vacuum(&self) -> Result<()> {
        let inner = self.lock_bare();
        inner.conn.execute_batch(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        Ok(())
    }

    /// Check the file: SQLite's integrity check (and SQLCipher's page authentication when
    /// encrypted), then that every record decodes.
    pub fn integrity_check(&self) -> Result<IntegrityReport> {
        let inner = self.lock()?;
        let mut problems = Vec::new();
        // A file damaged enough makes a step fail outright ("database disk image is
        // malformed"): that is a finding of the check, reported with the others, not an
        // error of the check.
        let pragma = |sql: &str, problems: &mut Vec<String>| -> rusqlite::Result<()> {
            let mut stmt = inner.conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for r in rows {
                let r = r?;
                if r != "ok" {
                    problems.push(r);
                }
            }
            Ok(())
        };
        if let Err(e) = pragma("PRAGMA integrity_check", &mut problems) {
            problems.push(format!("integrity check: {e}"));
        }
        if self.is_encrypted() {
            let mut cipher = Vec::new();
            if let Err(e) = pragma("PRAGMA cipher_integrity_check", &mut cipher) {
                cipher.push(e.to_string());
            }
            problems.extend(cipher.into_iter().map(|p| format!("cipher: {p}")));
        }
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
        db.lock_bare().record_cache.len()
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
            let inner = db.lock_bare();
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
        let seen = db.lock_bare().data_version;
        other
            .update("notes", ids[2], Patch::new().set("n", 5))
            .unwrap();
        ck.vouch(&db.inner, before, seen).unwrap();
        assert_eq!(
            db.lock_bare().data_version,
            seen,
            "vouched for a foreign commit"
        );
        drop(slot);
        assert_eq!(n_of(&db, ids[2]), Value::from(5));
        assert_eq!(cached_rows(&db), 0);
    }
}
