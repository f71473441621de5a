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
    /// The file must exist, and the command only reads it: a copy of another database file
    /// keeps the node id it carries (the first command that writes or syncs gives it its
    /// own), so that a look at a backup (`stats`, `export`...) does not make it a new
    /// device before it is restored in place.
    Read,
}

/// What every command needs to open a database: the global flags.
#[derive(Debug)]
pub struct Context {
    /// `--password-file`, if given.
    pub password_file: Option<PathBuf>,
}

impl Context {
    /// The database password (`--password-file`, else `BLAZEDB_PASSWORD`, else none).
    pub fn password(&self) -> Result<Option<password::Password>> {
        password::resolve(self.password_file.as_deref(), password::PASSWORD_ENV)
    }

    /// Open the database at `path` with the configured password. The library's errors already
    /// name the file and say what to do (wrong password, not a database, missing file).
    pub fn open(&self, path: &Path, access: Access) -> Result<Database> {
        if access != Access::CreateIfMissing {
            refuse_empty_file(path)?;
        }
        let options = OpenOptions {
            password: password::hand_over(self.password()?),
            create: access == Access::CreateIfMissing,
            identify_copy: access != Access::Read,
            ..OpenOptions::default()
        };
        let db = Database::open(path, options)?;
        tell_what_the_open_changed(&db);
        Ok(db)
    }
}

/// Say on stderr, once, what opening `db` changed about its file: an upgrade to this build's
/// storage format (silent otherwise and one-way: an upgrade audit, 2026-12-07, F2), or a new
/// node id for a copy of another file.
pub fn tell_what_the_open_changed(db: &Database) {
    if let Some(from) = db.upgraded_from() {
        crate::report::stderr_line(upgrade_notice(db.path(), from, db.upgrade_backup()));
    }
    if let Some(old) = db.copied_from() {
        crate::report::stderr_line(copy_notice(db.path(), old, db.node_id()));
    }
}

/// The notice for a copy of another database file: it is a device of its own from now on.
/// Said because it surprises whoever meant the copy as a backup: the id is how its peers
/// tell it from the original.
pub fn copy_notice(path: &Path, old: blazedb::NodeId, new: blazedb::NodeId) -> String {
    format!(
        "note: {} is a copy of another database file (node {old}); it is now a device of its \
         own, node {new}, so that it and the original can both sync without losing each \
         other's writes. Its peers receive its data once more at its next sync. To restore a \
         backup as the same device, copy it over the database file in place (README, \
         \"A copy of a database file\")",
        path.display()
    )
}

/// The notice [`tell_if_upgraded`] prints.
pub fn upgrade_notice(path: &Path, from: u32, backup: Option<&Path>) -> String {
    let way_back = match backup {
        Some(b) => format!(
            "; the file as it was is kept at {}, the way back to them (delete it once you \
             will not go back)",
            b.display()
        ),
        None => String::new(),
    };
    format!(
        "note: upgraded {} from storage format {from} to {}; BlazeDB builds that read only up \
         to format {from} can no longer open it{way_back} (see README, \"Upgrading\")",
        path.display(),
        blazedb::limits::FORMAT_VERSION
    )
}

/// Refuse a 0-byte file where a database must already exist. SQLite takes an empty file for
/// a new database and writes one into it, so `check`, `stats` or `export` of a file truncated
/// by accident (or of the wrong, empty file) would report a healthy empty database and
/// overwrite the evidence. A missing file is left to the library, whose error names it.
pub fn refuse_empty_file(path: &Path) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        bail!(
            "{} is an empty file, not a database: check the path. A database whose first \
             write was interrupted (the process killed while creating it) is left this way \
             with nothing in it: writing to it (`put`, `import`) starts the database anew. \
             A database that held data and is now empty was truncated: restore it from a \
             backup or a peer",
            path.display()
        );
    }
    Ok(())
}

/// Whether opening `path` will create the database file: nothing is there, or a symbolic link
/// to a target that does not exist yet (SQLite creates the target through it). Asked before
/// opening, so a command that fails can remove what it created and nothing else. It asks
/// `symlink_metadata`, not `exists`: `exists` follows links and calls a dangling link
/// missing, so a cleanup keyed on it would delete the link, which was there before.
pub fn will_create_database(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(link) if link.file_type().is_symlink() => {
            std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        }
        Ok(_) => false,
    }
}

/// Whether the database holds nothing: no change was ever committed to it and it has no
/// records, live or deleted. Read inside a transaction, so a commit by another process that
/// opened the same new file meanwhile shows.
pub fn is_untouched(db: &Database) -> Result<bool> {
    let stats = db.stats()?;
    Ok(stats.last_seq == 0
        && stats.feed_rows == 0
        && stats.history_entries == 0
        && stats
            .collections
            .values()
            .all(|c| c.records == 0 && c.tombstones == 0))
}

/// Remove a database file a failed command has just created (see [`will_create_database`]),
/// with its WAL and shared-memory files, so a failure leaves nothing behind. Best effort: the
/// error being reported is the one that matters. It removes nothing if the file is no longer
/// untouched: between the check and the open, or since, another process may have created
/// the same file and written to it, and that database is not this command's to delete. A
/// symbolic link the path went through stays (it was there before); the file created at
/// its target goes. Returns whether it removed the file (so that a caller removes what it
/// put beside it too).
pub fn remove_new_database(db: Database, path: &Path) -> bool {
    if !is_untouched(&db).unwrap_or(false) {
        return false;
    }
    // The file SQLite created, resolved while it certainly exists (through any link).
    let Ok(created) = std::fs::canonicalize(path) else {
        return false;
    };
    drop(db);
    let _ = std::fs::remove_file(&created);
    for suffix in ["-wal", "-shm"] {
        let mut p = created.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Database {
        let options = OpenOptions {
            create: true,
            ..OpenOptions::default()
        };
        Database::open(path, options).unwrap()
    }

    /// A failed command's cleanup spares a new file another process wrote to meanwhile.
    #[test]
    fn a_new_database_written_to_by_another_handle_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        assert!(will_create_database(&path));
        let ours = open(&path);
        assert!(is_untouched(&ours).unwrap());
        let theirs = open(&path);
        theirs.insert("notes", [("text", "kept")]).unwrap();
        assert!(!is_untouched(&ours).unwrap());
        remove_new_database(ours, &path);
        assert!(path.exists(), "another writer's database was removed");
        assert_eq!(theirs.count("notes").unwrap(), 1);
    }

    #[test]
    fn an_untouched_new_database_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let db = open(&path);
        remove_new_database(db, &path);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A dangling link: the file is created at its target, so only the target goes.
    #[cfg(unix)]
    #[test]
    fn a_link_to_a_missing_target_stays_and_the_created_target_goes() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.db");
        let target = dir.path().join("target.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(will_create_database(&link));
        let db = open(&link);
        assert!(target.exists());
        remove_new_database(db, &link);
        assert!(
            std::fs::symlink_metadata(&link).is_ok(),
            "the link was removed"
        );
        assert!(!target.exists(), "the created target was left behind");
    }

    #[test]
    fn an_existing_file_is_not_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        std::fs::write(&path, b"").unwrap();
        assert!(!will_create_database(&path));
    }
}
