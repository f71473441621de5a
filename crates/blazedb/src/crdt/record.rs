//! The state of one record and the merge of one cell into it.

use std::collections::BTreeMap;

use super::{Cell, CellKey, CellValue, Seen};
use crate::types::{Seq, Version};
use crate::Value;

/// A record's cells, sorted by key, keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordState {
    cells: Vec<Cell>,
}

/// What merging one cell did.
#[derive(Debug, PartialEq)]
pub enum MergeOutcome {
    /// The cell was older than (or equal to) what is stored: nothing changed.
    Ignored,
    /// The cell was stored; these local cells were replaced or dropped by it.
    Applied {
        /// Cells that the incoming one replaced (same key) or reset (older cells of the record or
        /// field).
        overwritten: Vec<Overwritten>,
    },
}

/// A local cell that a merge replaced or dropped.
#[derive(Debug, PartialEq)]
pub struct Overwritten {
    /// The cell as it was.
    pub cell: Cell,
    /// True when the writer of the winning cell had not seen this one: a conflict, whose loser
    /// must be recorded so that nothing is lost silently.
    pub concurrent: bool,
}

impl RecordState {
    /// An empty record (never written).
    pub fn new() -> RecordState {
        RecordState::default()
    }

    /// Build from cells (any order). Duplicate keys are an error: the input is damaged.
    pub fn from_cells(mut cells: Vec<Cell>) -> Result<RecordState, String> {
        // Stored records are already in order; only sort when they are not.
        if !cells.windows(2).all(|w| w[0].key < w[1].key) {
            cells.sort_by(|a, b| a.key.cmp(&b.key));
            if cells.windows(2).any(|w| w[0].key == w[1].key) {
                return Err("duplicate cell key in record".to_owned());
            }
        }
        Ok(RecordState { cells })
    }

    /// Build from the cells of a merged state (as another replica holds and sends them):
    /// `Ok` only when merging them one by one into an empty record would keep every one —
    /// unique keys, and no cell older than the record's reset or, for a counter or set cell,
    /// than its field's plain write. Then the result is exactly that merge, without paying
    /// for it cell by cell; `Err` gives the cells back for the caller to merge.
    pub fn from_merged_cells(mut cells: Vec<Cell>) -> Result<RecordState, Vec<Cell>> {
        if !cells.windows(2).all(|w| w[0].key < w[1].key) {
            cells.sort_by(|a, b| a.key.cmp(&b.key));
            if cells.windows(2).any(|w| w[0].key == w[1].key) {
                return Err(cells);
            }
        }
        let state = RecordState { cells };
        let reset = state.reset_point();
        let canonical = state.cells.iter().all(|c| match &c.key {
            CellKey::Record => true,
            CellKey::Field(_) => reset.is_none_or(|r| c.version >= r),
            CellKey::Counter(f, _) | CellKey::Element(f, _) => {
                reset.is_none_or(|r| c.version >= r)
                    && state
                        .cell(&CellKey::Field(f.clone()))
                        .is_none_or(|reg| c.version >= reg.version)
            }
        });
        if canonical {
            Ok(state)
        } else {
            Err(state.cells)
        }
    }

    /// The cells, sorted by key.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The cells, sorted by key, by value.
    pub fn into_cells(self) -> Vec<Cell> {
        self.cells
    }

    /// True when no cell was ever stored.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The cell with this key.
    pub fn cell(&self, key: &CellKey) -> Option<&Cell> {
        self.cells
            .binary_search_by(|c| c.key.cmp(key))
            .ok()
            .map(|i| &self.cells[i])
    }

    /// The version of the last insert or delete (the record's reset point).
    pub fn reset_point(&self) -> Option<Version> {
        self.cell(&CellKey::Record).map(|c| c.version)
    }

    /// The newest version of any cell: what a writer "has seen" of this record.
    pub fn newest_version(&self) -> Option<Version> {
        self.cells.iter().map(|c| c.version).max()
    }

