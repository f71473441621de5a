//! Recursive-descent parser from tokens to a [`Node`] tree.
//!
//! Recursion happens only at `(`, `[` and `!`, and each of those counts one level against
//! [`EXPRESSION_DEPTH_MAX`], so hostile input cannot overflow the stack: it gets
//! [`QueryError::TooDeep`]. Chains of `&&` / `||` are parsed in a loop into one flat node.

use super::ast::{BinaryOp, Node, KEYWORDS};
use super::error::QueryError;
use super::lexer::{tokenize, Tok, Token};
use crate::limits::{EXPRESSION_BYTES_MAX, EXPRESSION_DEPTH_MAX};
use crate::types::{Timestamp, Value};

/// Characters of a constant quoted back in an error message.
const QUOTE_CHARS_MAX: usize = 24;

/// Parse `src` into a syntax tree.
pub(crate) fn parse_node(src: &str) -> Result<Node, QueryError> {
    if src.len() > EXPRESSION_BYTES_MAX {
        return Err(QueryError::too_long(src.len()));
    }
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens,
        idx: 0,
        depth: 0,
    };
    if *p.peek() == Tok::End {
        return Err(
            p.error_here("empty expression: expected a condition such as `status == \"open\"`")
        );
    }
    let start = p.token().start;
    let node = p.parse_or()?;
    let node = p.condition(node, start)?;
    match p.peek() {
        Tok::End => Ok(node),
        Tok::RParen => Err(p.error_here("unexpected `)` with no matching `(`")),
        Tok::Word(w) if w == "is" => {
            Err(p.error_here("`is` is not an operator: write `x == null` or `x != null`"))
        }
        // SQL's upper-case keywords: the language's are lower case.
        Tok::Word(w)
            if ["and", "or", "in", "contains", "starts_with", "not"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k) && w != k) =>
        {
            Err(p.error_here(format!(
                "found `{w}`: keywords are lower case here: write `{}`{}",
                w.to_ascii_lowercase(),
                match w.to_ascii_lowercase().as_str() {
                    "and" => " or `&&`",
                    "or" => " or `||`",
                    _ => "",
                }
            )))
        }
        found => Err(p.error_here(format!(
            "expected `&&`, `||` or the end of the expression after a complete condition, found {}",
            found.describe()
        ))),
    }
}

struct Parser<'a> {
    src: &'a str,
    /// Never empty: the last token is always [`Tok::End`].
    tokens: Vec<Token>,
    /// Index of the next token; never past the final `End`.
    idx: usize,
    /// Current nesting of `(`, `[` and `!`.
    depth: usize,
}

