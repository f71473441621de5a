//! One client's sync session on the relay, whatever the transport.
//!
//! ```text
//!  transport ─► Guard (rate, HELLO deadline) ─► run_session(relay db, server role,
//!                                                           ConnectionAccess for this caller)
//!                                                  │
//!                                     SessionMonitor ─► metrics (frames, bytes, cells, lag)
//! ```
//!
//! Every session runs on the relay's one [`Database`](blazedb::Database): a change a client
//! sends is applied to the store in one transaction, which wakes every other session's driver
//! (the store's commit listener), and each sends it on to its client — filtered by that
//! client's read rule. That is the whole fan-out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::slots::Slot;
use blazedb::sync::{ErrorCode, SessionConfig, SessionStats};
use blazedb_net::{
    run_session, CredentialRecheck, DriverOptions, EndReason, NetError, SessionMonitor,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::ConnectionAccess;
use crate::auth::{AuthError, AuthFailureKind, Claims};
use crate::guard::{Guard, GuardClose, GuardOptions, SentCounters};
use crate::limits::{SESSION_READ_BUFFER_BYTES, SESSION_WRITE_BUFFER_BYTES_MAX};
use crate::log_throttle::LogKey;
use crate::metrics::{CloseReason, Transport, TransportLabel};
use crate::state::{SessionEntry, State};

/// What the sessions ended by new rules tell their clients, which reconnect by themselves.
const RULES_CHANGED_GOODBYE: &str = "the relay's access rules changed: reconnect to sync under \
     the new ones (a watching client reconnects by itself)";

/// Who is at the other end of a session, as the transport knows it.
#[derive(Debug, Default)]
pub(crate) struct Caller {
    /// The client's IP address (none over a Unix socket; over a WebSocket from a trusted
    /// proxy, the one the proxy forwarded), for the failure limit and the log line of a
    /// session that ends badly.
    pub address: Option<IpAddr>,
    /// Its TLS client certificate, judged again whenever the revocation lists change: the
    /// session ends (`AUTH_FAILED`) once they revoke it.
    pub certificate: Option<CredentialRecheck>,
}

impl Caller {
    /// A caller known by its address only.
    pub fn address(ip: IpAddr) -> Caller {
        Caller {
            address: Some(ip),
            certificate: None,
        }
    }
}

/// Run a sync session over `io` until it ends. `claims`: the caller was authenticated by the
/// transport (HTTP upgrade); `None`: it must present its credential in HELLO. The connection
/// slot is released when the session ends.
pub(crate) async fn run<T>(
    state: Arc<State>,
    io: T,
    transport: Transport,
    claims: Option<Claims>,
    slot: Slot,
    caller: Caller,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let Caller {
        address: client,
        certificate,
    } = caller;
    let limits = &state.limits;
    // Taken before the rules are read: rules replaced in between restart this session.
    let restart = blazedb_net::Restart {
        token: state.session_restart(),
        goodbye: RULES_CHANGED_GOODBYE.to_owned(),
    };
    let mut access = ConnectionAccess::new(state.rules(), state.auth.clone(), claims);
    if let Some(ip) = client {
        access = access.with_failure_limit(ip, state.auth_failures.clone());
    }
    let access = Arc::new(access);
    let (guard, guard_report) = Guard::new(
        io,
        &GuardOptions {
            rate_per_s: limits.message_rate_per_s,
            burst: limits.message_burst,
            hello_timeout: Some(Duration::from_millis(limits.handshake_timeout_ms)),
            sent: Some(SentCounters {
                frames: state.metrics.frames_sent.clone(),
                bytes: state.metrics.bytes_sent.clone(),
            }),
        },
    );
    let cfg = SessionConfig {
        server: true,
        access: Some(access.clone()),
        idle_timeout_ms: limits.idle_timeout_ms,
        ping_interval_ms: limits.ping_interval_ms,
        ..SessionConfig::default()
    };
    let monitor = SessionMonitor::new();
    let opts = DriverOptions {
        shutdown: state.shutdown.child_token(),
        wake: state.head_watch.get().map(|h| h.subscribe()),
        monitor: Some(monitor.clone()),
        read_buffer_bytes: SESSION_READ_BUFFER_BYTES,
        write_buffer_bytes_max: SESSION_WRITE_BUFFER_BYTES_MAX,
        credential_recheck: certificate.clone(),
        restart: Some(restart),
        ..DriverOptions::default()
    };
    let metrics = state.metrics.clone();
    let label = TransportLabel { transport };
    metrics.sessions.get_or_create(&label).inc();
    let mut registered = Registered::new(
        state.clone(),
        SessionEntry {
            monitor: monitor.clone(),
            transport,
            accepted: false,
        },
    );

    let mut changes = monitor.subscribe();
    let mut seen = SessionStats::default();
    let session = run_session(state.db.clone(), guard, cfg, opts);
    tokio::pin!(session);
    let result = loop {
        tokio::select! {
            r = &mut session => break r,
            Ok(()) = changes.changed() => {
                let (peer, stats) = {
                    let snapshot = changes.borrow_and_update();
                    (snapshot.peer, snapshot.stats.clone())
                };
                // The driver learns the peer when the session accepts its HELLO (the
                // credential passed, the node id is the caller's), never before.
                if peer.is_some() {
                    registered.accept();
                }
                metrics.account(&mut seen, &stats);
            }
        }
    };
    if let Some(report) = last_report(&result) {
        metrics.account(&mut seen, &report.stats);
    }
    let guard_close = guard_report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let reason = if access.refused_for_address() {
        CloseReason::AuthRateLimited
    } else {
        // Flags the store keeps (no I/O): its file deleted, or its file system found
        // read-only, while the relay runs. The session's error then says so in words only.
        let store_unavailable = state.db.file_is_gone() || state.db.file_system_read_only();
        close_reason(&result, guard_close.as_ref(), store_unavailable)
    };
    metrics.closed(reason);
    if reason == CloseReason::AuthFailed {
        // Every refusal of a session's credential: a bad or expired token in HELLO, an
        // expiry during the session, and a node id presented under another user's identity
        // (which the session refuses itself, never asking `ConnectionAccess::authenticate`:
        // 1,000 of them left the counter where it was). None presented is no failure.
        let connected = last_report(&result).is_some_and(|r| r.peer.is_some());
        let revoked = certificate.as_ref().is_some_and(CredentialRecheck::refused);
        if let Some(kind) = auth_failure_kind(access.refused_credential(), connected, revoked) {
            metrics.auth_failed(kind);
        }
    }
    // A session that ends badly is logged, but a client failing in a loop is not logged
    // once per attempt: past a few a minute per reason they are counted in one summary
    // line (`log_throttle.rs`). The metrics above count every one.
    // (One refused for its address's failed credentials is logged too, throttled: the
    // first lines of a window name the addresses being refused.)
    let ended_badly = !matches!(
        reason,
        CloseReason::PeerFinished | CloseReason::Disconnected | CloseReason::Shutdown
    );
    if ended_badly {
        let key = LogKey::Closed(reason);
        state.log_throttled(key, client, || {
            let message = match (&guard_close, &result) {
                (Some(g), _) => g.message.clone(),
                (None, Err(e)) => e.to_string(),
                (None, Ok(_)) => String::new(),
            };
            let peer = monitor.snapshot().peer.map(|p| p.to_string());
            serde_json::json!({
                "event": key.event(),
                "transport": transport.as_str(),
                "client": client.map(|ip| ip.to_string()),
                "peer": peer,
                "reason": key.reason(),
                "message": message,
            })
        });
    }
}

/// A session counted in the `connections` gauge and registered in the relay's sessions (lag
/// metrics) for as long as it lives; counted as a connected client (the `clients_connected`
/// gauge, `/health`'s `connected_clients`) from the moment its HELLO is accepted
/// ([`Registered::accept`]) until it ends. Undone on drop, so that a session that panics (or
/// whose task is dropped) is not counted for good, whether it got past its handshake or not.
struct Registered {
    state: Arc<State>,
    id: u64,
    label: TransportLabel,
    /// Counted as a connected client.
    accepted: bool,
}

impl Registered {
    fn new(state: Arc<State>, entry: SessionEntry) -> Registered {
        assert!(!entry.accepted, "a session starts in its handshake");
        let label = TransportLabel {
            transport: entry.transport,
        };
        state.metrics.connections.get_or_create(&label).inc();
        let id = state.register(entry);
        Registered {
            state,
            id,
            label,
            accepted: false,
        }
    }

    /// The session's HELLO was accepted: its client counts as connected (once).
    fn accept(&mut self) {
        if self.accepted {
            return;
        }
        self.accepted = true;
        self.state.accept(self.id);
        self.state
            .metrics
            .clients_connected
            .get_or_create(&self.label)
            .inc();
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.unregister(self.id);
        let metrics = &self.state.metrics;
        if self.accepted {
            metrics.clients_connected.get_or_create(&self.label).dec();
        }
        metrics.connections.get_or_create(&self.label).dec();
    }
}

/// The report of a finished session, when it got far enough to have one.
fn last_report(
    result: &Result<blazedb_net::SessionReport, NetError>,
) -> Option<&blazedb_net::SessionReport> {
    match result {
        Ok(report) => Some(report),
        Err(e) => e.report(),
    }
}

/// How a session closed `AUTH_FAILED` counts in `auth_failures_total`: its TLS client
/// certificate no longer accepted (`revoked`); by why HELLO's credential was refused
/// (`refused`; `None` for none presented, which is no failure); else, the credential having
/// passed, it expired during a session that had begun (`connected`), or the node id it
/// presented in HELLO is bound to another identity (the session refuses that before it
/// begins).
fn auth_failure_kind(
    refused: Option<&AuthError>,
    connected: bool,
    revoked: bool,
) -> Option<AuthFailureKind> {
    match refused {
        _ if revoked => Some(AuthFailureKind::ClientCertificate),
        Some(e) => e.failure_kind(),
        None if connected => Some(AuthFailureKind::Expired),
        None => Some(AuthFailureKind::NodeOwner),
    }
}

fn close_reason(
    result: &Result<blazedb_net::SessionReport, NetError>,
    guard: Option<&GuardClose>,
    store_unavailable: bool,
) -> CloseReason {
    if let Some(g) = guard {
        return match g.code {
            ErrorCode::RateLimited => CloseReason::RateLimited,
            ErrorCode::Timeout => CloseReason::Timeout,
            _ => CloseReason::ProtocolError,
        };
    }
    match result {
        Ok(r) => match r.end {
            EndReason::Shutdown => CloseReason::Shutdown,
            _ => CloseReason::PeerFinished,
        },
        Err(NetError::Sync { error, .. }) => match error.code {
            ErrorCode::AuthFailed if !error.remote => CloseReason::AuthFailed,
            // The relay's store had no room for what the session needed (the client was
            // told STORAGE_FULL), or it was deleted or its file system turned read-only
            // (INTERNAL, in words saying so): the operator's to mend, not a failure of the
            // relay, which `error` counts.
            ErrorCode::StorageFull if !error.remote => CloseReason::StoreUnavailable,
            ErrorCode::Internal if !error.remote && store_unavailable => {
                CloseReason::StoreUnavailable
            }
            ErrorCode::Timeout => CloseReason::Timeout,
            ErrorCode::Malformed
            | ErrorCode::Checksum
            | ErrorCode::TooLarge
            | ErrorCode::Unexpected
            | ErrorCode::UnsupportedVersion
            | ErrorCode::SameNode
            | ErrorCode::ClockSkew
            // A client's EVICT or a policy it may not ask for: the client's doing, not a
            // failure of the relay (they were counted as `error`).
            | ErrorCode::Forbidden
            | ErrorCode::InvalidPolicy
                if !error.remote =>
            {
                CloseReason::ProtocolError
            }
            _ => CloseReason::Error,
        },
        Err(NetError::Disconnected { .. } | NetError::Io { .. }) => CloseReason::Disconnected,
        Err(NetError::Database(e)) if e.is_disk_full() => CloseReason::StoreUnavailable,
        Err(_) if store_unavailable => CloseReason::StoreUnavailable,
        Err(_) => CloseReason::Error,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;
    use crate::auth::Authenticator;
    use crate::config::{Limits, RelayConfig};
    use crate::rules::Rules;

    /// A connection whose first read runs into a bug: the session's task panics.
    struct PanickingIo;

    impl AsyncRead for PanickingIo {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            panic!("a bug met while reading the client's frames");
        }
    }

    impl AsyncWrite for PanickingIo {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A session the relay's store could not serve closes as `store_unavailable`: its disk
    /// full (the client told `STORAGE_FULL`), or the store deleted or its file system
    /// read-only (`INTERNAL`, the flags saying why). Those were `error`, the bucket of the
    /// relay's own failures, which the rest stays in; a client's own full disk is its
    /// error, not the relay's store.
    #[test]
    fn a_session_the_store_could_not_serve_closes_store_unavailable() {
        let ended = |code: ErrorCode, remote: bool| {
            let error = blazedb::sync::SyncError {
                code,
                message: String::new(),
                remote,
            };
            let report = blazedb_net::SessionReport {
                node: blazedb::NodeId::random(),
                peer: None,
                stats: SessionStats::default(),
                end: EndReason::Protocol(error.clone()),
                caught_up: false,
                elapsed_ms: 0,
                rejected: Vec::new(),
                token_unchecked: false,
                peer_goodbye: None,
            };
            Err(NetError::Sync {
                error,
                report: Box::new(report),
            })
        };
        let reason = |code, remote, store_unavailable| {
            close_reason(&ended(code, remote), None, store_unavailable)
        };
        use ErrorCode::{Internal, StorageFull};
        assert_eq!(
            reason(StorageFull, false, false),
            CloseReason::StoreUnavailable
        );
        assert_eq!(reason(Internal, false, true), CloseReason::StoreUnavailable);
        assert_eq!(reason(Internal, false, false), CloseReason::Error);
        assert_eq!(reason(StorageFull, true, false), CloseReason::Error);
    }

    /// A connection that runs into a bug at its first read once `armed`: the session's task
    /// panics then (and before, it is the connection `inner`).
    struct PanicsWhenArmed {
        inner: tokio::io::DuplexStream,
        armed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl AsyncRead for PanicsWhenArmed {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("a bug met while reading the client's frames");
            }
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for PanicsWhenArmed {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A relay's state on a store in `dir`, without authentication.
    /// New rules end the sessions that started before them (their tokens are children of
    /// the one cancelled), not those that start after.
    #[test]
    fn new_rules_restart_the_sessions_started_before_them_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_in(dir.path());
        let before = state.session_restart();
        state.replace_rules(Rules::allow_all());
        let after = state.session_restart();
        assert!(before.is_cancelled());
        assert!(!after.is_cancelled());
        state.replace_rules(Rules::allow_all());
        assert!(after.is_cancelled());
        assert!(!state.session_restart().is_cancelled());
    }

    fn state_in(dir: &std::path::Path) -> Arc<State> {
        let open = || {
            let options = blazedb::OpenOptions::default();
            Arc::new(blazedb::Database::open(dir.join("relay.db"), options).unwrap())
        };
        let auth = Authenticator::from_config(&RelayConfig::default()).unwrap();
        Arc::new(State::new(
            open(),
            open(),
            auth,
            Rules::allow_all(),
            Limits::default(),
            Vec::new(),
            true,
        ))
    }

    /// The `connections` and `clients_connected` gauges of a transport.
    fn gauges(state: &State, transport: Transport) -> (i64, i64) {
        let label = TransportLabel { transport };
        let m = &state.metrics;
        (
            m.connections.get_or_create(&label).get(),
            m.clients_connected.get_or_create(&label).get(),
        )
    }

    /// A session that panics is no longer counted once its task is gone: the `connections`
    /// gauge and the registered sessions go back down. They were undone at the end of `run`,
    /// which a panic never reaches: too high for good.
    #[tokio::test]
    async fn a_session_that_panics_is_not_counted_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_in(dir.path());
        let slot = state.take_slot(None).unwrap();
        let session = tokio::spawn(run(
            state.clone(),
            PanickingIo,
            Transport::Unix,
            None,
            slot,
            Caller::default(),
        ));
        let ended = session.await.expect_err("the session panicked");
        assert!(ended.is_panic(), "{ended}");
        assert_eq!(state.session_count(), 0);
        assert_eq!(gauges(&state, Transport::Unix), (0, 0));
        let label = TransportLabel {
            transport: Transport::Unix,
        };
        let started = state.metrics.sessions.get_or_create(&label).get();
        assert_eq!(started, 1, "it did start");
    }

    /// A session counts as a connected client once its HELLO is accepted (`/health`'s
    /// `connected_clients`, the `clients_connected` gauge), and one that panics after that is
    /// no longer counted in either, nor in `connections`, once its task is gone.
    #[tokio::test]
    async fn a_client_whose_session_panics_is_not_counted_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_in(dir.path());
        let (relay_end, client_end) = tokio::io::duplex(64 * 1024);
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let io = PanicsWhenArmed {
            inner: relay_end,
            armed: armed.clone(),
        };
        let slot = state.take_slot(None).unwrap();
        let session = tokio::spawn(run(
            state.clone(),
            io,
            Transport::Unix,
            None,
            slot,
            Caller::default(),
        ));
        let options = blazedb::OpenOptions::default();
        let client_db =
            Arc::new(blazedb::Database::open(dir.path().join("client.db"), options).unwrap());
        let client = tokio::spawn(run_session(
            client_db,
            client_end,
            SessionConfig::default(),
            DriverOptions::default(),
        ));
        let waited = std::time::Instant::now();
        while state.client_count() == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the HELLO is accepted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(state.client_count(), 1);
        assert_eq!(gauges(&state, Transport::Unix), (1, 1));

        armed.store(true, std::sync::atomic::Ordering::SeqCst);
        // The client goes: the relay's next read (the end of input) runs into the bug.
        client.abort();
        let _ = client.await;
        let ended = session.await.expect_err("the session panicked");
        assert!(ended.is_panic(), "{ended}");
        assert_eq!((state.session_count(), state.client_count()), (0, 0));
        assert_eq!(gauges(&state, Transport::Unix), (0, 0));
    }
}
