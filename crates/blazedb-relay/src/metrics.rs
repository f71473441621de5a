//! Prometheus metrics (`GET /metrics`, OpenMetrics text via `prometheus-client`). Every name
//! starts with `blazedb_relay_`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `connections{transport}` | gauge | sync connections open now (`ws`, `tcp`, `unix`), whether their handshake is done or not: one counts from the moment its session starts (a WebSocket once upgraded, TCP once past TLS), before any HELLO. Above `clients_connected` by the sockets still in their handshake: a flood of idle or unauthenticated ones shows as the gap (each closes at the handshake timeout) |
//! | `clients_connected{transport}` | gauge | connected clients: sessions whose HELLO the relay accepted (credential and node id), as `/health`'s `connected_clients` counts them |
//! | `connection_slots_used` | gauge | connection slots held now: every accepted connection of every listener, from accept to close — HTTP connections (kept-alive ones, the scrape's own), TLS handshakes in progress, sync sessions of every transport — so above the sum of `connections` by the sockets not (yet) in a session, which that gauge does not see. Not the [`STATUS_CONNECTIONS_RESERVED`](crate::limits::STATUS_CONNECTIONS_RESERVED) connections kept beyond the limit for `/health` and `/metrics`: at the limit it equals `connection_slots_max`, and the scrape itself is on the reserve. Read from the slots at scrape time, so it cannot drift from what the limit enforces. Alert on `connection_slots_used / connection_slots_max` (over 0.8, say): at 1, every new connection is refused (`connections_refused_total{limit="total"}`) |
//! | `connection_slots_max` | gauge | the connection limit (`--max-connections`), for that ratio |
//! | `sessions_total{transport}` | counter | sync sessions started |
//! | `sessions_closed_total{reason}` | counter | sessions ended, by reason: `peer_finished`, `disconnected`, `shutdown`, `auth_failed`, `auth_rate_limited`, `rate_limited`, `timeout`, `protocol_error`, `store_unavailable` (the relay's store could not take what the session needed: its disk is full, the client told `STORAGE_FULL`, or the store was deleted or its file system turned read-only while the relay runs; `store_status` says which), `error` (the client reported an error, or the relay failed internally) |
//! | `frames_received_total`, `frames_sent_total` | counter | protocol frames |
//! | `bytes_received_total`, `bytes_sent_total` | counter | framed bytes |
//! | `cells_applied_total` | counter | received cells that changed the relay's store |
//! | `cells_forwarded_total` | counter | cells sent to clients, but for those in `cells_restated_total` |
//! | `cells_restated_total` | counter | cells sent back to a client to undo its own writes: the relay's version of records whose change by that client the rules refused, or of values a server-priority collection kept over its writes. Not forwarded from anywhere |
//! | `rejected_writes_total` | counter | records whose changes the rules refused |
//! | `conflicts_recorded_total` | counter | conflicts the relay recorded open while applying clients' changes (concurrent writes it settled; not those a collection's policy resolves at once). Alert on its rate, not on the `conflicts` gauge |
//! | `auth_failures_total{kind}` | counter | refused credentials (HTTP 401, HELLO, expiry in a session, a node id under another identity), by kind: `invalid` (not the relay's token, a JWT whose signature does not verify or that cannot be read), `expired` (a JWT past its `exp`, at connect or during a session), `claims` (a JWT whose audience, issuer, `nbf`, `iat` or a required claim is refused), `node_owner` (a valid credential presenting a node id bound to another identity), `client_certificate` (a TLS client certificate refused at the handshake — none, another CA's, expired, revoked, or the revocation lists unreadable — or revoked during a session, which then ends). No credential (or an empty one, or another scheme than `Bearer`) is not a failure: it is how an HTTP client learns that one is needed, and it is counted in `requests_refused_total{reason="auth_failed"}` or `sessions_closed_total{reason="auth_failed"}` alone. Attempts refused unread for their address's failures are not in it either, but in `requests_refused_total{reason="auth_rate_limited"}` and `sessions_closed_total{reason="auth_rate_limited"}` |
//! | `connections_refused_total{limit}` | counter | connections refused at a limit: `total` (`--max-connections`) or `per_address` (`--max-connections-per-address`) |
//! | `requests_refused_total{reason}` | counter | HTTP requests refused before a session or a query: `auth_failed`, `auth_rate_limited` (429: the address presented too many wrong credentials lately), `origin_not_allowed`, `host_not_allowed`, and for `/v1/query` `body_too_large`, `body_timeout`, `invalid_request`, `invalid_expression`, `busy` |
//! | `gc_failures_total{cause}` | counter | garbage collection runs that failed (`--gc-interval`; the next run tries again), by cause: `store_gone` (the store was deleted while the relay runs), `disk_full`, `store_read_only` (its file system turned read-only), `error` (anything else; the `gc_failed` log line has the message). The log says a cause once while it lasts (`gc.rs`); this counts every run |
//! | `conflicts` | gauge | conflict rows open in the relay's store (`Database::open_conflict_count`), counted at most every [`CONFLICTS_REFRESH_MS`](crate::limits::CONFLICTS_REFRESH_MS): every conflict recorded there (`conflicts_recorded_total`, and any a process beside the relay recorded), superseded ones included (a later write of the field, a client's resolution of the same conflict among them, reaches the relay as a write and closes none: `Conflict::superseded`), until it is resolved with `blazedb resolve` on the relay's store. Nothing resolves them on a relay otherwise, so it only grows: an alert on it never clears |
//! | `store_bytes` | gauge | size of the store file and its WAL |
//! | `store_status` | gauge | 0: the store takes writes; 1: its disk is full (reads served, writes refused); 2: it was deleted, or its file system turned read-only, while the relay runs (`/health` says why) |
//! | `peer_lag_commits{peer}` | gauge | commits of the relay's feed a connected peer has not acknowledged, for the [`PEER_LAG_TOP_N`] peers furthest behind |
//! | `peer_lag_commits_max` | gauge | the largest lag of any connected peer |
//! | `peers_lagging` | gauge | connected peers with a lag above zero |
//!
//! **Every series from the start.** Each label value of a bounded label (every transport,
//! close reason, kind, limit, refusal and cause) is exported at 0 from the relay's start, so
//! that `sum`, `rate` and `increase` see the first event: a series that appears with 1 has
//! no increase, and an alert on it would fire at the second.
//!
//! **Bounded cardinality.** Labels take a fixed set of values (`transport`, `reason`,
//! `kind`, `limit`, `cause`: never an origin, a host or an address a client sent), except
//! `peer`, which is a node id: it is exported only for the [`PEER_LAG_TOP_N`] peers with the
//! largest lag at scrape time (the family is cleared and refilled on every scrape), while the
//! max and count cover every peer. So a relay with 10,000 clients exports at most N lag
//! series, and a peer that disconnects leaves no stale series behind.
//!
//! **Lag** is measured in feed positions (commits): the relay's feed head minus the position
//! the peer acknowledged (persisted by the session at most every second), and 0 while the
//! session reports itself caught up (the tail of the feed may hold only the peer's own changes,
//! which are never sent back to it).

