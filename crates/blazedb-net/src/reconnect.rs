//! The client side of network sync: one session ([`sync_once`]) or a session kept alive
//! across failures ([`sync_watch`]) — what `blazedb sync DB URL [--once | --watch]` runs.
//!
//! ```text
//!  sync_watch:  connect ──► run_session ──► ends (error, cut, peer restarted)
//!                  ▲                               │
//!                  └── sleep Backoff::next_delay ◄─┘   (reset once a session got going)
//! ```
//!
//! Nothing is resent after a reconnect that the peer had applied: each new session starts
//! with SUBSCRIBE from the receiver's persisted cursor (docs/PROTOCOL.md §8), so progress
//! survives in the database files, not in the connection. Only units that were in flight
//! when the connection broke — sent but not yet applied — travel again.
//!
//! Errors that a retry cannot fix end the loop: a refused token (`AUTH_FAILED`), a mode the
//! peer forbids, a copied database (`SAME_NODE`), another protocol version, a sync policy
//! the peer refuses (`INVALID_POLICY`), a change too large for the peer (`TOO_LARGE`), a
//! local database the session cannot start on (an invalid policy, a damaged file; a file
//! only busy is retried), and a bad URL or TLS configuration. Anything else (refused
//! connection, timeout, cut, the peer shutting down) is retried with exponential backoff and
//! jitter ([`Backoff`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blazedb::sync::{ErrorCode, Rejection, SessionConfig};
use blazedb::{Database, NodeId};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::spawn_checkpointer;
use crate::driver::{run_session, DriverOptions, EndReason, PeerCheck, SessionReport};
use crate::error::NetError;
use crate::head_watch::HeadWatch;
use crate::limits::{
    CHECKPOINT_INTERVAL_MS_DEFAULT, LINGER_MS_DEFAULT, RECONNECT_BACKOFF_INITIAL_MS,
    RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MULTIPLIER, RECONNECT_JITTER_PERCENT,
    RECONNECT_STABLE_MS, REJECTIONS_REPORTED_MAX,
};
use crate::peer_lock::{AlreadySyncing, PeerLock, SyncKind};
use crate::transport::{connect, ConnectOptions, Endpoint, TransportError};

/// Why a client sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be made (or, in watch mode, a permanent setup error).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The session failed (in watch mode: with an error that retrying cannot fix).
    #[error(transparent)]
    Session(#[from] NetError),
    /// Another sync of the same database file with the same peer runs (in this process or
    /// another): see [`crate::peer_lock`].
    #[error(transparent)]
    AlreadySyncing(#[from] AlreadySyncing),
}

/// Exponential backoff settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay, in ms.
    pub initial_ms: u64,
    /// Longest delay, in ms.
    pub max_ms: u64,
    /// Each failure multiplies the delay by this.
    pub multiplier: u32,
    /// Each delay is shortened by a random part of up to this percentage, so clients cut
    /// off together (a relay restart) do not come back together.
    pub jitter_percent: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial_ms: RECONNECT_BACKOFF_INITIAL_MS,
            max_ms: RECONNECT_BACKOFF_MAX_MS,
            multiplier: RECONNECT_BACKOFF_MULTIPLIER,
            jitter_percent: RECONNECT_JITTER_PERCENT,
        }
    }
}

