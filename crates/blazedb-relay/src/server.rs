//! [`Relay`]: opening the store, binding the listeners, accepting connections, shutting down.
//!
//! ```text
//!  Relay::bind ── checks the configuration (auth, rules, TLS, addresses), opens the store
//!              └─ binds: HTTP(S) listener, optional raw TCP(+TLS) listener, optional Unix socket
//!  Relay::run  ── one accept loop per listener; each accepted connection takes a slot
//!              │  (Limits::connections_max) or is refused at once (HTTP: 503)
//!              ├─ HTTP: TLS handshake (timeout) ─► hyper HTTP/1.1 ─► router (crate::http)
//!              ├─ TCP:  TLS handshake (timeout) ─► sync session, token in HELLO
//!              └─ Unix: sync session, token in HELLO
//!     shutdown ─► stop accepting, sessions say goodbye (ERROR SHUTTING_DOWN), HTTP connections
//!                 finish their request; wait up to SHUTDOWN_GRACE_MS
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use blazedb::{Database, OpenOptions};
use blazedb_net::transport::plaintext;
use blazedb_net::transport::tls::ServerTls;
use blazedb_net::CredentialRecheck;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tower_service::Service;

use crate::auth::Authenticator;
use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::forwarded::{TrustedProxies, TrustedProxy};
use crate::http::{router, ClientAddress, ConnectionSlot};
use crate::limits::{
    AUTH_FAILURE_WINDOW_MS_MAX, CLOSE_LOG_WINDOW_MS, CREDENTIAL_FILE_CHECK_INTERVAL_MS,
    HTTP_HEAD_BYTES_MAX, HTTP_KEEPALIVE_IDLE_MS, ORIGINS_MAX, RULES_FILE_CHECK_INTERVAL_MS,
    SHUTDOWN_GRACE_MS, STORE_CHECK_INTERVAL_MS, STORE_FILE_NAME, TRUSTED_PROXIES_MAX,
};
use crate::metrics::Transport;
use crate::origin::Origin;
use crate::rules::Rules;
use crate::session::Caller;
use crate::slots::{Refused, Slot};
use crate::state::State;

