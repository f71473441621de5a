//! `sync`: keep a database in sync with another file on this machine (an in-process session
//! pair) or with a network peer (`tcp://`, `tls://`, `unix://`, `ws://`, `wss://`): the same
//! protocol either way.
//!
//! With a URL, `--once` syncs until both sides are caught up and prints one JSON line of
//! what moved each way; `--watch` (the default) keeps syncing, reconnecting with backoff
//! after a failure that may pass (a refused connection, a cut, the peer restarting), prints
//! connection events as JSON lines on stderr, and on Ctrl-C (or SIGTERM) prints the totals
//! as one JSON line. A failure that the next attempt would meet again (a refused token or
//! filter, a copied database, another protocol version) ends it with an error instead.
//!
//! With a URL, one sync of DB_A with that peer runs at a time (`blazedb_net::peer_lock`): a
//! second `sync` of the same file and URL, `--watch` or `--once`, fails at once naming the
//! first one's pid, rather than running a second session of the same node against the peer.
//! The same peer under another URL (`localhost` for `127.0.0.1`) is refused as soon as its
//! HELLO names it, naming both URLs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use blazedb::limits::{IDLE_TIMEOUT_MS_DEFAULT, PING_INTERVAL_MS_DEFAULT, PING_INTERVAL_MS_MIN};
use blazedb::sync::{SessionConfig, SyncMode, SyncPolicy};
use blazedb::{Database, OpenOptions};
use blazedb_net::peer_lock;
use blazedb_net::reconnect::{rejection_json, ClientEvent};
use blazedb_net::transport::{ConnectOptions, TlsClientOptions};
use blazedb_net::{
    sync_files_once, sync_files_watch, sync_once, sync_watch, ClientOptions, Endpoint, FilesNotice,
    SyncFilesOptions,
};
use clap::Args;
use serde_json::json;

use crate::database::{remove_new_database, will_create_database, Context};
use crate::output::print_stored;
use crate::password::{hand_over, resolve, Password, PASSWORD_ENV};
use crate::report::{stderr_line, RefusedByPeer, UsageError};

/// `sync DB_A (DB_B | URL) [--once | --watch] [--mode both|push|pull] [--token T]
/// [--collections a,b] [--where EXPR] [--exclude-fields f,g]`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The first database file (created if missing).
    pub db_a: PathBuf,
    /// The second database file (created if missing: it becomes a replica), or a peer URL:
    /// tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH, ws://HOST[:PORT]/PATH or wss://….
    #[arg(value_name = "DB_B|URL")]
    pub db_b: PathBuf,
    /// Exit once both sides are caught up, printing one JSON line of what moved.
    #[arg(long)]
    pub once: bool,
    /// Keep syncing until Ctrl-C (the default); with a URL, reconnect after failures.
    #[arg(long, conflicts_with = "once")]
    pub watch: bool,
    /// What DB_A does: both (send and receive), push (only send: DB_B receives DB_A's
    /// changes, and its own writes stay on it until a sync in both directions) or pull
    /// (only receive from DB_B).
    #[arg(long, default_value = "both")]
    pub mode: SyncMode,
    /// Password file for DB_A (default: the global --password-file, else BLAZEDB_PASSWORD).
    #[arg(long)]
    pub password_file_a: Option<PathBuf>,
    /// Password file for DB_B (default: the global --password-file, else BLAZEDB_PASSWORD).
    #[arg(long)]
    pub password_file_b: Option<PathBuf>,
    /// Token to present to a network peer (also read from BLAZEDB_TOKEN). A peer that
    /// checks none (`listen` without --token, a relay without authentication) says so, and
    /// a "warning" event on stderr tells it; the sync goes on. On the command line it is
    /// visible to every local user in the process list: use --token-file or BLAZEDB_TOKEN
    /// instead.
    #[arg(long, env = "BLAZEDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Present the token in this file to a network peer (one trailing newline is ignored);
    /// wins over BLAZEDB_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for tls:// and wss:// (instead of
    /// the built-in web roots).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM client certificate (with --tls-client-key).
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The PEM private key of --tls-client-cert.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Accept any TLS certificate, even self-signed or for another name. The connection is
    /// encrypted but the peer is not authenticated: for development only.
    #[arg(long)]
    pub danger_accept_invalid_certs: bool,
    /// Liveness settings (network peers).
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    /// Selective sync: what DB_A receives.
    #[command(flatten)]
    pub selective: SelectiveArgs,
}

