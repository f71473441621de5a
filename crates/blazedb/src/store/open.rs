//! Opening a file: password handling, telling wrong passwords from foreign or damaged files,
//! creating the schema, migrating old formats.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::cipher_key::{CipherKey, SALT_BYTES};
use super::file_pin::{self, FilePin};
use super::{schema, volume};
use crate::error::OpenError;
use crate::limits::{DISK_NEARLY_FULL_BYTES, WAL_AUTOCHECKPOINT_PAGES, WAL_FILE_BYTES_KEPT};
use crate::NodeId;

/// How long a connection waits for another one's lock before it fails with "database is
/// locked".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The first 16 bytes of every plain SQLite file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// SQLCipher's page size; an encrypted file is a whole number of pages.
const CIPHER_PAGE_BYTES: u64 = 4096;
/// The HMAC that authenticates each page of an encrypted file made by this build (SQLCipher's
/// `cipher_hmac_algorithm`). SQLCipher 4's default is HMAC-SHA512; SHA-256 authenticates a
/// 4 KiB page just as well and costs half as much where the CPU has SHA extensions, which
/// matters because every page a commit writes is HMAC'd: measured 2026-12-04 on this
/// project's 2-core VM, a commit writing 4 pages took 63 µs with SHA-512 and 56 µs with
/// SHA-256 (24 µs unencrypted), and `sync_latency` encrypted p50 went 136–165 → 125–131 µs
/// (alternate runs). The key derivation (PBKDF2-HMAC-SHA512, 256,000 iterations) is
/// SQLCipher's default and unchanged. Files made before carry `PAGE_HMAC_SQLCIPHER_DEFAULT`
/// and still open (see `first_read`). To open a file with another SQLCipher tool, give
/// it `PRAGMA key` and then this setting.
pub const PAGE_HMAC: &str = "HMAC_SHA256";
/// SQLCipher 4's default page HMAC, which encrypted files made by builds before
/// [`PAGE_HMAC`] (2026-12-04) carry. Those builds read a file made with [`PAGE_HMAC`] as a
/// wrong password.
const PAGE_HMAC_SQLCIPHER_DEFAULT: &str = "HMAC_SHA512";

/// What the file looked like before SQLite touched it.
#[derive(Debug, PartialEq)]
enum FileKind {
    Missing,
    Empty,
    PlainSqlite,
    /// Not plain SQLite, but sized like an SQLCipher file; its first bytes would be the salt.
    MaybeEncrypted {
        salt: [u8; SALT_BYTES],
    },
    Foreign(String),
    /// Not plain SQLite and not whole encrypted pages, but long enough to hold an encrypted
    /// page 1: a foreign file, or an encrypted database cut short (see `cut_mid_page`).
    CutMidPage {
        salt: [u8; SALT_BYTES],
        len: u64,
    },
}

/// What the pinned file is, read through its pin (`None`: no file there).
fn sniff(pin: Option<&FilePin>) -> Result<FileKind, std::io::Error> {
    let Some(f) = pin else {
        return Ok(FileKind::Missing);
    };
    let len = f.len()?;
    if len == 0 {
        return Ok(FileKind::Empty);
    }
    // Shorter files are neither plain SQLite nor whole encrypted pages: foreign, below.
    let mut head = [0u8; 16];
    if len >= head.len() as u64 {
        f.read_head(&mut head)?;
        if &head == SQLITE_HEADER {
            return Ok(FileKind::PlainSqlite);
        }
    }
    let mut salt = [0u8; SALT_BYTES];
    salt.copy_from_slice(&head[..SALT_BYTES]);
    if len % CIPHER_PAGE_BYTES == 0 {
        Ok(FileKind::MaybeEncrypted { salt })
    } else if len > CIPHER_PAGE_BYTES {
        Ok(FileKind::CutMidPage { salt, len })
    } else {
        Ok(FileKind::Foreign(format!(
            "{len} bytes, not an SQLite header and not a whole number of encrypted pages"
        )))
    }
}

