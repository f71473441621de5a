//! `query`: records matching an expression, sorted and paged.

use std::path::PathBuf;

use anyhow::Result;
use blazedb::query::Node;
use blazedb::{OrderBy, Query};
use clap::Args;

use crate::database::{Access, Context};
use crate::output::Output;
use crate::report::UsageError;

/// `query DB COLLECTION [--where EXPR] [--order-by FIELD[:desc]].. [--limit N] [--offset N]`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// Only records matching this expression, e.g. 'status == "open" && priority >= 5'
    /// (values written out: the command line has no $parameters).
    #[arg(long = "where", value_name = "EXPR", allow_hyphen_values = true)]
    pub filter: Option<String>,
    /// Sort by this field (a.b for nested fields), ascending or with :desc descending.
    /// Repeat for tie-breakers, most significant first.
    #[arg(long, value_name = "FIELD[:desc]", value_parser = parse_order_by)]
    pub order_by: Vec<OrderBy>,
    /// Print at most N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Skip the first N records.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub offset: usize,
}

/// Print the matching records, one JSON object per line.
pub fn run(ctx: &Context, args: &QueryArgs) -> Result<()> {
    // Parse before opening, so a bad expression is reported even for a missing file. The
    // query error points at the column; `report` turns it into exit code 2.
    let filter = args
        .filter
        .as_deref()
        .map(blazedb::query::parse)
        .transpose()?;
    if let Some(name) = filter.as_ref().and_then(|f| first_param(f.root(), &[])) {
        return Err(UsageError(format!(
            "--where uses ${name}, and the command line has no parameters to give it (a \
             parameter never given is unknown, so nothing would match): write the value itself"
        ))
        .into());
    }
    let query = Query {
        filter,
        order_by: args.order_by.clone(),
        limit: args.limit,
        offset: args.offset,
        ..Query::default()
    };
    let db = ctx.open(&args.db, Access::Read)?;
    let mut out = Output::stdout();
    for record in db.query(&args.collection, &query)? {
        out.json(&record.to_json())?;
    }
    Ok(out.finish()?)
}

/// The name of the first `$name` parameter in `node` that is not one of `allowed`.
///
/// An expression given on the command line has nowhere to take a parameter's value from, and
/// a parameter never given is unknown (as SQL's NULL), so `v != $x` would quietly match
/// nothing; the relay's /v1/query refuses unknown parameters the same way.
pub fn first_param(node: &Node, allowed: &[&str]) -> Option<String> {
    match node {
        Node::Param { name, .. } if !allowed.contains(&name.as_str()) => Some(name.clone()),
        Node::Param { .. } | Node::Literal(_) | Node::Field(_) | Node::RecordId => None,
        Node::List(items) | Node::And(items) | Node::Or(items) => {
            items.iter().find_map(|n| first_param(n, allowed))
        }
        Node::Not(n) | Node::Exists(n) => first_param(n, allowed),
        Node::Binary { lhs, rhs, .. } => {
            first_param(lhs, allowed).or_else(|| first_param(rhs, allowed))
        }
    }
}

/// `FIELD`, `FIELD:asc` or `FIELD:desc` ([`OrderBy::parse`]).
fn parse_order_by(text: &str) -> Result<OrderBy, String> {
    OrderBy::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_found_anywhere_in_the_expression() {
        let find = |text: &str, allowed: &[&str]| {
            first_param(blazedb::query::parse(text).unwrap().root(), allowed)
        };
        assert_eq!(find("v != $x", &[]), Some("x".into()));
        assert_eq!(find("a == 1 || !(b in [1, $y.z])", &[]), Some("y".into()));
        assert_eq!(find("exists($p) && v == \"$q\"", &[]), Some("p".into()));
        assert_eq!(find("owner == $auth.sub", &["auth"]), None);
        assert_eq!(
            find("owner == $auth.sub && n > $n", &["auth"]),
            Some("n".into())
        );
        assert_eq!(find("v == \"$x\" && n >= 3", &[]), None);
    }

    #[test]
    fn order_by_direction_suffix() {
        let parse = |t| parse_order_by(t).map(|o| (o.field, o.desc));
        assert_eq!(parse("title"), Ok(("title".into(), false)));
        assert_eq!(parse("a.b:desc"), Ok(("a.b".into(), true)));
        assert_eq!(parse("n:asc"), Ok(("n".into(), false)));
        assert_eq!(parse("n:DESC"), Ok(("n".into(), true)));
        // A word that is not a direction is refused, not read as part of the field name
        // (which no record would have: the answer would come back unsorted).
        assert!(parse("n:descending").unwrap_err().contains("asc or desc"));
        assert!(parse("ratio:x").is_err());
        // Anything else after a colon is still a field name.
        assert_eq!(parse("t:1"), Ok(("t:1".into(), false)));
        assert!(parse(":desc").is_err());
        // SQL's habits: a direction after a space, several keys in one; each would sort by
        // a field no record has.
        let e = parse("priority desc").unwrap_err();
        assert!(e.contains("\"priority:desc\""), "{e}");
        assert!(parse("n  ASC ").unwrap_err().contains("\"n:asc\""));
        let e = parse("a,b:desc").unwrap_err();
        assert!(e.contains("one sort key each"), "{e}");
        assert!(parse("a, b").is_err());
        // Names that merely hold a space or a comma are still names.
        assert_eq!(parse("first name"), Ok(("first name".into(), false)));
        assert_eq!(parse("a, b c:desc"), Ok(("a, b c".into(), true)));
        assert_eq!(parse("desc"), Ok(("desc".into(), false)));
    }
}
