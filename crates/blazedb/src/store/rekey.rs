//! Changing the password: `Database::rekey`.
//!
//! SQLCipher re-encrypts by copying, so the file is replaced, never rewritten in place:
//!
//! ```text
//!  take the file for this connection alone ── another connection has it open ──► InUse
//!  (locking_mode EXCLUSIVE, journal_mode MEMORY:                                (nothing changed)
//!   the WAL is checkpointed into the file and deleted)
//!        │
//!  export into FILE.rekey-tmp under the new key, fsync it
//!        │
//!  rename FILE.rekey-tmp → FILE, fsync the directory   ◄── the one step that changes FILE
//!        │
//!  close the old connection (the lock goes with it), open FILE with the new key
//! ```
//!
//! A crash anywhere leaves FILE whole under exactly one password: the old one up to the
//! rename (the copy is only a leftover, removed by the next open or rekey), the new one after
//! it.
//! No WAL holds anything at the rename: the old file was taken out of WAL mode first, so its
//! `-wal` and `-shm` files are gone, and none of its frames can be replayed onto the new file.
//!
//! Holding the file exclusively from the start to after the rename is what keeps other
//! connections safe. One already open holds a shared lock, so the rekey is refused rather
//! than swapping the file out from under it (its writes would go to the replaced file and
//! be lost). One opening meanwhile waits for the lock on the file it found by name, which
//! is the old one by the time it gets the lock; `open` notices that the name now leads to
//! another file and opens that instead (see `open.rs`, "replaced while opening").

use std::path::{Path, PathBuf};

use rusqlite::{params, ErrorCode};

use super::cipher_key::CipherKey;
use super::{Database, OpenOptions};
use crate::error::{OpenError, Result};

