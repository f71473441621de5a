//! The `session_closed` log lines of sessions that end badly, throttled.
//!
//! A client that reconnects in a loop with a bad token, a bad HELLO or garbage made the relay
//! write one line per attempt (a resource audit, 2026-12: 5,000 lines in 0.6 s from one
//! client), which fills the disk and buries every other line. Now, per close reason, the
//! first [`CLOSE_LOG_LINES_PER_WINDOW`] sessions of a window are logged in full; the rest
//! are only counted, and when the window ends one `session_closed_suppressed` line per reason
//! says how many were left out and which client addresses most of them came from. So a
//! reason writes at most `CLOSE_LOG_LINES_PER_WINDOW + 1` lines per window
//! ([`CLOSE_LOG_WINDOW_MS`]) however fast clients fail, and the operator still sees that a
//! loop is going on and from where. `/metrics` counts every session whatever is logged.
//!
//! ```text
//!  session ends badly ─► admit(reason, client) ─► true:  print `session_closed` in full
//!                                              └─► false: counted, client noted
//!  every CLOSE_LOG_WINDOW_MS, and at shutdown ─► end_window() ─► one summary per reason
//! ```
//!
//! Sans-IO: the relay calls [`LogThrottle::admit`] for each session it would log, and
//! [`LogThrottle::end_window`] when a window ends; this type reads no clock and prints
//! nothing.
//!
//! Memory is bounded whatever clients do: one window per close reason (a fixed set), each
//! noting at most [`CLOSE_LOG_CLIENTS_MAX`] addresses. Nothing is kept per address, which a
//! client spreading over many addresses (an IPv6 prefix holds billions) would grow.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limits::{CLOSE_LOG_CLIENTS_MAX, CLOSE_LOG_LINES_PER_WINDOW, CLOSE_LOG_WINDOW_MS};
use crate::metrics::CloseReason;

/// Which sessions of the current window are logged, and what the others were.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    /// At most one entry per [`CloseReason`].
    windows: HashMap<CloseReason, Window>,
}

/// One close reason's window.
#[derive(Debug, Default)]
struct Window {
    /// Sessions logged in full; at most [`CLOSE_LOG_LINES_PER_WINDOW`].
    logged: u32,
    /// Sessions counted but not logged.
    suppressed: u64,
    /// Where the suppressed sessions came from (`None`: the Unix socket), with a count
    /// each: at most [`CLOSE_LOG_CLIENTS_MAX`] entries, kept by the space-saving algorithm
    /// (Metwally et al., 2005). An address not in the table takes the place of the one with
    /// the lowest count and inherits that count plus one, so every address behind more than
    /// `1 / CLOSE_LOG_CLIENTS_MAX` of the suppressed sessions is in the table, and a count
    /// overstates by at most the count it inherited.
    clients: Vec<(Option<IpAddr>, u64)>,
}

impl LogThrottle {
    /// Whether a session that ended for `reason`, from `client` (`None`: the Unix socket),
    /// is logged in full; if not, it is counted for the window's summary.
    pub fn admit(&mut self, reason: CloseReason, client: Option<IpAddr>) -> bool {
        let window = self.windows.entry(reason).or_default();
        if window.logged < CLOSE_LOG_LINES_PER_WINDOW {
            window.logged += 1;
            return true;
        }
        window.suppressed += 1;
        window.note(client);
        false
    }

    /// End the window: one `session_closed_suppressed` line for each reason that had
    /// sessions left out (in the order of the reasons' names), and a new window for all.
    pub fn end_window(&mut self) -> Vec<serde_json::Value> {
        let mut ended: Vec<_> = self
            .windows
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .collect();
        ended.sort_by_key(|(reason, _)| reason.as_str());
        ended
            .into_iter()
            .map(|(reason, mut w)| {
                w.clients.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
                serde_json::json!({
                    "event": "session_closed_suppressed",
                    "reason": reason.as_str(),
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
            .filter(|_| t.admit(CloseReason::AuthFailed, ip(7)))
            .count();
        assert_eq!(admitted, CLOSE_LOG_LINES_PER_WINDOW as usize);
        // Each reason has its own budget: a flood of bad tokens hides no timeout.
        assert!(t.admit(CloseReason::Timeout, ip(8)));

        let lines = t.end_window();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["event"], "session_closed_suppressed");
        assert_eq!(line["reason"], "auth_failed");
        assert_eq!(line["suppressed"], 500 - CLOSE_LOG_LINES_PER_WINDOW as u64);
        assert_eq!(line["logged"], CLOSE_LOG_LINES_PER_WINDOW);
        assert_eq!(line["clients"], serde_json::json!(["10.0.0.7"]));

        // A new window logs again, and one without suppressed sessions says nothing.
        assert!(t.admit(CloseReason::AuthFailed, ip(7)));
        assert!(t.end_window().is_empty());
        assert!(t.end_window().is_empty());
    }

    #[test]
    fn addresses_spread_wide_keep_the_table_bounded_and_the_heavy_one_in_it() {
        let mut t = LogThrottle::default();
        for _ in 0..CLOSE_LOG_LINES_PER_WINDOW {
            t.admit(CloseReason::ProtocolError, None);
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
            assert!(!t.admit(CloseReason::ProtocolError, client));
        }
        t.admit(CloseReason::ProtocolError, None);
        let w = &t.windows[&CloseReason::ProtocolError];
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
            t.admit(CloseReason::RateLimited, None);
        }
        assert_eq!(t.end_window()[0]["clients"], serde_json::json!(["unix"]));
    }
}