/// Delays between reconnection attempts. Randomness comes in as an argument, so the
/// sequence is reproducible in tests.
///
/// ```
/// use blazedb_net::reconnect::{Backoff, BackoffConfig};
/// let mut b = Backoff::new(BackoffConfig { initial_ms: 100, max_ms: 1000, multiplier: 2, jitter_percent: 0 });
/// let delays: Vec<u64> = (0..6).map(|_| b.next_delay_ms(0)).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A backoff before its first failure.
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff { cfg, failures: 0 }
    }

    /// The delay before the next attempt, given a random number: the base delay
    /// `initial × multiplier^failures` (capped at `max`), minus up to `jitter_percent` of
    /// it. Counts one more failure.
    pub fn next_delay_ms(&mut self, random: u64) -> u64 {
        let mut base = self.cfg.initial_ms.min(self.cfg.max_ms);
        for _ in 0..self.failures {
            base = base.saturating_mul(u64::from(self.cfg.multiplier.max(1)));
            if base >= self.cfg.max_ms {
                base = self.cfg.max_ms;
                break;
            }
        }
        self.failures = self.failures.saturating_add(1);
        // u128: the product of a delay near u64::MAX and a percentage must not overflow.
        let jitter_max = u128::from(base) * u128::from(self.cfg.jitter_percent.min(100)) / 100;
        let jitter = u128::from(random) % (jitter_max + 1);
        // jitter ≤ jitter_max ≤ base, so it fits and the subtraction cannot underflow.
        base - jitter as u64
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Start over from the initial delay (after a session that worked).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How a client syncs with a network peer.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TLS settings and the connection timeout.
    pub connect: ConnectOptions,
    /// Session settings: `token`, `mode`, and the heartbeats `ping_interval_ms` and
    /// `idle_timeout_ms` (a dead peer is noticed within `idle_timeout_ms` plus
    /// `linger_ms`).
    pub session: SessionConfig,
    /// Delays between reconnection attempts (watch mode).
    pub backoff: BackoffConfig,
    /// How long an ending session keeps flushing its last frames, in ms.
    pub linger_ms: u64,
    /// Also notice commits made by other processes on the same file (watch mode; polls the
    /// feed head, see [`crate::head_watch`]).
    pub watch_other_processes: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            session: SessionConfig::default(),
            backoff: BackoffConfig::default(),
            linger_ms: LINGER_MS_DEFAULT,
            watch_other_processes: false,
        }
    }
}

/// Something that happened in [`sync_watch`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection was made; a session starts on it.
    Connected {
        /// Attempts since the last working session (1 = first try).
        attempt: u32,
    },
    /// A session ended.
    SessionEnded {
        /// What it did.
        report: Box<SessionReport>,
        /// Why it ended, if not cleanly.
        error: Option<String>,
    },
    /// Connecting failed or a session ended; the next attempt comes after a pause.
    Retrying {
        /// The pause, in ms.
        delay_ms: u64,
        /// What went wrong.
        error: String,
    },
    /// The peer refused a change of ours (its access rules), and why. Its own version of the
    /// record replaces ours; our refused values are kept as conflicts.
    Rejected(Rejection),
    /// The operating system would not watch the database file, so commits to it by other
    /// processes reach the peer only within the head poll's interval
    /// ([`HeadWatch::file_watch_error`]). Told once, at the start.
    FileWatchUnavailable {
        /// Why, what it costs and what to do.
        error: String,
    },
    /// A token was presented and the peer says it checks none (`blazedb listen` without
    /// `--token`, a relay without authentication): anyone who can reach it may sync with
    /// it. Syncing goes on. Told at the first session that finds it so, and again only after
    /// a session in which the peer did check (a peer restarted without its token). A peer of
    /// a release that does not say is never reported.
    TokenUnchecked,
}

/// Traffic of one or more sessions, seen from this side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficReport {
    /// Cells this side sent.
    pub cells_sent: u64,
    /// Framed bytes this side wrote.
    pub bytes_sent: u64,
    /// Cells this side received.
    pub cells_received: u64,
    /// Received cells that changed something here.
    pub cells_applied: u64,
    /// Framed bytes this side read.
    pub bytes_received: u64,
    /// Records whose changes the peer refused.
    pub rejected_by_peer: u64,
}

impl TrafficReport {
    fn add(&mut self, r: &SessionReport) {
        self.cells_sent += r.stats.cells_sent;
        self.bytes_sent += r.stats.bytes_sent;
        self.cells_received += r.stats.cells_received;
        self.cells_applied += r.stats.cells_applied;
        self.bytes_received += r.stats.bytes_received;
        self.rejected_by_peer += r.stats.changes_rejected_by_peer;
    }
}