/// A relay whose listeners are bound; [`Relay::run`] serves until shutdown.
pub struct Relay {
    state: Arc<State>,
    http: TcpListener,
    http_addr: SocketAddr,
    tcp: Option<(TcpListener, SocketAddr)>,
    unix: Option<(UnixListener, PathBuf)>,
    tls_http: Option<ServerTls>,
    tls_tcp: Option<ServerTls>,
    /// How often [`Relay::run`] collects garbage (zero: never).
    gc_interval: Duration,
    /// What each GC run is told (the peer retention).
    gc_options: blazedb::GcOptions,
    gc: Arc<crate::gc::GcCounters>,
    /// What looks wrong in a configuration that works ([`Rules::warnings`]).
    warnings: Vec<String>,
    /// The rules file, read again when it changes.
    rules_file: Option<PathBuf>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("http_addr", &self.http_addr)
            .field("tcp_addr", &self.tcp_addr())
            .field("unix", &self.unix.as_ref().map(|(_, p)| p))
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Check the configuration, open the store and bind the listeners. Every configuration
    /// error (rules, keys, certificates, addresses in use) is reported here, before any
    /// client connects.
    pub async fn bind(config: RelayConfig) -> Result<Relay, RelayError> {
        let auth = Authenticator::from_config(&config)?;
        check_anonymous(&config, &auth)?;
        check_limits(&config.limits)?;
        let rules = match &config.rules {
            Some(path) => Rules::load(path)?,
            None => Rules::allow_all(),
        };
        let origins = origins(&config.origins)?;
        let trusted_proxies = trusted_proxies(&config.trusted_proxies)?;
        let tls_tcp = config
            .tls
            .as_ref()
            .map(crate::tls::server_tls)
            .transpose()?;
        let tls_http = tls_tcp.as_ref().map(|t| t.with_alpn(&[b"http/1.1"]));

        // Owner-only when created; refused when another user could change what is in it.
        let dir_warnings = crate::data_dir::prepare(&config.data_dir)?;
        let path = config.data_dir.join(STORE_FILE_NAME);
        let found = StoreFound::look(&path)?;
        let options = OpenOptions {
            password: config.password.as_ref().map(|p| p.expose().to_owned()),
            create: true,
            history: config.history.clone(),
            ..OpenOptions::default()
        };
        let open = |options| {
            Database::open(&path, options).map_err(|source| RelayError::Store {
                path: path.clone(),
                source,
            })
        };
        let db = open(options.clone())?;
        if let Some(event) = found.created_event(&path, db.node_id()) {
            crate::log::line(event);
        }
        if let Some(from) = db.upgraded_from() {
            // Silent otherwise, and one-way: an older relay refuses the store from now on.
            crate::log::line(serde_json::json!({
                    "event": "store_upgraded",
                    "path": path.display().to_string(),
                    "from_format": from,
                    "to_format": blazedb::limits::FORMAT_VERSION,
                    "backup": db.upgrade_backup().map(|b| b.display().to_string()),
                    "note": format!(
                        "relay builds that read only up to storage format {from} can no \
                         longer open this store; to go back, stop the relay and put the copy \
                         kept before the upgrade (backup) in its place; delete the copy once \
                         going back is no longer wanted (README, \"Upgrading\")"
                    ),
            }));
        }
        if let Some(old) = db.copied_from() {
            // The store is a copy of another file (restored as a new file, moved to another
            // disk): a new node id, which every client notices as a new relay.
            crate::log::line(serde_json::json!({
                "event": "store_copied",
                "path": path.display().to_string(),
                "node": db.node_id().to_string(),
                "copied_from_node": old.to_string(),
                "note": "this store is a copy of another database file, so it now syncs as a \
                         node of its own; every client sends it, and receives from it, the \
                         whole data set once. To bring a backup back as the same relay, copy \
                         it over relay.db in place (README, \"A copy of a database file\")",
            }));
        }
        db.set_server_role(true);
        // `/v1/query` reads through a handle of its own: a query scans with its handle
        // locked (a filter no index serves reads the whole collection), and on the sessions'
        // handle every client's sync would wait for it. WAL lets the two connections read
        // and write side by side.
        let query_db = open(options)?;

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RelayError::Bind {
                    addr: addr.to_string(),
                    source,
                })
        };
        let http = bind(config.listen).await?;
        let http_addr = http.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let tcp = match config.tcp_listen {
            Some(addr) => {
                let l = bind(addr).await?;
                let a = l.local_addr().map_err(|source| RelayError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
                Some((l, a))
            }
            None => None,
        };
        let unix = match &config.unix {
            Some(path) => Some((bind_unix(path)?, path.clone())),
            None => None,
        };
        let mut warnings = rules.warnings(
            auth.required(),
            &db.collections().map_err(|source| RelayError::Store {
                path: path.clone(),
                source,
            })?,
        );
        warnings.extend(exposure_warnings(&config, &auth, http_addr));
        warnings.extend(trusted_proxy_warnings(&config.trusted_proxies));
        warnings.extend(open_files_warning(
            raise_open_files_limit(),
            config.limits.connections_max,
        ));
        for w in dir_warnings.iter().chain(&warnings) {
            crate::log::line(serde_json::json!({ "event": "config_warning", "message": w }));
        }
        let state = Arc::new(
            State::new(
                Arc::new(db),
                Arc::new(query_db),
                auth,
                rules,
                config.limits.clone(),
                origins,
                http_addr.ip().is_loopback(),
            )
            .with_trusted_proxies(trusted_proxies),
        );
        // The GC task counts its failures into the relay's metrics.
        let gc = Arc::new(crate::gc::GcCounters {
            failures_by_cause: state.metrics.gc_failures.clone(),
            ..crate::gc::GcCounters::default()
        });
        Ok(Relay {
            state,
            http,
            http_addr,
            tcp,
            unix,
            tls_http,
            tls_tcp,
            gc_interval: Duration::from_millis(crate::gc::GC_INTERVAL_MS_DEFAULT),
            gc_options: blazedb::GcOptions::default(),
            gc,
            warnings,
            rules_file: config.rules.clone(),
        })
    }

    /// What looked wrong in a configuration that works, one sentence each (also printed
    /// on stderr as `config_warning` events): rules that read `$auth` without
    /// authentication, collections of the store no rule table names, serving without
    /// credentials beyond what the operator may think (`--danger-allow-anonymous`, a Unix
    /// socket beside the loopback listener), an open-files limit below `--max-connections`,
    /// a `--trusted-proxy` range of every address.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Collect garbage every `interval` while running (default
    /// [`GC_INTERVAL_MS_DEFAULT`](crate::gc::GC_INTERVAL_MS_DEFAULT)); zero disables it.
    pub fn set_gc_interval(&mut self, interval: Duration) {
        self.gc_interval = interval;
    }

    /// A client not heard from for `retention` no longer holds GC back (default
    /// [`PEER_RETENTION_MS_DEFAULT`](blazedb::limits::PEER_RETENTION_MS_DEFAULT), 30 days):
    /// until then, a client that synced once and never came back keeps every tombstone made
    /// since on the relay. If it returns later, it starts over from a snapshot.
    pub fn set_peer_retention(&mut self, retention: Duration) {
        self.gc_options.peer_retention_ms = retention.as_millis().try_into().unwrap_or(u64::MAX);
    }

    /// Totals of the GC runs so far.
    pub fn gc_counters(&self) -> Arc<crate::gc::GcCounters> {
        self.gc.clone()
    }

    /// The HTTP/WebSocket address (with the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The raw TCP address, when `tcp_listen` was configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|(_, a)| *a)
    }

    /// Whether HTTP and TCP are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls_http.is_some()
    }

    /// The relay's store (tests and embedding applications read it directly).
    pub fn database(&self) -> Arc<Database> {
        self.state.db.clone()
    }

    /// Serve until `shutdown` completes, then stop accepting, let sessions say goodbye and
    /// wait (at most [`SHUTDOWN_GRACE_MS`] plus the sessions' linger) for connections to end.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let Relay {
            state,
            http,
            tcp,
            unix,
            tls_http,
            tls_tcp,
            gc_interval,
            gc_options,
            gc,
            rules_file,
            ..
        } = self;
        // Commits from every session leave the WAL to this, off their path; it stops when
        // `run` returns.
        let _checkpoints = blazedb_net::spawn_checkpointer(
            state.db.clone(),
            Duration::from_millis(blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT),
        );
        // Tombstones and other metadata every client has seen; stops when `run` returns.
        let _gc = crate::gc::spawn_gc(state.db.clone(), gc_interval, gc_options, gc);
        // Before the first connection is accepted: every session subscribes to it. Stops
        // when the relay (its state) is dropped.
        let heads = blazedb_net::head_watch::HeadWatch::spawn(state.db.clone());
        if let Some(error) = heads.file_watch_error() {
            // Not fatal: other processes' writes to the store reach clients by the poll.
            crate::log::line(
                serde_json::json!({ "event": "file_watch_unavailable", "error": error }),
            );
        }
        let _ = state.head_watch.set(heads);
        crate::log::line(started_event(&state));
        if let Some(tls) = tls_tcp.clone() {
            state.tasks.spawn(watch_tls_files(state.clone(), tls));
        }
        let st = state.clone();
        state.tasks.spawn(accept_http(st, http, tls_http));
        if let Some((l, _)) = tcp {
            state.tasks.spawn(accept_tcp(state.clone(), l, tls_tcp));
        }
        let unix_path = unix.as_ref().map(|(_, p)| p.clone());
        if let Some((l, _)) = unix {
            state.tasks.spawn(accept_unix(state.clone(), l));
        }
        state.tasks.spawn(end_log_windows(state.clone()));
        state.tasks.spawn(watch_store(state.clone()));
        state.tasks.spawn(watch_credential_file(state.clone()));
        if let Some(path) = rules_file {
            state.tasks.spawn(watch_rules_file(state.clone(), path));
        }
        shutdown.await;
        state.shutdown.cancel();
        state.tasks.close();
        let grace =
            Duration::from_millis(SHUTDOWN_GRACE_MS + blazedb_net::limits::LINGER_MS_DEFAULT);
        let _ = tokio::time::timeout(grace, state.tasks.wait()).await;
        // What the last, shorter, window left out of the log, sessions ended by the
        // shutdown included.
        state.end_log_window();
        if let Some(p) = unix_path {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// The `relay_started` log line: who the relay is and how it is set up. What `/health` showed
/// anyone until 2026-12-07 (the node id, the kind of authentication, whether rules are in
/// force) is for the operator, who reads the log; with the store's path and the process id,
/// which saving a deleted store needs (`/proc/PID/fd`).
fn started_event(state: &State) -> serde_json::Value {
    serde_json::json!({
        "event": "relay_started",
        "version": env!("CARGO_PKG_VERSION"),
        "node": state.db.node_id().to_string(),
        "auth": state.auth.kind_name(),
        "rules": state.rules().is_restricted(),
        "store": state.db.path().display().to_string(),
        "pid": std::process::id(),
    })
}

/// Start a relay and serve until `shutdown` completes: [`Relay::bind`] then [`Relay::run`].
pub async fn serve(
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    Relay::bind(config).await?.run(shutdown).await
}

/// What was at the store's path before the relay opened it.
#[derive(Debug, PartialEq)]
enum StoreFound {
    /// Nothing: the relay creates its store.
    Missing,
    /// A file of 0 bytes with no write-ahead log holding anything beside it: what the
    /// creation of a store leaves when it is killed before its first commit. The relay
    /// creates its store there, and says so (a store that held data and was truncated to 0
    /// bytes looks the same, and the operator is the one who can tell).
    Empty,
    /// A store (or something else, which the open judges).
    Existing,
}

impl StoreFound {
    /// Look at `path`. A 0-byte file with a non-empty `-wal` beside it is refused: the file
    /// was cut (its last commits may be in the log), and creating a store there would take
    /// the log for a log of the new store or remove it.
    fn look(path: &std::path::Path) -> Result<StoreFound, RelayError> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(StoreFound::Missing);
        };
        if !meta.is_file() || meta.len() > 0 {
            return Ok(StoreFound::Existing);
        }
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        match std::fs::metadata(&wal) {
            Ok(w) if w.len() > 0 => Err(RelayError::StoreTruncated {
                path: path.to_owned(),
                wal_bytes: w.len(),
            }),
            _ => Ok(StoreFound::Empty),
        }
    }

    /// The log line for a store the relay has just created at `path` (none for one that
    /// was there): when the relay came up with a new, empty store and a new node id, the
    /// log says so, and why.
    fn created_event(&self, path: &std::path::Path, node: blazedb::NodeId) -> Option<String> {
        let path = path.display().to_string();
        let event = match self {
            StoreFound::Existing => return None,
            StoreFound::Missing => serde_json::json!({
                "event": "store_created",
                "path": path,
                "node": node.to_string(),
            }),
            StoreFound::Empty => serde_json::json!({
                "event": "store_created",
                "path": path,
                "node": node.to_string(),
                "warning": format!(
                    "{path} was an empty file (0 bytes), which is what creating a store \
                     leaves when it is killed before its first commit: a new, empty store \
                     was created in it, with a new node id. If this relay held data before, \
                     the file was truncated: stop the relay and restore {path} from a \
                     backup (clients keep their data and send it again)"
                ),
            }),
        };
        Some(event.to_string())
    }
}

