//! The syntax tree of a parsed expression.
//!
//! Invariants the parser guarantees: `And`/`Or` hold at least two operands (a chain of the same
//! connective is one flat node, so `a || b || ... ` does not nest), every `Vec<String>` path has
//! at least one segment, and the tree is at most [`EXPRESSION_DEPTH_MAX`] levels of
//! parentheses, lists and `!` deep.
//!
//! [`EXPRESSION_DEPTH_MAX`]: crate::limits::EXPRESSION_DEPTH_MAX

use std::collections::BTreeSet;
use std::fmt;

use crate::types::Value;

/// One node of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A constant (lists whose elements are all constant are folded into one literal).
    Literal(Value),
    /// A field path from the record's top level: `a.b.c` is `["a", "b", "c"]`.
    Field(Vec<String>),
    /// `_id`, the record id, as a [`Value::Uuid`].
    RecordId,
    /// `$name.path`, resolved from the parameters at evaluation time.
    Param {
        /// The parameter's name.
        name: String,
        /// The path into the parameter's value (empty for the whole value).
        path: Vec<String>,
    },
    /// `[a, b, ...]` with at least one element that is not a constant.
    List(Vec<Node>),
    /// `!x` / `not x`.
    Not(Box<Node>),
    /// `a && b && ...`, at least two operands.
    And(Vec<Node>),
    /// `a || b || ...`, at least two operands.
    Or(Vec<Node>),
    /// A binary predicate: `a == b`, `a in b`, `a contains b`, ...
    Binary {
        /// The operator.
        op: BinaryOp,
        /// The left operand.
        lhs: Box<Node>,
        /// The right operand.
        rhs: Box<Node>,
    },
    /// `exists(path)`: the field (or parameter) is present, even if null.
    Exists(Box<Node>),
}

/// The binary predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `contains`
    Contains,
    /// `starts_with`
    StartsWith,
}

impl BinaryOp {
    /// The operator as written in the canonical syntax.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::Contains => "contains",
            BinaryOp::StartsWith => "starts_with",
        }
    }

    /// The operator with its operands swapped (`a < b` is `b > a`), where one exists.
    pub fn flipped(self) -> Option<BinaryOp> {
        match self {
            BinaryOp::Eq => Some(BinaryOp::Eq),
            BinaryOp::Ne => Some(BinaryOp::Ne),
            BinaryOp::Lt => Some(BinaryOp::Gt),
            BinaryOp::Le => Some(BinaryOp::Ge),
            BinaryOp::Gt => Some(BinaryOp::Lt),
            BinaryOp::Ge => Some(BinaryOp::Le),
            BinaryOp::In | BinaryOp::Contains | BinaryOp::StartsWith => None,
        }
    }
}

impl Node {
    /// Add the top-level field names this node reads to `out`.
    pub fn collect_fields(&self, out: &mut BTreeSet<String>) {
        match self {
            Node::Field(path) => {
                if let Some(first) = path.first() {
                    out.insert(first.clone());
                }
            }
            Node::Literal(_) | Node::RecordId | Node::Param { .. } => {}
            Node::List(items) | Node::And(items) | Node::Or(items) => {
                for n in items {
                    n.collect_fields(out);
                }
            }
            Node::Not(n) | Node::Exists(n) => n.collect_fields(out),
            Node::Binary { lhs, rhs, .. } => {
                lhs.collect_fields(out);
                rhs.collect_fields(out);
            }
        }
    }

    /// Add the names of the parameters this node reads (`auth` for `$auth.sub`) to `out`.
    pub fn collect_params(&self, out: &mut BTreeSet<String>) {
        match self {
            Node::Param { name, .. } => {
                out.insert(name.clone());
            }
            Node::Literal(_) | Node::RecordId | Node::Field(_) => {}
            Node::List(items) | Node::And(items) | Node::Or(items) => {
                for n in items {
                    n.collect_params(out);
                }
            }
            Node::Not(n) | Node::Exists(n) => n.collect_params(out),
            Node::Binary { lhs, rhs, .. } => {
                lhs.collect_params(out);
                rhs.collect_params(out);
            }
        }
    }

