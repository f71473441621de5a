//! The expression language: one syntax for CLI `--where` filters, subscription filters,
//! access rules and server-side queries.
//!
//! ```
//! use std::collections::BTreeMap;
//! use blazedb::query::{parse, Params};
//! use blazedb::types::Value;
//!
//! let rule = parse(r#"assignee == $auth.sub || (public && status in ["open", "done"])"#)?;
//!
//! let mut fields = BTreeMap::new();
//! fields.insert("assignee".to_owned(), Value::from("alice"));
//! fields.insert("public".to_owned(), Value::Bool(false));
//! let mut auth = BTreeMap::new();
//! auth.insert("sub".to_owned(), Value::from("alice"));
//! let mut params = Params::new();
//! params.insert("auth".to_owned(), Value::Map(auth));
//!
//! assert!(rule.matches(&[0; 16], &fields, &params));
//! assert!(!rule.matches(&[0; 16], &fields, &Params::new()));
//!
//! let err = parse("status = \"open\"").unwrap_err();
//! assert!(err.to_string().contains("did you mean `==`?"));
//! # Ok::<(), blazedb::query::QueryError>(())
//! ```
//!
//! # Grammar
//!
//! ```text
//! expr        = or
//! or          = and { ("||" | "or") and }
//! and         = comparison { ("&&" | "and") comparison }
//! comparison  = unary [ compare_op unary ]           (no chaining: `a < b < c` is an error)
//! compare_op  = "==" | "!=" | "<" | "<=" | ">" | ">="
//!             | "in" | "not" "in" | "contains" | "starts_with"
//! unary       = ("!" | "not") unary | primary
//! primary     = literal | path | "_id" | param | list | "(" expr ")"
//!             | "exists" "(" (path | "_id" | param) ")"
//! path        = name { "." name }                    (after a `.`, keywords are plain names)
//! name        = [A-Za-z_][A-Za-z0-9_]*  |  "`" any text but "`" "`"
//! param       = "$" [A-Za-z_][A-Za-z0-9_]* { "." name }
//! list        = "[" [ expr { "," expr } [ "," ] ] "]"
//! literal     = string | int | float | "true" | "false" | "null"
//!             | "uuid" "(" string ")" | "date" "(" string ")"   (RFC 3339)
//! string      = '"' { char | "\"" | "\\" | "\n" | "\r" | "\t" | "\0" | "\u{" hex{1,6} "}" } '"'
//! int         = [-] digit+                           (must fit in an i64)
//! float       = [-] digit+ ( "." digit+ [exp] | exp ),  exp = ("e"|"E") ["+"|"-"] digit+
//! ```
//!
//! Precedence, tightest first: `!`/`not`, then comparisons (`==` … `in`, `contains`,
//! `starts_with`), then `&&`/`and`, then `||`/`or`. Because `!` binds tighter than a
//! comparison, `!a == b` would mean `(!a) == b`; it is refused as ambiguous, write `!(a == b)`
//! or `(!a) == b`. Keywords (`true false null and or not in contains starts_with`) must be
//! backquoted to name a field; `exists`, `uuid` and `date` are functions only when followed by
//! `(`. A bare `_id` is the record id; `` `_id` `` is a field named `_id`. A constant where a
//! condition belongs (`status == "a" || "b"`) is refused.
//!
//! # Semantics
//!
//! Evaluation never fails: every operator is defined for every value.
//!
//! - A missing field and a path through a missing or non-map value evaluate to `null`. So
//!   `x == null` matches a missing or a null field, and `x != 1` matches a record without
//!   `x`. `exists(x)` tells them apart: it is true for a field that is present, even when
//!   null.
//! - A missing parameter (`$name`, or a path into one such as a claim `$auth.sub` the token
//!   does not carry) is *unknown*, like SQL's NULL: a comparison with it, a bare `$flag`, and
//!   the negation of either neither hold nor fail, nor does a comparison that uses an unknown
//!   condition as a value (`(owner == $auth.sub) == false`, `[owner == $auth.sub] ==
//!   [false]`); `a || b` holds when one side holds, `a && b` fails when one side fails, and an
//!   expression left unknown does not match. So a rule
//!   `assignee == $auth.sub` never lets a token without `sub` read records without
//!   `assignee`, and `!(owner == $auth.sub)` does not hold for it either.
//!   `exists($auth.sub)` tells whether the claim is there.
//! - `==` / `!=` use [`Value`] equality: `3 == 3.0`, and NaN equals NaN.
//! - `< <= > >=` are true only when both sides are of the same type class (numbers, text,
//!   bytes, uuids, timestamps, bools, lists, maps) and then follow [`Value::total_cmp`] (NaN is
//!   above every number). Across classes, or with null, they are false (not an error).
//! - `x in list` is true when an element equals `x`; when the right side is not a list it is
//!   false. `x not in list` is `!(x in list)`.
//! - `x contains v`: for a list (or set), an element equals `v`; for text, `v` is a substring.
//!   Otherwise false.
//! - `x starts_with p`: text prefix (or bytes prefix). Otherwise false.
//! - `!x` is true unless `x` is `true` (or unknown, above); a bare operand used as a
//!   condition (`public`, `$flag`) holds when its value is exactly `true`.
//! - `_id` is the record id as a uuid: `_id == uuid("…")`.
//!
//! # Limits
//!
//! Sources longer than [`EXPRESSION_BYTES_MAX`](crate::limits::EXPRESSION_BYTES_MAX) and
//! nesting of `(`, `[` and `!` deeper than
//! [`EXPRESSION_DEPTH_MAX`](crate::limits::EXPRESSION_DEPTH_MAX) are errors, so hostile input
//! cannot exhaust the stack. Names are at most
//! [`FIELD_NAME_BYTES_MAX`](crate::limits::FIELD_NAME_BYTES_MAX) bytes.

