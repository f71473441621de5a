//! The server side of the stream transports: accept TCP (optionally TLS) and Unix socket
//! connections and run one sync session per connection for one database
//! (`blazedb listen DB --tcp ADDR`).
//!
//! ```text
//!  TcpListener ──┐                    ┌─► (TLS handshake, bounded) ─► run_session ─┐
//!  UnixListener ─┴─► supervisor task ─┤                                            ├─► ListenEvent
//!                    (≤ connections_max)└─► run_session ... one task per connection ─┘
//! ```
//!
//! The supervisor stops accepting while [`ListenConfig::connections_max`] sessions run (new
//! connections wait in the kernel's backlog). A peer is authenticated by its HELLO token
//! ([`TokenAuth`]) before anything else is exchanged. A TCP peer address that sent
//! [`ListenConfig::auth_failures_per_address_max`] wrong tokens within
//! [`ListenConfig::auth_failure_window_ms`] has its HELLOs refused with `RATE_LIMITED`,
//! unread, for that long (the relay's table, [`crate::auth_failures`], one per listener).
//! [`Listener::shutdown`] (or dropping the [`Listener`]) ends every session politely with
//! `SHUTTING_DOWN` and removes the Unix socket file.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blazedb::sync::SessionConfig;
use blazedb::Database;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::auth_failures::{self, AuthFailures};
use crate::checkpoint::{spawn_checkpointer, Checkpointer};
use crate::driver::{run_session, DriverOptions, SessionReport};
use crate::head_watch::HeadWatch;
use crate::limits::{
    ACCEPT_ERROR_PAUSE_MS, AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT, AUTH_FAILURE_WINDOW_MS_DEFAULT,
    AUTH_FAILURE_WINDOW_MS_MAX, CHECKPOINT_INTERVAL_MS_DEFAULT, LINGER_MS_DEFAULT,
    LISTEN_CONNECTIONS_MAX_DEFAULT, LISTEN_EVENTS_CAPACITY, TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
    UNIX_SOCKET_PATH_BYTES_MAX,
};
use crate::transport::tls::{ServerTls, TlsFilesEvent};
use crate::transport::{plaintext, BoxedStream, TlsServerOptions, TokenAuth, TransportError};

/// What [`listen`] listens on and how it serves.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// TCP address to listen on, e.g. `127.0.0.1:7421` (port 0 picks a free port; see
    /// [`Listener::tcp_addr`]).
    pub tcp: Option<String>,
    /// When set, TCP connections speak TLS (`tls://` URLs) with this certificate.
    pub tls: Option<TlsServerOptions>,
    /// Unix domain socket path to listen on. A stale socket file left by a process that
    /// died is replaced; one that a live process answers on is an error.
    pub unix: Option<PathBuf>,
    /// When set, peers must send this token in HELLO, or the session ends with
    /// `AUTH_FAILED` before any data flows. It replaces `session.access`.
    pub token: Option<String>,
    /// Wrong tokens one TCP peer address (an IPv6 /64) may send within
    /// `auth_failure_window_ms`; the one that reaches it makes the listener refuse that
    /// address's HELLOs for that long with `RATE_LIMITED`, without comparing their tokens
    /// (the relay's `--max-auth-failures-per-address`). 0: no limit. Only with `token`
    /// (custom `session.access` counts nothing); Unix socket peers are not counted.
    pub auth_failures_per_address_max: u32,
    /// The window of `auth_failures_per_address_max`, and how long an address that reached
    /// it is refused, in ms (1 to [`AUTH_FAILURE_WINDOW_MS_MAX`]).
    pub auth_failure_window_ms: u64,
    /// Settings of every session: mode, heartbeats (`ping_interval_ms`,
    /// `idle_timeout_ms`), batch size, and `access` for custom access control. `server` is
    /// always set.
    pub session: SessionConfig,
    /// Most sessions served at once.
    pub connections_max: usize,
    /// Limit for a client's TLS handshake, in ms, and again for its HELLO once the
    /// connection is up (TLS or not).
    pub handshake_timeout_ms: u64,
    /// How long an ending session keeps flushing its last frames, in ms.
    pub linger_ms: u64,
    /// Also wake sessions on commits made by other processes on the same file (polls the
    /// feed head; see [`crate::head_watch`]).
    pub watch_other_processes: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            tcp: None,
            tls: None,
            unix: None,
            token: None,
            auth_failures_per_address_max: AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT,
            auth_failure_window_ms: AUTH_FAILURE_WINDOW_MS_DEFAULT,
            session: SessionConfig::default(),
            connections_max: LISTEN_CONNECTIONS_MAX_DEFAULT,
            handshake_timeout_ms: TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
            linger_ms: LINGER_MS_DEFAULT,
            watch_other_processes: false,
        }
    }
}

