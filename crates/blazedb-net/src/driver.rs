//! The session driver: pumps one sans-IO [`Session`] over any byte stream.
//!
//! ```text
//!            ┌────────────── run_session (one tokio task) ───────────────┐
//!  bytes ───►│ read ──► Session::handle_bytes ──► SQLite apply (+ ACK)   │
//!            │                                                           │
//!  commit ──►│ Notify ──► Session::poll_transmit ──► out buffer ──► write│───► bytes
//!  (on_commit)│                                                          │
//!  timer ───►│ sleep_until(poll_timeout) ──► Session::handle_timeout     │
//!            └───────────────────────────────────────────────────────────┘
//! ```
//!
//! One task owns the session and `select!`s over four things: input from the transport,
//! room to write output, a local commit (the database's commit listener notifies a
//! [`Notify`]) and the session's next timer. Nothing polls: a quiet session sleeps until a
//! byte arrives, a commit happens or its ping timer fires.
//!
//! Reading and writing happen concurrently (the stream is split), so two peers that both
//! send a lot never deadlock on full buffers; output is bounded by
//! [`DriverOptions::write_buffer_bytes_max`] — once that much waits, the driver stops asking
//! the session for more and the session's window holds the rest back.
//!
//! # Blocking database calls
//!
//! Every session call may touch SQLite, which blocks. Small calls (a few frames, an ACK, a
//! single-commit apply: tens of µs) run inline on the task: a thread hop to the blocking pool
//! would cost as much as the call and would double the commit-to-peer latency. Calls that can
//! be long run on tokio's blocking pool ([`tokio::task::spawn_blocking`]), the session moving
//! there and back with them:
//!
//! - `handle_bytes` of a large read (bulk traffic, [`BLOCKING_READ_BYTES_MIN`]) or when many
//!   received cells wait to be applied in one transaction ([`BLOCKING_STAGED_CELLS_MIN`]);
//! - `poll_transmit` rounds while the previous round read a lot of the feed
//!   ([`BLOCKING_TRANSMIT_BYTES_MIN`]).
//!
//! The heuristics only decide where the work runs, never what it does. The first round of a
//! burst may still run inline; one round is bounded by the session's batch size (one feed
//! transaction, which the protocol never splits, is the exception).
//!
//! Before calling the session, the driver waits on the blocking pool for a long holder of the
//! database's lock (`Database::lock_held_long`: an application's transaction, an index
//! build, or any holder past [`LOCK_HELD_LONG_US`]). Meanwhile it keeps the connection alive
//! without touching the database (`Session::keep_alive`: a PING when one is due), and the
//! wait does not count as the peer's silence (`Session::handle_stall`).
//!
//! # Ending
//!
//! A session ends when the peer sends ERROR (`ShuttingDown` is the polite goodbye), on a
//! protocol or transport error, on [`DriverOptions::shutdown`], or — with
//! [`DriverOptions::stop_when_caught_up`] — once it is caught up. Then the driver flushes what
//! is queued (the ERROR frame included), shuts its write side, and lingers reading (and
//! discarding) until the peer closes or [`DriverOptions::linger_ms`] passes, so the peer gets
//! to read our last frames.
//!
//! With `stop_when_caught_up` on both sides: each side stops as soon as
//! [`Session::is_caught_up`] is true, its output is flushed and [`Session::ready_to_end`]
//! agrees (the peer acknowledged our feed up to our head, which our GC waits for; at most
//! `END_ACK_WAIT_MS` is spent waiting for that), sending ERROR(`ShuttingDown`). Being caught up on one side means the peer acknowledged all our
//! units and we applied everything the peer said it had, so once the peer has read the frames
//! before our goodbye it is caught up too; it ends with [`EndReason::PeerFinished`] and
//! `caught_up == true` (success). If the peer committed something in between, it is not
//! caught up and its driver returns [`NetError::Incomplete`]: run again. A peer that was
//! shut down instead (its goodbye is not [`GOODBYE_CAUGHT_UP`]) ends a one-shot session that
//! is not caught up with [`NetError::PeerShutDown`], which carries what the peer said.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blazedb::sync::{
    EndReadiness, ErrorCode, Rejection, Session, SessionConfig, SessionEvent, SessionStats,
    SyncError, SyncPolicy,
};
use blazedb::{Database, NodeId, Seq};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::NetError;
use crate::limits::{
    BLOCKING_READ_BYTES_MIN, BLOCKING_STAGED_CELLS_MIN, BLOCKING_TRANSMIT_BYTES_MIN,
    LINGER_MS_DEFAULT, LOCK_HELD_LONG_US, READ_BUFFER_BYTES_DEFAULT, REJECTIONS_REPORTED_MAX,
    WRITE_BUFFER_BYTES_MAX_DEFAULT,
};

