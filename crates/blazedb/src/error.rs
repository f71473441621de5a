//! Errors, one enum per operation family, and the umbrella [`Error`].

use crate::codec::DecodeError;
use crate::limits::ERROR_ECHO_CHARS_MAX;
use crate::query::QueryError;
use crate::types::ClockSkewError;

/// Opening (or re-keying) a database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is encrypted and the password does not open it. SQLCipher cannot tell this
    /// from a damaged first page: both fail the page's HMAC.
    #[error(
        "wrong password for {path}: the file is encrypted with a different password (or, if \
         the password is right, its first page is damaged: restore it from a backup or a peer)"
    )]
    WrongPassword {
        /// The database file.
        path: String,
    },
    /// The file is encrypted (or not a database at all) and no password was given: open it
    /// with its password in [`OpenOptions::password`](crate::OpenOptions::password). The
    /// message says so in terms of the library; a program that takes the password elsewhere
    /// (the CLI: `BLAZEDB_PASSWORD`, `--password-file`) adds where its users give it.
    #[error(
        "{path} is encrypted (or is not a database) and no password was given: open it with \
         its password, or check the path"
    )]
    PasswordRequired {
        /// The database file.
        path: String,
    },
    /// A password was given but the file is a plain, unencrypted database.
    #[error("{path} is not encrypted: open it without a password, or encrypt it with `rekey`")]
    NotEncrypted {
        /// The database file.
        path: String,
    },
    /// The file is some other kind of file, or an SQLite database of another application.
    #[error("{path} is not a BlazeDB database: {reason}")]
    NotABlazeDb {
        /// The file.
        path: String,
        /// What gave it away.
        reason: String,
    },
    /// The file is damaged (truncated, overwritten, failed its integrity check).
    #[error("{path} is corrupted: {reason}; restore it from a backup or a peer")]
    Corrupted {
        /// The file.
        path: String,
        /// What is damaged.
        reason: String,
    },
    /// Another connection (another process, or another handle in this one) has the file
    /// open, and the operation replaces the file (`Database::rekey`).
    #[error(
        "{path} is open elsewhere (another process or handle, e.g. `blazedb serve` or `sync`): \
         close it and try again; nothing was changed"
    )]
    InUse {
        /// The database file.
        path: String,
    },
    /// Another connection kept the file locked for longer than the open waits (10 s): a
    /// password change (`rekey`) copying a large file, or another process holding it
    /// exclusively. Unlike the other errors, the same open may succeed later.
    #[error(
        "{path} is locked by another connection (a password change, or another process \
         holding it exclusively) and stayed locked for 10 s: try again once it is done"
    )]
    Busy {
        /// The database file.
        path: String,
    },
    /// The file was written by a newer BlazeDB.
    #[error(
        "{path} has format version {found}, this build reads up to {supported}: upgrade BlazeDB"
    )]
    NewerFormat {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The file could not be read or created.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A write could not be done. Nothing of the transaction it belonged to was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The record does not exist (or was deleted).
    #[error("no record {id} in collection {collection:?}")]
    NotFound {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// An insert named an id that is already taken by a live record.
    #[error("record {id} already exists in collection {collection:?}: use update or upsert")]
    AlreadyExists {
        /// The collection.
        collection: String,
        /// The record id.
        id: String,
    },
    /// A name (collection or field) is empty, too long or has forbidden characters.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// `collection` or `field`.
        what: &'static str,
        /// The name, or for one longer than [`crate::limits::ERROR_ECHO_CHARS_MAX`]
        /// characters its start, `…` and its length in bytes: an error repeats at most that
        /// much of a caller's text.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A size limit was exceeded.
    #[error("{what} is {got}, over the limit of {max} (see blazedb::limits)")]
    Limit {
        /// What was too large.
        what: &'static str,
        /// The size found.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A field's value is larger than one value may be ([`crate::limits::VALUE_BYTES_MAX`]).
    #[error(
        "{} is {bytes} bytes encoded, over the limit of {max} bytes for one value: keep large \
         data (files, images, long logs) outside the database and store a reference to it (a \
         path, a URL or a hash), or split it into several fields or records",
        value_of(field)
    )]
    ValueTooLarge {
        /// The field (empty when the value is not a field's, e.g. a whole record's).
        field: String,
        /// The value's encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A field's value nests lists and maps deeper than [`crate::limits::VALUE_DEPTH_MAX`].
    #[error(
        "{} nests lists and maps more than {max} levels deep: flatten it (a map keyed by \
         path, records that refer to each other by id), or store the deep part as JSON text",
        value_of(field)
    )]
    ValueTooDeep {
        /// The field (empty when the value is not a field's).
        field: String,
        /// The limit.
        max: usize,
    },
    /// An operation does not fit the field's current value (e.g. increment of a text).
    #[error(
        "field {field:?} holds {} {found}, and {op} needs {expected}: to change its kind, write \
         the field with a plain value of that kind first",
        article(found)
    )]
    TypeMismatch {
        /// The field.
        field: String,
        /// The operation.
        op: &'static str,
        /// The type it needs.
        expected: &'static str,
        /// The type it found.
        found: &'static str,
    },
    /// A counter would overflow i64.
    #[error("counter {field:?} would overflow")]
    Overflow {
        /// The field.
        field: String,
    },
}

