//! Failed credentials per client address, shared by the relay and `blazedb listen`: after
//! `failures_max` of them within a window (by default
//! [`AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT`] within [`AUTH_FAILURE_WINDOW_MS_DEFAULT`]), that
//! address's next attempts are refused for a window without their credential being looked
//! at (the relay: `429 auth_rate_limited` over HTTP; both: `RATE_LIMITED` in reply to HELLO,
//! through [`AccessControl::admit`]), so a client guessing tokens stops getting answers.
//! Other addresses are not affected.
//!
//! ```text
//!  credential from ip ─► check(ip, now) ─► Err(Refusal): 429 / RATE_LIMITED, credential unread
//!                                      └─► Ok ─► verify ─► wrong: failed(ip, now)
//!                                                       └─► right: nothing (see below)
//!  every minute or so ─► forget_stale(now)
//! ```
//!
//! **A success does not clear an address's failures.** fail2ban and the lockouts of mail and
//! SSH servers count failures per address over a window whatever else the address does: a
//! guesser that holds one valid credential (its own low-privilege JWT, say) could otherwise
//! slip it in after every nine guesses and guess forever. The cost falls on a client that
//! shares an address with a guesser (a NAT), which waits out the window like it.
//!
//! **Only presented credentials count**, which the caller decides: a request without one is
//! how an HTTP client learns that a server wants one (the relay's `401` challenge), and an
//! empty HELLO token is a peer that was given none; neither guesses anything.
//!
//! **Keys.** An IPv4-mapped IPv6 address counts as its IPv4 address; other IPv6 addresses
//! count per [`AUTH_FAILURE_IPV6_PREFIX_BITS`] prefix (one host holds a whole /64). Loopback
//! counts as any other address. Unix socket clients have no address and are not counted: the
//! socket file's permissions decide who reaches it.
//!
//! **Memory** is bounded: at most [`AUTH_FAILURE_ADDRESSES_MAX`] addresses, the ones with the
//! fewest failures forgotten first (an eighth at a time) when a new one would pass it, never
//! one being refused; an address whose window or refusal has passed is forgotten when next
//! seen or at the next [`forget_stale`].
//!
//! Sans-IO: the caller passes the time; this type reads no clock and logs nothing. Call
//! order: [`check`] before reading a credential, [`failed`] after a wrong one,
//! [`forget_stale`] now and then.
//!
//! ```
//! use std::time::Duration;
//! use blazedb_net::auth_failures::{AuthFailures, RefusingSide};
//! use tokio::time::Instant;
//!
//! let mut table = AuthFailures::new(2, Duration::from_secs(60));
//! let (ip, t0) = ("192.0.2.7".parse().unwrap(), Instant::now());
//! assert!(table.check(ip, t0).is_ok());
//! assert!(!table.failed(ip, t0));
//! assert!(table.failed(ip, t0), "the second wrong token starts the refusal");
//! let refusal = table.check(ip, t0).unwrap_err();
//! assert!(refusal.message(RefusingSide::Listener).contains("wait"));
//! ```
//!
//! [`check`]: AuthFailures::check
//! [`failed`]: AuthFailures::failed
//! [`forget_stale`]: AuthFailures::forget_stale
//! [`AccessControl::admit`]: blazedb::sync::AccessControl::admit
//! [`AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT`]: crate::limits::AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT
//! [`AUTH_FAILURE_WINDOW_MS_DEFAULT`]: crate::limits::AUTH_FAILURE_WINDOW_MS_DEFAULT

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::limits::{AUTH_FAILURE_ADDRESSES_MAX, AUTH_FAILURE_IPV6_PREFIX_BITS};

/// Addresses forgotten at once when the table is full and none is stale: a scan of the table
/// per new address would cost a spray of addresses 16,384 steps a request; an eighth at a
/// time, eight a request.
const EVICT_BATCH: usize = AUTH_FAILURE_ADDRESSES_MAX / 8;

/// Failed credentials per address, and the addresses refused.
#[derive(Debug)]
pub struct AuthFailures {
    /// Failures that start a refusal; 0: no limit (nothing is recorded).
    failures_max: u32,
    /// The counting window, and the length of a refusal.
    window: Duration,
    /// At most [`AUTH_FAILURE_ADDRESSES_MAX`] entries, keyed by [`key`].
    addresses: HashMap<IpAddr, Record>,
}

/// One address's failures.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// When the first failure of the current window came.
    window_start: Instant,
    /// Failures since `window_start`.
    failures: u32,
    /// Set when `failures` reached the limit: refused until then.
    refused_until: Option<Instant>,
}

