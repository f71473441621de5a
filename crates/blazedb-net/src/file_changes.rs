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
//! late (network mounts, exhausted inotify watches): a watch that cannot be set up is
//! skipped, and the head watch is then what it was before; [`FileChanges::error`] says why,
//! for the programs to tell their users (the relay, `blazedb listen` and `blazedb sync`
//! print it as an event).
//!
//! Every watch of the process shares one watcher ([`ProcessWatcher`]: one inotify instance
//! and one thread), each directory watched once however many of its files are.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// A watch on one database file and its `-wal` and `-journal` files. Dropped, it stops.
pub(crate) struct FileChanges {
    /// Its subscription to the process's watcher; `None` when the platform refused the
    /// watch: then [`FileChanges::changed`] never fires.
    subscription: Option<Subscription>,
    /// Why there is no watch, said for the user.
    error: Option<String>,
    changed: Arc<Notify>,
}

impl FileChanges {
    /// Watch `path`'s directory for writes to `path` and the files SQLite keeps beside it.
    pub(crate) fn watch(path: &Path) -> FileChanges {
        let changed = Arc::new(Notify::new());
        let (subscription, error) = match ProcessWatcher::get().subscribe(path, &changed) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(unwatched(path, &e))),
        };
        FileChanges {
            subscription,
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
    pub(crate) fn is_watching(&self) -> bool {
        self.subscription.is_some()
    }

    /// Completes after the file changed (at once if it changed since the last call: changes
    /// meanwhile are one wake, not a queue).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Drop for FileChanges {
    fn drop(&mut self) {
        if let Some(s) = self.subscription.take() {
            ProcessWatcher::get().unsubscribe(s);
        }
    }
}

/// A [`FileChanges`]' place in the [`ProcessWatcher`].
struct Subscription {
    id: u64,
    /// The watched directory (canonical) and the file's names in it.
    dir: PathBuf,
    names: [OsString; 3],
}

/// The process's one file-system watcher, shared by every [`FileChanges`]: one inotify
/// instance and one thread, however many files are watched. A watcher each cost a thread
/// and an inotify instance per file, and Linux allows a user 128 instances by default: a
/// process holding many databases (a `Topology` of hundreds of nodes) ran out, and the files
/// past the limit were noticed only by polling.
struct ProcessWatcher {
    /// The watcher (started by the first subscription and kept for the process's life: its
    /// thread sleeps while nothing is written) and the directories it watches.
    watching: Mutex<Watching>,
    /// Who hears of writes to which file (by the file's path in its canonical directory):
    /// read by the watcher's thread, which takes no other lock of ours.
    listeners: Arc<Mutex<Listeners>>,
}

#[derive(Default)]
struct Watching {
    watcher: Option<RecommendedWatcher>,
    /// Subscriptions per watched directory.
    dirs: HashMap<PathBuf, usize>,
    next_id: u64,
}

/// Notifiers by file path, each with its subscription's id.
type Listeners = HashMap<PathBuf, Vec<(u64, Arc<Notify>)>>;

impl ProcessWatcher {
    fn get() -> &'static ProcessWatcher {
        static WATCHER: OnceLock<ProcessWatcher> = OnceLock::new();
        WATCHER.get_or_init(|| ProcessWatcher {
            watching: Mutex::default(),
            listeners: Arc::default(),
        })
    }

    /// Have `changed` woken on writes to `path` and the files SQLite keeps beside it.
    fn subscribe(&self, path: &Path, changed: &Arc<Notify>) -> notify::Result<Subscription> {
        let (dir, names) = watched_names(path)?;
        // Lock order: `watching`, then `listeners`. The watcher's own calls (`watch`,
        // `unwatch`) wait for its thread, which takes `listeners` to tell of an event: they
        // run with `watching` held, which that thread never takes, and never with
        // `listeners` held.
        let mut w = lock(&self.watching);
        if w.watcher.is_none() {
            let listeners = self.listeners.clone();
            w.watcher = Some(notify::recommended_watcher(
                move |event: notify::Result<notify::Event>| tell(&listeners, event),
            )?);
        }
        // Once per directory: some back ends (FSEvents, kqueue) would watch it twice. (A
        // directory removed and made again under the same name while a watch of it lives
        // is then not watched again: its commits wait for the head watch's poll or the
        // sessions' PING.)
        if !w.dirs.contains_key(&dir) {
            w.watcher
                .as_mut()
                .expect("started above")
                .watch(&dir, RecursiveMode::NonRecursive)?;
        }
        *w.dirs.entry(dir.clone()).or_default() += 1;
        let id = w.next_id;
        w.next_id += 1;
        let mut listeners = lock(&self.listeners);
        for n in &names {
            listeners
                .entry(dir.join(n))
                .or_default()
                .push((id, changed.clone()));
        }
        Ok(Subscription { id, dir, names })
    }

    fn unsubscribe(&self, s: Subscription) {
        let mut w = lock(&self.watching);
        {
            let mut listeners = lock(&self.listeners);
            for n in &s.names {
                let file = s.dir.join(n);
                if let Some(list) = listeners.get_mut(&file) {
                    list.retain(|(id, _)| *id != s.id);
                    if list.is_empty() {
                        listeners.remove(&file);
                    }
                }
            }
        }
        let unused = w.dirs.get_mut(&s.dir).is_some_and(|n| {
            *n -= 1;
            *n == 0
        });
        if unused {
            w.dirs.remove(&s.dir);
            if let Some(watcher) = w.watcher.as_mut() {
                // Fails when the directory is gone already, which ended the watch too.
                let _ = watcher.unwatch(&s.dir);
            }
        }
    }
}

