//! Opening the database file a command names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use blazedb::{Database, OpenOptions};

use crate::password;

/// Whether a command may create the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The file must exist: a mistyped path is an error instead of a new, empty database.
    Existing,
    /// Create the file if it is missing (commands that add records).
    CreateIfMissing,
}

/// What every command needs to open a database: the global flags.
#[derive(Debug)]
pub struct Context {
    /// `--password-file`, if given.
    pub password_file: Option<PathBuf>,
}

impl Context {
    /// The database password (`--password-file`, else `BLAZEDB_PASSWORD`, else none).
    pub fn password(&self) -> Result<Option<String>> {
        password::resolve(self.password_file.as_deref(), password::PASSWORD_ENV)
    }

    /// Open the database at `path` with the configured password. The library's errors already
    /// name the file and say what to do (wrong password, not a database, missing file).
    pub fn open(&self, path: &Path, access: Access) -> Result<Database> {
        if access == Access::Existing {
            refuse_empty_file(path)?;
        }
        let options = OpenOptions {
            password: self.password()?,
            create: access == Access::CreateIfMissing,
            ..OpenOptions::default()
        };
        Ok(Database::open(path, options)?)
    }
}

/// Refuse a 0-byte file where a database must already exist. SQLite takes an empty file for
/// a new database and writes one into it, so `check`, `stats` or `export` of a file truncated
/// by accident (or of the wrong, empty file) would report a healthy empty database and
/// overwrite the evidence. A missing file is left to the library, whose error names it.
pub fn refuse_empty_file(path: &Path) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        bail!(
            "{} is an empty file, not a database: check the path, or restore the database \
             from a backup or a peer",
            path.display()
        );
    }
    Ok(())
}

/// Remove a database file a failed command has just created, with its WAL and shared-memory
/// files, so a failure leaves nothing behind (best effort: the error being reported is the
/// one that matters). The caller must have dropped its `Database` first.
pub fn remove_new_database(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