impl Database {
    /// Change the password: `Some` to (re-)encrypt, `None` to store the file unencrypted. An
    /// empty password is refused: pass `None` to decrypt.
    ///
    /// The file is replaced by a re-encrypted copy, so it must not be open anywhere else: if
    /// another connection has it open (another process, or another `Database` on the same
    /// file in this one), the rekey fails with [`OpenError::InUse`] and changes nothing.
    /// It writes the copy beside the file, so it needs about the file's size free on that
    /// disk; without that room it fails with [`Error::NoRoomForCopy`](crate::Error::NoRoomForCopy),
    /// saying how much, and changes nothing.
    /// The handle stays open and usable, also when the rekey fails, and keeps its watches,
    /// commit listeners and server role; only if the file then cannot be opened again (a
    /// disk failure, another process taking it exclusively) is the handle closed, and every
    /// operation on it says so and which password to open the file with. A crash during the
    /// rekey leaves the file under either the old password or the new one, with all its data
    /// (see the module comment).
    ///
    /// The old file is unlinked, not overwritten: its disk blocks, the old WAL's and those
    /// freed earlier keep what they held under the old key (or in clear, when this encrypts
    /// a plain file) until the file system reuses them. Overwriting the old file would not
    /// reach the others, nor SSD-remapped or copy-on-write blocks, so it is not attempted:
    /// data that must never be on disk in clear needs a password from its first write.
    pub fn rekey(&mut self, new_password: Option<&str>) -> Result<()> {
        if new_password == Some("") {
            // SQLCipher's empty key means "no encryption": the copy would be a plain file
            // that then fails to open as an encrypted one.
            return Err(crate::Error::InvalidArgument(
                "rekey: the new password is empty; pass None to store the file unencrypted".into(),
            ));
        }
        if self.password.is_none() && new_password.is_none() {
            return Ok(());
        }
        // The file itself, not a symbolic link to it: renamed over a link, the copy would
        // replace the link and leave the file as it was, in clear or under the old password,
        // and with this file's node id beside the new one (a copy's writes are then lost to
        // sync: an audit, 2026-12-07). A second name (a hard link) would keep the old file
        // the same way, and cannot be moved along: refused.
        let file = std::fs::canonicalize(&self.path).map_err(|source| OpenError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        if let Some(names) = self.pin.link_count().filter(|&n| n > 1) {
            return Err(crate::Error::InvalidArgument(format!(
                "rekey: {} has {names} names (hard links), and a rekey replaces the file by a \
                 re-encrypted copy under one name only: the others would keep the old file, \
                 under the old password (or none), as a second database with this one's node \
                 id. Remove the other names first (`find / -samefile {}` lists them), then \
                 rekey",
                self.path.display(),
                file.display()
            )));
        }
        let copy = rekey_copy_path(&file);
        // Derived here, as `open` derives it (`cipher_key.rs`), and handed to SQLCipher in
        // raw form: given the password itself, SQLCipher would read a password of the form
        // `x'<hex>'` as a raw key, and the file would not open with that password.
        let new_key = new_password
            .map(|pw| new_file_key(pw, &self.path))
            .transpose()?;
        // It holds the old file and the old key.
        self.close_checkpointer()?;
        let mut renamed = false;
        let swapped = self
            .swap_in_rekeyed_copy(&file, &copy, new_key.as_ref(), &mut renamed)
            // Before the rename, a full disk is a copy that did not fit: say how much room
            // it needs (an audit, 2026-12-07: "database or disk is full: Error code 1: SQL
            // error or missing database", with no advice).
            .map_err(|e| match renamed {
                false => self.no_room_for_copy(e, "the password change (rekey)"),
                true => e,
            });
        // `Database::open` moves each password into a string it wipes.
        let options = self.options.clone();
        let options_with = |password: Option<&str>| OpenOptions {
            password: password.map(str::to_owned),
            ..options.clone()
        };
        let result = swapped.and_then(|()| Database::open(&self.path, options_with(new_password)));
        match result {
            Ok(reopened) => {
                self.take_connection_of(reopened);
                Ok(())
            }
            Err(e) => {
                // The handle's connection is closed, or still holds the file exclusively
                // (the rekey failed after taking it): close it, so that the file is free,
                // and reopen the handle on the file in place (the old one before the rename,
                // the new one after), so that it stays usable.
                self.close_connection();
                let password = match renamed {
                    true => new_password,
                    false => self.password.as_ref().map(|p| p.as_str()),
                };
                match Database::open(&self.path, options_with(password)) {
                    Ok(reopened) => self.take_connection_of(reopened),
                    Err(reopen) => self.mark_lost(&e, &reopen, renamed),
                }
                Err(e)
            }
        }
    }

    /// Take the file for this connection alone, write the re-encrypted copy, move it over
    /// the file (`renamed` says whether that happened) and close this connection. On an
    /// error before the rename the file is as it was (in rollback-journal mode, which the
    /// next open turns back to WAL).
    fn swap_in_rekeyed_copy(
        &mut self,
        file: &Path,
        copy: &Path,
        new_key: Option<&CipherKey>,
        renamed: &mut bool,
    ) -> Result<()> {
        let path = file.to_path_buf();
        let p = self.path.display().to_string();
        let io = |source: std::io::Error| OpenError::Io {
            path: p.clone(),
            source,
        };
        let mut inner = self.lock_bare()?;
        let conn = &inner.conn;
        // Every open connection to a WAL file holds a shared lock on it: with one of them
        // open, the exclusive lock is refused at once (no busy wait: it would not let go).
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        let in_use = |e: &rusqlite::Error| e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy);
        // Leaving WAL mode takes the exclusive lock, checkpoints the WAL into the file and
        // deletes the `-wal` and `-shm` files; the lock is then held until the connection
        // closes. A MEMORY journal keeps this connection from creating a `-journal` file,
        // which the new file would find under the same name.
        let mode: String = match conn.query_row("PRAGMA journal_mode = MEMORY", [], |r| r.get(0)) {
            Err(e) if in_use(&e) => return Err(OpenError::InUse { path: p }.into()),
            r => r?,
        };
        if !mode.eq_ignore_ascii_case("memory") {
            // SQLite leaves the mode as it was when it cannot take the lock.
            return Err(OpenError::InUse { path: p }.into());
        }
        // Drop every page this connection has cached: leaving WAL mode checkpointed other
        // processes' commits into the file without checking the cache against them, and the
        // copy below would read stale pages beside fresh ones (a `put` of another process
        // that committed while this handle was open, deriving the new key, left the copy's
        // field table and its index disagreeing: found by a crash and concurrency audit).
        conn.execute_batch("PRAGMA shrink_memory")?;
        // Read the schema anew as well: another connection may have changed it since this
        // one last read it (a `vacuum`, which bumps the schema cookie, of another process
        // that ended just before this rekey took the file), and `sqlcipher_export` prepares
        // its statements with the legacy `sqlite3_prepare`, which fails with "database schema
        // has changed" rather than preparing them again (an audit, 2026-12-07: 2 rekeys in 8
        // run during a vacuum). A statement of ours is prepared again and reloads the schema;
        // the file is this connection's alone from here on, so the schema stays current.
        conn.query_row("SELECT count(*) FROM main.sqlite_master", [], |_| Ok(()))?;
        // A copy left by a crashed rekey is garbage; with the file held, it is not another
        // rekey's copy in progress (and neither is one this rekey fails to finish).
        remove_copy(copy);
        let written = write_copy(conn, &path, copy, new_key);
        if written.is_err() {
            remove_copy(copy);
        }
        written?;
        // The copy was created under the umask: give it the old file's permissions (an 0600
        // database must not come back 0644, readable by everyone, least of all when the
        // rekey removed its encryption). Its owner follows when we may set it (as root).
        if let Ok(meta) = std::fs::metadata(&path) {
            let _ = std::fs::set_permissions(copy, meta.permissions());
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let _ = std::os::unix::fs::chown(copy, Some(meta.uid()), Some(meta.gid()));
            }
        }
        if let Err(e) = std::fs::rename(copy, &path) {
            remove_copy(copy);
            return Err(io(e).into());
        }
        *renamed = true;
        // The rename is durable once the directory is: without this, a power loss could
        // bring back the old file after the handle had written to the new one.
        sync_parent_dir(&path).map_err(io)?;
        // Only now let go of the old file: an opener waiting for its lock finds the name
        // leading to the new file (see the module comment).
        let old = std::mem::replace(&mut inner.conn, rusqlite::Connection::open_in_memory()?);
        old.close().map_err(|(_, e)| e)?;
        Ok(())
    }

    /// Close the handle's connection to the file (an in-memory one takes its place until
    /// [`Database::take_connection_of`]), letting go of any lock it holds.
    fn close_connection(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(placeholder) = rusqlite::Connection::open_in_memory() {
            drop(std::mem::replace(&mut inner.conn, placeholder));
        }
    }

    /// The handle could not be reopened after a failed rekey: it has no file, and every
    /// operation says so, and what to do, instead of failing on the stand-in connection.
    fn mark_lost(&mut self, rekey: &crate::Error, reopen: &crate::Error, renamed: bool) {
        let password = match renamed {
            true => "the new password",
            false => "the old password (it was not changed)",
        };
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.lost = Some(format!(
            "this handle to {} was closed: the password change failed ({rekey}) and reopening \
             the file failed too ({reopen}); open the database again, with {password}",
            self.path.display()
        ));
    }

    /// Put the connection of `reopened` (this handle's file, opened anew) in place of this
    /// handle's, keeping what belongs to the handle rather than to the connection: its
    /// watches, commit listeners, noted peer cursors and server role. The old connection
    /// goes with `reopened`.
    fn take_connection_of(&mut self, mut reopened: Database) {
        std::mem::swap(&mut self.inner, &mut reopened.inner);
        std::mem::swap(&mut self.key, &mut reopened.key);
        std::mem::swap(&mut self.options, &mut reopened.options);
        std::mem::swap(&mut self.password, &mut reopened.password);
        std::mem::swap(&mut self.checkpointer, &mut reopened.checkpointer);
        // The old file's pin goes with its connection (after it: `pin` is dropped last).
        std::mem::swap(&mut self.pin, &mut reopened.pin);
        self.node = reopened.node;
    }
}