/// Applying changes from a peer failed; the whole batch was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A timestamp in the batch was too far in the future.
    #[error(transparent)]
    ClockSkew(#[from] ClockSkewError),
    /// The batch named something invalid (a bad collection or field name, an oversized value).
    #[error("invalid change from peer: {0}")]
    Invalid(String),
}

/// Any BlazeDB error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the database failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A write failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A query expression is invalid.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Applying a peer's changes failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Stored bytes could not be decoded: the file is damaged.
    #[error("corrupted record data: {0}; run an integrity check and restore from a peer")]
    Corrupted(#[from] DecodeError),
    /// Time travel asked for a moment whose history was already compacted.
    #[error(
        "history before {horizon} was compacted by the retention policy; ask for a later time"
    )]
    HistoryCompacted {
        /// The earliest readable time (RFC 3339).
        horizon: String,
    },
    /// An invalid argument (named in the message).
    #[error("{0}")]
    InvalidArgument(String),
    /// The storage engine failed.
    #[error("storage error: {0}{advice}", advice = sqlite_advice(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The database file was deleted (or another file was renamed over it) while this
    /// handle had it open. Writes are refused from then on: the deleted file still takes
    /// them, but it is freed when the last handle closes, and they would be lost with it.
    /// Reads still see the open file. See
    /// [`Database::file_is_gone`](crate::Database::file_is_gone).
    #[error(
        "{path} was deleted (or replaced by another file) while open: writes are refused, \
         since they would be lost with the deleted file when it is closed (reads still see \
         it); put the database back (from a backup, or sync a new file from a peer) and open \
         it again"
    )]
    FileGone {
        /// The path the file was opened by.
        path: String,
    },
    /// A call on a [`Database`](crate::Database) from code that already holds its lock on
    /// the same thread: the application's [`transaction`](crate::Database::transaction)
    /// closure calling the handle it runs on. Waiting would never end (the lock is not
    /// re-entrant), so the call is refused.
    #[error(
        "this database is already in use by a transaction on this thread (a call on the \
         Database from inside its own transaction closure would wait for itself forever): \
         read and write through the Tx the closure was given (tx.get, tx.update, ...), or \
         make the call before or after the transaction"
    )]
    Reentrant,
}

impl Error {
    /// The disk (or the file's size limit) is full: the write failed and nothing of it was
    /// kept. Writes may succeed again once there is room; reads still work.
    pub fn is_disk_full(&self) -> bool {
        let Error::Sqlite(e) = self else {
            return false;
        };
        e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
    }

    /// The file takes no writes for now, for a reason outside the database: the disk is
    /// full ([`Error::is_disk_full`]) or the file was deleted while open
    /// ([`Error::FileGone`]). Reads still work; bookkeeping may wait in memory.
    pub(crate) fn store_refuses_writes(&self) -> bool {
        self.is_disk_full() || matches!(self, Error::FileGone { .. })
    }

    /// Another connection held a lock on the file for longer than the busy timeout (a long
    /// write transaction, a checkpoint, another process's maintenance): the same call may
    /// succeed later, unlike a damaged file or an invalid argument.
    pub fn is_busy(&self) -> bool {
        let Error::Sqlite(e) = self else {
            return false;
        };
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// `text` as an error message may repeat it: whole when it has at most
/// [`ERROR_ECHO_CHARS_MAX`] characters, else its first ones (cut on a character boundary),
/// `…` and its length, as in `aaaa… (1048576 bytes)`. Every error that names a caller's
/// text that may be of any length (an invalid name, an unparsable id or sort key) shows it
/// through here: a message is for reading, and the caller has the text itself.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(ERROR_ECHO_CHARS_MAX) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// "the value of field \"f\"", or "a value" when no field is named.
fn value_of(field: &str) -> String {
    if field.is_empty() {
        "a value".to_owned()
    } else {
        format!("the value of field {field:?}")
    }
}

/// The article before a type name as it is spoken: "an int", "a text", "a uuid".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) && !word.starts_with("uu") {
        "an"
    } else {
        "a"
    }
}

