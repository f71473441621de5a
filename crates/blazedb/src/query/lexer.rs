//! Turns expression source into tokens.
//!
//! The lexer works on the whole source at once (at most `EXPRESSION_BYTES_MAX` bytes, so at
//! most that many tokens) and reports the first problem with its byte offset.

use super::error::QueryError;
use crate::limits::FIELD_NAME_BYTES_MAX;

/// Characters of a string literal quoted back in an error message.
const QUOTE_CHARS_MAX: usize = 24;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare identifier or keyword: `status`, `and`, `true`.
    Word(String),
    /// A backquoted name: `` `weird name` ``. Never a keyword.
    QuotedName(String),
    /// `$name`
    Param(String),
    /// `"text"`, escapes resolved.
    Str(String),
    /// `42`, `-7`
    Int(i64),
    /// `1.5`, `1e3`, `-2.5E-3`
    Float(f64),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    /// `!`
    Bang,
    /// The end of the source.
    End,
}

impl Tok {
    /// How the token is named in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::QuotedName(w) => format!("field `` `{w}` ``"),
            Tok::Param(p) => format!("parameter `${p}`"),
            Tok::Str(s) => {
                let mut q: String = s.chars().take(QUOTE_CHARS_MAX).collect();
                if s.chars().nth(QUOTE_CHARS_MAX).is_some() {
                    q.push('…');
                }
                format!("string {q:?}")
            }
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(x) => format!("number {x:?}"),
            Tok::End => "end of input".to_owned(),
            sym => format!("`{}`", sym.symbol()),
        }
    }

    /// The text of a punctuation token.
    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            _ => "",
        }
    }
}

/// A token and where it is in the source (byte offsets, `start..end`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    /// What it is.
    pub tok: Tok,
    /// Byte offset of its first character.
    pub start: usize,
    /// Byte offset just past its last character.
    pub end: usize,
}

