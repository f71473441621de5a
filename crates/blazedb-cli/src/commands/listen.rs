//! `listen`: serve one database to peers over TCP (optionally TLS) or a Unix socket; peers
//! run `blazedb sync THEIR_DB tcp://HOST:PORT` (or `tls://`, `unix://`).
//!
//! Prints one JSON line per address on stdout once listening (`{"listening":
//! "tcp://127.0.0.1:7421"}`, the real port when 0 was given), then one JSON line per
//! connection event on stderr, until Ctrl-C or SIGTERM ends every session politely.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use blazedb::sync::{SessionConfig, SyncMode};
use blazedb_net::limits::AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT;
use blazedb_net::transport::{listen, ListenConfig, ListenEvent, TlsServerOptions};
use blazedb_relay::limits::AUTH_SECRET_BYTES_MIN;
use clap::{ArgGroup, Args};
use serde_json::json;

use crate::commands::sync::{
    file_watch_unavailable, interrupted, token_on_command_line, HeartbeatArgs, TOKEN_ENV,
};
use crate::database::{Access, Context};
use crate::output::Output;
use crate::report::{stderr_line, UsageError};

/// `listen DB (--tcp ADDR | --unix PATH) [--token-file FILE] [--tls-cert FILE --tls-key FILE]
/// [--max-auth-failures-per-address N]`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("address").required(true).multiple(true).args(["tcp", "unix"])))]
pub struct ListenArgs {
    /// The database to serve (created if missing).
    pub db: PathBuf,
    /// TCP address to listen on, e.g. 127.0.0.1:7421 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub tcp: Option<String>,
    /// Unix domain socket path to listen on (created owner-only, mode 0600; no TLS on it, but
    /// --token is still required).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Require peers to present the token in this file (at least 16 bytes, e.g. `openssl
    /// rand -hex 32 > FILE`; one trailing newline is ignored). Also read from the environment
    /// variable BLAZEDB_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Require peers to present this token (at least 16 bytes; also read from
    /// BLAZEDB_TOKEN). On the command
    /// line it is visible to every local user in the process list: use --token-file or
    /// BLAZEDB_TOKEN instead.
    #[arg(long, env = "BLAZEDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Speak TLS on the TCP address with this PEM certificate chain (with --tls-key and
    /// --tcp: a Unix socket has no TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert. Both files are read again when they change: a
    /// renewed certificate is served from the next connection on, no restart.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse client certificates on this certificate revocation list (PEM, from the CA of
    /// --tls-client-ca); repeat for more. Read again whenever the file changes, so a revoked
    /// device is refused without a restart, and its open sessions end. Replace the file by
    /// renaming a new one over it: while a list cannot be read, every new client certificate
    /// is refused.
    #[arg(long, value_name = "FILE", requires = "tls_client_ca")]
    pub tls_client_crl: Vec<PathBuf>,
    /// What this database does with its peers: both, push (only send) or pull (only
    /// receive).
    #[arg(long, default_value = "both")]
    pub mode: SyncMode,
    /// Wrong tokens one peer IP address (an IPv6 /64) may send over TCP within a minute
    /// (default 10); the one that reaches it makes the listener refuse that address's next
    /// attempts for a minute (RATE_LIMITED) without checking their token, so guessing stops
    /// there; other addresses are served as usual. 0: no limit. Peers behind one NAT share
    /// an address, and one peer's wrong token would lock all of them out: raise it there, or
    /// set 0. (Unix socket peers are not counted.)
    #[arg(long, value_name = "N")]
    pub max_auth_failures_per_address: Option<u32>,
    /// Announce the TCP/TLS address on the LAN over mDNS (`_blazedb._tcp`), so that
    /// `blazedb discover` finds it. Off by default: it sends multicast on every interface.
    #[arg(long, requires = "tcp")]
    pub advertise: bool,
    /// Liveness settings.
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
}

/// Why a listener refuses a token of `len` bytes, naming where it came from. The same
/// minimum as the relay's static token ([`AUTH_SECRET_BYTES_MIN`]), said the same way: the
/// failure limit per address slows down one address, but peers spread over many addresses
/// (or a listener with the limit off) guess as fast as they can ask, so the token's length
/// is what keeps it out of reach. Only the side that defines the secret is checked: `sync
/// --token` presents whatever its peer was started with.
fn short_token(len: usize, args: &ListenArgs) -> String {
    let from = match &args.token_file {
        Some(path) => format!("in {}", path.display()),
        None if token_on_command_line(args.token.as_deref()) => "--token".to_owned(),
        None => TOKEN_ENV.to_owned(),
    };
    format!(
        "the token ({from}) is {len} bytes long, and a listener's token must have at least \
         {AUTH_SECRET_BYTES_MIN} (peers on many addresses guess as fast as they can ask): \
         make a random one, \
         e.g. `openssl rand -hex 32 > token.txt`, and start the listener with --token-file \
         token.txt (its peers sync with --token-file token.txt)"
    )
}