/// Selective sync: make DB_A a partial replica of the peer.
#[derive(Debug, Args, Default)]
pub struct SelectiveArgs {
    /// Receive only these collections (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub collections: Option<Vec<String>>,
    /// Receive only records matching this expression (the query language, with values
    /// written out: through a relay it may use `$auth.*` claims, and no other parameter).
    #[arg(long = "where", value_name = "EXPR", allow_hyphen_values = true)]
    pub filter: Option<String>,
    /// Never receive these fields (comma-separated), e.g. large attachments.
    #[arg(long, value_delimiter = ',', value_name = "F,G")]
    pub exclude_fields: Vec<String>,
}

/// Who evaluates a `--where` filter, which decides the parameters it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterPeer {
    /// Another file on this machine: nothing gives the filter any parameter.
    File,
    /// A network peer presented no token: no peer has claims to give as `$auth.*`.
    NetworkWithoutToken,
    /// A network peer presented a token: a relay gives `$auth.*`, its claims (from the
    /// WebSocket upgrade, or from HELLO on its raw TCP and Unix listeners). `blazedb listen`
    /// gives none even then; the URL cannot tell it from a relay's raw listener.
    NetworkWithToken,
}

impl FilterPeer {
    /// A network peer, presented `token` (an empty one is none: HELLO then carries none).
    pub fn network(token: Option<&str>) -> FilterPeer {
        if token.is_some_and(|t| !t.is_empty()) {
            FilterPeer::NetworkWithToken
        } else {
            FilterPeer::NetworkWithoutToken
        }
    }
}

impl SelectiveArgs {
    /// The policy, checked (a bad expression is reported with its position).
    pub fn policy(&self, peer: FilterPeer) -> Result<SyncPolicy> {
        let p = SyncPolicy {
            collections: self.collections.clone(),
            filter: self.filter.clone(),
            exclude_fields: self.exclude_fields.clone(),
        };
        if let Err(m) = p.compile() {
            // An invalid expression is the command line's fault: exit code 2, as `query`.
            // The library names the policy's fields; here they are options.
            return Err(UsageError(format!(
                "{m} (the policy's `collections`, `filter` and `exclude_fields` are \
                 --collections, --where and --exclude-fields)"
            ))
            .into());
        }
        if let Some(filter) = &self.filter {
            let expr = blazedb::query::parse(filter)?;
            let allowed: &[&str] = match peer {
                FilterPeer::NetworkWithToken => &["auth"],
                FilterPeer::File | FilterPeer::NetworkWithoutToken => &[],
            };
            if let Some(name) = crate::commands::query::first_param(expr.root(), allowed) {
                // A parameter never given is unknown and matches nothing: the replica would
                // quietly receive nothing.
                let why = match (peer, name.as_str()) {
                    (FilterPeer::File, "auth") => "$auth.* is given by a relay, from the \
                        token's claims; syncing two files has no token: write the value itself"
                        .to_owned(),
                    (FilterPeer::NetworkWithoutToken, "auth") => "$auth.* is given by a relay \
                        from the claims of the token presented, and no token is given: pass \
                        --token (or set BLAZEDB_TOKEN), or write the value itself"
                        .to_owned(),
                    (FilterPeer::File, _) => {
                        "the command line has no parameters to give it: write the value itself"
                            .to_owned()
                    }
                    (FilterPeer::NetworkWithoutToken | FilterPeer::NetworkWithToken, _) => {
                        "the command line has no parameters to give it (a relay gives only \
                         $auth.*, the token's claims): write the value itself"
                            .to_owned()
                    }
                };
                return Err(UsageError(format!("--where uses ${name}, and {why}")).into());
            }
        }
        Ok(p)
    }
}

/// How a network session notices a dead peer.
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// Send a ping after this many ms without sending anything.
    #[arg(long, value_name = "MS", default_value_t = PING_INTERVAL_MS_DEFAULT)]
    pub ping_interval_ms: u64,
    /// End a session after this many ms without receiving anything (`sync --watch` then
    /// reconnects; a listener waits for the peer to connect again).
    #[arg(long, value_name = "MS", default_value_t = IDLE_TIMEOUT_MS_DEFAULT)]
    pub idle_timeout_ms: u64,
}

