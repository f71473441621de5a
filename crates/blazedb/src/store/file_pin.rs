//! One descriptor per database file, held by this process while any handle on the file lives.
//!
//! SQLite locks a file with POSIX advisory locks, and POSIX drops *every* lock a process
//! holds on a file when the process closes *any* descriptor of it. `open` reads the file's
//! first bytes itself before SQLite opens it (the salt an encrypted file's key is derived
//! with, and what kind of file it is). Read through a descriptor opened and closed for the
//! purpose, a second handle on a file this process already had open silently dropped the
//! first handle's locks: another process then saw the file as unused, and a `rekey` there
//! replaced the file under a relay that was serving it (its `/v1/query` handle, the second,
//! had just opened it). SQLite's own documentation lists this as a way to corrupt a file.
//!
//! So the first handle on a file opens one descriptor and registers it here by device and
//! inode; later handles read through the same one; it closes only when the last handle on
//! the file has closed its SQLite connections (the pin is the last field a `Database` drops).
//! Before any descriptor is opened, the path is looked up with `stat`, which opens none.
//!
//! The descriptor also tells whether the file still has a name ([`FilePin::unlinked`]): a
//! file deleted while open (`rm -rf` of its directory, a backup renamed over it) keeps
//! taking SQLite's writes, and they vanish when the last descriptor closes.
//!
//! And it carries the file's *format lock* (`flock`, not SQLite's POSIX locks): every open
//! handle holds it shared, and a migration to a newer storage format takes it exclusively,
//! so that a newer build refuses to upgrade a file while a process of this build has it open
//! ([`FilePin::try_lock_exclusive`], `open.rs`). It is taken on this descriptor, never on
//! one opened for the purpose, for the reason above: closing that descriptor would drop this
//! process's SQLite locks on the file. `flock` locks belong to the open file description,
//! so every handle of this process on the file shares the one lock, and it is released when
//! the pin's descriptor closes (after the last handle's connections). They do not interact
//! with SQLite's `fcntl` locks on Linux and the BSDs (on Linux NFS, `flock` is emulated with
//! whole-file `fcntl` locks; SQLite's WAL mode does not work over NFS in any case). Unix
//! only: Windows' file locks are mandatory, and would refuse SQLite's own I/O.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The file a database path led to when it was pinned, open for reading.
#[derive(Debug)]
pub(crate) struct FilePin {
    file: std::fs::File,
    /// Descriptors of this file opened by a pin that raced a rename (see [`pin`]): kept, not
    /// closed, for the reason in the module docs.
    extra: Mutex<Vec<std::fs::File>>,
    /// The path the file was pinned through (for messages).
    path: std::path::PathBuf,
    /// Whether the file had a name when it was pinned. A file system that reports no links
    /// for files with a name (some FUSE file systems do) has this false, and
    /// [`FilePin::unlinked`] never says a file is gone there.
    linked_when_pinned: bool,
    /// A write to the file failed with an I/O error and its file system then refused to
    /// create a file: it turned read-only while the file was open (see
    /// [`FilePin::mark_read_only_fs`]). Shared by every handle on the file, and final.
    read_only_fs: AtomicBool,
}

impl FilePin {
    /// The file's metadata now (through the pinned descriptor, so of the file SQLite opened
    /// whatever its path leads to).
    pub fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// The file's length now.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file has no name left in any directory: it was deleted (or another file
    /// was renamed over it) while open. Its data lives on only as long as a descriptor is
    /// open, so a write committed to it now is lost when the process ends. One `fstat` of
    /// the held descriptor: no path is looked up, so a process that changed its working
    /// directory, a symbolic link pointed elsewhere or a directory renamed (the file keeps a
    /// name, and its writes) do not count. `false` where it cannot be told.
    pub fn unlinked(&self) -> bool {
        self.linked_when_pinned && links(&self.file) == Some(0)
    }

    /// How many names (hard links) the file has now; `None` where that cannot be told.
    pub fn link_count(&self) -> Option<u64> {
        links(&self.file)
    }

    /// Whether a write to the file found its file system turned read-only while open
    /// ([`FilePin::mark_read_only_fs`]).
    pub fn read_only_fs(&self) -> bool {
        self.read_only_fs.load(Ordering::Acquire)
    }

    /// Note that the file's file system turned read-only while the file is open (a write
    /// failed with an I/O error and the directory refused a new file: ext4's
    /// `errors=remount-ro`). Final for this process: such a mount takes writes again only
    /// once unmounted and repaired, which cannot happen while the file is open.
    pub fn mark_read_only_fs(&self) {
        self.read_only_fs.store(true, Ordering::Release);
    }

    /// Ask the file system whether it turned read-only (it refuses a new file beside the
    /// database with `EROFS`: `volume::refuses_new_files`), and note it if so; whether it is
    /// known read-only now. Asked after a write failed with an I/O error, or by a probe.
    pub fn check_read_only_fs(&self) -> bool {
        if !self.read_only_fs()
            && super::volume::refuses_new_files(&super::volume::directory_of(self.path()))
        {
            self.mark_read_only_fs();
        }
        self.read_only_fs()
    }