/// What a client sync did: one session (`sync_once`) or all of them (`sync_watch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReport {
    /// The peer URL.
    pub url: String,
    /// The peer's node id, once a session got that far.
    pub peer: Option<NodeId>,
    /// Traffic summed over the sessions.
    pub traffic: TrafficReport,
    /// Sessions run.
    pub sessions: u32,
    /// Connection attempts that failed.
    pub connect_failures: u32,
    /// The last error that was retried, if any.
    pub last_error: Option<String>,
    /// Wall time, in ms.
    pub elapsed_ms: u64,
    /// The first changes the peer refused, with its reasons (up to
    /// [`REJECTIONS_REPORTED_MAX`]; `traffic.rejected_by_peer` counts them all).
    pub rejected: Vec<Rejection>,
    /// A session presented a token that the peer said it does not check
    /// ([`ClientEvent::TokenUnchecked`]).
    pub token_unchecked: bool,
}

impl ClientReport {
    fn new(endpoint: &Endpoint) -> ClientReport {
        ClientReport {
            url: endpoint.to_string(),
            peer: None,
            traffic: TrafficReport::default(),
            sessions: 0,
            connect_failures: 0,
            last_error: None,
            elapsed_ms: 0,
            rejected: Vec::new(),
            token_unchecked: false,
        }
    }

    fn add(&mut self, r: &SessionReport) {
        self.traffic.add(r);
        self.sessions += 1;
        self.peer = r.peer.or(self.peer);
        self.token_unchecked |= r.token_unchecked;
        crate::driver::keep_reported(&mut self.rejected, &r.rejected);
    }

    /// The one JSON line the CLI prints, e.g. `{"url":"tcp://h:7421","peer":"…",
    /// "sent":{"cells":10,"bytes":900},"received":{"cells":3,"cells_applied":3,
    /// "bytes":400},"rejected_by_peer":0,"sessions":1,"connect_failures":0,"elapsed_ms":12}`;
    /// when the peer refused changes, `"rejections"` lists the first of them
    /// (`{"collection":…,"record":…,"reason":…}`); when the peer said it checks no token
    /// and one was presented, `"token_unchecked": true`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.traffic;
        let mut v = serde_json::json!({
            "url": self.url,
            "peer": self.peer.map(|p| p.to_string()),
            "sent": { "cells": t.cells_sent, "bytes": t.bytes_sent },
            "received": {
                "cells": t.cells_received,
                "cells_applied": t.cells_applied,
                "bytes": t.bytes_received,
            },
            "rejected_by_peer": t.rejected_by_peer,
            "sessions": self.sessions,
            "connect_failures": self.connect_failures,
            "elapsed_ms": self.elapsed_ms,
        });
        if let Some(e) = &self.last_error {
            v["last_error"] = e.clone().into();
        }
        if !self.rejected.is_empty() {
            v["rejections"] = self.rejected.iter().map(rejection_json).collect();
        }
        if self.token_unchecked {
            v["token_unchecked"] = true.into();
        }
        v
    }
}

/// A change the peer refused, as the CLI prints it.
pub fn rejection_json(r: &Rejection) -> serde_json::Value {
    serde_json::json!({
        "collection": r.collection,
        "record": r.id.to_string(),
        "reason": r.reason,
    })
}

