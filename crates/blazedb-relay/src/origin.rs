//! Browser origins (`Origin` headers, `--origin` entries) and request hosts (`Host` headers),
//! parsed once into types the relay compares, with the `http` crate's URI parser doing the
//! splitting (scheme, authority, path) instead of hand-written string surgery.
//!
//! What the relay accepts, and why:
//!
//! - An origin is `null` (pages without one: `file://`, sandboxed frames) or
//!   `scheme://host[:port]` of any scheme (`https`, `tauri`, `chrome-extension`, …). Browsers
//!   send exactly that: no user name, no path, no query. A `--origin` entry may end with one
//!   `/`; anything else after the authority is refused, since no `Origin` header could match
//!   it.
//! - Schemes and DNS names compare without regard to case, as browsers serialize them in
//!   lower case. A port equal to the scheme's default (`https` 443, `http` 80) is dropped, as
//!   browsers drop it: `--origin https://app.example.com:443` admits the page
//!   `https://app.example.com`.
//! - A DNS name may end with one `.` (its fully qualified form): `localhost.` is `localhost`,
//!   `app.example.com.` is `app.example.com`. Both forms reach the same server, so the same
//!   pages.
//! - A host is a DNS name (letters, digits, `-`, `_`, dot-separated non-empty labels), an IPv4
//!   address in dotted decimal, or an IPv6 address in brackets. Anything else (a user name
//!   `user@`, percent-escapes, an IPv6 zone, a port out of range or empty) is not a host.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use axum::http::uri::{Authority, Uri};

/// Longest DNS name (RFC 1035), without the trailing dot.
const DNS_NAME_BYTES_MAX: usize = 253;

/// Longest DNS label (RFC 1035).
const DNS_LABEL_BYTES_MAX: usize = 63;

/// A browser origin as the relay compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The opaque origin `null`.
    Null,
    /// `scheme://host[:port]`.
    Tuple {
        /// Lower case.
        scheme: String,
        host: Host,
        /// `None` when absent or the scheme's default.
        port: Option<u16>,
    },
}

/// The host part of an origin or of a `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// A DNS name: lower case, without a trailing dot.
    Name(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

/// A `Host` header (or a request's authority): where the client addressed the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestHost {
    pub host: Host,
    pub port: Option<u16>,
}

impl Origin {
    /// Parse an `Origin` header or a `--origin` entry; `None` when it cannot be an origin.
    pub fn parse(text: &str) -> Option<Origin> {
        if text.eq_ignore_ascii_case("null") {
            return Some(Origin::Null);
        }
        // The URI parser drops a fragment without a word; an origin has none.
        if text.contains('#') {
            return None;
        }
        let uri: Uri = text.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        // RFC 3986: a scheme starts with a letter (the URI parser lets a digit through).
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return None;
        }
        // An absolute URI's path is at least "/": "https://h" and "https://h/" both pass, a
        // longer path or a query does not.
        if uri.path_and_query().map(|p| p.as_str()) != Some("/") {
            return None;
        }
        let RequestHost { host, port } = RequestHost::from_authority(uri.authority()?)?;
        let port = port.filter(|&p| Some(p) != default_port(&scheme));
        Some(Origin::Tuple { scheme, host, port })
    }

    /// Whether this is a page served from this machine: `http(s)://` and a loopback host
    /// ([`Host::is_loopback`]), any port.
    pub fn is_loopback(&self) -> bool {
        match self {
            Origin::Null => false,
            Origin::Tuple { scheme, host, .. } => {
                matches!(scheme.as_str(), "http" | "https") && host.is_loopback()
            }
        }
    }
}

