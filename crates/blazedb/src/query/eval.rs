//! Evaluating a syntax tree against one record.
//!
//! Evaluation is total: every operator is defined for every pair of values (a mismatch of
//! types is simply `false`), so a record can never make a filter or an access rule fail.
//! Recursion follows the tree, whose depth the parser bounds.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::ast::{BinaryOp, Node};
use super::Params;
use crate::types::Value;

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The record id, the value of `_id`.
    pub id: &'a [u8; 16],
    /// The record's top-level fields.
    pub fields: &'a BTreeMap<String, Value>,
    /// The values of `$name` parameters.
    pub params: &'a Params,
}

/// Whether `node` holds for the record: a boolean operator's result, or for any other node
/// (`public`, `$flag`, `true`), whether its value is exactly `true`. An expression whose
/// truth is unknown (see [`truth`]) does not hold.
pub(crate) fn test(node: &Node, cx: &Context<'_>) -> bool {
    truth(node, cx) == Some(true)
}

/// Three-valued truth, as SQL treats NULL, for parameters only: a comparison with a
/// parameter (or a parameter's path) that the caller does not have is neither true nor
/// false (`None`), and so is its negation; `and` and `or` follow Kleene's logic. A relay's
/// rule `assignee == $auth.sub` must not hold for a token without `sub` on a record without
/// `assignee` (both would read as null), nor `!(owner == $auth.sub)` for it on any record.
/// Unknown also spreads through a condition used as a value: `(owner == $auth.sub) == false`
/// and `[owner == $auth.sub] == [false]` are unknown, like the condition inside (read as
/// `false`, they held for every record of such a token).
/// A missing *field* is still plain null (`x == null` finds records without `x`), and
/// `exists($auth.sub)` still tells whether the claim is there.
fn truth(node: &Node, cx: &Context<'_>) -> Option<bool> {
    match node {
        Node::And(items) => {
            let mut unknown = false;
            for n in items {
                match truth(n, cx) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            (!unknown).then_some(true)
        }
        Node::Or(items) => {
            let mut unknown = false;
            for n in items {
                match truth(n, cx) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(false)
        }
        Node::Not(n) => truth(n, cx).map(|b| !b),
        Node::Binary { op, lhs, rhs } => {
            let l = known_value(lhs, cx)?;
            let r = known_value(rhs, cx)?;
            Some(binary(*op, &l, &r))
        }
        Node::Exists(n) => Some(exists(n, cx)),
        Node::Literal(_) | Node::Field(_) | Node::RecordId | Node::Param { .. } | Node::List(_) => {
            known_value(node, cx).map(|v| matches!(*v, Value::Bool(true)))
        }
    }
}

/// The value of `node`, or `None` when it is unknown: a parameter the caller does not have,
/// a condition whose truth is unknown, or a list holding either. A missing field is
/// [`Value::Null`]; a condition is a [`Value::Bool`]. Borrows from the tree, the record or
/// the parameters where it can.
fn known_value<'a>(node: &'a Node, cx: &Context<'a>) -> Option<Cow<'a, Value>> {
    match node {
        Node::Literal(v) => Some(Cow::Borrowed(v)),
        Node::Field(path) => {
            Some(lookup(cx.fields, path).map_or(Cow::Owned(Value::Null), Cow::Borrowed))
        }
        Node::Param { name, path } => cx
            .params
            .get(name)
            .and_then(|v| descend(v, path))
            .map(Cow::Borrowed),
        Node::RecordId => Some(Cow::Owned(Value::Uuid(uuid::Uuid::from_bytes(*cx.id)))),
        Node::List(items) => items
            .iter()
            .map(|n| known_value(n, cx).map(Cow::into_owned))
            .collect::<Option<Vec<Value>>>()
            .map(|items| Cow::Owned(Value::List(items))),
        Node::And(_) | Node::Or(_) | Node::Not(_) | Node::Binary { .. } | Node::Exists(_) => {
            truth(node, cx).map(|b| Cow::Owned(Value::Bool(b)))
        }
    }
}

/// `exists(x)`: the field or parameter is present, even if its value is null.
fn exists(node: &Node, cx: &Context<'_>) -> bool {
    match node {
        Node::Field(path) => lookup(cx.fields, path).is_some(),
        Node::Param { name, path } => cx.params.get(name).and_then(|v| descend(v, path)).is_some(),
        Node::RecordId => true,
        // The parser only puts paths inside `exists`; anything else is present by definition.
        _ => true,
    }
}

/// The value at a field path, if every step is present.
fn lookup<'a>(map: &'a BTreeMap<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    descend(map.get(first)?, rest)
}

/// Follow `path` into nested maps; `None` when a step is missing or not a map.
fn descend<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for step in path {
        match v {
            Value::Map(m) => v = m.get(step)?,
            _ => return None,
        }
    }
    Some(v)
}

