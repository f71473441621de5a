//! The relay's [`AccessControl`] for one connection: who the caller is (its claims) and what
//! the rules let it read and write. The sync session consults it; the core enforces it
//! (filters what is sent, refuses forbidden transactions with REJECT and restates the writer's
//! copy).
//!
//! **Undoing a refused write in a collection the caller may not read** needs nothing here:
//! the core's session evicts, after every unit it applies from a peer, each record the peer
//! wrote that is outside its view (refused or not), so the writer's copy goes without it being
//! sent anything of ours.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use blazedb::query::Params;
use blazedb::sync::{AccessControl, Hello};
use blazedb::{RecordId, Value};
use blazedb_net::auth_failures::{AuthFailures, RefusingSide};

use crate::auth::{params, AuthError, Authenticator, Claims};
use crate::limits::JWT_LEEWAY_S;
use crate::rules::Rules;

/// Access decisions for one connection.
#[derive(Debug)]
pub struct ConnectionAccess {
    rules: Arc<Rules>,
    auth: Arc<Authenticator>,
    /// Set once: at the HTTP upgrade (WebSocket), or from HELLO's token (raw TCP / Unix).
    params: OnceLock<Params>,
    /// Where the failed credentials of the client's HELLO are counted: its address (none
    /// over a Unix socket). A WebSocket client's credential was checked, and counted, at the
    /// upgrade.
    address: Option<ClientAddress>,
    /// Set when HELLO was refused for its address's failures (`admit`), for the session's
    /// close reason.
    refused_for_address: AtomicBool,
    /// Why HELLO's credential was refused (`authenticate`), for the session's count of
    /// failed credentials by kind.
    refused_credential: OnceLock<AuthError>,
}

/// A client address and the relay's table of failed credentials.
#[derive(Debug)]
struct ClientAddress {
    ip: IpAddr,
    failures: Arc<Mutex<AuthFailures>>,
}

impl ConnectionAccess {
    /// For a connection whose caller is already authenticated (`Some(claims)`, the HTTP
    /// upgrade) or will present its credential in HELLO (`None`).
    pub fn new(
        rules: Arc<Rules>,
        auth: Arc<Authenticator>,
        claims: Option<Claims>,
    ) -> ConnectionAccess {
        let cell = OnceLock::new();
        if let Some(c) = claims {
            let _ = cell.set(params(&c));
        }
        ConnectionAccess {
            rules,
            auth,
            params: cell,
            address: None,
            refused_for_address: AtomicBool::new(false),
            refused_credential: OnceLock::new(),
        }
    }

    /// Count the failed credentials of HELLO towards `ip`'s limit in `failures`, and refuse
    /// its HELLO unread while that address is refused.
    pub(crate) fn with_failure_limit(
        mut self,
        ip: IpAddr,
        failures: Arc<Mutex<AuthFailures>>,
    ) -> ConnectionAccess {
        self.address = Some(ClientAddress { ip, failures });
        self
    }

    /// Whether HELLO was refused for its address's failed credentials.
    pub(crate) fn refused_for_address(&self) -> bool {
        self.refused_for_address.load(Ordering::Relaxed)
    }

    /// Why HELLO's credential was refused, if it was. (A session refused later, its
    /// credential expired or its node id bound to another identity, has none.)
    pub(crate) fn refused_credential(&self) -> Option<&AuthError> {
        self.refused_credential.get()
    }

    /// One claim of the verified credential (`$auth.<name>`).
    fn claim(&self, name: &str) -> Option<&Value> {
        match ConnectionAccess::params(self).get("auth") {
            Some(Value::Map(auth)) => auth.get(name),
            _ => None,
        }
    }

    /// The caller's parameters; empty (every `$auth.x` unknown) before authentication, which
    /// the session never lets happen: it authenticates on HELLO before anything else.
    fn params(&self) -> &Params {
        static EMPTY: OnceLock<Params> = OnceLock::new();
        self.params
            .get()
            .unwrap_or_else(|| EMPTY.get_or_init(Params::new))
    }
}

