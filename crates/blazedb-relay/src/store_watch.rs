//! Whether the relay's store can take writes: the file still has a name (its data directory
//! was not deleted while the relay runs), its file system did not turn read-only, and its
//! disk has room. `/health` reports it, the `store_status` metric exports it, and each
//! change is logged once.
//!
//! ```text
//!  every STORE_CHECK_INTERVAL_MS, and at each GET /health:
//!    Database::file_is_gone (fstat) ────────┐
//!    Database::file_system_read_only (flag) ┤
//!    free bytes of the disk (statvfs) ──────┴─► classify (with the previous status)
//!                                               ─► StoreStatus
//!                                          └─ changed? one log line (store_gone, ...)
//! ```
//!
//! A file system that turned read-only while mounted (ext4's `errors=remount-ro` after an
//! I/O error on its disk) is told by no `statvfs` or `access`: only a write tells it, which
//! fails with an I/O error, whereupon the store tries to create a file beside it (`EROFS`)
//! and notes the answer (`Database::file_system_read_only`). The relay writes its clients'
//! bookkeeping about every second while any syncs, so the status follows within a few
//! seconds of a failed write; an idle relay asks the file system itself every
//! `Limits::store_probe_interval_ms` (30 s: `Database::probe_file_system_read_only`
//! creates and removes an empty file), where it once said `ok` until something wrote.
//!
//! What the relay does meanwhile is decided elsewhere and does not wait for this check: the
//! store refuses every commit to a deleted file (`Error::FileGone`, checked at each commit)
//! and every write once one found the file system read-only (`Error::FileSystemReadOnly`),
//! a write on a full disk fails in SQLite, and sync sessions tell clients so in the relay's
//! words and go on serving clients that only read (their bookkeeping waits in memory:
//! `blazedb/src/store/noted_cursors.rs`). So this module only reports.
//!
//! **A deleted store is not a reason to exit.** The open file is then the only copy of what
//! the relay held since its last backup: exiting frees it, and a restart (by the operator,
//! systemd or an orchestrator) would create a new, empty store with a new node id. Running
//! on, the relay keeps serving reads from the open file, refuses writes (which the next
//! restart would lose), answers `/health` with 503, and leaves the operator time to copy the
//! store out of `/proc/PID/fd` (ARCHITECTURE.md, Relay). The copies stay elsewhere until the
//! relay has stopped: SQLite removes the `-wal` file by its name when the relay closes it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blazedb::Database;

use crate::limits::STORE_DISK_FREE_BYTES_MIN;

/// What `/health` says about the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreStatus {
    /// Writable as far as can be told.
    Ok,
    /// The disk holding the store has less than [`STORE_DISK_FREE_BYTES_MIN`] free: writes
    /// may fail (and are then refused, "the relay's disk is full"); reads are served.
    DiskFull {
        /// Bytes free for this user on the store's file system.
        free_bytes: u64,
    },
    /// The store file was deleted while the relay runs: writes are refused, reads are served
    /// from the open file. Final: a deleted file does not come back for this process.
    Gone,
    /// The store's file system turned read-only while the relay runs (a write failed with
    /// an I/O error and the data directory refused a new file): writes are refused, reads
    /// are served. Final: the mount takes writes again only once unmounted and repaired,
    /// which needs the relay stopped.
    ReadOnly,
}