impl Parser<'_> {
    fn token(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.idx.min(last)]
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn peek_second(&self) -> &Tok {
        self.tokens.get(self.idx + 1).map_or(&Tok::End, |t| &t.tok)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    /// Take the next token (the final `End` is never consumed, it repeats).
    fn advance(&mut self) -> Token {
        let t = self.token().clone();
        if self.idx + 1 < self.tokens.len() {
            self.idx += 1;
        }
        t
    }

    /// The source text of the token before the next one, shortened to quote it back.
    fn previous_text(&self) -> Option<String> {
        let prev = self.tokens.get(self.idx.checked_sub(1)?)?;
        let text = self.src.get(prev.start..prev.end)?;
        let mut shown: String = text.chars().take(QUOTE_CHARS_MAX).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        Some(shown)
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> QueryError {
        QueryError::syntax(self.src, pos, message)
    }

    fn error_here(&self, message: impl Into<String>) -> QueryError {
        self.error_at(self.token().start, message)
    }

    /// "expected a value after `==`, found end of input"
    fn expected_value(&self) -> QueryError {
        let after = self
            .previous_text()
            .map(|t| format!(" after `{t}`"))
            .unwrap_or_default();
        let hint = match self.peek() {
            Tok::Word(w) if KEYWORDS.contains(&w.as_str()) => {
                format!("; to use a field named `{w}` write it in backquotes: `` `{w}` ``")
            }
            _ => String::new(),
        };
        self.error_here(format!(
            "expected a value{after}, found {}{hint}",
            self.peek().describe()
        ))
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > EXPRESSION_DEPTH_MAX {
            return Err(QueryError::too_deep());
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// 1-based column of byte offset `pos`, for messages that point back at an opening bracket.
    fn column_of(&self, pos: usize) -> usize {
        let before = self.src.get(..pos).unwrap_or(self.src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        before[line_start..].chars().count() + 1
    }

    /// Refuse a constant where a condition is expected (`status == "a" || "b"`): it can only be
    /// a mistake. `true` and `false` are conditions.
    fn condition(&self, node: Node, start: usize) -> Result<Node, QueryError> {
        match &node {
            Node::Literal(v) if !matches!(v, Value::Bool(_)) => {
                let full = node.to_string();
                let mut shown: String = full.chars().take(QUOTE_CHARS_MAX).collect();
                if shown.len() < full.len() {
                    shown.push('…');
                }
                Err(self.error_at(
                    start,
                    format!(
                        "expected a condition, found the constant `{shown}`: \
                         compare it with a field, e.g. `status == {shown}`"
                    ),
                ))
            }
            _ => Ok(node),
        }
    }

    fn eat_or(&mut self) -> bool {
        if *self.peek() == Tok::OrOr || self.is_word("or") {
            self.advance();
            true
        } else {
            false
        }
    }

    fn eat_and(&mut self) -> bool {
        if *self.peek() == Tok::AndAnd || self.is_word("and") {
            self.advance();
            true
        } else {
            false
        }
    }

    /// `and { ("||" | "or") and }`
    fn parse_or(&mut self) -> Result<Node, QueryError> {
        let start = self.token().start;
        let first = self.parse_and()?;
        if !(*self.peek() == Tok::OrOr || self.is_word("or")) {
            return Ok(first);
        }
        let mut items = vec![self.condition(first, start)?];
        while self.eat_or() {
            let start = self.token().start;
            let next = self.parse_and()?;
            items.push(self.condition(next, start)?);
        }
        Ok(Node::Or(items))
    }

    /// `comparison { ("&&" | "and") comparison }`
    fn parse_and(&mut self) -> Result<Node, QueryError> {
        let start = self.token().start;
        let first = self.parse_comparison()?;
        if !(*self.peek() == Tok::AndAnd || self.is_word("and")) {
            return Ok(first);
        }
        let mut items = vec![self.condition(first, start)?];
        while self.eat_and() {
            let start = self.token().start;
            let next = self.parse_comparison()?;
            items.push(self.condition(next, start)?);
        }
        Ok(Node::And(items))
    }

    /// The comparison operator at the cursor, if any, consumed; `true` for `not in`.
    fn comparison_op(&mut self) -> Result<Option<(BinaryOp, bool)>, QueryError> {
        let op = match self.peek() {
            Tok::EqEq => BinaryOp::Eq,
            Tok::NotEq => BinaryOp::Ne,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            Tok::Word(w) => match w.as_str() {
                "in" => BinaryOp::In,
                "contains" => BinaryOp::Contains,
                "starts_with" => BinaryOp::StartsWith,
                "not" => {
                    if matches!(self.peek_second(), Tok::Word(w) if w == "in") {
                        self.advance();
                        self.advance();
                        return Ok(Some((BinaryOp::In, true)));
                    }
                    return Err(self.error_here(
                        "expected `in` after `not` here, as in `x not in [1, 2]`; \
                         to negate a condition put `!` or `not` before it",
                    ));
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        self.advance();
        Ok(Some((op, false)))
    }

    fn at_comparison_op(&self) -> bool {
        match self.peek() {
            Tok::EqEq | Tok::NotEq | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => true,
            Tok::Word(w) => matches!(w.as_str(), "in" | "contains" | "starts_with"),
            _ => false,
        }
    }

    /// `unary [ op unary ]`
    fn parse_comparison(&mut self) -> Result<Node, QueryError> {
        let lhs_start = self.token().start;
        // Where the operand of a leading `!` starts, for the ambiguity message.
        let operand_start = self.tokens.get(self.idx + 1).map_or(lhs_start, |t| t.start);
        let (lhs, negated) = self.parse_unary()?;
        let op_pos = self.token().start;
        let Some((op, not_in)) = self.comparison_op()? else {
            return Ok(lhs);
        };
        if negated {
            let op_text = if not_in { "not in" } else { op.symbol() };
            let operand = self.src.get(operand_start..op_pos).unwrap_or("").trim();
            return Err(self.error_at(
                lhs_start,
                format!(
                    "ambiguous `!`: it binds tighter than `{op_text}`, \
                     so it applies only to `{operand}`, not to the comparison; \
                     write `!({operand} {op_text} ...)` to negate the comparison, \
                     or `(!{operand}) {op_text} ...` if that is meant"
                ),
            ));
        }
        let (rhs, _) = self.parse_unary()?;
        if self.at_comparison_op() || self.is_word("not") {
            return Err(self.error_here(
                "comparisons cannot be chained: combine them with `&&`, e.g. `a < b && b < c`",
            ));
        }
        let node = Node::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
        Ok(if not_in {
            Node::Not(Box::new(node))
        } else {
            node
        })
    }

    /// `("!" | "not") unary | primary`; the flag says the node came from a bare `!`.
    fn parse_unary(&mut self) -> Result<(Node, bool), QueryError> {
        if *self.peek() == Tok::Bang || self.is_word("not") {
            self.advance();
            self.enter()?;
            let start = self.token().start;
            let (inner, _) = self.parse_unary()?;
            let inner = self.condition(inner, start)?;
            self.leave();
            return Ok((Node::Not(Box::new(inner)), true));
        }
        Ok((self.parse_primary()?, false))
    }

    fn parse_primary(&mut self) -> Result<Node, QueryError> {
        let node = match self.peek().clone() {
            Tok::Str(s) => Node::Literal(Value::Text(s)),
            Tok::Int(i) => Node::Literal(Value::Int(i)),
            Tok::Float(x) => Node::Literal(Value::Float(x)),
            Tok::Param(name) => {
                self.advance();
                let path = self.path_rest()?;
                return Ok(Node::Param { name, path });
            }
            Tok::QuotedName(name) => {
                self.advance();
                return self.field(name);
            }
            Tok::Word(w) => match w.as_str() {
                "true" => Node::Literal(Value::Bool(true)),
                "false" => Node::Literal(Value::Bool(false)),
                "null" => Node::Literal(Value::Null),
                "_id" => {
                    if *self.peek_second() == Tok::Dot {
                        return Err(self.error_here(
                            "`_id` is the record id (a uuid) and has no fields; \
                             for a field named `_id` write `` `_id` ``",
                        ));
                    }
                    Node::RecordId
                }
                "exists" | "uuid" | "date" if *self.peek_second() == Tok::LParen => {
                    return self.call();
                }
                kw if KEYWORDS.contains(&kw) => return Err(self.expected_value()),
                _ => {
                    self.advance();
                    return self.field(w);
                }
            },
            Tok::LParen => return self.group(),
            Tok::LBracket => return self.list(),
            _ => return Err(self.expected_value()),
        };
        self.advance();
        Ok(node)
    }

    /// A field path whose first name was just consumed.
    fn field(&mut self, first: String) -> Result<Node, QueryError> {
        let mut path = vec![first];
        path.extend(self.path_rest()?);
        Ok(Node::Field(path))
    }

    /// `{ "." name }`; after a dot keywords are plain names (`meta.in` is fine).
    fn path_rest(&mut self) -> Result<Vec<String>, QueryError> {
        let mut path = Vec::new();
        while *self.peek() == Tok::Dot {
            self.advance();
            match self.peek().clone() {
                Tok::Word(w) | Tok::QuotedName(w) => {
                    self.advance();
                    path.push(w);
                }
                found => {
                    return Err(self.error_here(format!(
                        "expected a field name after `.`, found {}",
                        found.describe()
                    )))
                }
            }
        }
        Ok(path)
    }

    /// `"(" or ")"`
    fn group(&mut self) -> Result<Node, QueryError> {
        let open = self.advance().start;
        self.enter()?;
        let inner = self.parse_or()?;
        if *self.peek() != Tok::RParen {
            return Err(self.error_here(format!(
                "expected `)` to close the `(` at column {}, found {}",
                self.column_of(open),
                self.peek().describe()
            )));
        }
        self.advance();
        self.leave();
        Ok(inner)
    }

    /// `"[" [ or { "," or } [","] ] "]"`; all-constant lists fold into one literal.
    fn list(&mut self) -> Result<Node, QueryError> {
        let open = self.advance().start;
        self.enter()?;
        let mut items = Vec::new();
        loop {
            if *self.peek() == Tok::RBracket {
                self.advance();
                break;
            }
            items.push(self.parse_or()?);
            match self.peek() {
                Tok::Comma => {
                    self.advance();
                }
                Tok::RBracket => {
                    self.advance();
                    break;
                }
                found => {
                    return Err(self.error_here(format!(
                        "expected `,` or `]` in the list opened at column {}, found {}",
                        self.column_of(open),
                        found.describe()
                    )))
                }
            }
        }
        self.leave();
        if items.iter().all(|n| matches!(n, Node::Literal(_))) {
            let values = items
                .into_iter()
                .filter_map(|n| match n {
                    Node::Literal(v) => Some(v),
                    _ => None,
                })
                .collect();
            return Ok(Node::Literal(Value::List(values)));
        }
        Ok(Node::List(items))
    }

    /// `exists(path)`, `uuid("...")`, `date("...")`; the cursor is on the name.
    fn call(&mut self) -> Result<Node, QueryError> {
        let name = match self.advance().tok {
            Tok::Word(w) => w,
            _ => String::new(),
        };
        let open = self.advance().start;
        let node = match name.as_str() {
            "exists" => {
                let arg = match self.peek().clone() {
                    Tok::Word(w) if w == "_id" => {
                        self.advance();
                        Node::RecordId
                    }
                    Tok::Word(w) if !KEYWORDS.contains(&w.as_str()) => {
                        self.advance();
                        self.field(w)?
                    }
                    Tok::QuotedName(w) => {
                        self.advance();
                        self.field(w)?
                    }
                    Tok::Param(name) => {
                        self.advance();
                        Node::Param {
                            name,
                            path: self.path_rest()?,
                        }
                    }
                    found => {
                        return Err(self.error_here(format!(
                            "exists() takes a field path or a parameter, \
                             e.g. `exists(address.city)`, found {}",
                            found.describe()
                        )))
                    }
                };
                Node::Exists(Box::new(arg))
            }
            "uuid" => {
                let (s, at) =
                    self.string_argument("uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\")")?;
                let u = uuid::Uuid::try_parse(&s).map_err(|e| {
                    self.error_at(
                        at,
                        format!(
                            "invalid uuid {s:?} ({e}); expected 32 hex digits \
                             such as uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\")"
                        ),
                    )
                })?;
                Node::Literal(Value::Uuid(u))
            }
            _ => {
                let (s, at) = self.string_argument("date(\"2026-11-22T10:00:00Z\")")?;
                let t = Timestamp::parse_rfc3339(&s).map_err(|e| {
                    self.error_at(
                        at,
                        format!("{e}; expected a time such as date(\"2026-11-22T10:00:00Z\")"),
                    )
                })?;
                Node::Literal(Value::Timestamp(t))
            }
        };
        if *self.peek() != Tok::RParen {
            return Err(self.error_here(format!(
                "expected `)` to close the `{name}(` at column {}, found {}",
                self.column_of(open),
                self.peek().describe()
            )));
        }
        self.advance();
        Ok(node)
    }

    /// The string literal argument of `uuid(...)` / `date(...)` and its offset.
    fn string_argument(&mut self, example: &str) -> Result<(String, usize), QueryError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                let at = self.advance().start;
                Ok((s, at))
            }
            found => Err(self.error_here(format!(
                "expected a string literal, e.g. `{example}`, found {}",
                found.describe()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Node {
        match parse_node(src) {
            Ok(n) => n,
            Err(e) => panic!("{src:?} failed:\n{e}"),
        }
    }

    /// The column and message of a syntax error.
    fn err(src: &str) -> (usize, String) {
        match parse_node(src) {
            Ok(n) => panic!("{src:?} parsed as {n:?}"),
            Err(QueryError::Syntax {
                column, message, ..
            }) => (column, message),
            Err(e) => panic!("{src:?}: unexpected error {e}"),
        }
    }

    fn field(name: &str) -> Node {
        Node::Field(name.split('.').map(str::to_owned).collect())
    }

    fn lit(v: impl Into<Value>) -> Node {
        Node::Literal(v.into())
    }

    fn bin(op: BinaryOp, lhs: Node, rhs: Node) -> Node {
        Node::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }

    #[test]
    fn comparison_operators() {
        for (sym, op) in [
            ("==", BinaryOp::Eq),
            ("!=", BinaryOp::Ne),
            ("<", BinaryOp::Lt),
            ("<=", BinaryOp::Le),
            (">", BinaryOp::Gt),
            (">=", BinaryOp::Ge),
            ("in", BinaryOp::In),
            ("contains", BinaryOp::Contains),
            ("starts_with", BinaryOp::StartsWith),
        ] {
            assert_eq!(
                ok(&format!("a {sym} 1")),
                bin(op, field("a"), lit(1)),
                "{sym}"
            );
        }
    }

    #[test]
    fn precedence_not_over_comparison_over_and_over_or() {
        // a || b && c == 1  is  a || (b && (c == 1))
        assert_eq!(
            ok("a || b && c == 1"),
            Node::Or(vec![
                field("a"),
                Node::And(vec![field("b"), bin(BinaryOp::Eq, field("c"), lit(1))])
            ])
        );
        assert_eq!(ok("a or b and c"), ok("a || b && c"));
        assert_eq!(
            ok("not a and b"),
            Node::And(vec![Node::Not(Box::new(field("a"))), field("b")])
        );
        assert_eq!(
            ok("!(a == 1)"),
            Node::Not(Box::new(bin(BinaryOp::Eq, field("a"), lit(1))))
        );
        assert_eq!(
            ok("(!a) == false"),
            bin(BinaryOp::Eq, Node::Not(Box::new(field("a"))), lit(false))
        );
        assert_eq!(
            ok("a == !b"),
            bin(BinaryOp::Eq, field("a"), Node::Not(Box::new(field("b"))))
        );
        assert_eq!(
            ok("(a || b) && c"),
            Node::And(vec![Node::Or(vec![field("a"), field("b")]), field("c")])
        );
        // Chains are flat.
        assert_eq!(
            ok("a && b && c"),
            Node::And(vec![field("a"), field("b"), field("c")])
        );
    }

    #[test]
    fn literals() {
        assert_eq!(ok("a == \"x\""), bin(BinaryOp::Eq, field("a"), lit("x")));
        assert_eq!(ok("a == -2"), bin(BinaryOp::Eq, field("a"), lit(-2)));
        assert_eq!(ok("a == 1.5"), bin(BinaryOp::Eq, field("a"), lit(1.5)));
        assert_eq!(
            ok("a == null"),
            bin(BinaryOp::Eq, field("a"), Node::Literal(Value::Null))
        );
        assert_eq!(ok("a == true"), bin(BinaryOp::Eq, field("a"), lit(true)));
        assert_eq!(
            ok("a in [1, \"a\", [2], ]"),
            bin(
                BinaryOp::In,
                field("a"),
                lit(Value::List(vec![
                    1.into(),
                    "a".into(),
                    Value::List(vec![2.into()])
                ]))
            )
        );
        assert_eq!(
            ok("a in []"),
            bin(BinaryOp::In, field("a"), lit(Value::List(vec![])))
        );
        assert_eq!(
            ok("a in [$x, 1]"),
            bin(
                BinaryOp::In,
                field("a"),
                Node::List(vec![
                    Node::Param {
                        name: "x".into(),
                        path: vec![]
                    },
                    lit(1)
                ])
            )
        );
        let u = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(
            ok(&format!("_id == uuid(\"{u}\")")),
            bin(
                BinaryOp::Eq,
                Node::RecordId,
                lit(uuid::Uuid::parse_str(u).unwrap_or_default())
            )
        );
        assert_eq!(
            ok("t >= date(\"1970-01-01T00:00:01Z\")"),
            bin(BinaryOp::Ge, field("t"), lit(Timestamp(1_000_000)))
        );
    }

    #[test]
    fn paths_params_and_names() {
        assert_eq!(ok("a.b.c == 1"), bin(BinaryOp::Eq, field("a.b.c"), lit(1)));
        assert_eq!(
            ok("`weird name`.`x.y` == 1"),
            bin(
                BinaryOp::Eq,
                Node::Field(vec!["weird name".into(), "x.y".into()]),
                lit(1)
            )
        );
        assert_eq!(
            ok("meta.in == 1"),
            bin(BinaryOp::Eq, field("meta.in"), lit(1))
        );
        assert_eq!(ok("`in` == 1"), bin(BinaryOp::Eq, field("in"), lit(1)));
        assert_eq!(ok("`_id` == 1"), bin(BinaryOp::Eq, field("_id"), lit(1)));
        assert_eq!(
            ok("assignee == $auth.sub"),
            bin(
                BinaryOp::Eq,
                field("assignee"),
                Node::Param {
                    name: "auth".into(),
                    path: vec!["sub".into()]
                }
            )
        );
        // Function names are fields unless called.
        assert_eq!(ok("date == 1"), bin(BinaryOp::Eq, field("date"), lit(1)));
        assert_eq!(ok("exists(a.b)"), Node::Exists(Box::new(field("a.b"))));
        assert_eq!(ok("exists(_id)"), Node::Exists(Box::new(Node::RecordId)));
        assert_eq!(
            ok("a not in [1]"),
            Node::Not(Box::new(bin(
                BinaryOp::In,
                field("a"),
                lit(Value::List(vec![1.into()]))
            )))
        );
    }

    #[test]
    fn error_positions_and_messages() {
        assert_eq!(
            err("status == "),
            (11, "expected a value after `==`, found end of input".into())
        );
        assert_eq!(
            err("a == 1 && (b == 2"),
            (
                18,
                "expected `)` to close the `(` at column 11, found end of input".into()
            )
        );
        assert_eq!(
            err("a == 1)"),
            (7, "unexpected `)` with no matching `(`".into())
        );
        let (col, msg) = err("status == \"open\" priority > 1");
        assert_eq!(col, 18);
        assert!(msg.contains("found `priority`"), "{msg}");
        let (col, msg) = err("a = 1");
        assert_eq!(col, 3);
        assert!(msg.contains("did you mean `==`?"));
        assert_eq!(
            err("").1,
            "empty expression: expected a condition such as `status == \"open\"`"
        );
        assert!(err("   ").1.starts_with("empty expression"));
        let (col, msg) = err("a < b < c");
        assert_eq!(col, 7);
        assert!(msg.contains("cannot be chained"), "{msg}");
        let (col, msg) = err("!a == b");
        assert_eq!(col, 1);
        assert!(msg.contains("ambiguous `!`"), "{msg}");
        assert!(msg.contains("applies only to `a`"), "{msg}");
        assert!(msg.contains("!(a == ...)"), "{msg}");
        let (col, msg) = err("not not x.y in [1]");
        assert_eq!(col, 1);
        assert!(msg.contains("applies only to `not x.y`"), "{msg}");
        let (col, msg) = err("x == 1 && in == 2");
        assert_eq!(col, 11);
        assert!(
            msg.contains("found `in`") && msg.contains("`` `in` ``"),
            "{msg}"
        );
        let (col, msg) = err("status == \"a\" || \"b\"");
        assert_eq!(col, 18);
        assert!(msg.contains("expected a condition"), "{msg}");
        assert!(err("5").1.contains("expected a condition"));
        assert!(err("!5").1.contains("expected a condition"));
        assert!(ok("true") == lit(true));
        let (col, msg) = err("a in [1, 2");
        assert_eq!(col, 11);
        assert!(
            msg.contains("expected `,` or `]` in the list opened at column 6"),
            "{msg}"
        );
        assert!(err("a in [1 2]").1.contains("expected `,` or `]`"));
        assert!(err("a. == 1").1.contains("expected a field name after `.`"));
        assert!(err("_id.x == 1").1.contains("has no fields"));
        assert!(err("a is null").1.contains("`is` is not an operator"));
        let (col, msg) = err("a > 3 AND b == 1");
        assert_eq!(col, 7);
        assert!(msg.contains("write `and` or `&&`"), "{msg}");
        assert!(err("a == 1 Or b == 1").1.contains("write `or` or `||`"));
        assert!(err("a IN [1]").1.contains("write `in`"));
        assert!(err("tags CONTAINS \"x\"").1.contains("write `contains`"));
        assert!(err("a not b").1.contains("expected `in` after `not`"));
        let (col, msg) = err("_id == uuid(\"nope\")");
        assert_eq!(col, 13);
        assert!(msg.contains("invalid uuid \"nope\""), "{msg}");
        assert!(err("t > date(\"yesterday\")").1.contains("RFC 3339"));
        assert!(err("uuid(1)").1.contains("expected a string literal"));
        assert!(err("exists(1)").1.contains("exists() takes a field path"));
        assert!(err("exists(a b)")
            .1
            .contains("expected `)` to close the `exists(`"));
        assert!(err("a == 1 &&")
            .1
            .contains("after `&&`, found end of input"));
        assert!(err("(").1.contains("expected a value after `(`"));
    }

    #[test]
    fn multi_line_error_positions() {
        let e = parse_node("a == 1 &&\n  b = 2");
        assert!(
            matches!(
                e,
                Err(QueryError::Syntax {
                    line: 2,
                    column: 5,
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn depth_limit() {
        let ok_depth = format!(
            "{}a{}",
            "(".repeat(EXPRESSION_DEPTH_MAX),
            ")".repeat(EXPRESSION_DEPTH_MAX)
        );
        assert_eq!(ok(&ok_depth), field("a"));
        let deep = format!(
            "{}a{}",
            "(".repeat(EXPRESSION_DEPTH_MAX + 1),
            ")".repeat(EXPRESSION_DEPTH_MAX + 1)
        );
        assert_eq!(parse_node(&deep), Err(QueryError::too_deep()));
        let bangs = format!("{}a", "!".repeat(EXPRESSION_DEPTH_MAX + 1));
        assert_eq!(parse_node(&bangs), Err(QueryError::too_deep()));
        let lists = format!(
            "a in {}{}",
            "[".repeat(EXPRESSION_DEPTH_MAX + 1),
            "]".repeat(EXPRESSION_DEPTH_MAX + 1)
        );
        assert_eq!(parse_node(&lists), Err(QueryError::too_deep()));
        // Hostile nesting far beyond the limit, within the length limit, errors cleanly.
        let hostile = "(".repeat(EXPRESSION_BYTES_MAX);
        assert_eq!(parse_node(&hostile), Err(QueryError::too_deep()));
        let hostile = "[".repeat(EXPRESSION_BYTES_MAX);
        assert_eq!(parse_node(&hostile), Err(QueryError::too_deep()));
    }

    #[test]
    fn length_limit() {
        let long = format!("a == \"{}\"", "x".repeat(EXPRESSION_BYTES_MAX));
        assert_eq!(
            parse_node(&long),
            Err(QueryError::TooLong {
                len: long.len(),
                max: EXPRESSION_BYTES_MAX
            })
        );
        // Long flat chains are fine: they do not nest.
        let chain = vec!["a == 1"; EXPRESSION_BYTES_MAX / 12].join(" || ");
        assert!(chain.len() <= EXPRESSION_BYTES_MAX);
        assert!(matches!(ok(&chain), Node::Or(items) if items.len() == EXPRESSION_BYTES_MAX / 12));
    }

    #[test]
    fn canonical_print_round_trips() {
        for src in [
            "a == 1 && (b == 2 || c == 3)",
            "a || (b || c)",
            "(a && b) && c",
            "!(a == 1) && !b",
            "(!a) == false",
            "a == !b",
            "x in [1, 2.5, \"q\\\"\\n\", null, true, [1e300]] || `odd name`.`in` != -3",
            "exists($auth.sub) && owner == $auth.sub",
            "_id == uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\") \
             || t < date(\"2026-11-22T10:00:00.5Z\")",
            "a not in [$x, b]",
            "(a == 1) == (b == 2)",
        ] {
            let tree = ok(src);
            let printed = tree.to_string();
            assert_eq!(ok(&printed), tree, "{src} printed as {printed}");
        }
    }
}
