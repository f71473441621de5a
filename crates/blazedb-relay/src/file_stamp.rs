//! What tells a file changed without reading it: its length, modification time and inode (a
//! file replaced by renaming a new one over it has a new inode even when the rest matches).
//! For the files the relay reads again when they change: the JWT public keys, the rules.

use std::path::Path;

/// A file's look; `None` for one that cannot be looked at (gone, unreadable directory).
pub(crate) type FileStamp = Option<(u64, Option<std::time::SystemTime>, u64)>;

/// How `path` looks now.
pub(crate) fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok(), m.ino()))
}
