//! Single-record commands: `put`, `get`, `update`, `delete`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use blazedb::{RecordId, Timestamp, WriteError};
use clap::Args;

use crate::database::{Access, Context};
use crate::input;
use crate::output::{print_stored, Output};
use crate::report::UsageError;

/// `put DB COLLECTION JSON [--id ID]`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The database file (created if missing).
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// The record as a JSON object; an "_id" key gives its id.
    pub json: String,
    /// The record's id (a UUID); default: a new time-ordered UUIDv7.
    #[arg(long)]
    pub id: Option<RecordId>,
}

/// `get DB COLLECTION ID [--at TIME]`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: RecordId,
    /// Show the record as it was at this time (RFC 3339, e.g. 2026-01-01T12:00:00Z), as
    /// this copy knows its history: a value another device overwrote before it synced never
    /// reached this copy, so copies can answer differently for such times.
    #[arg(long, value_name = "RFC3339", value_parser = Timestamp::parse_rfc3339)]
    pub at: Option<Timestamp>,
}

/// `update DB COLLECTION ID JSON`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: RecordId,
    /// The changes as a JSON object: per field {"$inc": n}, {"$add": [..]}, {"$remove": [..]},
    /// {"$unset": true}, or a new value ({"$set": v} sets v as it is: for a map whose one key
    /// starts with "$").
    pub json: String,
}

/// A command that names one record: `delete`, `history`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// The record's id.
    pub id: RecordId,
}

/// Insert a record and print its id.
pub fn run_put(ctx: &Context, args: &PutArgs) -> Result<()> {
    let object = input::parse_object(&args.json).map_err(json_argument)?;
    let record = input::record(object).map_err(json_argument)?;
    let id = match (args.id, record.id) {
        (Some(flag), Some(key)) if flag != key => {
            return Err(UsageError(format!("--id {flag} and \"_id\": \"{key}\" disagree")).into())
        }
        (flag, key) => flag.or(key),
    };
    // Refused before the file is opened: a bad name must not leave a new, empty database.
    blazedb::validate_collection_name(&args.collection)?;
    for (field, value) in &record.fields {
        blazedb::validate_field_name(field)?;
        blazedb::validate_value(field, value)?;
    }
    let db = ctx.open(&args.db, Access::CreateIfMissing)?;
    let given = id.is_some();
    let id = match id {
        Some(id) => db
            .insert_with_id(&args.collection, id, record.fields)
            .map(|()| id)?,
        None => db.insert(&args.collection, record.fields)?,
    };
    let stored = || {
        let again = match given {
            false => "it would store the record a second time, under another id",
            true => "it would be refused, the id being taken",
        };
        format!(
            "the record was stored, in collection {:?} with id {id}: do not run `put` again \
             ({again})",
            args.collection
        )
    };
    Ok(print_stored(stored, |out| out.line(&id.to_string()))?)
}

/// Print a record (now, or as it was at `--at`).
pub fn run_get(ctx: &Context, args: &GetArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let record = match args.at {
        Some(at) => db.get_at(&args.collection, args.id, at)?,
        None => db.get(&args.collection, args.id)?,
    };
    let Some(record) = record else {
        if let Some(at) = args.at {
            bail!(
                "no record {} in collection {:?} at {}",
                args.id,
                args.collection,
                at.to_rfc3339()
            );
        }
        return Err(not_found(&args.collection, args.id).into());
    };
    let mut out = Output::stdout();
    out.json(&record.to_json())?;
    Ok(out.finish()?)
}

/// Change the named fields of a record.
pub fn run_update(ctx: &Context, args: &UpdateArgs) -> Result<()> {
    let mut object = input::parse_object(&args.json).map_err(json_argument)?;
    // `get`'s output carries "_id": accept it back when it names this record, so that an
    // edited copy of a record can be handed to `update` as it is.
    if let Some(json) = object.remove(input::ID_KEY) {
        let id = input::record_id(&json).map_err(json_argument)?;
        if id != args.id {
            return Err(json_argument(format!(
                "\"{}\" is {id}, not the record being updated ({}): leave \"{}\" out of an \
                 update (the record is the ID argument)",
                input::ID_KEY,
                args.id,
                input::ID_KEY
            ))
            .into());
        }
    }
    let patch = input::patch(object).map_err(json_argument)?;
    let db = ctx.open(&args.db, Access::Existing)?;
    // The library refuses with `NotFound` when the record is missing or deleted.
    db.update(&args.collection, args.id, patch)?;
    Ok(())
}

/// Delete a record; a missing one is an error so that a typo'd id does not pass silently.
pub fn run_delete(ctx: &Context, args: &RecordArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Existing)?;
    if !db.delete(&args.collection, args.id)? {
        return Err(not_found(&args.collection, args.id).into());
    }
    Ok(())
}

/// The library's own error for a missing record, so every command words it the same way.
pub fn not_found(collection: &str, id: RecordId) -> WriteError {
    WriteError::NotFound {
        collection: collection.to_owned(),
        id: id.to_string(),
    }
}

fn json_argument(message: String) -> UsageError {
    UsageError(format!("JSON argument: {message}"))
}