/// Split `src` into tokens, ending with one [`Tok::End`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let tok = lexer.next_token()?;
        let done = tok == Tok::End;
        out.push(Token {
            tok,
            start,
            end: lexer.pos,
        });
        if done {
            return Ok(out);
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character; always on a character boundary.
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn error(&self, pos: usize, message: impl Into<String>) -> QueryError {
        QueryError::syntax(self.src, pos, message)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn next_token(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Tok::End);
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '.' => {
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(
                        self.error(start, "a number needs a digit before the `.`, e.g. `0.5`")
                    );
                }
                Tok::Dot
            }
            '=' => {
                if self.eat('=') {
                    if self.peek() == Some('=') {
                        return Err(self.error(start, "unknown operator `===`; use `==`"));
                    }
                    Tok::EqEq
                } else if self.peek() == Some('>') {
                    return Err(self.error(start, "unknown operator `=>`; did you mean `>=`?"));
                } else if self.peek() == Some('<') {
                    return Err(self.error(start, "unknown operator `=<`; did you mean `<=`?"));
                } else {
                    return Err(self.error(start, "unknown operator `=`; did you mean `==`?"));
                }
            }
            '!' => {
                if self.eat('=') {
                    if self.peek() == Some('=') {
                        return Err(self.error(start, "unknown operator `!==`; use `!=`"));
                    }
                    Tok::NotEq
                } else {
                    Tok::Bang
                }
            }
            '<' => {
                if self.eat('=') {
                    Tok::Le
                } else if self.peek() == Some('>') {
                    return Err(self.error(start, "unknown operator `<>`; did you mean `!=`?"));
                } else {
                    Tok::Lt
                }
            }
            '>' => {
                if self.eat('=') {
                    Tok::Ge
                } else {
                    Tok::Gt
                }
            }
            '&' => {
                if self.eat('&') {
                    Tok::AndAnd
                } else {
                    return Err(self.error(start, "unknown operator `&`; did you mean `&&`?"));
                }
            }
            '|' => {
                if self.eat('|') {
                    Tok::OrOr
                } else {
                    return Err(self.error(start, "unknown operator `|`; did you mean `||`?"));
                }
            }
            '"' => Tok::Str(self.string(start)?),
            '\'' => {
                return Err(self.error(start, "strings are written in double quotes: \"text\""));
            }
            '`' => Tok::QuotedName(self.quoted_name(start)?),
            '$' => {
                let name_start = self.pos;
                if !self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                {
                    return Err(self.error(
                        name_start,
                        "expected a parameter name after `$`, e.g. `$auth.sub`",
                    ));
                }
                Tok::Param(self.word(name_start)?)
            }
            '-' => {
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.number(start)?
                } else {
                    return Err(self.error(
                        start,
                        "unexpected `-`: there is no arithmetic; negative numbers are written `-2`",
                    ));
                }
            }
            c if c.is_ascii_digit() => self.number(start)?,
            c if c.is_ascii_alphabetic() || c == '_' => Tok::Word(self.word(start)?),
            c => {
                let hint = if c.is_alphanumeric() {
                    format!(
                        "; names with characters other than ASCII letters, digits and `_` \
                         must be backquoted: `` `{}` ``",
                        self.word_around(start)
                    )
                } else {
                    String::new()
                };
                return Err(self.error(
                    start,
                    format!("unexpected character `{}`{hint}", c.escape_debug()),
                ));
            }
        };
        Ok(tok)
    }

    /// The run of letters, digits and `_` around byte offset `at`, to quote a name back.
    fn word_around(&self, at: usize) -> &str {
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        let begin = self.src[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_word(c))
            .last()
            .map_or(at, |(i, _)| i);
        let end = self.src[at..]
            .char_indices()
            .find(|&(_, c)| !is_word(c))
            .map_or(self.src.len(), |(i, _)| at + i);
        &self.src[begin..end]
    }

    /// The rest of `[A-Za-z_][A-Za-z0-9_]*` whose first character started at `start`.
    fn word(&mut self, start: usize) -> Result<String, QueryError> {
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        let w = &self.src[start..self.pos];
        check_name_len(w).map_err(|m| self.error(start, m))?;
        Ok(w.to_owned())
    }

    /// A backquoted name; the opening backquote at `start` is consumed.
    fn quoted_name(&mut self, start: usize) -> Result<String, QueryError> {
        let body = self.pos;
        loop {
            match self.bump() {
                Some('`') => break,
                Some(_) => {}
                None => {
                    return Err(
                        self.error(start, "unterminated field name: missing closing `` ` ``")
                    )
                }
            }
        }
        let name = &self.src[body..self.pos - 1];
        if name.is_empty() {
            return Err(self.error(
                start,
                "empty field name ``; write a name between the backquotes",
            ));
        }
        check_name_len(name).map_err(|m| self.error(start, m))?;
        Ok(name.to_owned())
    }

    /// A string literal; the opening quote at `start` is consumed.
    fn string(&mut self, start: usize) -> Result<String, QueryError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(self.error(start, "unterminated string: missing closing `\"`")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('0') => out.push('\0'),
                    Some('u') => out.push(self.unicode_escape(at)?),
                    Some(c) => {
                        return Err(self.error(
                            at,
                            format!(
                                "unknown escape `\\{}` in string; \
                                 valid escapes are \\\" \\\\ \\n \\r \\t \\0 \\u{{...}}",
                                c.escape_debug()
                            ),
                        ))
                    }
                    None => {
                        return Err(self.error(start, "unterminated string: missing closing `\"`"))
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// `{XXXX}` after `\u`, 1 to 6 hex digits naming a Unicode scalar value; `at` is the `\`.
    fn unicode_escape(&mut self, at: usize) -> Result<char, QueryError> {
        const HELP: &str =
            "invalid unicode escape: write `\\u{` then 1 to 6 hex digits then `}`, e.g. `\\u{e9}`";
        if !self.eat('{') {
            return Err(self.error(at, HELP));
        }
        let digits = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.bump();
        }
        let hex = &self.src[digits..self.pos];
        if hex.is_empty() || hex.len() > 6 || !self.eat('}') {
            return Err(self.error(at, HELP));
        }
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| {
                self.error(
                    at,
                    format!(
                        "`\\u{{{hex}}}` is not a Unicode character (surrogate or above 10FFFF)"
                    ),
                )
            })
    }

    /// A number; its first character (a digit or `-`) at `start` is consumed.
    fn number(&mut self, start: usize) -> Result<Tok, QueryError> {
        self.digits();
        let mut is_float = false;
        if self.peek() == Some('.') {
            if self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                self.digits();
                is_float = true;
            } else {
                return Err(self.error(
                    self.pos,
                    "expected a digit after the decimal point, e.g. `1.0`",
                ));
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error(self.pos, "expected the exponent's digits, e.g. `1e3`"));
            }
            self.digits();
            is_float = true;
        }
        if self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        {
            return Err(self.error(
                start,
                format!("invalid number `{}…`", &self.src[start..self.pos]),
            ));
        }
        let text = &self.src[start..self.pos];
        if is_float {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Tok::Float(x)),
                _ => Err(self.error(start, format!("number `{text}` is too large for a float"))),
            }
        } else {
            text.parse::<i64>().map(Tok::Int).map_err(|_| {
                self.error(
                    start,
                    format!(
                        "integer `{text}` does not fit in 64 bits (range {} to {}); \
                         write it as a float, e.g. `{text}.0`",
                        i64::MIN,
                        i64::MAX
                    ),
                )
            })
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
    }
}