mod ast;
mod error;
mod eval;
mod lexer;
mod parser;
mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::types::Value;

pub use ast::{BinaryOp, Node};
pub use error::QueryError;
pub use plan::{IndexScan, KeyRange};

/// Values of the `$name` parameters of an expression, e.g. `auth` for `$auth.sub`.
pub type Params = BTreeMap<String, Value>;

/// A parsed expression, ready to evaluate against records.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: Node,
    source: String,
}

/// Parse an expression (see the [module docs](self) for the grammar).
pub fn parse(src: &str) -> Result<Expr, QueryError> {
    Ok(Expr {
        root: parser::parse_node(src)?,
        source: src.to_owned(),
    })
}

impl Expr {
    /// Whether a record matches. `fields` are the record's top-level fields, `id` its record
    /// id (as uuid bytes), `params` the values of `$name` parameters (a missing one is null).
    /// Never fails and never panics, whatever the record holds.
    pub fn matches(
        &self,
        id: &[u8; 16],
        fields: &BTreeMap<String, Value>,
        params: &Params,
    ) -> bool {
        eval::test(&self.root, &eval::Context { id, fields, params })
    }

    /// `self && other`: holds exactly when both hold, e.g. a query's filter and the caller's
    /// read rule, so that one scan applies both. The source is `(self) && (other)`, which
    /// parses back to the same tree.
    pub fn and(&self, other: &Expr) -> Expr {
        Expr {
            root: Node::And(vec![self.root.clone(), other.root.clone()]),
            source: format!("({}) && ({})", self.source, other.source),
        }
    }

    /// The source text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Top-level field names the expression reads (`a` for `a.b.c`; not `_id`), so rules and
    /// selective sync know which fields must stay readable.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.root.collect_fields(&mut out);
        out
    }

    /// The names of the parameters it reads (`auth` for `$auth.sub`).
    pub fn params(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.root.collect_params(&mut out);
        out
    }

    /// Plan an index scan: ranges over one indexed top-level field (`indexed(name)` says which
    /// fields have an index) such that every matching record has that field, with a value in
    /// one of the ranges. The caller still evaluates [`Expr::matches`] on each fetched row: the
    /// plan is a superset. `None` means a full scan is needed; `Some` with no ranges means no
    /// record can match. `params` must be the ones later used for evaluation.
    ///
    /// Planned: `f == v` (not null), `f in [...]`, `f < v` and the other orderings (bounded to
    /// `v`'s type class), `f starts_with "p"`, a bare `f` (as `f == true`), `&&` (the most
    /// selective field: one point, then several points, then ranges; several conditions on
    /// one field are intersected) and `||` (when every branch plans the same field).
    /// Not planned: `!`, `!=`, `exists`, `contains`, `_id`, nested paths.
    pub fn plan(&self, indexed: &dyn Fn(&str) -> bool, params: &Params) -> Option<IndexScan> {
        plan::plan(&self.root, indexed, params)
    }
}