impl fmt::Display for Origin {
    /// The canonical form, which `--origin` accepts and browsers send.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Null => f.write_str("null"),
            Origin::Tuple { scheme, host, port } => {
                write!(f, "{scheme}://{host}")?;
                match port {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Host {
    /// Parse a host as it appears in an authority (IPv6 in brackets).
    fn parse(text: &str) -> Option<Host> {
        if let Some(inner) = text.strip_prefix('[') {
            return inner.strip_suffix(']')?.parse().ok().map(Host::Ipv6);
        }
        if let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Some(Host::Ipv4(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= DNS_LABEL_BYTES_MAX
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        };
        (name.len() <= DNS_NAME_BYTES_MAX && name.split('.').all(label_ok))
            .then_some(Host::Name(name))
    }

    /// Whether the host names this machine: `localhost` or a name under it (`app.localhost`),
    /// a loopback IPv4 address or `[::1]`. Names under `localhost` are loopback by RFC 6761,
    /// and browsers resolve them so without asking DNS, so a DNS rebinding site cannot take
    /// one. (Those labels must be letters, digits and inner hyphens.)
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => ip.is_loopback(),
            Host::Name(name) => {
                let Some(under) = name.strip_suffix("localhost") else {
                    return false;
                };
                if under.is_empty() {
                    return true;
                }
                let Some(labels) = under.strip_suffix('.') else {
                    return false; // "evillocalhost"
                };
                labels.split('.').all(|l| {
                    !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            }
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

impl RequestHost {
    /// Parse a `Host` header value; `None` when it is not `host[:port]`.
    pub fn parse(text: &str) -> Option<RequestHost> {
        RequestHost::from_authority(&text.parse().ok()?)
    }

    /// The host and port of an authority; `None` with a user name (no browser sends one, and
    /// `localhost:3000@evil.example.com` names evil.example.com), an empty or invalid port,
    /// or a host that is not one ([`Host::parse`]).
    fn from_authority(authority: &Authority) -> Option<RequestHost> {
        let text = authority.as_str();
        if text.contains('@') {
            return None;
        }
        let host_text = authority.host();
        let port = match &text[host_text.len()..] {
            "" => None,
            // `port_u16` is `None` for digits beyond u16 and for an empty port.
            after if after.starts_with(':') => Some(authority.port_u16()?),
            _ => return None,
        };
        Some(RequestHost {
            host: Host::parse(host_text)?,
            port,
        })
    }
}

/// The port a browser leaves out of an origin of this scheme.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Option<String> {
        Origin::parse(text).map(|o| o.to_string())
    }

    fn loopback_origin(text: &str) -> bool {
        Origin::parse(text).is_some_and(|o| o.is_loopback())
    }

    fn loopback_host(text: &str) -> bool {
        RequestHost::parse(text).is_some_and(|h| h.host.is_loopback())
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
            assert_eq!(canonical(given).as_deref(), Some(normalized), "{given}");
        }
        for o in [
            "app.example.com",
            "https://",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://app.example.com?q",
            "https://app.example.com/?q",
            "https://app.example.com#f",
            "1app://host",
            "ht tp://host",
            "file://",
            "*",
            "https://[nope]",
            "",
            "null/",
            "nul",
        ] {
            assert_eq!(canonical(o), None, "{o}");
        }
    }

    /// Ports, IPv6 literals, upper case, trailing dots, user names: each as browsers mean it.
    #[test]
    fn odd_origins_parse_as_browsers_mean_them() {
        for (given, normalized) in [
            // Upper-case schemes and hosts are the same origin.
            ("HTTPS://APP.EXAMPLE.COM", "https://app.example.com"),
            ("Tauri://LocalHost", "tauri://localhost"),
            // A default port is no port; another port stays.
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://app.example.com:80", "http://app.example.com"),
            ("https://app.example.com:80", "https://app.example.com:80"),
            ("tauri://localhost:443", "tauri://localhost:443"),
            ("http://localhost:0", "http://localhost:0"),
            // IPv6 literals, in any spelling, print canonically.
            ("http://[0:0:0:0:0:0:0:1]:3000", "http://[::1]:3000"),
            ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
            // A fully qualified name is the name.
            ("https://app.example.com.", "https://app.example.com"),
            ("http://localhost.:3000", "http://localhost:3000"),
        ] {
            assert_eq!(canonical(given).as_deref(), Some(normalized), "{given}");
        }
        for o in [
            "https://app.example.com:65536",
            "https://app.example.com:",
            "https://app.example.com:-1",
            "https://app.example.com:8o",
            "https://app.example.com..",
            "https://.app.example.com",
            "https://app..example.com",
            "http://[::1",
            "http://::1",
            "http://[fe80::1%25eth0]",
            "http://a%41.example.com",
            "http://localhost:3000@evil.example.com",
            "http://user:pass@localhost",
            "http://app.example.com:1:2",
            "https://bücher.example",
        ] {
            assert_eq!(canonical(o), None, "{o}");
        }
    }

    #[test]
    fn loopback_origins_and_hosts() {
        for o in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://127.1.2.3",
            "http://[::1]:7420",
            "http://[::1]",
            "HTTP://LOCALHOST",
            "http://localhost.:3000",
        ] {
            assert!(loopback_origin(o), "{o}");
        }
        for o in [
            "null",
            "file://",
            "https://evil.example.com",
            "http://localhost.evil.example.com",
            "http://127.0.0.1.evil.example.com",
            "http://localhost:3000@evil.example.com",
            "http://[::2]:7420",
            "http://[::ffff:127.0.0.1]",
            "ws://localhost",
            "tauri://localhost",
            "http://0.0.0.0:7420",
            "http://127.1",
        ] {
            assert!(!loopback_origin(o), "{o}");
        }
        assert!(loopback_host("LOCALHOST:7420"));
        assert!(loopback_host("localhost."));
        assert!(loopback_host("[::1]:7420"));
        assert!(loopback_host("127.0.0.1"));
        for h in [
            "rebind.evil.example.com:7420",
            "localhost:",
            "localhost:99999",
            "localhost:x",
            "user@localhost",
            "localhost:80@evil.example.com",
            "[::1]x",
            "::1",
            "",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    /// Names under `localhost` are loopback (RFC 6761): browsers resolve them without DNS.
    #[test]
    fn subdomains_of_localhost_are_loopback() {
        for o in [
            "http://app.localhost:3000",
            "https://a.b.localhost",
            "http://my-app.localhost",
        ] {
            assert!(loopback_origin(o), "{o}");
        }
        assert!(loopback_host("app.localhost:7541"));
        assert!(loopback_host("App.LocalHost"));
        for a in [
            ".localhost",
            "app..localhost",
            "-app.localhost",
            "app.localhost.evil.example.com",
            "evillocalhost",
            "app.localhost:",
            "a_b.localhost",
        ] {
            assert!(!loopback_host(a), "{a}");
        }
    }
}