/// Connect once, sync until both sides are caught up, and end the session politely. Refused
/// at once ([`ClientError::AlreadySyncing`]) while another sync of the file with the same
/// peer runs ([`crate::peer_lock`]).
pub async fn sync_once(
    db: Arc<Database>,
    endpoint: &Endpoint,
    opts: &ClientOptions,
) -> Result<ClientReport, ClientError> {
    let _lock = PeerLock::acquire(db.path(), endpoint, SyncKind::Once)?;
    let node_lock = NodeLock::new(&db, endpoint, SyncKind::Once);
    let started = Instant::now();
    let mut report = ClientReport::new(endpoint);
    let stream = connect(endpoint, &connect_opts(opts)).await?;
    let driver = DriverOptions {
        linger_ms: opts.linger_ms,
        peer_check: Some(node_lock.check()),
        ..DriverOptions::once()
    };
    let session = run_session(db, stream, opts.session.clone(), driver).await;
    if let Some(refused) = node_lock.refused() {
        return Err(refused.into());
    }
    let session = session?;
    report.add(&session);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Keep `db` in sync with the peer at `endpoint` until `stop` completes: connect, run a
/// session, and after any failure reconnect with backoff (see the module docs). Then end
/// the running session politely and return what all sessions did. `on_event` hears about
/// every connection, session end and retry. Refused at once
/// ([`ClientError::AlreadySyncing`]) while another sync of the file with the same peer runs
/// ([`crate::peer_lock`]); the lock is held until it returns.
///
/// ```no_run
/// # async fn f(db: std::sync::Arc<blazedb::Database>) -> Result<(), blazedb_net::reconnect::ClientError> {
/// use blazedb_net::reconnect::{sync_watch, ClientOptions};
/// let peer = "tcp://127.0.0.1:7421".parse()?;
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// let report = sync_watch(db, &peer, &ClientOptions::default(), stop, |e| eprintln!("{e:?}")).await?;
/// println!("{}", report.to_json());
/// # Ok(()) }
/// ```
pub async fn sync_watch(
    db: Arc<Database>,
    endpoint: &Endpoint,
    opts: &ClientOptions,
    stop: impl Future<Output = ()>,
    mut on_event: impl FnMut(ClientEvent),
) -> Result<ClientReport, ClientError> {
    let _lock = PeerLock::acquire(db.path(), endpoint, SyncKind::Watch)?;
    let node_lock = NodeLock::new(&db, endpoint, SyncKind::Watch);
    let started = Instant::now();
    let mut report = ClientReport::new(endpoint);
    let token = CancellationToken::new();
    let heads = opts
        .watch_other_processes
        .then(|| HeadWatch::spawn(db.clone()));
    let wake = heads.as_ref().map(|h| h.subscribe());
    if let Some(error) = heads.as_ref().and_then(|h| h.file_watch_error()) {
        on_event(ClientEvent::FileWatchUnavailable {
            error: error.to_owned(),
        });
    }
    // As `listen` and file-to-file sync do: the WAL is checkpointed in the background, so no
    // commit (an applied unit is one) pays for a checkpoint and its fsync, and the WAL keeps
    // reusing its blocks instead of growing to the inline-checkpoint bound.
    let _checkpoints = spawn_checkpointer(
        db.clone(),
        Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT),
    );
    let mut backoff = Backoff::new(opts.backoff.clone());
    // Whether the user was told that the peer checks no token, since the last session in
    // which it did check one.
    let mut told_token_unchecked = false;
    let stopper = async {
        stop.await;
        // The running session ends politely and the loop returns; keep the select on it.
        token.cancel();
        std::future::pending::<()>().await
    };
    let work = async {
        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            let attempt_started = Instant::now();
            let connect_options = connect_opts(opts);
            let error = match tokio::select! {
                r = connect(endpoint, &connect_options) => r,
                _ = token.cancelled() => return Ok(()),
            } {
                Err(e) if e.is_permanent() => return Err(ClientError::Transport(e)),
                Err(e) => {
                    report.connect_failures += 1;
                    e.to_string()
                }
                Ok(stream) => {
                    on_event(ClientEvent::Connected {
                        attempt: backoff.failures() + 1,
                    });
                    let (rejections, mut rejected) = mpsc::channel(REJECTIONS_REPORTED_MAX);
                    let unchecked = Arc::new(Notify::new());
                    let driver = DriverOptions {
                        shutdown: token.child_token(),
                        wake: wake.clone(),
                        linger_ms: opts.linger_ms,
                        rejections: Some(rejections),
                        token_unchecked: Some(unchecked.clone()),
                        peer_check: Some(node_lock.check()),
                        ..DriverOptions::default()
                    };
                    // Refusals are shown as they come: a session may run for days.
                    let session = run_session(db.clone(), stream, opts.session.clone(), driver);
                    tokio::pin!(session);
                    let result = loop {
                        tokio::select! {
                            r = &mut session => break r,
                            Some(r) = rejected.recv() => on_event(ClientEvent::Rejected(r)),
                            _ = unchecked.notified(), if !told_token_unchecked => {
                                told_token_unchecked = true;
                                on_event(ClientEvent::TokenUnchecked);
                            }
                        }
                    };
                    while let Ok(r) = rejected.try_recv() {
                        on_event(ClientEvent::Rejected(r));
                    }
                    if let Some(refused) = node_lock.refused() {
                        return Err(ClientError::AlreadySyncing(refused));
                    }
                    let (session, error) = match &result {
                        Ok(r) => (Some(r), None),
                        Err(e) => (e.report(), Some(e.to_string())),
                    };
                    if let Some(s) = session {
                        if s.token_unchecked && !told_token_unchecked {
                            // Found in the session's last steps, after the select.
                            told_token_unchecked = true;
                            on_event(ClientEvent::TokenUnchecked);
                        } else if s.peer.is_some() && !s.token_unchecked {
                            // The peer said HELLO without the statement: it checks the token
                            // now (or cannot say); a later session without it is told again.
                            told_token_unchecked = false;
                        }
                        report.add(s);
                        on_event(ClientEvent::SessionEnded {
                            report: Box::new(s.clone()),
                            error: error.clone(),
                        });
                        // A session that got going proves the setup works: start the
                        // delays over. One that fails at once keeps backing off.
                        if s.peer.is_some()
                            && attempt_started.elapsed().as_millis() as u64 >= RECONNECT_STABLE_MS
                        {
                            backoff.reset();
                        }
                    }
                    match result {
                        Ok(r) if r.end == EndReason::Shutdown => return Ok(()),
                        Ok(_) => "the peer ended the session".to_owned(),
                        Err(e) if is_permanent(&e) => return Err(ClientError::Session(e)),
                        Err(e) => e.to_string(),
                    }
                }
            };
            let delay_ms = backoff.next_delay_ms(rand::random());
            report.last_error = Some(error.clone());
            on_event(ClientEvent::Retrying { delay_ms, error });
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(delay_ms)) => {}
                _ = token.cancelled() => return Ok(()),
            }
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = stopper => unreachable!("the stopper never completes"),
    };
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    outcome.map(|()| report)
}