/// An attempt refused for its address's failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// How much longer the address is refused.
    pub retry_after: Duration,
    /// The limit and its window, for the message.
    failures_max: u32,
    window: Duration,
}

impl AuthFailures {
    /// `failures_max` failures within `window` refuse an address for `window`; 0: no limit.
    pub fn new(failures_max: u32, window: Duration) -> AuthFailures {
        AuthFailures {
            failures_max,
            window,
            addresses: HashMap::new(),
        }
    }

    /// Whether an attempt from `ip` may have its credential checked at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let key = key(ip);
        let Some(record) = self.addresses.get(&key) else {
            return Ok(());
        };
        match record.refused_until {
            Some(until) if now < until => Err(Refusal {
                retry_after: until - now,
                failures_max: self.failures_max,
                window: self.window,
            }),
            _ => {
                if record.is_stale(now, self.window) {
                    self.addresses.remove(&key);
                }
                Ok(())
            }
        }
    }

    /// Count a failed credential from `ip` at `now`; true when it starts a refusal of the
    /// address.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.failures_max == 0 {
            return false;
        }
        let key = key(ip);
        let fresh = Record {
            window_start: now,
            failures: 0,
            refused_until: None,
        };
        let record = match self.addresses.get_mut(&key) {
            Some(r) if r.is_stale(now, self.window) => {
                *r = fresh;
                r
            }
            Some(r) => r,
            None => {
                if !self.make_room(now) {
                    // Every address remembered is being refused: this one goes uncounted
                    // until one of them is forgotten, rather than letting a spray of
                    // addresses free a guesser.
                    return false;
                }
                self.addresses.entry(key).or_insert(fresh)
            }
        };
        record.failures = record.failures.saturating_add(1);
        if record.failures >= self.failures_max && record.refused_until.is_none() {
            record.refused_until = Some(now + self.window);
            return true;
        }
        false
    }

    /// Forget the addresses whose window or refusal has passed at `now`.
    pub fn forget_stale(&mut self, now: Instant) {
        let window = self.window;
        self.addresses.retain(|_, r| !r.is_stale(now, window));
    }

    /// Room for one more address: forget the stale ones, then, while still full, the
    /// [`EVICT_BATCH`] with the fewest failures (the oldest of those) that are not being
    /// refused. False when every address remembered is being refused.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.addresses.len() < AUTH_FAILURE_ADDRESSES_MAX {
            return true;
        }
        self.forget_stale(now);
        if self.addresses.len() < AUTH_FAILURE_ADDRESSES_MAX {
            return true;
        }
        let mut lightest: Vec<(u32, Instant, IpAddr)> = self
            .addresses
            .iter()
            .filter(|(_, r)| r.refused_until.is_none())
            .map(|(ip, r)| (r.failures, r.window_start, *ip))
            .collect();
        if lightest.is_empty() {
            return false;
        }
        let n = EVICT_BATCH.min(lightest.len());
        lightest.select_nth_unstable(n - 1);
        for (_, _, ip) in &lightest[..n] {
            self.addresses.remove(ip);
        }
        true
    }

    /// Addresses remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.addresses.len()
    }
}

impl Record {
    /// Whether nothing of this record matters any more at `now`: its refusal is over, or,
    /// without one, its window is.
    fn is_stale(&self, now: Instant, window: Duration) -> bool {
        match self.refused_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(self.window_start) >= window,
        }
    }
}

impl Refusal {
    /// Seconds to wait, rounded up (the `Retry-After` header): at least 1.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }

    /// What the client is told, for the side that refuses it.
    pub fn message(&self, side: RefusingSide) -> String {
        let (server, counted, proxy) = match side {
            RefusingSide::Relay => (
                "relay",
                "each wrong token or expired JWT counts",
                ", or name a reverse proxy with --trusted-proxy",
            ),
            RefusingSide::Listener => ("listener", "each wrong token counts", ""),
        };
        format!(
            "too many failed authentication attempts from your address ({} within {} s): \
             this {server} refuses its credentials, without checking them, for {} s more; wait \
             that long, and check the token you send first ({counted}; clients behind one NAT \
             or proxy share an address, and the {server}'s operator can raise \
             --max-auth-failures-per-address for them{proxy})",
            self.failures_max,
            self.window.as_millis().div_ceil(1000),
            self.retry_after_s()
        )
    }
}

/// Which server refuses, for [`Refusal::message`]: what it is called and what counts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusingSide {
    /// The relay (`blazedb serve`): wrong static tokens and JWTs count.
    Relay,
    /// A peer's listener (`blazedb listen --token`): wrong tokens count.
    Listener,
}

