//! Sync two database files on this machine: what `blazedb sync DB_A DB_B` runs.
//!
//! Both files are opened in this process and connected by an in-process pipe with a
//! [`run_session`] on each end — the same bytes and driver as any other transport.
//!
//! - [`sync_files_once`] stops when both sides are caught up and returns the counts.
//! - [`sync_files_watch`] keeps syncing until told to stop. Commits made through this
//!   process wake the sessions at once (commit listeners). Commits made by *other
//!   processes* on the same files do not reach this process's listeners, so watch mode
//!   keeps a [`HeadWatch`] on each file, as `blazedb listen` and `blazedb sync DB URL` do: it
//!   checks the file's feed head when the file system says the file changed, and every
//!   [`HEAD_POLL_INTERVAL_MS`](crate::limits::HEAD_POLL_INTERVAL_MS) in case it does not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::{SessionConfig, SyncMode};
use blazedb::{Database, OpenOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::checkpoint::spawn_checkpointer;
use crate::driver::{run_session, DriverOptions, SessionReport};
use crate::error::NetError;
use crate::head_watch::HeadWatch;
use crate::limits::{
    CHECKPOINT_INTERVAL_MS_DEFAULT, DUPLEX_BUFFER_BYTES_DEFAULT, RECONNECT_STABLE_MS,
    SYNC_ONCE_ROUNDS_MAX,
};
use crate::reconnect::{is_permanent, Backoff, BackoffConfig};
use crate::topology::complement;

/// A function [`SyncFilesOptions::on_open`] calls with each file it has opened.
pub type OnOpen = Arc<dyn Fn(&Database) + Send + Sync>;

/// How to sync two files.
#[derive(Clone)]
pub struct SyncFilesOptions {
    /// What file A does: `Both`, `Push` (A only sends: B's own writes stay on B)
    /// or `Pull` (A only receives from B). B gets the complementary mode.
    pub mode: SyncMode,
    /// SQLCipher password of file A (`None`: a plain file), zeroized when dropped.
    pub password_a: Option<Zeroizing<String>>,
    /// SQLCipher password of file B (`None`: a plain file), zeroized when dropped.
    pub password_b: Option<Zeroizing<String>>,
    /// Create a file that does not exist yet (an empty replica that sync then fills).
    pub create_missing: bool,
    /// Session settings for both ends (`mode` is set per end; `policy` applies to what A
    /// receives from B, making A a partial replica of B).
    pub session: SessionConfig,
    /// Called with each file as soon as it is open, before anything is synced: where a
    /// program tells its user that the open upgraded a file to this build's storage format
    /// ([`Database::upgraded_from`], [`Database::upgrade_backup`]), which is one-way.
    pub on_open: Option<OnOpen>,
}

/// The passwords are not shown.
impl std::fmt::Debug for SyncFilesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |p: &Option<Zeroizing<String>>| p.as_ref().map(|_| "***");
        f.debug_struct("SyncFilesOptions")
            .field("mode", &self.mode)
            .field("password_a", &shown(&self.password_a))
            .field("password_b", &shown(&self.password_b))
            .field("create_missing", &self.create_missing)
            .field("session", &self.session)
            .field("on_open", &self.on_open.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl Default for SyncFilesOptions {
    fn default() -> Self {
        SyncFilesOptions {
            mode: SyncMode::Both,
            password_a: None,
            password_b: None,
            create_missing: true,
            session: SessionConfig::default(),
            on_open: None,
        }
    }
}

/// What [`sync_files_watch`] tells its caller while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilesNotice {
    /// The operating system would not watch a file ([`HeadWatch::file_watch_error`]): its
    /// commits by other processes are noticed by the poll only.
    FileWatchUnavailable {
        /// Why.
        error: String,
    },
    /// The sessions failed for a reason that may pass and start again in `delay_ms`.
    Retrying {
        /// The wait before the next attempt (exponential backoff with jitter).
        delay_ms: u64,
        /// Why they stopped.
        error: String,
    },
}

impl std::fmt::Display for FilesNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilesNotice::FileWatchUnavailable { error } => {
                write!(f, "file changes by other processes are polled for: {error}")
            }
            FilesNotice::Retrying { delay_ms, error } => {
                write!(f, "sync stopped: {error}; starting again in {delay_ms} ms")
            }
        }
    }
}

