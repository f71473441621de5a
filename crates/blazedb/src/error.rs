//! Errors, one enum per operation family, and the umbrella [`Error`]. What they advise is
//! worded once, in [`advice`].

pub mod advice;

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
         the password is right, its first page is damaged: {})",
        advice::RESTORE
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
    #[error("{path} is corrupted: {reason}; {}", advice::RESTORE)]
    Corrupted {
        /// The file.
        path: String,
        /// What is damaged.
        reason: String,
    },
    /// Another connection (another process, or another handle in this one) has the file
    /// open, and the operation replaces the file (`Database::rekey`).
    #[error(
        "{path} is open elsewhere (another handle in this process, or another process): close \
         it and try again; nothing was changed"
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
        "{path} has format version {found}, this build reads up to {supported}: upgrade BlazeDB \
         (to go back to this build instead, put back the copy of the file taken before it was \
         upgraded: README, \"Upgrading\")"
    )]
    NewerFormat {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The file is of an older storage format, which this build upgrades in place before
    /// using it, and another process has it open (a handle of an earlier build that takes
    /// the format lock: a `blazedb listen` or `sync --watch` service, a relay): upgraded
    /// under it, that process would go on reading the new format as the old. Nothing was
    /// changed; the open succeeds once the other process has closed the file.
    #[error(
        "{path} is storage format {found}, which this build upgrades to format {supported} \
         before using it, but another process has it open (e.g. a `blazedb listen` or \
         `sync --watch` service, or a relay, of an earlier build): stop that process and try \
         again, then restart it with this build; nothing was changed"
    )]
    UpgradeBlocked {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
        /// The format this build upgrades it to.
        supported: u32,
    },
    /// The file is of an older storage format, which this build upgrades in place before
    /// using it (also to read), and this process may not write it (file permissions, an
    /// immutable file, a read-only mount). Nothing was changed.
    #[error(
        "{path} is storage format {found}, and this build reads it only once it has upgraded \
         it to format {supported}, which writes to the file, but this process may not write \
         it ({reason}): open it once with write access (e.g. as its owner, or with the mount \
         read-write), or copy it somewhere writable and open the copy. {}",
        advice::one_way(*found)
    )]
    UpgradeNeedsWrite {
        /// The file.
        path: String,
        /// Its format version.
        found: u32,
        /// The format this build upgrades it to.
        supported: u32,
        /// SQLite's error.
        reason: String,
    },
    /// The file is of an older storage format, and the copy of it as it is that the upgrade
    /// keeps first (`<file>.format-N.backup`, see [`Database::upgrade_backup`]) could not be
    /// written: no room for it, or its directory refuses new files. Nothing was changed.
    ///
    /// [`Database::upgrade_backup`]: crate::Database::upgrade_backup
    #[error(
        "{path} is storage format {found}, which this build upgrades to format {supported} \
         after keeping a copy of the file as it is at {path}.format-{found}.backup (the way \
         back to builds of format {found}), and that copy could not be written ({source}): \
         {}; nothing was changed",
        advice::room_for_upgrade_backup(source, std::path::Path::new(path), *needed_bytes, *free_bytes)
    )]
    UpgradeBackupFailed {
        /// The file (the copy was to be `{path}.format-{found}.backup`).
        path: String,
        /// Its format version.
        found: u32,
        /// The format this build upgrades it to.
        supported: u32,
        /// About what the copy needs: the file's size.
        needed_bytes: u64,
        /// The space left there for this user, when the file system says.
        free_bytes: Option<u64>,
        /// Why writing the copy failed.
        source: std::io::Error,
    },
    /// The disk that holds the file is full: SQLite could not make the room opening needs,
    /// also to read (it creates the database's `-wal` and `-shm` files beside it and sizes
    /// the `-shm` file). Nothing was changed; the same open succeeds once there is room.
    #[error(
        "cannot open {path}: the disk that holds {dir} is full{}, and {} ({reason})",
        free_text(*free_bytes),
        advice::FREE_SPACE_TO_OPEN
    )]
    DiskFull {
        /// The file.
        path: String,
        /// Its directory.
        dir: String,
        /// The space left there for this user, when the file system says and it is little
        /// (`limits::DISK_NEARLY_FULL_BYTES`).
        free_bytes: Option<u64>,
        /// SQLite's error.
        reason: String,
    },
    /// The file system that holds the file has no free inodes: it can create no more files,
    /// whatever space it has left, and SQLite could not create the database's `-wal` and
    /// `-shm` files (also needed to read) or the file itself. Nothing was changed; the same
    /// open succeeds once files were deleted there.
    #[error(
        "cannot open {path}: the file system that holds {dir} has no free inodes (files) \
         left, and {} ({reason})",
        advice::FREE_INODES
    )]
    NoFreeInodes {
        /// The file.
        path: String,
        /// Its directory.
        dir: String,
        /// SQLite's error.
        reason: String,
    },
    /// The file's directory is on a read-only mount, or this user may not create files in
    /// it: SQLite could not create the database's `-wal` and `-shm` files there, which it
    /// needs also to read.
    #[error(
        "cannot open {path}: {dir} {why}, and {} ({reason})",
        advice::writable_directory(std::path::Path::new(dir), std::path::Path::new(path))
    )]
    DirectoryNotWritable {
        /// The file.
        path: String,
        /// Its directory.
        dir: String,
        /// Why nothing can be created there ("is on a read-only file system").
        why: String,
        /// SQLite's error.
        reason: String,
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
    #[error("corrupted record data: {0}; {advice}", advice = advice::DAMAGED)]
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
    #[error("storage error: {0}{advice}", advice = advice_suffix(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// An operation that writes a copy of the whole database ([`Database::vacuum`],
    /// [`Database::rekey`]) found no room for it on the disk that holds the file. Nothing
    /// was changed; the same call succeeds once there is room.
    ///
    /// [`Database::vacuum`]: crate::Database::vacuum
    /// [`Database::rekey`]: crate::Database::rekey
    #[error(
        "{operation} of {path} failed for want of room on its disk, and nothing was changed: \
         {}",
        advice::room_for_copy(*needed_bytes, std::path::Path::new(dir), *free_bytes)
    )]
    NoRoomForCopy {
        /// What was being done: `vacuum`, `the password change (rekey)`.
        operation: &'static str,
        /// The database file.
        path: String,
        /// Its directory.
        dir: String,
        /// About what the copy needs: the file's size.
        needed_bytes: u64,
        /// The space left there for this user, when the file system says.
        free_bytes: Option<u64>,
    },
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
    /// The file system that holds the database turned read-only while the file was open: a
    /// write failed with an I/O error, and the file's directory then refused a new file
    /// (`EROFS`). ext4 mounted with `errors=remount-ro` does this after an I/O error on its
    /// disk, and nothing else tells it (`statvfs` still says read-write). Writes are refused
    /// from then on, nothing of the failed one was kept; reads still see the file. See
    /// [`Database::file_system_read_only`](crate::Database::file_system_read_only).
    #[error(
        "{path} is on a file system that turned read-only while it was open (an I/O error on \
         its disk? the kernel's log says; /proc/mounts shows the mount as ro or \
         emergency_ro): writes are refused, and nothing of the failed one was kept (reads \
         still work); {}",
        advice::REPAIR_READ_ONLY_FS
    )]
    FileSystemReadOnly {
        /// The path the file was opened by.
        path: String,
    },
    /// Another process upgraded the file to a newer storage format while this handle had it
    /// open: what it stores now may not read as this build expects (it is not damaged). Every
    /// read and write on the handle fails so; open the file with a build that reads the
    /// format.
    #[error(
        "{path} was upgraded to storage format {found} by a newer BlazeDB while this process \
         had it open (this build reads up to format {supported}); the file is not damaged: \
         restart this process with the newer build"
    )]
    UpgradedWhileOpen {
        /// The file.
        path: String,
        /// Its format version now.
        found: u32,
        /// The newest this build reads.
        supported: u32,
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
    /// The file takes no writes for now, for a reason outside the database: the disk is
    /// full ([`Error::is_disk_full`]), the file was deleted while open
    /// ([`Error::FileGone`]) or its file system turned read-only
    /// ([`Error::FileSystemReadOnly`]). Reads still work; bookkeeping may wait in memory.
    pub(crate) fn store_refuses_writes(&self) -> bool {
        self.is_disk_full()
            || matches!(
                self,
                Error::FileGone { .. } | Error::FileSystemReadOnly { .. }
            )
    }

    /// Whether this may be a write's I/O failure, which a file system that turned
    /// read-only while open causes: SQLite's I/O errors (`SQLITE_IOERR_*`, but not the
    /// shared-memory file's growth, a full disk: [`is_shm_growth`]) and `SQLITE_READONLY`,
    /// and this crate's own file operations failing with `EIO` or `EROFS`.
    pub(crate) fn may_be_read_only_fs(&self) -> bool {
        match self {
            Error::Sqlite(e) => {
                !is_shm_growth(e)
                    && matches!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::ReadOnly)
                    )
            }
            Error::Io(e) => e.kind() == std::io::ErrorKind::ReadOnlyFilesystem || is_eio(e),
            _ => false,
        }
    }

    /// Whether the message names the database file already: every [`OpenError`] ("wrong
    /// password for PATH", "cannot open PATH: ..."), [`Error::FileGone`],
    /// [`Error::FileSystemReadOnly`] and [`Error::NoRoomForCopy`]. A caller that puts the error after the file's path ("cannot
    /// open PATH: ...") leaves the path out then, not to say it twice.
    pub fn names_the_file(&self) -> bool {
        matches!(
            self,
            Error::Open(_)
                | Error::FileGone { .. }
                | Error::FileSystemReadOnly { .. }
                | Error::NoRoomForCopy { .. }
        )
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

    /// The disk that holds the database is full (or the file reached its size limit, or its
    /// file system has no free inodes: [`OpenError::NoFreeInodes`]): what failed was rolled
    /// back, nothing of it was kept. The same call may succeed once there is room; reads of
    /// an open database still work.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Sqlite(e) => is_disk_full(e),
            Error::NoRoomForCopy { .. }
            | Error::Open(OpenError::DiskFull { .. } | OpenError::NoFreeInodes { .. }) => true,
            Error::Open(OpenError::UpgradeBackupFailed { source, .. }) => {
                source.kind() == std::io::ErrorKind::StorageFull
            }
            Error::Io(source) | Error::Open(OpenError::Io { source, .. }) => {
                source.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// Whether SQLite failed for want of room: its "database or disk is full" (also as SQLCipher's
/// `sqlcipher_export` passes it on, as a plain error with that text), or the shared-memory
/// file that could not grow ([`is_shm_growth`]).
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    if is_shm_growth(e) {
        return true;
    }
    match e {
        rusqlite::Error::SqliteFailure(f, message) => {
            f.code == rusqlite::ErrorCode::DiskFull
                || (f.extended_code == rusqlite::ffi::SQLITE_ERROR
                    && message.as_deref() == Some(DISK_FULL_TEXT))
        }
        _ => false,
    }
}

/// Whether a file operation failed with `EIO` (an I/O error on the disk).
fn is_eio(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// SQLite's text for `SQLITE_FULL` (`sqlite3ErrStr`).
const DISK_FULL_TEXT: &str = "database or disk is full";

/// Whether SQLite failed to create, grow or map the database's shared-memory file (`-shm`):
/// on Linux the write that grows it fails for want of room, at open (also to read) and as
/// the write-ahead log grows.
pub(crate) fn is_shm_growth(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.extended_code,
            rusqlite::ffi::SQLITE_IOERR_SHMSIZE | rusqlite::ffi::SQLITE_IOERR_SHMMAP
        )
    )
}