fn check_name_len(name: &str) -> Result<(), String> {
    if name.len() > FIELD_NAME_BYTES_MAX {
        Err(format!(
            "name is {} bytes long; field names are at most {FIELD_NAME_BYTES_MAX} bytes",
            name.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        match tokenize(src) {
            Ok(t) => t.into_iter().map(|t| t.tok).collect(),
            Err(e) => panic!("{src:?} failed: {e}"),
        }
    }

    fn err(src: &str) -> (usize, String) {
        match tokenize(src) {
            Ok(t) => panic!("{src:?} lexed as {t:?}"),
            Err(QueryError::Syntax {
                column, message, ..
            }) => (column, message),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn operators_and_punctuation() {
        assert_eq!(
            toks("== != < <= > >= && || ! ( ) [ ] , ."),
            vec![
                Tok::EqEq,
                Tok::NotEq,
                Tok::Lt,
                Tok::Le,
                Tok::Gt,
                Tok::Ge,
                Tok::AndAnd,
                Tok::OrOr,
                Tok::Bang,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::Comma,
                Tok::Dot,
                Tok::End
            ]
        );
        assert_eq!(
            toks("a<=b"),
            vec![
                Tok::Word("a".into()),
                Tok::Le,
                Tok::Word("b".into()),
                Tok::End
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(toks("42"), vec![Tok::Int(42), Tok::End]);
        assert_eq!(toks("-2"), vec![Tok::Int(-2), Tok::End]);
        assert_eq!(toks("1.5"), vec![Tok::Float(1.5), Tok::End]);
        assert_eq!(toks("1e3"), vec![Tok::Float(1000.0), Tok::End]);
        assert_eq!(toks("-2.5E-3"), vec![Tok::Float(-0.0025), Tok::End]);
        assert_eq!(
            toks("-9223372036854775808"),
            vec![Tok::Int(i64::MIN), Tok::End]
        );
        assert_eq!(
            toks("9223372036854775807"),
            vec![Tok::Int(i64::MAX), Tok::End]
        );
        assert!(err("9223372036854775808")
            .1
            .contains("does not fit in 64 bits"));
        assert!(err("1e999").1.contains("too large"));
        assert_eq!(err("x == 1.").0, 7);
        assert_eq!(err("x == 1e").0, 8);
        assert_eq!(err("12ab").0, 1);
        assert!(err(".5").1.contains("0.5"));
        assert!(err("a - 1").1.contains("no arithmetic"));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t\r\0\u{e9}\u{1F600}""#),
            vec![Tok::Str("a\"b\\c\n\t\r\0é😀".into()), Tok::End]
        );
        assert_eq!(
            toks("\"héllo wörld\""),
            vec![Tok::Str("héllo wörld".into()), Tok::End]
        );
        assert_eq!(toks("\"\""), vec![Tok::Str(String::new()), Tok::End]);
        let (col, msg) = err("x == \"abc");
        assert_eq!(col, 6);
        assert!(msg.contains("unterminated string"), "{msg}");
        let (col, msg) = err(r#"x == "a\qb""#);
        assert_eq!(col, 8);
        assert!(msg.contains("unknown escape `\\q`"), "{msg}");
        assert!(err(r#""\u{d800}""#).1.contains("not a Unicode character"));
        assert!(err(r#""\u{110000}""#).1.contains("not a Unicode character"));
        assert!(err(r#""\u{}""#).1.contains("invalid unicode escape"));
        assert!(err(r#""\u{1234567}""#).1.contains("invalid unicode escape"));
        assert!(err(r#""\u41""#).1.contains("invalid unicode escape"));
        assert!(err("'abc'").1.contains("double quotes"));
        assert!(err("\"abc\\").1.contains("unterminated string"));
    }

    #[test]
    fn names_and_params() {
        assert_eq!(
            toks("a.b_2 `weird name` $auth.sub"),
            vec![
                Tok::Word("a".into()),
                Tok::Dot,
                Tok::Word("b_2".into()),
                Tok::QuotedName("weird name".into()),
                Tok::Param("auth".into()),
                Tok::Dot,
                Tok::Word("sub".into()),
                Tok::End
            ]
        );
        assert!(err("`abc").1.contains("unterminated field name"));
        assert!(err("``").1.contains("empty field name"));
        assert!(err("$ x").1.contains("parameter name"));
        assert!(err("$1").1.contains("parameter name"));
        assert!(err(&"a".repeat(FIELD_NAME_BYTES_MAX + 1))
            .1
            .contains("at most 255 bytes"));
        assert!(tokenize(&"a".repeat(FIELD_NAME_BYTES_MAX)).is_ok());
    }

    #[test]
    fn wrong_operators_get_a_suggestion() {
        assert_eq!(
            err("a = 1"),
            (3, "unknown operator `=`; did you mean `==`?".into())
        );
        assert!(err("a === 1").1.contains("use `==`"));
        assert!(err("a !== 1").1.contains("use `!=`"));
        assert!(err("a <> 1").1.contains("`!=`"));
        assert!(err("a => 1").1.contains("`>=`"));
        assert!(err("a =< 1").1.contains("`<=`"));
        assert!(err("a & b").1.contains("`&&`"));
        assert!(err("a | b").1.contains("`||`"));
    }

    #[test]
    fn unexpected_characters_are_named() {
        let (col, msg) = err("a == 1 ; b");
        assert_eq!(col, 8);
        assert!(msg.contains("unexpected character `;`"), "{msg}");
        let (col, msg) = err("prénom == 1");
        assert_eq!(col, 3);
        assert!(msg.contains("backquoted: `` `prénom` ``"), "{msg}");
        assert!(err("a == \u{202e}").1.contains("\\u{202e}"));
    }
}