/// The result of a binary predicate on two values.
pub(crate) fn binary(op: BinaryOp, l: &Value, r: &Value) -> bool {
    match op {
        BinaryOp::Eq => l == r,
        BinaryOp::Ne => l != r,
        BinaryOp::Lt => ordered(l, r) == Some(Ordering::Less),
        BinaryOp::Le => matches!(ordered(l, r), Some(Ordering::Less | Ordering::Equal)),
        BinaryOp::Gt => ordered(l, r) == Some(Ordering::Greater),
        BinaryOp::Ge => matches!(ordered(l, r), Some(Ordering::Greater | Ordering::Equal)),
        BinaryOp::In => match r {
            Value::List(items) => items.iter().any(|x| x == l),
            _ => false,
        },
        BinaryOp::Contains => match (l, r) {
            (Value::List(items), x) => items.iter().any(|i| i == x),
            (Value::Text(s), Value::Text(sub)) => s.contains(sub.as_str()),
            _ => false,
        },
        BinaryOp::StartsWith => match (l, r) {
            (Value::Text(s), Value::Text(p)) => s.starts_with(p.as_str()),
            (Value::Bytes(b), Value::Bytes(p)) => b.starts_with(p),
            _ => false,
        },
    }
}

/// The order of two values of the same type class (numbers together), `None` across classes
/// or with null. Within a class this is [`Value::total_cmp`], so NaN is above every number.
pub(crate) fn ordered(l: &Value, r: &Value) -> Option<Ordering> {
    let (a, b) = (type_class(l)?, type_class(r)?);
    (a == b).then(|| l.total_cmp(r))
}

