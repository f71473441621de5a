//! The client's address behind trusted reverse proxies (`--trusted-proxy`).
//!
//! Behind a reverse proxy (nginx, Caddy, a load balancer) every HTTP connection comes from
//! the proxy: the TCP peer says nothing of the client, so the per-address failure limit
//! (`auth_failures.rs`) would count every client as one, and the log would name the proxy.
//! A proxy says who its client was by appending its peer's address to `X-Forwarded-For`;
//! each proxy on the way appends its own peer, so the header reads
//! `client, proxy1, proxy2`, and the last hop is the relay's TCP peer:
//!
//! ```text
//!  X-Forwarded-For: 192.0.2.1, 203.0.113.7, 10.0.0.2          TCP peer: 10.0.0.3 (trusted)
//!                   │          │            └─ appended by 10.0.0.3: trusted, skipped
//!                   │          └─ appended by 10.0.0.2 (trusted): the client
//!                   └─ written by 203.0.113.7 itself: anything it likes, never read
//! ```
//!
//! Only what a trusted proxy wrote is believed. [`TrustedProxies::client`] reads the header
//! only when the TCP peer is trusted (otherwise a client could name any address it likes,
//! and escape a refusal with each request), walks it from the right, skipping trusted
//! addresses, and takes the first untrusted one: the right-most untrusted address, the one a
//! trusted proxy saw connect. As nginx's `set_real_ip_from` with `real_ip_recursive on`,
//! Caddy's `trusted_proxies` (strict) and Express's `trust proxy` do.
//!
//! The standard `Forwarded: for=` header (RFC 7239) is not read: most proxies maintain
//! `X-Forwarded-For` only and pass `Forwarded` through as the client sent it, so a relay
//! reading both would take a client's own `Forwarded: for=` for the truth. Reading one
//! header that the proxy is known to append to is what makes the address trustworthy.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::header::{HeaderMap, HeaderName};
use ipnet::{IpNet, Ipv4Net};

/// The header every common proxy appends its peer's address to.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An address or a range of addresses whose `X-Forwarded-For` the relay believes
/// (`--trusted-proxy`): `10.0.0.7`, `10.0.0.0/8`, `::1`, `::1/128`, `fd00::/8`.
///
/// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps, and an IPv4
/// peer on a dual-stack socket (`::ffff:10.0.0.7`) is matched as its IPv4 address, so one
/// entry covers a proxy however the relay's socket sees it. Bits below the prefix are
/// ignored (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// Whether this range holds every address of its family (`0.0.0.0/0`, `::/0`): then
    /// every client of that family may name its own address.
    pub fn is_everyone(&self) -> bool {
        self.0.prefix_len() == 0
    }
}

impl FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(text: &str) -> Result<TrustedProxy, TrustedProxyError> {
        let t = text.trim();
        let net = match t.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match t.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(TrustedProxyError(text.to_owned())),
            },
        };
        Ok(TrustedProxy(canonical_net(net.trunc())))
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A `--trusted-proxy` that is neither an IP address nor a CIDR range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an IP address or a CIDR range: give one like 10.0.0.7, 10.0.0.0/8, ::1 or \
     fd00::/8 (a prefix of at most 32 bits for IPv4, 128 for IPv6)"
)]
pub struct TrustedProxyError(String);

/// The relay's trusted proxies, and the client address of a request they forwarded.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Vec<TrustedProxy>);