impl StoreStatus {
    /// `/health`'s `status`: `ok`, `degraded` (serving, refusing some writes) or `failing`
    /// (the operator must act).
    pub fn name(self) -> &'static str {
        match self {
            StoreStatus::Ok => "ok",
            StoreStatus::DiskFull { .. } => "degraded",
            StoreStatus::Gone | StoreStatus::ReadOnly => "failing",
        }
    }

    /// The value of the `store_status` metric: 0 ok, 1 degraded, 2 failing.
    pub fn level(self) -> i64 {
        match self {
            StoreStatus::Ok => 0,
            StoreStatus::DiskFull { .. } => 1,
            StoreStatus::Gone | StoreStatus::ReadOnly => 2,
        }
    }

    /// Why the status is not `ok`, and what to do, for `/health`: no path, no process id.
    /// `/health` answers anyone (load balancers poll it unauthenticated), so where the
    /// store lives and which process holds it are for the relay's log alone
    /// ([`StoreStatus::reason_for_log`], in the line that logs the change); this points
    /// the operator there.
    pub fn reason(self) -> Option<String> {
        match self {
            StoreStatus::Ok => None,
            StoreStatus::DiskFull { .. } => Some(
                "the disk holding the relay's store is full: clients' writes are refused \
                 while it is (they keep them and send them again later); syncs that only \
                 read are served. Free space on that disk (the relay's log, store_disk_full, \
                 names the store)"
                    .to_owned(),
            ),
            StoreStatus::Gone => Some(
                "the relay's store was deleted while the relay runs: writes are refused, \
                 since they would be lost with the deleted file; reads are served from the \
                 open file. Do not stop the relay before saving the store: the relay's log \
                 (store_gone) says where to copy it from"
                    .to_owned(),
            ),
            StoreStatus::ReadOnly => Some(
                "the file system that holds the relay's store turned read-only while the \
                 relay runs (an I/O error on its disk? the kernel's log says why): writes \
                 are refused (clients keep them and send them again later), syncs that only \
                 read are served. Stop the relay, unmount that file system, check and repair \
                 it (fsck), mount it again and start the relay (the relay's log, \
                 store_read_only, names the store)"
                    .to_owned(),
            ),
        }
    }

    /// Why the status is not `ok`, and what to do, for the relay's log: as
    /// [`StoreStatus::reason`], with the store's path and the relay's process id where
    /// what to do needs them.
    pub fn reason_for_log(self, store: &Path) -> Option<String> {
        match self {
            StoreStatus::Ok => None,
            StoreStatus::DiskFull { free_bytes } => Some(format!(
                "the disk holding the store {} is full ({free_bytes} bytes free): clients' \
                 writes are refused while it is \
                 (they keep them and send them again later); syncs that only read are \
                 served. Free space on that disk",
                store.display()
            )),
            StoreStatus::Gone => Some(format!(
                "the store {path} was deleted while the relay runs: writes are refused, since \
                 they would be lost with the deleted file; reads are served from the open \
                 file. Before stopping the relay, copy its relay.db and relay.db-wal out of \
                 /proc/{pid}/fd (listed there as deleted) to another directory; once it is \
                 stopped, put them (or a backup) back as {path} and {path}-wal, and start it \
                 again",
                path = store.display(),
                pid = std::process::id()
            )),
            StoreStatus::ReadOnly => Some(format!(
                "the file system that holds the store {path} turned read-only while the relay \
                 runs (an I/O error on its disk? the kernel's log says why; /proc/mounts shows \
                 the mount as ro or emergency_ro): writes are refused (clients keep them and \
                 send them again later), syncs that only read are served. Stop the relay, \
                 unmount that file system, check and repair it (fsck), mount it again and \
                 start the relay",
                path = store.display()
            )),
        }
    }
}

/// The store's last status, so that each change is logged once.
#[derive(Debug)]
pub(crate) struct StoreWatch {
    /// The store file.
    path: PathBuf,
    last: Mutex<StoreStatus>,
    /// How often to ask the file system whether it takes writes (`None`: never).
    probe_interval: Option<Duration>,
    /// When it was last asked.
    probed: Mutex<Option<Instant>>,
}

impl StoreWatch {
    pub fn new(path: PathBuf, probe_interval_ms: u64) -> StoreWatch {
        StoreWatch {
            path,
            last: Mutex::new(StoreStatus::Ok),
            probe_interval: (probe_interval_ms > 0)
                .then(|| Duration::from_millis(probe_interval_ms)),
            probed: Mutex::new(None),
        }
    }

