//! Access control hooks: who may connect, what they may read and what they may write.
//!
//! The core knows nothing about tokens or rule files; a relay implements [`AccessControl`]
//! per connection (holding the caller's verified claims) and passes it in the session's
//! [`crate::sync::SessionConfig`].

use std::collections::BTreeMap;

use crate::sync::Hello;
use crate::{RecordId, Value};

/// Decisions for one peer. Every method has a permissive default.
pub trait AccessControl: Send + Sync + std::fmt::Debug {
    /// Called with the peer's HELLO before anything else: refuse to end the session with
    /// `AUTH_FAILED` and this message (no data has flowed yet).
    fn authenticate(&self, hello: &Hello) -> Result<(), String> {
        let _ = hello;
        Ok(())
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
