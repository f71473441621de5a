//! `blazedb-bench`: BlazeDB's figures beside their floors (raw rusqlite with the same pragmas
//! and key; for sync, raw rusqlite on both sides of an in-process channel, and the same
//! changes as JSON for wire sizes), measured in the same run, encrypted and unencrypted.
//!
//! ```text
//! cargo run -p blazedb-bench --release -- --json            # full run, ~1 min on 2 cores
//! cargo run -p blazedb-bench --release -- --quick           # smoke test, a few seconds
//! cargo run -p blazedb-bench --release -- --only read_point,query --records 50000
//! cargo run -p blazedb-bench --release -- soak --minutes 3 --out target/soak  # see SOAK.md
//! ```
//!
//! ```text
//! main ── scenarios::registry() ─┬─ store::{InsertBatch, Metadata, ReadPoint, ...}
//!              │                  ├─ sync::{Wire, Incremental, Latency, Throughput, Initial}
//!              │                  └─ net::{Fanout, Latency1000, Idle10k, P2pTcp, PeerYjs}
//!              │                        │ BlazeDB public API    │ floor (raw rusqlite, JSON)
//!              └── report::Report ◄─────┴── Outcome {blazedb, floor, ratio, target}
//! ```
//!
//! Progress goes to stderr; stdout holds only the report (JSON with `--json`, else a table).

#![forbid(unsafe_code)]

mod floor;
mod report;
mod scenarios;
mod soak;
mod stats;
mod workload;

/// The relay binary's allocator (see the workspace `Cargo.toml`), so that the in-process
/// writer, relay and subscribers allocate as the shipped `blazedb serve` does; the floors run
/// in this process too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

use report::{Machine, Report};
use scenarios::{Config, Ctx, Sizes};

/// BlazeDB benchmark harness: every figure beside raw SQLite doing the same work.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Soak test (minutes; three nodes through a relay under churn, checks that \
                  storage and memory plateau): blazedb-bench soak --help"
)]
struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Small sizes, for a smoke test that runs in seconds.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Records in the main collection (default 100000, or 5000 with --quick).
    #[arg(long)]
    records: Option<usize>,
    /// Seed of the generated records and of the ids picked for reads and updates.
    #[arg(long, default_value_t = 0xB1A2E)]
    seed: u64,
    /// Directory for the database files (default: a new temporary directory, removed at
    /// exit). Files on tmpfs measure memory, not the disk.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only unencrypted, or only encrypted, runs.
    #[arg(long, value_parser = ["plain", "encrypted", "both"], default_value = "both")]
    modes: String,
    /// Also write the JSON report to this file (whatever stdout shows).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    // `soak` is a separate command with its own flags, not a scenario: it runs for minutes
    // and starts the release CLI's relay and sync processes.
    if std::env::args_os().nth(1).is_some_and(|a| a == "soak") {
        let args = soak::SoakArgs::parse_from(std::env::args_os().skip(1));
        return match soak::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("blazedb-bench soak: failed (see the JSON lines above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("blazedb-bench soak: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the chain of causes: what failed, then why.
            eprintln!("blazedb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let registry = scenarios::registry();
    if args.list {
        let width = registry.iter().map(|s| s.name().len()).max().unwrap_or(0);
        for s in &registry {
            println!("{:width$}  {}", s.name(), s.about());
        }
        return Ok(());
    }
    for name in &args.only {
        if !registry.iter().any(|s| s.name() == name) {
            let names: Vec<&str> = registry.iter().map(|s| s.name()).collect();
            bail!(
                "unknown scenario {name:?}; choose from {}",
                names.join(", ")
            );
        }
    }
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(n) = args.records {
        if n == 0 {
            bail!("--records must be at least 1");
        }
        sizes.records = n;
    }
    let config = Config {
        quick: args.quick,
        sizes,
        seed: args.seed,
    };
    let modes: &[bool] = match args.modes.as_str() {
        "plain" => &[false],
        "encrypted" => &[true],
        _ => &[false, true],
    };

    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut config_json = config.to_json();
    config_json.insert("modes".into(), serde_json::json!(args.modes));
    config_json.insert(
        "dir_is_temporary".into(),
        serde_json::json!(args.dir.is_none()),
    );
    let mut ctx = Ctx::new(config, &dir);

    let start = Instant::now();
    let mut outcomes = Vec::new();
    for scenario in &registry {
        if !args.only.is_empty() && !args.only.iter().any(|n| n == scenario.name()) {
            continue;
        }
        for &encrypted in modes {
            let mode = if encrypted { "encrypted" } else { "plain" };
            eprintln!(
                "[{:6.1}s] {} ({mode})",
                start.elapsed().as_secs_f64(),
                scenario.name()
            );
            let rows = scenario
                .run(&mut ctx, encrypted)
                .with_context(|| format!("scenario {} ({mode})", scenario.name()))?;
            outcomes.extend(rows);
        }
    }
    // Close every database before the directory goes away.
    drop(ctx);
    let report = Report {
        machine: Machine::current(),
        config: config_json,
        outcomes,
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    eprintln!("[{:6.1}s] done", report.elapsed_s);
    let json = serde_json::to_string_pretty(&report.to_json())?;
    if let Some(path) = &args.save {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
