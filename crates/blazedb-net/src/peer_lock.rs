//! One client sync of a database file with one peer at a time, across processes: what keeps a
//! second `blazedb sync DB URL` from running beside a first.
//!
//! Two syncs of one file with one peer are two sessions of the same node against that peer,
//! each sending the file's whole feed and applying everything the peer sends: twice the
//! traffic and work for nothing, and two sessions of one node whose cursors, staged units and
//! snapshot notes at the peer interleave. So [`sync_once`](crate::sync_once) and
//! [`sync_watch`](crate::sync_watch) first take an advisory lock on a file beside the
//! database, one per (database file, peer URL):
//!
//! ```text
//!   /data/bugs.db
//!   /data/bugs.db-sync-3f2a9c0d1e4b5a67.lock   ← FNV-1a of "tcp://relay:7421";
//!                                                 {"pid":…,"peer":…,"how":"watch"} inside
//! ```
//!
//! The lock is the operating system's (`flock` on Unix, `LockFileEx` on Windows, through the
//! `fs4` crate), not the file's existence: it goes with the process however the process
//! ends, SIGKILL included, so no stale lock ever blocks the next run. The file stays behind
//! (removing it on release would race with a process that opened it a moment before); its
//! contents, the holder's pid and what it runs, are cleared on release and only read while
//! the lock is held, to name the holder in the refusal. Syncing one file with two different
//! peers takes two different locks. The same peer under two URLs (`localhost` and
//! `127.0.0.1`) is not recognised as one.
//!
//! Where no lock can be had for other reasons (a file system without locks, a directory
//! this process may not create files in), the sync goes on unlocked: the lock is a
//! safeguard against a mistake, not something a sync needs to be correct.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use blazedb::NodeId;

use crate::transport::Endpoint;

/// What a sync holding the lock does, as its refusal of a second one names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// A one-shot sync (`sync_once`, `blazedb sync --once`).
    Once,
    /// A long-running sync (`sync_watch`, `blazedb sync --watch`).
    Watch,
}

impl SyncKind {
    fn as_str(self) -> &'static str {
        match self {
            SyncKind::Once => "once",
            SyncKind::Watch => "watch",
        }
    }
}

/// The lock of one (database file, peer) pair, held until dropped.
#[derive(Debug)]
pub struct PeerLock {
    /// `None` when no lock could be had for a reason other than another holder.
    file: Option<File>,
}

/// Another sync of the same database file with the same peer holds the lock.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{} is already syncing with {peer}{}{}: a second sync of the file with the same peer would \
     run a second session of the same node against it, sending and receiving everything \
     twice. Let that one sync ({}), or stop it first{}",
    db.display(),
    holder_text(*pid, *kind),
    same_node.as_ref().map(|n| format!(
        ", and {} is that same peer (node {}) under another name", n.0, n.1
    )).unwrap_or_default(),
    match kind {
        Some(SyncKind::Once) => "it ends once caught up: run this one after it",
        _ => "it keeps syncing: writes to the file reach the peer through it",
    },
    pid.map(|p| format!(" (Ctrl-C there, or `kill {p}`)")).unwrap_or_default()
)]
pub struct AlreadySyncing {
    /// The database file.
    pub db: PathBuf,
    /// The peer's URL, as the holder named it.
    pub peer: String,
    /// The URL this sync was given and the node it reached there, when the refusal came
    /// from the node lock ([`PeerLock::acquire_node`]): another URL of the holder's peer.
    pub same_node: Option<Box<(String, NodeId)>>,
    /// The holder's process id, when it could be read.
    pub pid: Option<u32>,
    /// What the holder runs, when it could be read.
    pub kind: Option<SyncKind>,
    /// The lock file.
    pub lock_file: PathBuf,
}

fn holder_text(pid: Option<u32>, kind: Option<SyncKind>) -> String {
    let what = match kind {
        Some(SyncKind::Once) => "a `sync --once`",
        Some(SyncKind::Watch) => "a `sync --watch`",
        None => "another sync",
    };
    match pid {
        Some(p) if p == std::process::id() => format!(" in this process ({what})"),
        Some(p) => format!(" in process {p} ({what})"),
        None => format!(" ({what} holds its lock file)"),
    }
}

impl PeerLock {
    /// Take the lock of `db` (the database file, which exists) with `peer`, or say who holds
    /// it. Never waits.
    pub fn acquire(db: &Path, peer: &Endpoint, kind: SyncKind) -> Result<PeerLock, AlreadySyncing> {
        let peer = peer.to_string();
        // Beside the file itself, whatever link or relative path named it: every process
        // syncing the file meets there.
        let Ok(real) = std::fs::canonicalize(db) else {
            return Ok(PeerLock { file: None });
        };
        let path = lock_path(&real, &peer);
        take(db, &real, &path, &peer, None, kind)
    }