    /// Binding strength when printed, to know where parentheses are needed.
    fn precedence(&self) -> u8 {
        match self {
            Node::Or(_) => 1,
            Node::And(_) => 2,
            Node::Binary { .. } => 3,
            Node::Not(_) => 4,
            _ => 5,
        }
    }

    /// Print `self`, parenthesized when it binds looser than `min`.
    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if self.precedence() < min {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// The canonical source of a node: parsing it gives the same tree back.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Literal(v) => fmt_literal(v, f),
            Node::Field(path) => fmt_path(path, f),
            Node::RecordId => f.write_str("_id"),
            Node::Param { name, path } => {
                write!(f, "${name}")?;
                for p in path {
                    f.write_str(".")?;
                    fmt_name(p, f)?;
                }
                Ok(())
            }
            Node::List(items) => {
                f.write_str("[")?;
                for (i, n) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}")?;
                }
                f.write_str("]")
            }
            // `!` binds tighter than a comparison, so `!(a == b)` needs its parentheses.
            Node::Not(n) => {
                f.write_str("!")?;
                n.fmt_at(f, 4)
            }
            Node::And(items) | Node::Or(items) => {
                let (sep, prec) = match self {
                    Node::And(_) => (" && ", 2),
                    _ => (" || ", 1),
                };
                for (i, n) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    // A nested chain of the same connective keeps its parentheses so the tree
                    // round-trips exactly.
                    n.fmt_at(f, prec + 1)?;
                }
                Ok(())
            }
            Node::Binary { op, lhs, rhs } => {
                // Operands of a comparison must not be comparisons (no chaining) nor bare `!`
                // (the parser refuses `!a == b` as ambiguous).
                lhs.fmt_at(f, 5)?;
                write!(f, " {} ", op.symbol())?;
                rhs.fmt_at(f, 4)
            }
            Node::Exists(n) => write!(f, "exists({n})"),
        }
    }
}

/// The identifiers that are keywords and must be backquoted to be used as a field name.
pub(crate) const KEYWORDS: &[&str] = &[
    "true",
    "false",
    "null",
    "and",
    "or",
    "not",
    "in",
    "contains",
    "starts_with",
];

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn fmt_name(name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if is_plain_name(name) && !KEYWORDS.contains(&name) && name != "_id" {
        f.write_str(name)
    } else {
        write!(f, "`{name}`")
    }
}

fn fmt_path(path: &[String], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, p) in path.iter().enumerate() {
        if i > 0 {
            f.write_str(".")?;
        }
        fmt_name(p, f)?;
    }
    Ok(())
}

/// Literals in source syntax. Bytes and maps have no literal syntax and NaN/infinity cannot be
/// written; the parser never produces them, so they print in a readable but unparseable form.
fn fmt_literal(v: &Value, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match v {
        Value::Null => f.write_str("null"),
        Value::Bool(b) => write!(f, "{b}"),
        Value::Int(i) => write!(f, "{i}"),
        // `{:?}` is the shortest text that reads back as the same f64, and always shows a
        // `.` or an exponent, so it reads back as a float.
        Value::Float(x) => write!(f, "{x:?}"),
        Value::Text(s) => fmt_string(s, f),
        Value::Bytes(b) => write!(f, "bytes({b:?})"),
        Value::Uuid(u) => write!(f, "uuid(\"{u}\")"),
        Value::Timestamp(t) => write!(f, "date(\"{}\")", t.to_rfc3339()),
        Value::List(items) => {
            f.write_str("[")?;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                fmt_literal(x, f)?;
            }
            f.write_str("]")
        }
        Value::Map(m) => {
            f.write_str("{")?;
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                fmt_string(k, f)?;
                f.write_str(": ")?;
                fmt_literal(x, f)?;
            }
            f.write_str("}")
        }
    }
}

fn fmt_string(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}