/// Export the database `conn` has open into a new file `copy` under `new_key` (`None`: in
/// clear), and fsync it: on disk before the rename makes it the database.
fn write_copy(
    conn: &rusqlite::Connection,
    file: &Path,
    copy: &Path,
    new_key: Option<&CipherKey>,
) -> Result<()> {
    conn.execute(
        "ATTACH DATABASE ?1 AS rekeyed KEY ?2",
        params![
            copy.display().to_string(),
            new_key.map_or("", CipherKey::pragma_value)
        ],
    )?;
    let exported = (|| -> rusqlite::Result<()> {
        // An attached file gets SQLCipher's defaults, not the main file's settings: the copy
        // is written with this build's page HMAC (so rekeying also converts a file made with
        // the old one). Its journal is in memory: a copy cut short is never used, so it
        // needs no journal on disk to recover from.
        if new_key.is_some() {
            conn.execute_batch(&format!(
                "PRAGMA rekeyed.cipher_hmac_algorithm = {}",
                super::PAGE_HMAC
            ))?;
        }
        conn.query_row("PRAGMA rekeyed.journal_mode = MEMORY", [], |_| Ok(()))?;
        conn.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))?;
        // The copy takes the file's place: stamped as itself, it keeps the file's node id
        // (`copied_file.rs`; the rename keeps its inode and birth time).
        if let Some(stamp) = super::copied_file::stamp_for_replacement(conn, file, copy)? {
            conn.execute(
                "INSERT OR REPLACE INTO rekeyed.meta (key, value) VALUES ('file_stamp', ?1)",
                [stamp],
            )?;
        }
        Ok(())
    })();
    let detached = conn.execute_batch("DETACH DATABASE rekeyed");
    exported?;
    detached?;
    std::fs::File::open(copy)
        .and_then(|f| f.sync_all())
        .map_err(|source| OpenError::Io {
            path: copy.display().to_string(),
            source,
        })?;
    Ok(())
}