    /// The length of the file named as this one plus `suffix` (the `-wal` SQLite keeps
    /// beside it), when both were deleted while open: found among the process's open
    /// descriptors, which Linux lists with their path and ` (deleted)` in `/proc/self/fd`.
    /// The path is the one the kernel gives this file's own descriptor there, so symbolic
    /// links and relative paths do not matter. `None` while this file has a name, where no
    /// such file is open, or elsewhere than on Linux.
    pub fn deleted_sibling_len(&self, suffix: &str) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            const DELETED: &str = " (deleted)";
            let fds = Path::new("/proc/self/fd");
            let own = std::fs::read_link(fds.join(self.file.as_raw_fd().to_string())).ok()?;
            let own = own.to_str()?.strip_suffix(DELETED)?;
            let sibling = format!("{own}{suffix}{DELETED}");
            // One readlink per open descriptor: asked only once the file is gone.
            std::fs::read_dir(fds)
                .ok()?
                .filter_map(Result::ok)
                .find(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|to| to.as_os_str() == sibling.as_str())
                })
                // `metadata` follows the link to the open file itself.
                .and_then(|fd| std::fs::metadata(fd.path()).ok())
                .map(|m| m.len())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = suffix;
            None
        }
    }

    /// The path the file was pinned through.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the format lock shared (or keep it, converting an exclusive one), without
    /// waiting: `false` when another process holds it exclusively (a migration is running).
    /// `true` also where the file system has no `flock` (an error other than "would
    /// block"): there the lock protects nothing, and opening goes on as without it.
    pub fn try_lock_shared(&self) -> bool {
        // Named in full: std's `File::try_lock_shared` (Rust 1.89) is newer than this
        // workspace's minimum Rust version, and a method call would pick it.
        #[cfg(unix)]
        {
            !matches!(
                <std::fs::File as fs4::FileExt>::try_lock_shared(&self.file),
                Err(fs4::TryLockError::WouldBlock)
            )
        }
        // Windows' file locks are mandatory: a lock on this handle would refuse SQLite's own
        // reads and writes of the locked bytes. No format lock there.
        #[cfg(not(unix))]
        {
            true
        }
    }

    /// Take the format lock exclusively, without waiting: `false` when another process holds
    /// it (shared: a handle has the file open; exclusive: it is migrating the file). Handles
    /// of this process share the lock (one descriptor), so they never stand in the way. `true`
    /// where the file system has no `flock`, as [`FilePin::try_lock_shared`].
    pub fn try_lock_exclusive(&self) -> bool {
        #[cfg(unix)]
        {
            !matches!(
                <std::fs::File as fs4::FileExt>::try_lock(&self.file),
                Err(fs4::TryLockError::WouldBlock)
            )
        }
        #[cfg(not(unix))]
        {
            true
        }
    }

    /// Let go of the format lock (after a probe with [`FilePin::try_lock_shared`] by an open
    /// that holds it for nothing yet).
    pub fn unlock(&self) {
        #[cfg(unix)]
        let _ = <std::fs::File as fs4::FileExt>::unlock(&self.file);
    }

    /// Fill `buf` from the start of the file (never through a descriptor that then closes).
    pub fn read_head(&self, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(buf, 0)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek};
            let mut f = &self.file;
            f.seek(std::io::SeekFrom::Start(0))?;
            f.read_exact(buf)
        }
    }
}

type Pins = HashMap<(u64, u64), Weak<FilePin>>;

fn pins() -> std::sync::MutexGuard<'static, Pins> {
    static PINS: OnceLock<Mutex<Pins>> = OnceLock::new();
    PINS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The pin of the file `path` leads to now: the one a handle of this process holds, or a
/// new one. `None` when there is no file there.
pub(crate) fn pin(path: &Path) -> std::io::Result<Option<Arc<FilePin>>> {
    let mut pins = pins();
    let Some(id) = identity(path) else {
        return Ok(None);
    };
    if let Some(p) = pins.get(&id).and_then(Weak::upgrade) {
        return Ok(Some(p));
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A rename between the `stat` and the open (a rekey elsewhere) leaves this descriptor on
    // another file, which a handle of ours may have pinned: closing it would drop that
    // handle's locks, so it joins that pin instead.
    let id = file_id(&file)?.unwrap_or(id);
    if let Some(p) = pins.get(&id).and_then(Weak::upgrade) {
        p.extra.lock().unwrap_or_else(|e| e.into_inner()).push(file);
        return Ok(Some(p));
    }
    pins.retain(|_, p| p.strong_count() > 0);
    let p = Arc::new(FilePin {
        linked_when_pinned: links(&file).is_some_and(|n| n > 0),
        read_only_fs: AtomicBool::new(false),
        file,
        extra: Mutex::default(),
        path: path.to_owned(),
    });
    pins.insert(id, Arc::downgrade(&p));
    Ok(Some(p))
}

/// Device and inode of the file `path` leads to, by `stat` (no descriptor opened).
fn identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        // No POSIX locks to lose: every open pins a file of its own.
        std::fs::metadata(path).ok().map(|_| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            (0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        })
    }
}

/// How many names (hard links) an open file has; `None` where it cannot be told.
fn links(file: &std::fs::File) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| m.nlink())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// Device and inode of an open file.
fn file_id(file: &std::fs::File) -> std::io::Result<Option<(u64, u64)>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(Some((m.dev(), m.ino())))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(None)
    }
}