/// On the watcher's thread: wake whoever listens to a file the event names. An error (the
/// watch overflowed, say) may hide a commit: it wakes everyone, and the head checks find out.
fn tell(listeners: &Mutex<Listeners>, event: notify::Result<notify::Event>) {
    let listeners = lock(listeners);
    match event {
        Ok(e) if matches!(e.kind, EventKind::Modify(_) | EventKind::Create(_)) => {
            for (_, changed) in e.paths.iter().filter_map(|p| listeners.get(p)).flatten() {
                changed.notify_one();
            }
        }
        Ok(_) => {}
        Err(_) => {
            for (_, changed) in listeners.values().flatten() {
                changed.notify_one();
            }
        }
    }
}

/// The canonical directory of `path` and the names whose writes are commits there: the file,
/// its WAL (WAL mode), its rollback journal. Canonical, as the watcher names the files it
/// tells of by the directory it was given (and FSEvents by the real path).
fn watched_names(path: &Path) -> notify::Result<(PathBuf, [OsString; 3])> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir).map_err(notify::Error::io)?;
    let name = path
        .file_name()
        .ok_or_else(|| notify::Error::generic("the path names no file"))?
        .to_owned();
    let names = ["", "-wal", "-journal"].map(|suffix| {
        let mut n = name.clone();
        n.push(suffix);
        n
    });
    Ok((dir, names))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the maps whole: a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    /// More watches than Linux's default 128 inotify instances per user, in directories of
    /// their own and two to a directory: every one is told of writes to its file, and
    /// none of another's; a directory is no longer watched once its last watch goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_watches_share_one_watcher() {
        let root = tempfile::tempdir().unwrap();
        let mut watches = Vec::new();
        for i in 0..150 {
            let dir = root.path().join(format!("d{i}"));
            std::fs::create_dir(&dir).unwrap();
            for name in ["x.db", "y.db"] {
                let path = dir.join(name);
                let changes = FileChanges::watch(&path);
                assert!(
                    changes.is_watching(),
                    "watch {i}/{name}: {:?}",
                    changes.error()
                );
                watches.push((path, changes));
            }
        }
        for (path, changes) in &watches {
            std::fs::write(path, b"x").unwrap();
            tokio::time::timeout(Duration::from_secs(10), changes.changed())
                .await
                .unwrap_or_else(|_| panic!("a write to {} was not told", path.display()));
        }
        // A write wakes its own watch only, not its neighbour's in the same directory nor
        // one elsewhere (once the events of the writes above are over).
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (_, changes) in &watches {
            let _ = tokio::time::timeout(Duration::from_millis(1), changes.changed()).await;
        }
        std::fs::write(&watches[0].0, b"y").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watches[0].1.changed())
            .await
            .expect("the write was not told");
        for (path, changes) in &watches[1..] {
            let quiet = tokio::time::timeout(Duration::from_millis(1), changes.changed()).await;
            assert!(
                quiet.is_err(),
                "{} was told of another file",
                path.display()
            );
        }
        let dirs: Vec<PathBuf> = watches
            .iter()
            .map(|(p, _)| std::fs::canonicalize(p.parent().unwrap()).unwrap())
            .collect();
        drop(watches);
        let watching = lock(&ProcessWatcher::get().watching);
        assert!(dirs.iter().all(|d| !watching.dirs.contains_key(d)));
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
