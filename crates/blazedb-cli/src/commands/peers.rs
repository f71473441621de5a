//! `peers` and `gc`: the replicas this database syncs with, and collecting the sync metadata
//! they have all seen (tombstones, removals, feed links) so the file stays bounded.

use std::path::PathBuf;

use anyhow::{bail, Result};
use blazedb::{GcOptions, GcReport, NodeId, Timestamp};
use clap::Args;
use serde_json::{json, Value as Json};

use crate::database::{Access, Context};
use crate::output::{print_stored, Output};
use crate::report::stderr_line;

/// `peers DB [--forget NODE]`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The database file.
    pub db: PathBuf,
    /// Stop GC waiting for this peer (32 hex digits, as listed): drop how far it acknowledged
    /// this file's changes. If it syncs again it starts over (by snapshot once GC has run).
    /// How far this file received the peer's changes stays, so its old writes are not applied
    /// again; it stays listed with `acked` 0. Its roles go too (a relay then expires; a peer
    /// that only pushes no longer holds removals back for the retention). Forget only a peer
    /// that will not come back with edits made offline: once GC has purged a delete, its
    /// older edit of that record brings the record back on the copies it reaches and not on
    /// the others.
    #[arg(long, value_name = "NODE", value_parser = parse_node)]
    pub forget: Option<NodeId>,
}

/// `gc DB [--peer-retention 30d]`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The database file.
    pub db: PathBuf,
    /// Peers not heard from for this long no longer hold GC back (a number with a unit: ms,
    /// s, m, h or d).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration_ms)]
    pub peer_retention: u64,
}

/// List known peers, one JSON object per line; with `--forget`, drop one (quiet on success).
pub fn run_peers(ctx: &Context, args: &PeersArgs) -> Result<()> {
    let access = match args.forget {
        Some(_) => Access::Existing,
        None => Access::Read,
    };
    let db = ctx.open(&args.db, access)?;
    if let Some(node) = args.forget {
        if !db.forget_peer(node)? {
            bail!(
                "nothing to forget for peer {node} in {}: unknown, or forgotten already; \
                 `blazedb peers {}` lists the known ones",
                args.db.display(),
                args.db.display()
            );
        }
        return Ok(());
    }
    let horizon = db.gc_horizon()?;
    let mut out = Output::stdout();
    for p in db.peers()? {
        out.json(&json!({
            "node": p.node.to_string(),
            "received": p.received.0,
            "acked": p.acked.0,
            // Acknowledged with everything the peer held then received here: what GC may
            // collect up to for it.
            "stable": p.stable.0,
            "last_contact": Timestamp::from_unix_ms(p.last_contact_ms as i64).to_rfc3339(),
            "last_contact_ms": p.last_contact_ms,
            // Never expires (deletes made while it is away must reach it).
            "relay": p.relay,
            // Takes none of our changes: GC keeps removals for the retention (its older
            // writes must still meet them).
            "pushes_only": p.pushes_only,
            // GC removed data this peer had not acknowledged: it needs a snapshot to resume.
            "needs_snapshot": horizon.0 > 0 && p.acked < horizon,
        }))?;
    }
    Ok(out.finish()?)
}

/// Run GC and print what it did as one JSON object.
pub fn run_gc(ctx: &Context, args: &GcArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Existing)?;
    let report = db.gc(&GcOptions {
        peer_retention_ms: args.peer_retention,
    })?;
    for relay in &report.relays_past_retention {
        // Said because nothing else would: a relay is never expired, so one that is gone for
        // good keeps every later tombstone here, silently.
        stderr_line(json!({
            "event": "warning",
            "warning": format!(
                "relay {relay} was last heard from over {} ago and still holds GC back \
                 (a relay never expires: deletes made while it is away must reach it). If it \
                 is gone for good: blazedb peers {} --forget {relay}",
                format_duration_ms(args.peer_retention),
                args.db.display()
            ),
        }));
    }
    let stored = || "gc ran, and what it removed is gone: only its report is lost".to_owned();
    Ok(print_stored(stored, |out| out.json(&gc_json(&report)))?)
}

/// `30d`, `12h`, `90m`, `45s` or `500ms`: the largest unit that divides `ms`.
fn format_duration_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| ms >= *unit && ms % unit == 0)
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, name)| format!("{}{name}", ms / unit),
        )
}

/// A [`GcReport`] as JSON.
pub fn gc_json(r: &GcReport) -> Json {
    json!({
        "horizon": r.horizon.0,
        "tombstones_purged": r.tombstones_purged,
        "cells_pruned": r.cells_pruned,
        "links_pruned": r.links_pruned,
        "feed_rows_pruned": r.feed_rows_pruned,
        "history_rows_removed": r.history_rows_removed,
        "records_examined": r.records_examined,
        "expired_peers": r.expired_peers.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "held_by": r.held_by.map(|n| n.to_string()),
        "relays_past_retention": r
            .relays_past_retention
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    })
}

fn parse_node(text: &str) -> Result<NodeId, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not a node id: expected 32 hex digits, as `blazedb peers` lists them")
    })
}

/// `30d`, `12h`, `90m`, `45s`, `500ms` → milliseconds; a bare `0` is zero.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "{text:?} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 45s, 500ms"
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("30").is_err());
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("3w").is_err());
        assert!(parse_duration_ms("99999999999999999d").is_err());
    }
}
