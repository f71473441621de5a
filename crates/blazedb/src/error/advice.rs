//! What to do about a failure, in the words every message that gives the same advice shares:
//! a sentence changed here changes wherever it is given (the library's errors, the sync's
//! ERROR messages, the CLI's reports).
//!
//! Each says what to do in the library's terms; a program that wraps the library (the CLI)
//! adds how its users do it.

use std::path::Path;

/// A file whose pages or records fail their checks (an encrypted page whose HMAC fails, a
/// btree page overwritten, a record that does not decode).
pub const DAMAGED: &str =
    "the file is damaged: run an integrity check, and restore it from a backup or a peer";

/// What to do with a file whose damage the message has named already.
pub const RESTORE: &str = "restore it from a backup or a peer";

/// A write (a transaction) that failed on a full disk: SQLite rolled it back.
pub const FREE_SPACE_WRITE: &str =
    "free space on the disk that holds the database (or raise its size limit), then try \
     again; the transaction that failed was rolled back, nothing of it was kept";

/// SQLite could not grow the database's shared-memory file (`-shm`), which it does when the
/// write-ahead log grows and at open, also to read: on Linux, a full disk.
pub const SHM_NO_ROOM: &str =
    "SQLite could not grow the database's shared-memory file (-shm) beside it: the disk that \
     holds the database is probably full; free space there, then try again";

/// A file this user may not write (or a directory in which it may not create files).
pub const READ_ONLY: &str =
    "this user may not write the database file or its directory (SQLite also creates the \
     -wal and -shm files beside it): check their permissions and the mount";

/// What to do about a database whose file system turned read-only while it was open (ext4's
/// `errors=remount-ro` after an I/O error on its disk): such a mount takes writes again only
/// once unmounted and repaired, which needs every file on it closed.
pub const REPAIR_READ_ONLY_FS: &str =
    "close the database (stop the program that has it open), unmount the file system, \
     check and repair it (fsck) and mount it again, then open the database again";

/// SQLite could not open the file at all.
pub const CANNOT_OPEN: &str =
    "check that the database's directory exists and this user may read and write it";

/// Why opening needs a writable directory even to read.
pub const WAL_BESIDE: &str =
    "SQLite creates a database's -wal and -shm files beside it, even to read it";

/// Why opening needs room even to read, and what to do: said after the message has named
/// the full disk's directory.
pub const FREE_SPACE_TO_OPEN: &str =
    "SQLite needs a few dozen KB there for a database's -wal and -shm files, even to read it: \
     free space on that disk, then try again";

/// What to do about a file system with no free inodes, once the message has named it: it
/// can create no more files, whatever space it has left, and a database needs its `-wal`
/// and `-shm` files created beside it (at every open, also to read).
pub const FREE_INODES: &str =
    "SQLite creates a database's -wal and -shm files beside it, even to read it, and this file \
     system can create no more files (its inodes are used up, though it may have free \
     space: `df -i` shows them): delete files there that are no longer needed (many small \
     ones, typically), or move the database to a file system with free inodes, then try \
     again";

/// `dir` is on a read-only mount, or this user may not create files in it: what to do to
/// read the database `path` there.
pub fn writable_directory(dir: &Path, path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!(
        "{WAL_BESIDE}: make {} writable for this user (or mount it read-write); to only read \
         it, copy {name} (with its {name}-wal file, if there is one) into a writable directory \
         and read the copy",
        dir.display()
    )
}

/// What an upgrade of a file from storage format `from` means for going back: builds that
/// read only up to that format refuse the file afterwards.
pub fn one_way(from: u32) -> String {
    format!(
        "The upgrade is one-way: BlazeDB builds that read only up to format {from} cannot open \
         the file afterwards (the upgrade keeps a copy of the file as it was beside it, the \
         way back; see README, \"Upgrading\")"
    )
}

/// An operation that writes a copy of the whole database (`vacuum`, a password change) and
/// found no room for it: how much it needs.
pub fn room_for_copy(needed_bytes: u64, dir: &Path, free_bytes: Option<u64>) -> String {
    let free = free_now(free_bytes);
    format!(
        "it writes a copy of the whole database, so it needs about {} free (the file's size) \
         on the disk that holds {}{free}: free space there (or copy the database to a larger \
         disk), then try again",
        bytes(needed_bytes),
        dir.display()
    )
}

