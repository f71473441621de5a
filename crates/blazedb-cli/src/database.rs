//! Opening the database file a command names.

use std::path::{Path, PathBuf};

use anyhow::Result;
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
        let options = OpenOptions {
            password: self.password()?,
            create: access == Access::CreateIfMissing,
            ..OpenOptions::default()
        };
        Ok(Database::open(path, options)?)
    }
}