/// A client sync's lock by peer node ([`crate::peer_lock`]): taken when a session's HELLO
/// names the peer, kept while the sync's sessions meet that same node, moved when they meet
/// another (the peer's store was replaced). A refusal ends the session at once and is kept
/// for the caller to return.
struct NodeLock {
    db: PathBuf,
    via: Endpoint,
    kind: SyncKind,
    state: Arc<Mutex<NodeLockState>>,
}

#[derive(Default)]
struct NodeLockState {
    held: Option<(NodeId, PeerLock)>,
    refused: Option<AlreadySyncing>,
}

/// What the peer is told when the node lock refuses a session (the local refusal, with the
/// file's path and the holder's pid, stays here).
const SAME_NODE_GOODBYE: &str =
    "this node already syncs the same database with you over another connection (another \
     of your addresses): this one ends";

impl NodeLock {
    fn new(db: &Database, via: &Endpoint, kind: SyncKind) -> NodeLock {
        NodeLock {
            db: db.path().to_owned(),
            via: via.clone(),
            kind,
            state: Arc::default(),
        }
    }

    /// The check each session's driver runs on the peer's HELLO.
    fn check(&self) -> PeerCheck {
        let (db, via, kind, state) = (
            self.db.clone(),
            self.via.clone(),
            self.kind,
            self.state.clone(),
        );
        PeerCheck::new(move |node| {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if state.held.as_ref().is_some_and(|(n, _)| *n == node) {
                return Ok(());
            }
            // Another node at the same URL: the lock of the old one goes.
            state.held = None;
            match PeerLock::acquire_node(&db, node, &via, kind) {
                Ok(lock) => {
                    state.held = Some((node, lock));
                    Ok(())
                }
                Err(refused) => {
                    state.refused = Some(refused);
                    Err(SAME_NODE_GOODBYE.to_owned())
                }
            }
        })
    }

