//! `serve`: run the relay server (crate `blazedb-relay`) until Ctrl-C or SIGTERM.
//!
//! Prints one JSON line on stdout once every listener is bound (so a script can start the
//! relay with `--listen 127.0.0.1:0` and read the port), then serves; per-session problems
//! are JSON lines on stderr (`session_closed`, at most 10 a minute per reason, the rest
//! counted in a `session_closed_suppressed` line: `blazedb_relay::limits::CLOSE_LOG_*`). The store's password comes from `--password-file` or
//! `BLAZEDB_PASSWORD` like every other command's.
//!
//! The credential clients must present comes from a file (`--token-file`, `--jwt-secret-file`,
//! `--jwt-public-key`) or from the environment (`BLAZEDB_RELAY_TOKEN`, `BLAZEDB_JWT_SECRET`),
//! which other users of the machine cannot read. `--token` and `--jwt-secret` still work but
//! put the secret in the process list for every local user to read; the relay warns about
//! them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use blazedb_relay::limits::{DATA_DIR_DEFAULT, LISTEN_ADDR_DEFAULT};
use blazedb_relay::{AuthConfig, Limits, Relay, RelayConfig, TlsFiles, TrustedProxy};
use clap::Args;
use serde_json::json;

use crate::database::Context;
use crate::output::Output;
use crate::report::{stderr_line, UsageError};