impl HeartbeatArgs {
    /// Refuse settings that cannot work: a ping interval so short the session would do
    /// little but ping, or an idle timeout no longer than the ping interval, which would
    /// end sessions with live but quiet peers (their pings arrive too late).
    pub fn check(&self) -> Result<(), UsageError> {
        let (ping, idle) = (self.ping_interval_ms, self.idle_timeout_ms);
        if ping < PING_INTERVAL_MS_MIN {
            return Err(UsageError(format!(
                "--ping-interval-ms {ping} is too short: give at least {PING_INTERVAL_MS_MIN} \
                 (the default is {PING_INTERVAL_MS_DEFAULT})"
            )));
        }
        if idle <= ping {
            return Err(UsageError(format!(
                "--idle-timeout-ms {idle} must be longer than --ping-interval-ms {ping}, or a \
                 live peer that is only pinging is taken for dead: give an idle timeout a few \
                 times the ping interval (the defaults are {IDLE_TIMEOUT_MS_DEFAULT} and \
                 {PING_INTERVAL_MS_DEFAULT})"
            )));
        }
        Ok(())
    }
}

/// Run the sync until caught up (`--once`) or until interrupted (Ctrl-C), then print what
/// moved as one JSON line.
pub fn run(ctx: &Context, args: &SyncArgs) -> Result<()> {
    args.heartbeat.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Each side's own password file, else the global one, else BLAZEDB_PASSWORD.
    let password =
        |own: Option<&std::path::Path>| resolve(own.or(ctx.password_file.as_deref()), PASSWORD_ENV);
    let password_a = password(args.password_file_a.as_deref())?;
    let tls_options =
        args.danger_accept_invalid_certs || args.tls_ca.is_some() || args.tls_client_cert.is_some();
    // A second argument that names a URL selects network mode.
    if let Some(endpoint) = peer_url(&args.db_b)? {
        if tls_options && !matches!(endpoint.scheme(), "tls" | "wss") {
            return Err(UsageError(format!(
                "TLS options apply to tls:// and wss:// peers, and {} is {}://: use tls:// or \
                 wss://, or leave the TLS options out",
                args.db_b.display(),
                endpoint.scheme()
            ))
            .into());
        }
        return runtime.block_on(run_network(args, endpoint, password_a));
    }
    // Both are the command line's mistakes (exit 2), as TLS options with a tcp:// URL are.
    if tls_options {
        return Err(UsageError(format!(
            "TLS options apply to a network peer, and {} is a file: give a tls:// or wss:// \
             URL, or leave the TLS options out",
            args.db_b.display()
        ))
        .into());
    }
    if token_on_command_line(args.token.as_deref()) || args.token_file.is_some() {
        return Err(UsageError(format!(
            "--token is presented to a network peer (a relay or `blazedb listen`), and {} is \
             a file: two files on this machine sync without one; leave --token out (and \
             --token-file)",
            args.db_b.display()
        ))
        .into());
    }
    let opts = SyncFilesOptions {
        mode: args.mode,
        password_a,
        password_b: password(args.password_file_b.as_deref())?,
        session: SessionConfig {
            policy: args.selective.policy(FilterPeer::File)?,
            ..SessionConfig::default()
        },
        on_open: Some(std::sync::Arc::new(
            crate::database::tell_what_the_open_changed,
        )),
        ..SyncFilesOptions::default()
    };
    let report = runtime.block_on(async {
        if args.once {
            sync_files_once(&args.db_a, &args.db_b, opts).await
        } else {
            sync_files_watch(&args.db_a, &args.db_b, opts, interrupted(), |notice| {
                let line = match notice {
                    FilesNotice::FileWatchUnavailable { error } => file_watch_unavailable(&error),
                    FilesNotice::Retrying { delay_ms, error } => retrying(delay_ms, &error),
                    _ => json!({ "event": "other" }),
                };
                stderr_line(line);
            })
            .await
        }
    })?;
    let stored = || {
        format!(
            "the sync of {} and {} ran: only its summary is lost",
            args.db_a.display(),
            args.db_b.display()
        )
    };
    Ok(print_stored(stored, |out| out.json(&report.to_json()))?)
}

/// Whether `token` (the value of --token) was typed on the command line rather than taken
/// from BLAZEDB_TOKEN: a variable exported for network syncs must not break a file sync.
pub(crate) fn token_on_command_line(token: Option<&str>) -> bool {
    crate::password::typed_on_command_line(token, TOKEN_ENV)
}

/// The environment variable holding the token of `sync` and `listen`.
pub const TOKEN_ENV: &str = "BLAZEDB_TOKEN";

