//! The relay's [`AccessControl`] for one connection: who the caller is (its claims) and what
//! the rules let it read and write. The sync session consults it; the core enforces it
//! (filters what is sent, refuses forbidden transactions with REJECT and restates the writer's
//! copy).
//!
//! **Undoing a refused write in a closed collection.** The core undoes a refused write by
//! restating the relay's version — for an insert the relay never had, a tombstone — and sends
//! it back like any change, through the read filter. Deletes are sent to clients that may
//! read the collection, so a client that wrote into a collection it may not read would keep
//! its refused record. The connection therefore remembers the collections it was refused in
//! ([`REFUSED_COLLECTIONS_MAX`] of them) and lets deletes of those collections through to
//! it: it learns the ids of deleted records there (never any field value), which is no more
//! than it tried to write. Records it may not read are never sent, refused or not.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use blazedb::query::Params;
use blazedb::sync::{AccessControl, Hello};
use blazedb::{RecordId, Value};

use crate::auth::{params, Authenticator, Claims};
use crate::limits::JWT_LEEWAY_S;
use crate::metrics::Metrics;
use crate::rules::Rules;

/// Most collections one connection remembers being refused in (see the module docs).
pub const REFUSED_COLLECTIONS_MAX: usize = 1024;

/// Access decisions for one connection.
#[derive(Debug)]
pub struct ConnectionAccess {
    rules: Arc<Rules>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    /// Set once: at the HTTP upgrade (WebSocket), or from HELLO's token (raw TCP / Unix).
    params: OnceLock<Params>,
    /// Collections a write of this connection was refused in.
    refused: Mutex<HashSet<String>>,
}

impl ConnectionAccess {
    /// For a connection whose caller is already authenticated (`Some(claims)`, the HTTP
    /// upgrade) or will present its credential in HELLO (`None`).
    pub fn new(
        rules: Arc<Rules>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        claims: Option<Claims>,
    ) -> ConnectionAccess {
        let cell = OnceLock::new();
        if let Some(c) = claims {
            let _ = cell.set(params(&c));
        }
        ConnectionAccess {
            rules,
            auth,
            metrics,
            params: cell,
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// The caller's parameters; empty (every `$auth.x` null) before authentication, which
    /// the session never lets happen: it authenticates on HELLO before anything else.
    fn params(&self) -> &Params {
        static EMPTY: OnceLock<Params> = OnceLock::new();
        self.params
            .get()
            .unwrap_or_else(|| EMPTY.get_or_init(Params::new))
    }
}

impl AccessControl for ConnectionAccess {
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
            Err(e) => {
                self.metrics.auth_failures.inc();
                Err(e.to_string())
            }
        }
    }

    /// A JWT's `exp` (plus the clock tolerance accepted at connect) bounds the session: the
    /// core ends it with `AUTH_FAILED` then, and the client reconnects with a fresh token.
    /// Static tokens do not expire.
    fn credential_lifetime_ms(&self) -> Option<u64> {
        let Some(Value::Map(auth)) = ConnectionAccess::params(self).get("auth") else {
            return None;
        };
        let exp_s = match auth.get("exp")? {
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

    /// Without a rules file every caller may read everything (and no write is ever refused,
    /// so `refused` stays empty): the session then skips the per-record read checks, which
    /// would cost one record read per change per connection on the fan-out path.
    fn filters_reads(&self) -> bool {
        self.rules.is_restricted()
    }

    fn can_read_collection(&self, collection: &str) -> bool {
        self.rules.can_read_collection(collection)
            || self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(collection)
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
        let r = self
            .rules
            .check_write(collection, id, before, after, self.params());
        if r.is_err() {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.len() < REFUSED_COLLECTIONS_MAX {
                refused.insert(collection.to_owned());
            }
        }
        r
    }
}