    /// What a reset of `key` written over this state has seen ([`Cell::seen`]): per writer
    /// node, the newest version among the cells it replaces or drops — their own versions,
    /// the `prev` each carried and the lists of earlier resets (their writers had seen those,
    /// so this writer saw them through them). For a `Record` cell, every cell; for a `Field`
    /// cell, its field's cells, but only when there is a counter or set cell among them (a
    /// plain write over a plain field replaces one cell, which `prev` names exactly). Empty
    /// for other keys, and when there is nothing to replace.
    pub fn seen_by_reset(&self, key: &CellKey) -> Seen {
        // Checked before anything is gathered: a plain write over a plain field (the common
        // write) allocates nothing here.
        let replaced = |c: &&Cell| match key {
            CellKey::Record => true,
            CellKey::Field(f) => c.key.field() == Some(&**f),
            CellKey::Counter(..) | CellKey::Element(..) => false,
        };
        let resets_more = match key {
            CellKey::Record => true,
            CellKey::Field(_) => self
                .cells
                .iter()
                .filter(replaced)
                .any(|c| matches!(c.key, CellKey::Counter(..) | CellKey::Element(..))),
            CellKey::Counter(..) | CellKey::Element(..) => false,
        };
        if !resets_more {
            return Seen::default();
        }
        Seen::from_versions(self.cells.iter().filter(replaced).flat_map(|c| {
            std::iter::once(c.version)
                .chain(c.prev)
                .chain(c.seen.versions().iter().copied())
        }))
    }

    /// The newest version among field `f`'s cells (its register and its counter/set cells).
    pub fn newest_field_version(&self, f: &str) -> Option<Version> {
        self.cells
            .iter()
            .filter(|c| c.key.field() == Some(f))
            .map(|c| c.version)
            .max()
    }