/// The token of `sync` or `listen`: from `--token-file` if given, else `--token` (which clap
/// fills from [`TOKEN_ENV`] when it is not on the command line). `--token-file` together with
/// `--token` on the command line is refused; `--token` typed on the command line is warned
/// about, since every local user can read it there.
pub(crate) fn client_token(
    token: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> Result<Option<Password>> {
    if let Some(path) = token_file {
        if token_on_command_line(token) {
            return Err(UsageError(
                "give the token once: --token or --token-file, not both".into(),
            )
            .into());
        }
        return crate::password::read_secret_file(path, "token file").map(Some);
    }
    if token_on_command_line(token) && token.is_some_and(|t| !t.is_empty()) {
        crate::password::warn_secret_in_argv(
            "--token",
            &format!("--token-file FILE or {TOKEN_ENV}"),
        );
    }
    Ok(token.map(|t| zeroize::Zeroizing::new(t.to_owned())))
}

/// DB_B as a peer URL, when it is one; `None` for a database file. An argument with a
/// scheme this command does not know (`http://…`), or one that reads like an address
/// (`host:port`, `ws:host`) and names no existing file, is refused with what to write
/// instead, not taken for the name of a new database file.
fn peer_url(db_b: &std::path::Path) -> Result<Option<Endpoint>> {
    let Some(s) = db_b.to_str() else {
        return Ok(None);
    };
    if Endpoint::looks_like_url(s) || s.contains("://") {
        // The parser names the schemes it takes when this is none of them.
        return s
            .parse()
            .map(Some)
            .map_err(|e: blazedb_net::transport::TransportError| UsageError(e.to_string()).into());
    }
    let scheme_like = s.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    let address_like = s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.contains('/') && port.parse::<u16>().is_ok());
    if db_b.exists() || !(scheme_like || address_like) {
        return Ok(None);
    }
    let (scheme, rest) = s.split_once(':').expect("scheme_like or address_like");
    let what = if ["ws", "wss", "tcp", "tls"].contains(&scheme.to_ascii_lowercase().as_str()) {
        format!(
            "{s:?} is not a peer URL: write {scheme}://{}",
            rest.trim_start_matches('/')
        )
    } else if address_like {
        format!(
            "{s:?} is neither a database file nor a peer URL: write the URL with its scheme \
             (tcp://{s}, tls://{s}, ws://{s}/v1/sync or wss://…)"
        )
    } else {
        format!("{s:?} is neither a database file nor a peer URL (tcp://, tls://, unix://, ws:// or wss://)")
    };
    Err(UsageError(format!(
        "{what}, or ./{s} for a new database file of that name"
    ))
    .into())
}

async fn run_network(
    args: &SyncArgs,
    endpoint: Endpoint,
    password: Option<Password>,
) -> Result<()> {
    let token = client_token(args.token.as_deref(), args.token_file.as_deref())?;
    // Checked before DB_A is opened: a bad filter must not leave a new, empty database.
    let policy = args
        .selective
        .policy(FilterPeer::network(token.as_deref().map(String::as_str)))?;
    let path = args.db_a.clone();
    // A sync that fails (nothing listens at the URL, a refused token) removes the file it
    // created for DB_A, as the file-to-file sync does: a typo must not leave empty databases.
    let is_new = will_create_database(&args.db_a);
    let options = OpenOptions {
        password: hand_over(password),
        create: true,
        ..OpenOptions::default()
    };
    // SQLCipher's key derivation takes a noticeable time: off the runtime's threads.
    let db = tokio::task::spawn_blocking(move || Database::open(&path, options))
        .await
        .context("opening the database")??;
    crate::database::tell_what_the_open_changed(&db);
    let db = Arc::new(db);
    let opts = ClientOptions {
        connect: ConnectOptions {
            tls: TlsClientOptions {
                ca_pem: args.tls_ca.clone(),
                client_cert_pem: args.tls_client_cert.clone(),
                client_key_pem: args.tls_client_key.clone(),
                danger_accept_invalid_certs: args.danger_accept_invalid_certs,
            },
            ..ConnectOptions::default()
        },
        session: SessionConfig {
            mode: args.mode,
            token: token.as_deref().cloned().unwrap_or_default(),
            ping_interval_ms: args.heartbeat.ping_interval_ms,
            idle_timeout_ms: args.heartbeat.idle_timeout_ms,
            policy,
            ..SessionConfig::default()
        },
        // Writers in other processes on DB_A reach the peer too.
        watch_other_processes: true,
        ..ClientOptions::default()
    };
    let result = if args.once {
        sync_once(db.clone(), &endpoint, &opts).await
    } else {
        sync_watch(db.clone(), &endpoint, &opts, interrupted(), |e| {
            stderr_line(event_json(&e, &args.db_a, &endpoint));
        })
        .await
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            // Every session has ended, so ours is the last handle unless a task is still
            // letting go of its clone; then the file stays (best effort).
            if let (true, Ok(db)) = (is_new, Arc::try_unwrap(db)) {
                // Named while the database file exists; the sync's lock files go with it.
                let locks = peer_lock::lock_files(&args.db_a);
                if remove_new_database(db, &args.db_a) {
                    for lock in &locks {
                        peer_lock::remove_lock_file(lock);
                    }
                }
            }
            // The session's words say "the peer": name it (an upgrade audit, 2026-12-07, F7).
            let version_mismatch = matches!(
                &e,
                blazedb_net::reconnect::ClientError::Session(blazedb_net::NetError::Sync {
                    error,
                    ..
                }) if error.code == blazedb::sync::ErrorCode::UnsupportedVersion
            );
            if version_mismatch {
                return Err(anyhow::Error::from(e).context(format!("the peer at {endpoint}")));
            }
            return Err(e.into());
        }
    };
    if args.once && report.token_unchecked {
        // Watch mode told it as it happened.
        stderr_line(token_unchecked(&endpoint));
    }
    let stored = || {
        let refused = match report.traffic.rejected_by_peer {
            0 => String::new(),
            n => format!(
                "; the peer refused {n} change(s), kept here as conflicts: see them with \
                 `blazedb conflicts {}`",
                args.db_a.display()
            ),
        };
        format!(
            "the sync of {} with {endpoint} ran: only its summary is lost{refused}",
            args.db_a.display()
        )
    };
    print_stored(stored, |out| out.json(&report.to_json()))?;
    match report.traffic.rejected_by_peer {
        0 => Ok(()),
        changes => Err(refused(changes, &args.db_a).into()),
    }
}

