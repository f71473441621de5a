//! The log lines of what clients can make happen in a loop, throttled: sessions that end
//! badly (`session_closed`), HTTP requests refused before a session or a query begins
//! (`request_refused`: no or a wrong credential, an address refused for too many wrong ones,
//! an origin or host not served, a query body
//! too large, too slow or invalid, a query that waited too long for its turn) and connections
//! refused for a connection limit (`connection_refused`).
//!
//! A client that reconnects in a loop with a bad token, a bad HELLO or garbage made the relay
//! write one line per attempt (a resource audit, 2026-12: 5,000 lines in 0.6 s from one
//! client), which fills the disk and buries every other line. Now, per [`LogKey`] (an event
//! and its reason), the first [`CLOSE_LOG_LINES_PER_WINDOW`] of a window are logged in full;
//! the rest are only counted, and when the window ends one `<event>_suppressed` line per key
//! says how many were left out and which client addresses most of them came from. So a key
//! writes at most `CLOSE_LOG_LINES_PER_WINDOW + 1` lines per window ([`CLOSE_LOG_WINDOW_MS`])
//! however fast clients fail, and the operator still sees that a loop is going on and from
//! where. `/metrics` counts every failure whatever is logged.
//!
//! ```text
//!  something to log ─► admit(key, client) ─► true:  print its line in full
//!                                         └─► false: counted, client noted
//!  every CLOSE_LOG_WINDOW_MS, and at shutdown ─► end_window() ─► one summary per key
//! ```
//!
//! Sans-IO: the relay calls [`LogThrottle::admit`] for each line it would print, and
//! [`LogThrottle::end_window`] when a window ends; this type reads no clock and prints
//! nothing.
//!
//! Memory is bounded whatever clients do: one window per key (a fixed set), each noting at
//! most [`CLOSE_LOG_CLIENTS_MAX`] addresses. Nothing is kept per address, which a client
//! spreading over many addresses (an IPv6 prefix holds billions) would grow.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limits::{
    CLOSE_LOG_CLIENTS_MAX, CLOSE_LOG_LINES_PER_WINDOW, CLOSE_LOG_WINDOW_MS, LOG_MESSAGE_BYTES_MAX,
};
use crate::metrics::CloseReason;
use crate::slots::Refused;

/// Which lines of the current window are logged, and what the others were.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    /// At most one entry per [`LogKey`].
    windows: HashMap<LogKey, Window>,
}

/// What a throttled line reports: its event and reason. Each key has a budget and a summary
/// of its own, so a flood of one kind (bad tokens in HELLO over TCP) hides neither the first
/// lines nor the count of another (bad tokens on `/v1/sync`). A fixed set: 7 close reasons,
/// 9 request refusals, 2 connection limits, refused client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LogKey {
    /// `session_closed`: a session that ended badly, by its close reason.
    Closed(CloseReason),
    /// `request_refused`: an HTTP request refused before a session or a query began.
    Request(RequestRefusal),
    /// `connection_refused`: a connection refused for a connection limit.
    Connection(Refused),
    /// `tls_refused`: a TLS handshake that failed on the client's certificate (mutual TLS:
    /// none, another CA's, expired, revoked, or a revocation list that cannot be read).
    TlsClientCertificate,
}

/// Why an HTTP request was refused before it reached a session or a query began, or a query
/// before it ran; [`Self::code`] is the `code` of the JSON error the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RequestRefusal {
    /// No credential, or one that does not verify (`401`).
    AuthFailed,
    /// An attempt from an address that presented too many wrong credentials lately,
    /// refused without looking at its credential (`429`, `blazedb_net::auth_failures`).
    AuthRateLimited,
    /// A browser origin the relay does not allow (`403`).
    OriginNotAllowed,
    /// A `Host` a relay without authentication does not answer (`403`, DNS rebinding).
    HostNotAllowed,
    /// A `/v1/query` body over `QUERY_BODY_BYTES_MAX` (`413`).
    BodyTooLarge,
    /// A `/v1/query` body that did not arrive within the handshake timeout (`408`).
    BodyTimeout,
    /// A `/v1/query` body that is not a query: bad JSON, an unknown key, an impossible
    /// collection name, limit or sort (`400`).
    InvalidRequest,
    /// A `/v1/query` `where` that does not parse or names a parameter (`400`).
    InvalidExpression,
    /// A query that waited `QUERY_TURN_WAIT_MS` for its turn (`503`).
    Busy,
}