/// Serve until interrupted.
pub fn run(ctx: &Context, args: &ListenArgs) -> Result<()> {
    args.heartbeat.check()?;
    // An empty token would mean "no authentication": refuse it rather than open the
    // database to anyone because a variable in a script was unset (as `serve` does).
    // (An empty BLAZEDB_TOKEN in the environment does mean "none".)
    let env_empty = std::env::var_os("BLAZEDB_TOKEN").is_some_and(|v| v.is_empty());
    let too_short = |t: &str| !t.is_empty() && t.len() < AUTH_SECRET_BYTES_MIN;
    // A short --token is refused before `client_token` warns that it is in the process
    // list: one line saying what to do, which fixes both.
    if args.token_file.is_none() && args.token.as_deref().is_some_and(too_short) {
        let len = args.token.as_deref().map_or(0, str::len);
        return Err(UsageError(short_token(len, args)).into());
    }
    let token =
        crate::commands::sync::client_token(args.token.as_deref(), args.token_file.as_deref())?
            .map(|t| t.to_string())
            .filter(|t| !(t.is_empty() && env_empty));
    if token.as_deref() == Some("") {
        return Err(UsageError(
            "the token is empty: give a non-empty --token (or leave it out, and BLAZEDB_TOKEN \
             unset, to accept peers without one)"
                .into(),
        )
        .into());
    }
    if let Some(t) = token.as_deref().filter(|t| too_short(t)) {
        return Err(UsageError(short_token(t.len(), args)).into());
    }
    if args.tls_cert.is_some() && args.tcp.is_none() {
        return Err(UsageError(
            "TLS is not available on a Unix socket: --tls-cert and --tls-key apply to a --tcp \
             address; add --tcp ADDR to serve TLS there (beside the socket), or leave the TLS \
             options out"
                .into(),
        )
        .into());
    }
    if let (Some(unix), Some(_)) = (&args.unix, &args.tls_client_ca) {
        crate::commands::serve::warn_no_client_certificates_on(unix);
    }
    let db = Arc::new(ctx.open(&args.db, Access::CreateIfMissing)?);
    let node = db.node_id();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsServerOptions {
            cert_pem: cert.clone(),
            key_pem: key.clone(),
            client_ca_pem: args.tls_client_ca.clone(),
            client_crl_pem: args.tls_client_crl.clone(),
        }),
        _ => None,
    };
    let cfg = ListenConfig {
        tcp: args.tcp.clone(),
        tls,
        unix: args.unix.clone(),
        token,
        auth_failures_per_address_max: args
            .max_auth_failures_per_address
            .unwrap_or(AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT),
        session: SessionConfig {
            mode: args.mode,
            ping_interval_ms: args.heartbeat.ping_interval_ms,
            idle_timeout_ms: args.heartbeat.idle_timeout_ms,
            ..SessionConfig::default()
        },
        // Writers in other processes (`blazedb put` beside the listener) reach peers too.
        watch_other_processes: true,
        ..ListenConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let tls_on = cfg.tls.is_some();
        let listener = listen(db, cfg).await?;
        // Kept alive while we accept; dropping it withdraws the announcement.
        let _advertisement = match (args.advertise, listener.tcp_addr()) {
            (true, Some(addr)) => {
                match blazedb_net::discovery::advertise_listener(node, addr, tls_on) {
                    Ok(ad) => Some(ad),
                    Err(e) => {
                        // Not fatal: peers can still connect by address.
                        stderr_line(json!({ "event": "not_advertised", "error": e.to_string() }));
                        None
                    }
                }
            }
            _ => None,
        };
        let mut out = Output::stdout();
        for url in listener.urls() {
            out.json(&json!({ "listening": url }))?;
        }
        out.flush()?;
        if let Some(error) = listener.file_watch_error() {
            stderr_line(file_watch_unavailable(error));
        }
        let mut events = listener.events();
        let stop = interrupted();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                e = events.recv() => match e {
                    Ok(e) => stderr_line(event_json(&e)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        stderr_line(json!({ "event": "lagged", "missed": n }));
                    }
                    Err(_) => break,
                },
            }
        }
        listener.shutdown().await;
        Ok(out.finish()?)
    })
}

fn event_json(e: &ListenEvent) -> serde_json::Value {
    match e {
        ListenEvent::Accepted { id, remote } => {
            json!({ "event": "accepted", "id": id, "remote": remote })
        }
        ListenEvent::Ended {
            id,
            remote,
            report,
            error,
        } => {
            let mut v = json!({ "event": "ended", "id": id, "remote": remote, "error": error });
            if let Some(r) = report {
                v["peer"] = json!(r.peer.map(|p| p.to_string()));
                v["cells_sent"] = json!(r.stats.cells_sent);
                v["cells_received"] = json!(r.stats.cells_received);
                v["cells_applied"] = json!(r.stats.cells_applied);
            }
            v
        }
        ListenEvent::TlsFiles(e) => e.to_json(),
        _ => json!({ "event": "other" }),
    }
}
