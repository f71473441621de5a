//! Access control hooks: who may connect, what they may read and what they may write.
//!
//! The core knows nothing about tokens or rule files; a relay implements [`AccessControl`]
//! per connection (holding the caller's verified claims) and passes it in the session's
//! [`crate::sync::SessionConfig`].

use std::collections::{BTreeMap, BTreeSet};

use crate::query::Params;
use crate::sync::Hello;
use crate::{RecordId, Value};

/// Peer note: the identity ([`AccessControl::identity`]) a node id was first seen under; the
/// handshake refuses the node to any other identity.
pub(crate) const IDENTITY_NOTE: &str = "identity";

/// Decisions for one peer. Every method has a permissive default.
pub trait AccessControl: Send + Sync + std::fmt::Debug {
    /// Called with the peer's HELLO before [`AccessControl::authenticate`]: refuse to end the
    /// session with `RATE_LIMITED` and this message, the peer's credential unread. For a side
    /// that stops checking the credentials of a peer that failed too often (the relay, per
    /// client address), so that guessing stops; `RATE_LIMITED` tells the peer to try again
    /// later, not to give up as after `AUTH_FAILED`. Default: admit.
    fn admit(&self, hello: &Hello) -> Result<(), String> {
        let _ = hello;
        Ok(())
    }

    /// Called with the peer's HELLO before anything else but [`AccessControl::admit`]:
    /// refuse to end the session with `AUTH_FAILED` and this message (no data has flowed
    /// yet).
    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        let _ = hello;
        Ok(())
    }

    /// Whether `authenticate` checks the peer's credential, refusing a peer without a valid
    /// one (a token listener; a relay with authentication on, over any transport). A side
    /// whose access control says no, or that has none, tells its peer so in HELLO
    /// (`caps::TOKEN_UNCHECKED`), so that a peer that presented a token learns it was never
    /// checked ([`crate::sync::SessionEvent::TokenUnchecked`]). Default: false, as the
    /// default `authenticate` accepts everyone: implement it with `authenticate`.
    fn checks_credential(&self) -> bool {
        false
    }

    /// Whether this side's HELLO (its node id and feed position) waits until `authenticate`
    /// accepted the peer's: true where the peer's credential comes in its HELLO, so that a
    /// peer without a valid one learns nothing but the refusal. Only the accepting side may
    /// say so (two sides that both waited would wait for each other until the handshake
    /// timeout). Default: false.
    fn hello_after_authentication(&self) -> bool {
        false
    }

    /// Who the peer `authenticate` just accepted is (a token's `sub`), if the credential
    /// says. A node id, once seen under an identity, is refused to any other with
    /// `AUTH_FAILED`: one client cannot speak as another's node (its cursors, staged units
    /// and unsent writes are keyed by node id). `None` (the default): no binding.
    fn identity(&self) -> Option<String> {
        None
    }

    /// How much longer (ms from now) the credential `authenticate` just accepted stays valid:
    /// asked once, right after a successful `authenticate`. When it runs out the session ends
    /// with `AUTH_FAILED`, so a token that expires cannot keep a connection open forever.
    /// `None` (the default): the credential does not expire.
    fn credential_lifetime_ms(&self) -> Option<u64> {
        None
    }

    /// Whether `can_read_collection` / `can_read` can ever say no. When false the session
    /// skips the per-record read checks (e.g. a listener that only checks a token).
    fn filters_reads(&self) -> bool {
        true
    }

    /// Whether the peer may receive anything of this collection (deletes included).
    fn can_read_collection(&self, collection: &str) -> bool {
        let _ = collection;
        true
    }

    /// Whether the peer may receive this record as it is now.
    fn can_read(&self, collection: &str, id: RecordId, fields: &BTreeMap<String, Value>) -> bool {
        let _ = (collection, id, fields);
        true
    }

    /// Top-level fields that `can_read` looks at in this collection, so that the sender knows
    /// which changes can move a record into or out of the peer's view (`None`: it may look
    /// at any field — every change is treated as possibly moving the record, which is always
    /// correct but sends whole records). Implement it when `can_read` looks at few fields.
    fn read_fields(&self, collection: &str) -> Option<BTreeSet<String>> {
        let _ = collection;
        None
    }

    /// Values of `$name` parameters for the peer's sync filter (a relay passes the caller's
    /// claims as `auth`, so a filter can say `owner == $auth.sub`).
    fn params(&self) -> Params {
        Params::new()
    }

    /// A text that changes whenever what the peer may read could have changed for reasons
    /// other than the records themselves (other claims, other rules). The sender stores it
    /// per peer and answers a changed one with a snapshot, so the peer's copy is brought back
    /// to exactly its view.
    fn view(&self) -> String {
        String::new()
    }

    /// Whether the peer may change a record from `before` to `after` (`None`: absent or
    /// deleted). `Err` carries the reason sent back to the writer.
    fn can_write(
        &self,
        collection: &str,
        id: RecordId,
        before: Option<&BTreeMap<String, Value>>,
        after: Option<&BTreeMap<String, Value>>,
    ) -> Result<(), String> {
        let _ = (collection, id, before, after);
        Ok(())
    }
}

/// A change refused by [`AccessControl::can_write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The collection.
    pub collection: String,
    /// The record.
    pub id: RecordId,
    /// Why (for the writer's user).
    pub reason: String,
}