impl TrustedProxies {
    pub fn new(list: &[TrustedProxy]) -> TrustedProxies {
        TrustedProxies(list.to_vec())
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|p| p.contains(ip))
    }

    /// The address of the client a request came from, given the TCP peer's address and the
    /// request's headers: the peer's, unless the peer is a trusted proxy; then the
    /// right-most untrusted address of `X-Forwarded-For` (module doc).
    ///
    /// - No header (a request of the proxy's own, such as its health check): the peer.
    /// - Every entry trusted: the left-most. Each entry was appended by the trusted hop
    ///   right of it, so the left-most is the machine the request started from, trusted or
    ///   not, as nginx (`real_ip_recursive on`) and Express take it; the proxy's address
    ///   instead would count every client inside the trusted ranges (a health checker, a
    ///   service on the proxy's network) as one, which is what this option is to end.
    /// - An entry that is no address (`unknown`, an obfuscated name, garbage, a header
    ///   that is not ASCII) before an untrusted one is found: the peer, as nginx does. Only
    ///   trusted hops lie right of that entry, and which of them wrote it, or passed it on
    ///   from whom, cannot be told; such requests are counted (and logged) under the
    ///   proxy's address rather than under one a client may have chosen. A client cannot
    ///   make this happen on purpose: its proxy appends the client's address right of
    ///   anything the client sent, and the walk stops there first.
    ///
    /// Addresses are returned IPv4-mapped as their IPv4 address, so that a client counts
    /// once whichever way it arrived.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        self.forwarded_for(headers).unwrap_or(peer)
    }

    /// The walk of `X-Forwarded-For` from the right ([`TrustedProxies::client`]); `None`:
    /// fall back to the peer. The loop is bounded by the request head, at most
    /// [`HTTP_HEAD_BYTES_MAX`](crate::limits::HTTP_HEAD_BYTES_MAX).
    fn forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut leftmost_trusted = None;
        // Several header lines are one list, in order (RFC 9110 §5.3): the last line's
        // last entry is the right-most.
        for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let text = value.to_str().ok()?;
            for entry in text.rsplit(',') {
                let entry = entry.trim_matches([' ', '\t']);
                // Empty list elements are no entries (RFC 9110 §5.6.1): `a, , b`.
                if entry.is_empty() {
                    continue;
                }
                let ip = parse_entry(entry)?;
                if !self.contains(ip) {
                    return Some(ip);
                }
                leftmost_trusted = Some(ip);
            }
        }
        leftmost_trusted
    }
}

/// One entry of `X-Forwarded-For`, as proxies write it: an address, for some with the port
/// they saw (`203.0.113.7:41234`, `[2001:db8::7]:41234`), IPv6 for some in brackets
/// (`[2001:db8::7]`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = match entry.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match entry.parse::<SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => IpAddr::V6(
                entry
                    .strip_prefix('[')?
                    .strip_suffix(']')?
                    .parse::<Ipv6Addr>()
                    .ok()?,
            ),
        },
    };
    // An IPv4 client of a dual-stack proxy is `::ffff:a.b.c.d`: the same address as `a.b.c.d`.
    Some(ip.to_canonical())
}