/// Something that happened to one connection of a [`Listener`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ListenEvent {
    /// A connection was accepted; its session starts (after the TLS handshake).
    Accepted {
        /// Connection number, from 1.
        id: u64,
        /// The peer's address (`unix` for Unix sockets).
        remote: String,
    },
    /// A connection ended.
    Ended {
        /// Connection number.
        id: u64,
        /// The peer's address.
        remote: String,
        /// The session's report, if a session ran (not when the TLS handshake failed).
        report: Option<Box<SessionReport>>,
        /// Why it ended with an error (`None`: a clean end).
        error: Option<String>,
    },
    /// A TLS file changed ([`ServerTls::watch_files`]): a renewed certificate is served, or
    /// the new files or the revocation lists cannot be used (why).
    TlsFiles(TlsFilesEvent),
}

/// A running listener. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct Listener {
    tcp_addr: Option<SocketAddr>,
    tls: bool,
    unix_path: Option<PathBuf>,
    stop: CancellationToken,
    events: broadcast::Sender<ListenEvent>,
    active: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
    /// Checkpoints the WAL off the sessions' commits while the listener lives.
    _checkpoints: Checkpointer,
    /// [`HeadWatch::file_watch_error`] of the listener's head watch.
    file_watch_error: Option<String>,
}

impl Listener {
    /// Why commits to the database by other processes are noticed only by the head poll
    /// (the operating system refused to watch the file), said for the user; `None` when it
    /// watches or other processes are not watched for.
    pub fn file_watch_error(&self) -> Option<&str> {
        self.file_watch_error.as_deref()
    }

    /// The bound TCP address (with the real port when 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The Unix socket path.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_path.as_deref()
    }

    /// The URLs peers can use: `tcp://…` or `tls://…`, and `unix://…`.
    pub fn urls(&self) -> Vec<String> {
        let mut urls = Vec::new();
        if let Some(a) = self.tcp_addr {
            urls.push(format!("{}://{a}", if self.tls { "tls" } else { "tcp" }));
        }
        if let Some(p) = &self.unix_path {
            urls.push(crate::transport::endpoint::unix_url(p));
        }
        urls
    }

    /// Connection events from now on. A receiver that falls more than
    /// [`LISTEN_EVENTS_CAPACITY`] events behind misses the oldest (it is told so).
    pub fn events(&self) -> broadcast::Receiver<ListenEvent> {
        self.events.subscribe()
    }

    /// Sessions running now.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stop accepting, end every session with `SHUTTING_DOWN`, wait for them (each is
    /// bounded by its linger time) and remove the Unix socket file.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Listen for peers of `db` as `cfg` says, and serve each connection with its own session