/// `serve [--data DIR] [--listen ADDR] [--token-file FILE | --jwt-secret-file FILE |
/// --jwt-public-key FILE] [--rules FILE] [--tls-cert FILE --tls-key FILE] [--origin ORIGIN]...
/// [--trusted-proxy CIDR]...`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of the relay's store (relay.db), created if missing.
    #[arg(long, value_name = "DIR", default_value = DATA_DIR_DEFAULT)]
    pub data: PathBuf,
    /// HTTP and WebSocket address: GET /v1/sync, POST /v1/query, GET /health, GET /metrics.
    /// IP:PORT (0.0.0.0:PORT for every interface; port 0 picks a free one); `localhost:PORT`
    /// and a bare PORT mean 127.0.0.1:PORT.
    #[arg(long, value_name = "ADDR", default_value = LISTEN_ADDR_DEFAULT,
          value_parser = parse_listen_addr)]
    pub listen: SocketAddr,
    /// Also accept raw protocol frames over TCP (TLS with --tls-cert); clients send the token
    /// in HELLO. Written as --listen's address is.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub tcp_listen: Option<SocketAddr>,
    /// Also accept raw protocol frames on this Unix domain socket (created owner-only, mode
    /// 0600; no TLS or client certificates on it, but clients still send the token in HELLO).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Require a static bearer token in this file ($auth.sub is "token"; at least 16 bytes,
    /// e.g. `openssl rand -hex 32 > FILE`). One token a line, any of which passes (blank
    /// lines and the whitespace around a token are ignored). Read again when the file
    /// changes: to rotate, add the new token on a line of its own, move clients over, then
    /// remove the old one; no restart, open sessions go on. A single token is also read once
    /// from the environment variable BLAZEDB_RELAY_TOKEN.
    #[arg(long, value_name = "FILE", group = "auth")]
    pub token_file: Option<PathBuf>,
    /// Require this static bearer token. Visible to every local user in the process list:
    /// use --token-file or BLAZEDB_RELAY_TOKEN instead.
    #[arg(long, value_name = "T", group = "auth")]
    pub token: Option<String>,
    /// Accept JWTs signed with an HMAC secret in this file (HS256/384/512; at least 16
    /// bytes); claims become $auth.*. One secret a line, any of which may have signed the
    /// token (blank lines and the whitespace around a secret are ignored). Read again when
    /// the file changes: to rotate, add the new secret on a line of its own, let the issuer
    /// sign with it, then remove the old one; no restart. A single secret is also read once
    /// from the environment variable BLAZEDB_JWT_SECRET.
    #[arg(long, value_name = "FILE", group = "auth")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Accept JWTs signed with this HMAC secret. Visible to every local user in the process
    /// list, and whoever reads it can mint any claims: use --jwt-secret-file or
    /// BLAZEDB_JWT_SECRET instead.
    #[arg(long, value_name = "S", group = "auth")]
    pub jwt_secret: Option<String>,
    /// Accept JWTs signed by a key whose public half is in this PEM file (RS*/PS*, EdDSA,
    /// ES256/384; several keys, one PEM block each, during a key rotation). Read again when
    /// the file changes: no restart to rotate keys.
    #[arg(long, value_name = "FILE", group = "auth")]
    pub jwt_public_key: Option<PathBuf>,
    /// Require this `aud` claim in JWTs.
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Require this `iss` claim in JWTs.
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// TOML access rules: a [collection] table with read = "EXPR" and write = "EXPR" each;
    /// collections without a table are closed. Without this file, every authenticated client
    /// reads and writes everything. Read again when it changes: new rules are in force
    /// without a restart (sync sessions reconnect under them).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Serve HTTPS/WSS (and TLS on --tcp-listen) with this PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert. Both files are read again when they change: a
    /// renewed certificate is served from the next connection on, no restart.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse client certificates on this certificate revocation list (PEM, from the CA of
    /// --tls-client-ca); repeat for more. Read again whenever the file changes, so a revoked
    /// device is refused without a restart, and its open sessions end. Replace the file by
    /// renaming a new one over it: while a list cannot be read, every new client certificate
    /// is refused.
    #[arg(long, value_name = "FILE", requires = "tls_client_ca")]
    pub tls_client_crl: Vec<PathBuf>,
    /// Allow browsers from this origin (e.g. https://app.example.com, tauri://localhost,
    /// chrome-extension://ID, or null for pages from file://); repeat for more. Without any,
    /// every origin may connect when credentials are required; without credentials, only
    /// pages served from this machine (localhost and names under it, 127.0.0.1, [::1]) may.
    #[arg(long = "origin", value_name = "ORIGIN")]
    pub origins: Vec<String>,
    /// Most connections at once (at least 1; default 10,000).
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: Option<usize>,
    /// Most connections at once from one client IP address (0, the default: no such limit).
    /// For a relay that faces the internet directly; leave it off behind a reverse proxy or
    /// a NAT many clients share, since they all arrive from its address (it counts TCP
    /// connections, before any header is read: --trusted-proxy does not change that).
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Wrong credentials one client IP address (an IPv6 /64) may present within a minute
    /// (default 10); the one that reaches it makes the relay refuse that address's next
    /// attempts for a minute (HTTP 429, RATE_LIMITED over TCP) without checking them, so
    /// guessing stops there. 0: no limit. Behind a reverse proxy every client arrives from
    /// its address, and one client's wrong token would lock all of them out: name the proxy
    /// with --trusted-proxy so that each client counts under its own address.
    #[arg(long, value_name = "N")]
    pub max_auth_failures_per_address: Option<u32>,
    /// The relay runs behind this reverse proxy (nginx, Caddy, a load balancer): an address
    /// or a CIDR range (10.0.0.7, 10.0.0.0/8, ::1/128); repeat for more. An HTTP or
    /// WebSocket request from it counts as coming from the right-most address of its
    /// X-Forwarded-For that is not a trusted proxy, for --max-auth-failures-per-address and
    /// the log; from any other address the header is ignored, so clients cannot choose
    /// theirs. Name only proxies that append their client's address to X-Forwarded-For
    /// (nginx: proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for). The raw TCP
    /// port (--tcp-listen) has no headers and counts its peers.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Protocol messages per second one connection may send (sustained; default 1,000); 0:
    /// unlimited. A
    /// connection may also send a burst above it: see --message-burst.
    #[arg(long, value_name = "N")]
    pub message_rate: Option<u32>,
    /// Messages one connection may send in a burst above --message-rate (the token bucket's
    /// size, at least 1). Default: the larger of 2000 and twice the rate.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub message_burst: Option<u32>,
    /// Serve without authentication on a non-loopback address: anyone who can reach the relay
    /// reads and writes what the rules allow.
    #[arg(long)]
    pub danger_allow_anonymous: bool,
    /// Collect tombstones and other sync metadata every client has seen this often (a number
    /// with a unit: ms, s, m, h or d); 0 disables it.
    #[arg(long, value_name = "DURATION", default_value = "10m",
          value_parser = crate::commands::peers::parse_duration_ms)]
    pub gc_interval: u64,
    /// A client not heard from for this long no longer holds GC back (a number with a unit:
    /// ms, s, m, h or d); if it returns, it starts over from a snapshot. Until then a client
    /// that synced once and never came back keeps every tombstone made since.
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = crate::commands::peers::parse_duration_ms)]
    pub peer_retention: u64,
    /// Keep change history at most this long (a number with a unit: ms, s, m, h or d).
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = crate::commands::peers::parse_duration_ms)]
    pub history_max_age: u64,
    /// Keep at most this many history entries.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub history_max_entries: u64,
}

