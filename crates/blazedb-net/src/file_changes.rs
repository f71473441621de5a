//! The operating system's word that a database file changed on disk, whoever wrote it.
//!
//! SQLite tells no one when another process commits to a file this process has open. The
//! head watches (`head_watch`, and `files` for file-to-file sync) therefore read the feed head
//! every [`HEAD_POLL_INTERVAL_MS`](crate::limits::HEAD_POLL_INTERVAL_MS); with only that, a
//! commit by `blazedb put` beside a running `blazedb sync --watch` waited 50 ms on average
//! before its session noticed. A commit writes the file's WAL (or, outside WAL mode, the file
//! itself), so a file-system watch on the directory (inotify, FSEvents, kqueue,
//! ReadDirectoryChangesW, through the `notify` crate) wakes the head watch at once. The poll
//! stays, as the safety net for file systems and platforms whose notifications are missing or
//! late (network mounts, exhausted inotify instances): a watch that cannot be set up is
//! skipped, and the head watch is then what it was before; [`FileChanges::error`] says why,
//! for the programs to tell their users (the relay, `blazedb listen` and `blazedb sync`
//! print it as an event).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// A watch on one database file and its `-wal` and `-journal` files. Dropped, it stops.
pub(crate) struct FileChanges {
    /// `None` when the platform refused the watch: then [`FileChanges::changed`] never fires.
    _watcher: Option<RecommendedWatcher>,
    /// Why there is no watch, said for the user.
    error: Option<String>,
    changed: Arc<Notify>,
}

impl FileChanges {
    /// Watch `path`'s directory for writes to `path` and the files SQLite keeps beside it.
    pub(crate) fn watch(path: &Path) -> FileChanges {
        let changed = Arc::new(Notify::new());
        let (watcher, error) = match start(path, changed.clone()) {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(unwatched(path, &e))),
        };
        FileChanges {
            _watcher: watcher,
            error,
            changed,
        }
    }

    /// Why the operating system does not watch the file (`None`: it does), with what that
    /// costs and what to do.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether the operating system watches the file.
    #[cfg(test)]
    pub(crate) fn is_watching(&self) -> bool {
        self._watcher.is_some()
    }

    /// Completes after the file changed (at once if it changed since the last call: changes
    /// meanwhile are one wake, not a queue).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

fn start(path: &Path, changed: Arc<Notify>) -> notify::Result<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| notify::Error::generic("the path names no file"))?
        .to_owned();
    // The names whose writes are commits: the file, its WAL (WAL mode), its rollback journal.
    let names: Vec<OsString> = ["", "-wal", "-journal"]
        .iter()
        .map(|suffix| {
            let mut n = name.clone();
            n.push(suffix);
            n
        })
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (the watch overflowed, say) may hide a commit: wake, and the head check
        // finds out.
        let ours = match &event {
            Ok(e) => {
                matches!(e.kind, EventKind::Modify(_) | EventKind::Create(_))
                    && e.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|f| names.iter().any(|n| n.as_os_str() == f))
                    })
            }
            Err(_) => true,
        };
        if ours {
            changed.notify_one();
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// [`FileChanges::error`]'s text.
fn unwatched(path: &Path, e: &notify::Error) -> String {
    let mut s = format!(
        "cannot watch {} for changes ({e}): commits to it by other processes are noticed \
         within {} ms (by polling) instead of at once",
        path.display(),
        crate::limits::HEAD_POLL_INTERVAL_MS
    );
    if cfg!(target_os = "linux") {
        s.push_str(
            "; if the inotify limits are reached, raise them (sysctl \
             fs.inotify.max_user_instances and fs.inotify.max_user_watches)",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Another handle's commit (another process, as far as this handle's listeners know) is
    /// told by the watch; a write to another file in the same directory is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_to_the_file_is_told_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let db = blazedb::Database::open(&path, blazedb::OpenOptions::default()).unwrap();
        let changes = FileChanges::watch(&path);
        assert!(
            changes.is_watching(),
            "no file-system watch on this platform"
        );
        // Whatever opening the file did is over; start from a quiet watch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::time::timeout(Duration::from_millis(10), changes.changed()).await;

        std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("a.dbx"), b"x").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        assert!(quiet.is_err(), "woken by a write to another file");

        db.insert("notes", [("n", 1)]).unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("a commit was not told");
        assert_eq!(changes.error(), None);
    }

    /// A watch the operating system refuses says why, what it costs and what to do.
    #[test]
    fn a_refused_watch_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("a.db");
        let changes = FileChanges::watch(&path);
        assert!(!changes.is_watching());
        let e = changes.error().expect("an explanation");
        assert!(e.contains("cannot watch") && e.contains("a.db"), "{e}");
        assert!(e.contains("within 100 ms"), "{e}");
    }
}