/// Without authentication, only loopback addresses (and Unix sockets) may be served, unless
/// the operator said `--danger-allow-anonymous`.
fn check_anonymous(config: &RelayConfig, auth: &Authenticator) -> Result<(), RelayError> {
    if auth.required() || config.danger_allow_anonymous {
        return Ok(());
    }
    let exposed = std::iter::once(config.listen)
        .chain(config.tcp_listen)
        .find(|a| !a.ip().is_loopback());
    match exposed {
        None => Ok(()),
        Some(a) => Err(RelayError::Config(format!(
            "no authentication is configured and {a} is reachable from other machines: pass \
             --token-file, --jwt-secret-file or --jwt-public-key (or \
             --danger-allow-anonymous to let anyone who can reach it read and write)"
        ))),
    }
}

/// What the operator may not know they are exposing, said at startup: serving everyone
/// who can reach a non-loopback address (`--danger-allow-anonymous`), and a Unix socket
/// taken for the only way in while the loopback HTTP listener serves every local user
/// without credentials (security audit, 2026-12-07, F4 and F9).
fn exposure_warnings(config: &RelayConfig, auth: &Authenticator, http: SocketAddr) -> Vec<String> {
    let mut warnings = Vec::new();
    if auth.required() {
        return warnings;
    }
    let exposed: Vec<String> = std::iter::once(http)
        .chain(config.tcp_listen)
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    if config.danger_allow_anonymous && !exposed.is_empty() {
        warnings.push(format!(
            "serving without authentication on {} (--danger-allow-anonymous): anyone who \
             can reach it reads and writes whatever the rules allow, and every client's \
             data passes there; give --token or --jwt-secret/--jwt-public-key to require \
             credentials",
            exposed.join(", ")
        ));
    }
    if let Some(unix) = config.unix.as_ref().filter(|_| http.ip().is_loopback()) {
        warnings.push(format!(
            "the Unix socket {} is owner-only, but without credentials the relay also \
             serves every local user through http://{http} (loopback answers anyone on this \
             machine): give --token or --jwt-secret/--jwt-public-key to require credentials \
             on every way in",
            unix.display()
        ));
    }
    warnings
}