/// One key's window.
#[derive(Debug, Default)]
struct Window {
    /// Lines logged in full; at most [`CLOSE_LOG_LINES_PER_WINDOW`].
    logged: u32,
    /// Lines counted but not logged.
    suppressed: u64,
    /// Where the suppressed ones came from (`None`: the Unix socket), with a count
    /// each: at most [`CLOSE_LOG_CLIENTS_MAX`] entries, kept by the space-saving algorithm
    /// (Metwally et al., 2005). An address not in the table takes the place of the one with
    /// the lowest count and inherits that count plus one, so every address behind more than
    /// `1 / CLOSE_LOG_CLIENTS_MAX` of the suppressed sessions is in the table, and a count
    /// overstates by at most the count it inherited.
    clients: Vec<(Option<IpAddr>, u64)>,
}

impl LogThrottle {
    /// Whether a line for `key`, from `client` (`None`: the Unix socket), is logged in full;
    /// if not, it is counted for the window's summary.
    pub fn admit(&mut self, key: LogKey, client: Option<IpAddr>) -> bool {
        let window = self.windows.entry(key).or_default();
        if window.logged < CLOSE_LOG_LINES_PER_WINDOW {
            window.logged += 1;
            return true;
        }
        window.suppressed += 1;
        window.note(client);
        false
    }

