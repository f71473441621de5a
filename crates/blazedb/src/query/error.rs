//! The one error type of parsing an expression.

use std::fmt;

use crate::limits::{EXPRESSION_BYTES_MAX, EXPRESSION_DEPTH_MAX};

/// Characters of source shown on each side of the problem in a syntax error, so that an error
/// in a 16 KiB expression still prints as two readable lines.
const EXCERPT_CHARS_MAX: usize = 60;

/// Why an expression could not be parsed. Evaluation never fails, so this is the only error of
/// the query language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The text is not a valid expression. `pos` is the byte offset of the problem, `line` and
    /// `column` its 1-based position in characters; `excerpt` is the offending source line with
    /// a caret line under it.
    #[error("invalid expression at {}: {message}\n{excerpt}", Location(*line, *column))]
    Syntax {
        /// Byte offset of the problem in the source.
        pos: usize,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem within its line.
        column: usize,
        /// What is wrong and what would be valid.
        message: String,
        /// The source line and a caret line pointing at the problem.
        excerpt: String,
    },
    /// The expression is longer than [`EXPRESSION_BYTES_MAX`].
    #[error(
        "expression is {len} bytes long, the limit is {max} bytes: \
         split it or pass long lists as a parameter (`x in $values`)"
    )]
    TooLong {
        /// Length of the expression, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The expression nests parentheses, lists and `!` deeper than [`EXPRESSION_DEPTH_MAX`].
    #[error(
        "expression is nested more than {max} levels deep (parentheses, lists and `!`): flatten it"
    )]
    TooDeep {
        /// The limit, in levels.
        max: usize,
    },
}

impl QueryError {
    /// A syntax error at byte offset `pos` of `src` (clamped to the source and to a character
    /// boundary, so a wrong offset can never panic).
    pub(crate) fn syntax(src: &str, pos: usize, message: impl Into<String>) -> QueryError {
        let mut pos = pos.min(src.len());
        while !src.is_char_boundary(pos) {
            pos -= 1;
        }
        let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[pos..].find('\n').map_or(src.len(), |i| pos + i);
        let line = src[..pos].matches('\n').count() + 1;
        let before: Vec<char> = src[line_start..pos].chars().collect();
        let column = before.len() + 1;

        // Show at most EXCERPT_CHARS_MAX characters either side of the problem.
        let skip = before.len().saturating_sub(EXCERPT_CHARS_MAX);
        let mut shown = String::new();
        if skip > 0 {
            shown.push('…');
        }
        let caret_at = before.len() - skip + usize::from(skip > 0);
        shown.extend(before[skip..].iter().map(|&c| printable(c)));
        let after = &src[pos..line_end];
        shown.extend(after.chars().take(EXCERPT_CHARS_MAX).map(printable));
        if after.chars().nth(EXCERPT_CHARS_MAX).is_some() {
            shown.push('…');
        }
        let excerpt = format!("  {}\n  {}^", shown.trim_end(), " ".repeat(caret_at));
        QueryError::Syntax {
            pos,
            line,
            column,
            message: message.into(),
            excerpt,
        }
    }

    /// The error for an expression longer than the limit.
    pub(crate) fn too_long(len: usize) -> QueryError {
        QueryError::TooLong {
            len,
            max: EXPRESSION_BYTES_MAX,
        }
    }

    /// The error for an expression nested deeper than the limit.
    pub(crate) fn too_deep() -> QueryError {
        QueryError::TooDeep {
            max: EXPRESSION_DEPTH_MAX,
        }
    }
}

/// Control and other invisible characters (tabs, bidi overrides, zero-width joiners) would break
/// the caret alignment or the terminal: show them as a space.
fn printable(c: char) -> char {
    let invisible = !matches!(c, '\'' | '"' | '\\') && c.escape_debug().nth(1).is_some();
    if c.is_control() || invisible {
        ' '
    } else {
        c
    }
}

/// "column 12", or "line 2, column 5" for multi-line sources.
struct Location(usize, usize);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 1 {
            write!(f, "line {}, column {}", self.0, self.1)
        } else {
            write!(f, "column {}", self.1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_source_and_caret() {
        let e = QueryError::syntax("status == ", 10, "expected a value after `==`");
        assert_eq!(
            e.to_string(),
            "invalid expression at column 11: expected a value after `==`\n\
             \x20 status ==\n\
             \x20           ^"
        );
    }

    #[test]
    fn multi_line_sources_name_the_line() {
        let e = QueryError::syntax("a == 1 &&\n  b = 2", 14, "unknown operator `=`");
        let QueryError::Syntax { line, column, .. } = &e else {
            panic!("expected a syntax error");
        };
        assert_eq!((*line, *column), (2, 5));
        assert!(e
            .to_string()
            .starts_with("invalid expression at line 2, column 5:"));
        assert!(e.to_string().ends_with("\n    b = 2\n      ^"));
    }

    #[test]
    fn long_lines_are_trimmed_around_the_problem() {
        let src = format!("{} == ", "a".repeat(1000));
        let e = QueryError::syntax(&src, src.len(), "expected a value");
        let text = e.to_string();
        assert!(text.len() < 300, "{text}");
        let mut lines = text.lines().skip(1);
        let (source, caret) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        // The caret sits one column after the last shown character.
        assert_eq!(caret.chars().count(), source.chars().count() + 2);
    }

    #[test]
    fn offsets_inside_a_character_do_not_panic() {
        let e = QueryError::syntax("é == 1", 1, "x");
        assert!(matches!(
            e,
            QueryError::Syntax {
                pos: 0,
                column: 1,
                ..
            }
        ));
        let e = QueryError::syntax("", 99, "x");
        assert!(matches!(
            e,
            QueryError::Syntax {
                pos: 0,
                column: 1,
                ..
            }
        ));
    }
}
