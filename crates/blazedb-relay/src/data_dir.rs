//! The relay's data directory: created owner-only (0700), and refused when another user could
//! change what is in it.
//!
//! The store (`relay.db` and its `-wal` and `-shm` files) holds every client's records, in
//! clear unless the relay has a password. The library creates a new store file 0600, and
//! SQLite gives the `-wal` and `-shm` files the store file's mode, so in a directory of the
//! relay's own nothing is readable by other users. An existing directory is used only if the
//! relay's user owns it and no other user may write to it: anyone who can write to the
//! directory can rename the live store away, put a file of theirs in its place or beside it
//! (a `-wal` the relay would then read), whatever the files' own modes say. That is refused
//! rather than warned about, since a warning in a log stops none of it, and the fix is one
//! `chown` or `chmod` that the message names. A directory (or a store file left by an older
//! release) that others may only read is warned about: the data is exposed, not the relay.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::Path;

use crate::error::RelayError;
use crate::limits::STORE_FILE_NAME;

/// Mode of a data directory the relay creates: its user only.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Create `dir` owner-only if it is missing (its missing parents as the umask says), and
/// check an existing one. Returns the warnings to log: what other users may read.
pub(crate) fn prepare(dir: &Path) -> Result<Vec<String>, RelayError> {
    let data_dir_error = |source: io::Error| RelayError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(data_dir_error)?;
        }
        match std::fs::DirBuilder::new().mode(DATA_DIR_MODE).create(dir) {
            // Made by another process meanwhile: checked below like any existing directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(data_dir_error)?,
        }
    }
    let meta = std::fs::metadata(dir).map_err(data_dir_error)?;
    if !meta.is_dir() {
        return Err(data_dir_error(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        )));
    }
    let unsafe_dir = |reason: String| RelayError::DataDirUnsafe {
        path: dir.to_owned(),
        reason,
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to user id {}, and the relay runs as user id {me}: its owner could \
             replace or read the store. Use a directory of the relay's user (`chown` it, or \
             give --data a new path, which the relay creates owner-only)",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "other users may write to it (mode {mode:04o}): they could rename the store away or \
             put files of theirs beside it. Make it the relay's user's own: `chmod 700 {}`",
            dir.display()
        )));
    }
    let mut warnings = Vec::new();
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "the data directory {} may be listed by other users (mode {mode:04o}): `chmod 700 \
             {}` keeps them out of it",
            dir.display(),
            dir.display()
        ));
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.join(format!("{STORE_FILE_NAME}{suffix}"));
        if let Ok(m) = std::fs::metadata(&file) {
            let mode = m.mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "{} may be read by other users (mode {mode:04o}; made by an older release, \
                     or by hand): `chmod 600 {}*` keeps the records in it to the relay's user",
                    file.display(),
                    dir.join(STORE_FILE_NAME).display()
                ));
            }
        }
    }
    Ok(warnings)
}