    /// Look at the store now (an `fstat` and a `statvfs`, and every `probe_interval` an
    /// empty file created and removed beside it); log a change of status.
    pub fn check(&self, db: &Database) -> StoreStatus {
        let gone = db.file_is_gone();
        let read_only = db.file_system_read_only()
            || (!gone && self.probe_due() && db.probe_file_system_read_only());
        let free = match gone || read_only {
            true => None,
            false => self
                .path
                .parent()
                .and_then(|dir| fs4::available_space(dir).ok()),
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = classify(gone, read_only, free, *last);
        if std::mem::discriminant(&now) != std::mem::discriminant(&*last) {
            crate::log::line(self.event(now, *last));
        }
        *last = now;
        now
    }

    /// Whether the file system is to be asked now (and if so, it counts as asked).
    fn probe_due(&self) -> bool {
        let Some(interval) = self.probe_interval else {
            return false;
        };
        let mut probed = self.probed.lock().unwrap_or_else(|e| e.into_inner());
        if probed.is_some_and(|t| t.elapsed() < interval) {
            return false;
        }
        *probed = Some(Instant::now());
        true
    }

    /// The log line for a change of status to `now`.
    fn event(&self, now: StoreStatus, before: StoreStatus) -> serde_json::Value {
        let path = self.path.display().to_string();
        match now {
            StoreStatus::Gone => serde_json::json!({
                "event": "store_gone",
                "path": path,
                "pid": std::process::id(),
                "error": now.reason_for_log(&self.path),
            }),
            StoreStatus::ReadOnly => serde_json::json!({
                "event": "store_read_only",
                "path": path,
                "error": now.reason_for_log(&self.path),
            }),
            StoreStatus::DiskFull { free_bytes } => serde_json::json!({
                "event": "store_disk_full",
                "path": path,
                "free_bytes": free_bytes,
                "error": now.reason_for_log(&self.path),
            }),
            StoreStatus::Ok => serde_json::json!({
                "event": "store_writable_again",
                "path": path,
                "was": before.name(),
            }),
        }
    }
}

/// The status from what was just seen: `gone` (the file has no name), `read_only` (a write
/// found its file system turned read-only), `free` (bytes free on its disk, `None` when
/// unknown) and the `previous` status. A deleted store outranks a read-only one (what to do
/// about it comes first: copy it out before stopping the relay). A full disk is left only once
/// twice [`STORE_DISK_FREE_BYTES_MIN`] is free, so that a relay writing at the edge does not
/// log a change at every check.
fn classify(gone: bool, read_only: bool, free: Option<u64>, previous: StoreStatus) -> StoreStatus {
    if gone || previous == StoreStatus::Gone {
        return StoreStatus::Gone;
    }
    if read_only || previous == StoreStatus::ReadOnly {
        return StoreStatus::ReadOnly;
    }
    let full_below = match previous {
        StoreStatus::DiskFull { .. } => 2 * STORE_DISK_FREE_BYTES_MIN,
        _ => STORE_DISK_FREE_BYTES_MIN,
    };
    match free {
        Some(free_bytes) if free_bytes < full_below => StoreStatus::DiskFull { free_bytes },
        Some(_) => StoreStatus::Ok,
        // Unknown (the file system does not say): as it was.
        None => previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = STORE_DISK_FREE_BYTES_MIN;

    #[test]
    fn a_full_disk_is_left_at_twice_the_minimum_and_a_deleted_store_for_good() {
        use StoreStatus::{DiskFull, Gone, Ok, ReadOnly};
        assert_eq!(classify(false, false, Some(MIN), Ok), Ok);
        assert_eq!(
            classify(false, false, Some(MIN - 1), Ok),
            DiskFull {
                free_bytes: MIN - 1
            }
        );
        let full = DiskFull { free_bytes: 0 };
        assert_eq!(
            classify(false, false, Some(MIN), full),
            DiskFull { free_bytes: MIN },
            "not yet"
        );
        assert_eq!(classify(false, false, Some(2 * MIN), full), Ok);
        assert_eq!(
            classify(false, false, None, full),
            full,
            "unknown: as it was"
        );
        assert_eq!(classify(false, false, None, Ok), Ok);
        assert_eq!(classify(true, false, Some(u64::MAX), Ok), Gone);
        assert_eq!(classify(false, false, Some(u64::MAX), Gone), Gone, "final");
        assert_eq!(classify(false, true, Some(u64::MAX), Ok), ReadOnly);
        assert_eq!(classify(false, true, Some(0), full), ReadOnly);
        assert_eq!(
            classify(false, false, Some(u64::MAX), ReadOnly),
            ReadOnly,
            "final"
        );
        assert_eq!(
            classify(true, true, None, ReadOnly),
            Gone,
            "a deleted store first"
        );
    }

    #[test]
    fn each_status_says_what_to_do() {
        let store = Path::new("/srv/relay/relay.db");
        assert_eq!(StoreStatus::Ok.reason_for_log(store), None);
        let full = StoreStatus::DiskFull { free_bytes: 0 }
            .reason_for_log(store)
            .unwrap();
        assert!(full.contains("Free space on that disk"), "{full}");
        let gone = StoreStatus::Gone.reason_for_log(store).unwrap();
        assert!(
            gone.contains("/srv/relay/relay.db was deleted")
                && gone.contains(&format!("/proc/{}/fd", std::process::id())),
            "{gone}"
        );
        let read_only = StoreStatus::ReadOnly.reason_for_log(store).unwrap();
        assert!(
            read_only.contains("/srv/relay/relay.db turned read-only")
                && read_only.contains("fsck")
                && read_only.contains("start the relay"),
            "{read_only}"
        );
        let names: Vec<_> = [StoreStatus::Ok, StoreStatus::DiskFull { free_bytes: 0 }]
            .into_iter()
            .chain([StoreStatus::Gone, StoreStatus::ReadOnly])
            .map(|s| (s.name(), s.level()))
            .collect();
        assert_eq!(
            names,
            [("ok", 0), ("degraded", 1), ("failing", 2), ("failing", 2)]
        );
    }

    /// `/health` answers anyone: its reasons say what happened and what to do, and leave
    /// where the store lives and which process holds it to the log.
    #[test]
    fn the_reasons_for_health_name_no_path_and_no_process() {
        assert_eq!(StoreStatus::Ok.reason(), None);
        let pid = std::process::id().to_string();
        let statuses = [
            (StoreStatus::DiskFull { free_bytes: 12345 }, "is full"),
            (StoreStatus::Gone, "was deleted"),
            (StoreStatus::ReadOnly, "turned read-only"),
        ];
        for (status, says) in statuses {
            let reason = status.reason().unwrap();
            assert!(reason.contains(says), "{reason}");
            assert!(reason.contains("the relay's log"), "points there: {reason}");
            assert!(
                !reason.contains("/proc") && !reason.contains(&pid) && !reason.contains("12345"),
                "{reason}"
            );
        }
    }
}