/// What to do about the storage failures a user can fix: a full disk, a file this user may
/// not write. (Whatever failed was rolled back: nothing of it is in the file.)
fn sqlite_advice(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => {
            ": free space on the disk that holds the database (or raise its size limit), then \
             try again; nothing of the failed write was kept, and a sync sends it again"
        }
        Some(rusqlite::ErrorCode::ReadOnly) => {
            ": this user may not write the database file or its directory (SQLite also creates \
             the -wal and -shm files beside it): check their permissions and the mount"
        }
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
            ": check that the database's directory exists and this user may read and write it"
        }
        _ => "",
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> Error {
        Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    /// A full disk (here: the file's page limit, which SQLite reports the same way) fails
    /// the write with what to do, keeps nothing of it, and the database works again once
    /// there is room.
    #[test]
    fn a_full_disk_says_to_free_space_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            crate::Database::open(dir.path().join("a.db"), crate::OpenOptions::default()).unwrap();
        let first = db.insert("c", [("n", 0i64)]).unwrap();
        let pages: i64 = {
            let inner = db.lock().unwrap();
            inner
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap()
        };
        let limit = |n: i64| {
            let inner = db.lock().unwrap();
            inner
                .conn
                .query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap();
        };
        limit(pages);
        let big = "x".repeat(64 * 1024);
        let e = db.insert("c", [("blob", big.as_str())]).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("storage error: database or disk is full: free space on the disk"),
            "{m}"
        );
        assert_eq!(
            db.count("c").unwrap(),
            1,
            "nothing of the failed write kept"
        );
        limit(1_000_000);
        db.insert("c", [("blob", big.as_str())]).unwrap();
        assert_eq!(db.count("c").unwrap(), 2);
        assert!(db.get("c", first).unwrap().is_some());
    }

    /// A text of up to the limit comes whole; a longer one is cut between characters (here
    /// of 2 and 4 bytes: a cut by bytes would panic inside one) and says its length.
    #[test]
    fn an_excerpt_cuts_long_texts_between_characters_and_gives_their_length() {
        let max = ERROR_ECHO_CHARS_MAX;
        let fits = "é".repeat(max);
        assert_eq!(excerpt(&fits), fits);
        assert_eq!(excerpt(""), "");
        let over = format!("{fits}🦀");
        assert_eq!(excerpt(&over), format!("{fits}… ({} bytes)", 2 * max + 4));
        let crabs = "🦀".repeat(max + 1);
        assert_eq!(
            excerpt(&crabs),
            format!("{}… ({} bytes)", "🦀".repeat(max), 4 * (max + 1))
        );
    }

    #[test]
    fn type_names_take_the_article_they_are_spoken_with() {
        let spoken: Vec<String> = ["int", "text", "uuid", "list", "null"]
            .iter()
            .map(|t| format!("{} {t}", article(t)))
            .collect();
        assert_eq!(spoken, ["an int", "a text", "a uuid", "a list", "a null"]);
    }

    #[test]
    fn a_read_only_file_says_to_check_permissions() {
        let m = sqlite(rusqlite::ffi::SQLITE_READONLY).to_string();
        assert!(
            m.contains("may not write the database file or its directory"),
            "{m}"
        );
        let m = sqlite(rusqlite::ffi::SQLITE_CANTOPEN).to_string();
        assert!(
            m.contains("check that the database's directory exists"),
            "{m}"
        );
        let m = sqlite(rusqlite::ffi::SQLITE_CORRUPT).to_string();
        assert!(!m.contains(": check"), "no advice where none fits: {m}");
    }

    #[test]
    fn only_a_lock_held_elsewhere_is_busy() {
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_busy());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_busy());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_busy());
        assert!(!sqlite(rusqlite::ffi::SQLITE_NOTADB).is_busy());
        assert!(!Error::InvalidArgument("x".into()).is_busy());
    }
}
