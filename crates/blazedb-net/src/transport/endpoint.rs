//! Where a peer is: the URL forms `blazedb sync DB URL` accepts, parsed once into an
//! [`Endpoint`] so that the rest of the code never looks at a string again.
//!
//! | URL                        | transport |
//! |----------------------------|-----------|
//! | `tcp://host:port`          | plain TCP |
//! | `tls://host:port`          | TLS over TCP (rustls) |
//! | `unix:///absolute/path`    | Unix domain socket (also `unix:/absolute/path`, `unix:relative/path`) |
//! | `ws://host[:port][/path]`  | WebSocket, one frame per binary message |
//! | `wss://host[:port][/path]` | WebSocket over TLS |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::transport::TransportError;

/// A parsed peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://host:port`.
    Tcp(HostPort),
    /// `tls://host:port`: TCP, then a TLS handshake; `host` is the name checked against the
    /// server's certificate.
    Tls(HostPort),
    /// `unix:///path`: a Unix domain socket.
    Unix(PathBuf),
    /// `ws://` or `wss://` URL, kept whole for the WebSocket handshake.
    WebSocket(WsUrl),
}

/// A host name (or IP address) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A WebSocket URL split into what the connection needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WsUrl {
    /// `wss://`: TLS under the WebSocket.
    pub secure: bool,
    /// Where to open the TCP connection (the port defaults to 80 / 443).
    pub addr: HostPort,
    /// The whole URL as given, for the HTTP upgrade request.
    pub url: String,
}

impl Endpoint {
    /// The URL scheme of this endpoint.
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Tls(_) => "tls",
            Endpoint::Unix(_) => "unix",
            Endpoint::WebSocket(w) if w.secure => "wss",
            Endpoint::WebSocket(_) => "ws",
        }
    }

    /// Whether a string looks like a URL this module handles (`scheme://` or `unix:`), as
    /// opposed to a file path. Used by the CLI to tell `sync DB URL` from `sync DB_A DB_B`.
    pub fn looks_like_url(s: &str) -> bool {
        // Bytes, not a `str` slice: a file name such as `données.db` has no char boundary
        // where a scheme would end.
        ["tcp://", "tls://", "unix:", "ws://", "wss://"]
            .iter()
            .any(|p| {
                s.as_bytes()
                    .get(..p.len())
                    .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
            })
    }
}

impl FromStr for Endpoint {
    type Err = TransportError;

    fn from_str(url: &str) -> Result<Endpoint, TransportError> {
        // The URL is named in the error without the credentials it may hold.
        let bad = |reason: &str| TransportError::InvalidUrl {
            url: without_credentials(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = match url.find(':') {
            Some(i) => (url[..i].to_ascii_lowercase(), &url[i + 1..]),
            None => {
                return Err(bad(
                    "no scheme: use tcp://, tls://, unix://, ws:// or wss://",
                ))
            }
        };
        match scheme.as_str() {
            "unix" => {
                // unix:///abs/path (empty authority), unix:/abs/path or unix:rel/path.
                let path = match rest.strip_prefix("//") {
                    // `unix://tmp/s.sock`: "tmp" stands where a URL has its host, so whether
                    // /tmp/s.sock or ./tmp/s.sock was meant cannot be told.
                    Some(p) if !p.is_empty() && !p.starts_with('/') => {
                        return Err(bad(&format!(
                            "a unix:// URL has three slashes before an absolute path: write \
                             unix:///{p} for the socket /{p}, or unix:{p} for one relative to \
                             the current directory"
                        )))
                    }
                    Some(p) => p,
                    None => rest,
                };
                if path.is_empty() {
                    return Err(bad("no socket path: write unix:///path/to/socket"));
                }
                Ok(Endpoint::Unix(PathBuf::from(path)))
            }
            "tcp" | "tls" => {
                let rest = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("expected scheme://host:port"))?;
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                if rest.contains('/') {
                    return Err(bad("a tcp:// or tls:// address has no path"));
                }
                let hp = parse_host_port(rest, None).map_err(|r| bad(&r))?;
                Ok(if scheme == "tcp" {
                    Endpoint::Tcp(hp)
                } else {
                    Endpoint::Tls(hp)
                })
            }
            "ws" | "wss" => {
                let secure = scheme == "wss";
                let rest = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("expected ws://host[:port]/path"))?;
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                if let Some(name) = token_parameter(rest) {
                    // Everything that names the peer (errors, events, summaries) would
                    // print the token.
                    return Err(bad(&format!(
                        "a token in the URL ({name}=) would be printed wherever the peer is \
                         named: remove it and give the token with --token (or \
                         BLAZEDB_TOKEN), which is sent in the upgrade's Authorization header"
                    )));
                }
                let port = if secure { 443 } else { 80 };
                let addr = parse_host_port(authority, Some(port)).map_err(|r| bad(&r))?;
                // The upgrade request is built from `url`, and the WebSocket library takes
                // only a lower-case scheme: `WSS://host` must work as `wss://host`.
                Ok(Endpoint::WebSocket(WsUrl {
                    secure,
                    addr,
                    url: format!("{scheme}://{rest}"),
                }))
            }
            // A relay's address as a browser would write it: its sync endpoint is the same
            // URL with the WebSocket scheme.
            "http" | "https" => {
                let ws = if scheme == "https" { "wss" } else { "ws" };
                Err(bad(&format!(
                    "unknown scheme {scheme:?}: a relay's sync endpoint is a WebSocket URL: \
                     write {}",
                    without_credentials(&format!("{ws}:{rest}"))
                )))
            }
            other => Err(bad(&format!(
                "unknown scheme {other:?}: use tcp://, tls://, unix://, ws:// or wss://"
            ))),
        }
    }
}

