//! One module per command family. Each holds its commands' arguments (clap `Args`) and a
//! `run_*` function that takes the [`Context`] and those arguments.

pub mod conflicts;
pub mod debug;
pub mod discover;
pub mod history;
pub mod listen;
pub mod maintenance;
pub mod peers;
pub mod query;
pub mod record;
pub mod serve;
pub mod snapshot;
pub mod sync;
pub mod transfer;

use anyhow::Result;
use serde_json::{json, Value as Json};

use crate::cli::{Cli, Command};
use crate::database::Context;

/// Run the command the user typed.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context {
        password_file: cli.global.password_file,
    };
    match cli.command {
        Command::Put(args) => record::run_put(&ctx, &args),
        Command::Get(args) => record::run_get(&ctx, &args),
        Command::Update(args) => record::run_update(&ctx, &args),
        Command::Delete(args) => record::run_delete(&ctx, &args),
        Command::Query(args) => query::run(&ctx, &args),
        Command::History(args) => history::run(&ctx, &args),
        Command::Import(args) => transfer::run_import(&ctx, &args),
        Command::Export(args) => transfer::run_export(&ctx, &args),
        Command::Stats(args) => maintenance::run_stats(&ctx, &args),
        Command::Vacuum(args) => maintenance::run_vacuum(&ctx, &args),
        Command::Index(args) => maintenance::run_index(&ctx, &args),
        Command::Check(args) => maintenance::run_check(&ctx, &args),
        Command::Conflicts(args) => conflicts::run(&ctx, &args),
        Command::Resolve(args) => conflicts::run_resolve(&ctx, &args),
        Command::Peers(args) => peers::run_peers(&ctx, &args),
        Command::Gc(args) => peers::run_gc(&ctx, &args),
        Command::Rekey(args) => maintenance::run_rekey(&ctx, &args),
        Command::Snapshot(command) => snapshot::run(&ctx, &command),
        Command::Sync(args) => sync::run(&ctx, &args),
        Command::Listen(args) => listen::run(&ctx, &args),
        Command::Discover(args) => discover::run(&args),
        Command::Serve(args) => serve::run(&ctx, &args),
        Command::Debug(command) => debug::run(&ctx, &command),
    }
}

/// A cell version as JSON: the hybrid logical time as `"wall_ms.logical"`, that time as
/// RFC 3339, and the writing node.
pub fn version_json(version: &blazedb::Version) -> Json {
    json!({
        "hlc": version.hlc.to_string(),
        "time": wall_time(version.hlc),
        "node": version.node.to_string(),
    })
}

/// The wall-clock part of a hybrid logical time, as RFC 3339.
pub fn wall_time(hlc: blazedb::Hlc) -> String {
    // wall_ms has 48 bits, so it always fits in an i64.
    blazedb::Timestamp::from_unix_ms(hlc.wall_ms() as i64).to_rfc3339()
}

/// An optional value as JSON (`null` when absent).
pub fn optional_json(value: Option<&blazedb::Value>) -> Json {
    value.map_or(Json::Null, blazedb::codec::json::to_json)
}