/// The classes whose values can be ordered with `<`: ints and floats are one class. Null is in
/// none, so every ordering comparison with null (or a missing field) is false.
pub(crate) fn type_class(v: &Value) -> Option<u8> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 2,
        Value::Text(_) => 3,
        Value::Bytes(_) => 4,
        Value::Uuid(_) => 5,
        Value::Timestamp(_) => 6,
        Value::List(_) => 7,
        Value::Map(_) => 8,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use crate::types::Timestamp;
    use proptest::prelude::*;

    const ID: [u8; 16] = [7; 16];

    fn record() -> BTreeMap<String, Value> {
        let mut address = BTreeMap::new();
        address.insert("city".to_owned(), Value::from("Lyon"));
        address.insert("zip".to_owned(), Value::Null);
        let mut r = BTreeMap::new();
        r.insert("status".to_owned(), Value::from("open"));
        r.insert("priority".to_owned(), Value::Int(5));
        r.insert("score".to_owned(), Value::Float(2.5));
        r.insert("public".to_owned(), Value::Bool(true));
        r.insert("draft".to_owned(), Value::Bool(false));
        r.insert("nothing".to_owned(), Value::Null);
        r.insert(
            "tags".to_owned(),
            Value::List(vec!["a".into(), "b".into(), 3.into()]),
        );
        r.insert("address".to_owned(), Value::Map(address));
        r.insert("blob".to_owned(), Value::Bytes(vec![1, 2, 3]));
        r.insert("due".to_owned(), Value::Timestamp(Timestamp(1_000_000)));
        r.insert("weird name".to_owned(), Value::Int(1));
        r.insert("owner".to_owned(), Value::from("alice"));
        r
    }

    fn params() -> Params {
        let mut auth = BTreeMap::new();
        auth.insert("sub".to_owned(), Value::from("alice"));
        let mut p = Params::new();
        p.insert("auth".to_owned(), Value::Map(auth));
        p.insert(
            "states".to_owned(),
            Value::List(vec!["open".into(), "closed".into()]),
        );
        p.insert("min".to_owned(), Value::Int(3));
        p
    }

    fn check(src: &str) -> bool {
        match parse(src) {
            Ok(e) => e.matches(&ID, &record(), &params()),
            Err(e) => panic!("{src:?} failed:\n{e}"),
        }
    }

    #[track_caller]
    fn yes(src: &str) {
        assert!(check(src), "expected {src:?} to match");
    }

    #[track_caller]
    fn no(src: &str) {
        assert!(!check(src), "expected {src:?} not to match");
    }

    #[test]
    fn equality() {
        yes("status == \"open\"");
        no("status == \"closed\"");
        yes("status != \"closed\"");
        yes("priority == 5.0");
        yes("5 == priority");
        no("priority == \"5\"");
        yes("tags == [\"a\", \"b\", 3]");
        yes("address.city == \"Lyon\"");
        yes("address == address");
    }

    #[test]
    fn null_and_missing() {
        yes("missing == null");
        yes("nothing == null");
        yes("address.zip == null");
        yes("address.nowhere.deeper == null");
        yes("status.sub == null");
        no("status == null");
        yes("missing != 1");
        no("missing != null");
        no("missing < 1");
        no("missing >= 1");
        no("nothing <= null");
        no("missing");
        yes("!missing");
    }

    /// A comparison with a parameter the caller lacks is unknown, not true or false: it never
    /// holds, nor does its negation; `or` with a true side holds, `and` with a false side
    /// fails (Kleene). The relay's rules rely on it: a token without a claim never matches
    /// a record without the field the rule compares it to.
    #[test]
    fn a_missing_parameter_is_unknown() {
        no("$nope == null");
        no("$auth.nope == null");
        no("missing == $auth.nope");
        no("!(missing == $auth.nope)");
        no("!(owner == $auth.nope)");
        no("owner != $auth.nope");
        no("$auth.nope != 1");
        no("status in [$auth.nope, \"open\"]");
        no("$auth.nope");
        no("!$auth.nope");
        yes("public == true || owner == $auth.nope");
        no("public == true && owner == $auth.nope");
        no("public == false || owner == $auth.nope");
        yes("!(public == false && owner == $auth.nope)");
        no("!(public == true && owner == $auth.nope)");
        yes("!exists($auth.nope)");
        yes("owner == $auth.sub");
    }

    /// A condition on a missing parameter stays unknown when it is compared or listed: read
    /// as `false`, `(owner == $auth.sub) == false` held for every token without `sub`, while
    /// `!(owner == $auth.sub)` did not. Known conditions are still values.
    #[test]
    fn unknown_spreads_through_conditions_used_as_values() {
        no("(owner == $auth.nope) == false");
        no("(owner == $auth.nope) != true");
        no("(owner == $auth.nope) == true");
        no("[owner == $auth.nope] == [false]");
        no("[owner == $auth.nope] != [true]");
        no("(owner == $auth.nope) in [false]");
        no("(owner == $auth.nope) not in [true]");
        no("!((owner == $auth.nope) == false)");
        no("(!exists(x) && owner == $auth.nope) == false");
        no("[$auth.nope] == [null]");
        yes("(owner == $auth.nope || public) == true");
        yes("(draft && owner == $auth.nope) == false");
        yes("(owner == $auth.sub) == true");
        yes("(owner == \"bob\") == false");
        yes("[owner == $auth.sub, draft] == [true, false]");
        yes("(exists($auth.nope)) == false");
    }

    #[test]
    fn ordering_within_type_classes_only() {
        yes("priority > 4");
        yes("priority >= 5");
        yes("priority <= 5.0");
        no("priority < 5");
        yes("priority > 4.99");
        yes("score < priority");
        yes("status > \"apple\"");
        yes("status < \"p\"");
        // Across classes: false both ways, never an error.
        no("status > 1");
        no("status < 1");
        no("priority < \"a\"");
        no("priority > \"a\"");
        yes("due > date(\"1970-01-01T00:00:00Z\")");
        no("due > 0");
        yes("public > false");
        yes("tags > [\"a\"]");
    }

    #[test]
    fn in_contains_starts_with() {
        yes("status in [\"open\", \"closed\"]");
        no("status in [\"closed\"]");
        yes("status not in [\"closed\"]");
        yes("status in $states");
        no("status in $min");
        no("status in $missing");
        yes("priority in [1, 5.0]");
        no("status in \"open\"");
        yes("\"a\" in tags");
        yes("tags contains \"b\"");
        yes("tags contains 3.0");
        no("tags contains \"c\"");
        yes("status contains \"pe\"");
        yes("status contains \"\"");
        no("status contains 1");
        no("priority contains 5");
        yes("status starts_with \"op\"");
        no("status starts_with \"pe\"");
        no("priority starts_with \"5\"");
        yes("status in [\"x\", status]");
    }

    #[test]
    fn boolean_connectives_and_keywords() {
        yes("status == \"open\" && priority >= 5");
        no("status == \"open\" && priority > 5");
        yes("status == \"closed\" || priority == 5");
        no("status == \"closed\" || priority == 4");
        yes("!(status == \"closed\")");
        yes("status == \"open\" and not draft or false");
        yes("public");
        no("draft");
        yes("public == true");
        yes("!draft && public");
        yes("true");
        no("false");
        yes("(priority > 1) == true");
        // `&&` binds tighter than `||`.
        yes("true || false && false");
        no("(true || false) && false");
    }

    #[test]
    fn params_and_record_id() {
        yes("owner == $auth.sub");
        yes("assignee == $auth.sub || public == true");
        no("assignee == $auth.sub");
        yes("priority > $min");
        yes("_id == uuid(\"07070707-0707-0707-0707-070707070707\")");
        no("_id == uuid(\"07070707-0707-0707-0707-070707070708\")");
        no("_id == \"07070707-0707-0707-0707-070707070707\"");
        yes("exists(_id)");
    }

    #[test]
    fn exists_sees_null_fields() {
        yes("exists(nothing)");
        yes("exists(address.zip)");
        no("exists(missing)");
        no("exists(address.nowhere)");
        yes("exists(`weird name`)");
        yes("exists($auth.sub)");
        no("exists($auth.nope)");
        yes("!exists(missing)");
    }

    #[test]
    fn bytes_and_odd_values() {
        let mut fields = BTreeMap::new();
        fields.insert("b".to_owned(), Value::Bytes(vec![1, 2, 3]));
        fields.insert("n".to_owned(), Value::Float(f64::NAN));
        let mut p = Params::new();
        p.insert("pre".to_owned(), Value::Bytes(vec![1, 2]));
        let m = |src: &str| {
            parse(src)
                .map(|e| e.matches(&ID, &fields, &p))
                .unwrap_or(false)
        };
        assert!(m("b starts_with $pre"));
        assert!(!m("b starts_with \"a\""));
        // NaN sorts above every number and equals itself, as in the index.
        assert!(m("n > 1e300"));
        assert!(m("n == n"));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,4}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
            any::<i64>().prop_map(|t| Value::Timestamp(Timestamp(t))),
        ];
        leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::btree_map("[a-c]", inner, 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        /// Whatever the record and the parameters, evaluation returns instead of panicking.
        #[test]
        fn evaluation_is_total(
            a in arb_value(),
            b in arb_value(),
            op in prop::sample::select(vec![
                "==", "!=", "<", "<=", ">", ">=", "in", "contains", "starts_with", "not in",
            ]),
        ) {
            let mut fields = BTreeMap::new();
            fields.insert("a".to_owned(), a);
            let mut p = Params::new();
            p.insert("b".to_owned(), b);
            for src in [
                format!("a {op} $b"),
                format!("$b {op} a"),
                format!("a.a {op} $b.b"),
                format!("a {op} [$b, a]"),
                "a || $b && !a".to_owned(),
            ] {
                let e = parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let _ = e.matches(&ID, &fields, &p);
            }
        }
    }
}
