//! The static bearer token of a listener: the peer's HELLO must carry it, or the session
//! ends with `AUTH_FAILED` before any data flows (the session calls
//! [`AccessControl::authenticate`] on the peer's HELLO, before it subscribes or sends).
//!
//! A TCP peer's wrong tokens count towards its address's failure limit
//! ([`crate::auth_failures`], the relay's table): once the address is refused, its HELLO is
//! answered `RATE_LIMITED` without the token being compared
//! ([`AccessControl::admit`]). A Unix socket peer has no address and is not counted.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use blazedb::sync::{AccessControl, Hello};

use crate::auth_failures::{self, AuthFailures, RefusingSide};

/// Accepts a peer whose HELLO token equals the configured one. A listener builds one per
/// TCP connection ([`TokenAuth::with_failure_limit`]), sharing the token and the table.
#[derive(Clone)]
pub struct TokenAuth {
    token: Arc<str>,
    /// Where the peer's wrong tokens are counted: its address (none over a Unix socket, or
    /// without a limit).
    address: Option<PeerAddress>,
}

/// A peer's address and the listener's table of failed tokens.
#[derive(Clone)]
struct PeerAddress {
    ip: IpAddr,
    failures: Arc<Mutex<AuthFailures>>,
}

impl TokenAuth {
    /// Require `token` from every peer.
    pub fn new(token: impl Into<String>) -> TokenAuth {
        TokenAuth {
            token: Arc::from(token.into()),
            address: None,
        }
    }

    /// Count the peer's wrong tokens towards `ip`'s limit in `failures`, and refuse its
    /// HELLO unread (`RATE_LIMITED`) while that address is refused.
    pub fn with_failure_limit(
        mut self,
        ip: IpAddr,
        failures: Arc<Mutex<AuthFailures>>,
    ) -> TokenAuth {
        self.address = Some(PeerAddress { ip, failures });
        self
    }
}

impl std::fmt::Debug for TokenAuth {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("address", &self.address.as_ref().map(|a| a.ip))
            .finish_non_exhaustive()
    }
}

impl AccessControl for TokenAuth {
    /// A peer whose address presented too many wrong tokens lately is refused before its
    /// token is compared, as by the relay.
    fn admit(&self, _hello: &Hello) -> Result<(), String> {
        let Some(address) = &self.address else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        let checked = auth_failures::lock(&address.failures).check(address.ip, now);
        checked.map_err(|refusal| refusal.message(RefusingSide::Listener))
    }

    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        // An empty token is a peer that was given none: it guesses nothing, and is not
        // counted.
        if hello.token.is_empty() {
            return Err("this peer requires a token: pass it with --token".into());
        }
        if constant_time_eq(hello.token.as_bytes(), self.token.as_bytes()) {
            return Ok(());
        }
        if let Some(address) = &self.address {
            let now = tokio::time::Instant::now();
            auth_failures::lock(&address.failures).failed(address.ip, now);
        }
        Err("invalid token: check the --token given to both sides".into())
    }

    fn checks_credential(&self) -> bool {
        true
    }

    /// The listener's HELLO waits for the token: a peer without it learns nothing.
    fn hello_after_authentication(&self) -> bool {
        true
    }

    /// A token lets the peer read everything: nothing to filter.
    fn filters_reads(&self) -> bool {
        false
    }
}

/// Compare without an early exit on the first differing byte, so the time taken does not
/// tell an attacker how much of a guess was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use blazedb::sync::SyncMode;

    fn hello(token: &str) -> Hello {
        Hello {
            version: blazedb::limits::PROTOCOL_VERSION,
            node: blazedb::NodeId::random(),
            last_seq: blazedb::Seq(0),
            mode: SyncMode::Both,
            server: false,
            caps: 0,
            token: token.into(),
        }
    }

    #[test]
    fn only_the_exact_token_passes() {
        let auth = TokenAuth::new("s3cret");
        assert!(auth.authenticate(&hello("s3cret")).is_ok());
        for bad in ["", "s3cre", "s3cret!", "S3cret"] {
            assert!(auth.authenticate(&hello(bad)).is_err(), "{bad:?}");
        }
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    /// Wrong tokens count towards the address, an empty one does not; once refused, even the
    /// right token is refused unread (`admit`), and an address of its own is not.
    #[test]
    fn wrong_tokens_count_towards_the_peers_address() {
        let table = Arc::new(Mutex::new(AuthFailures::new(
            2,
            std::time::Duration::from_secs(60),
        )));
        let from = |ip: &str| {
            TokenAuth::new("s3cret").with_failure_limit(ip.parse().unwrap(), table.clone())
        };
        let guesser = from("192.0.2.1");
        for _ in 0..5 {
            assert!(guesser.authenticate(&hello("")).is_err());
        }
        assert!(
            guesser.admit(&hello("s3cret")).is_ok(),
            "empty tokens guess nothing"
        );
        assert!(guesser.authenticate(&hello("guess-1")).is_err());
        assert!(guesser.authenticate(&hello("s3cret")).is_ok());
        assert!(guesser.authenticate(&hello("guess-2")).is_err());
        let refused = guesser.admit(&hello("s3cret")).unwrap_err();
        assert!(
            refused.contains("too many failed authentication attempts")
                && refused.contains("this listener refuses"),
            "{refused}"
        );
        assert!(from("192.0.2.2").admit(&hello("s3cret")).is_ok());
        // Without an address (a Unix socket peer) nothing is counted or refused.
        assert!(TokenAuth::new("s3cret").admit(&hello("x")).is_ok());
        assert!(format!("{guesser:?}").contains("192.0.2.1"));
    }
}