/// Raise the soft limit on open files to the hard one, as servers that hold many
/// connections do (Go's runtime does it for every program): the usual soft limit of 1,024
/// would refuse connections far below the default `--max-connections` of 10,000, each of
/// which is a descriptor. Returns the limit now in force, `None` where it cannot be read.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if soft < hard {
        // Best effort: the limit stays as it was when raising it fails.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.or(Some(u64::MAX))
}

/// Descriptors the relay needs besides one per connection: its store's files (two handles,
/// each with the file and its WAL, and the shared memory), listeners, the log, TLS files.
const OPEN_FILES_BESIDES_CONNECTIONS: u64 = 64;

/// A warning when the open-files limit is below what `connections_max` connections need:
/// past it, accepting fails (`EMFILE`) and even `/health` goes unanswered.
fn open_files_warning(limit: Option<u64>, connections_max: usize) -> Option<String> {
    let limit = limit?;
    let needed = connections_max as u64 + OPEN_FILES_BESIDES_CONNECTIONS;
    (limit < needed).then(|| {
        format!(
            "the limit on open files is {limit}, which allows about {} connections, fewer \
             than the {connections_max} of --max-connections: raise it (`ulimit -n {needed}` \
             before starting, as root for more than the hard limit, or LimitNOFILE={needed} \
             in a systemd unit), or lower --max-connections",
            limit.saturating_sub(OPEN_FILES_BESIDES_CONNECTIONS)
        )
    })
}

/// Limits that would leave the relay useless or busy are refused at startup rather than
/// discovered by clients: no connection slot at all, sessions doing little but ping, or an
/// idle timeout that ends sessions whose peers are alive but quiet.
fn check_limits(limits: &crate::config::Limits) -> Result<(), RelayError> {
    use blazedb::limits::PING_INTERVAL_MS_MIN;
    let (ping, idle) = (limits.ping_interval_ms, limits.idle_timeout_ms);
    if limits.connections_max == 0 {
        return Err(RelayError::Config(
            "--max-connections 0 would refuse every connection: allow at least 1".into(),
        ));
    }
    if ping < PING_INTERVAL_MS_MIN {
        return Err(RelayError::Config(format!(
            "a ping interval of {ping} ms is too short: give at least {PING_INTERVAL_MS_MIN} ms"
        )));
    }
    if idle <= ping {
        return Err(RelayError::Config(format!(
            "an idle timeout of {idle} ms must be longer than the ping interval ({ping} ms), or \
             a live client that is only pinging is taken for dead: give a few times the ping \
             interval"
        )));
    }
    let window = limits.auth_failure_window_ms;
    if limits.auth_failures_per_address_max > 0
        && !(1..=AUTH_FAILURE_WINDOW_MS_MAX).contains(&window)
    {
        return Err(RelayError::Config(format!(
            "an authentication failure window of {window} ms is out of range: give 1 to \
             {AUTH_FAILURE_WINDOW_MS_MAX} ms, or turn the failure limit off \
             (--max-auth-failures-per-address 0)"
        )));
    }
    Ok(())
}

