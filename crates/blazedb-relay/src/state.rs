//! What every connection of a relay shares: the store, authentication, rules, metrics, limits,
//! the connection slots and the registry of running sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use blazedb::Database;
pub(crate) use blazedb_net::auth_failures::lock as lock_auth_failures;
use blazedb_net::auth_failures::AuthFailures;
use blazedb_net::SessionMonitor;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::forwarded::TrustedProxies;
use crate::log_throttle::{log_message, LogKey, LogThrottle};
use crate::metrics::{Metrics, Transport};
use crate::origin::{Origin, RequestHost};
use crate::rules::Rules;
use crate::slots::{Refused, Slot, Slots};
use crate::store_watch::{StoreStatus, StoreWatch};

/// Shared by all connections of one relay.
#[derive(Debug)]
pub(crate) struct State {
    pub db: Arc<Database>,
    /// A second handle on the same file for `/v1/query`, so that a long scan never holds
    /// the handle the sessions apply and read through.
    pub query_db: Arc<Database>,
    /// One `/v1/query` at a time on `query_db` (see `QUERY_TURN_WAIT_MS`).
    pub query_turn: tokio::sync::Semaphore,
    pub auth: Arc<Authenticator>,
    /// The access rules in force: replaced when the rules file is read again
    /// ([`State::replace_rules`]); a session keeps those it started with.
    rules: std::sync::RwLock<Arc<Rules>>,
    /// Cancelled to end every running session and have its client reconnect (the rules
    /// changed), then replaced: each session waits on a child of the one current when it
    /// started.
    restart_sessions: Mutex<tokio_util::sync::CancellationToken>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Allowed browser origins; empty: any when credentials are required, only loopback
    /// origins when not ([`State::origin_allowed`]).
    pub origins: Vec<Origin>,
    /// Without authentication, on a loopback HTTP address: requests must be addressed to a
    /// loopback name ([`State::host_allowed`]).
    pub loopback_hosts_only: bool,
    /// Reverse proxies whose `X-Forwarded-For` names an HTTP request's client
    /// (`--trusted-proxy`; `forwarded.rs`).
    pub trusted_proxies: TrustedProxies,
    pub started: Instant,
    /// Cancelled when the relay shuts down; sessions get child tokens.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Wakes the sessions for commits other processes make to the store (an operator's
    /// `blazedb put`, a service writing the file beside the relay), which no commit listener
    /// of this process sees; set when the relay starts running.
    pub head_watch: std::sync::OnceLock<blazedb_net::head_watch::HeadWatch>,
    /// Whether the store can take writes, as last seen (`/health`, `store_status`).
    pub store_watch: StoreWatch,
    /// Which of the lines clients can cause in a loop are logged in full
    /// ([`State::log_throttled`]).
    log_throttle: Mutex<LogThrottle>,
    /// Failed credentials per client address, shared with the sessions that read theirs
    /// from HELLO (`blazedb_net::auth_failures`).
    pub auth_failures: Arc<Mutex<AuthFailures>>,
    /// One per open connection (`Limits::connections_max`, and per client address
    /// `Limits::connections_per_address_max`).
    slots: Slots,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next_session: AtomicU64,
}

/// A running sync session, for `/health`, lag metrics and (later) the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct SessionEntry {
    pub monitor: SessionMonitor,
    #[allow(dead_code)] // Read by the dashboard (issue: live dashboard page).
    pub transport: Transport,
    /// The relay accepted the client's HELLO (its credential, its node id): a connected
    /// client from then on. Before, it is a socket in its handshake, which anyone can open
    /// without a credential ([`State::client_count`]).
    pub accepted: bool,
}

