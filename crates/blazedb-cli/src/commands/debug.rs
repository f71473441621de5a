//! Hidden commands for BlazeDB's own tests (`blazedb debug ...`, not listed in `--help`).

use std::path::PathBuf;

use anyhow::Result;
use blazedb::Value;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::database::{Access, Context};
use crate::output::Output;

/// Transactions of the write loop hold 1 to this many records, so a kill can land inside a
/// multi-record commit and the test can check that it is all or nothing.
const WRITE_LOOP_TX_RECORDS_MAX: u64 = 4;

/// The hidden test commands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Commit records in a loop until killed, printing each only after its commit returned.
    WriteLoop(WriteLoopArgs),
}

/// `debug write-loop DB COLLECTION [--records-max N]`.
#[derive(Debug, Args)]
pub struct WriteLoopArgs {
    /// The database file (created if missing).
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// Stop after this many records (the crash test kills the process long before).
    #[arg(long, default_value_t = 10_000_000)]
    pub records_max: u64,
}

/// Run a hidden command.
pub fn run(ctx: &Context, command: &DebugCommand) -> Result<()> {
    match command {
        DebugCommand::WriteLoop(args) => write_loop(ctx, args),
    }
}

/// Transaction `t` inserts `t % 4 + 1` records; record `n` (counting across transactions) has
/// the fields `n`, `tx`, `tx_size` and `payload` = [`payload`]`(n)`. After each commit returns
/// Ok, one line `{"_id", "n", "tx"}` per record is printed and flushed: a printed record is a
/// promise that it is durable, which the crash test checks after `kill -9`.
fn write_loop(ctx: &Context, args: &WriteLoopArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::CreateIfMissing)?;
    let mut out = Output::stdout();
    let mut n = 0u64;
    let mut tx_number = 0u64;
    while n < args.records_max {
        let size = tx_number % WRITE_LOOP_TX_RECORDS_MAX + 1;
        let first = n;
        let ids = db.transaction(|tx| {
            (first..first + size)
                .map(|n| {
                    let fields: [(&str, Value); 4] = [
                        ("n", Value::Int(n as i64)),
                        ("tx", Value::Int(tx_number as i64)),
                        ("tx_size", Value::Int(size as i64)),
                        ("payload", Value::Text(payload(n))),
                    ];
                    tx.insert(&args.collection, fields)
                })
                .collect::<blazedb::Result<Vec<_>>>()
        })?;
        for (id, n) in ids.iter().zip(first..) {
            out.json(&json!({ "_id": id.to_string(), "n": n, "tx": tx_number }))?;
        }
        out.flush()?;
        n += size;
        tx_number += 1;
    }
    Ok(out.finish()?)
}

/// The payload of record `n`: about 100 bytes that a torn write would not reproduce. The crash
/// test computes the same text.
fn payload(n: u64) -> String {
    format!("record {n} ").repeat(8)
}