use std::fmt;
use std::sync::atomic::AtomicU64;

use blazedb::sync::SessionStats;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::AuthFailureKind;
pub use crate::limits::PEER_LAG_TOP_N;

/// How a client reached the relay.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (`GET /v1/sync`), with or without TLS.
    Ws,
    /// Raw frames over TCP (`--tcp-listen`), with or without TLS.
    Tcp,
    /// Raw frames over a Unix domain socket (`--unix`).
    Unix,
}

impl Transport {
    /// Every transport, for metrics that start at 0.
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Tcp, Transport::Unix];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Why a session ended: a fixed set, so the label stays bounded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said goodbye.
    PeerFinished,
    /// The connection dropped without a goodbye.
    Disconnected,
    /// The relay shut down.
    Shutdown,
    /// Credentials in HELLO were refused.
    AuthFailed,
    /// HELLO came from an address that presented too many wrong credentials lately, and was
    /// refused without its credential being looked at (`blazedb_net::auth_failures`).
    AuthRateLimited,
    /// The client sent messages faster than its rate limit.
    RateLimited,
    /// No HELLO within the handshake timeout, or nothing received for the idle timeout.
    Timeout,
    /// Malformed, oversized or out-of-place input (frames or WebSocket messages).
    ProtocolError,
    /// The relay's store could not take what the session needed: its disk is full (the
    /// client is told `STORAGE_FULL`), or it was deleted or its file system turned
    /// read-only while the relay runs. The operator's to mend (`/health` says what), not a
    /// failure of the relay's code.
    StoreUnavailable,
    /// The client reported an error, or the relay failed internally.
    Error,
}

