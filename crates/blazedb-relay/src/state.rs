//! What every connection of a relay shares: the store, authentication, rules, metrics, limits,
//! the connection slots and the registry of running sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use blazedb::Database;
use blazedb_net::SessionMonitor;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::metrics::{Metrics, Transport};
use crate::rules::Rules;

/// Shared by all connections of one relay.
#[derive(Debug)]
pub(crate) struct State {
    pub db: Arc<Database>,
    pub auth: Arc<Authenticator>,
    pub rules: Arc<Rules>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Allowed browser origins, lowercase, without a trailing `/`; empty: any when
    /// credentials are required, only loopback origins when not ([`State::origin_allowed`]).
    pub origins: Vec<String>,
    /// Without authentication, on a loopback HTTP address: requests must be addressed to a
    /// loopback name ([`State::host_allowed`]).
    pub loopback_hosts_only: bool,
    pub started: Instant,
    /// Cancelled when the relay shuts down; sessions get child tokens.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per open connection (`Limits::connections_max`).
    pub slots: Arc<Semaphore>,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next_session: AtomicU64,
}

/// A running sync session, for `/health`, lag metrics and (later) the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct SessionEntry {
    pub monitor: SessionMonitor,
    #[allow(dead_code)] // Read by the dashboard (issue: live dashboard page).
    pub transport: Transport,
}

impl State {
    pub fn new(
        db: Arc<Database>,
        auth: Authenticator,
        rules: Rules,
        limits: Limits,
        origins: Vec<String>,
        http_on_loopback: bool,
    ) -> State {
        State {
            loopback_hosts_only: !auth.required() && http_on_loopback,
            db,
            auth: Arc::new(auth),
            rules: Arc::new(rules),
            metrics: Arc::new(Metrics::new()),
            slots: Arc::new(Semaphore::new(limits.connections_max)),
            limits,
            origins,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
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

    /// The running sessions.
    pub fn sessions(&self) -> Vec<SessionEntry> {
        self.lock_sessions().values().cloned().collect()
    }

    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Size of the store file and its write-ahead log, in bytes.
    pub fn store_bytes(&self) -> u64 {
        let path = self.db.path();
        let wal = format!("{}-wal", path.display());
        [path.to_owned(), wal.into()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether a browser origin may connect. Requests without `Origin` are not from a
    /// browser and always may; with an allow-list, exactly its origins may. Without one,
    /// any origin may when credentials are required (a page gets no further than they
    /// let it); without credentials only pages served from this machine may, because
    /// browsers apply no CORS to WebSockets: any site the user visits could otherwise read
    /// and write the whole store.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if !self.origins.is_empty() {
            return self.origins.contains(&origin);
        }
        self.auth.required() || is_loopback_origin(&origin)
    }

    /// Whether a request addressed to `host` (its `Host` header) is served. A relay without
    /// authentication on loopback answers only requests addressed to a loopback name:
    /// another name that resolves to 127.0.0.1 is a DNS rebinding attack, a page of that
    /// site taking the relay for its own origin. A request without a host (not a browser)
    /// is served.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        !self.loopback_hosts_only || host.is_none_or(is_loopback_authority)
    }
}

/// Whether an origin (lowercase, without a trailing `/`) is a page served from this machine:
/// `http(s)://localhost` or a subdomain of it, `http(s)://127.x.x.x` or `http(s)://[::1]`,
/// any port.
fn is_loopback_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(is_loopback_authority)
}