/// An IPv4-mapped IPv6 range (`::ffff:0:0/96` and narrower) as the IPv4 range it maps, since
/// canonical addresses ([`IpAddr::to_canonical`]) are matched against it.
fn canonical_net(net: IpNet) -> IpNet {
    const MAPPED_PREFIX_LEN: u8 = 96;
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= MAPPED_PREFIX_LEN => {
            match v6.network().to_ipv4_mapped() {
                Some(v4) => {
                    Ipv4Net::new(v4, v6.prefix_len() - MAPPED_PREFIX_LEN).map_or(net, IpNet::V4)
                }
                None => net,
            }
        }
        net => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::net::Ipv4Addr;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let list: Vec<TrustedProxy> = list.iter().map(|p| p.parse().unwrap()).collect();
        TrustedProxies::new(&list)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Headers with one `X-Forwarded-For` line per item of `lines`.
    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn a_proxy_is_an_address_or_a_range() {
        let p = |s: &str| s.parse::<TrustedProxy>().map(|p| p.to_string());
        assert_eq!(p("10.0.0.7").unwrap(), "10.0.0.7/32");
        assert_eq!(p(" 10.0.0.0/8 ").unwrap(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(p("::1").unwrap(), "::1/128");
        assert_eq!(p("::1/128").unwrap(), "::1/128");
        assert_eq!(p("fd00::/8").unwrap(), "fd00::/8");
        assert_eq!(p("::ffff:10.0.0.0/104").unwrap(), "10.0.0.0/8");
        assert_eq!(p("::ffff:127.0.0.1").unwrap(), "127.0.0.1/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0",
            "localhost",
            "10.0.0.0/",
            "10.0.0.0/8/8",
            "10.0.0.1:80",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(
                e.contains("is not an IP address or a CIDR range"),
                "{bad}: {e}"
            );
        }
        assert!("0.0.0.0/0".parse::<TrustedProxy>().unwrap().is_everyone());
        assert!(!"10.0.0.0/8".parse::<TrustedProxy>().unwrap().is_everyone());
    }

    #[test]
    fn ranges_match_ipv4_whichever_way_it_arrives() {
        let t = proxies(&["10.0.0.0/8", "::1"]);
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("::ffff:10.200.0.1")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("::2")));
        let mapped = proxies(&["::ffff:10.0.0.0/104"]);
        assert!(mapped.contains(ip("10.0.0.1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_its_headers_say() {
        let t = proxies(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.7"]);
        assert_eq!(t.client(ip("198.51.100.9"), &h), ip("198.51.100.9"));
        // No trusted proxy at all: the headers are never read.
        assert_eq!(proxies(&[]).client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // An IPv4 peer on a dual-stack socket is named as IPv4.
        assert_eq!(t.client(ip("::ffff:198.51.100.9"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.3");
        // One proxy: the address it appended.
        assert_eq!(t.client(peer, &xff(&["203.0.113.7"])), ip("203.0.113.7"));
        // What the client wrote itself, left of it, is not read.
        assert_eq!(
            t.client(peer, &xff(&["192.0.2.1, 203.0.113.7"])),
            ip("203.0.113.7")
        );
        // Trusted hops right of the client are skipped.
        assert_eq!(
            t.client(peer, &xff(&["192.0.2.1, 203.0.113.7, 10.0.0.2, 10.9.9.9"])),
            ip("203.0.113.7")
        );
        // Several lines are one list, in order.
        assert_eq!(
            t.client(peer, &xff(&["192.0.2.1", "203.0.113.7, 10.0.0.2"])),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client(peer, &xff(&["203.0.113.7, 10.0.0.2", "10.0.0.9"])),
            ip("203.0.113.7")
        );
        // Garbage left of the client is never reached.
        assert_eq!(
            t.client(peer, &xff(&["not-an-address, 203.0.113.7"])),
            ip("203.0.113.7")
        );
        // Spaces, tabs and empty elements.
        assert_eq!(
            t.client(peer, &xff(&[" 203.0.113.7 ,\t10.0.0.2\t, ,"])),
            ip("203.0.113.7")
        );
        // The peer is trusted as an IPv4-mapped address too.
        assert_eq!(
            t.client(ip("::ffff:10.0.0.3"), &xff(&["203.0.113.7"])),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn entries_may_carry_ports_brackets_and_ipv6() {
        let t = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("fd00::1");
        for (header, client) in [
            ("203.0.113.7:41234", "203.0.113.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:41234", "2001:db8::7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("2001:db8::7, [fd00::2]:80, 10.0.0.2:443", "2001:db8::7"),
        ] {
            assert_eq!(t.client(peer, &xff(&[header])), ip(client), "{header}");
        }
    }

    #[test]
    fn every_entry_trusted_gives_the_left_most() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.3");
        assert_eq!(
            t.client(peer, &xff(&["10.1.1.1, 10.0.0.2"])),
            ip("10.1.1.1")
        );
        assert_eq!(t.client(peer, &xff(&["10.0.0.2"])), ip("10.0.0.2"));
    }

    #[test]
    fn no_header_or_an_empty_one_gives_the_peer() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.3");
        assert_eq!(t.client(peer, &HeaderMap::new()), peer);
        assert_eq!(t.client(peer, &xff(&[""])), peer);
        assert_eq!(t.client(peer, &xff(&[" , "])), peer);
    }

    #[test]
    fn a_malformed_entry_before_any_untrusted_one_gives_the_peer() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.3");
        for header in [
            "unknown",
            "203.0.113.7, unknown",
            "203.0.113.7, garbage, 10.0.0.2",
            "203.0.113.7 10.0.0.2",
            "_hidden",
            "fe80::1%eth0",
            "203.0.113.7:notaport",
            "[203.0.113.7]",
            "for=203.0.113.7",
        ] {
            assert_eq!(t.client(peer, &xff(&[header])), peer, "{header}");
        }
        // A header that is not visible ASCII.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap(),
        );
        assert_eq!(t.client(peer, &h), peer);
    }

    #[test]
    fn the_forwarded_header_is_not_read() {
        let t = proxies(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=203.0.113.7"));
        assert_eq!(t.client(ip("10.0.0.3"), &h), ip("10.0.0.3"));
    }

    #[test]
    fn ipv4_in_brackets_is_not_an_address() {
        assert_eq!(parse_entry("[203.0.113.7]"), None);
        assert_eq!(
            parse_entry("203.0.113.7"),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        );
    }
}