pub(crate) struct Opened {
    pub conn: Connection,
    pub node: NodeId,
    /// How the connections to an encrypted file are keyed (`None`: a plain file).
    pub key: Option<CipherKey>,
    /// The file held open for this process (see `file_pin.rs`), its format lock held shared.
    pub pin: Arc<FilePin>,
    /// The format the file had before this open upgraded it (`None`: no migration ran here).
    pub upgraded_from: Option<u32>,
    /// The copy of the file kept before that upgrade (see `upgrade_backup.rs`).
    pub upgrade_backup: Option<PathBuf>,
    /// The node id the file had when this open found it to be a copy of another file and
    /// gave it one of its own (see `copied_file.rs`).
    pub copied_from: Option<NodeId>,
}

fn sql_err(path: &str, e: rusqlite::Error, kind: &FileKind, keyed: bool) -> OpenError {
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase)
            if keyed && matches!(kind, FileKind::MaybeEncrypted { .. }) =>
        {
            OpenError::WrongPassword {
                path: path.to_owned(),
            }
        }
        Some(ErrorCode::NotADatabase) if keyed && *kind == FileKind::PlainSqlite => {
            OpenError::NotEncrypted {
                path: path.to_owned(),
            }
        }
        Some(ErrorCode::NotADatabase)
            if !keyed && matches!(kind, FileKind::MaybeEncrypted { .. }) =>
        {
            OpenError::PasswordRequired {
                path: path.to_owned(),
            }
        }
        Some(ErrorCode::NotADatabase) => OpenError::NotABlazeDb {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupted {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        // The busy timeout ran out (or SQLite answered at once where no handler waits).
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OpenError::Busy {
            path: path.to_owned(),
        },
        _ => storage_err(path, e),
    }
}

/// The error for an open that failed in SQLite for a reason other than what the file holds:
/// a full disk, a file system out of inodes, or a directory it may not create the `-wal`
/// and `-shm` files in (met
/// also by commands that only read: an audit, 2026-12-07, found `stats`, `get` and `export`
/// failing with "disk I/O error: ... xShmMap" on a full disk, and "attempt to write a
/// readonly database" in a read-only directory, neither saying what to do), else SQLite's
/// error with its advice.
fn storage_err(path: &str, e: rusqlite::Error) -> OpenError {
    let dir = volume::directory_of(Path::new(path));
    let free_bytes = volume::free_bytes(&dir);
    // No inode left, with room left: creating the `-wal`, the `-shm` or the file fails with
    // ENOSPC, which SQLite reports as "unable to open database file" (or an I/O error), not
    // as a full disk (until 2026-12-07 the advice was to check that the directory exists).
    // With no room either, freeing space is the advice, and deleting files gives both.
    let creating_failed = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DiskFull)
    );
    if creating_failed
        && free_bytes.is_none_or(|free| free >= DISK_NEARLY_FULL_BYTES)
        && volume::out_of_inodes(&dir)
    {
        return OpenError::NoFreeInodes {
            path: path.to_owned(),
            dir: dir.display().to_string(),
            reason: crate::error::sqlite_brief(&e),
        };
    }
    // SQLite's "database or disk is full" is never anything else here; a shared-memory file
    // that would not grow is, where the file system says there is room.
    let disk_full = crate::error::is_disk_full(&e)
        && (!crate::error::is_shm_growth(&e)
            || free_bytes.is_none_or(|free| free < DISK_NEARLY_FULL_BYTES));
    if disk_full {
        return OpenError::DiskFull {
            path: path.to_owned(),
            dir: dir.display().to_string(),
            // More than that was freed since, or the limit met was not the disk's: a figure
            // would contradict the message.
            free_bytes: free_bytes.filter(|&free| free < DISK_NEARLY_FULL_BYTES),
            reason: crate::error::sqlite_brief(&e),
        };
    }
    let not_writable = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    );
    if let Some(why) = volume::why_not_writable(&dir).filter(|_| not_writable) {
        return OpenError::DirectoryNotWritable {
            path: path.to_owned(),
            dir: dir.display().to_string(),
            why: why.to_owned(),
            reason: crate::error::sqlite_brief(&e),
        };
    }
    let advice = crate::error::sqlite_advice(&e)
        .map(|a| format!(": {a}"))
        .unwrap_or_default();
    OpenError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!("{}{advice}", crate::error::sqlite_text(&e))),
    }
}