/// How [`run_session`] behaves.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Finish cleanly once this side is caught up and its output is flushed (`--once`).
    /// Without it the session runs until the peer leaves, an error, or `shutdown`.
    pub stop_when_caught_up: bool,
    /// Cancel to end the session politely (ERROR `ShuttingDown`, then linger).
    pub shutdown: CancellationToken,
    /// Wake the driver as a local commit does. The driver always wakes on commits made
    /// through this process's `Database` (its commit listener); pass a notifier here when
    /// something else can change the database, e.g. another process writing the same file.
    /// One notifier per driver: it is woken with `notify_one`.
    pub wake: Option<Arc<Notify>>,
    /// Publish live counters and state here after every step.
    pub monitor: Option<SessionMonitor>,
    /// How long to keep flushing and draining after the session ended, in ms.
    pub linger_ms: u64,
    /// Bytes per transport read.
    pub read_buffer_bytes: usize,
    /// Output bytes that may wait to be written before the session is asked for more.
    pub write_buffer_bytes_max: usize,
    /// Change what this side receives while the session runs (selective sync): send a new
    /// policy on the channel and the session re-subscribes with it (see
    /// `Session::set_policy`). An invalid policy ends the session with `InvalidPolicy`.
    pub policy: Option<watch::Receiver<SyncPolicy>>,
    /// The peer's HELLO must have arrived this long after the session starts, or the session
    /// ends with `TIMEOUT` (a listener: a peer that connects and says nothing must not hold a
    /// connection slot until the idle timeout). `None`: no deadline but the idle timeout.
    pub hello_timeout: Option<Duration>,
    /// Each change the peer refused (its access rules, with the reason), as it arrives, for
    /// a caller that shows them while a long-lived session runs. Sent with `try_send`: when
    /// the channel is full the rest are not sent (they are counted in
    /// [`SessionStats::changes_rejected_by_peer`] and listed in [`SessionReport::rejected`]).
    pub rejections: Option<mpsc::Sender<Rejection>>,
    /// Woken (`notify_one`) when this side presented a token and the peer's HELLO says it
    /// checks none (`SessionEvent::TokenUnchecked`), for a caller that warns while the
    /// session runs; [`SessionReport::token_unchecked`] says it at the end.
    pub token_unchecked: Option<Arc<Notify>>,
    /// Asked once the peer's HELLO names it: an `Err` ends the session at once (a goodbye
    /// with the message, `SHUTTING_DOWN`) and the driver returns `NetError::Sync` with it.
    /// The client sync's lock by peer node uses it ([`crate::peer_lock`]).
    pub peer_check: Option<PeerCheck>,
    /// A check of the peer's credential whose verdict can change while the session runs (a
    /// TLS client certificate and revocation lists read again when they change), made again
    /// whenever it says to: an `Err` ends the session at once with `AUTH_FAILED` and the
    /// message, which the peer is told.
    pub credential_recheck: Option<CredentialRecheck>,
    /// Cancelling its token ends the session politely, as `shutdown` does, with its own
    /// goodbye (`SHUTTING_DOWN`: the peer's reconnect loop comes back): a server asking its
    /// clients to start over under something that changed (the relay's access rules read
    /// again).
    pub restart: Option<Restart>,
}

/// See [`DriverOptions::restart`]. A token of its own per session (a child of one the server
/// cancels), so that waiting on it takes no lock shared by every session.
#[derive(Clone, Debug)]
pub struct Restart {
    /// Cancelled to restart the session.
    pub token: CancellationToken,
    /// What the peer is told.
    pub goodbye: String,
}

/// A check of the peer named in its HELLO ([`DriverOptions::peer_check`]).
#[derive(Clone)]
pub struct PeerCheck(Arc<dyn Fn(NodeId) -> Result<(), String> + Send + Sync>);

impl PeerCheck {
    /// A check that calls `f` with the peer's node id.
    pub fn new(f: impl Fn(NodeId) -> Result<(), String> + Send + Sync + 'static) -> PeerCheck {
        PeerCheck(Arc::new(f))
    }
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCheck(..)")
    }
}

/// A credential judged again while the session runs ([`DriverOptions::credential_recheck`]):
/// `check` is called each time `changes` moves.
#[derive(Clone)]
pub struct CredentialRecheck {
    pub(crate) changes: watch::Receiver<u64>,
    pub(crate) check: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    refused: Arc<AtomicBool>,
}

impl CredentialRecheck {
    /// Call `check` each time `changes` moves (and once at the start when it is marked
    /// changed already).
    pub fn new(
        changes: watch::Receiver<u64>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> CredentialRecheck {
        CredentialRecheck {
            changes,
            check: Arc::new(check),
            refused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a check refused the credential (and so ended the session); seen by every clone.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// Check now; remembers a refusal.
    fn judge(&self) -> Result<(), String> {
        let verdict = (self.check)();
        if verdict.is_err() {
            self.refused.store(true, Ordering::Release);
        }
        verdict
    }
}

impl std::fmt::Debug for CredentialRecheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRecheck")
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            stop_when_caught_up: false,
            shutdown: CancellationToken::new(),
            wake: None,
            monitor: None,
            linger_ms: LINGER_MS_DEFAULT,
            read_buffer_bytes: READ_BUFFER_BYTES_DEFAULT,
            write_buffer_bytes_max: WRITE_BUFFER_BYTES_MAX_DEFAULT,
            policy: None,
            hello_timeout: None,
            rejections: None,
            token_unchecked: None,
            peer_check: None,
            credential_recheck: None,
            restart: None,
        }
    }
}

impl DriverOptions {
    /// Options for a one-shot sync: stop once caught up.
    pub fn once() -> DriverOptions {
        DriverOptions {
            stop_when_caught_up: true,
            ..DriverOptions::default()
        }
    }
}

/// What a finished session did.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReport {
    /// This side's node id.
    pub node: NodeId,
    /// The peer's node id, once its HELLO arrived.
    pub peer: Option<NodeId>,
    /// Counters (frames, bytes and cells sent and received; cells applied).
    pub stats: SessionStats,
    /// Why it ended.
    pub end: EndReason,
    /// Whether both directions were in sync, as far as this side knew, when it ended.
    pub caught_up: bool,
    /// How long it ran, in ms.
    pub elapsed_ms: u64,
    /// Changes the peer refused, with its reasons: the first [`REJECTIONS_REPORTED_MAX`]
    /// (`stats.changes_rejected_by_peer` counts them all). The peer sends its own version of
    /// each such record, which replaces ours; our refused values are kept as conflicts
    /// (`Database::conflicts`).
    pub rejected: Vec<Rejection>,
    /// This side presented a token and the peer said it checks none
    /// (`SessionEvent::TokenUnchecked`): anyone who reaches the peer may sync with it. False
    /// too when the peer, of an earlier release, did not say.
    pub token_unchecked: bool,
    /// What the peer said when it ended the session politely (`SHUTTING_DOWN`), unless it
    /// was only done (caught up): why it went — shutting down, or asking its clients to
    /// reconnect (a relay whose access rules changed).
    pub peer_goodbye: Option<String>,
}