    /// The refusal of the last session's peer, if it was refused.
    fn refused(&self) -> Option<AlreadySyncing> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .take()
    }
}

/// Session errors that another attempt would meet again (also what ends a topology's
/// connection for good: `topology.rs`).
pub(crate) fn is_permanent(e: &NetError) -> bool {
    match e {
        // The policy and the data are the same on the next attempt, so a refused policy and
        // a change beyond the peer's limits are refused again.
        NetError::Sync { error, .. } => matches!(
            error.code,
            ErrorCode::AuthFailed
                | ErrorCode::Forbidden
                | ErrorCode::SameNode
                | ErrorCode::UnsupportedVersion
                | ErrorCode::InvalidPolicy
                | ErrorCode::TooLarge
        ),
        // The session could not start: an invalid policy or a damaged file stays so; a file
        // locked by another connection may be free later.
        NetError::Database(e) => !e.is_busy(),
        NetError::Open { .. } | NetError::SameFile { .. } => true,
        // The peer refused our client certificate (TLS 1.3 says so on the first read): the
        // next attempt presents the same one. An expired one is retried, as a server's is
        // (`TransportError::is_permanent`): renewing it or setting a clock mends it.
        NetError::Io { source, .. } => crate::transport::error::certificate_refused(source),
        _ => false,
    }
}

/// The connection settings, with the session's token also offered on a WebSocket upgrade
/// (unless set explicitly).
fn connect_opts(opts: &ClientOptions) -> crate::transport::ConnectOptions {
    let mut c = opts.connect.clone();
    if c.bearer_token.is_none() && !opts.session.token.is_empty() {
        c.bearer_token = Some(opts.session.token.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(BackoffConfig {
            initial_ms: 200,
            max_ms: 5_000,
            multiplier: 3,
            jitter_percent: 0,
        });
        let d: Vec<u64> = (0..5).map(|_| b.next_delay_ms(12345)).collect();
        assert_eq!(d, [200, 600, 1800, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay_ms(0), 200);
    }

    /// The peer's refusals that the next attempt would meet again end the watch; the
    /// passing ones (a timeout, the peer shutting down, a rate limit) are retried.
    #[test]
    fn refusals_a_retry_meets_again_are_permanent() {
        let refused = |code: ErrorCode| NetError::Sync {
            error: blazedb::sync::SyncError {
                code,
                message: "refused".into(),
                remote: true,
            },
            report: Box::new(SessionReport {
                node: NodeId::random(),
                peer: None,
                stats: Default::default(),
                end: EndReason::TransportClosed,
                caught_up: false,
                elapsed_ms: 0,
                rejected: Vec::new(),
                token_unchecked: false,
                peer_goodbye: None,
            }),
        };
        for code in [
            ErrorCode::AuthFailed,
            ErrorCode::Forbidden,
            ErrorCode::SameNode,
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidPolicy,
            ErrorCode::TooLarge,
        ] {
            assert!(is_permanent(&refused(code)), "{code:?}");
        }
        for code in [
            ErrorCode::Timeout,
            ErrorCode::ShuttingDown,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
        ] {
            assert!(!is_permanent(&refused(code)), "{code:?}");
        }
        let invalid = NetError::Database(blazedb::Error::InvalidArgument("bad filter".into()));
        assert!(is_permanent(&invalid));
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let cfg = BackoffConfig {
            initial_ms: 1000,
            max_ms: 1000,
            multiplier: 2,
            jitter_percent: 50,
        };
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..2000u64 {
            let d = Backoff::new(cfg.clone()).next_delay_ms(r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            assert!((500..=1000).contains(&d), "{d}");
            seen.insert(d / 100);
        }
        assert!(seen.len() >= 5, "jitter spreads the delays: {seen:?}");
        // Huge numbers cannot overflow.
        let mut b = Backoff::new(BackoffConfig {
            initial_ms: u64::MAX / 2,
            max_ms: u64::MAX,
            multiplier: u32::MAX,
            jitter_percent: 100,
        });
        for _ in 0..100 {
            b.next_delay_ms(u64::MAX);
        }
    }
}