fn origins(list: &[String]) -> Result<Vec<Origin>, RelayError> {
    if list.len() > ORIGINS_MAX {
        return Err(RelayError::Config(format!(
            "{} origins given, at most {ORIGINS_MAX} are allowed",
            list.len()
        )));
    }
    list.iter()
        .map(|o| {
            Origin::parse(o).ok_or_else(|| {
                RelayError::Config(format!(
                    "origin {o:?} must look like scheme://host[:port] (https://app.example.com, \
                     tauri://localhost, chrome-extension://ID) or be null (pages from file://), \
                     with no path"
                ))
            })
        })
        .collect()
}

fn trusted_proxies(list: &[TrustedProxy]) -> Result<TrustedProxies, RelayError> {
    if list.len() > TRUSTED_PROXIES_MAX {
        return Err(RelayError::Config(format!(
            "{} trusted proxies given, at most {TRUSTED_PROXIES_MAX} are allowed: name \
             ranges (10.0.0.0/8) rather than each address",
            list.len()
        )));
    }
    Ok(TrustedProxies::new(list))
}

/// A trusted range that holds every address (`0.0.0.0/0`, `::/0`) lets every client name
/// its own address in `X-Forwarded-For`, and so step out of the per-address failure limit
/// with each request: said at startup, since it works and looks like a shortcut.
fn trusted_proxy_warnings(list: &[TrustedProxy]) -> Vec<String> {
    list.iter()
        .filter(|p| p.is_everyone())
        .map(|p| {
            format!(
                "--trusted-proxy {p} trusts every client of that address family: any of them \
                 can name its own address in X-Forwarded-For, escaping the per-address limit \
                 on wrong credentials and appearing in the log as whoever it likes; name the \
                 proxies' own addresses or network instead (e.g. 10.0.0.0/8)"
            )
        })
        .collect()
}

fn bind_unix(path: &std::path::Path) -> Result<UnixListener, RelayError> {
    // Replaces only a dead relay's socket file: never a live one, never a file that is not
    // a socket (`--unix DATA/relay.db` would otherwise unlink the open store).
    blazedb_net::transport::listen::bind_unix_replacing_stale(path).map_err(|source| {
        RelayError::BindUnix {
            path: path.to_owned(),
            source,
        }
    })
}

/// End a window of the throttled log (`session_closed`, `request_refused`,
/// `connection_refused`) every [`CLOSE_LOG_WINDOW_MS`], printing what it left out, until
/// shutdown (which ends the last one itself).
async fn end_log_windows(state: Arc<State>) {
    let window = Duration::from_millis(CLOSE_LOG_WINDOW_MS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => state.end_log_window(),
        }
    }
}

/// Call `look` every `interval_ms`, the first time at once, until shutdown: the relay's
/// periodic looks at its store and at the files it reads again when they change.
async fn every(state: &State, interval_ms: u64, mut look: impl FnMut()) {
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => look(),
        }
    }
}

/// Look whether the store can take writes every [`STORE_CHECK_INTERVAL_MS`] (logging a
/// change: `store_watch.rs`), until shutdown. The first look is at once: a relay started on a
/// full disk says so.
async fn watch_store(state: Arc<State>) {
    every(&state, STORE_CHECK_INTERVAL_MS, || {
        state.check_store();
    })
    .await;
}

/// Look at the TLS files every `TLS_FILES_CHECK_INTERVAL_MS` until shutdown: a renewed
/// certificate is served from the next handshake on; changed revocation lists are read at
/// once and every open session's certificate judged again (one now revoked ends,
/// `session.rs`). Each change is logged (`TlsFilesEvent::to_json`).
async fn watch_tls_files(state: Arc<State>, tls: ServerTls) {
    let report = |event: blazedb_net::transport::tls::TlsFilesEvent| {
        crate::log::line(event.to_json());
    };
    tls.watch_files(state.shutdown.child_token(), report).await;
}

/// Read the credential file (`--token-file`, `--jwt-secret-file` or `--jwt-public-key`) again
/// when it changes (`Authenticator::reload_credentials`), every
/// [`CREDENTIAL_FILE_CHECK_INTERVAL_MS`], until shutdown. Each reading is logged, never with a
/// secret: `tokens_reloaded` / `jwt_secrets_reloaded` / `jwt_keys_reloaded` with how many the
/// file holds (`tokens`, `secrets`, `keys`), or `tokens_unusable` / `jwt_secrets_unusable` /
/// `jwt_keys_unusable` with why — the credentials read before stay accepted. Without a
/// credential file it returns at once.
async fn watch_credential_file(state: Arc<State>) {
    let Some(kind) = state.auth.credential_file() else {
        return;
    };
    every(&state, CREDENTIAL_FILE_CHECK_INTERVAL_MS, || {
        match state.auth.reload_credentials() {
            None => {}
            Some(Ok(count)) => {
                let mut line = serde_json::json!({ "event": kind.reloaded_event() });
                line[kind.plural()] = count.into();
                crate::log::line(line);
            }
            Some(Err(error)) => crate::log::line(serde_json::json!({
                "event": kind.unusable_event(),
                "error": format!(
                    "{error}; the {} read before are still accepted",
                    kind.plural()
                ),
            })),
        }
    })
    .await;
}