    /// Take the lock of `db` with the peer whose HELLO named it `node`, reached at `via`, or
    /// say who holds it (another sync of the file with the same node, through another URL or
    /// the same one). Never waits. See the module docs.
    pub fn acquire_node(
        db: &Path,
        node: NodeId,
        via: &Endpoint,
        kind: SyncKind,
    ) -> Result<PeerLock, AlreadySyncing> {
        let Ok(real) = std::fs::canonicalize(db) else {
            return Ok(PeerLock { file: None });
        };
        let path = node_lock_path(&real, node);
        take(db, &real, &path, &via.to_string(), Some(node), kind)
    }

    /// Whether the lock is held (false where locking was not possible; see the module docs).
    pub fn is_held(&self) -> bool {
        self.file.is_some()
    }
}

impl Drop for PeerLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Cleared while still held, so that the next holder's refusals never name this
            // process; closing the file releases the lock.
            let _ = file.set_len(0);
        }
    }
}

/// Take the lock file at `path` for a sync of `db` (`real`: its canonical path) with the
/// peer at `url` (and, for the node lock, `node`), or say who holds it.
fn take(
    db: &Path,
    real: &Path,
    path: &Path,
    url: &str,
    node: Option<NodeId>,
    kind: SyncKind,
) -> Result<PeerLock, AlreadySyncing> {
    let unlocked = PeerLock { file: None };
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    else {
        return Ok(unlocked);
    };
    // Named in full: std's `File::try_lock` (Rust 1.89) is newer than this workspace's
    // minimum Rust version, and a method call would pick it.
    match <File as fs4::FileExt>::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let held_with = holder["peer"].as_str().unwrap_or(url).to_owned();
            return Err(AlreadySyncing {
                db: db.to_owned(),
                same_node: node
                    .filter(|_| held_with != url)
                    .map(|n| Box::new((url.to_owned(), n))),
                peer: held_with,
                pid: holder["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
                kind: match holder["how"].as_str() {
                    Some("once") => Some(SyncKind::Once),
                    Some("watch") => Some(SyncKind::Watch),
                    _ => None,
                },
                lock_file: path.to_owned(),
            });
        }
        Err(fs4::TryLockError::Error(_)) => return Ok(unlocked),
    }
    let mut holder = serde_json::json!({
        "pid": std::process::id(),
        "peer": url,
        "how": kind.as_str(),
        "db": real.display().to_string(),
    });
    if let Some(n) = node {
        holder["node"] = n.to_string().into();
    }
    // Best effort: a holder that cannot say who it is still holds the lock.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{holder}"))
        .and_then(|()| file.flush());
    Ok(PeerLock { file: Some(file) })
}

/// Every sync lock file of the database file `db` (which exists): one per peer URL and per
/// peer node it synced with. Empty when the file's real path cannot be had.
pub fn lock_files(db: &Path) -> Vec<PathBuf> {
    let Ok(real) = std::fs::canonicalize(db) else {
        return Vec::new();
    };
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}-sync-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".lock")
        })
        .map(|e| e.path())
        .collect()
}

/// Remove the lock file at `path` unless a sync holds it: for a database file that is
/// removed (a new one whose first sync failed), so that nothing is left behind. Best effort.
pub fn remove_lock_file(path: &Path) {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    if <File as fs4::FileExt>::try_lock(&file).is_ok() {
        // Removed while held, so that no sync takes it in between. (One that opened it just
        // before could still lock the removed file after us: for a database nobody has
        // written to, no harm.)
        let _ = std::fs::remove_file(path);
    }
}

/// The lock file of `db` (canonical) with the peer at `url`.
fn lock_path(db: &Path, url: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(format!("-sync-{:016x}.lock", fnv1a(url.as_bytes())));
    db.with_file_name(name)
}

/// The lock file of `db` (canonical) with the peer node `node`.
fn node_lock_path(db: &Path, node: NodeId) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(format!("-sync-node-{node}.lock"));
    db.with_file_name(name)
}

