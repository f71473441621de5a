//! `conflicts`: concurrent overwrites whose losing value is kept until resolved; `resolve`
//! settles one.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{optional_json, version_json};
use crate::database::{Access, Context};
use crate::input::{self, parse_object};
use crate::output::{print_stored, Output};
use crate::report::UsageError;

/// `conflicts DB [COLLECTION]`.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    /// The database file.
    pub db: PathBuf,
    /// Only this collection's conflicts.
    pub collection: Option<String>,
}

/// Print unresolved conflicts, oldest first, one JSON object per line.
pub fn run(ctx: &Context, args: &ConflictsArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let mut out = Output::stdout();
    for c in db.conflicts(args.collection.as_deref())? {
        let mut line = json!({
            "id": c.id,
            "collection": c.collection,
            "record": c.record.to_string(),
            "cell": c.cell,
            "field": c.field,
            "winner": optional_json(c.winner.as_ref()),
            "loser": optional_json(c.loser.as_ref()),
            "winner_version": version_json(&c.winner_version),
            "loser_version": version_json(&c.loser_version),
            // A newer write replaced both sides (e.g. this conflict resolved on another copy).
            "superseded": c.superseded,
        });
        // One element of a set: which one, and `winner`/`loser` say in the set (true) or
        // left out (false), as `resolve --value` takes them (an audit, 2026-12-07: a removal
        // was listed as null).
        if let Some(e) = &c.element {
            line["element"] = optional_json(Some(e));
            line["winner"] = json!(c.winner.is_some());
            line["loser"] = json!(c.loser.is_some());
        }
        out.json(&line)?;
    }
    Ok(out.finish()?)
}

/// `resolve DB CONFLICT [--loser | --value JSON]`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The database file.
    pub db: PathBuf,
    /// The conflict's `id`, as `blazedb conflicts` lists it.
    pub conflict: i64,
    /// Write the losing value back (a new write, which wins everywhere it syncs to).
    #[arg(long, conflicts_with = "value")]
    pub loser: bool,
    /// Write this JSON value to the field instead (typed forms as for `put`). For a conflict
    /// over one element of a set (listed with `element`): true to have it in the set, false
    /// to leave it out.
    #[arg(long, value_name = "JSON")]
    pub value: Option<String>,
}

/// Settle a conflict: keep the winner (the default), or write the loser's or a new value to
/// its field. Prints `{"resolved": ID, "wrote": VALUE|null}`.
pub fn run_resolve(ctx: &Context, args: &ResolveArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Existing)?;
    let conflict = db
        .conflicts(None)?
        .into_iter()
        .find(|c| c.id == args.conflict)
        // Exit 1 like a missing record: the command line was fine, the conflict is not there
        // (a script that resolves twice, or after another replica's resolution synced in).
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no open conflict {} (unknown, or resolved already: see `blazedb conflicts {}`)",
                args.conflict,
                args.db.display()
            )
        })?;
    let value = if args.loser || args.value.is_some() {
        if conflict.field.is_none() {
            return Err(UsageError(format!(
                "conflict {} is about the record itself (an insert or a delete against a \
                 concurrent one, listed as whole records), not a field: resolve it without \
                 --loser or --value, then delete the record or write it again as it should be",
                args.conflict
            ))
            .into());
        }
        if conflict.counter_node.is_some() {
            return Err(UsageError(format!(
                "conflict {} is about one node's contribution to counter field {:?}: resolve \
                 it without --loser or --value, then adjust the counter with `blazedb update` \
                 (`{{\"{}\": {{\"$inc\": N}}}}`)",
                args.conflict,
                conflict.field.as_deref().unwrap_or_default(),
                conflict.field.as_deref().unwrap_or_default(),
            ))
            .into());
        }
        match &args.value {
            Some(text) => {
                let field = conflict.field.as_deref().unwrap_or_default();
                Some(parse_value(text, field).map_err(UsageError)?)
            }
            // One element of a set: the loser had it in the set (`true`) or left it out.
            None if conflict.element.is_some() => {
                Some(blazedb::Value::Bool(conflict.loser.is_some()))
            }
            None => match conflict.loser {
                Some(v) => Some(v),
                None => {
                    return Err(UsageError(format!(
                        "the losing write of conflict {} removed field {:?}: remove it with \
                         `blazedb update` (`{{\"{}\": {{\"$unset\": true}}}}`), then resolve \
                         without --loser",
                        args.conflict,
                        conflict.field.as_deref().unwrap_or_default(),
                        conflict.field.as_deref().unwrap_or_default(),
                    ))
                    .into())
                }
            },
        }
    } else {
        None
    };
    let wrote = optional_json(value.as_ref());
    db.resolve_conflict(args.conflict, value)?;
    let stored = || format!("conflict {} was resolved", args.conflict);
    Ok(print_stored(stored, |out| {
        out.json(&json!({ "resolved": args.conflict, "wrote": wrote }))
    })?)
}

/// One JSON value for `field` with the typed forms (`{"$date": ..}` and the like), checked as
/// that field of a record is (integers beyond 64 bits, unknown `$` forms are refused).
fn parse_value(text: &str, field: &str) -> Result<blazedb::Value, String> {
    let invalid = |e: &str| format!("--value: {e}");
    input::parse_json(text).map_err(|e| invalid(&e))?;
    // Valid JSON on its own, so wrapped it is an object of exactly this one value.
    let object = parse_object(&format!("{{\"value\": {text}}}"))
        .map_err(|e| invalid(&e.replace("field \"value\": ", "")))?;
    input::value(&object["value"], field).map_err(|e| invalid(&e))
}