/// until [`Listener::shutdown`].
///
/// ```no_run
/// # async fn f(db: std::sync::Arc<blazedb::Database>) -> Result<(), blazedb_net::transport::TransportError> {
/// use blazedb_net::transport::{listen, ListenConfig};
/// let listener = listen(db, ListenConfig {
///     tcp: Some("127.0.0.1:7421".into()),
///     token: Some("s3cret".into()),
///     ..ListenConfig::default()
/// }).await?;
/// println!("peers sync with {:?}", listener.urls());
/// # Ok(()) }
/// ```
pub async fn listen(db: Arc<Database>, cfg: ListenConfig) -> Result<Listener, TransportError> {
    if cfg.tcp.is_none() && cfg.unix.is_none() {
        return Err(TransportError::NoAddress);
    }
    if cfg.tls.is_some() && cfg.tcp.is_none() {
        // Not served in plain text without a word: TLS is spoken on the TCP address only.
        return Err(TransportError::TlsOptions(
            "TLS is served on the TCP address, and none is given: add one (the Unix socket is \
             local and plain)"
                .into(),
        ));
    }
    let window_ms = cfg.auth_failure_window_ms;
    let failure_limit = cfg.token.is_some() && cfg.auth_failures_per_address_max > 0;
    if failure_limit && !(1..=AUTH_FAILURE_WINDOW_MS_MAX).contains(&window_ms) {
        return Err(TransportError::ListenOptions(format!(
            "an authentication failure window of {window_ms} ms is out of range: give 1 to \
             {AUTH_FAILURE_WINDOW_MS_MAX} ms, or turn the failure limit off \
             (--max-auth-failures-per-address 0)"
        )));
    }
    let tls = cfg.tls.as_ref().map(|t| t.server_tls()).transpose()?;
    let tcp =
        match &cfg.tcp {
            Some(addr) => Some(TcpListener::bind(addr.as_str()).await.map_err(|source| {
                TransportError::Bind {
                    addr: addr.clone(),
                    source,
                }
            })?),
            None => None,
        };
    let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
    let unix = cfg.unix.as_deref().map(bind_unix).transpose()?;

    let mut session = cfg.session.clone();
    session.server = true;
    let token_auth = cfg.token.as_ref().map(|t| TokenAuth::new(t.clone()));
    if let Some(auth) = &token_auth {
        session.access = Some(Arc::new(auth.clone()));
    }
    let auth_failures = failure_limit.then(|| AuthFailureLimit {
        table: Arc::new(Mutex::new(AuthFailures::new(
            cfg.auth_failures_per_address_max,
            Duration::from_millis(window_ms),
        ))),
        window: Duration::from_millis(window_ms),
    });
    let (events, _) = broadcast::channel(LISTEN_EVENTS_CAPACITY);
    let stop = CancellationToken::new();
    let active = Arc::new(AtomicUsize::new(0));
    let checkpoints = spawn_checkpointer(
        db.clone(),
        Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT),
    );
    let heads = cfg
        .watch_other_processes
        .then(|| HeadWatch::spawn(db.clone()));
    let file_watch_error = heads
        .as_ref()
        .and_then(|h| h.file_watch_error().map(str::to_owned));
    let shared = Arc::new(Shared {
        db,
        session,
        token_auth,
        auth_failures,
        tls,
        handshake_timeout_ms: cfg.handshake_timeout_ms,
        linger_ms: cfg.linger_ms,
        stop: stop.clone(),
        events: events.clone(),
        active: active.clone(),
        next_id: AtomicU64::new(1),
        heads,
    });
    if let Some(tls) = shared.tls.clone() {
        // A renewed certificate is served without a restart, and sessions open with a
        // client certificate revoked since are ended; each change is an event.
        let (stop, events) = (stop.clone(), events.clone());
        tokio::spawn(async move {
            let report = |event| {
                let _ = events.send(ListenEvent::TlsFiles(event));
            };
            tls.watch_files(stop, report).await;
        });
    }
    let supervisor = Supervisor {
        shared,
        tcp,
        unix,
        unix_path: cfg.unix.clone(),
        connections_max: cfg.connections_max.max(1),
    };
    let task = tokio::spawn(supervisor.run());
    Ok(Listener {
        tcp_addr,
        tls: cfg.tls.is_some(),
        unix_path: cfg.unix,
        stop,
        events,
        active,
        task: Some(task),
        _checkpoints: checkpoints,
        file_watch_error,
    })
}

/// Bind a Unix socket, replacing a stale socket file that nobody answers on.
fn bind_unix(path: &Path) -> Result<UnixListener, TransportError> {
    bind_unix_replacing_stale(path).map_err(|source| TransportError::Bind {
        addr: crate::transport::endpoint::unix_url(path),
        source,
    })
}

/// Bind a Unix socket at `path`. A socket file left by a listener that died is replaced;
/// anything else already at `path` is left alone and refused: a live listener's socket
/// (`AddrInUse`), and above all a file that is not a socket (`AlreadyExists`), which may be
/// somebody's data (`--unix d/relay.db` must never unlink the store).
///
/// The socket is owner-only (mode 0600, see `bind_owner_only`): a Unix socket has no TLS,
/// so no client certificates, and a relay without credentials serves it anonymously, so who
/// may connect must not depend on the process umask. A token configured for the listener is
/// still required on it.
pub fn bind_unix_replacing_stale(path: &Path) -> std::io::Result<UnixListener> {
    // The socket is bound at a short staging path and linked into place, so a path too long
    // to connect to would bind without complaint, and every client fail.
    check_unix_path(path)?;
    match bind_owner_only(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let metadata = std::fs::symlink_metadata(path)?;
            if !metadata.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: choose another path",
                        path.display()
                    ),
                ));
            }
            // Only a refused connection proves the socket dead: any other failure (no
            // permission, a full backlog) may be a live listener's, whose path is not ours.
            match std::os::unix::net::UnixStream::connect(path) {
                Err(c) if c.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another process is listening on this socket: stop it, or give --unix \
                         another path",
                    ))
                }
                Err(c) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!(
                            "{} is a socket that may be in use (connecting to it failed: {c}): \
                             choose another path, or remove it if no listener uses it",
                            path.display()
                        ),
                    ))
                }
            }
            // Left behind by a listener that died without cleaning up.
            std::fs::remove_file(path)?;
            bind_owner_only(path)
        }
        other => other,
    }
}