    /// How many fields are visible (what [`RecordState::fields`] lists), without building
    /// their values. A removed field keeps its cell (its version must win over older writes
    /// arriving later) but is no field of the record: it does not count toward limits.
    pub fn field_count(&self) -> usize {
        // A field has one register cell at most: without counters or sets, count the present
        // values.
        if self.only_plain_fields() {
            return self
                .cells
                .iter()
                .filter(|c| matches!((&c.key, &c.value), (CellKey::Field(_), CellValue::Value(_))))
                .count();
        }
        let mut names: Vec<&str> = self
            .cells
            .iter()
            .filter(|c| Self::shows_field(c))
            .filter_map(|c| c.key.field())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Whether field `name` is visible (listed by [`RecordState::fields`]), without building
    /// its value.
    pub fn has_field(&self, name: &str) -> bool {
        self.cells
            .iter()
            .any(|c| c.key.field() == Some(name) && Self::shows_field(c))
    }

    /// Whether a cell makes its field visible: a present plain value, or any counter or set
    /// cell (a counter reads as a sum, a set as a list, even an empty one).
    fn shows_field(c: &Cell) -> bool {
        match (&c.key, &c.value) {
            (CellKey::Record, _) => false,
            (CellKey::Field(_), v) => matches!(v, CellValue::Value(_)),
            (CellKey::Counter(..), v) => matches!(v, CellValue::Count(_)),
            (CellKey::Element(..), _) => true,
        }
    }

    /// The highest local sequence number of any cell.
    pub fn max_seq(&self) -> Seq {
        self.cells.iter().map(|c| c.seq).max().unwrap_or_default()
    }

    /// True when the record exists (inserted and not deleted, or written after a delete).
    pub fn is_live(&self) -> bool {
        self.cells.iter().any(|c| match c.key {
            CellKey::Record => c.value == CellValue::Present,
            _ => true,
        })
    }

    /// True when the record was deleted and nothing was written after the delete.
    pub fn is_tombstone(&self) -> bool {
        !self.is_live() && self.reset_point().is_some()
    }

    /// Merge one cell. Idempotent (merging a stored cell again is `Ignored`), and the final
    /// state does not depend on the order in which cells arrive.
    pub fn merge(&mut self, incoming: Cell) -> MergeOutcome {
        self.merge_at(incoming).0
    }

    /// [`RecordState::merge`], also returning where the incoming cell now is in
    /// [`RecordState::cells`] when it was applied (so callers need not keep a copy of it).
    pub(crate) fn merge_at(&mut self, incoming: Cell) -> (MergeOutcome, Option<usize>) {
        // Cells older than a reset (record delete/insert, or a plain write of their field)
        // are dead on arrival.
        if incoming.key != CellKey::Record
            && self.reset_point().is_some_and(|r| incoming.version < r)
        {
            return (MergeOutcome::Ignored, None);
        }
        if let CellKey::Counter(f, _) | CellKey::Element(f, _) = &incoming.key {
            if self
                .cell(&CellKey::Field(f.clone()))
                .is_some_and(|reg| incoming.version < reg.version)
            {
                return (MergeOutcome::Ignored, None);
            }
        }

        let mut overwritten = Vec::new();
        let mut at = match self.cells.binary_search_by(|c| c.key.cmp(&incoming.key)) {
            Ok(i) => {
                let existing = &self.cells[i];
                let wins = incoming.version > existing.version
                    // Add wins over remove on an exact tie (only reachable from damaged input,
                    // as a version names one write).
                    || (incoming.version == existing.version
                        && incoming.value == CellValue::Present
                        && existing.value == CellValue::Absent);
                if !wins {
                    return (MergeOutcome::Ignored, None);
                }
                // A set element's presence is a value too: an add and a remove that never
                // saw each other conflict (two adds, or two removes, agree). A counter
                // contribution is overwritten by its own node, which saw it, or by a
                // server restating a refused increment (`Tx::restate`): that one is undone.
                let concurrent = match &incoming.key {
                    CellKey::Record | CellKey::Field(_) => true,
                    CellKey::Element(..) => incoming.value != existing.value,
                    CellKey::Counter(_, owner) => incoming.version.node != *owner,
                } && !incoming.has_seen(existing.version);
                let old = std::mem::replace(&mut self.cells[i], incoming);
                overwritten.push(Overwritten {
                    cell: old,
                    concurrent,
                });
                i
            }
            Err(i) => {
                self.cells.insert(i, incoming);
                i
            }
        };

        // Apply the reset that a record or plain-field write implies: drop older cells of the
        // record (a record write) or of the field's counter and set elements (a field write).
        // The incoming cell itself never matches.
        fn drops(c: &Cell, key: &CellKey, version: Version) -> bool {
            match key {
                CellKey::Record => c.key != CellKey::Record && c.version < version,
                CellKey::Field(f) => {
                    matches!(&c.key, CellKey::Counter(g, _) | CellKey::Element(g, _) if g == f)
                        && c.version < version
                }
                _ => false,
            }
        }
        let inc = &self.cells[at];
        // Usually nothing is dropped: check before paying for a copy of the key.
        if self.cells.iter().any(|c| drops(c, &inc.key, inc.version)) {
            // The reset's identity and what its writer had seen, apart from the cells.
            let reset = Cell {
                key: inc.key.clone(),
                value: CellValue::Absent,
                version: inc.version,
                prev: inc.prev,
                seen: inc.seen.clone(),
                seq: inc.seq,
            };
            let (key, version) = (&reset.key, reset.version);
            let mut kept = Vec::with_capacity(self.cells.len());
            for c in std::mem::take(&mut self.cells) {
                if drops(&c, key, version) {
                    let concurrent = !reset.has_seen(c.version);
                    overwritten.push(Overwritten {
                        cell: c,
                        concurrent,
                    });
                } else {
                    if c.key == *key {
                        at = kept.len();
                    }
                    kept.push(c);
                }
            }
            self.cells = kept;
        }
        (MergeOutcome::Applied { overwritten }, Some(at))
    }

    /// Whether every cell is a record or plain-field cell (no counters or sets): the common
    /// case, whose visible fields are just the present values.
    fn only_plain_fields(&self) -> bool {
        self.cells
            .iter()
            .all(|c| matches!(c.key, CellKey::Record | CellKey::Field(_)))
    }

    /// One visible field (without building the others).
    pub fn field(&self, name: &str) -> Option<Value> {
        let cells: Vec<Cell> = self
            .cells
            .iter()
            .filter(|c| c.key.field() == Some(name))
            .cloned()
            .collect();
        RecordState { cells }.into_fields().remove(name)
    }

    /// [`RecordState::fields`], consuming the state (no copies of the values).
    pub fn into_fields(self) -> BTreeMap<String, Value> {
        if !self.only_plain_fields() {
            return self.fields();
        }
        self.cells
            .into_iter()
            .filter_map(|c| match (c.key, c.value) {
                (CellKey::Field(f), CellValue::Value(v)) => Some((f.to_string(), v)),
                _ => None,
            })
            .collect()
    }

    /// A set field's elements from its element cells `(encoded, version, present)` given in
    /// key order: each value once, sorted, with whether it is in the set.
    ///
    /// Cells are keyed by the element's encoding, but a set holds values, and numerically
    /// equal values have several encodings (`1` and `1.0`, `0.0` and `-0.0`, NaNs, lists or
    /// maps holding such). Cells of equal values are one element: the newest of them decides
    /// whether it is in the set, and how it reads (on a version tie, which one write adding
    /// `[1, 1.0]` makes, the last in key order). So removing `1` takes out a `1.0` added
    /// before, whichever encoding sorts first, and every replica reads the same from the same
    /// cells. Undecodable elements (never accepted from a peer) are skipped.
    fn set_elements(cells: Vec<(&[u8], Version, bool)>) -> Vec<(Value, bool)> {
        let mut decoded: Vec<(Value, Version, bool)> = cells
            .into_iter()
            .filter_map(|(bytes, version, present)| {
                let elem = crate::codec::value::from_bytes(bytes).ok()?;
                Some((elem, version, present))
            })
            .collect();
        // Stable: among equal values and versions, key order stays.
        decoded.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        let mut out: Vec<(Value, bool)> = Vec::with_capacity(decoded.len());
        for (elem, _, present) in decoded {
            match out.last_mut() {
                // Sorted oldest first within equal values: a later one overrides.
                Some(last) if last.0 == elem => *last = (elem, present),
                _ => out.push((elem, present)),
            }
        }
        out
    }

    /// The visible fields: plain values, counters summed, sets listed.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        if self.only_plain_fields() {
            return self
                .cells
                .iter()
                .filter_map(|c| match (&c.key, &c.value) {
                    (CellKey::Field(f), CellValue::Value(v)) => Some((f.to_string(), v.clone())),
                    _ => None,
                })
                .collect();
        }
        #[derive(Default)]
        struct Acc<'a> {
            reg: Option<&'a CellValue>,
            counters: Vec<i64>,
            /// (encoded element, version, present), in key order.
            elements: Vec<(&'a [u8], Version, bool)>,
        }
        let mut acc: BTreeMap<&str, Acc<'_>> = BTreeMap::new();
        for c in &self.cells {
            match (&c.key, &c.value) {
                (CellKey::Record, _) => {}
                (CellKey::Field(f), v) => acc.entry(f).or_default().reg = Some(v),
                (CellKey::Counter(f, _), CellValue::Count(n)) => {
                    acc.entry(f).or_default().counters.push(*n)
                }
                (CellKey::Element(f, e), v) => acc.entry(f).or_default().elements.push((
                    e,
                    c.version,
                    *v == CellValue::Present,
                )),
                _ => {}
            }
        }
        let mut out = BTreeMap::new();
        for (f, a) in acc {
            let base = match a.reg {
                Some(CellValue::Value(v)) => Some(v),
                _ => None,
            };
            let value = if !a.counters.is_empty() {
                let base = match base {
                    Some(Value::Int(i)) => *i,
                    _ => 0,
                };
                Value::Int(a.counters.iter().fold(base, |s, n| s.saturating_add(*n)))
            } else if !a.elements.is_empty() {
                let elements = Self::set_elements(a.elements);
                let mut set: Vec<Value> = match base {
                    // Every element cell is newer than the base (older ones are dropped by
                    // it): it decides, present or absent, for the base's equal values.
                    Some(Value::List(l)) => l
                        .iter()
                        .filter(|x| elements.binary_search_by(|(e, _)| e.cmp(x)).is_err())
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                set.extend(
                    elements
                        .into_iter()
                        .filter_map(|(elem, present)| present.then_some(elem)),
                );
                set.sort();
                set.dedup();
                Value::List(set)
            } else {
                match base {
                    Some(v) => v.clone(),
                    None => continue,
                }
            };
            out.insert(f.to_owned(), value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Hlc;
    use crate::NodeId;
    use proptest::prelude::*;

    fn v(t: u64, n: u8) -> Version {
        Version {
            hlc: Hlc::new(t, 0),
            node: NodeId([n; 16]),
        }
    }

    fn cell(key: CellKey, value: CellValue, version: Version, prev: Option<Version>) -> Cell {
        Cell {
            key,
            value,
            version,
            prev,
            seen: crate::crdt::Seen::default(),
            seq: Seq(0),
        }
    }

    fn field(f: &str) -> CellKey {
        CellKey::Field(f.into())
    }

    #[test]
    fn last_writer_wins_and_reports_concurrent_loser() {
        let mut r = RecordState::new();
        r.merge(cell(field("a"), CellValue::Value(1.into()), v(10, 1), None));
        // A writer that never saw v(10,1) overwrites it: a conflict.
        let out = r.merge(cell(field("a"), CellValue::Value(2.into()), v(11, 2), None));
        let MergeOutcome::Applied { overwritten } = out else {
            panic!()
        };
        assert!(overwritten[0].concurrent);
        // One that saw it: not a conflict.
        let out = r.merge(cell(
            field("a"),
            CellValue::Value(3.into()),
            v(12, 1),
            Some(v(11, 2)),
        ));
        let MergeOutcome::Applied { overwritten } = out else {
            panic!()
        };
        assert!(!overwritten[0].concurrent);
        // An older write is ignored; re-delivery is ignored.
        assert_eq!(
            r.merge(cell(field("a"), CellValue::Value(9.into()), v(5, 3), None)),
            MergeOutcome::Ignored
        );
        assert_eq!(
            r.merge(cell(
                field("a"),
                CellValue::Value(3.into()),
                v(12, 1),
                Some(v(11, 2))
            )),
            MergeOutcome::Ignored
        );
        assert_eq!(r.fields()["a"], Value::Int(3));
    }

    #[test]
    fn from_merged_cells_equals_merging_them_or_declines() {
        let v = |h: u64| Version {
            hlc: crate::types::Hlc(h),
            node: crate::NodeId([1; 16]),
        };
        let cell = |key: CellKey, value: CellValue, h: u64| Cell {
            key,
            value,
            version: v(h),
            prev: None,
            seen: crate::crdt::Seen::default(),
            seq: Seq(0),
        };
        let good = vec![
            cell(CellKey::Record, CellValue::Present, 10),
            cell(
                CellKey::Field("a".into()),
                CellValue::Value(Value::Int(1)),
                12,
            ),
            cell(
                CellKey::Field("s".into()),
                CellValue::Value(Value::List(vec![])),
                11,
            ),
            cell(
                CellKey::Element("s".into(), vec![1]),
                CellValue::Present,
                13,
            ),
        ];
        let mut merged = RecordState::new();
        for c in good.iter().rev().cloned() {
            merged.merge(c);
        }
        assert_eq!(RecordState::from_merged_cells(good.clone()), Ok(merged));
        // A cell older than the reset, or than its field's plain write, would be dropped.
        let mut dead = good.clone();
        dead.push(cell(
            CellKey::Field("b".into()),
            CellValue::Value(Value::Int(2)),
            9,
        ));
        assert!(RecordState::from_merged_cells(dead).is_err());
        let mut dead = good.clone();
        dead.push(cell(
            CellKey::Element("s".into(), vec![2]),
            CellValue::Present,
            10,
        ));
        assert!(RecordState::from_merged_cells(dead).is_err());
        let mut dup = good;
        dup.push(dup[1].clone());
        assert!(RecordState::from_merged_cells(dup).is_err());
    }

    #[test]
    fn delete_drops_older_fields_and_newer_write_resurrects() {
        let mut r = RecordState::new();
        r.merge(cell(CellKey::Record, CellValue::Present, v(1, 1), None));
        r.merge(cell(field("a"), CellValue::Value(1.into()), v(1, 1), None));
        r.merge(cell(field("b"), CellValue::Value(2.into()), v(3, 2), None));
        r.merge(cell(
            CellKey::Record,
            CellValue::Absent,
            v(2, 1),
            Some(v(1, 1)),
        ));
        // b was written at t=3, after the delete at t=2: the record lives with b only.
        assert!(r.is_live());
        assert_eq!(r.fields().len(), 1);
        assert_eq!(r.fields()["b"], Value::Int(2));
        // a late write from before the delete is dead on arrival.
        assert_eq!(
            r.merge(cell(field("c"), CellValue::Value(1.into()), v(1, 3), None)),
            MergeOutcome::Ignored
        );
    }

    /// A delete whose writer held `g` at t=12 (its own) but never B's edit of `f` at t=10:
    /// by `prev` alone the edit is older, so it counts as seen; by the delete's `seen` list
    /// B is missing, so it is a conflict. A cell of a node the list names is judged by that
    /// node's entry.
    #[test]
    fn a_reset_with_a_seen_list_judges_each_dropped_cell_by_its_node() {
        let (a, b, c) = (1, 2, 3);
        let state = || {
            let mut r = RecordState::new();
            r.merge(cell(CellKey::Record, CellValue::Present, v(1, c), None));
            r.merge(cell(field("f"), CellValue::Value(1.into()), v(10, b), None));
            r.merge(cell(field("g"), CellValue::Value(2.into()), v(12, a), None));
            r.merge(cell(field("h"), CellValue::Value(3.into()), v(5, c), None));
            r
        };
        let concurrent = |r: &mut RecordState, delete: Cell| -> Vec<String> {
            let MergeOutcome::Applied { overwritten } = r.merge(delete) else {
                panic!("a newer delete applies")
            };
            let mut names: Vec<String> = overwritten
                .into_iter()
                .filter(|o| o.concurrent)
                .map(|o| o.cell.key.display_name())
                .collect();
            names.sort();
            names
        };
        let delete = |seen: Seen| Cell {
            seen,
            ..cell(CellKey::Record, CellValue::Absent, v(13, a), Some(v(12, a)))
        };
        // No list (an older writer): prev alone, everything older than t=12 counts as seen.
        assert!(concurrent(&mut state(), delete(Seen::default())).is_empty());
        // The writer held C's insert and h (t=5), and its own g: B's f is unseen.
        let held = Seen::from_versions([v(12, a), v(5, c)]);
        assert_eq!(concurrent(&mut state(), delete(held)), ["f"]);
        // It held C only up to t=1: h (t=5) is unseen too.
        let held = Seen::from_versions([v(12, a), v(1, c), v(10, b)]);
        assert_eq!(concurrent(&mut state(), delete(held)), ["h"]);
    }

    #[test]
    fn the_seen_list_a_writer_makes_covers_what_it_held() {
        let (a, b, c) = (1, 2, 3);
        let e = |x: i64| crate::codec::value::to_bytes(&Value::Int(x));
        let mut r = RecordState::new();
        r.merge(cell(CellKey::Record, CellValue::Present, v(1, c), None));
        r.merge(cell(
            field("f"),
            CellValue::Value(1.into()),
            v(10, b),
            Some(v(1, c)),
        ));
        r.merge(cell(
            field("s"),
            CellValue::Value(Value::List(vec![])),
            v(2, a),
            None,
        ));
        r.merge(cell(
            CellKey::Element("s".into(), e(1)),
            CellValue::Present,
            v(3, a),
            None,
        ));
        // A delete: every cell, and what their prevs name.
        assert_eq!(
            r.seen_by_reset(&CellKey::Record).versions(),
            [v(3, a), v(10, b), v(1, c)]
        );
        // A plain write over a set field: that field's cells only.
        assert_eq!(r.seen_by_reset(&field("s")).versions(), [v(3, a)]);
        // Over a plain field it replaces one cell, which prev names: no list.
        assert!(r.seen_by_reset(&field("f")).is_empty());
    }

    #[test]
    fn counters_sum_contributions_over_a_base() {
        let mut r = RecordState::new();
        r.merge(cell(field("n"), CellValue::Value(10.into()), v(1, 1), None));
        r.merge(cell(
            CellKey::Counter("n".into(), NodeId([1; 16])),
            CellValue::Count(2),
            v(2, 1),
            None,
        ));
        r.merge(cell(
            CellKey::Counter("n".into(), NodeId([2; 16])),
            CellValue::Count(5),
            v(2, 2),
            None,
        ));
        assert_eq!(r.fields()["n"], Value::Int(17));
        // A plain write after them resets the counter.
        r.merge(cell(field("n"), CellValue::Value(0.into()), v(3, 1), None));
        assert_eq!(r.fields()["n"], Value::Int(0));
        assert_eq!(r.cells().len(), 1);
    }

    #[test]
    fn sets_add_and_remove_elements() {
        let e = |x: &str| crate::codec::value::to_bytes(&Value::from(x));
        let mut r = RecordState::new();
        r.merge(cell(
            field("t"),
            CellValue::Value(Value::List(vec!["a".into()])),
            v(1, 1),
            None,
        ));
        r.merge(cell(
            CellKey::Element("t".into(), e("b")),
            CellValue::Present,
            v(2, 1),
            None,
        ));
        r.merge(cell(
            CellKey::Element("t".into(), e("a")),
            CellValue::Absent,
            v(2, 2),
            None,
        ));
        assert_eq!(r.fields()["t"], Value::List(vec!["b".into()]));
    }

    #[test]
    fn numerically_equal_elements_are_one_element_decided_by_the_newest_cell() {
        let e = |x: Value| crate::codec::value::to_bytes(&x);
        let state = |cells: [(Value, u64, CellValue); 2]| {
            let mut r = RecordState::new();
            r.merge(cell(
                field("t"),
                CellValue::Value(Value::List(vec![Value::Int(1), "a".into()])),
                v(1, 1),
                None,
            ));
            for (x, t, value) in cells {
                r.merge(cell(
                    CellKey::Element("t".into(), e(x)),
                    value,
                    v(t, 1),
                    None,
                ));
            }
            r.fields()["t"].clone()
        };
        let shown = |x: Value| crate::codec::value::to_bytes(&x);
        // Int 1 sorts before Float 1.0 by key: the newest decides, not the key order.
        let removed = state([
            (Value::Float(1.0), 2, CellValue::Present),
            (Value::Int(1), 3, CellValue::Absent),
        ]);
        assert_eq!(shown(removed), shown(Value::List(vec!["a".into()])));
        let added = state([
            (Value::Float(1.0), 3, CellValue::Present),
            (Value::Int(1), 2, CellValue::Absent),
        ]);
        assert_eq!(
            shown(added),
            shown(Value::List(vec![Value::Float(1.0), "a".into()]))
        );
        // 0.0 sorts before -0.0 by key.
        let removed = state([
            (Value::Float(-0.0), 2, CellValue::Present),
            (Value::Float(0.0), 3, CellValue::Absent),
        ]);
        assert_eq!(
            shown(removed),
            shown(Value::List(vec![Value::Int(1), "a".into()]))
        );
        // Both present: one element, as the newer wrote it.
        let both = state([
            (Value::Float(1.0), 3, CellValue::Present),
            (Value::Int(1), 2, CellValue::Present),
        ]);
        assert_eq!(
            shown(both),
            shown(Value::List(vec![Value::Float(1.0), "a".into()]))
        );
    }

    fn arb_cell() -> impl Strategy<Value = Cell> {
        let key = prop_oneof![
            Just(CellKey::Record),
            Just(field("a")),
            Just(field("b")),
            (0u8..3).prop_map(|n| CellKey::Counter("a".into(), NodeId([n; 16]))),
            (0u8..3).prop_map(|n| CellKey::Element("b".into(), vec![0x03, n])),
            // Numerically equal to some of the ints above: one element with them.
            prop_oneof![Just(0.0), Just(-0.0), Just(1.0), Just(-1.0)].prop_map(|x: f64| {
                CellKey::Element("b".into(), crate::codec::value::to_bytes(&Value::Float(x)))
            }),
        ];
        (key, 0u64..6, 0u8..3, any::<i8>(), any::<bool>()).prop_map(|(key, t, n, x, flag)| {
            let value = match key {
                CellKey::Record | CellKey::Element(..) => {
                    if flag {
                        CellValue::Present
                    } else {
                        CellValue::Absent
                    }
                }
                CellKey::Field(_) => {
                    if flag {
                        CellValue::Value(Value::Int(x.into()))
                    } else {
                        CellValue::Absent
                    }
                }
                CellKey::Counter(..) => CellValue::Count(x.into()),
            };
            // Distinct writes never share a version: derive the value from the version. A
            // record or field write carries what its writer had seen, derived from it too:
            // a prev one tick back, and for a record write a list with another node's entry.
            let prev = (t > 0 && matches!(key, CellKey::Record | CellKey::Field(_)))
                .then(|| v(t - 1, (n + 1) % 3));
            let seen = match (&key, prev) {
                (CellKey::Record, Some(p)) => Seen::from_versions([p, v(t / 2, (n + 2) % 3)]),
                _ => Seen::default(),
            };
            Cell {
                seen,
                ..cell(key, value, v(t, n), prev)
            }
        })
    }

    /// Same key and version means same write in a real system; keep one per (key, version).
    fn dedup_writes(cells: Vec<Cell>) -> Vec<Cell> {
        let mut seen = std::collections::HashSet::new();
        cells
            .into_iter()
            .filter(|c| seen.insert((c.key.clone(), c.version)))
            .collect()
    }

    fn apply_all(cells: &[Cell]) -> RecordState {
        let mut r = RecordState::new();
        for c in cells {
            r.merge(c.clone());
        }
        r
    }

    proptest! {
        #[test]
        fn merge_is_order_independent_and_idempotent(
            cells in proptest::collection::vec(arb_cell(), 0..12).prop_map(dedup_writes),
            seed in any::<u64>(),
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let a = apply_all(&cells);
            let mut shuffled = cells.clone();
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            // Duplicate delivery of everything.
            shuffled.extend(cells.iter().cloned());
            let b = apply_all(&shuffled);
            prop_assert_eq!(a.cells(), b.cells());
            prop_assert_eq!(a.fields(), b.fields());
            // The limits count the fields a reader sees, removed ones not among them.
            let fields = a.fields();
            prop_assert_eq!(a.field_count(), fields.len());
            for name in ["a", "b", "c"] {
                prop_assert_eq!(a.has_field(name), fields.contains_key(name), "{}", name);
            }
        }

        #[test]
        fn merging_states_is_associative(
            x in proptest::collection::vec(arb_cell(), 0..6),
            y in proptest::collection::vec(arb_cell(), 0..6),
            z in proptest::collection::vec(arb_cell(), 0..6),
        ) {
            let all = dedup_writes([x.clone(), y.clone(), z.clone()].concat());
            let keep = |part: &Vec<Cell>| -> Vec<Cell> {
                all.iter().filter(|c| part.iter().any(|p| p == *c)).cloned().collect()
            };
            let (x, y, z) = (keep(&x), keep(&y), keep(&z));
            // (x ⊔ y) ⊔ z == x ⊔ (y ⊔ z), merging replica states cell by cell.
            let xy = apply_all(&[apply_all(&x).cells(), apply_all(&y).cells()].concat());
            let left = apply_all(&[xy.cells(), apply_all(&z).cells()].concat());
            let yz = apply_all(&[apply_all(&y).cells(), apply_all(&z).cells()].concat());
            let right = apply_all(&[apply_all(&x).cells(), yz.cells()].concat());
            prop_assert_eq!(left.cells(), right.cells());
        }
    }
}