/// FNV-1a, 64 bits: stable across processes, platforms and releases (std's hashers are
/// not promised to be), which is all a lock file's name needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(url: &str) -> Endpoint {
        url.parse().unwrap()
    }

    /// The lock is per open file, so a second taker in this process is refused as another
    /// process would be, and named; dropping the first lets the next in.
    #[test]
    fn one_holder_per_file_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").unwrap();
        let relay = peer("tcp://127.0.0.1:7421");
        let first = PeerLock::acquire(&db, &relay, SyncKind::Watch).unwrap();
        assert!(first.is_held());
        let refused = PeerLock::acquire(&db, &relay, SyncKind::Once).unwrap_err();
        assert_eq!(refused.pid, Some(std::process::id()));
        assert_eq!(refused.kind, Some(SyncKind::Watch));
        assert_eq!(refused.peer, "tcp://127.0.0.1:7421");
        let text = refused.to_string();
        assert!(
            text.contains("a.db is already syncing with tcp://127.0.0.1:7421 in this process"),
            "{text}"
        );
        // Another peer, and the same peer through another path to the file, meanwhile.
        let other = PeerLock::acquire(&db, &peer("tcp://127.0.0.1:7422"), SyncKind::Watch);
        assert!(other.unwrap().is_held());
        let linked = dir.path().join("sub");
        std::fs::create_dir(&linked).unwrap();
        let roundabout = linked.join("..").join("a.db");
        assert!(PeerLock::acquire(&roundabout, &relay, SyncKind::Once).is_err());
        drop(first);
        let next = PeerLock::acquire(&db, &relay, SyncKind::Once).unwrap();
        assert!(next.is_held());
    }

    /// With a new database that is removed, its lock file goes, unless a sync holds it.
    #[test]
    fn an_unheld_lock_file_is_removed_a_held_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").unwrap();
        let relay = peer("tcp://127.0.0.1:7421");
        let held = PeerLock::acquire(&db, &relay, SyncKind::Once).unwrap();
        let paths = lock_files(&db);
        assert_eq!(paths.len(), 1, "{paths:?}");
        let path = paths[0].clone();
        remove_lock_file(&path);
        assert!(path.exists());
        drop(held);
        remove_lock_file(&path);
        assert!(!path.exists());
        remove_lock_file(&path);
    }

    /// The same peer under two URLs: the URL locks differ, the node lock refuses the second
    /// and names both URLs and the node; another node is let in; the lock files are listed.
    #[test]
    fn one_holder_per_file_and_peer_node_whatever_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").unwrap();
        let node: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let (by_name, by_address) = (peer("ws://localhost:7420"), peer("ws://127.0.0.1:7420"));
        let _url = PeerLock::acquire(&db, &by_name, SyncKind::Watch).unwrap();
        let first = PeerLock::acquire_node(&db, node, &by_name, SyncKind::Watch).unwrap();
        assert!(first.is_held());
        assert!(PeerLock::acquire(&db, &by_address, SyncKind::Once)
            .unwrap()
            .is_held());
        let refused = PeerLock::acquire_node(&db, node, &by_address, SyncKind::Once).unwrap_err();
        assert_eq!(refused.peer, "ws://localhost:7420");
        assert_eq!(
            refused.same_node,
            Some(Box::new(("ws://127.0.0.1:7420".to_owned(), node)))
        );
        let text = refused.to_string();
        assert!(
            text.contains(&format!(
                "a.db is already syncing with ws://localhost:7420 in this process (a `sync \
                 --watch`), and ws://127.0.0.1:7420 is that same peer (node {node}) under \
                 another name"
            )),
            "{text}"
        );
        // Through the same URL the refusal reads as the URL lock's.
        let again = PeerLock::acquire_node(&db, node, &by_name, SyncKind::Once).unwrap_err();
        assert_eq!(again.same_node, None);
        let other: NodeId = "fedcba9876543210fedcba9876543210".parse().unwrap();
        assert!(
            PeerLock::acquire_node(&db, other, &by_address, SyncKind::Once)
                .unwrap()
                .is_held()
        );
        let mut files: Vec<String> = lock_files(&db)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), 4, "{files:?}");
        assert!(
            files.contains(&format!("a.db-sync-node-{node}.lock")),
            "{files:?}"
        );
        drop(first);
        assert!(
            PeerLock::acquire_node(&db, node, &by_address, SyncKind::Once)
                .unwrap()
                .is_held()
        );
    }

    #[test]
    fn lock_files_sit_beside_the_database_one_per_peer() {
        let db = Path::new("/data/bugs.db");
        let a = lock_path(db, "tcp://relay:7421");
        assert_eq!(a.parent(), Some(Path::new("/data")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("bugs.db-sync-") && name.ends_with(".lock"),
            "{name}"
        );
        assert_ne!(a, lock_path(db, "tcp://relay:7422"));
        // The name is fixed for good: processes of different releases must meet.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
