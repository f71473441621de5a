//! Helpers shared by the tests: open databases on a fake clock and pump two sessions
//! against each other in memory; take a file back to an older storage format.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blazedb::sync::{Session, SessionConfig};
use blazedb::{Database, OpenOptions};

pub struct Node {
    pub db: Database,
    pub clock: Arc<AtomicU64>,
}

pub fn open(dir: &std::path::Path, name: &str) -> Database {
    Database::open(dir.join(format!("{name}.db")), OpenOptions::default()).unwrap()
}

/// Bytes moved each way by a pump.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Connect `a` and `b` with fresh sessions and run until both are caught up and quiet.
pub fn sync_pair(a: &Database, b: &Database, ca: SessionConfig, cb: SessionConfig) -> Moved {
    let mut sa = Session::new(a, ca, 0).unwrap();
    let mut sb = Session::new(b, cb, 0).unwrap();
    pump(a, &mut sa, b, &mut sb)
}

/// Run two sessions until both report caught up and no frame is in flight.
pub fn pump(a: &Database, sa: &mut Session, b: &Database, sb: &mut Session) -> Moved {
    pump_watching(a, sa, b, sb, |_| {})
}

/// [`pump`], also handing every frame `a` sends to `seen` (to check what a peer was told).
pub fn pump_watching(
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
    seen: impl FnMut(&[u8]),
) -> Moved {
    pump_watching_at(0, a, sa, b, sb, seen)
}

/// [`pump`] with the sessions' clock at `now_ms` (timers due by then act).
pub fn pump_at(
    now_ms: u64,
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
) -> Moved {
    pump_watching_at(now_ms, a, sa, b, sb, |_| {})
}

fn pump_watching_at(
    now_ms: u64,
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
    mut seen: impl FnMut(&[u8]),
) -> Moved {
    let mut moved = Moved::default();
    for _ in 0..100_000 {
        let mut progress = false;
        while let Some(f) = sa.poll_transmit(now_ms, a) {
            seen(&f);
            moved.a_to_b += f.len() as u64;
            sb.handle_bytes(now_ms, &f, b).unwrap();
            progress = true;
        }
        while let Some(f) = sb.poll_transmit(now_ms, b) {
            moved.b_to_a += f.len() as u64;
            sa.handle_bytes(now_ms, &f, a).unwrap();
            progress = true;
        }
        if !progress && sa.is_caught_up(a).unwrap() && sb.is_caught_up(b).unwrap() {
            return moved;
        }
        assert!(progress, "stalled before catching up");
    }
    panic!("did not converge");
}

/// Run `sa` (on `a`) toward `sb` (on `b`), frame by frame, until `stop(sa)` holds after `b`
/// handled a frame from `a` (e.g. a snapshot half sent); panics if it never does.
pub fn pump_until(
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
    mut stop: impl FnMut(&Session) -> bool,
) {
    for _ in 0..1000 {
        while let Some(f) = sb.poll_transmit(0, b) {
            sa.handle_bytes(0, &f, a).unwrap();
        }
        while let Some(f) = sa.poll_transmit(0, a) {
            sb.handle_bytes(0, &f, b).unwrap();
            if stop(sa) {
                return;
            }
        }
    }
    panic!("the sessions went quiet before the condition held");
}

/// A canonical dump of every collection: (collection, id, fields as JSON), sorted.
pub fn dump(db: &Database) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for c in db.collections().unwrap() {
        for r in db.scan(&c).unwrap() {
            out.push((c.clone(), r.id.to_string(), r.to_json().to_string()));
        }
    }
    out.sort();
    out
}

pub fn counter(start: u64) -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(start))
}

pub fn tick(c: &AtomicU64, ms: u64) {
    c.fetch_add(ms, Ordering::SeqCst);
}

/// Back to storage format 10, as a build of that format left the file (its migration to 11
/// only added `history.old_seen`). `path` is a plain file no handle of this process has open.
pub fn downgrade_to_format_10(path: &std::path::Path) {
    assert_eq!(
        blazedb::limits::FORMAT_VERSION,
        11,
        "update this helper for the new format"
    );
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "ALTER TABLE history DROP COLUMN old_seen;
         UPDATE meta SET value = 10 WHERE key = 'format_version';",
    )
    .unwrap();
}

/// The storage format of the plain file `path`, read with SQLite alone.
pub fn format_of(path: &std::path::Path) -> u32 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'format_version'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A plain file `a.db` in a new temporary directory with one record in `collection`, taken
/// back to format 10: the directory, the path and the record's id.
pub fn old_file(collection: &str) -> (tempfile::TempDir, std::path::PathBuf, blazedb::RecordId) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let id = Database::open(&path, OpenOptions::default())
        .unwrap()
        .insert(collection, [("n", 1i64)])
        .unwrap();
    downgrade_to_format_10(&path);
    (dir, path, id)
}