/// Where the re-encrypted copy of `path` is written before it replaces the file.
fn rekey_copy_path(path: &Path) -> PathBuf {
    let mut copy = path.as_os_str().to_owned();
    copy.push(".rekey-tmp");
    PathBuf::from(copy)
}

/// Remove the copy a rekey killed before its rename left beside `path` (called by `open`,
/// once its connection keeps any rekey out): a whole second copy of the data, under the
/// password the rekey was to set, that nothing will read. Best effort, as [`remove_copy`].
pub(crate) fn remove_leftover_copy(path: &Path) {
    // Beside the file, where the rekey wrote it, when `path` is a symbolic link.
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let copy = rekey_copy_path(&file);
    if copy.is_file() {
        remove_copy(&copy);
    }
}

/// Remove a copy (and a journal SQLite may have left beside it): one cut short by an error
/// or left by a crash. Best effort: a leftover is never read, and the next open or rekey
/// tries again.
fn remove_copy(copy: &Path) {
    let _ = std::fs::remove_file(copy);
    let mut journal = copy.as_os_str().to_owned();
    journal.push("-journal");
    let _ = std::fs::remove_file(PathBuf::from(journal));
}

/// The key for `password` under a new random salt, which SQLCipher writes into the copy.
fn new_file_key(password: &str, path: &Path) -> Result<CipherKey> {
    let failed = |what: &str, e: openssl::error::ErrorStack| OpenError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!("{what}: {e}")),
    };
    let salt = CipherKey::new_salt().map_err(|e| failed("no random salt for the copy", e))?;
    CipherKey::derive(password, &salt)
        .map_err(|e| failed("deriving the key from the password failed", e).into())
}

/// Make a rename in `path`'s directory durable.
pub(crate) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    /// What a handle does when a failed rekey could not reopen its file (which no test can
    /// bring about from outside: the reopen fails only on a disk or lock failure right after
    /// the rename): reads and writes fail, saying so and what to do, and touch no file.
    #[test]
    fn a_handle_that_lost_its_file_says_so_on_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut db = Database::open(&path, OpenOptions::with_password("old")).unwrap();
        let id = db.insert("c", [("n", Value::Int(1))]).unwrap();
        let failed = |what: &str| {
            crate::Error::from(OpenError::Busy {
                path: format!("{what} {}", path.display()),
            })
        };
        db.close_connection();
        db.mark_lost(&failed("rekey"), &failed("reopen"), true);
        for e in [
            db.get("c", id).unwrap_err(),
            db.insert("c", [("n", Value::Int(2))]).unwrap_err(),
            db.scan("c").unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                msg.contains("was closed: the password change failed")
                    && msg.contains("open the database again, with the new password"),
                "{msg}"
            );
        }
        drop(db);
        let reopened = Database::open(&path, OpenOptions::with_password("old")).unwrap();
        assert_eq!(
            reopened.count("c").unwrap(),
            1,
            "nothing written after the loss"
        );
    }
}