/// A Unix socket `path` no longer than [`UNIX_SOCKET_PATH_BYTES_MAX`], or an error that
/// says so and what to do.
pub fn check_unix_path(path: &Path) -> std::io::Result<()> {
    let n = path.as_os_str().len();
    if n > UNIX_SOCKET_PATH_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the Unix socket path {} is {n} bytes, longer than the \
                 {UNIX_SOCKET_PATH_BYTES_MAX} a socket path may have: use a shorter path (a \
                 directory nearer the root, or a relative path from the current directory)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Bind a socket at `path` that only this user (and root) can connect to, with no moment
/// when it is reachable there with looser permissions: bound inside a fresh directory only
/// we can enter (0700) next to `path`, made 0600 there, then hard-linked to `path` (`link`
/// fails with `AlreadyExists` when something is there: nothing is ever replaced). `chmod`
/// after binding at `path` itself would leave a window in which the umask's mode applies.
///
/// The staging name is short (`.bz` and 8 hex digits, then `/s`), so a `path` close to the
/// 107-byte limit of socket paths still fits unless its file name is under 13 bytes.
fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A name taken already (one left by a crash, or a 1-in-4-billion draw) is drawn again:
    // its `AlreadyExists` must not be taken for one about `path`.
    let mut attempts = 0;
    let staging = loop {
        let staging = parent.join(format!(".bz{:08x}", rand::random::<u32>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&staging) {
            Ok(()) => break staging,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 3 => {
                attempts += 1;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    // Never `AlreadyExists`: the caller reads that as `path` being taken.
                    match e.kind() {
                        std::io::ErrorKind::AlreadyExists => std::io::ErrorKind::Other,
                        kind => kind,
                    },
                    format!(
                        "cannot create a private directory in {} to bind the socket in: {e}",
                        parent.display()
                    ),
                ));
            }
        }
    };
    let staged = staging.join("s");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&staged, path)?;
        Ok(listener)
    });
    // The socket stays reachable through `path`; the staging name goes either way.
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    bound
}

/// What every connection task needs.
struct Shared {
    db: Arc<Database>,
    /// The settings of a session; a TCP peer's gets an access of its own
    /// ([`Shared::session_for`]).
    session: SessionConfig,
    /// The token check, when a token is required.
    token_auth: Option<TokenAuth>,
    /// The wrong tokens per TCP peer address, when counted.
    auth_failures: Option<AuthFailureLimit>,
    tls: Option<ServerTls>,
    handshake_timeout_ms: u64,
    linger_ms: u64,
    stop: CancellationToken,
    events: broadcast::Sender<ListenEvent>,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
    heads: Option<HeadWatch>,
}

/// A listener's table of wrong tokens per peer address, and its window.
struct AuthFailureLimit {
    table: Arc<Mutex<AuthFailures>>,
    window: Duration,
}

impl Shared {
    /// The session settings for a peer at `peer` (none: a Unix socket): with a token and a
    /// failure limit, a TCP peer's wrong tokens count towards its address.
    fn session_for(&self, peer: Option<SocketAddr>) -> SessionConfig {
        let mut session = self.session.clone();
        if let (Some(auth), Some(limit), Some(peer)) = (&self.token_auth, &self.auth_failures, peer)
        {
            let access = auth
                .clone()
                .with_failure_limit(peer.ip(), limit.table.clone());
            session.access = Some(Arc::new(access));
        }
        session
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    unix_path: Option<PathBuf>,
    connections_max: usize,
}

/// A connection just accepted.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
    Failed,
}

