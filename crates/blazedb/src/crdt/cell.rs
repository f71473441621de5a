//! One versioned cell.

use std::sync::Arc;

use crate::types::{Seq, Version};
use crate::{NodeId, Value};

/// A field's name inside a cell key. Shared, not copied: a record decoded from storage takes
/// its names from the file's field dictionary, so every cell of every decoded record would
/// otherwise allocate its name again (measured 2026-12-03: 15 of the 70 allocations of a
/// one-field update applied on a second copy).
pub type FieldName = Arc<str>;

/// What a cell addresses inside a record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CellKey {
    /// The record's existence (insert / delete).
    Record,
    /// A plain field.
    Field(FieldName),
    /// One node's contribution to a counter field.
    Counter(FieldName, NodeId),
    /// One element of a set field, as its encoded value.
    Element(FieldName, Vec<u8>),
}

impl CellKey {
    /// The field this cell belongs to (`None` for the record cell).
    pub fn field(&self) -> Option<&str> {
        match self {
            CellKey::Record => None,
            CellKey::Field(f) | CellKey::Counter(f, _) | CellKey::Element(f, _) => Some(f),
        }
    }

    /// A readable name: `title`, `likes[counter:ab12…]`, `tags[element:"x"]`, `$record`.
    pub fn display_name(&self) -> String {
        match self {
            CellKey::Record => "$record".to_owned(),
            CellKey::Field(f) => f.to_string(),
            CellKey::Counter(f, n) => format!("{f}[counter:{n}]"),
            CellKey::Element(f, e) => match crate::codec::value::from_bytes(e) {
                Ok(v) => format!("{f}[element:{v}]"),
                Err(_) => format!("{f}[element:?]"),
            },
        }
    }
}

/// A cell's value.
#[derive(Clone, Debug, PartialEq)]
pub enum CellValue {
    /// A plain field's value.
    Value(Value),
    /// Removed: a deleted record, an unset field, an element taken out of a set.
    Absent,
    /// Present: a live record, an element in a set.
    Present,
    /// A node's cumulative contribution to a counter.
    Count(i64),
}

/// One cell: key, value, version, the version it replaced at its origin, and the local
/// change-feed position that last changed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// What the cell addresses.
    pub key: CellKey,
    /// Its value.
    pub value: CellValue,
    /// Who wrote it, when.
    pub version: Version,
    /// The version this write replaced at its origin (`None`: there was none). Used to tell a
    /// concurrent overwrite (a conflict) from a normal one.
    pub prev: Option<Version>,
    /// The local sequence number of the commit that stored it here.
    pub seq: Seq,
}
