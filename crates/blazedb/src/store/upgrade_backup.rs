//! The copy of a file that an upgrade keeps before it changes the file's storage format.
//!
//! Upgrading a file to this build's format is one-way: builds that read only up to the old
//! format refuse it afterwards. Before this copy, the only way back was a copy the user had
//! made beforehand (README, "Upgrading"), and the upgrade runs on any open, often when a
//! user just installed a new build and ran `get`; a device upgraded before its relay then
//! held a file its old build could not read and a relay that would not sync with it (an
//! upgrade audit, 2026-12-07). Realm keeps such a copy for the same reason.
//!
//! The copy is `<file>.format-<N>.backup` beside the file, N the format it had, made while
//! the open holds the format lock exclusively (no other BlazeDB handle has the file open)
//! and SQLite's write lock (nothing commits meanwhile):
//!
//! ```text
//!   checkpoint (TRUNCATE) ─ BEGIN IMMEDIATE ─ copy FILE (+ FILE-wal if it still holds frames)
//!   to *.partial ─ fsync ─ rename into place ─ fsync the directory ─ ROLLBACK ─ migrate
//! ```
//!
//! The checkpoint folds the WAL into the file, so the copy is usually the file alone. A
//! reader outside BlazeDB (an `sqlite3` shell) can keep frames in the WAL; then the WAL is
//! copied too (`<backup>-wal`, which SQLite reads with the copy): with the write lock held
//! no frame is added, and a checkpoint that copies frames into the file meanwhile only
//! writes pages the copied WAL holds anyway, so file and WAL copied one after the other
//! still make the database as it was. The copy is byte for byte: an encrypted file's copy
//! opens with the same password. Nothing deletes it: the user does, once they will not go
//! back (the CLI and the relay say where it is).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::open::BUSY_TIMEOUT;

/// Where the copy of `path` at storage format `format` is kept.
pub(crate) fn backup_path(path: &Path, format: u32) -> PathBuf {
    with_suffix(path, &format!(".format-{format}.backup"))
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Keep a copy of the database `conn` has open at `path` (storage format `format`) at
/// [`backup_path`], replacing an older copy of that format. The caller holds the format lock
/// exclusively. On an error no copy is left half-written under the backup's name.
pub(crate) fn write(conn: &Connection, path: &Path, format: u32) -> io::Result<PathBuf> {
    let backup = backup_path(path, format);
    let wal = with_suffix(path, "-wal");
    let backup_wal = with_suffix(&backup, "-wal");
    let partial = with_suffix(&backup, ".partial");
    let partial_wal = with_suffix(&backup_wal, ".partial");
    let sql = |e: rusqlite::Error| io::Error::other(e.to_string());

    // Fold the WAL into the file (a reader outside BlazeDB may keep part of it: see the
    // module docs). Its outcome is read from the WAL's size below, under the write lock.
    // Without waiting: a TRUNCATE checkpoint waits for such readers to finish, up to the
    // busy timeout, and copying the WAL beside the file does as well.
    conn.busy_timeout(Duration::ZERO).map_err(sql)?;
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let copied = (|| {
        copy_synced(path, &partial)?;
        let wal_frames = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        if wal_frames {
            copy_synced(&wal, &partial_wal)?;
        }
        Ok::<_, io::Error>(wal_frames)
    })();
    let _ = conn.execute_batch("ROLLBACK");
    let wal_frames = match copied {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(&partial_wal);
            return Err(e);
        }
    };
    // The WAL first: a crash between the renames leaves a copy whose WAL is there.
    if wal_frames {
        std::fs::rename(&partial_wal, &backup_wal)?;
    } else {
        // A WAL beside an older copy of the same format would be read with this one.
        match std::fs::remove_file(&backup_wal) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(&partial, &backup)?;
    super::rekey::sync_parent_dir(&backup)?;
    Ok(backup)
}

/// Remove a copy [`write`] kept (and its WAL): the upgrade it was for changed nothing.
/// Best effort: a copy left behind is only disk space.
pub(crate) fn remove(backup: &Path) {
    let _ = std::fs::remove_file(backup);
    let _ = std::fs::remove_file(with_suffix(backup, "-wal"));
}

/// Copy `from` to a new `to` (same permissions: an owner-only database makes an owner-only
/// copy) and fsync it.
fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_is_named_after_the_file_and_its_old_format() {
        assert_eq!(
            backup_path(Path::new("/data/notes.db"), 10),
            PathBuf::from("/data/notes.db.format-10.backup")
        );
        assert_eq!(
            backup_path(Path::new("notes"), 7),
            PathBuf::from("notes.format-7.backup")
        );
    }
}