/// The goodbye message of a side that stops because it is caught up. Both goodbyes use the
/// code `ShuttingDown`; the message tells the peer whether this side merely finished (the
/// peer, if not caught up, then only has a late write of its own to send) or was shut down
/// in the middle of the sync.
pub const GOODBYE_CAUGHT_UP: &str = "caught up: this side is done";

/// The goodbye message of a side asked to stop ([`DriverOptions::shutdown`]).
const GOODBYE_SHUTDOWN: &str = "the node is shutting down";

/// Why a session ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EndReason {
    /// This side was caught up and stopped (`stop_when_caught_up`).
    CaughtUp,
    /// This side was asked to stop ([`DriverOptions::shutdown`]).
    Shutdown,
    /// The peer said goodbye (ERROR `ShuttingDown`).
    PeerFinished,
    /// The transport reached end-of-file without a goodbye.
    TransportClosed,
    /// A protocol error, detected here or reported by the peer.
    Protocol(SyncError),
    /// The transport failed.
    Io {
        /// The I/O error kind.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
}

/// Live view of a running session, shared between its driver and observers (a topology,
/// a dashboard, a test measuring traffic over a quiet period).
#[derive(Clone, Debug)]
pub struct SessionMonitor {
    tx: Arc<watch::Sender<SessionSnapshot>>,
}

/// A session's state at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionSnapshot {
    /// The peer, once known.
    pub peer: Option<NodeId>,
    /// Counters so far.
    pub stats: SessionStats,
    /// Caught up in both directions at the last step.
    pub caught_up: bool,
    /// This side's feed head read just before `caught_up` was evaluated: if the database's
    /// head is past it now, the session has not yet seen the newer commits.
    pub local_seq: Seq,
    /// How far the peer has acknowledged our feed (`Session::acked`).
    pub acked: Seq,
    /// The driver finished.
    pub ended: bool,
    /// Why it finished, when that was an error (the session could not start, a protocol or
    /// transport error); `None` while it runs and after a clean end.
    pub error: Option<String>,
}

impl SessionMonitor {
    /// A monitor with an empty snapshot.
    pub fn new() -> SessionMonitor {
        SessionMonitor {
            tx: Arc::new(watch::Sender::new(SessionSnapshot::default())),
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> SessionSnapshot {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<SessionSnapshot> {
        self.tx.subscribe()
    }

    fn publish(&self, s: SessionSnapshot) {
        self.tx.send_if_modified(|cur| {
            if *cur == s {
                false
            } else {
                *cur = s;
                true
            }
        });
    }
}

impl Default for SessionMonitor {
    fn default() -> Self {
        SessionMonitor::new()
    }
}

/// Run one sync session for `db` over the byte stream `io` until it ends (see the module
/// docs for how). Returns the report on a clean end — caught up (`stop_when_caught_up`),
/// shut down, or the peer said goodbye — and an error carrying the report otherwise.
///
/// ```no_run
/// # async fn f(a: std::sync::Arc<blazedb::Database>, b: std::sync::Arc<blazedb::Database>) {
/// use blazedb::sync::SessionConfig;
/// use blazedb_net::{run_session, DriverOptions};
/// let (x, y) = tokio::io::duplex(64 * 1024);
/// let (ra, rb) = tokio::join!(
///     run_session(a, x, SessionConfig::default(), DriverOptions::once()),
///     run_session(b, y, SessionConfig::default(), DriverOptions::once()),
/// );
/// println!("A sent {} bytes", ra.unwrap().stats.bytes_sent);
/// # }
/// ```
pub async fn run_session<T>(
    db: Arc<Database>,
    io: T,
    cfg: SessionConfig,
    opts: DriverOptions,
) -> Result<SessionReport, NetError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Reads the feed head: one short query.
    let session = match Session::new(&db, cfg, 0) {
        Ok(s) => s,
        Err(e) => {
            let error = NetError::from(e);
            // Observers (a topology waiting for convergence) learn at once that this end
            // is over, and why, instead of waiting for progress that never comes.
            if let Some(m) = &opts.monitor {
                m.publish(SessionSnapshot {
                    ended: true,
                    error: Some(error.to_string()),
                    ..SessionSnapshot::default()
                });
            }
            return Err(error);
        }
    };
    let notify = opts.wake.clone().unwrap_or_default();
    let commits_watched = Arc::new(AtomicBool::new(true));
    let listener = CommitListener::register(db.clone(), notify.clone(), commits_watched.clone());
    let (rd, wr) = tokio::io::split(io);
    let mut d = Driver {
        db,
        session: Some(session),
        start,
        opts,
        out: Vec::new(),
        out_pos: 0,
        bulk_tx: false,
        applied_mark: 0,
        peer: None,
        end: None,
        caught_up_at_end: false,
        io_error: None,
        write_failed: false,
        peer_shut_down: None,
        rejected: Vec::new(),
        token_unchecked: false,
        write_error: None,
    };
    d.run(rd, wr, &notify, &commits_watched).await;
    drop(listener);
    let result = d.finish();
    d.publish_ended(result.as_ref().err());
    result
}

/// Unregisters the commit listener however the driver exits (error, panic, cancellation).
struct CommitListener {
    db: Arc<Database>,
    id: u64,
}

impl CommitListener {
    fn register(
        db: Arc<Database>,
        notify: Arc<Notify>,
        watched: Arc<AtomicBool>,
    ) -> CommitListener {
        // Runs on the committing thread: only wake the task. `notify_one` stores a permit
        // when the task is busy, so a commit between two waits is never missed. While the
        // session waits for an ACK before it sends again (`Session::commit_can_wait`), the
        // driver unwatches commits: a relay's commit woke every session of every client,
        // and those wake-ups (a thousand per commit, a hundred commits a second) were the
        // relay's largest cost (measured 2026-12-04).
        let id = db.on_commit(Arc::new(move || {
            if watched.load(Ordering::Acquire) {
                notify.notify_one();
            }
        }));
        CommitListener { db, id }
    }
}

impl Drop for CommitListener {
    fn drop(&mut self) {
        self.db.remove_commit_listener(self.id);
    }
}

/// What woke the driver.
enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<WriteOutcome>),
    /// A `Wrote` already handled.
    Written,
    Commit,
    Shutdown,
    Policy(bool),
    /// The credential is to be judged again (`false`: it never will be).
    Recheck(bool),
    /// Asked to end so the peer starts over.
    Restart,
    Timer,
    /// The timer, with the peer's bytes (this many, in the buffer) ready too: read first.
    ReadThenTimer(usize),
    HelloTimeout,
    LingerExpired,
}