/// What moved between two files. `to_json` gives the one JSON line the CLI prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncFilesReport {
    /// File A.
    pub a: PathBuf,
    /// File B.
    pub b: PathBuf,
    /// A's mode.
    pub mode: String,
    /// From A to B.
    pub a_to_b: DirectionReport,
    /// From B to A.
    pub b_to_a: DirectionReport,
    /// Sessions run (more than one when `sync_files_once` needed another round).
    pub rounds: u32,
    /// Wall time, in ms.
    pub elapsed_ms: u64,
}

/// Traffic in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectionReport {
    /// Cells the sender put in CHANGES frames.
    pub cells_sent: u64,
    /// Cells the receiver decoded.
    pub cells_received: u64,
    /// Received cells that changed something at the receiver (the rest it already had).
    pub cells_applied: u64,
    /// Framed bytes the sender wrote (handshake, acks and pings included).
    pub bytes_sent: u64,
    /// Framed bytes the receiver read.
    pub bytes_received: u64,
}

impl DirectionReport {
    fn add(&mut self, sender: &SessionReport, receiver: &SessionReport) {
        self.cells_sent += sender.stats.cells_sent;
        self.bytes_sent += sender.stats.bytes_sent;
        self.cells_received += receiver.stats.cells_received;
        self.cells_applied += receiver.stats.cells_applied;
        self.bytes_received += receiver.stats.bytes_received;
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cells_sent": self.cells_sent,
            "cells_received": self.cells_received,
            "cells_applied": self.cells_applied,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        })
    }
}

impl SyncFilesReport {
    /// The report as one JSON object, e.g.
    /// `{"a":"a.db","b":"b.db","mode":"both","a_to_b":{"cells_sent":10,...},"b_to_a":{...},
    /// "rounds":1,"elapsed_ms":3}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "a": self.a.display().to_string(),
            "b": self.b.display().to_string(),
            "mode": self.mode,
            "a_to_b": self.a_to_b.to_json(),
            "b_to_a": self.b_to_a.to_json(),
            "rounds": self.rounds,
            "elapsed_ms": self.elapsed_ms,
        })
    }

    fn add_round(&mut self, ra: &SessionReport, rb: &SessionReport) {
        self.a_to_b.add(ra, rb);
        self.b_to_a.add(rb, ra);
        self.rounds += 1;
    }
}

