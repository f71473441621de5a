//! Index planning: which rows of one field's index can hold a match.
//!
//! The plan is a filter in front of the real one: the caller fetches the rows whose indexed
//! value lies in one of the ranges and still evaluates the whole expression on each. So the
//! invariant is **superset**: every record that matches the expression has the planned field
//! present, with a value inside one of the ranges. A plan may be wider than needed, never
//! narrower. Records without the field are not in the index, which is why a predicate that a
//! missing field can satisfy (`f == null`, `f != 1`, `!(f < 3)`) never gets a plan.
//!
//! Ranges are over [`Value::total_cmp`]; [`crate::codec::keys::key_range_bounds`] turns them
//! into byte ranges over the index's memcmp-ordered keys.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::ast::{BinaryOp, Node};
use super::Params;
use crate::types::{Timestamp, Value};

/// Rows to fetch from the index of one top-level field.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexScan {
    /// The indexed top-level field.
    pub field: String,
    /// Sorted, disjoint, non-empty ranges of the field's value. No ranges means no record can
    /// match.
    pub ranges: Vec<KeyRange>,
}

impl IndexScan {
    /// Whether a value lies in one of the ranges.
    pub fn contains(&self, v: &Value) -> bool {
        self.ranges.iter().any(|r| r.contains(v))
    }
}

/// A range of values in [`Value::total_cmp`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    /// The lower bound.
    pub lo: Bound<Value>,
    /// The upper bound.
    pub hi: Bound<Value>,
}

impl KeyRange {
    /// The range holding exactly `v` (and the values equal to it, like `3` and `3.0`).
    pub fn point(v: Value) -> KeyRange {
        KeyRange {
            lo: Bound::Included(v.clone()),
            hi: Bound::Included(v),
        }
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: &Value) -> bool {
        let above_lo = match &self.lo {
            Bound::Unbounded => true,
            Bound::Included(lo) => v >= lo,
            Bound::Excluded(lo) => v > lo,
        };
        let below_hi = match &self.hi {
            Bound::Unbounded => true,
            Bound::Included(hi) => v <= hi,
            Bound::Excluded(hi) => v < hi,
        };
        above_lo && below_hi
    }

    /// Whether no value can lie in the range. Ranges like `(1, 2)` count as non-empty, as
    /// floats lie between.
    pub fn is_empty(&self) -> bool {
        match (&self.lo, &self.hi) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(lo), Bound::Included(hi)) => lo > hi,
            (
                Bound::Included(lo) | Bound::Excluded(lo),
                Bound::Included(hi) | Bound::Excluded(hi),
            ) => lo >= hi,
        }
    }

    fn is_point(&self) -> bool {
        matches!((&self.lo, &self.hi), (Bound::Included(a), Bound::Included(b)) if a == b)
    }

    /// The values in both ranges, `None` when there are none.
    fn intersect(&self, other: &KeyRange) -> Option<KeyRange> {
        let lo = match cmp_lo(&self.lo, &other.lo) {
            Ordering::Less => other.lo.clone(),
            _ => self.lo.clone(),
        };
        let hi = match cmp_hi(&self.hi, &other.hi) {
            Ordering::Greater => other.hi.clone(),
            _ => self.hi.clone(),
        };
        let r = KeyRange { lo, hi };
        (!r.is_empty()).then_some(r)
    }
}

/// Order of lower bounds: `Unbounded` first, and `[x` starts before `(x`.
fn cmp_lo(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Less,
        (_, Bound::Unbounded) => Ordering::Greater,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            x.total_cmp(y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => x.total_cmp(y).then(Ordering::Less),
        (Bound::Excluded(x), Bound::Included(y)) => x.total_cmp(y).then(Ordering::Greater),
    }
}

/// Order of upper bounds: `Unbounded` last, and `x)` ends before `x]`.
fn cmp_hi(a: &Bound<Value>, b: &Bound<Value>) -> Ordering {
    match (a, b) {
        (Bound::Unbounded, Bound::Unbounded) => Ordering::Equal,
        (Bound::Unbounded, _) => Ordering::Greater,
        (_, Bound::Unbounded) => Ordering::Less,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            x.total_cmp(y)
        }
        (Bound::Included(x), Bound::Excluded(y)) => x.total_cmp(y).then(Ordering::Greater),
        (Bound::Excluded(x), Bound::Included(y)) => x.total_cmp(y).then(Ordering::Less),
    }
}