    /// End the window: one `<event>_suppressed` line for each key that had lines left out
    /// (in the order of the events' and reasons' names), and a new window for all.
    pub fn end_window(&mut self) -> Vec<serde_json::Value> {
        let mut ended: Vec<_> = self
            .windows
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .collect();
        ended.sort_by_key(|(key, _)| (key.event(), key.reason()));
        ended
            .into_iter()
            .map(|(key, mut w)| {
                w.clients.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
                serde_json::json!({
                    "event": format!("{}_suppressed", key.event()),
                    "reason": key.reason(),
                    "suppressed": w.suppressed,
                    "logged": w.logged,
                    "window_ms": CLOSE_LOG_WINDOW_MS,
                    // The addresses most of them came from, the most frequent first.
                    "clients": w.clients.iter().map(|(ip, _)| match ip {
                        Some(ip) => ip.to_string(),
                        None => "unix".to_owned(),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect()
    }
}

impl LogKey {
    /// The `event` of its lines.
    pub fn event(self) -> &'static str {
        match self {
            LogKey::Closed(_) => "session_closed",
            LogKey::Request(_) => "request_refused",
            LogKey::Connection(_) => "connection_refused",
            LogKey::TlsClientCertificate => "tls_refused",
        }
    }

    /// The `reason` of its lines.
    pub fn reason(self) -> &'static str {
        match self {
            LogKey::Closed(reason) => reason.as_str(),
            LogKey::Request(refusal) => refusal.code(),
            LogKey::Connection(why) => why.code(),
            LogKey::TlsClientCertificate => "client_certificate",
        }
    }
}

impl RequestRefusal {
    /// Every refusal, for metrics that start at 0.
    pub const ALL: [RequestRefusal; 9] = [
        RequestRefusal::AuthFailed,
        RequestRefusal::AuthRateLimited,
        RequestRefusal::OriginNotAllowed,
        RequestRefusal::HostNotAllowed,
        RequestRefusal::BodyTooLarge,
        RequestRefusal::BodyTimeout,
        RequestRefusal::InvalidRequest,
        RequestRefusal::InvalidExpression,
        RequestRefusal::Busy,
    ];

    /// The error code the client gets, and the `reason` of the log line.
    pub fn code(self) -> &'static str {
        match self {
            RequestRefusal::AuthFailed => "auth_failed",
            RequestRefusal::AuthRateLimited => "auth_rate_limited",
            RequestRefusal::OriginNotAllowed => "origin_not_allowed",
            RequestRefusal::HostNotAllowed => "host_not_allowed",
            RequestRefusal::BodyTooLarge => "body_too_large",
            RequestRefusal::BodyTimeout => "body_timeout",
            RequestRefusal::InvalidRequest => "invalid_request",
            RequestRefusal::InvalidExpression => "invalid_expression",
            RequestRefusal::Busy => "busy",
        }
    }
}

impl Window {
    fn note(&mut self, client: Option<IpAddr>) {
        if let Some(entry) = self.clients.iter_mut().find(|(ip, _)| *ip == client) {
            entry.1 += 1;
        } else if self.clients.len() < CLOSE_LOG_CLIENTS_MAX {
            self.clients.push((client, 1));
        } else if let Some(least) = self.clients.iter_mut().min_by_key(|(_, n)| *n) {
            *least = (client, least.1 + 1);
        }
    }
}

/// `message` cut to at most [`LOG_MESSAGE_BYTES_MAX`] bytes (between characters), for a log
/// line: messages may repeat what a client sent (an `Origin` header, a JWT's `alg`), which
/// may be as long as a request head.
pub(crate) fn log_message(message: &str) -> &str {
    let mut end = message.len().min(LOG_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_burst_is_logged_then_counted_and_summed_up_once_per_window() {
        let mut t = LogThrottle::default();
        let admitted = (0..500)
            .filter(|_| t.admit(LogKey::Closed(CloseReason::AuthFailed), ip(7)))
            .count();
        assert_eq!(admitted, CLOSE_LOG_LINES_PER_WINDOW as usize);
        // Each reason has its own budget: a flood of bad tokens hides no timeout.
        assert!(t.admit(LogKey::Closed(CloseReason::Timeout), ip(8)));

        let lines = t.end_window();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["event"], "session_closed_suppressed");
        assert_eq!(line["reason"], "auth_failed");
        assert_eq!(line["suppressed"], 500 - CLOSE_LOG_LINES_PER_WINDOW as u64);
        assert_eq!(line["logged"], CLOSE_LOG_LINES_PER_WINDOW);
        assert_eq!(line["clients"], serde_json::json!(["10.0.0.7"]));

        // A new window logs again, and one without suppressed sessions says nothing.
        assert!(t.admit(LogKey::Closed(CloseReason::AuthFailed), ip(7)));
        assert!(t.end_window().is_empty());
        assert!(t.end_window().is_empty());
    }

    #[test]
    fn addresses_spread_wide_keep_the_table_bounded_and_the_heavy_one_in_it() {
        let mut t = LogThrottle::default();
        for _ in 0..CLOSE_LOG_LINES_PER_WINDOW {
            t.admit(LogKey::Closed(CloseReason::ProtocolError), None);
        }
        // One address sends a third of the sessions; the rest each come from a new one.
        for i in 0..30_000u32 {
            let client = if i % 3 == 0 {
                ip(1)
            } else {
                Some(IpAddr::from(std::net::Ipv6Addr::from(
                    (0xfd00_u128 << 112) | u128::from(i),
                )))
            };
            assert!(!t.admit(LogKey::Closed(CloseReason::ProtocolError), client));
        }
        t.admit(LogKey::Closed(CloseReason::ProtocolError), None);
        let w = &t.windows[&LogKey::Closed(CloseReason::ProtocolError)];
        assert!(w.clients.len() <= CLOSE_LOG_CLIENTS_MAX);
        let lines = t.end_window();
        let clients = lines[0]["clients"].as_array().unwrap();
        assert_eq!(clients.len(), CLOSE_LOG_CLIENTS_MAX);
        assert_eq!(clients[0], "10.0.0.1", "{clients:?}");
        assert_eq!(lines[0]["suppressed"], 30_001);
    }

    #[test]
    fn unix_socket_clients_are_named_as_such() {
        let mut t = LogThrottle::default();
        for _ in 0..=CLOSE_LOG_LINES_PER_WINDOW {
            t.admit(LogKey::Closed(CloseReason::RateLimited), None);
        }
        assert_eq!(t.end_window()[0]["clients"], serde_json::json!(["unix"]));
    }

    #[test]
    fn refused_requests_have_budgets_and_summaries_of_their_own() {
        let mut t = LogThrottle::default();
        let http = LogKey::Request(RequestRefusal::AuthFailed);
        for _ in 0..CLOSE_LOG_LINES_PER_WINDOW {
            assert!(t.admit(LogKey::Closed(CloseReason::AuthFailed), ip(1)));
        }
        // A flood of bad tokens in HELLO leaves the first refusals on /v1/sync logged.
        let admitted = (0..50).filter(|_| t.admit(http, ip(2))).count();
        assert_eq!(admitted, CLOSE_LOG_LINES_PER_WINDOW as usize);
        assert!(t.admit(LogKey::Connection(Refused::Address), ip(3)));

        let lines = t.end_window();
        let events: Vec<_> = lines.iter().map(|l| l["event"].clone()).collect();
        assert_eq!(events, ["request_refused_suppressed"], "{lines:?}");
        assert_eq!(lines[0]["reason"], "auth_failed");
        assert_eq!(
            lines[0]["suppressed"],
            50 - CLOSE_LOG_LINES_PER_WINDOW as u64
        );
        assert_eq!(lines[0]["clients"], serde_json::json!(["10.0.0.2"]));
    }

    #[test]
    fn a_long_message_is_cut_between_characters() {
        let long = "é".repeat(LOG_MESSAGE_BYTES_MAX);
        let cut = log_message(&long);
        assert!(cut.len() <= LOG_MESSAGE_BYTES_MAX && cut.len() + 2 > LOG_MESSAGE_BYTES_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(log_message("short"), "short");
    }
}
