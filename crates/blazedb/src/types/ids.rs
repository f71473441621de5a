//! Identifier newtypes, so that a sequence number can never be passed where a node id goes.

use std::fmt;
use std::str::FromStr;

/// A replica's identity: 128 random bits, generated once when a database file is created and
/// persisted in it. Ties between equal timestamps break on it, so every replica picks the same
/// winner.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> NodeId {
        NodeId(*uuid::Uuid::new_v4().as_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let u = uuid::Uuid::try_parse(s).map_err(|e| {
            format!(
                "invalid node id {:?}: {e} (expected 32 hex digits)",
                crate::error::excerpt(s)
            )
        })?;
        Ok(NodeId(*u.as_bytes()))
    }
}

/// A record's key: 128 bits, a UUIDv7 by default (time-ordered, so inserts append to the
/// b-tree), or any 16 bytes the caller supplies.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    /// A new time-ordered id (UUIDv7).
    pub fn new_v7() -> RecordId {
        RecordId(*uuid::Uuid::now_v7().as_bytes())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.0)
    }
}

impl From<uuid::Uuid> for RecordId {
    fn from(u: uuid::Uuid) -> Self {
        RecordId(*u.as_bytes())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_uuid(), f)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.as_uuid())
    }
}

impl FromStr for RecordId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(RecordId::from).map_err(|e| {
            format!(
                "invalid record id {:?}: {e} (expected a UUID)",
                crate::error::excerpt(s)
            )
        })
    }
}

/// A position in this database's change feed. Every local commit takes the next one and stamps
/// the cells it changed with it; a peer's sync cursor is a `Seq` of the other side's feed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