/// What woke the driver while it waited for a long holder of the database's lock.
enum StallStep {
    LockFree,
    RuntimeGone,
    Wrote(io::Result<WriteOutcome>),
    PingDue,
}

enum WriteOutcome {
    Wrote(usize),
    Flushed,
}

/// Write some of `bytes`, or flush when there is nothing left to write. Cancel-safe: a
/// dropped write wrote nothing, and a flush can be repeated.
async fn write_step<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<WriteOutcome> {
    if bytes.is_empty() {
        w.flush().await?;
        return Ok(WriteOutcome::Flushed);
    }
    match w.write(bytes).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the transport accepted no bytes",
        )),
        n => Ok(WriteOutcome::Wrote(n)),
    }
}

struct Driver {
    db: Arc<Database>,
    /// Always `Some`, except while the session visits the blocking pool.
    session: Option<Session>,
    start: Instant,
    opts: DriverOptions,
    /// Encoded frames waiting to be written; `out[out_pos..]` is pending.
    out: Vec<u8>,
    out_pos: usize,
    /// The previous transmit round was large: run the next one on the blocking pool.
    bulk_tx: bool,
    /// `cells_received` when a unit was last applied: the difference estimates the cells
    /// staged in the session, waiting for the end of their unit.
    applied_mark: u64,
    peer: Option<NodeId>,
    end: Option<EndReason>,
    caught_up_at_end: bool,
    io_error: Option<io::Error>,
    /// The end reason is a write failure, which a goodbye read afterwards may replace.
    write_failed: bool,
    /// The peer's goodbye, when it was shut down rather than caught up.
    peer_shut_down: Option<String>,
    /// The first changes the peer refused, for the report.
    rejected: Vec<Rejection>,
    /// The peer said it checks no credential, and we presented one.
    token_unchecked: bool,
    /// A write that failed while the driver could not call into the database (see
    /// [`Driver::stall_for_long_lock_holder`]), to end the session with once it can.
    write_error: Option<io::Error>,
}