/// `, N free now` when the file system said how much is free, else nothing.
fn free_now(free_bytes: Option<u64>) -> String {
    free_bytes
        .map(|free| format!(", {} free now", bytes(free)))
        .unwrap_or_default()
}

/// What to do when the copy an upgrade keeps first ([`crate::OpenError::UpgradeBackupFailed`])
/// could not be written: room for it, or a directory that takes new files.
pub fn room_for_upgrade_backup(
    source: &std::io::Error,
    path: &Path,
    needed_bytes: u64,
    free_bytes: Option<u64>,
) -> String {
    let dir = crate::store::volume::directory_of(path);
    if source.kind() == std::io::ErrorKind::StorageFull {
        let free = free_now(free_bytes);
        return format!(
            "it needs about {} free (the file's size) on the disk that holds {}{free}: free \
             space there, or copy the database to a larger disk and open the copy",
            bytes(needed_bytes),
            dir.display()
        );
    }
    format!(
        "let this user create files in {} (the copy is written beside the database), or copy \
         the database to a directory where it may and open the copy",
        dir.display()
    )
}

/// The sync could not store what it received or its own bookkeeping: the disk that holds
/// `path` is full. Said to the user of this side.
pub fn sync_no_room_here(path: &Path) -> String {
    format!(
        "the disk that holds {} is full (or the database reached its size limit), so what the \
         sync received or needs could not be stored there: free space on that disk, then sync \
         again; nothing is lost, what was not stored is sent again",
        path.display()
    )
}

/// The same, said to the peer in the sync's ERROR message (`STORAGE_FULL`): it is the
/// sender's disk, not the reader's, that is full. No path: a relay does not tell its
/// clients where it keeps its files.
pub const SYNC_NO_ROOM_AT_PEER: &str =
    "the peer's disk is full (the disk that holds the peer's database, or the database \
     reached its size limit), so the peer could not store what this sync sent or needs: \
     whoever runs the peer (e.g. the relay's operator) must free space there; nothing is \
     lost here, the next sync sends again what the peer did not store";

/// [`SYNC_NO_ROOM_AT_PEER`] as a relay says it to its clients: the relay still serves syncs
/// that only read (their bookkeeping waits in memory: `store/noted_cursors.rs`).
pub const SYNC_NO_ROOM_AT_RELAY: &str =
    "the relay's disk is full: it cannot store changes now. Nothing of this sync's changes \
     was stored on the relay; the client keeps them and sends them again at its next sync \
     once the relay's operator has freed space (syncs that only read from the relay still \
     work)";

/// What a relay tells its clients when its store's file system turned read-only while it
/// runs: it still serves syncs that only read, and takes writes again only once its
/// operator has repaired the file system and restarted it.
pub const SYNC_READ_ONLY_AT_RELAY: &str =
    "the relay's store is on a file system that turned read-only (an I/O error on its \
     disk?): it cannot store changes, and the relay must be restarted once the file system \
     is repaired. Nothing of this sync's changes was stored on the relay; the client keeps \
     them and sends them again at its next sync after that (syncs that only read from the \
     relay still work)";

/// `n` bytes as a person reads a size: `512 bytes`, `12 KB`, `5.1 MB`, `2.0 GB` (powers of
/// 1024, as `df -h` counts).
pub fn bytes(n: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * KB;
    const GB: u64 = 1024 * MB;
    match n {
        n if n < KB => format!("{n} bytes"),
        n if n < MB => format!("{} KB", n.div_ceil(KB)),
        n if n < GB => format!("{:.1} MB", n as f64 / MB as f64),
        n => format!("{:.1} GB", n as f64 / GB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_df_shows_them() {
        let shown: Vec<String> = [0, 1023, 1024, 1025, 5 * 1024 * 1024 + 200_000, 3 << 30]
            .into_iter()
            .map(bytes)
            .collect();
        assert_eq!(
            shown,
            ["0 bytes", "1023 bytes", "1 KB", "2 KB", "5.2 MB", "3.0 GB"]
        );
    }
}
