//! What a relay is told at startup: [`RelayConfig`], one field per `blazedb serve` flag, plus
//! the tunable [`Limits`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::forwarded::TrustedProxy;

use crate::limits::{
    AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT, AUTH_FAILURE_WINDOW_MS_DEFAULT, CONNECTIONS_MAX_DEFAULT,
    CONNECTIONS_PER_ADDRESS_MAX_DEFAULT, DATA_DIR_DEFAULT, HANDSHAKE_TIMEOUT_MS_DEFAULT,
    LISTEN_ADDR_DEFAULT, MESSAGE_BURST_DEFAULT, MESSAGE_RATE_PER_S_DEFAULT,
    STORE_PROBE_INTERVAL_MS_DEFAULT,
};

/// How a relay runs. `RelayConfig::default()` is `blazedb serve` without flags.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Directory holding the relay's store (`relay.db`); created if missing (`--data`).
    pub data_dir: PathBuf,
    /// Password of the store (SQLCipher); `None`: unencrypted (`BLAZEDB_PASSWORD`).
    pub password: Option<Secret>,
    /// HTTP and WebSocket address (`--listen`). Port 0 picks a free port; see
    /// [`crate::Relay::local_addr`].
    pub listen: SocketAddr,
    /// Also accept raw protocol frames over TCP here (`--tcp-listen`), TLS when `tls` is set.
    /// The token (or JWT) travels in HELLO.
    pub tcp_listen: Option<SocketAddr>,
    /// Also accept raw protocol frames on this Unix domain socket (`--unix`).
    pub unix: Option<PathBuf>,
    /// Who may connect (`--token`, `--token-file`, `--jwt-secret`, `--jwt-secret-file`,
    /// `--jwt-public-key`).
    pub auth: AuthConfig,
    /// Expected `aud` claim of JWTs (`--jwt-audience`); `None`: not checked.
    pub jwt_audience: Option<String>,
    /// Expected `iss` claim of JWTs (`--jwt-issuer`); `None`: not checked.
    pub jwt_issuer: Option<String>,
    /// Row-level access rules (`--rules`), read again when the file changes; `None`: every
    /// authenticated client may read and write everything.
    pub rules: Option<PathBuf>,
    /// Serve HTTPS/WSS (and TLS on `tcp_listen`) with this certificate (`--tls-cert`,
    /// `--tls-key`).
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to open sync sessions and query (`--origin`, repeatable).
    /// Empty: any origin when credentials are required; without authentication, only
    /// loopback origins (`http(s)://localhost` or a name under it, `127.0.0.1`, `[::1]`, any
    /// port), since
    /// browsers apply no CORS to WebSockets. Requests without an `Origin` header
    /// (non-browser clients) are always allowed; authentication still applies. Without
    /// authentication on a loopback address, requests must also be addressed to a loopback
    /// name (`Host`), against DNS rebinding.
    pub origins: Vec<String>,
    /// Run without authentication on an address other than loopback
    /// (`--danger-allow-anonymous`): anyone who can reach the relay reads and writes everything
    /// the rules allow.
    pub danger_allow_anonymous: bool,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`,
    /// repeatable). An HTTP request whose TCP peer is in one of these ranges counts as coming
    /// from the right-most address of that header not in them, for the per-address failure
    /// limit and the log; from any other peer the header is ignored, so a client cannot
    /// choose its address. Connection slots (`Limits::connections_per_address_max`) and the
    /// raw TCP listener still count TCP peers: they are taken before any header is read.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// How much change history the relay's store keeps (`--history-max-age`,
    /// `--history-max-entries`); sync never needs it.
    pub history: blazedb::HistoryRetention,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            password: None,
            listen: LISTEN_ADDR_DEFAULT.parse().expect("valid default address"),
            tcp_listen: None,
            unix: None,
            auth: AuthConfig::None,
            jwt_audience: None,
            jwt_issuer: None,
            rules: None,
            tls: None,
            origins: Vec::new(),
            danger_allow_anonymous: false,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            history: blazedb::HistoryRetention::default(),
        }
    }
}

/// How clients authenticate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthConfig {
    /// No authentication: every client is accepted, `$auth` is empty. Allowed on loopback
    /// addresses only, unless [`RelayConfig::danger_allow_anonymous`].
    #[default]
    None,
    /// One static bearer token; `$auth.sub` is `"token"`.
    Token(Secret),
    /// The static bearer tokens in this file, one a line (`--token-file`; blank lines and the
    /// whitespace around a token are ignored): a client presents any of them. Read again
    /// when the file changes, so a token is rotated without a restart: the new one added on
    /// a line of its own, clients moved over, the old one taken out.
    TokenFile(PathBuf),
    /// JWTs signed with this HMAC secret (HS256, HS384, HS512).
    JwtSecret(Secret),
    /// JWTs signed with any of the HMAC secrets in this file, one a line
    /// (`--jwt-secret-file`; blank lines and the whitespace around a secret are ignored).
    /// Read again when the file changes, as [`AuthConfig::TokenFile`] is.
    JwtSecretFile(PathBuf),
    /// JWTs signed with the key whose public half is in this PEM file: RSA (RS256/384/512,
    /// PS256/384/512), Ed25519 (EdDSA) or an EC P-256/P-384 key (ES256/ES384).
    JwtPublicKey(PathBuf),
}

/// A TLS certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first. With `key`, read again when either file changes (a
    /// renewed certificate is served from the next handshake on).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set (`--tls-client-ca`), every client must present a certificate signed by a CA
    /// in this PEM file (mutual TLS), on HTTPS/WSS and on TLS over TCP alike; credentials
    /// (token or JWT) are still checked.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists of that CA (`--tls-client-crl`, PEM): client
    /// certificates on them are refused, read again whenever a file changes, and then a
    /// session open with a certificate they now revoke ends
    /// ([`blazedb_net::transport::tls::RevocationChecked`]).
    pub client_crls: Vec<PathBuf>,
}

/// Limits and timeouts a deployment may want to change; every other limit is a constant in
/// [`crate::limits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections at once (all listeners together).
    pub connections_max: usize,
    /// Most connections at once from one client IP address; 0: no per-address limit.
    pub connections_per_address_max: usize,
    /// Time for the TLS handshake, for the HTTP request head (and a query's body), and from
    /// connecting to the client's HELLO, each, in ms.
    pub handshake_timeout_ms: u64,
    /// A session that receives nothing for this long ends (ms; the session pings every
    /// `ping_interval_ms` so live peers always send something).
    pub idle_timeout_ms: u64,
    /// The relay pings a session it has sent nothing to for this long, in ms.
    pub ping_interval_ms: u64,
    /// Sustained protocol messages per second per connection; 0: unlimited.
    pub message_rate_per_s: u32,
    /// Burst of protocol messages above the sustained rate.
    pub message_burst: u32,
    /// Failed credentials one client address may present within `auth_failure_window_ms`
    /// before its next attempts are refused, unread, for that long; 0: no limit. Behind a
    /// reverse proxy, the client address is the one the proxy forwards when it is listed in
    /// [`RelayConfig::trusted_proxies`].
    pub auth_failures_per_address_max: u32,
    /// The window of `auth_failures_per_address_max`, and how long an address that reached
    /// it is refused, in ms.
    pub auth_failure_window_ms: u64,
    /// How often the relay asks the store's file system whether it still takes writes
    /// (creating an empty file in the data directory), in ms; 0: never (then a file system
    /// turned read-only is seen at the next failed write only).
    pub store_probe_interval_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: blazedb::limits::IDLE_TIMEOUT_MS_DEFAULT,
            ping_interval_ms: blazedb::limits::PING_INTERVAL_MS_DEFAULT,
            message_rate_per_s: MESSAGE_RATE_PER_S_DEFAULT,
            message_burst: MESSAGE_BURST_DEFAULT,
            auth_failures_per_address_max: AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT,
            auth_failure_window_ms: AUTH_FAILURE_WINDOW_MS_DEFAULT,
            store_probe_interval_ms: STORE_PROBE_INTERVAL_MS_DEFAULT,
        }
    }
}

/// A string that is never printed (tokens, secrets, passwords): `Debug` shows `"***"`; its
/// memory is overwritten with zeros when it is dropped, so a secret does not linger in freed
/// heap a later allocation or a core dump could show.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::new(s)
    }
}