/// SQLite's error in short, for a message whose own words say what it means: `SQLite: disk
/// I/O error, code 4874`.
pub(crate) fn sqlite_brief(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => format!("SQLite: {e}, code {}", f.extended_code),
        _ => format!("SQLite: {e}"),
    }
}

/// SQLite's error in full, for a message that carries it as text: its message and its code's
/// description (`disk I/O error: Error code 4874: I/O error within the xShmMap method (...)`).
pub(crate) fn sqlite_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            let (text, code) = (e.to_string(), f.to_string());
            if text.contains(&code) {
                text
            } else {
                format!("{text}: {code}")
            }
        }
        _ => e.to_string(),
    }
}

/// `: what to do` after an SQLite error's text, or nothing where no advice fits.
fn advice_suffix(e: &rusqlite::Error) -> String {
    sqlite_advice(e)
        .map(|a| format!(": {a}"))
        .unwrap_or_default()
}

/// ` (N free)` for a message that says a disk is full, or nothing when the space is unknown.
fn free_text(free_bytes: Option<u64>) -> String {
    free_bytes
        .map(|b| format!(" ({} free)", advice::bytes(b)))
        .unwrap_or_default()
}

/// `text` as an error message may repeat it: whole when it has at most
/// [`ERROR_ECHO_CHARS_MAX`] characters, else its first ones (cut on a character boundary),
/// `…` and its length, as in `aaaa… (1048576 bytes)`. Every error that names a caller's
/// text that may be of any length (an invalid name, an unparsable id or sort key) shows it
/// through here: a message is for reading, and the caller has the text itself. Public so
/// that crates built on this one (the relay, echoing a client's header) cut alike.
pub fn excerpt(text: &str) -> String {
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

/// What to do about the storage failures a user can mend: a full disk, a file this user may
/// not write, a damaged file. (Whatever failed was rolled back: nothing of it is in the
/// file.) `None` where no advice fits.
pub(crate) fn sqlite_advice(e: &rusqlite::Error) -> Option<&'static str> {
    if is_shm_growth(e) {
        return Some(advice::SHM_NO_ROOM);
    }
    if is_disk_full(e) {
        return Some(advice::FREE_SPACE_WRITE);
    }
    match e.sqlite_error_code()? {
        rusqlite::ErrorCode::ReadOnly => Some(advice::READ_ONLY),
        rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied => {
            Some(advice::CANNOT_OPEN)
        }
        // An encrypted page whose HMAC fails reads as this, as does a plain file's damaged
        // btree page: the same advice as a record that does not decode.
        rusqlite::ErrorCode::DatabaseCorrupt => Some(advice::DAMAGED),
        _ => None,
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The library is used embedded: its messages name no command of the CLI (which adds
    /// its own hint).
    #[test]
    fn a_file_in_use_is_told_in_the_librarys_terms() {
        let m = Error::from(OpenError::InUse {
            path: "/x/a.db".into(),
        })
        .to_string();
        assert!(
            m.contains("/x/a.db is open elsewhere (another handle"),
            "{m}"
        );
        assert!(!m.contains("blazedb ") && !m.contains('`'), "{m}");
    }

    /// A file of a newer format says how to go back as well as forward.
    #[test]
    fn a_newer_format_names_the_copy_to_go_back_to() {
        let m = OpenError::NewerFormat {
            path: "a.db".into(),
            found: 12,
            supported: 11,
        }
        .to_string();
        assert!(
            m.starts_with("a.db has format version 12, this build reads up to 11: upgrade BlazeDB"),
            "{m}"
        );
        assert!(
            m.contains("put back the copy of the file taken before it was upgraded"),
            "{m}"
        );
    }

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
        assert!(m.contains("rolled back, nothing of it was kept"), "{m}");
        // Said by a sync of its own (`Session::internal`), where it fits: not to every write.
        assert!(!m.contains("a sync sends it again"), "{m}");
        assert!(e.is_disk_full());
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
        let Error::Sqlite(mismatch) = sqlite(rusqlite::ffi::SQLITE_MISMATCH) else {
            unreachable!()
        };
        assert_eq!(sqlite_advice(&mismatch), None, "no advice where none fits");
    }

    /// A damaged page of an encrypted file (its HMAC fails: SQLITE_CORRUPT) says what to do
    /// in the words a record that does not decode says it in (an audit, 2026-12-07: the
    /// first had no advice at all).
    #[test]
    fn a_damaged_page_is_advised_as_an_undecodable_record_is() {
        let page = sqlite(rusqlite::ffi::SQLITE_CORRUPT).to_string();
        let record = Error::Corrupted(DecodeError::BadVarint { offset: 3 }).to_string();
        for m in [&page, &record] {
            assert!(m.contains(advice::DAMAGED), "{m}");
        }
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_disk_full());
    }

    /// What SQLite says when there is no room, in its three forms: a full disk, the
    /// shared-memory file that would not grow (at open, also to read), and SQLCipher's
    /// export passing a full disk on as a plain error (`rekey`).
    #[test]
    fn every_form_of_a_full_disk_is_one() {
        let exported = Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("database or disk is full".into()),
        ));
        let shm = sqlite(rusqlite::ffi::SQLITE_IOERR_SHMSIZE);
        for e in [&sqlite(rusqlite::ffi::SQLITE_FULL), &exported, &shm] {
            assert!(e.is_disk_full(), "{e}");
        }
        assert!(exported.to_string().contains(advice::FREE_SPACE_WRITE));
        assert!(shm.to_string().contains(advice::SHM_NO_ROOM), "{shm}");
        let other = Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("no such table: x".into()),
        ));
        assert!(!other.is_disk_full());
        assert!(!sqlite(rusqlite::ffi::SQLITE_IOERR).is_disk_full());
    }

    #[test]
    fn only_a_lock_held_elsewhere_is_busy() {
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_busy());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_busy());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_busy());
        assert!(!sqlite(rusqlite::ffi::SQLITE_NOTADB).is_busy());
        assert!(!Error::InvalidArgument("x".into()).is_busy());
    }

    /// Only failures a read-only file system causes make the store look (a probe file in
    /// the database's directory): not a full disk, a damaged file or a missing one.
    #[test]
    fn only_io_failures_are_probed_for_a_read_only_file_system() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_READONLY,
        ] {
            assert!(sqlite(code).may_be_read_only_fs(), "{code}");
        }
        for code in [
            ffi::SQLITE_IOERR_SHMSIZE,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CORRUPT,
        ] {
            assert!(!sqlite(code).may_be_read_only_fs(), "{code}");
        }
        let io = |e: std::io::Error| Error::Io(e).may_be_read_only_fs();
        assert!(io(std::io::Error::from(
            std::io::ErrorKind::ReadOnlyFilesystem
        )));
        assert!(!io(std::io::Error::from(std::io::ErrorKind::NotFound)));
        assert!(!io(std::io::Error::from(std::io::ErrorKind::StorageFull)));
        assert!(!Error::InvalidArgument("x".into()).may_be_read_only_fs());
        let ro = Error::FileSystemReadOnly {
            path: "/srv/app.db".into(),
        };
        assert!(ro.store_refuses_writes() && ro.names_the_file() && !ro.is_disk_full());
    }
}