impl AccessControl for ConnectionAccess {
    /// A client whose address presented too many wrong credentials lately is refused
    /// (`RATE_LIMITED`) before its token is read, as over HTTP (`blazedb_net::auth_failures`).
    fn admit(&self, _hello: &Hello) -> Result<(), String> {
        let Some(address) = &self.address else {
            return Ok(());
        };
        if self.params.get().is_some() || !self.auth.required() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let checked = crate::state::lock_auth_failures(&address.failures).check(address.ip, now);
        checked.map_err(|refusal| {
            self.refused_for_address.store(true, Ordering::Relaxed);
            refusal.message(RefusingSide::Relay)
        })
    }

    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        if self.params.get().is_some() {
            // Authenticated by the transport (HTTP upgrade); HELLO's token is not needed.
            return Ok(());
        }
        match self.auth.verify(Some(&hello.token)) {
            Ok(claims) => {
                let _ = self.params.set(params(&claims));
                Ok(())
            }
            // Counted when the session closes for it (`session::run`), and towards the
            // address's limit here.
            Err(e) => {
                if let Some(address) = self.address.as_ref().filter(|_| e.is_guess()) {
                    let now = tokio::time::Instant::now();
                    crate::state::lock_auth_failures(&address.failures).failed(address.ip, now);
                }
                let message = e.to_string();
                let _ = self.refused_credential.set(e);
                Err(message)
            }
        }
    }

    /// With authentication on, every connection's credential is checked: at the HTTP
    /// upgrade (WebSocket) or in HELLO (raw TCP and Unix). Without, the relay's HELLO says
    /// it checks none, so a client that presented a token is told.
    fn checks_credential(&self) -> bool {
        self.auth.required()
    }

    /// Over raw TCP and Unix sockets the credential comes in HELLO: the relay's HELLO (its
    /// node id and feed position) waits for it. (Over WebSocket the upgrade checked it.)
    fn hello_after_authentication(&self) -> bool {
        self.auth.required() && self.params.get().is_none()
    }

    /// The token's `sub` (the static token's is "token", shared by all who hold it). A `sub`
    /// that is not text (an issuer's numeric user id) is the same identity as its JSON text
    /// (`7` and `"7"`), and a token without one is the identity "" shared by every such
    /// token. Both were `None`, which skips the binding of node ids to identities: any
    /// token with a numeric or missing `sub` could connect as another user's node (an
    /// audit, 2026-12-06). A relay without authentication has no identities.
    fn identity(&self) -> Option<String> {
        // Without credentials there is nobody to tell apart (and no binding is recorded, so
        // a relay that turns authentication on later binds each node to its first user).
        if !self.auth.required() {
            return None;
        }
        Some(match self.claim("sub") {
            Some(Value::Text(sub)) => sub.clone(),
            Some(other) => blazedb::codec::json::to_json(other).to_string(),
            None => String::new(),
        })
    }

    /// A JWT's `exp` (plus the clock tolerance accepted at connect) bounds the session: the
    /// core ends it with `AUTH_FAILED` then, and the client reconnects with a fresh token.
    /// Static tokens do not expire.
    fn credential_lifetime_ms(&self) -> Option<u64> {
        let exp_s = match self.claim("exp")? {
            Value::Int(s) => *s as f64,
            Value::Float(s) => *s,
            _ => return None,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        let end_ms = (exp_s + JWT_LEEWAY_S as f64) * 1000.0;
        Some((end_ms - now_ms).max(0.0) as u64)
    }

    /// Without a rules file every caller may read everything: the session then skips the per-record read checks, which
    /// would cost one record read per change per connection on the fan-out path.
    fn filters_reads(&self) -> bool {
        self.rules.is_restricted()
    }

    fn can_read_collection(&self, collection: &str) -> bool {
        self.rules.can_read_collection(collection)
    }

    fn can_read(&self, collection: &str, id: RecordId, fields: &BTreeMap<String, Value>) -> bool {
        self.rules.can_read(collection, id, fields, self.params())
    }

    fn read_fields(&self, collection: &str) -> Option<BTreeSet<String>> {
        Some(self.rules.read_fields(collection))
    }

    fn params(&self) -> Params {
        ConnectionAccess::params(self).clone()
    }

    /// The read rules and the caller's claims, minus the ones that change with every token
    /// refresh (`exp`, `iat`, `nbf`, `jti`): a new token for the same caller keeps the view.
    fn view(&self) -> String {
        let mut claims = ConnectionAccess::params(self).clone();
        if let Some(Value::Map(auth)) = claims.get_mut("auth") {
            for k in ["exp", "iat", "nbf", "jti"] {
                auth.remove(k);
            }
        }
        format!("{}|{claims:?}", self.rules.read_rules_text())
    }

    fn can_write(
        &self,
        collection: &str,
        id: RecordId,
        before: Option<&BTreeMap<String, Value>>,
        after: Option<&BTreeMap<String, Value>>,
    ) -> Result<(), String> {
        self.rules
            .check_write(collection, id, before, after, self.params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, RelayConfig};
    use blazedb::sync::{Session, SessionConfig};
    use blazedb::{Database, OpenOptions};

    const RULES: &str = r#"
[bugs]
read = "assignee == $auth.sub"
write = "reporter == $auth.sub"
"#;

    /// Identities bind node ids to users: any `sub` is one (a number as its JSON text, none
    /// as ""), and a relay without authentication has none, so that turning authentication
    /// on later binds each node to its first user rather than to "".
    #[test]
    fn identities_of_subs_and_of_an_anonymous_relay() {
        let rules = Arc::new(Rules::parse(RULES, std::path::Path::new("rules.toml")).unwrap());
        let access = |auth: AuthConfig, claims: Claims| {
            let config = RelayConfig {
                auth,
                ..Default::default()
            };
            let auth = Arc::new(Authenticator::from_config(&config).unwrap());
            ConnectionAccess::new(rules.clone(), auth, Some(claims))
        };
        let token = || AuthConfig::Token("a-token-for-the-tests".into());
        let sub = |v: Value| -> Claims { [("sub".to_owned(), v)].into() };
        assert_eq!(
            access(token(), sub(Value::from("alice")))
                .identity()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            access(token(), sub(Value::Int(7))).identity().as_deref(),
            Some("7")
        );
        assert_eq!(
            access(token(), Claims::new()).identity().as_deref(),
            Some("")
        );
        assert_eq!(access(AuthConfig::None, Claims::new()).identity(), None);
    }

    /// Sync `client` with the relay's store as `sub`; returns every byte the relay sent.
    fn sync_as(relay: &Database, client: &Database, sub: &str) -> Vec<u8> {
        let rules = Arc::new(Rules::parse(RULES, std::path::Path::new("rules.toml")).unwrap());
        let config = RelayConfig {
            auth: AuthConfig::Token("a-token-for-the-tests".into()),
            ..Default::default()
        };
        let auth = Arc::new(Authenticator::from_config(&config).unwrap());
        let claims: Claims = [("sub".to_owned(), Value::from(sub))].into();
        let access = ConnectionAccess::new(rules, auth, Some(claims));
        let cfg = SessionConfig {
            server: true,
            access: Some(Arc::new(access)),
            ..Default::default()
        };
        let mut sr = Session::new(relay, cfg, 0).unwrap();
        let mut sc = Session::new(client, SessionConfig::default(), 0).unwrap();
        let mut sent = Vec::new();
        for _ in 0..10_000 {
            let mut progress = false;
            while let Some(f) = sr.poll_transmit(0, relay) {
                sent.extend_from_slice(&f);
                sc.handle_bytes(0, &f, client).unwrap();
                progress = true;
            }
            while let Some(f) = sc.poll_transmit(0, client) {
                sr.handle_bytes(0, &f, relay).unwrap();
                progress = true;
            }
            if !progress && sr.is_caught_up(relay).unwrap() && sc.is_caught_up(client).unwrap() {
                return sent;
            }
        }
        panic!("the sessions did not settle");
    }

    /// A client refused in a collection it may not read gets its own write undone, and is
    /// not sent the ids of records others write afterwards — in that collection, or in one it
    /// may read whose read rule never let it see them (not even in an EVICT).
    #[test]
    fn a_refusal_in_a_closed_collection_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| Database::open(dir.path().join(n), OpenOptions::default()).unwrap();
        let (relay, bob) = (open("relay.db"), open("bob.db"));
        let sneaky = bob.insert("admin", [("x", 1)]).unwrap();
        let sent = sync_as(&relay, &bob, "bob");
        assert!(relay.get("admin", sneaky).unwrap().is_none(), "refused");
        assert!(bob.get("admin", sneaky).unwrap().is_none(), "undone at bob");
        // (An id in a frame is visible to this check: the EVICT names bob's own record.)
        assert!(sent.windows(16).any(|w| w == &sneaky.0[..]));

        let later = relay.insert("admin", [("x", 2)]).unwrap();
        let hidden = relay
            .insert("bugs", [("assignee", "carol"), ("reporter", "carol")])
            .unwrap();
        relay.delete("admin", later).unwrap();
        let sent = sync_as(&relay, &bob, "bob");
        for id in [later, hidden] {
            assert!(
                !sent.windows(16).any(|w| w == &id.0[..]),
                "bob was sent the id of a record it may not read"
            );
        }
    }
}