impl fmt::Display for Expr {
    /// The source text, as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Expr {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn source_display_and_fields() {
        let src = "a.b == 1 && (c in $x || exists(d.e)) \
                   && _id != uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\") && `we ird` > 2";
        let e = match parse(src) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(e.source(), src);
        assert_eq!(e.to_string(), src);
        let fields: Vec<String> = e.fields().into_iter().collect();
        assert_eq!(fields, ["a", "c", "d", "we ird"]);
        assert_eq!(src.parse::<Expr>().ok(), Some(e));
    }

    #[test]
    fn and_holds_when_both_hold_and_reparses() {
        let (a, b) = (parse("x == 1 || y").unwrap(), parse("z && !w").unwrap());
        let both = a.and(&b);
        assert_eq!(both.source(), "(x == 1 || y) && (z && !w)");
        assert_eq!(parse(both.source()).ok(), Some(both.clone()));
        let params = Params::new();
        for x in [0, 1] {
            for z in [false, true] {
                let mut fields = BTreeMap::new();
                fields.insert("x".to_owned(), Value::Int(x));
                fields.insert("z".to_owned(), Value::Bool(z));
                let m = |e: &Expr| e.matches(&[0; 16], &fields, &params);
                assert_eq!(m(&both), m(&a) && m(&b), "x {x}, z {z}");
            }
        }
    }

    #[test]
    fn error_display_matches_the_documented_shape() {
        let Err(e) = parse("status == ") else {
            panic!("parsed")
        };
        assert_eq!(
            e.to_string(),
            "invalid expression at column 11: \
             expected a value after `==`, found end of input\n\
             \x20 status ==\n\
             \x20           ^"
        );
    }

    /// Fragments that make random token soup likely to get deep into the parser.
    const FRAGMENTS: &[&str] = &[
        "a",
        "b.c",
        "`x y`",
        "$p",
        "$p.q",
        "_id",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "!",
        "and",
        "or",
        "not",
        "in",
        "contains",
        "starts_with",
        "exists(",
        "uuid(",
        "date(",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "1",
        "-2",
        "1.5",
        "1e3",
        "\"s\"",
        "\"\\u{1F600}\"",
        "true",
        "false",
        "null",
        "\"",
        "`",
        "=",
        "é",
        "\u{202e}",
        "\0",
        " ",
        "\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any input either parses or gives an error; neither panics, and evaluation and
        /// planning of whatever parses do not panic either.
        #[test]
        fn never_panics_on_random_strings(src in "\\PC{0,64}") {
            exercise(&src);
        }

        #[test]
        fn never_panics_on_token_soup(parts in token_soup()) {
            exercise(&parts.concat());
            exercise(&parts.join(" "));
        }

        /// Canonical printing of a parsed tree parses back to the same tree.
        #[test]
        fn canonical_print_round_trips(parts in token_soup()) {
            let src = parts.join(" ");
            if let Ok(e) = parse(&src) {
                let printed = e.root().to_string();
                let again = parse(&printed).map_err(|err| {
                    TestCaseError::fail(format!("{src:?} printed as {printed:?}: {err}"))
                })?;
                prop_assert_eq!(again.root(), e.root(), "{:?} printed as {:?}", src, printed);
            }
        }
    }

    fn token_soup() -> impl Strategy<Value = Vec<&'static str>> {
        proptest::collection::vec(prop::sample::select(FRAGMENTS), 0..24)
    }

    fn exercise(src: &str) {
        match parse(src) {
            Ok(e) => {
                let mut fields = BTreeMap::new();
                fields.insert("a".to_owned(), Value::Int(1));
                fields.insert("b".to_owned(), Value::List(vec![Value::Null]));
                let mut params = Params::new();
                params.insert("p".to_owned(), Value::from("s"));
                let _ = e.matches(&[1; 16], &fields, &params);
                let _ = e.plan(&|_| true, &params);
                let _ = e.fields();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}
