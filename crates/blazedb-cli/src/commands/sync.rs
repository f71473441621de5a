//! `sync`: keep two database files on this machine in sync, through an in-process session
//! pair (the same protocol the network transports carry).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use blazedb::sync::SyncMode;
use blazedb_net::{sync_files_once, sync_files_watch, SyncFilesOptions};
use clap::Args;

use crate::output::Output;
use crate::password::{resolve, PASSWORD_ENV};

/// `sync DB_A DB_B [--once] [--mode both|push|pull]`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The first database file.
    pub db_a: PathBuf,
    /// The second database file (created if missing: it becomes a replica).
    pub db_b: PathBuf,
    /// Exit once both sides are caught up, printing one JSON line of what moved.
    #[arg(long)]
    pub once: bool,
    /// What DB_A does: both (send and receive), push (only send: DB_B becomes a read-only
    /// replica) or pull (only receive from DB_B).
    #[arg(long, default_value = "both")]
    pub mode: SyncMode,
    /// Password file for DB_A (default: BLAZEDB_PASSWORD).
    #[arg(long)]
    pub password_file_a: Option<PathBuf>,
    /// Password file for DB_B (default: BLAZEDB_PASSWORD).
    #[arg(long)]
    pub password_file_b: Option<PathBuf>,
}

/// Run the sync until caught up (`--once`) or until interrupted (Ctrl-C), then print what
/// moved as one JSON line.
pub fn run(args: &SyncArgs) -> Result<()> {
    let opts = SyncFilesOptions {
        mode: args.mode,
        password_a: resolve(args.password_file_a.as_deref(), PASSWORD_ENV)?,
        password_b: resolve(args.password_file_b.as_deref(), PASSWORD_ENV)?,
        ..SyncFilesOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        if args.once {
            sync_files_once(&args.db_a, &args.db_b, opts).await
        } else {
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            sync_files_watch(&args.db_a, &args.db_b, opts, stop).await
        }
    })?;
    let mut out = Output::stdout();
    out.json(&report.to_json())?;
    Ok(out.finish()?)
}