impl CloseReason {
    /// Every reason, for metrics that start at 0.
    pub const ALL: [CloseReason; 10] = [
        CloseReason::PeerFinished,
        CloseReason::Disconnected,
        CloseReason::Shutdown,
        CloseReason::AuthFailed,
        CloseReason::AuthRateLimited,
        CloseReason::RateLimited,
        CloseReason::Timeout,
        CloseReason::ProtocolError,
        CloseReason::StoreUnavailable,
        CloseReason::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerFinished => "peer_finished",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Shutdown => "shutdown",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::AuthRateLimited => "auth_rate_limited",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Timeout => "timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::StoreUnavailable => "store_unavailable",
            CloseReason::Error => "error",
        }
    }
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabel {
    pub transport: Transport,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: CloseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AuthFailureLabel {
    pub kind: AuthFailureKind,
}

impl EncodeLabelValue for AuthFailureKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusedLabel {
    pub limit: crate::slots::Refused,
}

impl EncodeLabelValue for crate::slots::Refused {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestRefusalLabel {
    pub reason: crate::log_throttle::RequestRefusal,
}

impl EncodeLabelValue for crate::log_throttle::RequestRefusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.code(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GcFailureLabel {
    pub cause: crate::gc::FailureKind,
}

impl EncodeLabelValue for crate::gc::FailureKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub peer: String,
}

/// The relay's metrics. Counters are updated as sessions run; gauges that need the store
/// (conflicts, size, lag) or the connection slots are refreshed when `/metrics` is scraped.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) connections: Family<TransportLabel, Gauge>,
    pub(crate) clients_connected: Family<TransportLabel, Gauge>,
    pub(crate) connection_slots_used: Gauge,
    pub(crate) connection_slots_max: Gauge,
    pub(crate) sessions: Family<TransportLabel, Counter>,
    pub(crate) sessions_closed: Family<ReasonLabel, Counter>,
    pub(crate) frames_received: Counter,
    pub(crate) frames_sent: Counter,
    pub(crate) bytes_received: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) cells_applied: Counter,
    pub(crate) cells_forwarded: Counter,
    pub(crate) cells_restated: Counter,
    pub(crate) rejected_writes: Counter,
    pub(crate) conflicts_recorded: Counter,
    pub(crate) auth_failures: Family<AuthFailureLabel, Counter>,
    pub(crate) connections_refused: Family<RefusedLabel, Counter>,
    pub(crate) requests_refused: Family<RequestRefusalLabel, Counter>,
    /// Shared with the GC task's [`crate::gc::GcCounters`], which counts into it.
    pub(crate) gc_failures: Family<GcFailureLabel, Counter>,
    pub(crate) conflicts: Gauge,
    pub(crate) store_bytes: Gauge,
    pub(crate) store_status: Gauge,
    pub(crate) peer_lag: Family<PeerLabel, Gauge>,
    pub(crate) peer_lag_max: Gauge,
    pub(crate) peers_lagging: Gauge,
    /// When conflicts were last counted (ms since the relay started; 0: never).
    pub(crate) conflicts_counted_ms: AtomicU64,
}

