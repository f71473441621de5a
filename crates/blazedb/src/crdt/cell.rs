//! One versioned cell.

use std::sync::Arc;

use crate::limits::SEEN_VERSIONS_MAX;
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

/// One cell: key, value, version, the version it replaced at its origin (and, for a reset,
/// the newest version its writer held per node), and the local change-feed position that
/// last changed it.
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
    /// For a reset (a `Record` cell, or a plain `Field` write over a counter or set), the
    /// newest version its writer had seen per writer node among the cells it replaced or
    /// dropped at its origin; empty for other cells and for resets written before it existed.
    /// A single `prev` cannot tell an older write of another node that the writer never held
    /// from one it did: see [`Cell::has_seen`].
    pub seen: Seen,
    /// The local sequence number of the commit that stored it here.
    pub seq: Seq,
}

impl Cell {
    /// Whether this cell's writer had seen version `v` of a cell this one replaces or drops.
    /// With a [`Seen`] list, exactly when the list's entry for `v`'s node is `v` or newer;
    /// without one, by `prev` alone: `v` is no newer than `prev` (none: nothing was seen).
    pub fn has_seen(&self, v: Version) -> bool {
        if self.seen.is_empty() {
            self.prev.is_some_and(|p| v <= p)
        } else {
            self.seen.covers(v)
        }
    }

    /// The entries of the `seen` list that `prev` does not give, as encodings store them:
    /// `prev` is the newest version the writer held, so it is its own node's entry.
    pub fn seen_beyond_prev(&self) -> impl Iterator<Item = Version> + '_ {
        let prev_node = self.prev.map(|p| p.node);
        self.seen
            .versions()
            .iter()
            .copied()
            .filter(move |v| Some(v.node) != prev_node)
    }
}

/// Versions a reset's writer had seen, one per writer node (the newest), sorted by node.
/// Empty: no list (see [`Cell::seen`]). Its length is bounded by the nodes that wrote the
/// record, as every entry names one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(Vec<Version>);

impl Seen {
    /// The list of these versions, keeping the newest of each node, and of those the newest
    /// [`SEEN_VERSIONS_MAX`] (a node left out counts as unseen: a conflict too many at worst).
    pub fn from_versions(versions: impl IntoIterator<Item = Version>) -> Seen {
        let mut list: Vec<Version> = Vec::new();
        for v in versions {
            match list.binary_search_by(|x| x.node.cmp(&v.node)) {
                Ok(i) => list[i] = list[i].max(v),
                Err(i) => list.insert(i, v),
            }
        }
        if list.len() > SEEN_VERSIONS_MAX {
            list.sort_unstable_by(|a, b| b.cmp(a));
            list.truncate(SEEN_VERSIONS_MAX);
            list.sort_unstable_by_key(|v| v.node);
        }
        Seen(list)
    }

    /// A list decoded as [`Cell::seen_beyond_prev`] encodes it: `prev` and the other entries.
    pub fn with_prev(prev: Version, others: Vec<Version>) -> Seen {
        Seen::from_versions(std::iter::once(prev).chain(others))
    }

    /// True when there is no list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The versions, sorted by node.
    pub fn versions(&self) -> &[Version] {
        &self.0
    }

    /// Whether `v` is no newer than the entry of its node.
    pub fn covers(&self, v: Version) -> bool {
        self.0
            .binary_search_by(|x| x.node.cmp(&v.node))
            .is_ok_and(|i| v <= self.0[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Hlc;

    fn v(t: u64, n: u16) -> Version {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        Version {
            hlc: Hlc::new(t, 0),
            node: NodeId(id),
        }
    }

    #[test]
    fn a_seen_list_keeps_each_nodes_newest_and_covers_up_to_it() {
        let seen = Seen::from_versions([v(5, 1), v(9, 2), v(7, 1)]);
        assert_eq!(seen.versions(), [v(7, 1), v(9, 2)]);
        assert!(seen.covers(v(7, 1)) && seen.covers(v(3, 1)));
        assert!(!seen.covers(v(8, 1)), "newer than its node's entry");
        assert!(!seen.covers(v(1, 3)), "a node it does not name");
    }

    #[test]
    fn a_seen_list_over_the_limit_keeps_the_newest_entries() {
        let n = SEEN_VERSIONS_MAX as u16 + 10;
        let seen = Seen::from_versions((0..n).map(|i| v(100 + u64::from(i), i)));
        assert_eq!(seen.versions().len(), SEEN_VERSIONS_MAX);
        assert!(
            seen.covers(v(100 + u64::from(n - 1), n - 1)),
            "the newest stays"
        );
        // The oldest nodes are left out: their writes count as unseen (a conflict).
        assert!(!seen.covers(v(100, 0)));
        assert!(seen.versions().windows(2).all(|w| w[0].node < w[1].node));
    }
}