/// Sync file `a` with file `b` until both are caught up, then return what moved each way.
///
/// Opens both files (with their passwords), runs one session per side over an in-process
/// pipe with `stop_when_caught_up`, and closes them. A second run right after moves only the
/// handshakes: the cursors persisted in each file say what the other already has.
///
/// If another process writes to a file during the sync, one side may end before the other
/// is caught up; the sync then runs another round, at most [`SYNC_ONCE_ROUNDS_MAX`], and
/// the report sums them.
pub async fn sync_files_once(
    a: &Path,
    b: &Path,
    opts: SyncFilesOptions,
) -> Result<SyncFilesReport, NetError> {
    let started = Instant::now();
    let (da, db) = open_pair(a, b, &opts).await?;
    let mut report = new_report(a, b, &opts);
    for _ in 0..SYNC_ONCE_ROUNDS_MAX {
        let (cfg_a, cfg_b) = configs(&opts);
        let (io_a, io_b) = tokio::io::duplex(DUPLEX_BUFFER_BYTES_DEFAULT);
        let (ra, rb) = tokio::join!(
            run_session(da.clone(), io_a, cfg_a, DriverOptions::once()),
            run_session(db.clone(), io_b, cfg_b, DriverOptions::once()),
        );
        match (ra, rb) {
            (Ok(ra), Ok(rb)) => {
                report.add_round(&ra, &rb);
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
            (ra, rb) => {
                let retry = [&ra, &rb].iter().all(|r| match r {
                    Ok(_) => true,
                    Err(e) => matches!(e, NetError::Incomplete { .. }),
                });
                if let (Some(x), Some(y)) = (report_of(&ra), report_of(&rb)) {
                    report.add_round(x, y);
                }
                if !retry {
                    // The side that failed, not the other side's echo of it: the one whose
                    // own message names its file (an audit, 2026-12-07: with B's disk full,
                    // `sync A B` reported A's echo, naming neither file).
                    return Err(first_cause(ra.err(), rb.err()));
                }
            }
        }
    }
    Err(NetError::NotSettled {
        rounds: report.rounds,
    })
}

/// Keep file `a` and file `b` in sync until `stop` completes, then end both sessions
/// politely and return what moved each way.
///
/// Changes made through this process reach the other file at once; changes made by other
/// processes are noticed when the file system tells of them, or within
/// [`HEAD_POLL_INTERVAL_MS`](crate::limits::HEAD_POLL_INTERVAL_MS) (see the module docs).
/// Sessions that fail for a reason that may pass (a file's write lock held by another
/// process past the busy timeout) are started again after a backoff, as `sync_watch`
/// reconnects; an error the next attempt would meet again (a refused policy, a damaged
/// file, a change too large for the limits) ends the watch and is returned. `on_notice`
/// hears of each restart, and, at the start, of a file the operating system would not
/// watch (its commits by other processes then wait for the poll;
/// [`HeadWatch::file_watch_error`]).
///
/// ```no_run
/// # async fn f() -> Result<(), blazedb_net::NetError> {
/// use blazedb_net::{sync_files_watch, SyncFilesOptions};
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// let report = sync_files_watch("a.db".as_ref(), "b.db".as_ref(), SyncFilesOptions::default(), stop,
///     |notice| eprintln!("{notice}")).await?;
/// println!("{}", report.to_json());
/// # Ok(()) }
/// ```
pub async fn sync_files_watch(
    a: &Path,
    b: &Path,
    opts: SyncFilesOptions,
    stop: impl std::future::Future<Output = ()>,
    mut on_notice: impl FnMut(FilesNotice),
) -> Result<SyncFilesReport, NetError> {
    let started = Instant::now();
    let (da, db) = open_pair(a, b, &opts).await?;
    let mut report = new_report(a, b, &opts);
    let (cfg_a, cfg_b) = configs(&opts);
    let token = CancellationToken::new();
    let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
    let _checkpoints = (
        spawn_checkpointer(da.clone(), every),
        spawn_checkpointer(db.clone(), every),
    );
    let heads = [HeadWatch::spawn(da.clone()), HeadWatch::spawn(db.clone())];
    for error in heads.iter().filter_map(|h| h.file_watch_error()) {
        on_notice(FilesNotice::FileWatchUnavailable {
            error: error.to_owned(),
        });
    }
    let (wake_a, wake_b) = (heads[0].subscribe(), heads[1].subscribe());
    let driver = |wake: &Arc<Notify>| DriverOptions {
        shutdown: token.clone(),
        wake: Some(wake.clone()),
        ..DriverOptions::default()
    };
    let mut backoff = Backoff::new(BackoffConfig::default());
    let stopper = async {
        stop.await;
        token.cancel();
        std::future::pending::<()>().await
    };
    // The pair of sessions, started again after a failure that may pass: another process
    // holding a file's write lock past the busy timeout, a session that timed out. Only
    // what the next attempt would meet again (the same permanent refusal) ends the watch.
    let work = async {
        loop {
            let attempt_started = Instant::now();
            let (io_a, io_b) = tokio::io::duplex(DUPLEX_BUFFER_BYTES_DEFAULT);
            let (ra, rb) = tokio::join!(
                run_session(da.clone(), io_a, cfg_a.clone(), driver(&wake_a)),
                run_session(db.clone(), io_b, cfg_b.clone(), driver(&wake_b)),
            );
            if let (Some(x), Some(y)) = (report_of(&ra), report_of(&rb)) {
                report.add_round(x, y);
            }
            let error = match (ra, rb) {
                (Ok(_), Ok(_)) if token.is_cancelled() => return Ok(()),
                (Ok(_), Ok(_)) => "a session ended by itself".to_owned(),
                (ra, rb) => {
                    let error = first_cause(ra.err(), rb.err());
                    if is_permanent(&error) {
                        return Err(error);
                    }
                    error.to_string()
                }
            };
            if token.is_cancelled() {
                return Ok(());
            }
            if attempt_started.elapsed().as_millis() as u64 >= RECONNECT_STABLE_MS {
                backoff.reset();
            }
            let delay_ms = backoff.next_delay_ms(rand::random());
            on_notice(FilesNotice::Retrying { delay_ms, error });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                _ = token.cancelled() => return Ok(()),
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = stopper => unreachable!("the stopper never completes"),
    };
    drop(heads);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    result.map(|()| report)
}

/// Of the two sides' errors, the one that says what happened: a side's own failure rather
/// than the other side's report of it (a `remote` protocol error) or of the pipe closing.
fn first_cause(a: Option<NetError>, b: Option<NetError>) -> NetError {
    let echo = |e: &NetError| match e {
        NetError::Sync { error, .. } => error.remote,
        NetError::Disconnected { .. } | NetError::PeerShutDown { .. } => true,
        _ => false,
    };
    match (a, b) {
        (Some(a), Some(b)) if echo(&a) && !echo(&b) => b,
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => unreachable!("called with one side failed"),
    }
}

async fn open_pair(
    a: &Path,
    b: &Path,
    opts: &SyncFilesOptions,
) -> Result<(Arc<Database>, Arc<Database>), NetError> {
    // The same file twice: by its real path when it exists, by its absolute path when it
    // does not (it would be created once and then met as "another node with our id").
    let same = match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => matches!((std::path::absolute(a), std::path::absolute(b)), (Ok(x), Ok(y)) if x == y),
    };
    if same {
        return Err(NetError::SameFile {
            a: a.to_path_buf(),
            b: b.to_path_buf(),
        });
    }
    let a_is_new = !a.exists();
    let told = |db: &Database| {
        if let Some(on_open) = &opts.on_open {
            on_open(db);
        }
    };
    let da = open(a, opts.password_a.as_ref(), opts.create_missing).await?;
    told(&da);
    match open(b, opts.password_b.as_ref(), opts.create_missing).await {
        Ok(db) => {
            told(&db);
            Ok((da, db))
        }
        Err(e) => {
            // A failed sync leaves no new file behind: DB_A is removed again if this call
            // created it (DB_B could not be opened: a wrong password, not a database, ...).
            if a_is_new {
                drop(da);
                remove_database_files(a);
            }
            Err(e)
        }
    }
}

/// Remove a database file this module has just created, with its WAL and shared-memory
/// files (best effort: the error being reported is the one that matters).
fn remove_database_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(p));
    }
}

