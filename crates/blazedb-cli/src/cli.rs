//! What the user can type: the global flags and one subcommand per command.
//!
//! Each command's arguments live beside its code in `commands::<family>`; this file only lists
//! the commands, so adding one (`serve`, `sync`, `listen`) is a variant here and a module there.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::{conflicts, debug, listen, maintenance, query, record, sync, transfer};

/// BlazeDB: an embedded, encrypted document database. JSON in, JSON out.
///
/// The password of an encrypted database comes from the environment variable BLAZEDB_PASSWORD
/// or from --password-file; with neither, the file is unencrypted. Typed values in JSON:
/// {"$uuid": "..."}, {"$bytes": "<base64>"}, {"$date": "<RFC 3339>"}; {"$date": N} is N
/// MICROseconds since 1970-01-01T00:00:00Z (what export writes for dates outside the years
/// 0-9999; JavaScript's Date.now() counts milliseconds: multiply by 1000, or write the date
/// as RFC 3339); {"$float": "NaN" | "Infinity" | "-Infinity"}. A map whose only key starts
/// with "$" is written {"$map": {"$key": ...}} (as export writes it); any other one-key
/// object with a "$" key is refused as a misspelt typed form, and so is an object that names
/// a key twice.
#[derive(Debug, Parser)]
#[command(name = "blazedb", version = version_line(), arg_required_else_help = true)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// What `blazedb --version` prints after the name: the release, and the storage format and
/// sync protocol it speaks, which tell builds apart where the release number does not (an
/// upgrade audit, 2026-12-07, F6): `0.1.0 (storage format 11, protocol 4)`.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        format!(
            "{} (storage format {}, protocol {})",
            env!("CARGO_PKG_VERSION"),
            blazedb::limits::FORMAT_VERSION,
            blazedb::limits::PROTOCOL_VERSION
        )
    })
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read the database password from FILE: UTF-8 text of at most 64 KiB, one trailing
    /// newline ignored. Takes precedence over BLAZEDB_PASSWORD.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Insert a record from a JSON object; prints its id.
    Put(record::PutArgs),
    /// Print a record as one JSON object with its fields and "_id".
    Get(record::GetArgs),
    /// Change only the named fields ($inc, $add, $remove, $unset, $set, or a new value).
    Update(record::UpdateArgs),
    /// Delete a record.
    Delete(record::RecordArgs),
    /// Print the records matching a query, one JSON object per line.
    Query(query::QueryArgs),
    /// Print every recorded change of a record, one JSON object per line.
    History(record::RecordArgs),
    /// Load JSON lines ("-" for stdin) in large transactions; "_id" upserts that record.
    Import(transfer::ImportArgs),
    /// Print every record of a collection as JSON lines.
    Export(transfer::ExportArgs),
    /// Print statistics about the database as one JSON object.
    Stats(maintenance::DbArgs),
    /// Rebuild the file to reclaim free space.
    Vacuum(maintenance::DbArgs),
    /// Create (or with --drop remove) a secondary index on a field.
    Index(maintenance::IndexArgs),
    /// Check the file's integrity; exits 1 and lists the problems if any.
    ///
    /// Encrypted files authenticate every page, so any changed byte is found; plain files
    /// have no page checksums, so a changed value inside a record can pass (their structure
    /// is checked).
    Check(maintenance::DbArgs),
    /// Print unresolved conflicts, one JSON object per line.
    Conflicts(conflicts::ConflictsArgs),
    /// Settle a conflict: keep the winner, or write the loser's (--loser) or a new value
    Resolve(conflicts::ResolveArgs),
    /// Seed a device offline: export a snapshot file, or import one.
    #[command(subcommand)]
    Snapshot(crate::commands::snapshot::SnapshotCommand),
    /// Sync a database with another file or a network peer (tcp://, tls://, unix://, ws://,
    /// wss://): once, or continuously.
    ///
    /// One sync of a file with a given peer URL runs at a time: a second one (--watch or
    /// --once) fails at once, naming the process that syncs (a lock file beside the
    /// database, released however that process ends). The same file may sync with other
    /// peers meanwhile.
    ///
    /// Exit codes: 0 synced; 1 failed; 2 a bad command line; 3 synced, but the peer refused
    /// changes of this side (its access rules: each is listed with the reason, and the
    /// refused values are kept as conflicts); 4 synced, but the summary could not be printed
    /// (stdout on a full disk).
    Sync(sync::SyncArgs),
    /// Serve one database to peers over TCP (optionally TLS) or a Unix socket.
    ///
    /// With a token, a peer IP address that sends --max-auth-failures-per-address wrong
    /// tokens (10) within a minute over TCP is refused for a minute with RATE_LIMITED, its
    /// token not checked; other addresses are served as usual.
    Listen(listen::ListenArgs),
    /// List the peers this database syncs with (cursors, last contact), one JSON line each;
    /// --forget NODE drops one so GC can move on.
    Peers(crate::commands::peers::PeersArgs),
    /// Remove tombstones and other sync metadata every peer has seen; prints what it did.
    Gc(crate::commands::peers::GcArgs),
    /// Change the password to BLAZEDB_NEW_PASSWORD or --new-password-file, or --decrypt.
    Rekey(maintenance::RekeyArgs),
    /// List BlazeDB peers announced on the LAN (mDNS), one JSON line each.
    Discover(crate::commands::discover::DiscoverArgs),
    /// Run the relay server: WebSocket sync, auth, access rules, /v1/query, /health, /metrics.
    ///
    /// Behind a reverse proxy (nginx, Caddy, a load balancer), name it with --trusted-proxy:
    /// each client then counts under the address the proxy forwards in X-Forwarded-For, for
    /// the limit on wrong credentials and in the log, instead of all under the proxy's.
    // Boxed: its many options made it the one variant that sized the whole enum
    // (`clippy::large_enum_variant`).
    Serve(Box<crate::commands::serve::ServeArgs>),
    /// Tools for BlazeDB's own tests.
    #[command(hide = true, subcommand)]
    Debug(debug::DebugCommand),
}