/// The error for a file sniffed as [`FileKind::CutMidPage`]: `Corrupted` (truncated) when
/// `password` decrypts its first page, so that it is an encrypted database cut short (an
/// interrupted copy, a full disk), and `NotABlazeDb` otherwise (without the password, or with
/// a wrong one, the two cannot be told apart). The file is only read.
fn cut_mid_page(
    path: &Path,
    password: Option<&str>,
    salt: &[u8; SALT_BYTES],
    len: u64,
) -> OpenError {
    let p = path.display().to_string();
    let page_one_decrypts = password.is_some_and(|password| {
        let Ok(key) = CipherKey::derive(password, salt) else {
            return false;
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Page 1 failing its HMAC (a wrong password, or no encrypted database) reads as
        // `NotADatabase`. Page 1 read, SQLite may still find the file shorter than the page
        // count in its header, as every cut before the last page is: "malformed", which
        // says the password decrypted page 1 as surely as a read that succeeds.
        match Connection::open_with_flags(path, flags)
            .and_then(|conn| first_read(&conn, Some(&key)))
        {
            Ok(_) => true,
            Err(e) => e.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt),
        }
    });
    if page_one_decrypts {
        return OpenError::Corrupted {
            path: p,
            reason: format!(
                "truncated: the password opens it, so it is a BlazeDB database, but its {len} \
                 bytes are not a whole number of {CIPHER_PAGE_BYTES}-byte encrypted pages \
                 (a copy or a write cut short)"
            ),
        };
    }
    let check = match password {
        None => "give its password to check",
        Some(_) => "it is one under another password than the one given",
    };
    OpenError::NotABlazeDb {
        path: p,
        reason: format!(
            "{len} bytes, not an SQLite header and not a whole number of encrypted pages (if it \
             is an encrypted database cut short, {check}; {})",
            crate::error::advice::RESTORE
        ),
    }
}

/// A second connection to an open database's file, for `Database::checkpoint` only: keyed
/// like the first, and never creating anything.
pub(crate) fn open_checkpointer(
    path: &Path,
    key: Option<&CipherKey>,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Covers reading the schema; see below for the rest.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The first read decrypts page 1, here rather than mid-checkpoint. The key is the one
    // the database derived at its open (`cipher_key.rs`): no second derivation.
    first_read(&conn, key)?;
    // A PASSIVE checkpoint never waits on locks, and the write that starts the WAL over is
    // skipped when a writer holds the file: never wait.
    conn.busy_timeout(std::time::Duration::ZERO)?;
    // That write is a counter nobody needs to survive a power loss (the main connection's
    // own setting applies to everything else), and the WAL file keeps the same bound.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "journal_size_limit", WAL_FILE_BYTES_KEPT)?;
    Ok(conn)
}

/// Key `conn` with `key` (if any) and read the schema: the number of tables.
///
/// An encrypted file is tried with [`PAGE_HMAC`] first, then with
/// [`PAGE_HMAC_SQLCIPHER_DEFAULT`]; a new (empty) file passes the first try and is written with
/// [`PAGE_HMAC`]. The key is already derived (`cipher_key.rs`), so the second try only checks
/// page 1's HMAC again. A wrong password fails both with `NotADatabase`.
fn first_read(conn: &Connection, key: Option<&CipherKey>) -> rusqlite::Result<i64> {
    let tables =
        |c: &Connection| c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
    let Some(key) = key else {
        return tables(conn);
    };
    conn.pragma_update(None, "key", key.pragma_value())?;
    conn.pragma_update(None, "cipher_hmac_algorithm", PAGE_HMAC)?;
    match tables(conn) {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            conn.pragma_update(None, "cipher_hmac_algorithm", PAGE_HMAC_SQLCIPHER_DEFAULT)?;
            tables(conn)
        }
        r => r,
    }
}