/// An address to listen on: `IP:PORT`, or `localhost:PORT`, `PORT` and `:PORT` for
/// 127.0.0.1 (no name is looked up: a relay must not bind where a resolver points it).
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = t
        .strip_prefix("localhost:")
        .or_else(|| t.strip_prefix(':'))
        .unwrap_or(t);
    match port.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => Err(format!(
            "{text:?} is not an address to listen on: give IP:PORT, e.g. 127.0.0.1:7420 (this \
             machine only), 0.0.0.0:7420 (every interface) or [::1]:7420"
        )),
    }
}

/// The environment variable holding the relay's static token (`--token-file` instead).
pub const RELAY_TOKEN_ENV: &str = "BLAZEDB_RELAY_TOKEN";
/// The environment variable holding the relay's JWT HMAC secret (`--jwt-secret-file`).
pub const JWT_SECRET_ENV: &str = "BLAZEDB_JWT_SECRET";

/// The credential clients must present: from the one flag of the `auth` group given, else
/// from [`RELAY_TOKEN_ENV`] or [`JWT_SECRET_ENV`], else none. A flag wins over the
/// environment, as `--password-file` wins over `BLAZEDB_PASSWORD`. A variable that is set but
/// empty is refused rather than read as "no authentication": `BLAZEDB_RELAY_TOKEN="$(cat
/// missing-file)"` must not open the relay.
fn auth_config(args: &ServeArgs) -> Result<AuthConfig> {
    use crate::password::warn_secret_in_argv;
    if let Some(t) = &args.token {
        warn_secret_in_argv(
            "--token",
            &format!("--token-file FILE or {RELAY_TOKEN_ENV}"),
        );
        return Ok(AuthConfig::Token(t.as_str().into()));
    }
    // The relay reads the files itself, at startup and again whenever they change.
    if let Some(path) = &args.token_file {
        return Ok(AuthConfig::TokenFile(path.clone()));
    }
    if let Some(s) = &args.jwt_secret {
        warn_secret_in_argv(
            "--jwt-secret",
            &format!("--jwt-secret-file FILE or {JWT_SECRET_ENV}"),
        );
        return Ok(AuthConfig::JwtSecret(s.as_str().into()));
    }
    if let Some(path) = &args.jwt_secret_file {
        return Ok(AuthConfig::JwtSecretFile(path.clone()));
    }
    if let Some(k) = &args.jwt_public_key {
        return Ok(AuthConfig::JwtPublicKey(k.clone()));
    }
    let from_env = |name: &str| -> Result<Option<crate::password::Password>> {
        match std::env::var(name).map(zeroize::Zeroizing::new) {
            Ok(v) if v.is_empty() => Err(UsageError(format!(
                "{name} is set but empty: put the secret in it (e.g. `export {name}=$(openssl \
                 rand -hex 32)`), or unset it"
            ))
            .into()),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(UsageError(format!("{name} is not valid UTF-8")).into())
            }
        }
    };
    match (from_env(RELAY_TOKEN_ENV)?, from_env(JWT_SECRET_ENV)?) {
        (Some(_), Some(_)) => Err(UsageError(format!(
            "both {RELAY_TOKEN_ENV} and {JWT_SECRET_ENV} are set: the relay takes one kind of \
             credential; unset one of them"
        ))
        .into()),
        (Some(t), None) => Ok(AuthConfig::Token(t.as_str().into())),
        (None, Some(s)) => Ok(AuthConfig::JwtSecret(s.as_str().into())),
        (None, None) => Ok(AuthConfig::None),
    }
}

