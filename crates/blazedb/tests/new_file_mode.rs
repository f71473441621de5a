//! A database file `Database::open` creates is owner-only (0600) whatever the umask allows,
//! and so are the `-wal` and `-shm` files SQLite makes beside it; an existing file keeps the
//! mode its owner gave it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use blazedb::{Database, OpenOptions};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn new_database_files_are_owner_only_and_existing_ones_keep_their_mode() {
    // The usual umask, which lets SQLite create files every user may read. (The only test in
    // this binary: the umask is the whole process's.)
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().unwrap();
    for (name, password) in [("plain.db", None), ("encrypted.db", Some("pw".to_owned()))] {
        let path = dir.path().join(name);
        let db = Database::open(
            &path,
            OpenOptions {
                create: true,
                password,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        db.insert("notes", [("secret", "only mine")]).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("{name}{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(db);
    }

    // A file shared on purpose (0640 for a group) stays as its owner made it.
    let shared = dir.path().join("plain.db");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    let db = Database::open(&shared, OpenOptions::default()).unwrap();
    db.insert("notes", [("again", "yes")]).unwrap();
    drop(db);
    assert_eq!(mode(&shared), 0o640);
}