/// The query parameters that carry a credential (`?token=` is what a relay takes from
/// browsers, `access_token=` the OAuth name).
const TOKEN_PARAMETERS: [&str; 2] = ["token", "access_token"];

/// The name of the first credential parameter in the query of `rest` (a URL after its
/// `scheme://`), as written.
fn token_parameter(rest: &str) -> Option<&str> {
    let query = rest.split('#').next()?.split_once('?')?.1;
    query
        .split('&')
        .map(|pair| pair.split('=').next().unwrap_or(""))
        .find(|name| {
            TOKEN_PARAMETERS
                .iter()
                .any(|t| name.eq_ignore_ascii_case(t))
        })
}

/// `url` with the credentials it may hold replaced by `***`: a `user:password@` before the
/// host, the values of `token=` and `access_token=` in the query.
fn without_credentials(url: &str) -> String {
    let (head, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    let (path, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, format!("#{f}")),
        None => (path, String::new()),
    };
    let path = match path.split_once('?') {
        Some((p, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if TOKEN_PARAMETERS
                            .iter()
                            .any(|t| name.eq_ignore_ascii_case(t)) =>
                    {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{p}?{}", query.join("&"))
        }
        None => path.to_owned(),
    };
    format!("{head}{authority}{path}{fragment}")
}

/// The URL of the Unix socket at `path`: `unix:///abs/path` for an absolute path,
/// `unix:rel/path` for a relative one (`unix://rel/path` would put `rel` where a URL has
/// its host).
pub fn unix_url(path: &std::path::Path) -> String {
    if path.is_absolute() {
        format!("unix://{}", path.display())
    } else {
        format!("unix:{}", path.display())
    }
}

/// `host:port`, `[v6]:port`, or `host` alone when a default port is given.
fn parse_host_port(s: &str, default_port: Option<u16>) -> Result<HostPort, String> {
    if s.contains('@') {
        return Err("credentials in the URL are not supported: use --token".into());
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']').ok_or("unclosed [ in the address")?;
        let host = &v6[..end];
        match &v6[end + 1..] {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {p:?}"))?,
        (None, Some(d)) => d,
        (None, None) => return Err("no port: write host:port".into()),
    };
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) => write!(f, "tcp://{hp}"),
            Endpoint::Tls(hp) => write!(f, "tls://{hp}"),
            Endpoint::Unix(p) => f.write_str(&unix_url(p)),
            Endpoint::WebSocket(w) => f.write_str(&w.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "tcp://127.0.0.1:7421".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp(hp("127.0.0.1", 7421))
        );
        assert_eq!(
            "TLS://example.com:443/".parse::<Endpoint>().unwrap(),
            Endpoint::Tls(hp("example.com", 443))
        );
        assert_eq!(
            "tcp://[::1]:9".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp(hp("::1", 9))
        );
        assert_eq!(
            "unix:///tmp/a.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            "unix:rel.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("rel.sock".into())
        );
        let Endpoint::WebSocket(w) = "wss://relay.example/v1/sync".parse().unwrap() else {
            panic!("not ws")
        };
        assert!(w.secure);
        assert_eq!(w.addr, hp("relay.example", 443));
        let Endpoint::WebSocket(w) = "ws://127.0.0.1:7420/v1/sync?x=1".parse().unwrap() else {
            panic!("not ws")
        };
        assert_eq!(w.addr, hp("127.0.0.1", 7420));
        assert_eq!(
            "tcp://[::1]:9".parse::<Endpoint>().unwrap().to_string(),
            "tcp://[::1]:9"
        );
    }

    /// A scheme in capitals is the same scheme, down to the upgrade request (the WebSocket
    /// library takes only `ws`/`wss`); a file name with non-ASCII characters where a scheme
    /// would end is a file name, not a panic.
    #[test]
    fn schemes_in_any_case_and_non_ascii_file_names() {
        let Endpoint::WebSocket(w) = "WSS://relay.example/v1/sync".parse().unwrap() else {
            panic!("not ws")
        };
        assert!(w.secure);
        assert_eq!(w.url, "wss://relay.example/v1/sync");
        let Endpoint::WebSocket(w) = "Ws://h:1/p".parse().unwrap() else {
            panic!("not ws")
        };
        assert_eq!(w.url, "ws://h:1/p");
        for file in ["données.db", "abcdé.db", "notesé.db", "é"] {
            assert!(!Endpoint::looks_like_url(file), "{file}");
        }
        assert!(Endpoint::looks_like_url("WS://h/p"));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for url in [
            "a.db",
            "http://x:1",
            "tcp://host",
            "tcp://host:99999",
            "tcp://:80",
            "tcp://h:1/path",
            "tcp://user@h:1",
            "unix://",
            "tls:host:1",
        ] {
            assert!(url.parse::<Endpoint>().is_err(), "{url}");
        }
    }

    /// A token in a ws:// URL would be printed wherever the peer is named: refused, and the
    /// refusal names the URL without it (as without a `user:password@`).
    #[test]
    fn refuses_credentials_in_the_url_without_repeating_them() {
        for url in [
            "ws://127.0.0.1:7420/v1/sync?token=S3CRET",
            "wss://relay.example/v1/sync?x=1&Access_Token=S3CRET#f",
            "ws://h/?TOKEN=S3CRET",
            "tcp://user:S3CRET@h:1",
            "ws://user:S3CRET@h/v1/sync",
        ] {
            let e = url.parse::<Endpoint>().unwrap_err().to_string();
            assert!(!e.contains("S3CRET"), "{url}: {e}");
            assert!(e.contains("--token"), "{url}: {e}");
        }
        // Nor in the URL suggested for another scheme.
        let e = "https://relay.example/v1/sync?token=S3CRET"
            .parse::<Endpoint>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("write wss://relay.example/v1/sync?token=***") && !e.contains("S3CRET"),
            "{e}"
        );
        let e = "wss://relay.example/v1/sync?x=1&Access_Token=S3CRET#f"
            .parse::<Endpoint>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"wss://relay.example/v1/sync?x=1&Access_Token=***#f\""),
            "{e}"
        );
        // Other parameters, and names that only contain "token", are the URL's own.
        for url in ["ws://h/v1/sync?x=1", "ws://h/v1/sync?tokens=2&my_token=3"] {
            assert!(url.parse::<Endpoint>().is_ok(), "{url}");
        }
    }

    /// `unix://tmp/s.sock` cannot be told from a host "tmp": refused with the two forms it
    /// may have meant; `unix:/abs` is absolute, and a relative path is written back as
    /// `unix:rel`, which parses to the same path.
    #[test]
    fn unix_urls_with_a_host_part_are_refused_with_the_right_forms() {
        let e = "unix://tmp/s.sock"
            .parse::<Endpoint>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unix:///tmp/s.sock for the socket /tmp/s.sock"),
            "{e}"
        );
        assert!(e.contains("unix:tmp/s.sock"), "{e}");
        assert_eq!(
            "unix:/tmp/s.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/s.sock".into())
        );
        let rel = Endpoint::Unix("d/s.sock".into());
        assert_eq!(rel.to_string(), "unix:d/s.sock");
        assert_eq!(rel.to_string().parse::<Endpoint>().unwrap(), rel);
        let abs = Endpoint::Unix("/d/s.sock".into());
        assert_eq!(abs.to_string(), "unix:///d/s.sock");
        assert_eq!(abs.to_string().parse::<Endpoint>().unwrap(), abs);
    }

    #[test]
    fn tells_urls_from_paths() {
        assert!(Endpoint::looks_like_url("tcp://h:1"));
        assert!(Endpoint::looks_like_url("unix:///s"));
        assert!(Endpoint::looks_like_url("WSS://h"));
        assert!(!Endpoint::looks_like_url("b.db"));
        assert!(!Endpoint::looks_like_url("/tmp/tcp/b.db"));
        assert!(!Endpoint::looks_like_url("C:\\x.db"));
    }
}