/// Whether `HOST[:PORT]` names this machine: `localhost` or a name under it
/// (`app.localhost`), a loopback IPv4 address or `[::1]`. Names under `localhost` are
/// loopback by RFC 6761, and browsers resolve them so without asking DNS, so a rebinding
/// site cannot take one.
fn is_loopback_authority(authority: &str) -> bool {
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, rest)) = bracketed.split_once(']') else {
            return false;
        };
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port);
        return port_ok
            && ip
                .parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| ip.is_loopback());
    }
    let host = match authority.split_once(':') {
        Some((host, port)) if is_port(port) => host,
        Some(_) => return false,
        None => authority,
    };
    is_localhost_name(host)
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `localhost`, or a DNS name under it (`app.localhost`, `a.b.localhost`).
fn is_localhost_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let Some(labels) = host.strip_suffix("localhost") else {
        return false;
    };
    if labels.is_empty() {
        return true;
    }
    let Some(labels) = labels.strip_suffix('.') else {
        return false;
    };
    labels.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// An `--origin` value as the relay compares it with the `Origin` header (lowercase, no
/// trailing `/`), or `None` when it cannot be an origin. Browsers send `scheme://host[:port]`
/// for pages of any scheme: web sites (`https://app.example.com`), desktop apps
/// (`tauri://localhost`, `app://…`) and extensions (`chrome-extension://ID`,
/// `moz-extension://UUID`); and the literal `null` for pages without one (files, Electron
/// pages loaded from `file://`, sandboxed frames). A path, user name or query is refused:
/// no `Origin` header has one, so such an entry would never match.
pub(crate) fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if origin == "null" {
        return Some(origin);
    }
    let (scheme, authority) = origin.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let host = match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            host
        }
        _ => authority,
    };
    let host_ok = if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ip.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    (scheme_ok && host_ok).then_some(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_and_hosts() {
        for o in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://127.1.2.3",
            "http://[::1]:7420",
            "http://[::1]",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        for o in [
            "null",
            "file://",
            "https://evil.example.com",
            "http://localhost.evil.example.com",
            "http://127.0.0.1.evil.example.com",
            "http://localhost:3000@evil.example.com",
            "http://[::2]:7420",
            "ws://localhost",
            "http://0.0.0.0:7420",
        ] {
            assert!(!is_loopback_origin(o), "{o}");
        }
        assert!(is_loopback_authority("LOCALHOST:7420"));
        assert!(!is_loopback_authority("rebind.evil.example.com:7420"));
        assert!(!is_loopback_authority("localhost:"));
    }

    /// Names under `localhost` are loopback (RFC 6761): browsers resolve them without DNS.
    #[test]
    fn subdomains_of_localhost_are_loopback() {
        for o in [
            "http://app.localhost:3000",
            "https://a.b.localhost",
            "http://my-app.localhost",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        assert!(is_loopback_authority("app.localhost:7541"));
        assert!(is_loopback_authority("App.LocalHost"));
        for a in [
            ".localhost",
            "app..localhost",
            "-app.localhost",
            "app.localhost.evil.example.com",
            "evillocalhost",
            "app.localhost:",
            "a_b.localhost",
        ] {
            assert!(!is_loopback_authority(a), "{a}");
        }
    }

    #[test]
    fn origins_of_any_scheme_and_null_can_be_allowed() {
        for (given, normalized) in [
            ("https://App.Example.com/", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("tauri://localhost", "tauri://localhost"),
            (
                "chrome-extension://abcdefghijklmnop",
                "chrome-extension://abcdefghijklmnop",
            ),
            (
                "moz-extension://6f1e2d3c-0000-4a5b-9c8d-123456789abc",
                "moz-extension://6f1e2d3c-0000-4a5b-9c8d-123456789abc",
            ),
            ("app://my.app", "app://my.app"),
            ("vscode-webview+x.y://h", "vscode-webview+x.y://h"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("null", "null"),
            ("NULL", "null"),
        ] {
            assert_eq!(
                normalize_origin(given).as_deref(),
                Some(normalized),
                "{given}"
            );
        }
        for o in [
            "app.example.com",
            "https://",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://app.example.com?q",
            "1app://host",
            "ht tp://host",
            "file://",
            "*",
            "https://[nope]",
        ] {
            assert_eq!(normalize_origin(o), None, "{o}");
        }
    }
}
