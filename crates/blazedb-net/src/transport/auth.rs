//! The static bearer token of a listener: the peer's HELLO must carry it, or the session
//! ends with `AUTH_FAILED` before any data flows (the session calls
//! [`AccessControl::authenticate`] on the peer's HELLO, before it subscribes or sends).

use blazedb::sync::{AccessControl, Hello};

/// Accepts a peer whose HELLO token equals the configured one.
pub struct TokenAuth {
    token: String,
}

impl TokenAuth {
    /// Require `token` from every peer.
    pub fn new(token: impl Into<String>) -> TokenAuth {
        TokenAuth {
            token: token.into(),
        }
    }
}

impl std::fmt::Debug for TokenAuth {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth").finish_non_exhaustive()
    }
}

impl AccessControl for TokenAuth {
    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        if hello.token.is_empty() {
            return Err("this peer requires a token: pass it with --token".into());
        }
        if constant_time_eq(hello.token.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err("invalid token: check the --token given to both sides".into())
        }
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
}
