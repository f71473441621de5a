//! What tells a file changed without reading it: its length, modification time and inode (a
//! file replaced by renaming a new one over it has a new inode even when the rest matches).
//! For the files servers read again when they change: TLS certificates, keys and revocation
//! lists here; the relay's JWT keys and rules.

use std::path::Path;

/// How a file looked when last looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

/// How `path` looks now; `None` for a file that cannot be looked at (gone, unreadable
/// directory).
pub fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}