/// Derive the key for `password` (see `cipher_key.rs`), key `conn` with it and read the
/// schema (`first_read`). `kind` is the file as `sniff` saw it: an existing encrypted file's
/// salt is its first bytes; a missing or empty file gets a new salt, which SQLCipher writes
/// into its header.
///
/// Should another process create the file between the sniff and this read, under a salt of
/// its own, the read fails as a wrong key would: then the file is sniffed again and, if it
/// now has a salt, the key is derived for that salt and the read tried once more.
fn keyed_first_read(
    conn: &Connection,
    path: &Path,
    pin: &mut Option<Arc<FilePin>>,
    password: Option<&str>,
    kind: FileKind,
) -> Result<(rusqlite::Result<i64>, Option<CipherKey>, FileKind), OpenError> {
    let io = |e: std::io::Error| OpenError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let derive = |salt: &[u8; SALT_BYTES]| {
        password
            .map(|pw| CipherKey::derive(pw, salt))
            .transpose()
            .map_err(|e| {
                io(std::io::Error::other(format!(
                    "deriving the key from the password failed: {e}"
                )))
            })
    };
    let key = match &kind {
        FileKind::MaybeEncrypted { salt } => derive(salt)?,
        _ if password.is_some() => derive(&CipherKey::new_salt().map_err(|e| {
            io(std::io::Error::other(format!(
                "no random salt for the new file: {e}"
            )))
        })?)?,
        _ => None,
    };
    match first_read(conn, key.as_ref()) {
        Err(e)
            if e.sqlite_error_code() == Some(ErrorCode::NotADatabase)
                && password.is_some()
                && matches!(kind, FileKind::Missing | FileKind::Empty) =>
        {
            *pin = file_pin::pin(path).map_err(io)?;
            let now = sniff(pin.as_deref()).map_err(io)?;
            match &now {
                FileKind::MaybeEncrypted { salt } => {
                    let key = derive(salt)?;
                    Ok((first_read(conn, key.as_ref()), key, now))
                }
                _ => Ok((Err(e), key, now)),
            }
        }
        r => Ok((r, key, kind)),
    }
}

/// The file `path` leads to now (device and inode), or `None` when there is none (or the
/// platform does not say).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Open or create the database file.
///
/// Replaced while opening: `Database::rekey` in another process holds the file exclusively
/// until it has renamed the re-encrypted copy over it (`rekey.rs`). An open that found the
/// file by name meanwhile waits for that lock on the old file and would then read, and
/// write to, a file no name leads to any more: its writes would be lost. So when the path
/// leads to another file after the first read than before the open, the open starts over
/// on the file that is there now (with the old password, that is a `WrongPassword`).
pub(crate) fn open(
    path: &Path,
    password: Option<&str>,
    create: bool,
    now_ms: u64,
    node_for_new_file: Option<NodeId>,
    upgrade_backup: bool,
    identify_copy: bool,
) -> Result<Opened, OpenError> {
    for _ in 0..crate::limits::OPEN_ATTEMPTS_FILE_REPLACED_MAX {
        if let Some(opened) = open_once(
            path,
            password,
            create,
            now_ms,
            node_for_new_file,
            upgrade_backup,
            identify_copy,
        )? {
            // This connection is in WAL mode now and holds its shared lock, so no rekey can
            // be running on the file (it needs the file to itself from before it writes its
            // copy until after the rename): a copy beside it is a crash's leftover.
            super::rekey::remove_leftover_copy(path);
            return Ok(opened);
        }
    }
    Err(OpenError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!(
            "the file was replaced {} times while being opened (rekeys elsewhere): try again",
            crate::limits::OPEN_ATTEMPTS_FILE_REPLACED_MAX
        )),
    })
}

/// Mode of a database file BlazeDB creates: its user only. SQLite gives the `-wal` and `-shm`
/// files it makes beside a database the database file's mode, so they are owner-only too.
pub const NEW_FILE_MODE: u32 = 0o600;

/// Create the empty file `path` with [`NEW_FILE_MODE`] before SQLite opens it (SQLite would
/// create it as the umask says, 0644 under the usual 022, readable by every user of the
/// machine). An empty file is a new SQLite database. A file another process created in the
/// meantime is left as it is. Users who share a database between accounts widen its mode
/// themselves (`chmod g+rw`); an existing file's mode is never changed.
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, NEW_FILE_MODE);
    options.open(path).map(drop)
}