impl Supervisor {
    async fn run(self) {
        let mut sessions = JoinSet::new();
        // Addresses whose window or refusal is over are forgotten once a window, so that
        // the table does not keep them until it fills.
        let sweep_every = self
            .shared
            .auth_failures
            .as_ref()
            .map_or(Duration::from_secs(3600), |l| l.window);
        let mut sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = sessions.len() < self.connections_max;
            let accepted = tokio::select! {
                _ = self.shared.stop.cancelled() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                now = sweep.tick(), if self.shared.auth_failures.is_some() => {
                    if let Some(limit) = &self.shared.auth_failures {
                        auth_failures::lock(&limit.table).forget_stale(now);
                    }
                    continue;
                }
                r = accept_tcp(self.tcp.as_ref()), if room && self.tcp.is_some() => r,
                r = accept_unix(self.unix.as_ref()), if room && self.unix.is_some() => r,
            };
            let shared = self.shared.clone();
            match accepted {
                Accepted::Tcp(socket, addr) => {
                    // Only a latency setting: a failure changes nothing about correctness.
                    let _ = socket.set_nodelay(true);
                    sessions.spawn(serve(shared, Incoming::Tcp(socket, addr)));
                }
                Accepted::Unix(socket) => {
                    sessions.spawn(serve(shared, Incoming::Unix(socket)));
                }
                Accepted::Failed => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                }
            }
        }
        drop(self.tcp);
        drop(self.unix);
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
        // Every session saw the cancellation: each ends within its linger time.
        while sessions.join_next().await.is_some() {}
    }
}

async fn accept_tcp(l: Option<&TcpListener>) -> Accepted {
    match l.expect("guarded").accept().await {
        Ok((s, a)) => Accepted::Tcp(s, a),
        Err(_) => Accepted::Failed,
    }
}

async fn accept_unix(l: Option<&UnixListener>) -> Accepted {
    match l.expect("guarded").accept().await {
        Ok((s, _)) => Accepted::Unix(s),
        Err(_) => Accepted::Failed,
    }
}

/// Counts a running session; decrements however the task ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted connection, by transport (TLS is for TCP only), with the TCP peer's address.
enum Incoming {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// One connection: TLS handshake if configured (TCP only), then one session.
async fn serve(shared: Arc<Shared>, socket: Incoming) {
    let peer = match &socket {
        Incoming::Tcp(_, addr) => Some(*addr),
        Incoming::Unix(_) => None,
    };
    let remote = peer.map_or_else(|| "unix".to_owned(), |a| a.to_string());
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.active.fetch_add(1, Ordering::Relaxed);
    let _guard = ActiveGuard(shared.active.clone());
    // No receivers is fine: nobody is watching.
    let _ = shared.events.send(ListenEvent::Accepted {
        id,
        remote: remote.clone(),
    });
    let mut credential_recheck = None;
    let stream: BoxedStream = match (socket, &shared.tls) {
        (Incoming::Tcp(socket, _), Some(tls)) => {
            let acceptor = &tls.acceptor();
            let limit = Duration::from_millis(shared.handshake_timeout_ms);
            let handshake = tokio::select! {
                r = tokio::time::timeout(
                    limit,
                    plaintext::accept_tls(acceptor, socket, plaintext::tls_required_frame),
                ) => r,
                _ = shared.stop.cancelled() => {
                    // Every Accepted is followed by one Ended, however the connection ends.
                    let why = Some("the listener is shutting down".to_owned());
                    return ended(&shared, id, remote, None, why);
                }
            };
            match handshake {
                Ok(Ok(s)) => {
                    credential_recheck = tls.recheck(&s);
                    Box::new(s)
                }
                Ok(Err(e)) => return ended(&shared, id, remote, None, Some(e.to_string())),
                Err(_) => {
                    let e = format!("TLS handshake not done within {limit:?}");
                    return ended(&shared, id, remote, None, Some(e));
                }
            }
        }
        (Incoming::Tcp(socket, _), None) => Box::new(socket),
        (Incoming::Unix(socket), _) => Box::new(socket),
    };
    let opts = DriverOptions {
        shutdown: shared.stop.child_token(),
        wake: shared.heads.as_ref().map(|h| h.subscribe()),
        linger_ms: shared.linger_ms,
        hello_timeout: Some(Duration::from_millis(shared.handshake_timeout_ms)),
        credential_recheck,
        ..DriverOptions::default()
    };
    let session = shared.session_for(peer);
    let result = run_session(shared.db.clone(), stream, session, opts).await;
    let (report, error) = match result {
        Ok(r) => (Some(Box::new(r)), None),
        Err(e) => (e.report().cloned().map(Box::new), Some(e.to_string())),
    };
    ended(&shared, id, remote, report, error);
}

fn ended(
    shared: &Shared,
    id: u64,
    remote: String,
    report: Option<Box<SessionReport>>,
    error: Option<String>,
) {
    let _ = shared.events.send(ListenEvent::Ended {
        id,
        remote,
        report,
        error,
    });
}