impl Metrics {
    /// All metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("blazedb_relay");
        let m = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            clients_connected: Family::default(),
            connection_slots_used: Gauge::default(),
            connection_slots_max: Gauge::default(),
            sessions: Family::default(),
            sessions_closed: Family::default(),
            frames_received: Counter::default(),
            frames_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            cells_applied: Counter::default(),
            cells_forwarded: Counter::default(),
            cells_restated: Counter::default(),
            rejected_writes: Counter::default(),
            conflicts_recorded: Counter::default(),
            auth_failures: Family::default(),
            connections_refused: Family::default(),
            requests_refused: Family::default(),
            gc_failures: Family::default(),
            conflicts: Gauge::default(),
            store_bytes: Gauge::default(),
            store_status: Gauge::default(),
            peer_lag: Family::default(),
            peer_lag_max: Gauge::default(),
            peers_lagging: Gauge::default(),
            conflicts_counted_ms: AtomicU64::new(0),
        };
        // Every label value at 0 from the start: an alert on an increase then fires at the
        // first event, not at the second (a series that appears with 1 has no increase), and
        // a sum over the label is there before anything happened.
        for transport in Transport::ALL {
            let label = TransportLabel { transport };
            let _ = m.connections.get_or_create(&label);
            let _ = m.clients_connected.get_or_create(&label);
            let _ = m.sessions.get_or_create(&label);
        }
        for reason in CloseReason::ALL {
            let _ = m.sessions_closed.get_or_create(&ReasonLabel { reason });
        }
        for kind in AuthFailureKind::ALL {
            let _ = m.auth_failures.get_or_create(&AuthFailureLabel { kind });
        }
        for limit in crate::slots::Refused::ALL {
            let _ = m.connections_refused.get_or_create(&RefusedLabel { limit });
        }
        for reason in crate::log_throttle::RequestRefusal::ALL {
            let _ = m
                .requests_refused
                .get_or_create(&RequestRefusalLabel { reason });
        }
        for cause in crate::gc::FailureKind::ALL {
            let _ = m.gc_failures.get_or_create(&GcFailureLabel { cause });
        }
        let r = &mut registry;
        r.register(
            "connections",
            "Sync connections open now, handshake done or not (idle and unauthenticated \
             sockets included until the handshake timeout)",
            m.connections.clone(),
        );
        r.register(
            "clients_connected",
            "Connected clients: sync sessions whose HELLO the relay accepted",
            m.clients_connected.clone(),
        );
        r.register(
            "connection_slots_used",
            "Connection slots held now: every accepted connection (HTTP, TLS handshakes, sync \
             sessions), the status reserve aside",
            m.connection_slots_used.clone(),
        );
        r.register(
            "connection_slots_max",
            "The connection limit (--max-connections): new connections are refused once every \
             slot is held",
            m.connection_slots_max.clone(),
        );
        r.register("sessions", "Sync sessions started", m.sessions.clone());
        r.register(
            "sessions_closed",
            "Sync sessions ended, by reason",
            m.sessions_closed.clone(),
        );
        r.register(
            "frames_received",
            "Protocol frames received from clients",
            m.frames_received.clone(),
        );
        r.register(
            "frames_sent",
            "Protocol frames sent to clients",
            m.frames_sent.clone(),
        );
        r.register(
            "bytes_received",
            "Framed bytes received from clients",
            m.bytes_received.clone(),
        );
        r.register(
            "bytes_sent",
            "Framed bytes sent to clients",
            m.bytes_sent.clone(),
        );
        r.register(
            "cells_applied",
            "Received cells that changed the relay's store",
            m.cells_applied.clone(),
        );
        r.register(
            "cells_forwarded",
            "Cells sent to clients, but for those restating the relay's version to their writer",
            m.cells_forwarded.clone(),
        );
        r.register(
            "cells_restated",
            "Cells sent back to a client to undo its own refused or overruled writes",
            m.cells_restated.clone(),
        );
        r.register(
            "rejected_writes",
            "Records whose changes the access rules refused",
            m.rejected_writes.clone(),
        );
        r.register(
            "conflicts_recorded",
            "Conflicts recorded open while applying clients' changes",
            m.conflicts_recorded.clone(),
        );
        r.register(
            "auth_failures",
            "Refused credentials (HTTP, HELLO, expiry, node owner, TLS client certificate), by \
             kind; none presented is not counted",
            m.auth_failures.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused at a connection limit, by limit",
            m.connections_refused.clone(),
        );
        r.register(
            "requests_refused",
            "HTTP requests refused before a session or a query, by reason",
            m.requests_refused.clone(),
        );
        r.register(
            "gc_failures",
            "Garbage collection runs that failed, by cause",
            m.gc_failures.clone(),
        );
        r.register(
            "conflicts",
            "Conflict rows open in the relay's store, until resolved there with blazedb resolve \
             (superseded ones included)",
            m.conflicts.clone(),
        );
        r.register(
            "store_bytes",
            "Size of the relay's store file and its write-ahead log",
            m.store_bytes.clone(),
        );
        r.register(
            "store_status",
            "Whether the store takes writes: 0 yes, 1 its disk is full, 2 it was deleted or its \
             file system turned read-only",
            m.store_status.clone(),
        );
        r.register(
            "peer_lag_commits",
            "Commits of the relay's feed not yet acknowledged, for the peers furthest behind",
            m.peer_lag.clone(),
        );
        r.register(
            "peer_lag_commits_max",
            "The largest lag of any connected peer, in commits",
            m.peer_lag_max.clone(),
        );
        r.register(
            "peers_lagging",
            "Connected peers that have not acknowledged the whole feed",
            m.peers_lagging.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Add what a session did since `seen` (its previous counters) and remember `now`.
    pub(crate) fn account(&self, seen: &mut SessionStats, now: &SessionStats) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.frames_received
            .inc_by(d(now.frames_received, seen.frames_received));
        // Frames and bytes sent are counted by the connection's guard, which sees what
        // really goes out (`guard::SentCounters`).
        self.bytes_received
            .inc_by(d(now.bytes_received, seen.bytes_received));
        self.cells_applied
            .inc_by(d(now.cells_applied, seen.cells_applied));
        // Cells restating the relay's version to their writer are part of `cells_sent`, and
        // were not forwarded from anywhere.
        let restated = d(now.cells_restated, seen.cells_restated);
        self.cells_forwarded
            .inc_by(d(now.cells_sent, seen.cells_sent).saturating_sub(restated));
        self.cells_restated.inc_by(restated);
        self.rejected_writes
            .inc_by(d(now.changes_refused, seen.changes_refused));
        self.conflicts_recorded
            .inc_by(d(now.conflicts_recorded, seen.conflicts_recorded));
        *seen = now.clone();
    }

    /// Count a refused credential.
    pub(crate) fn auth_failed(&self, kind: AuthFailureKind) {
        self.auth_failures
            .get_or_create(&AuthFailureLabel { kind })
            .inc();
    }

    /// Count a session end.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.sessions_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Publish per-peer lag: `lags` holds (peer, commits behind) for every connected peer.
    pub(crate) fn set_lags(&self, mut lags: Vec<(String, u64)>) {
        lags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.peer_lag.clear();
        for (peer, lag) in lags.iter().take(PEER_LAG_TOP_N) {
            self.peer_lag
                .get_or_create(&PeerLabel { peer: peer.clone() })
                .set(gauge_value(*lag));
        }
        self.peer_lag_max
            .set(gauge_value(lags.first().map_or(0, |l| l.1)));
        self.peers_lagging
            .set(gauge_value(lags.iter().filter(|l| l.1 > 0).count() as u64));
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Gauges hold i64; a u64 this large does not happen, but must not wrap to negative.
pub(crate) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