/// Read the rules file again when it changes, every [`RULES_FILE_CHECK_INTERVAL_MS`], until
/// shutdown. New rules that load are put in force: queries use them at once, and every sync
/// session ends (`SHUTTING_DOWN`, `session.rs::RULES_CHANGED_GOODBYE`) so that its client, reconnecting,
/// is served under them — what it may read may have widened (the session then sends what
/// became readable) or narrowed, and a session's access is fixed when it starts. Logged
/// `rules_reloaded`, with the new rules' warnings. A file that does not load (half-written,
/// a bad expression, gone) is logged `rules_unusable` and changes nothing: the rules read
/// before stay in force. A file touched but unchanged ends no session.
async fn watch_rules_file(state: Arc<State>, path: PathBuf) {
    use blazedb_net::file_stamp::file_stamp;
    let mut stamp = file_stamp(&path);
    // The text in force: what the relay started with, then each text loaded.
    let mut in_force = std::fs::read(&path).ok();
    every(&state, RULES_FILE_CHECK_INTERVAL_MS, || {
        let now = file_stamp(&path);
        if now == stamp {
            return;
        }
        stamp = now;
        let text = std::fs::read(&path).ok();
        if text.is_some() && text == in_force {
            return;
        }
        let loaded = Rules::load(&path).and_then(|rules| {
            let collections = state.db.collections().map_err(|source| RelayError::Store {
                path: state.db.path().to_owned(),
                source,
            })?;
            Ok((rules.warnings(state.auth.required(), &collections), rules))
        });
        match loaded {
            Ok((warnings, rules)) => {
                state.replace_rules(rules);
                in_force = text;
                crate::log::line(serde_json::json!({
                    "event": "rules_reloaded",
                    "path": path.display().to_string(),
                    "warnings": warnings,
                }));
            }
            Err(e) => crate::log::line(serde_json::json!({
                "event": "rules_unusable",
                "error": format!("{e}; the rules read before stay in force"),
            })),
        }
    })
    .await;
}

/// Pause after an accept error (e.g. out of file descriptors) instead of spinning.
async fn accept_backoff(e: &std::io::Error) {
    crate::log::line(serde_json::json!({"event": "accept_error", "error": e.to_string()}));
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn accept_http(state: Arc<State>, listener: TcpListener, tls: Option<ServerTls>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { accept_backoff(&e).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        // At the limit, a few more connections may still ask for `/health` or `/metrics`.
        let (slot, status_only) = match state.take_http_slot(peer.ip()) {
            Ok(taken) => taken,
            Err(why) => {
                let message = state.refusal_message(why);
                state
                    .tasks
                    .spawn(refuse_http(stream, tls.is_some(), why.code(), message));
                continue;
            }
        };
        let st = state.clone();
        let tls = tls.clone();
        state.tasks.spawn(async move {
            match tls {
                None => serve_http(st, stream, slot, peer.ip(), status_only, None).await,
                Some(tls) => {
                    let handshake = Duration::from_millis(st.limits.handshake_timeout_ms);
                    let answer = plaintext::tls_required_http_response;
                    match tokio::time::timeout(
                        handshake,
                        plaintext::accept_tls(&tls.acceptor(), stream, answer),
                    )
                    .await
                    {
                        Ok(Ok(s)) => {
                            let recheck = tls.recheck(&s);
                            serve_http(st, s, slot, peer.ip(), status_only, recheck).await
                        }
                        Ok(Err(e)) => st.record_tls_failure(&e, peer.ip()),
                        Err(_) => {}
                    }
                }
            }
        });
    }
}

/// Answer a connection over a limit with `503` (plain HTTP) or just close it (TLS: a
/// handshake would cost what the limit protects).
async fn refuse_http(stream: tokio::net::TcpStream, tls: bool, code: &str, message: String) {
    if !tls {
        let body = serde_json::json!({ "code": code, "error": message }).to_string();
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        // Read what the client sent before closing: closed with its request unread, the
        // socket resets the connection, and the client may never read the 503 (its write
        // of the request even failed with a broken pipe: `blazedb-cli/tests/serve.rs` under
        // load).
        plaintext::answer_and_close(stream, response.as_bytes()).await;
    }
}

/// Serve HTTP/1.1 on one connection until it closes, is upgraded, or the relay shuts down.
/// A keep-alive connection idle for the idle timeout is closed, so idle HTTP clients cannot
/// hold connection slots forever (hyper's header timeout only starts with a request's first
/// byte).
///
/// `ip`: the TCP peer's address, which holds the connection slot; each request's client
/// address, for the failure limit and the log, is `ip` or, from a trusted proxy, the one its
/// `X-Forwarded-For` names ([`ClientAddress`]).
///
/// `status_only`: the connection holds a slot of the status reserve (the relay is at its
/// limit, refused for this reason): it may ask `/health` and `/metrics`, nothing else.
///
/// `client_certificate`: the TLS client certificate of the connection, judged again when the
/// revocation lists change; a sync session upgraded from it ends if it is revoked.
async fn serve_http<I>(
    state: Arc<State>,
    io: I,
    slot: Slot,
    ip: IpAddr,
    status_only: Option<Refused>,
    client_certificate: Option<CredentialRecheck>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = ConnectionSlot::new(slot, ip);
    let app = router(state.clone());
    let refusal = status_only.map(|why| (why, state.refusal_message(why)));
    let st = state.clone();
    // Requests being answered: the connection is not idle while one is, however long it
    // takes and whether or not bytes move meanwhile (a query computed for 7 s was cut off
    // with no answer, and went on being computed).
    let in_flight = Arc::new(AtomicU64::new(0));
    let answering = in_flight.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let busy = InFlight::new(&answering);
        // Per request, not per connection: a proxy may carry the requests of many clients
        // over one kept-alive connection.
        let client = st.trusted_proxies.client(ip, req.headers());
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ClientAddress(client));
        if let Some(certificate) = &client_certificate {
            req.extensions_mut().insert(certificate.clone());
        }
        let mut app = app.clone();
        let refused = refusal
            .clone()
            .filter(|_| !matches!(req.uri().path(), "/health" | "/metrics"));
        if let Some((why, _)) = &refused {
            st.record_refusal(*why, Some(client));
        }
        async move {
            let _busy = busy;
            match refused {
                Some((why, message)) => Ok(crate::http::error(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    why.code(),
                    message,
                )),
                None => app.call(req).await,
            }
        }
    });
    let (io, last_active) = ActivityIo::new(io, state.started);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(state.limits.handshake_timeout_ms))
        .max_buf_size(HTTP_HEAD_BYTES_MAX)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle_ms = state.limits.idle_timeout_ms.min(HTTP_KEEPALIVE_IDLE_MS);
    let mut check = tokio::time::interval(Duration::from_millis((idle_ms / 4).max(10)));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = state.shutdown.cancelled() => break,
            _ = check.tick() => {
                let now = state.started.elapsed().as_millis() as u64;
                let idle = in_flight.load(Ordering::Acquire) == 0
                    && now.saturating_sub(last_active.load(Ordering::Relaxed)) >= idle_ms;
                if idle {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), conn).await;
}