impl State {
    pub fn new(
        db: Arc<Database>,
        query_db: Arc<Database>,
        auth: Authenticator,
        rules: Rules,
        limits: Limits,
        origins: Vec<Origin>,
        http_on_loopback: bool,
    ) -> State {
        State {
            store_watch: StoreWatch::new(db.path().to_owned(), limits.store_probe_interval_ms),
            loopback_hosts_only: !auth.required() && http_on_loopback,
            trusted_proxies: TrustedProxies::default(),
            db,
            query_db,
            query_turn: tokio::sync::Semaphore::new(1),
            auth: Arc::new(auth),
            rules: std::sync::RwLock::new(Arc::new(rules)),
            restart_sessions: Mutex::default(),
            metrics: Arc::new(Metrics::new()),
            slots: Slots::new(limits.connections_max, limits.connections_per_address_max),
            auth_failures: Arc::new(Mutex::new(AuthFailures::new(
                limits.auth_failures_per_address_max,
                std::time::Duration::from_millis(limits.auth_failure_window_ms),
            ))),
            limits,
            origins,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            head_watch: std::sync::OnceLock::new(),
            log_throttle: Mutex::new(LogThrottle::default()),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// The relay behind these reverse proxies: an HTTP request from one of them counts as
    /// coming from the client its `X-Forwarded-For` names (`forwarded.rs`).
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> State {
        self.trusted_proxies = proxies;
        self
    }

    /// Take a connection slot for a client at `ip` (`None`: a Unix socket), or say why
    /// there is none (counted in the metrics).
    pub fn take_slot(&self, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        self.slots
            .take(ip)
            .inspect_err(|why| self.record_refusal(*why, ip))
    }

    /// An HTTP connection's slot: at the limit, one of the status reserve for a connection
    /// that may only ask `/health` and `/metrics` (`Ok((slot, Some(why)))`; refusing it
    /// anything else counts as refused then).
    pub fn take_http_slot(&self, ip: IpAddr) -> Result<(Slot, Option<Refused>), Refused> {
        match self.slots.take(Some(ip)) {
            Ok(slot) => Ok((slot, None)),
            Err(Refused::Total) => match self.slots.take_status() {
                Some(slot) => Ok((slot, Some(Refused::Total))),
                None => {
                    self.record_refusal(Refused::Total, Some(ip));
                    Err(Refused::Total)
                }
            },
            Err(why) => {
                self.record_refusal(why, Some(ip));
                Err(why)
            }
        }
    }

    /// Count a connection from `client` refused for `why`, and log it (throttled: a client
    /// can reconnect in a loop): a relay turning clients away is something its operator
    /// should read about, not only find in `connections_refused_total`.
    pub fn record_refusal(&self, why: Refused, client: Option<IpAddr>) {
        self.metrics
            .connections_refused
            .get_or_create(&crate::metrics::RefusedLabel { limit: why })
            .inc();
        let key = LogKey::Connection(why);
        self.log_throttled(key, client, || {
            serde_json::json!({
                "event": key.event(),
                "client": client.map(|ip| ip.to_string()),
                "reason": key.reason(),
                "message": self.refusal_message(why),
            })
        });
    }

    /// Count and log a TLS handshake that failed on the client's certificate (the log
    /// throttled: a device with a revoked certificate retries). Other failed handshakes are
    /// neither: port scanners and clients that give up make most of them.
    pub fn record_tls_failure(
        &self,
        e: &blazedb_net::transport::plaintext::TlsAcceptError,
        client: IpAddr,
    ) {
        if !e.client_certificate_refused() {
            return;
        }
        self.metrics
            .auth_failed(crate::auth::AuthFailureKind::ClientCertificate);
        let key = LogKey::TlsClientCertificate;
        self.log_throttled(key, Some(client), || {
            serde_json::json!({
                "event": key.event(),
                "client": client.to_string(),
                "reason": key.reason(),
                "message": e.to_string(),
            })
        });
    }

    /// What a client refused a slot is told.
    pub fn refusal_message(&self, why: Refused) -> String {
        why.message(self.slots.per_address_max())
    }

    /// The access rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put `rules` in force: queries use them at once; every running session is ended (its
    /// [`State::session_restart`] token cancelled) and its client, reconnecting, syncs under
    /// them. The rules are replaced before the token: a session takes its token before it
    /// reads the rules, so one that read the old rules holds the old token, which is
    /// cancelled.
    pub fn replace_rules(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        let ended = std::mem::take(
            &mut *self
                .restart_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        ended.cancel();
    }

    /// A token cancelled when the sessions are to restart ([`State::replace_rules`]).
    pub fn session_restart(&self) -> tokio_util::sync::CancellationToken {
        self.restart_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child_token()
    }

    /// Add a running session; returns its key for [`State::unregister`].
    pub fn register(&self, entry: SessionEntry) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.lock_sessions().insert(id, entry);
        id
    }

    pub fn unregister(&self, id: u64) {
        self.lock_sessions().remove(&id);
    }

    /// The session `id` got past its handshake: its client counts as connected.
    pub fn accept(&self, id: u64) {
        if let Some(entry) = self.lock_sessions().get_mut(&id) {
            entry.accepted = true;
        }
    }

    /// The running sessions.
    pub fn sessions(&self) -> Vec<SessionEntry> {
        self.lock_sessions().values().cloned().collect()
    }

    /// Sync sessions open, handshake done or not (the `connections` gauge counts them too).
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    /// Connected clients (`/health`'s `connected_clients`): sessions whose HELLO was
    /// accepted. Sockets still in their handshake are not clients: idle ones, which anyone
    /// can open, inflated the figure until the handshake timeout closed them (audit
    /// 2026-12-07).
    pub fn client_count(&self) -> usize {
        self.lock_sessions().values().filter(|s| s.accepted).count()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Print the line `line` makes (on stderr, its `message` cut to
    /// [`LOG_MESSAGE_BYTES_MAX`](crate::limits::LOG_MESSAGE_BYTES_MAX)) for `key`, from
    /// `client`, or, past the window's budget for `key`, only count it for the window's
    /// summary ([`State::end_log_window`]).
    pub fn log_throttled(
        &self,
        key: LogKey,
        client: Option<IpAddr>,
        line: impl FnOnce() -> serde_json::Value,
    ) {
        if !self.lock_log_throttle().admit(key, client) {
            return;
        }
        let mut line = line();
        if let Some(serde_json::Value::String(m)) = line.get_mut("message") {
            let cut = log_message(m).len();
            m.truncate(cut);
        }
        crate::log::line(line);
    }

    /// End the throttled log's window: print what it left out, one line per key. (Also
    /// forgets the addresses whose failed credentials no longer matter: the same minute's
    /// housekeeping.)
    pub fn end_log_window(&self) {
        let lines = self.lock_log_throttle().end_window();
        for line in lines {
            crate::log::line(line);
        }
        lock_auth_failures(&self.auth_failures).forget_stale(Instant::now());
    }

    fn lock_log_throttle(&self) -> std::sync::MutexGuard<'_, LogThrottle> {
        self.log_throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store can take writes now (logged when it changes; see `store_watch.rs`).
    pub fn check_store(&self) -> StoreStatus {
        let status = self.store_watch.check(&self.db);
        self.metrics.store_status.set(status.level());
        status
    }

    /// Connection slots held now and the limit, (`used`, `max`): every accepted connection
    /// of every listener, those on the status reserve aside (`Slots::used`).
    pub fn connection_slots(&self) -> (usize, usize) {
        (self.slots.used(), self.slots.max())
    }

    /// Size of the store file and its write-ahead log, in bytes: measured through the open
    /// files, so a store deleted while the relay runs still shows what is at stake (by path,
    /// it said 0 there).
    pub fn store_bytes(&self) -> u64 {
        self.db.stored_bytes()
    }

    /// Whether a browser origin may connect. Requests without `Origin` are not from a
    /// browser and always may; with an allow-list, exactly its origins may. Without one,
    /// any origin may when credentials are required (a page gets no further than they
    /// let it); without credentials only pages served from this machine may, because
    /// browsers apply no CORS to WebSockets: any site the user visits could otherwise read
    /// and write the whole store.
    ///
    /// A header that is not an origin ([`Origin::parse`]) is refused, except where any origin
    /// may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.origins.is_empty() && self.auth.required() {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        if !self.origins.is_empty() {
            return self.origins.contains(&origin);
        }
        origin.is_loopback()
    }

    /// Whether a request addressed to `host` (its `Host` header) is served. A relay without
    /// authentication on loopback answers only requests addressed to a loopback name:
    /// another name that resolves to 127.0.0.1 is a DNS rebinding attack, a page of that
    /// site taking the relay for its own origin. A request without a host (not a browser)
    /// is served.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        !self.loopback_hosts_only
            || host.is_none_or(|h| RequestHost::parse(h).is_some_and(|h| h.host.is_loopback()))
    }
}
