//! Whole-database commands: `stats`, `vacuum`, `index`, `check`, `rekey`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use blazedb::Stats;
use clap::Args;
use serde_json::{json, Map, Value as Json};

use crate::database::{Access, Context};
use crate::output::{print_stored, Output};
use crate::password;
use crate::report::UsageError;

/// A command that names only the database.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The database file.
    pub db: PathBuf,
}

/// `index DB COLLECTION FIELD [--drop]`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// The top-level field to index, by its name as written (a name with a dot is one
    /// top-level field of that name: nested paths cannot be indexed).
    pub field: String,
    /// Remove the index instead of creating it.
    #[arg(long)]
    pub drop: bool,
}

/// `rekey DB [--new-password-file FILE | --decrypt]`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    BLAZEDB_PASSWORD=old BLAZEDB_NEW_PASSWORD=new blazedb rekey bugs.db\n  \
    blazedb rekey bugs.db --password-file old.txt --new-password-file new.txt\n  \
    BLAZEDB_PASSWORD=old blazedb rekey bugs.db --decrypt     # write the file in clear\n\n\
    The file is replaced by a re-encrypted copy: no other process (`serve`, `sync --watch`, ...)\n\
    may have it open, else the rekey is refused and nothing changes. A crash leaves the file\n\
    under either the old or the new password, never neither.\n\n\
    The old file's disk blocks are freed, not overwritten: encrypting a file that was in clear,\n\
    or changing a password that leaked, does not scrub what the disk held before (freed blocks,\n\
    the old WAL, SSD remapping, backups keep it). Data that must never touch the disk in clear\n\
    needs a password from its first write, or an encrypted volume.")]
pub struct RekeyArgs {
    /// The database file (opened with the current password: BLAZEDB_PASSWORD or
    /// --password-file).
    pub db: PathBuf,
    /// Read the new password from FILE; default BLAZEDB_NEW_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Remove the encryption: rewrite the file in clear. Never implied by a missing new
    /// password, so a lost or empty variable cannot decrypt a database.
    #[arg(long, conflicts_with = "new_password_file")]
    pub decrypt: bool,
}

/// Print statistics as one JSON object.
pub fn run_stats(ctx: &Context, args: &DbArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let mut out = Output::stdout();
    out.json(&stats_json(&db.stats()?))?;
    Ok(out.finish()?)
}

/// Rebuild the file. Quiet on success, like the other commands that only change things.
pub fn run_vacuum(ctx: &Context, args: &DbArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Existing)?;
    Ok(db.vacuum()?)
}

/// Create (idempotent) or drop an index.
pub fn run_index(ctx: &Context, args: &IndexArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Existing)?;
    if !args.drop {
        return Ok(db.create_index(&args.collection, &args.field)?);
    }
    if !db.drop_index(&args.collection, &args.field)? {
        bail!(
            "no index on field {:?} of collection {:?}",
            args.field,
            args.collection
        );
    }
    Ok(())
}

/// Print `{"ok": .., "problems": [..]}`; a damaged file also fails the command (exit 1).
pub fn run_check(ctx: &Context, args: &DbArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let report = db.integrity_check()?;
    let mut out = Output::stdout();
    out.json(&json!({ "ok": report.ok, "problems": report.problems }))?;
    out.finish()?;
    if !report.ok {
        bail!(
            "integrity check found {} problem(s): {}; restore from a backup or a peer",
            report.problems.len(),
            report.problems.join("; ")
        );
    }
    Ok(())
}

/// Change the password (or, with `--decrypt`, remove it) and print `{"encrypted": ..}`.
pub fn run_rekey(ctx: &Context, args: &RekeyArgs) -> Result<()> {
    let new_password = password::resolve_new(args.new_password_file.as_deref(), args.decrypt)?;
    let env = password::NEW_PASSWORD_ENV;
    match (&new_password, args.decrypt) {
        (Some(_), true) => {
            return Err(UsageError(format!(
                "--decrypt removes the encryption, and {env} gives a new password: unset \
                 {env} to decrypt, or leave out --decrypt to change the password"
            ))
            .into())
        }
        (None, false) => {
            return Err(UsageError(format!(
                "no new password: give it in {env} or a file named by --new-password-file, \
                 or pass --decrypt to remove the encryption"
            ))
            .into())
        }
        _ => {}
    }
    // Check for the file here and open it with `CreateIfMissing`: the library's rekey ATTACHes
    // a new file, which SQLite refuses on a connection opened without its create flag.
    if !args.db.exists() {
        bail!(
            "cannot open {}: no such database, check the path",
            args.db.display()
        );
    }
    crate::database::refuse_empty_file(&args.db)?;
    let mut db = ctx.open(&args.db, Access::CreateIfMissing)?;
    db.rekey(new_password.as_ref().map(|p| p.as_str()))?;
    let stored = || match db.is_encrypted() {
        true => format!(
            "the password of {} was changed: open it with the new password from now on, and \
             do not run `rekey` again (the old password no longer opens it)",
            args.db.display()
        ),
        false => format!(
            "{} was decrypted: open it without a password from now on, and do not run \
             `rekey` again",
            args.db.display()
        ),
    };
    Ok(print_stored(stored, |out| {
        out.json(&json!({ "encrypted": db.is_encrypted() }))
    })?)
}

fn stats_json(stats: &Stats) -> Json {
    let collections: Map<String, Json> = stats
        .collections
        .iter()
        .map(|(name, c)| {
            let stats = json!({
                "records": c.records,
                "tombstones": c.tombstones,
                "body_bytes": c.body_bytes,
                "index_entries": c.index_entries,
            });
            (name.clone(), stats)
        })
        .collect();
    json!({
        "collections": collections,
        "file_bytes": stats.file_bytes,
        "wal_bytes": stats.wal_bytes,
        "history_entries": stats.history_entries,
        "history_bytes": stats.history_bytes,
        "index_bytes": stats.index_bytes,
        "feed_rows": stats.feed_rows,
        "open_conflicts": stats.open_conflicts,
        "last_seq": stats.last_seq,
        "node_id": stats.node_id,
        "encrypted": stats.encrypted,
    })
}