/// The table behind `failures`, whatever a panicking holder left it as: it holds counts,
/// never an invariant, so a poisoned lock is taken as it is.
pub fn lock(failures: &Mutex<AuthFailures>) -> MutexGuard<'_, AuthFailures> {
    failures.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address failures are counted under: an IPv4-mapped IPv6 address as its IPv4 one,
/// another IPv6 address by its [`AUTH_FAILURE_IPV6_PREFIX_BITS`] prefix.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - u32::from(AUTH_FAILURE_IPV6_PREFIX_BITS));
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_failure_that_reaches_the_limit_refuses_the_address_for_a_window() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(3, WINDOW);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(!f.failed(a, t0));
        assert!(!f.failed(a, t0));
        assert_eq!(f.check(a, t0), Ok(()));
        assert!(f.failed(a, t0), "the third starts the refusal");
        let r = f.check(a, t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_secs(59));
        assert_eq!(r.retry_after_s(), 59);
        for side in [RefusingSide::Relay, RefusingSide::Listener] {
            let m = r.message(side);
            assert!(
                m.contains("3 within 60 s") && m.contains("59 s more"),
                "{m}"
            );
        }
        assert!(r
            .message(RefusingSide::Relay)
            .contains("this relay refuses"));
        assert!(r
            .message(RefusingSide::Listener)
            .contains("this listener refuses"));
        // Another address is not affected, nor the same one written as IPv4-mapped IPv6.
        assert_eq!(f.check(b, t0), Ok(()));
        assert!(f.check(ip("::ffff:10.0.0.1"), t0).is_err());
        // Over, and forgotten: a new window starts with the next failure.
        assert_eq!(f.check(a, t0 + WINDOW), Ok(()));
        assert_eq!(f.len(), 0);
        assert!(!f.failed(a, t0 + WINDOW));
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_refuse() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(3, WINDOW);
        let a = ip("10.0.0.1");
        for i in 0..20 {
            assert!(!f.failed(a, t0 + WINDOW / 2 * i), "failure {i}");
            assert_eq!(f.check(a, t0 + WINDOW / 2 * i), Ok(()));
        }
    }

    #[test]
    fn an_ipv6_host_counts_once_for_its_whole_prefix() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(2, WINDOW);
        f.failed(ip("2001:db8:1:2::1"), t0);
        f.failed(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(f.check(ip("2001:db8:1:2::77"), t0).is_err());
        assert_eq!(f.check(ip("2001:db8:1:3::1"), t0), Ok(()));
    }

    #[test]
    fn no_limit_records_nothing() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(0, WINDOW);
        let a = ip("10.0.0.1");
        assert!((0..100).all(|_| !f.failed(a, t0)));
        assert_eq!(f.check(a, t0), Ok(()));
        assert_eq!(f.len(), 0);
    }

    /// A spray of addresses failing once each keeps the table at its bound, and pushes out
    /// neither a refused address nor, while lighter ones remain, a heavy one.
    #[test]
    fn a_spray_of_addresses_keeps_the_table_bounded_and_the_refused_in_it() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(3, WINDOW);
        let guesser = ip("192.0.2.1");
        for _ in 0..3 {
            f.failed(guesser, t0);
        }
        let heavy = ip("192.0.2.2");
        f.failed(heavy, t0);
        f.failed(heavy, t0);
        for i in 0..(AUTH_FAILURE_ADDRESSES_MAX as u128 * 2) {
            let sprayed = IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | (i << 64)));
            f.failed(sprayed, t0 + Duration::from_millis(1));
            assert!(f.len() <= AUTH_FAILURE_ADDRESSES_MAX);
        }
        assert!(f.check(guesser, t0).is_err(), "still refused");
        assert!(f.failed(heavy, t0), "its two failures were kept");
    }

    /// When every address remembered is being refused, a new one is not counted (and none
    /// of the refused is let go).
    #[test]
    fn a_table_full_of_refused_addresses_counts_no_new_one() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(1, WINDOW);
        for i in 0..AUTH_FAILURE_ADDRESSES_MAX as u32 {
            assert!(f.failed(IpAddr::V4(i.into()), t0));
        }
        let late = ip("203.0.113.9");
        assert!(!f.failed(late, t0));
        assert_eq!(f.check(late, t0), Ok(()));
        assert!(f.check(IpAddr::V4(0.into()), t0).is_err());
        // Once the refusals are over there is room again.
        assert!(f.failed(late, t0 + WINDOW));
        assert_eq!(f.len(), 1);
    }
}