/// Start the relay and serve until interrupted.
pub fn run(ctx: &Context, args: &ServeArgs) -> Result<()> {
    let auth = auth_config(args)?;
    if let (Some(unix), Some(_)) = (&args.unix, &args.tls_client_ca) {
        warn_no_client_certificates_on(unix);
    }
    let mut limits = Limits::default();
    if let Some(n) = args.max_connections {
        limits.connections_max = n;
    }
    if let Some(n) = args.max_connections_per_address {
        limits.connections_per_address_max = n;
    }
    if let Some(n) = args.max_auth_failures_per_address {
        limits.auth_failures_per_address_max = n;
    }
    if let Some(n) = args.message_rate {
        limits.message_rate_per_s = n;
        limits.message_burst = limits.message_burst.max(n.saturating_mul(2));
    }
    if let Some(n) = args.message_burst {
        limits.message_burst = n;
    }
    let config = RelayConfig {
        data_dir: args.data.clone(),
        password: crate::password::hand_over(ctx.password()?).map(Into::into),
        listen: args.listen,
        tcp_listen: args.tcp_listen,
        unix: args.unix.clone(),
        auth,
        jwt_audience: args.jwt_audience.clone(),
        jwt_issuer: args.jwt_issuer.clone(),
        rules: args.rules.clone(),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
                client_crls: args.tls_client_crl.clone(),
            }),
            _ => None,
        },
        origins: args.origins.clone(),
        danger_allow_anonymous: args.danger_allow_anonymous,
        trusted_proxies: args.trusted_proxies.clone(),
        limits,
        history: blazedb::HistoryRetention {
            max_age_ms: Some(args.history_max_age),
            max_entries: Some(args.history_max_entries),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut relay = Relay::bind(config).await?;
        relay.set_gc_interval(std::time::Duration::from_millis(args.gc_interval));
        relay.set_peer_retention(std::time::Duration::from_millis(args.peer_retention));
        let (http, ws) = if relay.is_tls() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let addr = relay.local_addr();
        let mut out = Output::stdout();
        out.json(&json!({
            "event": "listening",
            "http": format!("{http}://{addr}"),
            "sync": format!("{ws}://{addr}/v1/sync"),
            "tcp": relay.tcp_addr().map(|a| a.to_string()),
            "unix": args.unix.as_ref().map(|p| p.display().to_string()),
            "data": args.data.join(blazedb_relay::limits::STORE_FILE_NAME).display().to_string(),
            "node": relay.database().node_id().to_string(),
            // Whether the store is encrypted (BLAZEDB_PASSWORD): every client's data is in
            // it, so an operator sees at startup what a stolen disk would show.
            "encrypted": relay.database().is_encrypted(),
        }))?;
        out.finish()?;
        relay.run(stop_signal()).await?;
        Ok(())
    })
}

/// Mutual TLS guards the TCP addresses only: a Unix socket has no TLS, so its clients are
/// never asked for a certificate (the socket's owner-only mode and the token guard it).
/// Said at startup, so that nobody takes `--tls-client-ca` to cover every way in.
pub(crate) fn warn_no_client_certificates_on(unix: &std::path::Path) {
    stderr_line(json!({
        "event": "warning",
        "warning": format!(
            "--tls-client-ca applies to TLS connections only: clients on the Unix socket \
             {} are not asked for a certificate (only for the token; the socket is \
             owner-only). Leave out --unix to require certificates of every client.",
            unix.display()
        ),
    }));
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen_addr;

    #[test]
    fn listen_addresses_take_ip_port_and_the_loopback_shorthands() {
        let ok = |t: &str| parse_listen_addr(t).unwrap().to_string();
        assert_eq!(ok("0.0.0.0:7420"), "0.0.0.0:7420");
        assert_eq!(ok("[::1]:7420"), "[::1]:7420");
        assert_eq!(ok("localhost:7420"), "127.0.0.1:7420");
        assert_eq!(ok("7420"), "127.0.0.1:7420");
        assert_eq!(ok(":0"), "127.0.0.1:0");
        for bad in ["example.com:7420", "localhost", "127.0.0.1", "7420000", ""] {
            let e = parse_listen_addr(bad).unwrap_err();
            assert!(
                e.contains("give IP:PORT, e.g. 127.0.0.1:7420"),
                "{bad}: {e}"
            );
        }
    }
}