impl Driver {
    async fn run<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut rd: ReadHalf<T>,
        mut wr: WriteHalf<T>,
        notify: &Notify,
        commits_watched: &AtomicBool,
    ) {
        let mut buf = vec![0u8; self.opts.read_buffer_bytes.max(1)];
        let mut read_open = true;
        let mut write_open = true;
        let mut needs_flush = false;
        let mut linger_until: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut policy_rx = self.opts.policy.take();
        let mut recheck = self.opts.credential_recheck.take();
        let mut restart = self.opts.restart.take();
        let hello_deadline = self.opts.hello_timeout.map(|d| self.start + d);
        loop {
            self.stall_for_long_lock_holder(&mut wr, &mut write_open, &mut needs_flush)
                .await;
            self.settle_write_error();
            if write_open {
                self.fill_output().await;
            }
            self.drain_events();
            if self.end.is_none() {
                let flushed = self.out_pos == self.out.len() && !needs_flush;
                if self.session().is_closed() {
                    // Closed without an event (cannot happen today); stay safe.
                    self.end_with(EndReason::Protocol(SyncError {
                        code: ErrorCode::Internal,
                        message: "session closed".into(),
                        remote: false,
                    }));
                } else if self.opts.shutdown.is_cancelled() {
                    self.end_with(EndReason::Shutdown);
                    self.close(ErrorCode::ShuttingDown, GOODBYE_SHUTDOWN);
                    continue;
                } else if self.opts.stop_when_caught_up && flushed && self.caught_up() {
                    let now = self.now_ms();
                    match self.session_mut().ready_to_end(now) {
                        EndReadiness::Ready => {
                            self.end_with(EndReason::CaughtUp);
                            self.close(ErrorCode::ShuttingDown, GOODBYE_CAUGHT_UP);
                            continue;
                        }
                        EndReadiness::TransmitFirst => continue,
                        EndReadiness::AwaitAck => {}
                    }
                }
            }
            self.publish();
            let running = self.end.is_none();
            if !running {
                let until = *linger_until.get_or_insert_with(|| {
                    Instant::now() + Duration::from_millis(self.opts.linger_ms)
                });
                let flushed = self.out_pos == self.out.len() && !needs_flush;
                if !write_open || flushed || Instant::now() >= until {
                    break;
                }
            }
            let pending = &self.out[self.out_pos..];
            let can_write = write_open && (!pending.is_empty() || needs_flush);
            let timer = if running {
                self.session().poll_timeout().map(|ms| self.instant_at(ms))
            } else {
                None
            };
            // Every pass runs `fill_output` before it sleeps, so a commit unwatched here is
            // sent when the next input (the awaited ACK) wakes the loop.
            let unwatched = running && read_open && self.session().commit_can_wait(&self.db);
            commits_watched.store(!unwatched, Ordering::Release);
            let wake = tokio::select! {
                r = rd.read(&mut buf), if read_open => Wake::Read(r),
                r = write_step(&mut wr, pending), if can_write => Wake::Wrote(r),
                _ = notify.notified(), if running => Wake::Commit,
                _ = self.opts.shutdown.cancelled(), if running => Wake::Shutdown,
                r = async { policy_rx.as_mut().expect("checked").changed().await },
                    if running && policy_rx.is_some() => Wake::Policy(r.is_ok()),
                r = async { recheck.as_mut().expect("checked").changes.changed().await },
                    if running && recheck.is_some() => Wake::Recheck(r.is_ok()),
                _ = async { restart.as_ref().expect("checked").token.cancelled().await },
                    if running && restart.is_some() => Wake::Restart,
                _ = sleep_until(timer.unwrap_or(far)), if timer.is_some() => Wake::Timer,
                _ = sleep_until(hello_deadline.unwrap_or(far)),
                    if running && self.peer.is_none() && hello_deadline.is_some() =>
                    Wake::HelloTimeout,
                _ = sleep_until(linger_until.unwrap_or(far)), if !running => Wake::LingerExpired,
            };
            // The timer may be the idle timeout, and the peer's bytes may be waiting: a loop
            // that woke late (a loaded machine, a long step before) with both ready read them
            // first rather than tell a live peer it said nothing. Reading is cancel-safe: a
            // read not ready now takes nothing.
            let wake = match wake {
                Wake::Timer if read_open => match rd.read(&mut buf).now_or_never() {
                    Some(Ok(n)) if n > 0 => Wake::ReadThenTimer(n),
                    Some(r) => Wake::Read(r),
                    None => Wake::Timer,
                },
                other => other,
            };
            let wake = match wake {
                // A TLS peer gone without its close_notify (rustls says so as an unexpected
                // end of file) has closed the connection as a TCP peer closing it has: the
                // same end, the same advice (reconnect to resume).
                Wake::Read(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Wake::Read(Ok(0)),
                // Before any wait below: the stall writes on from where this write ended.
                Wake::Wrote(r) => {
                    self.handle_written(r, &mut write_open, &mut needs_flush);
                    Wake::Written
                }
                other => other,
            };
            self.stall_for_long_lock_holder(&mut wr, &mut write_open, &mut needs_flush)
                .await;
            self.settle_write_error();
            match wake {
                Wake::Read(Ok(0)) => {
                    read_open = false;
                    self.peer_closed_after_failed_write();
                    if !self.session().is_closed() {
                        if self.end.is_none() {
                            self.end_with(EndReason::TransportClosed);
                        }
                        let now = self.now_ms();
                        let db = self.db.clone();
                        self.session_mut().transport_closed(now, &db);
                    }
                }
                Wake::Read(Ok(n)) => self.handle_input(&buf[..n]).await,
                Wake::Read(Err(e)) => {
                    read_open = false;
                    write_open = false;
                    if self.end.is_none() || self.write_failed {
                        self.end_with(io_reason(&e));
                        self.io_error = Some(e);
                    }
                    let now = self.now_ms();
                    let db = self.db.clone();
                    self.session_mut().transport_closed(now, &db);
                }
                Wake::Wrote(_) => unreachable!("handled before the stall"),
                Wake::Written | Wake::Commit | Wake::Shutdown => {}
                Wake::Policy(false) => policy_rx = None,
                Wake::Policy(true) => {
                    let policy = policy_rx
                        .as_mut()
                        .expect("checked")
                        .borrow_and_update()
                        .clone();
                    let now = self.now_ms();
                    let db = self.db.clone();
                    if let Err(m) = self.session_mut().set_policy(now, &db, policy) {
                        self.close(ErrorCode::InvalidPolicy, &m);
                    }
                }
                // Whoever moved it is gone: the verdict can no longer change.
                Wake::Recheck(false) => recheck = None,
                Wake::Recheck(true) => {
                    let check = recheck.as_mut().expect("checked");
                    check.changes.borrow_and_update();
                    if let Err(message) = check.judge() {
                        self.end_with(EndReason::Protocol(SyncError {
                            code: ErrorCode::AuthFailed,
                            message: message.clone(),
                            remote: false,
                        }));
                        self.close(ErrorCode::AuthFailed, &message);
                    }
                }
                Wake::Restart => {
                    let goodbye = restart.take().expect("checked").goodbye;
                    self.end_with(EndReason::Shutdown);
                    self.close(ErrorCode::ShuttingDown, &goodbye);
                }
                Wake::Timer => self.on_timer(),
                Wake::ReadThenTimer(n) => {
                    self.handle_input(&buf[..n]).await;
                    self.on_timer();
                }
                Wake::HelloTimeout => {
                    let limit = self.opts.hello_timeout.unwrap_or_default();
                    let message = format!(
                        "no HELLO within {} ms of connecting: a peer sends HELLO first",
                        limit.as_millis()
                    );
                    self.close(ErrorCode::Timeout, &message);
                }
                Wake::LingerExpired => break,
            }
        }
        // Half-close, then read until the peer closes too (or the linger time is up), so the
        // peer reads our goodbye before the transport goes away.
        let until = linger_until
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(self.opts.linger_ms));
        if write_open {
            let _ = timeout_at(until, wr.shutdown()).await;
        }
        if read_open {
            loop {
                match timeout_at(until, rd.read(&mut buf)).await {
                    Ok(Ok(0)) => {
                        self.peer_closed_after_failed_write();
                        break;
                    }
                    Ok(Ok(n)) => {
                        // Nothing to keep alive any more: the session is over.
                        self.wait_out_long_lock_holder().await;
                        self.handle_input(&buf[..n]).await;
                    }
                    _ => break,
                }
            }
        }
        self.drain_events();
        // Also for a session that closed itself: it lets go of a unit it was receiving.
        let now = self.now_ms();
        let db = self.db.clone();
        self.session_mut().transport_closed(now, &db);
        self.drain_events();
    }

    /// The session's timer is due: pings and persists the acknowledged cursor (short), or
    /// ends a session whose peer has been silent too long.
    fn on_timer(&mut self) {
        if self.session().is_closed() {
            return;
        }
        let now = self.now_ms();
        let db = self.db.clone();
        self.session_mut().handle_timeout(now, &db);
    }

    /// Feed received bytes to the session (discarded once it is closed).
    async fn handle_input(&mut self, bytes: &[u8]) {
        if self.session().is_closed() {
            return;
        }
        let now = self.now_ms();
        let staged = self
            .session()
            .stats()
            .cells_received
            .saturating_sub(self.applied_mark);
        let blocking =
            bytes.len() >= BLOCKING_READ_BYTES_MIN || staged >= BLOCKING_STAGED_CELLS_MIN;
        // A protocol error is also reported as a `Closed` event, handled in `drain_events`.
        if blocking {
            let bytes = bytes.to_vec();
            let _ = self
                .blocking(true, move |s, db| s.handle_bytes(now, &bytes, db))
                .await;
        } else {
            let db = self.db.clone();
            let _ = self.session_mut().handle_bytes(now, bytes, &db);
        }
        // Applying a unit (or a snapshot) may take longer than the idle timeout, and nothing
        // was read meanwhile: the peer's frames of that time wait unread in the transport,
        // and the timer must not fire before they are (the peer allows for the apply on its
        // side: `Session::poll_timeout`).
        let done = self.now_ms();
        self.session_mut().handle_stall(now, done);
        self.drain_events();
    }

    /// Move the session's frames into the output buffer, up to its bound.
    async fn fill_output(&mut self) {
        let pending = self.out.len() - self.out_pos;
        let max = self.opts.write_buffer_bytes_max.max(1);
        if pending >= max {
            return;
        }
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let budget = max - pending;
        let now = self.now_ms();
        let before = self.out.len();
        if self.bulk_tx {
            let mut out = std::mem::take(&mut self.out);
            out = self
                .blocking(false, move |s, db| {
                    drain_transmit(s, db, now, &mut out, budget);
                    out
                })
                .await;
            self.out = out;
        } else {
            let db = self.db.clone();
            let session = self.session.as_mut().expect("session present");
            drain_transmit(session, &db, now, &mut self.out, budget);
        }
        self.bulk_tx = self.out.len() - before >= BLOCKING_TRANSMIT_BYTES_MIN;
    }

    /// Every inline session call takes the database's lock. While another caller has held it
    /// for long (see [`LOCK_HELD_LONG_US`]), wait for it on the blocking pool: blocking on
    /// it here would stall every task of this executor thread, other databases' sessions
    /// and timers included. A younger holder is most likely a commit, which the inline call
    /// waits for as before. (Waiting for young holders too, to catch a long one that has just
    /// begun, cost throughput: yielding in a loop spun while the relay's store was busy, and a
    /// timed wait needed parking_lot's mutex, whose fair hand-offs cut `sync_throughput` by
    /// ~10%; measured 2026-12-06.)
    ///
    /// A long holder may hold the lock longer than the idle timeout (an application's write
    /// transaction, a `create_index`, a vacuum or a bulk import on a slow device). Meanwhile
    /// the driver keeps writing what is queued and sends a PING when one is due
    /// ([`Session::keep_alive`], which touches no database), so the peer does not take this
    /// side for dead; and once the lock is free, the wait does not count as the peer's
    /// silence either ([`Session::handle_stall`]): the peer's bytes waited unread here. Until
    /// 2026-12-07 the wait did neither: a transaction held 20 s cut a topology's link for
    /// good, both ends saying "nothing received for 15000 ms" (an audit of the embedded API).
    /// A write that fails meanwhile ends the session after the wait
    /// ([`Driver::settle_write_error`]: ending it reads the database).
    async fn stall_for_long_lock_holder<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        write_open: &mut bool,
        needs_flush: &mut bool,
    ) {
        if !self.lock_held_long() {
            return;
        }
        let from_ms = self.now_ms();
        while self.lock_held_long() {
            let db = self.db.clone();
            let mut free = tokio::task::spawn_blocking(move || db.wait_for_lock());
            loop {
                let now = self.now_ms();
                let ping_at = self
                    .session_mut()
                    .keep_alive(now)
                    .map(|ms| self.instant_at(ms));
                self.take_queued();
                let pending = &self.out[self.out_pos..];
                let can_write = *write_open && (!pending.is_empty() || *needs_flush);
                let step = tokio::select! {
                    r = &mut free => match r {
                        Ok(()) => StallStep::LockFree,
                        Err(_) => StallStep::RuntimeGone,
                    },
                    r = write_step(wr, pending), if can_write => StallStep::Wrote(r),
                    _ = sleep_until(ping_at.unwrap_or_else(far_future)), if ping_at.is_some() => {
                        StallStep::PingDue
                    }
                };
                match step {
                    StallStep::LockFree => break,
                    // The runtime is shutting down: the task goes with it.
                    StallStep::RuntimeGone => return,
                    StallStep::Wrote(r) => self.handle_written(r, write_open, needs_flush),
                    StallStep::PingDue => {}
                }
            }
        }
        let to_ms = self.now_ms();
        self.session_mut().handle_stall(from_ms, to_ms);
    }

    /// Wait out a long holder of the database's lock as
    /// [`Driver::stall_for_long_lock_holder`] does, but without keeping the connection alive:
    /// for a session that is over.
    async fn wait_out_long_lock_holder(&self) {
        while self.lock_held_long() {
            let db = self.db.clone();
            if tokio::task::spawn_blocking(move || db.wait_for_lock())
                .await
                .is_err()
            {
                // The runtime is shutting down: the task goes with it.
                return;
            }
        }
    }

    /// Another caller has held the database's lock for [`LOCK_HELD_LONG_US`] or more, or
    /// holds it for work of unknown length (an application's transaction, an index build:
    /// [`Database::lock_held_long`]).
    fn lock_held_long(&self) -> bool {
        self.db
            .lock_held_long(Duration::from_micros(LOCK_HELD_LONG_US))
    }

    /// Move the frames the session has queued into the output buffer, up to its bound,
    /// without reading the feed (no database call).
    fn take_queued(&mut self) {
        let max = self.opts.write_buffer_bytes_max.max(1);
        if self.out_pos > 0 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        while self.out.len() < max {
            match self.session_mut().poll_queued() {
                Some(f) => self.out.extend_from_slice(&f),
                None => break,
            }
        }
    }

    /// Account for a write step (no database call: a failure is settled later, by
    /// [`Driver::settle_write_error`]).
    fn handle_written(
        &mut self,
        r: io::Result<WriteOutcome>,
        write_open: &mut bool,
        needs_flush: &mut bool,
    ) {
        match r {
            Ok(WriteOutcome::Wrote(n)) => {
                self.out_pos += n;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                    *needs_flush = true;
                }
            }
            Ok(WriteOutcome::Flushed) => *needs_flush = false,
            Err(e) => {
                *write_open = false;
                self.out.clear();
                self.out_pos = 0;
                self.write_error = Some(e);
            }
        }
    }

    /// End the session with a write that failed (ending reads the database).
    fn settle_write_error(&mut self) {
        if let Some(e) = self.write_error.take() {
            if self.end.is_none() {
                // Keep reading while lingering: if the peer's goodbye is already in our
                // input, it explains the failed write better than the error.
                self.end_with(io_reason(&e));
                self.io_error = Some(e);
                self.write_failed = true;
            }
        }
    }

    /// The instant `ms` after the session started (far in the future if out of range).
    fn instant_at(&self, ms: u64) -> Instant {
        self.start
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(far_future)
    }

    /// Run `f` on tokio's blocking pool with the session moved there and back; a bulk
    /// `apply` first takes one of the process's apply permits (see [`apply_permits`]).
    async fn blocking<R: Send + 'static>(
        &mut self,
        apply: bool,
        f: impl FnOnce(&mut Session, &Database) -> R + Send + 'static,
    ) -> R {
        let permit = if apply {
            Some(
                apply_permits()
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the apply semaphore is never closed"),
            )
        } else {
            None
        };
        let mut s = self.session.take().expect("session present");
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = f(&mut s, &db);
            drop(permit);
            (s, r)
        });
        match task.await {
            Ok((s, r)) => {
                self.session = Some(s);
                r
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime shuts down, which drops this task right after.
            Err(e) => panic!("blocking sync step cancelled: {e}"),
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.session_mut().poll_event() {
            match ev {
                SessionEvent::Connected { peer, .. } => {
                    self.peer = Some(peer);
                    let refusal = self
                        .opts
                        .peer_check
                        .as_ref()
                        .and_then(|c| (c.0)(peer).err());
                    if let (Some(message), None) = (refusal, &self.end) {
                        self.end_with(EndReason::Protocol(SyncError {
                            code: ErrorCode::ShuttingDown,
                            message: message.clone(),
                            remote: false,
                        }));
                        self.close(ErrorCode::ShuttingDown, &message);
                    }
                }
                SessionEvent::Applied { .. } => {
                    self.applied_mark = self.session().stats().cells_received;
                }
                SessionEvent::Closed(e) => self.on_closed(e),
                SessionEvent::Rejected(rejections) => self.on_rejected(rejections),
                SessionEvent::TokenUnchecked => {
                    self.token_unchecked = true;
                    if let Some(n) = &self.opts.token_unchecked {
                        n.notify_one();
                    }
                }
                // Changes *we* refused are counted in the session's stats
                // (`changes_refused`), which the report carries; the peer was told why.
                _ => {}
            }
        }
    }

    /// Keep the first rejections for the report and pass each on to the caller's channel.
    fn on_rejected(&mut self, rejections: Vec<Rejection>) {
        keep_reported(&mut self.rejected, &rejections);
        if let Some(tx) = &self.opts.rejections {
            for r in rejections {
                if tx.try_send(r).is_err() {
                    break;
                }
            }
        }
    }

    /// The read side reached end-of-file after a write failed because the peer was gone (a
    /// broken pipe, a reset): the peer closed the connection, which tells the user more (and
    /// what to do) than the write error does.
    fn peer_closed_after_failed_write(&mut self) {
        let peer_gone = self.write_failed
            && self.io_error.as_ref().is_some_and(|e| {
                matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                )
            });
        if peer_gone {
            self.write_failed = false;
            self.io_error = None;
            self.end_with(EndReason::TransportClosed);
        }
    }

    fn on_closed(&mut self, mut e: SyncError) {
        // Bytes that are not even one frame, before the peer's first: whatever answered is
        // probably no BlazeDB node (an HTTP or other server at that port, or a client of
        // another protocol). Said here only: the ERROR sent to the peer is already queued,
        // with its code and the plain message.
        // (An HTTP reply is already named as such by the decoder.)
        let unframed = matches!(
            e.code,
            ErrorCode::TooLarge | ErrorCode::Checksum | ErrorCode::Malformed
        ) && !e.message.contains(blazedb::sync::frame::ANSWERED_IN_HTTP);
        if !e.remote
            && unframed
            && self.peer.is_none()
            && self.session().stats().frames_received == 0
        {
            e.message = format!(
                "{}: the peer's first bytes are not a BlazeDB frame, so it is probably not a \
                 BlazeDB peer (another kind of server or client): check the host and port",
                e.message
            );
        }
        let reason = if e.remote && e.code == ErrorCode::ShuttingDown {
            self.peer_shut_down = (e.message != GOODBYE_CAUGHT_UP).then(|| e.message.clone());
            EndReason::PeerFinished
        } else {
            EndReason::Protocol(e.clone())
        };
        if self.end.is_none() {
            self.end_with(reason);
        } else if self.write_failed && e.remote {
            // The peer's goodbye (or error) was waiting behind the failed write.
            self.write_failed = false;
            self.io_error = None;
            self.end_with(reason);
        }
    }

    fn end_with(&mut self, reason: EndReason) {
        self.caught_up_at_end = match reason {
            EndReason::CaughtUp => true,
            _ => self.caught_up(),
        };
        self.end = Some(reason);
    }

    /// `Session::is_caught_up`; a database error there ends the session as internal.
    fn caught_up(&mut self) -> bool {
        let db = self.db.clone();
        match self.session().is_caught_up(&db) {
            Ok(c) => c,
            Err(e) => {
                if self.end.is_none() {
                    let message = format!("cannot read the change feed: {e}");
                    self.end = Some(EndReason::Protocol(SyncError {
                        code: ErrorCode::Internal,
                        message: message.clone(),
                        remote: false,
                    }));
                    self.close(ErrorCode::Internal, &message);
                }
                false
            }
        }
    }

    fn close(&mut self, code: ErrorCode, message: &str) {
        let now = self.now_ms();
        let db = self.db.clone();
        self.session_mut().close(now, &db, code, message);
    }

    fn publish(&mut self) {
        if self.opts.monitor.is_none() {
            return;
        }
        // Head first: a commit between the two reads then looks like "not seen yet".
        let local_seq = self.db.last_seq().unwrap_or(Seq(0));
        let caught_up = self.end.is_none() && self.caught_up();
        let snap = SessionSnapshot {
            peer: self.peer,
            stats: self.session().stats().clone(),
            caught_up,
            local_seq,
            acked: self.session().acked(),
            ended: false,
            error: None,
        };
        if let Some(m) = &self.opts.monitor {
            m.publish(snap);
        }
    }

    /// The last snapshot, with the error the driver returns (see [`Driver::finish`]).
    fn publish_ended(&self, error: Option<&NetError>) {
        if let Some(m) = &self.opts.monitor {
            m.publish(SessionSnapshot {
                peer: self.peer,
                stats: self.session().stats().clone(),
                caught_up: self.caught_up_at_end,
                local_seq: self.db.last_seq().unwrap_or(Seq(0)),
                acked: self.session().acked(),
                ended: true,
                error: error.map(ToString::to_string),
            });
        }
    }

    fn finish(&mut self) -> Result<SessionReport, NetError> {
        let end = self.end.take().unwrap_or(EndReason::TransportClosed);
        let report = SessionReport {
            node: self.db.node_id(),
            peer: self.peer,
            stats: self.session().stats().clone(),
            end: end.clone(),
            caught_up: self.caught_up_at_end,
            elapsed_ms: self.now_ms(),
            rejected: std::mem::take(&mut self.rejected),
            token_unchecked: self.token_unchecked,
            peer_goodbye: self.peer_shut_down.clone(),
        };
        let once = self.opts.stop_when_caught_up;
        match end {
            EndReason::CaughtUp | EndReason::Shutdown => Ok(report),
            EndReason::PeerFinished if !once || report.caught_up => Ok(report),
            EndReason::PeerFinished => match self.peer_shut_down.take() {
                Some(message) => Err(NetError::PeerShutDown {
                    message,
                    report: Box::new(report),
                }),
                None => Err(NetError::Incomplete {
                    report: Box::new(report),
                }),
            },
            EndReason::TransportClosed if once && report.caught_up => Ok(report),
            EndReason::TransportClosed => Err(NetError::Disconnected {
                report: Box::new(report),
            }),
            EndReason::Protocol(error) => Err(NetError::Sync {
                error,
                report: Box::new(report),
            }),
            EndReason::Io { kind, message } => Err(NetError::Io {
                source: self
                    .io_error
                    .take()
                    .unwrap_or_else(|| io::Error::new(kind, message)),
                report: Box::new(report),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("session present")
    }

    fn session_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("session present")
    }
}

/// Permits for the bulk applies of every session in this process (a large received unit
/// written in one transaction on the blocking pool): one fewer than the cores, at least one.
/// More at once only share the same cores, and starve everything else the process runs —
/// the application's own commits, the sending sides, the small inline steps of the other
/// sessions. A receiver waiting for a permit falls further behind and then catches up with
/// fewer, larger units (the feed holds each cell's latest version only, so a longer range
/// also carries fewer cells per change). Reads for sending are not limited: a sender and a
/// receiver in one process still overlap.
fn apply_permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores.saturating_sub(1).max(1)))
    })
}

/// Move frames from the session into `out` until it has nothing more or `budget` bytes
/// were added.
fn drain_transmit(s: &mut Session, db: &Database, now_ms: u64, out: &mut Vec<u8>, budget: usize) {
    let mut added = 0usize;
    while added < budget {
        match s.poll_transmit(now_ms, db) {
            Some(f) => {
                added += f.len();
                out.extend_from_slice(&f);
            }
            None => break,
        }
    }
}

/// An instant no timer reaches: a year from now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn io_reason(e: &io::Error) -> EndReason {
    EndReason::Io {
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Add `new` to the rejections a report keeps: the first [`REJECTIONS_REPORTED_MAX`] (the
/// report's count covers them all).
pub(crate) fn keep_reported(kept: &mut Vec<Rejection>, new: &[Rejection]) {
    let room = REJECTIONS_REPORTED_MAX.saturating_sub(kept.len());
    kept.extend(new.iter().take(room).cloned());
}
