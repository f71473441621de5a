//! `history`: every recorded change of one record.

use anyhow::Result;
use serde_json::json;

use super::record::{not_found, RecordArgs};
use super::{optional_json, wall_time};
use crate::database::{Access, Context};
use crate::output::Output;

/// Print one JSON object per change, oldest first.
pub fn run(ctx: &Context, args: &RecordArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let entries = db.history(&args.collection, args.id)?;
    // A deleted record still has its history; a record without any never existed (or its
    // history was compacted away, which the message cannot tell apart).
    if entries.is_empty() && db.get(&args.collection, args.id)?.is_none() {
        return Err(not_found(&args.collection, args.id).into());
    }
    let mut out = Output::stdout();
    for e in &entries {
        out.json(&json!({
            "cell": e.cell,
            "field": e.field,
            "op": e.op,
            "old": optional_json(e.old.as_ref()),
            "new": optional_json(e.new.as_ref()),
            "hlc": e.version.hlc.to_string(),
            "time": wall_time(e.version.hlc),
            "node": e.version.node.to_string(),
            // 0 is never a feed position: the entry was rebuilt from the value its
            // overwrite replaced, and where it was stored is not known.
            "seq": (e.seq.0 > 0).then_some(e.seq.0),
        }))?;
    }
    Ok(out.finish()?)
}
