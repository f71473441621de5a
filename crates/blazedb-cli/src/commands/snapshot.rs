//! `snapshot export` / `snapshot import`: seed a device offline with a snapshot file.
//!
//! The file is BlazeDB's own (see `blazedb::sync::snapshot`): chunked, zstd-compressed and
//! checksummed, and not encrypted: `export` creates it with mode 0600. Importing applies it
//! as a snapshot received from the node it was exported from, so a later `blazedb sync` with
//! that node continues from the snapshot's position and sends nothing twice.

use std::path::PathBuf;

use anyhow::{bail, Result};
use blazedb::sync::snapshot::{import_snapshot_file, write_snapshot_file};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::database::{remove_new_database, will_create_database, Access, Context};
use crate::output::{print_stored, Output};

/// `snapshot export|import`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a snapshot of every record (tombstones included) to FILE; prints one JSON line.
    ///
    /// The snapshot is NOT encrypted, even when the database is: it holds every record in
    /// clear (zstd-compressed). It is created readable by its owner only (mode 0600 on Unix);
    /// keep it as safe as the database password, and delete it once imported. It is written
    /// as FILE.partial and renamed when complete: an export that was interrupted (killed)
    /// leaves FILE.partial, as private and as unencrypted, until the next export to FILE
    /// replaces it; delete it if you give up.
    Export(SnapshotArgs),
    /// Seed DB (created if missing) from a snapshot FILE; prints one JSON line.
    Import(SnapshotArgs),
}

/// `snapshot export DB FILE` / `snapshot import DB FILE`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The database file.
    pub db: PathBuf,
    /// The snapshot file.
    pub file: PathBuf,
}

/// Run a `snapshot` command.
pub fn run(ctx: &Context, command: &SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Export(args) => run_export(ctx, args),
        SnapshotCommand::Import(args) => run_import(ctx, args),
    }
}

fn run_export(ctx: &Context, args: &SnapshotArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let info = write_snapshot_file(&db, &args.file)?;
    let mut out = Output::stdout();
    out.json(&json!({
        "node": info.node.to_string(),
        "position": info.position.0,
        "chunks": info.chunks,
        "records": info.records,
        "cells": info.cells,
        "bytes": info.bytes,
        "partial": info.partial,
    }))?;
    Ok(out.finish()?)
}

fn run_import(ctx: &Context, args: &SnapshotArgs) -> Result<()> {
    // Check the input first: a mistyped file name must not leave a new, empty database.
    let bytes = match std::fs::metadata(&args.file) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => bail!("{} is not a file", args.file.display()),
        Err(e) => bail!("cannot open snapshot file {}: {e}", args.file.display()),
    };
    let is_new = will_create_database(&args.db);
    let db = ctx.open(&args.db, Access::CreateIfMissing)?;
    let applied = match import_snapshot_file(&db, &args.file) {
        Ok(applied) => applied,
        Err(e) => {
            // The import is all or nothing: a failed one leaves no new, empty database.
            if is_new {
                remove_new_database(db, &args.db);
            }
            return Err(e.into());
        }
    };
    let stored = || {
        format!(
            "the snapshot was imported into {} ({} records): only its report is lost",
            args.db.display(),
            applied.records
        )
    };
    Ok(print_stored(stored, |out| {
        out.json(&json!({
            "records": applied.records,
            "cells": applied.cells_applied,
            "bytes": bytes,
            "position": applied.position.0,
            "evicted": applied.evicted,
            "kept_pending": applied.kept_pending,
        }))
    })?)
}