/// Open on the blocking pool: SQLCipher's key derivation takes a noticeable time.
async fn open(
    path: &Path,
    password: Option<&Zeroizing<String>>,
    create: bool,
) -> Result<Arc<Database>, NetError> {
    let p = path.to_path_buf();
    let options = OpenOptions {
        // A copy the library moves into zeroized memory of its own.
        password: password.map(|p| p.to_string()),
        create,
        ..OpenOptions::default()
    };
    let opened = tokio::task::spawn_blocking(move || Database::open(&p, options))
        .await
        .map_err(|e| NetError::Task(e.to_string()))?;
    opened.map(Arc::new).map_err(|source| NetError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn configs(opts: &SyncFilesOptions) -> (SessionConfig, SessionConfig) {
    (
        SessionConfig {
            mode: opts.mode,
            ..opts.session.clone()
        },
        // The policy (selective sync) is what A receives: B still gets everything of A.
        SessionConfig {
            mode: complement(opts.mode),
            policy: blazedb::sync::SyncPolicy::everything(),
            ..opts.session.clone()
        },
    )
}

fn new_report(a: &Path, b: &Path, opts: &SyncFilesOptions) -> SyncFilesReport {
    let mode = match opts.mode {
        SyncMode::Both => "both",
        SyncMode::Push => "push",
        SyncMode::Pull => "pull",
    };
    SyncFilesReport {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        mode: mode.into(),
        ..SyncFilesReport::default()
    }
}

fn report_of(r: &Result<SessionReport, NetError>) -> Option<&SessionReport> {
    match r {
        Ok(r) => Some(r),
        Err(e) => e.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_does_not_show_the_passwords() {
        let opts = SyncFilesOptions {
            password_a: Some(String::from("first-s3cret").into()),
            password_b: Some(String::from("second-s3cret").into()),
            ..SyncFilesOptions::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("password_a: Some(\"***\")"), "{shown}");
    }
}
