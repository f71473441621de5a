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
use blazedb_net::{run_session, DriverOptions, EndReason, NetError, SessionMonitor};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::ConnectionAccess;
use crate::auth::Claims;
use crate::guard::{Guard, GuardClose, GuardOptions, SentCounters};
use crate::limits::{SESSION_READ_BUFFER_BYTES, SESSION_WRITE_BUFFER_BYTES_MAX};
use crate::log_throttle::LogKey;
use crate::metrics::{CloseReason, Transport, TransportLabel};
use crate::state::{SessionEntry, State};

/// Run a sync session over `io` until it ends. `claims`: the caller was authenticated by the
/// transport (HTTP upgrade); `None`: it must present its credential in HELLO. The connection
/// slot is released when the session ends. `client`: the client's IP address (none over a
/// Unix socket; over a WebSocket from a trusted proxy, the one the proxy forwarded), for the
/// failure limit and the log line of a session that ends badly.
pub(crate) async fn run<T>(
    state: Arc<State>,
    io: T,
    transport: Transport,
    claims: Option<Claims>,
    slot: Slot,
    client: Option<IpAddr>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let limits = &state.limits;
    let mut access = ConnectionAccess::new(state.rules.clone(), state.auth.clone(), claims);
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
        ..DriverOptions::default()
    };
    let metrics = state.metrics.clone();
    let label = TransportLabel { transport };
    metrics.sessions.get_or_create(&label).inc();
    metrics.connections.get_or_create(&label).inc();
    let id = state.register(SessionEntry {
        monitor: monitor.clone(),
        transport,
    });

    let mut changes = monitor.subscribe();
    let mut seen = SessionStats::default();
    let session = run_session(state.db.clone(), guard, cfg, opts);
    tokio::pin!(session);
    let result = loop {
        tokio::select! {
            r = &mut session => break r,
            Ok(()) = changes.changed() => {
                let stats = changes.borrow_and_update().stats.clone();
                metrics.account(&mut seen, &stats);
            }
        }
    };
    let last = match &result {
        Ok(report) => Some(&report.stats),
        Err(e) => e.report().map(|r| &r.stats),
    };
    if let Some(stats) = last {
        metrics.account(&mut seen, stats);
    }
    let guard_close = guard_report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let reason = if access.refused_for_address() {
        CloseReason::AuthRateLimited
    } else {
        close_reason(&result, guard_close.as_ref())
    };
    metrics.closed(reason);
    if reason == CloseReason::AuthFailed {
        // Every refusal of a session's credential: a bad or expired token in HELLO, an
        // expiry during the session, and a node id presented under another user's identity
        // (which the session refuses itself, never asking `ConnectionAccess::authenticate`:
        // 1,000 of them left the counter where it was).
        metrics.auth_failures.inc();
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
    state.unregister(id);
    metrics.connections.get_or_create(&label).dec();
}

fn close_reason(
    result: &Result<blazedb_net::SessionReport, NetError>,
    guard: Option<&GuardClose>,
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
        Err(_) => CloseReason::Error,
    }
}