/// One attempt of [`open`]: `None` when the path led to another file after the first read.
fn open_once(
    path: &Path,
    password: Option<&str>,
    create: bool,
    now_ms: u64,
    node_for_new_file: Option<NodeId>,
    upgrade_backup: bool,
    identify_copy: bool,
) -> Result<Option<Opened>, OpenError> {
    let p = path.display().to_string();
    let io = |e: std::io::Error| OpenError::Io {
        path: p.clone(),
        source: e,
    };
    // SQLite would take these for a private in-memory database or a URI, which BlazeDB
    // cannot hold (its feed, cursors and the other processes' view live in the file); the
    // check below then said "the file SQLite opened is gone", which sent users looking for
    // another process (an audit of the embedded API, 2026-12-07).
    let name = path.as_os_str();
    if name.is_empty()
        || name == ":memory:"
        || path.to_str().is_some_and(|s| s.starts_with("file:"))
    {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "BlazeDB keeps a database in a file, and this names none (an empty path, \
             \":memory:\" or an SQLite URI): give the file's path (for a throwaway \
             database, one in a temporary directory)",
        )));
    }
    let identity = file_identity(path);
    let mut pin = file_pin::pin(path).map_err(io)?;
    let kind = sniff(pin.as_deref()).map_err(io)?;
    match &kind {
        FileKind::Missing if !create => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such database (create it by writing to it, or check the path)",
            )))
        }
        FileKind::Missing => {
            // SQLite only says "unable to open database file" for a file in a directory that
            // is not there.
            let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = parent.filter(|d| !d.is_dir()) {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "the directory {} does not exist (create it first, or check the path)",
                        dir.display()
                    ),
                )));
            }
            // A failure (a read-only directory, a full disk) is left to SQLite's open just
            // below to meet and report, as `sql_err` words it for each case.
            let _ = create_owner_only(path);
        }
        FileKind::Foreign(reason) => {
            return Err(OpenError::NotABlazeDb {
                path: p,
                reason: reason.clone(),
            })
        }
        FileKind::CutMidPage { salt, len } => return Err(cut_mid_page(path, password, salt, *len)),
        FileKind::PlainSqlite if password.is_some() => {
            return Err(OpenError::NotEncrypted { path: p })
        }
        _ => {}
    }
    // CREATE is always allowed at the SQLite level: a missing file was refused above when
    // `create` is false, and `rekey` needs to ATTACH a new file on this connection.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_CREATE;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_err(&p, e, &kind, password.is_some()))?;
    // Before the first read: another process creating the file holds its lock now, and a
    // read without a busy handler fails at once with "database is locked".
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(&p, e, &kind, password.is_some()))?;
    let (tables, key, kind) = keyed_first_read(&conn, path, &mut pin, password, kind)?;
    // A file SQLite has just created is pinned now, before anything else could open it.
    let pin = match pin {
        Some(pin) => pin,
        None => file_pin::pin(path).map_err(io)?.ok_or_else(|| {
            io(std::io::Error::other(
                "the file SQLite opened is gone (removed by another process): try again",
            ))
        })?,
    };
    // Before anything is written: the file read may be one a rekey has replaced.
    if identity.is_some() && file_identity(path) != identity {
        return Ok(None);
    }
    let err = |e: rusqlite::Error| sql_err(&p, e, &kind, password.is_some());
    let tables = tables.map_err(err)?;
    if tables > 0 {
        // Before anything below changes the file (WAL mode is written into its header): an
        // SQLite file of another application is refused as it was found.
        let magic: Result<String, rusqlite::Error> =
            conn.query_row("SELECT value FROM meta WHERE key = 'magic'", [], |r| {
                r.get(0)
            });
        match magic {
            Ok(m) if m == schema::MAGIC => {}
            // A page that fails to read (an encrypted page whose HMAC fails, a btree page
            // overwritten) is damage, not another application's file: told so, a user would
            // not think of a backup (an audit, 2026-12-06: one byte changed on page 2).
            Err(e) if super::maintenance::is_damage(&e) => {
                return Err(OpenError::Corrupted {
                    path: p,
                    reason: format!("a page read while opening it is damaged ({e})"),
                });
            }
            _ => {
                return Err(OpenError::NotABlazeDb {
                    path: p,
                    reason: "an SQLite database of another application (no BlazeDB metadata)"
                        .into(),
                })
            }
        }
    }
    // Switching a new file to WAL needs it to itself, and SQLite answers "database is
    // locked" at once rather than through the busy handler when another process is opening
    // (or creating) the same file: wait for it here, within the same bound.
    let wal_deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < wal_deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => break r.map_err(err)?,
        }
    }
    // WAL + NORMAL: a commit that returned survives a process crash (kill -9); only an OS
    // crash or power loss can lose the last commits. Options::sync_full trades speed for that.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(err)?;
    conn.pragma_update(None, "cache_size", -32_000)
        .map_err(err)?;
    // SQLite's default (1,000 pages) checkpoints inside every ~140th small commit, which then
    // waits for an fsync: that was the commit latency tail. Checkpoints run from
    // `Database::checkpoint` instead; this is only the backstop.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(err)?;
    // After a checkpoint resets the WAL, truncate the file to this size instead of keeping
    // its high-water mark on disk forever.
    conn.pragma_update(None, "journal_size_limit", WAL_FILE_BYTES_KEPT)
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);

    // Another process may be creating the same file at this moment: creating takes the write
    // lock first (BEGIN IMMEDIATE waits for it, up to the busy timeout) and looks again under
    // it, so the second opener finds the work done instead of failing on `table meta already
    // exists` (migrating does the same, in `migrate`).
    if tables == 0 {
        let tx = immediate(&conn).map_err(err)?;
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(err)?;
        if tables == 0 {
            let node = node_for_new_file.unwrap_or_else(NodeId::random);
            schema::create(&tx, &node.0, now_ms).map_err(err)?;
            // Which file this is, so that a copy of it can tell it is one (`copied_file.rs`).
            if let Some(stamp) = super::copied_file::stamp_of_new_file(&pin) {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('file_stamp', ?1)",
                    [stamp],
                )
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            // The format lock, as every handle holds it (below). Nobody migrates a file of
            // this build's format, so no wait: where a newer build could, the file would not
            // be new.
            let _ = pin.try_lock_shared();
            return Ok(Some(Opened {
                conn,
                node,
                key,
                pin,
                upgraded_from: None,
                upgrade_backup: None,
                copied_from: None,
            }));
        }
        // Created meanwhile by another process: open it as an existing file.
        tx.commit().map_err(err)?;
    }

    // The format lock (`file_pin.rs`): held shared by every handle while it lives, taken
    // exclusively by a migration. Without it, a process of this build that had the file open
    // while a newer build migrated it went on reading the new format as this one, and called
    // the intact file corrupt with advice to restore it from a peer, which throws away its
    // unsynced writes (an upgrade audit, 2026-12-07, F4). Every open ends holding it shared,
    // and reads the format again once it holds it: no migration can run after that read.
    let lock_deadline =
        Instant::now() + Duration::from_millis(crate::limits::OPEN_FORMAT_LOCK_WAIT_MS);
    let mut others_open_since: Option<Instant> = None;
    let mut upgraded_from = None;
    let mut backup = None;
    loop {
        let format = schema::read_format(&conn).map_err(err)?;
        if format > schema::FORMAT_VERSION {
            return Err(OpenError::NewerFormat {
                path: p,
                found: format,
                supported: schema::FORMAT_VERSION,
            });
        }
        if format == 0 {
            return Err(OpenError::Corrupted {
                path: p,
                reason: "format version 0".into(),
            });
        }
        if format == schema::FORMAT_VERSION {
            if pin.try_lock_shared() {
                if schema::read_format(&conn).map_err(err)? == format {
                    break;
                }
                // Migrated between the two reads: the next round says by whom.
                continue;
            }
            // Another process is migrating it (a newer build): wait for it, below.
        } else if pin.try_lock_exclusive() {
            // No other process has the file open (handles of this process share the lock:
            // they are not in the way, and cannot be using an older format, having opened
            // the file with this build). Processes of this build racing to migrate it wait
            // here, or for SQLite's write lock, one step at a time.
            if upgrade_backup && backup.is_none() {
                match super::upgrade_backup::write(&conn, path, format) {
                    Ok(b) => backup = Some(b),
                    Err(e) => {
                        pin.unlock();
                        return Err(backup_failed(&p, path, format, e));
                    }
                }
            }
            let ran = migrate(&conn, format).map_err(|e| {
                // Back to no lock (other handles of this process have none to lose: this
                // file was not at their format).
                pin.unlock();
                match e.sqlite_error_code() {
                    Some(ErrorCode::ReadOnly) => {
                        // Nothing was changed (the first step could not write), so the copy
                        // is not a way back from anything.
                        if let Some(b) = backup.take() {
                            super::upgrade_backup::remove(&b);
                        }
                        OpenError::UpgradeNeedsWrite {
                            path: p.clone(),
                            found: format,
                            supported: schema::FORMAT_VERSION,
                            reason: crate::error::sqlite_brief(&e),
                        }
                    }
                    _ => err(e),
                }
            })?;
            if ran {
                upgraded_from.get_or_insert(format);
            }
            // Shared again (converting the lock: not atomically, so a newer build may take it
            // meanwhile; the next round reads the format again under the shared lock).
            continue;
        } else if pin.try_lock_shared() {
            // Only shared holders: handles that have the file open, or another opener looking
            // as this one does, for a moment. Those that stay are handles: refused.
            pin.unlock();
            if schema::read_format(&conn).map_err(err)? == format {
                let since = *others_open_since.get_or_insert_with(Instant::now);
                let patience =
                    Duration::from_millis(crate::limits::OPEN_UPGRADE_WAIT_FOR_HANDLES_MS);
                if since.elapsed() >= patience {
                    return Err(OpenError::UpgradeBlocked {
                        path: p,
                        found: format,
                        supported: schema::FORMAT_VERSION,
                    });
                }
            }
        }
        // Held exclusively: another process is migrating the file.
        if Instant::now() >= lock_deadline {
            return Err(OpenError::Busy { path: p });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // A copy of another file gets a node id of its own before anything reads the old one.
    let copied_from = match identify_copy {
        true => super::copied_file::reidentify_if_copied(&conn, &pin).map_err(err)?,
        false => None,
    };
    let node: Vec<u8> = conn
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    let node: [u8; 16] = node.try_into().map_err(|_| OpenError::Corrupted {
        path: p.clone(),
        reason: "node id is not 16 bytes".into(),
    })?;
    Ok(Some(Opened {
        conn,
        node: NodeId(node),
        key,
        pin,
        // A copy is kept only where this open upgraded the file; one made before another
        // process (racing) did is the same file as it was, and stays.
        upgrade_backup: backup.filter(|_| upgraded_from.is_some()),
        upgraded_from,
        copied_from,
    }))
}

/// The error for a copy [`super::upgrade_backup::write`] could not keep of `path`
/// (format `found`): nothing was changed. A read-only mount is the file that may not be
/// written ([`OpenError::UpgradeNeedsWrite`]), which no other room for the copy fixes.
fn backup_failed(p: &str, path: &Path, found: u32, e: std::io::Error) -> OpenError {
    if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
        return OpenError::UpgradeNeedsWrite {
            path: p.to_owned(),
            found,
            supported: schema::FORMAT_VERSION,
            reason: e.to_string(),
        };
    }
    OpenError::UpgradeBackupFailed {
        path: p.to_owned(),
        found,
        supported: schema::FORMAT_VERSION,
        needed_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        free_bytes: volume::free_bytes(&volume::directory_of(path)),
        source: e,
    }
}

