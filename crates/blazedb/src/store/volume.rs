//! The file system a database lives on, as far as an error message needs it: the directory
//! of the file, the space left there, and whether this process may create files in it.
//!
//! Only asked after something failed, to tell the user which of the things they can mend
//! it was; nothing here decides whether an operation is attempted.

use std::path::{Path, PathBuf};

/// The directory that holds `path` (`.` for a bare file name), as the user would look for
/// it: absolute when it can be made so.
pub(crate) fn directory_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Bytes this user may still write on the file system that holds `dir` (`None`: the
/// platform or the file system does not say).
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let s = rustix::fs::statvfs(dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Whether the file system that holds `dir` has no inode left for this user: it can create
/// no file, however much space it has (many small files, a tmpfs or an ext4 made with few
/// inodes). `statvfs`'s `f_favail`; a file system that counts no inodes at all
/// (`f_files == 0`, btrfs) is never out of them.
pub(crate) fn out_of_inodes(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        rustix::fs::statvfs(dir).is_ok_and(|s| s.f_files > 0 && s.f_favail == 0)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// Why this process cannot create files in `dir` ("is on a read-only file system", "is not
/// writable by this user"), or `None` when it can (or the platform does not say).
pub(crate) fn why_not_writable(dir: &Path) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
            Ok(()) => None,
            Err(Errno::ROFS) => Some("is on a read-only file system"),
            Err(Errno::ACCESS | Errno::PERM) => Some("is not writable by this user"),
            Err(_) => None,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Whether the file system that holds `dir` refuses to create a file (`EROFS`): it is
/// mounted read-only, or it turned read-only while mounted — ext4 mounted with
/// `errors=remount-ro` does so after an I/O error on its disk. That kind is told by nothing
/// else: `statvfs` and `access(W_OK)` still say read-write (only `/proc/mounts` shows
/// `emergency_ro`), and SQLite's writes fail as plain I/O errors (`SQLITE_IOERR_WRITE`).
///
/// Creates (and removes) an empty file named after this process in `dir`, so it is asked
/// only after a write failed with an I/O error. `false` when the file could be created, for
/// any other error, and where the platform does not say.
pub(crate) fn refuses_new_files(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let probe = dir.join(format!(".blazedb-write-probe-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                false
            }
            Err(e) => e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_takes_the_probe_and_keeps_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!refuses_new_files(dir.path()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(
            !refuses_new_files(&dir.path().join("missing")),
            "ENOENT is not EROFS"
        );
    }
}