/// Whether a range ending at `hi` and one starting at `lo` (not before it) leave no gap.
fn connects(hi: &Bound<Value>, lo: &Bound<Value>) -> bool {
    match (hi, lo) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Excluded(h), Bound::Excluded(l)) => l < h,
        (Bound::Included(h) | Bound::Excluded(h), Bound::Included(l) | Bound::Excluded(l)) => {
            l <= h
        }
    }
}

/// Sort ranges, drop empty ones and merge overlapping or touching ones.
fn normalize(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by(|a, b| cmp_lo(&a.lo, &b.lo));
    let mut out: Vec<KeyRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if connects(&last.hi, &r.lo) => {
                if cmp_hi(&r.hi, &last.hi) == Ordering::Greater {
                    last.hi = r.hi;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// The values in both sets; both inputs sorted and disjoint, as is the result.
fn intersect_all(a: &[KeyRange], b: &[KeyRange]) -> Vec<KeyRange> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        out.extend(x.intersect(y));
        if cmp_hi(&x.hi, &y.hi) == Ordering::Less {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// How selective a candidate is, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Selectivity {
    /// Some range wider than a point.
    Range,
    /// Several points (`in`).
    Points,
    /// One point (`==`).
    Point,
    /// Nothing can match.
    Nothing,
}

fn selectivity(ranges: &[KeyRange]) -> Selectivity {
    match ranges {
        [] => Selectivity::Nothing,
        [r] if r.is_point() => Selectivity::Point,
        rs if rs.iter().all(KeyRange::is_point) => Selectivity::Points,
        _ => Selectivity::Range,
    }
}

/// A plan for part of the expression: the values of `field` its matches can have.
struct Candidate {
    field: String,
    /// Normalized (sorted, disjoint, non-empty).
    ranges: Vec<KeyRange>,
}

/// Plan `node`: see the module doc for the superset invariant.
pub(crate) fn plan(
    node: &Node,
    indexed: &dyn Fn(&str) -> bool,
    params: &Params,
) -> Option<IndexScan> {
    let c = candidate(node, indexed, params)?;
    Some(IndexScan {
        field: c.field,
        ranges: c.ranges,
    })
}

fn candidate(node: &Node, indexed: &dyn Fn(&str) -> bool, params: &Params) -> Option<Candidate> {
    match node {
        // A bare field holds exactly when its value is `true`.
        Node::Field(_) => {
            let field = indexed_field(node, indexed)?;
            Some(Candidate {
                field,
                ranges: vec![KeyRange::point(Value::Bool(true))],
            })
        }
        Node::Binary { op, lhs, rhs } => {
            if let (Some(field), Some(c)) = (indexed_field(lhs, indexed), constant(rhs, params)) {
                predicate(field, *op, &c)
            } else if let (Some(c), Some(field), Some(op)) = (
                constant(lhs, params),
                indexed_field(rhs, indexed),
                op.flipped(),
            ) {
                predicate(field, op, &c)
            } else {
                None
            }
        }
        Node::And(items) => {
            // Intersect what each indexable operand says per field, then take the field whose
            // ranges are the most selective (first one on a tie).
            let mut per_field: BTreeMap<&str, (usize, Vec<KeyRange>)> = BTreeMap::new();
            let cands: Vec<Candidate> = items
                .iter()
                .filter_map(|n| candidate(n, indexed, params))
                .collect();
            for (i, c) in cands.iter().enumerate() {
                per_field
                    .entry(c.field.as_str())
                    .and_modify(|(_, rs)| *rs = intersect_all(rs, &c.ranges))
                    .or_insert_with(|| (i, c.ranges.clone()));
            }
            let (field, (_, ranges)) =
                per_field
                    .into_iter()
                    .max_by(|(_, (ia, ra)), (_, (ib, rb))| {
                        selectivity(ra)
                            .cmp(&selectivity(rb))
                            .then_with(|| rb.len().cmp(&ra.len()))
                            .then_with(|| ib.cmp(ia))
                    })?;
            Some(Candidate {
                field: field.to_owned(),
                ranges,
            })
        }
        Node::Or(items) => {
            // Only when every branch narrows the same field: a branch without a plan can
            // match rows outside any range.
            let mut field: Option<String> = None;
            let mut ranges = Vec::new();
            for n in items {
                let c = candidate(n, indexed, params)?;
                match &field {
                    Some(f) if *f != c.field => return None,
                    Some(_) => {}
                    None => field = Some(c.field),
                }
                ranges.extend(c.ranges);
            }
            Some(Candidate {
                field: field?,
                ranges: normalize(ranges),
            })
        }
        // A negation, `exists`, or a constant: no narrowing.
        Node::Not(_)
        | Node::Exists(_)
        | Node::Literal(_)
        | Node::RecordId
        | Node::Param { .. }
        | Node::List(_) => None,
    }
}

/// The name of an indexed top-level field, when `node` is one.
fn indexed_field(node: &Node, indexed: &dyn Fn(&str) -> bool) -> Option<String> {
    match node {
        Node::Field(path) => match path.as_slice() {
            [name] if indexed(name) => Some(name.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The value of `node` when it does not depend on the record: a literal, a parameter (the
/// same parameters are used for evaluation) or a list of those.
fn constant<'a>(node: &'a Node, params: &'a Params) -> Option<Cow<'a, Value>> {
    match node {
        Node::Literal(v) => Some(Cow::Borrowed(v)),
        Node::Param { name, path } => {
            let mut v = params.get(name);
            for step in path {
                v = match v {
                    Some(Value::Map(m)) => m.get(step),
                    _ => None,
                };
            }
            Some(v.map_or(Cow::Owned(Value::Null), Cow::Borrowed))
        }
        Node::List(items) => items
            .iter()
            .map(|n| constant(n, params).map(Cow::into_owned))
            .collect::<Option<Vec<Value>>>()
            .map(|v| Cow::Owned(Value::List(v))),
        _ => None,
    }
}

/// The ranges for `field op c`.
fn predicate(field: String, op: BinaryOp, c: &Value) -> Option<Candidate> {
    let ranges = match op {
        // A missing field equals null but is not in the index.
        BinaryOp::Eq if matches!(c, Value::Null) => return None,
        BinaryOp::Eq => vec![KeyRange::point(c.clone())],
        BinaryOp::In => match c {
            Value::List(items) if items.iter().any(|v| matches!(v, Value::Null)) => return None,
            Value::List(items) => normalize(items.iter().cloned().map(KeyRange::point).collect()),
            // `in` a non-list never holds.
            _ => Vec::new(),
        },
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            // Ordering holds only within c's type class; with null it never holds.
            let Some((class_lo, class_hi)) = class_bounds(c) else {
                return Some(Candidate {
                    field,
                    ranges: Vec::new(),
                });
            };
            let (lo, hi) = match op {
                BinaryOp::Lt => (class_lo, Bound::Excluded(c.clone())),
                BinaryOp::Le => (class_lo, Bound::Included(c.clone())),
                BinaryOp::Gt => (Bound::Excluded(c.clone()), class_hi),
                _ => (Bound::Included(c.clone()), class_hi),
            };
            normalize(vec![KeyRange { lo, hi }])
        }
        BinaryOp::StartsWith => match c {
            Value::Text(p) => vec![KeyRange {
                lo: Bound::Included(Value::Text(p.clone())),
                hi: text_prefix_end(p),
            }],
            Value::Bytes(p) => vec![KeyRange {
                lo: Bound::Included(Value::Bytes(p.clone())),
                hi: bytes_prefix_end(p),
            }],
            // `starts_with` anything else never holds.
            _ => Vec::new(),
        },
        BinaryOp::Ne | BinaryOp::Contains => return None,
    };
    Some(Candidate { field, ranges })
}

/// The least and greatest values of `v`'s type class (see `eval::type_class`), as bounds; `None`
/// for null, which orders with nothing.
fn class_bounds(v: &Value) -> Option<(Bound<Value>, Bound<Value>)> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => (
            Bound::Included(Value::Bool(false)),
            Bound::Included(Value::Bool(true)),
        ),
        // -inf is below every int; NaN is above every number.
        Value::Int(_) | Value::Float(_) => (
            Bound::Included(Value::Float(f64::NEG_INFINITY)),
            Bound::Included(Value::Float(f64::NAN)),
        ),
        // Text has no greatest value: end just before the least value of the next class.
        Value::Text(_) => (
            Bound::Included(Value::Text(String::new())),
            Bound::Excluded(Value::Bytes(Vec::new())),
        ),
        Value::Bytes(_) => (
            Bound::Included(Value::Bytes(Vec::new())),
            Bound::Excluded(Value::Uuid(uuid::Uuid::nil())),
        ),
        Value::Uuid(_) => (
            Bound::Included(Value::Uuid(uuid::Uuid::nil())),
            Bound::Included(Value::Uuid(uuid::Uuid::max())),
        ),
        Value::Timestamp(_) => (
            Bound::Included(Value::Timestamp(Timestamp(i64::MIN))),
            Bound::Included(Value::Timestamp(Timestamp(i64::MAX))),
        ),
        Value::List(_) => (
            Bound::Included(Value::List(Vec::new())),
            Bound::Excluded(Value::Map(BTreeMap::new())),
        ),
        Value::Map(_) => (
            Bound::Included(Value::Map(BTreeMap::new())),
            Bound::Unbounded,
        ),
    })
}

/// The end of the texts starting with `p`: the least text greater than all of them, which is
/// `p` with its last incrementable character incremented and the rest dropped (UTF-8 byte
/// order is code point order). Without one (`p` empty or all U+10FFFF), the end of all text.
fn text_prefix_end(p: &str) -> Bound<Value> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match u32::from(c) {
            0xD7FF => Some('\u{E000}'),
            n => n.checked_add(1).and_then(char::from_u32),
        };
        if let Some(next) = next {
            chars.push(next);
            return Bound::Excluded(Value::Text(chars.into_iter().collect()));
        }
    }
    Bound::Excluded(Value::Bytes(Vec::new()))
}

/// The end of the byte strings starting with `p`, as for [`text_prefix_end`].
fn bytes_prefix_end(p: &[u8]) -> Bound<Value> {
    let mut bytes = p.to_vec();
    while let Some(b) = bytes.pop() {
        if let Some(next) = b.checked_add(1) {
            bytes.push(next);
            return Bound::Excluded(Value::Bytes(bytes));
        }
    }
    Bound::Excluded(Value::Uuid(uuid::Uuid::nil()))
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Expr};
    use super::*;
    use crate::codec::keys::{encode_key, key_range_bounds};
    use proptest::prelude::*;
    use std::ops::RangeBounds;

    fn indexed(name: &str) -> bool {
        matches!(name, "a" | "b")
    }

    fn expr(src: &str) -> Expr {
        match parse(src) {
            Ok(e) => e,
            Err(e) => panic!("{src:?} failed:\n{e}"),
        }
    }

    fn plan_of(src: &str) -> Option<IndexScan> {
        let mut p = Params::new();
        p.insert("list".to_owned(), Value::List(vec![1.into(), 2.into()]));
        p.insert("n".to_owned(), Value::Int(4));
        expr(src).plan(&indexed, &p)
    }

    fn scan(field: &str, ranges: Vec<KeyRange>) -> Option<IndexScan> {
        Some(IndexScan {
            field: field.to_owned(),
            ranges,
        })
    }

    fn range(lo: Bound<Value>, hi: Bound<Value>) -> KeyRange {
        KeyRange { lo, hi }
    }

    fn inc(v: impl Into<Value>) -> Bound<Value> {
        Bound::Included(v.into())
    }

    fn exc(v: impl Into<Value>) -> Bound<Value> {
        Bound::Excluded(v.into())
    }

    #[test]
    fn equality_and_in() {
        assert_eq!(
            plan_of("a == 3"),
            scan("a", vec![KeyRange::point(3.into())])
        );
        assert_eq!(
            plan_of("3 == a"),
            scan("a", vec![KeyRange::point(3.into())])
        );
        assert_eq!(
            plan_of("a == $n"),
            scan("a", vec![KeyRange::point(4.into())])
        );
        assert_eq!(plan_of("a"), scan("a", vec![KeyRange::point(true.into())]));
        assert_eq!(
            plan_of("a in [3, 1, 3.0]"),
            scan(
                "a",
                vec![KeyRange::point(1.into()), KeyRange::point(3.into())]
            )
        );
        assert_eq!(
            plan_of("a in $list"),
            scan(
                "a",
                vec![KeyRange::point(1.into()), KeyRange::point(2.into())]
            )
        );
        assert_eq!(
            plan_of("a in [$n, 1]"),
            scan(
                "a",
                vec![KeyRange::point(1.into()), KeyRange::point(4.into())]
            )
        );
        assert_eq!(plan_of("a in $n"), scan("a", vec![]));
        assert_eq!(plan_of("a in []"), scan("a", vec![]));
    }

    #[test]
    fn never_planned() {
        for src in [
            "a == null",
            "a == $missing",
            "a in [1, null]",
            "a != 1",
            "!(a == 1)",
            "a not in [1]",
            "exists(a)",
            "a contains 1",
            "c == 1",
            "a.x == 1",
            "a == b",
            "a == 1 || c == 1",
            "a == 1 || b == 1",
            "true",
            "_id == uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\")",
            "1 in a",
            "(a == 1) == true",
            "(a == 0 || a != 0) && a == null",
            "a || a != 0",
        ] {
            assert_eq!(plan_of(src), None, "{src}");
        }
    }

    #[test]
    fn ranges_stay_in_the_type_class() {
        let (num_lo, num_hi) = (inc(f64::NEG_INFINITY), inc(f64::NAN));
        assert_eq!(
            plan_of("a < 5"),
            scan("a", vec![range(num_lo.clone(), exc(5))])
        );
        assert_eq!(plan_of("a <= 5"), scan("a", vec![range(num_lo, inc(5))]));
        assert_eq!(
            plan_of("a > 5"),
            scan("a", vec![range(exc(5), num_hi.clone())])
        );
        assert_eq!(plan_of("5 > a"), plan_of("a < 5"));
        assert_eq!(plan_of("a >= 5"), scan("a", vec![range(inc(5), num_hi)]));
        assert_eq!(
            plan_of("a >= \"m\""),
            scan("a", vec![range(inc("m"), exc(Vec::<u8>::new()))])
        );
        assert_eq!(plan_of("a < null"), scan("a", vec![]));
        assert_eq!(
            plan_of("a >= 2 && a < 5"),
            scan("a", vec![range(inc(2), exc(5))])
        );
        assert_eq!(plan_of("a > 5 && a < 2"), scan("a", vec![]));
        assert_eq!(plan_of("a > \"x\" && a < 2"), scan("a", vec![]));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            plan_of("a starts_with \"ab\""),
            scan("a", vec![range(inc("ab"), exc("ac"))])
        );
        assert_eq!(
            plan_of("a starts_with \"a\\u{10FFFF}\""),
            scan("a", vec![range(inc("a\u{10FFFF}"), exc("b"))])
        );
        assert_eq!(
            plan_of("a starts_with \"\\u{D7FF}\""),
            scan("a", vec![range(inc("\u{D7FF}"), exc("\u{E000}"))])
        );
        assert_eq!(
            plan_of("a starts_with \"\""),
            scan("a", vec![range(inc(""), exc(Vec::<u8>::new()))])
        );
        assert_eq!(plan_of("a starts_with 1"), scan("a", vec![]));
        assert_eq!(bytes_prefix_end(&[1, 0xFF]), exc(vec![2u8]));
        assert_eq!(bytes_prefix_end(&[0xFF]), exc(uuid::Uuid::nil()));
    }

    #[test]
    fn and_picks_the_most_selective_field() {
        assert_eq!(
            plan_of("a > 1 && b == 2"),
            scan("b", vec![KeyRange::point(2.into())])
        );
        assert_eq!(plan_of("a in [1, 2] && b > 2"), plan_of("a in [1, 2]"));
        assert_eq!(plan_of("c == 1 && a < 3"), plan_of("a < 3"));
        assert_eq!(plan_of("a == 1 && b == 2"), plan_of("a == 1"));
        assert_eq!(
            plan_of("!(a == 1) && b starts_with \"x\""),
            plan_of("b starts_with \"x\"")
        );
        assert_eq!(
            plan_of("a in [1, 2, 3] && a in [2, 3, 4]"),
            plan_of("a in [2, 3]")
        );
        assert_eq!(plan_of("c == 1 && !a"), None);
        // An operand that cannot be planned does not stop the others.
        assert_eq!(plan_of("a > 0 && b in [$missing]"), plan_of("a > 0"));
    }

    #[test]
    fn or_unions_one_field() {
        assert_eq!(plan_of("a == 1 || a == 2"), plan_of("a in [1, 2]"));
        assert_eq!(
            plan_of("a < 1 || a > 5 || a == 3"),
            scan(
                "a",
                vec![
                    range(inc(f64::NEG_INFINITY), exc(1)),
                    KeyRange::point(3.into()),
                    range(exc(5), inc(f64::NAN))
                ]
            )
        );
        assert_eq!(
            plan_of("a <= 3 || a >= 3"),
            scan("a", vec![range(inc(f64::NEG_INFINITY), inc(f64::NAN))])
        );
        assert_eq!(
            plan_of("(a == 1 && c == 2) || a == 2"),
            plan_of("a in [1, 2]")
        );
        assert_eq!(plan_of("a == 1 || !(a == 2)"), None);
        assert_eq!(
            plan_of("a || a == 0"),
            scan(
                "a",
                vec![KeyRange::point(true.into()), KeyRange::point(0.into())]
            )
        );
        assert_eq!(
            plan_of("a > \"\" || 0 == a"),
            scan(
                "a",
                vec![
                    KeyRange::point(0.into()),
                    range(exc(""), exc(Vec::<u8>::new()))
                ]
            )
        );
    }

    #[test]
    fn normalize_merges_touching_ranges() {
        let rs = normalize(vec![
            range(inc(5), exc(7)),
            range(inc(1), exc(3)),
            range(inc(3), inc(4)),
            range(exc(7), inc(8)),
            range(inc(9), exc(9)),
        ]);
        assert_eq!(
            rs,
            vec![
                range(inc(1), inc(4)),
                range(inc(5), exc(7)),
                range(exc(7), inc(8))
            ]
        );
    }

    // --- The superset property over random expressions and records. ---

    fn arb_constant() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (-2i64..3).prop_map(|i| i.to_string()),
            1 => prop::sample::select(vec!["1.5", "-0.0", "2.0", "1e300"]).prop_map(str::to_owned),
            3 => prop::sample::select(vec!["\"\"", "\"a\"", "\"ab\"", "\"b\"", "\"a\\u{10FFFF}\""])
                .prop_map(str::to_owned),
            2 => prop::sample::select(vec![
                "true", "false", "null", "[1, 2]", "[]", "$p", "$q", "$none",
            ])
            .prop_map(str::to_owned),
            1 => prop::sample::select(vec![
                "date(\"1970-01-01T00:00:00Z\")",
                "uuid(\"00000000-0000-0000-0000-000000000001\")",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn arb_predicate() -> impl Strategy<Value = String> {
        // Mostly the indexed fields and the planned operators, so that most cases plan.
        let field = prop::sample::select(vec!["a", "a", "a", "b", "b", "c", "a.x"]);
        let op = prop::sample::select(vec![
            "==",
            "==",
            "<",
            "<=",
            ">",
            ">=",
            "in",
            "starts_with",
            "!=",
            "contains",
        ]);
        prop_oneof![
            6 => (field.clone(), op.clone(), arb_constant())
                .prop_map(|(f, o, c)| format!("{f} {o} {c}")),
            2 => (arb_constant(), op, field.clone()).prop_map(|(c, o, f)| format!("{c} {o} {f}")),
            2 => (field.clone(), proptest::collection::vec(arb_constant(), 0..4))
                .prop_map(|(f, cs)| format!("{f} in [{}]", cs.join(", "))),
            1 => field.clone().prop_map(|f| format!("exists({f})")),
            1 => field.prop_map(str::to_owned),
        ]
    }

    fn arb_expr() -> impl Strategy<Value = String> {
        arb_predicate().prop_recursive(3, 6, 3, |inner| {
            prop_oneof![
                3 => proptest::collection::vec(inner.clone(), 2..3)
                    .prop_map(|v| format!("({})", v.join(" && "))),
                3 => proptest::collection::vec(inner.clone(), 2..4)
                    .prop_map(|v| format!("({})", v.join(" || "))),
                1 => inner.prop_map(|e| format!("!({e})")),
            ]
        })
    }

    /// The values records and parameters take: few enough to try every record over them.
    fn universe() -> Vec<Value> {
        let mut values = vec![Value::Null, Value::Bool(false), Value::Bool(true)];
        values.extend((-2i64..3).map(Value::Int));
        values.extend([1.5, -0.0, 1e300, f64::NAN, f64::NEG_INFINITY].map(Value::Float));
        values.extend(
            [
                "",
                "a",
                "ab",
                "abc",
                "b",
                "a\u{10FFFF}",
                "a\u{10FFFF}z",
                "\u{10FFFF}",
            ]
            .map(Value::from),
        );
        values.extend([
            Value::Bytes(vec![0xFF]),
            Value::Timestamp(Timestamp(0)),
            Value::Uuid(uuid::Uuid::from_u128(1)),
            Value::List(vec![1.into(), 2.into()]),
            Value::List(vec![]),
            Value::List(vec!["a".into()]),
            Value::Map([("x".to_owned(), Value::Int(1))].into_iter().collect()),
        ]);
        values
    }

    /// Every record with `a` and `b` missing or any value of the universe, `c` missing or 1.
    fn all_records() -> Vec<BTreeMap<String, Value>> {
        let options: Vec<Option<Value>> = std::iter::once(None)
            .chain(universe().into_iter().map(Some))
            .collect();
        let mut out = Vec::new();
        for a in &options {
            for b in &options {
                for c in [None, Some(Value::Int(1))] {
                    let rec: BTreeMap<String, Value> =
                        [("a", a.clone()), ("b", b.clone()), ("c", c)]
                            .into_iter()
                            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                            .collect();
                    out.push(rec);
                }
            }
        }
        out
    }

    fn arb_params() -> impl Strategy<Value = Params> {
        let value = prop::sample::select(universe());
        (value.clone(), value).prop_map(|(p, q)| {
            let mut params = Params::new();
            params.insert("p".to_owned(), p);
            params.insert("q".to_owned(), q);
            params
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every matching record (out of every record over a small universe of values) has the
        /// planned field, with a value (and key bytes) inside one of the plan's ranges.
        #[test]
        fn plan_is_a_superset(src in arb_expr(), params in arb_params()) {
            let records = all_records();
            let e = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
            let Some(scan) = e.plan(&indexed, &params) else { return Ok(()) };
            prop_assert!(indexed(&scan.field));
            let byte_ranges: Vec<_> = scan.ranges.iter().map(key_range_bounds).collect();
            for r in &scan.ranges {
                prop_assert!(!r.is_empty(), "{src}: empty range {r:?}");
            }
            for rec in &records {
                if !e.matches(&[0; 16], rec, &params) {
                    continue;
                }
                let v = rec.get(&scan.field);
                prop_assert!(v.is_some(), "{src} matches {rec:?} without `{}`", scan.field);
                let v = v.cloned().unwrap_or(Value::Null);
                prop_assert!(scan.contains(&v), "{src} matches {rec:?} outside {scan:?}");
                let key = encode_key(&v);
                prop_assert!(
                    byte_ranges.iter().any(|r| r.contains(&key)),
                    "{src} matches {rec:?}, key {key:?} outside the byte ranges"
                );
            }
        }
    }
}