/// Run the migrations from `format` to [`schema::FORMAT_VERSION`], one transaction per step;
/// `true` when this connection ran one. Another process may be migrating the same file
/// at this moment: each step takes the write lock first (BEGIN IMMEDIATE waits for it, up to
/// the busy timeout) and looks again under it, so the second finds the work done instead of
/// failing on a duplicate column.
fn migrate(conn: &Connection, format: u32) -> rusqlite::Result<bool> {
    let mut ran = false;
    for (i, step) in schema::MIGRATIONS
        .iter()
        .enumerate()
        .skip(format as usize - 1)
    {
        let tx = immediate(conn)?;
        let now = schema::read_format(&tx)?;
        if now > i as u32 + 1 {
            // Another process ran this step meanwhile.
            tx.commit()?;
            continue;
        }
        tx.execute_batch(step)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'format_version'",
            [i as u32 + 2],
        )?;
        tx.commit()?;
        ran = true;
    }
    Ok(ran)
}

/// A write transaction that holds SQLite's write lock from its start (BEGIN IMMEDIATE).
fn immediate(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race `keyed_first_read` handles: the file was missing when sniffed, and another
    /// process has created it since under its own salt.
    #[test]
    fn a_file_created_by_another_process_after_the_sniff_opens_with_its_own_salt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raced.db");
        let other = Connection::open(&path).unwrap();
        other.pragma_update(None, "key", "pw").unwrap();
        other
            .pragma_update(None, "cipher_hmac_algorithm", PAGE_HMAC)
            .unwrap();
        other
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(other);
        let conn = Connection::open(&path).unwrap();
        let (tables, key, kind) =
            keyed_first_read(&conn, &path, &mut None, Some("pw"), FileKind::Missing).unwrap();
        assert_eq!(tables.unwrap(), 1);
        assert!(key.is_some());
        assert!(matches!(kind, FileKind::MaybeEncrypted { .. }), "{kind:?}");
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1);
        // The wrong password still fails, after the one retry.
        let conn = Connection::open(&path).unwrap();
        let (tables, _, _) =
            keyed_first_read(&conn, &path, &mut None, Some("wrong"), FileKind::Missing).unwrap();
        assert_eq!(
            tables.unwrap_err().sqlite_error_code(),
            Some(ErrorCode::NotADatabase)
        );
    }

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    /// A full disk at open says so and names the directory, whatever SQLite's form of it;
    /// a shared-memory file that would not grow where the file system has room is not
    /// called a full disk (the real thing: `blazedb-cli/tests/disk_full.rs`, on a tmpfs).
    #[test]
    fn a_full_disk_at_open_names_the_directory_to_free_space_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let p = path.display().to_string();
        let e = storage_err(&p, failure(rusqlite::ffi::SQLITE_FULL));
        assert!(matches!(e, OpenError::DiskFull { .. }), "{e:?}");
        let m = e.to_string();
        let holds = format!("the disk that holds {} is full", dir.path().display());
        assert!(m.starts_with(&format!("cannot open {p}: {holds}")), "{m}");
        assert!(m.contains("free space on that disk, then try again"), "{m}");
        assert!(m.ends_with("code 13)"), "{m}");

        let roomy = volume::free_bytes(dir.path()).is_some_and(|b| b >= DISK_NEARLY_FULL_BYTES);
        let e = storage_err(&p, failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE));
        assert_eq!(matches!(e, OpenError::DiskFull { .. }), !roomy, "{e:?}");
    }

    /// A directory SQLite may not create the `-wal` and `-shm` files in, where this process
    /// may after all (as root), is reported as SQLite's error with its advice (the real
    /// thing: `blazedb-cli/tests/read_only_location.rs`).
    #[test]
    fn a_read_only_error_in_a_writable_directory_keeps_sqlites_words_and_advice() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.db").display().to_string();
        let readonly_directory = 1544; // SQLITE_READONLY_DIRECTORY
        let e = storage_err(&p, failure(readonly_directory));
        assert!(matches!(e, OpenError::Io { .. }), "{e:?}");
        assert!(
            e.to_string().contains(crate::error::advice::READ_ONLY),
            "{e}"
        );
    }

    /// The SQLite this workspace builds carries the options of `.cargo/config.toml`
    /// (ARCHITECTURE.md, "SQLite build options"): should libsqlite3-sys stop reading
    /// `LIBSQLITE3_FLAGS`, or the file lose a flag, this fails instead of the figures
    /// quietly sliding back.
    #[test]
    fn sqlite_is_built_with_the_workspace_options() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let has = |o: &str| options.iter().any(|x| x == o);
        assert!(has("ENABLE_NULL_TRIM"), "{options:?}");
        assert!(has("DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!has("ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }
}