/// The sync itself succeeded, but what this side wrote did not all get through: said as the
/// command's error (exit 3), after the summary, so that the user learns where it went.
fn refused(changes: u64, db: &std::path::Path) -> RefusedByPeer {
    RefusedByPeer(format!(
        "the peer refused {changes} change(s) (one per record and transaction; by its \
         access rules; the reasons are \
         listed as \"rejected\" events or in \"rejections\"). The peer's version of each \
         replaced ours here; our refused values are kept as conflicts: see them with \
         `blazedb conflicts {}`, and write them again where the rules allow it",
        db.display()
    ))
}

fn event_json(e: &ClientEvent, db: &std::path::Path, peer: &Endpoint) -> serde_json::Value {
    match e {
        ClientEvent::Connected { attempt } => json!({ "event": "connected", "attempt": attempt }),
        ClientEvent::SessionEnded { report, error } => json!({
            "event": "session_ended",
            "error": error,
            "peer_said": report.peer_goodbye,
            "peer": report.peer.map(|p| p.to_string()),
            "cells_sent": report.stats.cells_sent,
            "cells_received": report.stats.cells_received,
            "cells_applied": report.stats.cells_applied,
            "rejected_by_peer": report.stats.changes_rejected_by_peer,
        }),
        ClientEvent::Rejected(r) => {
            let mut v = rejection_json(r);
            v["event"] = "rejected".into();
            v["conflicts"] = format!("blazedb conflicts {}", db.display()).into();
            v
        }
        ClientEvent::Retrying { delay_ms, error } => retrying(*delay_ms, error),
        ClientEvent::FileWatchUnavailable { error } => file_watch_unavailable(error),
        ClientEvent::TokenUnchecked => token_unchecked(peer),
        _ => json!({ "event": "other" }),
    }
}

/// The warning that the peer checks no token, though one was given: a listener the user
/// believes protected is open to anyone who reaches it. A warning, not an error: the peer's
/// operator may mean it (a listener on loopback), and the sync goes on.
fn token_unchecked(peer: &Endpoint) -> serde_json::Value {
    json!({
        "event": "warning",
        "kind": "token_unchecked",
        "peer": peer.to_string(),
        "warning": format!(
            "the peer at {peer} checks no token: the one given (--token or BLAZEDB_TOKEN) was \
             not checked, and anyone who can reach the peer may sync with it. Syncing goes on; \
             to require the token, restart the peer with it (`blazedb listen --token`, or \
             `blazedb serve` with --token, --jwt-secret or --jwt-public-key)"
        ),
    })
}

/// The event that says the sync stopped for a reason that may pass and starts again in
/// `delay_ms`.
fn retrying(delay_ms: u64, error: &str) -> serde_json::Value {
    json!({ "event": "retrying", "delay_ms": delay_ms, "error": error })
}

/// The event that says other processes' commits to a database reach peers only by polling
/// (the operating system would not watch the file), with why and what to do.
pub fn file_watch_unavailable(error: &str) -> serde_json::Value {
    json!({ "event": "file_watch_unavailable", "error": error })
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what service managers and `kill` send).
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
