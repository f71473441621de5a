//! `conflicts`: concurrent overwrites whose losing value is kept until resolved.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::{optional_json, version_json};
use crate::database::{Access, Context};
use crate::output::Output;

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
    let db = ctx.open(&args.db, Access::Existing)?;
    let mut out = Output::stdout();
    for c in db.conflicts(args.collection.as_deref())? {
        out.json(&json!({
            "id": c.id,
            "collection": c.collection,
            "record": c.record.to_string(),
            "cell": c.cell,
            "field": c.field,
            "winner": optional_json(c.winner.as_ref()),
            "loser": optional_json(c.loser.as_ref()),
            "winner_version": version_json(&c.winner_version),
            "loser_version": version_json(&c.loser_version),
        }))?;
    }
    Ok(out.finish()?)
}