/// Counts a request as being answered from its arrival until its response future is done
/// (or dropped).
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(count: &Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A byte stream that records when it last moved bytes (ms since `epoch`).
struct ActivityIo<T> {
    inner: T,
    epoch: tokio::time::Instant,
    last: Arc<AtomicU64>,
}

impl<T> ActivityIo<T> {
    fn new(inner: T, epoch: tokio::time::Instant) -> (ActivityIo<T>, Arc<AtomicU64>) {
        let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let io = ActivityIo {
            inner,
            epoch,
            last: last.clone(),
        };
        (io, last)
    }

    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn accept_tcp(state: Arc<State>, listener: TcpListener, tls: Option<ServerTls>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { accept_backoff(&e).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = state.take_slot(Some(peer.ip())) else {
            continue; // dropped: closed at once
        };
        let st = state.clone();
        let tls = tls.clone();
        state.tasks.spawn(async move {
            match tls {
                None => {
                    let caller = Caller::address(peer.ip());
                    crate::session::run(st, stream, Transport::Tcp, None, slot, caller).await
                }
                Some(tls) => {
                    let handshake = Duration::from_millis(st.limits.handshake_timeout_ms);
                    let answer = plaintext::tls_required_frame;
                    match tokio::time::timeout(
                        handshake,
                        plaintext::accept_tls(&tls.acceptor(), stream, answer),
                    )
                    .await
                    {
                        Ok(Ok(s)) => {
                            let caller = Caller {
                                address: Some(peer.ip()),
                                certificate: tls.recheck(&s),
                            };
                            crate::session::run(st, s, Transport::Tcp, None, slot, caller).await
                        }
                        Ok(Err(e)) => st.record_tls_failure(&e, peer.ip()),
                        Err(_) => {}
                    }
                }
            }
        });
    }
}

async fn accept_unix(state: Arc<State>, listener: UnixListener) {
    loop {
        let (stream, _) = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { accept_backoff(&e).await; continue; }
            },
        };
        let Ok(slot) = state.take_slot(None) else {
            continue;
        };
        let st = state.clone();
        state.tasks.spawn(crate::session::run(
            st,
            stream,
            Transport::Unix,
            None,
            slot,
            Caller::default(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::{AuthConfig, RelayConfig};
    use crate::limits::QUERY_TURN_WAIT_MS;

    /// `--danger-allow-anonymous` on an address other machines reach is said at startup
    /// (worked out without binding it: tests bind loopback only); with credentials, or on
    /// loopback, nothing is said.
    #[test]
    fn serving_anonymously_beyond_loopback_is_warned_about() {
        let wide: SocketAddr = "0.0.0.0:7420".parse().unwrap();
        let config = RelayConfig {
            danger_allow_anonymous: true,
            tcp_listen: Some("192.0.2.1:7421".parse().unwrap()),
            ..RelayConfig::default()
        };
        let anonymous = Authenticator::from_config(&config).unwrap();
        let w = exposure_warnings(&config, &anonymous, wide);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "serving without authentication on 0.0.0.0:7420, 192.0.2.1:7421 \
                 (--danger-allow-anonymous): anyone who can reach it reads and writes"
            ),
            "{w:?}"
        );
        let loopback: SocketAddr = "127.0.0.1:7420".parse().unwrap();
        let local = RelayConfig {
            tcp_listen: None,
            ..config.clone()
        };
        assert!(exposure_warnings(&local, &anonymous, loopback).is_empty());
        let with_token = RelayConfig {
            auth: AuthConfig::Token("a-token-of-some-length".into()),
            ..config
        };
        let checked = Authenticator::from_config(&with_token).unwrap();
        assert!(exposure_warnings(&with_token, &checked, wide).is_empty());
    }

    /// A trusted proxy range of every address is said at startup; more entries than
    /// `TRUSTED_PROXIES_MAX` are refused.
    #[test]
    fn trusting_every_address_is_warned_about_and_too_many_proxies_refused() {
        let p = |s: &str| s.parse::<TrustedProxy>().unwrap();
        assert!(trusted_proxy_warnings(&[p("10.0.0.0/8"), p("::1")]).is_empty());
        let w = trusted_proxy_warnings(&[p("10.0.0.0/8"), p("0.0.0.0/0"), p("::/0")]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("--trusted-proxy 0.0.0.0/0 trusts every client")
                && w[1].starts_with("--trusted-proxy ::/0 trusts every client"),
            "{w:?}"
        );
        let many = vec![p("10.0.0.1"); TRUSTED_PROXIES_MAX + 1];
        let e = trusted_proxies(&many).unwrap_err().to_string();
        assert!(e.contains("257 trusted proxies given, at most 256"), "{e}");
        assert!(trusted_proxies(&many[1..]).is_ok());
    }

    /// The open-files warning: said below what the connections need, with the numbers.
    #[test]
    fn an_open_files_limit_below_the_connections_is_warned_about() {
        assert_eq!(open_files_warning(None, 10_000), None);
        assert_eq!(open_files_warning(Some(10_064), 10_000), None);
        let w = open_files_warning(Some(1_024), 10_000).unwrap();
        assert!(
            w.starts_with("the limit on open files is 1024, which allows about 960 connections"),
            "{w}"
        );
    }

    /// Reads one HTTP/1.1 response with a `content-length` from `s`: its status and body.
    async fn response(s: &mut TcpStream) -> (u16, String) {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.expect("the connection stays open");
            assert!(n > 0, "the relay closed the connection without an answer");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..length].to_owned());
            }
        }
    }

    /// A query that waits longer than an idle keep-alive connection may live is answered,
    /// not cut off: the connection counts as busy while a request is being answered. (A query
    /// computed for 7 s was dropped without an answer, HTTP_KEEPALIVE_IDLE_MS and then
    /// SHUTDOWN_GRACE_MS after its last byte moved, and went on being computed.) One that
    /// cannot get its turn on the query handle within QUERY_TURN_WAIT_MS is `503 busy`, and
    /// the next one on the same connection is answered once the turn is free; the 503 is
    /// counted in `requests_refused_total{reason="busy"}`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_waiting_longer_than_the_keepalive_idle_time_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let config = RelayConfig {
            data_dir: dir.path().join("relay"),
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: AuthConfig::Token("query-turn-token".into()),
            ..RelayConfig::default()
        };
        let relay = Relay::bind(config).await.unwrap();
        relay.database().insert("bugs", [("n", 1)]).unwrap();
        let (addr, state) = (relay.local_addr(), relay.state.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(relay.run(async move { s.cancelled().await }));

        // Another query holds the turn, for longer than the idle time and its grace.
        let held = state.query_turn.acquire().await.unwrap();
        const { assert!(QUERY_TURN_WAIT_MS > HTTP_KEEPALIVE_IDLE_MS + SHUTDOWN_GRACE_MS) };
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let body = r#"{"collection": "bugs"}"#;
        let request = format!(
            "POST /v1/query HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer query-turn-token\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let started = tokio::time::Instant::now();
        let (status, text) = response(&mut conn).await;
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("\"busy\"") && text.contains("retry"),
            "{text}"
        );
        assert!(started.elapsed() >= Duration::from_millis(QUERY_TURN_WAIT_MS - 100));
        // Counted, and logged with it (`http::log_refusal`): before, a relay turning queries
        // away as busy said so nowhere.
        assert!(
            state
                .metrics
                .encode()
                .contains("blazedb_relay_requests_refused_total{reason=\"busy\"} 1\n"),
            "{}",
            state.metrics.encode()
        );

        drop(held);
        conn.write_all(request.as_bytes()).await.unwrap();
        let (status, text) = response(&mut conn).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"n\":1"), "{text}");

        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
