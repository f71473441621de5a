//! `blazedb-bench soak`: three nodes through a relay under sustained insert/update/delete
//! churn for a bounded number of minutes, checking that file size, history rows, tombstones,
//! relay memory and client memory level off, then that every copy converged. Not part of the
//! default test run: it takes minutes. See `crates/blazedb-bench/SOAK.md`.
//!
//! ```text
//!  blazedb serve (child) ◄══ ws ══ blazedb sync node0.db --watch (child) ┐
//!        │ relay.db      ◄══ ws ══ blazedb sync node1.db --watch (child) ├ same files
//!        │               ◄══ ws ══ blazedb sync node2.db --watch (child) ┘     │
//!        │                                                                     │
//!  this process: churn threads (library handles on node*.db: insert/update/delete, checkpoint,
//!                GC) ─ sampler (stats of every file, /proc RSS of every child) ─► soak.csv
//!                ─ at the end: plateau verdicts (JSON lines), convergence check, soak.png
//! ```
//!
//! ```text
//! cargo build --release -p blazedb-cli -p blazedb-bench
//! target/release/blazedb-bench soak --minutes 3 --out target/soak
//! ```

mod churn;
mod converge;
mod gc;
mod limits;
mod plateau;
mod plot;
mod procs;
mod sample;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blazedb::{Database, HistoryRetention, OpenOptions};
use clap::Parser;
use serde_json::{json, Value as Json};

use churn::{Node, NodeTotals, Rates};
use limits::*;
use procs::{Child, Cli, RelaySpec};
use sample::{CsvWriter, Metric, Sample};

/// The collection every node churns.
pub const COLLECTION: &str = "soak";
/// Marks a data directory as the soak's own, so a rerun may delete it.
const MARKER: &str = ".blazedb-soak";

/// Soak test: three nodes through a relay under sustained churn; exits 1 unless file size,
/// history rows, tombstones and process memory plateau and every copy converges.
#[derive(Debug, Parser)]
#[command(name = "blazedb-bench soak", version)]
pub struct SoakArgs {
    /// How long the churn runs, in minutes (1–120).
    #[arg(long, default_value_t = 3)]
    pub minutes: u64,
    /// Run this many seconds instead of --minutes (at least 15): a smoke run of the harness,
    /// too short for a meaningful verdict.
    #[arg(long, hide = true)]
    pub seconds: Option<u64>,
    /// Directory for soak.csv, soak.png, summary.json, logs and the databases (in data/,
    /// replaced by each run).
    #[arg(long, default_value = "target/soak")]
    pub out: PathBuf,
    /// Client databases, each with its own `blazedb sync` process.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Live records each node keeps.
    #[arg(long, default_value_t = 2000)]
    pub records: usize,
    /// Inserts per second per node, and as many deletes.
    #[arg(long, default_value_t = 20)]
    pub inserts_per_s: u32,
    /// Updates per second per node (two or three fields each).
    #[arg(long, default_value_t = 100)]
    pub updates_per_s: u32,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    pub sample_every: u64,
    /// Seconds between GC runs: the driver's on each client, `--gc-interval` on the relay.
    #[arg(long, default_value_t = 5)]
    pub gc_every: u64,
    /// History retention of the clients, in seconds (history is an audit trail: it is bounded
    /// by its retention, not by GC alone).
    #[arg(long, default_value_t = 60)]
    pub history_retention_s: u64,
    /// Largest allowed growth from the middle to the last third (0.10: 10%).
    #[arg(long, default_value_t = 0.10)]
    pub tolerance: f64,
    /// Encrypt every database (SQLCipher) with a generated password.
    #[arg(long)]
    pub encrypted: bool,
    /// The blazedb CLI to run (default: `blazedb` beside this executable).
    #[arg(long, value_name = "PATH")]
    pub cli: Option<PathBuf>,
    /// Seed of the workload's choices.
    #[arg(long, default_value_t = 0x50A6)]
    pub seed: u64,
}

impl SoakArgs {
    fn duration(&self) -> Result<Duration> {
        match self.seconds {
            Some(s) if s < SECONDS_MIN => bail!("--seconds must be at least {SECONDS_MIN}"),
            Some(s) if s > MINUTES_MAX * 60 => {
                bail!("--seconds must be at most {}", MINUTES_MAX * 60)
            }
            Some(s) => Ok(Duration::from_secs(s)),
            None if !(MINUTES_MIN..=MINUTES_MAX).contains(&self.minutes) => {
                bail!("--minutes must be between {MINUTES_MIN} and {MINUTES_MAX}")
            }
            None => Ok(Duration::from_secs(self.minutes * 60)),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=NODES_MAX).contains(&self.nodes) {
            bail!("--nodes must be between 1 and {NODES_MAX}");
        }
        if !(1..=RECORDS_MAX).contains(&self.records) {
            bail!("--records must be between 1 and {RECORDS_MAX}");
        }
        if self.inserts_per_s > RATE_MAX || self.updates_per_s > RATE_MAX {
            bail!("--inserts-per-s and --updates-per-s must be at most {RATE_MAX}");
        }
        if self.sample_every == 0 || self.gc_every == 0 {
            bail!("--sample-every and --gc-every must be at least 1 second");
        }
        if !(self.tolerance >= 0.0 && self.tolerance.is_finite()) {
            bail!("--tolerance must be a non-negative number, e.g. 0.10 for 10%");
        }
        let duration = self.duration()?;
        if duration.as_secs() / self.sample_every < SAMPLES_MIN as u64 {
            bail!(
                "a {}s run with --sample-every {} gives fewer than {SAMPLES_MIN} samples: sample \
                 more often or run longer",
                duration.as_secs(),
                self.sample_every
            );
        }
        Ok(())
    }
}

/// The WAL verdict: every node's WAL stays within what the store lets it keep. SQLite
/// truncates the WAL to `WAL_FILE_BYTES_KEPT` after a checkpoint and checkpoints inside a
/// commit once it holds `WAL_AUTOCHECKPOINT_PAGES` pages; between those a WAL file keeps its
/// high-water mark by design, so its size is judged against the larger bound, not for a
/// plateau (a checkpoint starved by a reader that never lets go would break it).
fn wal_bound(samples: &[Sample], names: &[String]) -> serde_json::Value {
    let pages = u64::from(blazedb::limits::WAL_AUTOCHECKPOINT_PAGES) * WAL_PAGE_BYTES;
    let bound = pages.max(blazedb::limits::WAL_FILE_BYTES_KEPT as u64);
    let mut per_node = serde_json::Map::new();
    let mut pass = true;
    for name in names {
        let max = samples
            .iter()
            .filter(|s| &s.node == name)
            .map(|s| s.wal_bytes)
            .max()
            .unwrap_or(0);
        pass &= max <= bound;
        per_node.insert(name.clone(), json!({"max": max, "pass": max <= bound}));
    }
    json!({
        "metric": "wal_bytes_bound",
        "judged": true,
        "pass": pass,
        "bound": bound,
        "nodes": per_node,
    })
}

/// SQLite's page size in a WAL frame (the store's default page size) plus the frame header.
const WAL_PAGE_BYTES: u64 = 4096 + 24;

/// Run the soak. Returns whether it passed (every judged metric plateaued, the copies
/// converged, no client-side GC failed); the verdicts are printed as JSON lines on stdout.
/// A child that dies or a write that fails ends the soak with an error.
pub fn run(args: &SoakArgs) -> Result<bool> {
    args.validate()?;
    let duration = args.duration()?;
    let cli = Cli::locate(args.cli.as_deref())?;
    let out = &args.out;
    let data = fresh_data_dir(out)?;
    let token = format!("soak-{}", uuid::Uuid::new_v4().simple());
    let password = args
        .encrypted
        .then(|| format!("soak-{}", uuid::Uuid::new_v4().simple()));
    let password = password.as_deref();
    let relay_gc = cli.serve_has_gc_interval.then_some(args.gc_every);
    if relay_gc.is_none() {
        progress(&format!(
            "{} serve has no --gc-interval: the relay runs without periodic GC",
            cli.path.display()
        ));
    }
    let started = Instant::now();

    let relay_dir = data.join("relay");
    let mut relay = procs::start_relay(
        &cli,
        &RelaySpec {
            data: &relay_dir,
            log: &out.join("relay.log"),
            token: &token,
            gc_interval_s: relay_gc,
            history_retention_s: args.history_retention_s,
            password,
        },
    )?;
    progress(&format!("relay listening at {}", relay.sync_url));

    let open_options = OpenOptions {
        password: password.map(str::to_owned),
        history: HistoryRetention {
            max_age_ms: Some(args.history_retention_s * 1000),
            max_entries: None,
        },
        ..OpenOptions::default()
    };
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let name = format!("node{i}");
        let mut node = Node::open(
            &name,
            i,
            &data.join(format!("{name}.db")),
            open_options.clone(),
            args.seed,
        )?;
        node.seed(args.records)?;
        nodes.push(node);
    }
    let mut clients: Vec<Child> = nodes
        .iter()
        .map(|n| {
            procs::start_sync(
                &cli,
                &n.name,
                n.db.path(),
                &relay.sync_url,
                &token,
                password,
                out,
            )
        })
        .collect::<Result<_>>()?;
    let expected = (args.nodes * args.records) as u64;
    wait_for_initial_sync(&nodes, expected, &mut relay.child, &mut clients)?;
    // Opened only now: the relay's store has the collection, so this handle knows it.
    let relay_db = Database::open(
        &relay.db_path,
        OpenOptions {
            create: false,
            ..open_options.clone()
        },
    )
    .with_context(|| format!("opening the relay's store {}", relay.db_path.display()))?;
    progress(&format!(
        "{} records on every node after {:.1}s; churning for {}s",
        expected,
        started.elapsed().as_secs_f64(),
        duration.as_secs()
    ));

    let rates = Rates {
        inserts_per_s: args.inserts_per_s,
        updates_per_s: args.updates_per_s,
        gc_every_s: args.gc_every,
    };
    let handles: Vec<(String, std::sync::Arc<Database>)> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.db.clone()))
        .collect();
    let mut names = vec!["relay".to_owned()];
    names.extend(handles.iter().map(|h| h.0.clone()));
    let csv_path = out.join("soak.csv");
    let mut csv = CsvWriter::create(&csv_path)?;
    let stop = AtomicBool::new(false);
    let mut samples: Vec<Sample> = Vec::new();

    let (totals, soak_error) = std::thread::scope(|s| {
        let drivers: Vec<_> = nodes
            .into_iter()
            .map(|node| {
                let stop = &stop;
                s.spawn(move || node.churn(rates, stop))
            })
            .collect();
        let r = sample_loop(SampleLoop {
            duration,
            every: Duration::from_secs(args.sample_every),
            relay: (&relay_db, &mut relay.child),
            clients: &handles,
            children: &mut clients,
            drivers: &drivers,
            csv: &mut csv,
            samples: &mut samples,
        });
        stop.store(true, Ordering::Relaxed);
        let totals: Vec<Result<NodeTotals>> = drivers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a churn thread panicked"))
            })
            .collect();
        (totals, r.err())
    });
    let totals: Vec<NodeTotals> = totals
        .into_iter()
        .zip(&handles)
        .map(|(t, h)| t.with_context(|| format!("churn on {}", h.0)))
        .collect::<Result<_>>()?;
    if let Some(e) = soak_error {
        return Err(e);
    }
    progress("churn stopped; waiting for the copies to converge");

    let mut compared: Vec<(&str, &Database)> = handles
        .iter()
        .map(|(n, db)| (n.as_str(), db.as_ref()))
        .collect();
    compared.push(("relay", &relay_db));
    let convergence = converge::wait(&compared)?;
    progress(&format!(
        "converged: {} after {:.1}s ({} live records)",
        convergence.converged, convergence.seconds, convergence.live_records
    ));

    // Stop the children (SIGTERM: they close their databases and print totals).
    let mut exits = serde_json::Map::new();
    for c in clients.iter_mut().chain(std::iter::once(&mut relay.child)) {
        let status = c.stop()?;
        exits.insert(
            c.name.clone(),
            json!(status.map_or("killed after SIGTERM timeout".to_owned(), |s| s.to_string())),
        );
    }

    let gc_errors: u64 = totals.iter().map(|t| t.gc_errors).sum();
    let mut all_pass = convergence.converged && gc_errors == 0;
    let mut metrics_json = Vec::new();
    for metric in Metric::ALL {
        let mut per_node = serde_json::Map::new();
        let mut pass = true;
        for name in &names {
            let series: Vec<&Sample> = samples.iter().filter(|s| &s.node == name).collect();
            match plateau::judge(&series, metric, args.tolerance) {
                Some(v) => {
                    pass &= v.pass;
                    per_node.insert(name.clone(), v.to_json());
                }
                None => {
                    pass = false;
                    per_node.insert(
                        name.clone(),
                        json!({"pass": false, "error": "too few samples"}),
                    );
                }
            }
        }
        if metric.judged() {
            all_pass &= pass;
        }
        let line = json!({
            "metric": metric.name(),
            "judged": metric.judged(),
            "pass": pass,
            "tolerance": args.tolerance,
            "nodes": per_node,
        });
        println!("{line}");
        metrics_json.push(line);
    }

    let wal = wal_bound(&samples, &names);
    all_pass &= wal["pass"].as_bool().unwrap_or(false);
    println!("{wal}");
    metrics_json.push(wal);

    let png_path = out.join("soak.png");
    let title = format!(
        "BlazeDB soak: {} nodes via relay, {} live/node, {}+{}+{} ins/upd/del per s per node, GC every {}s{}",
        args.nodes,
        args.records,
        args.inserts_per_s,
        args.updates_per_s,
        args.inserts_per_s,
        args.gc_every,
        if relay_gc.is_some() { "" } else { " (clients only)" }
    );
    let font = plot::render(&png_path, &samples, &names, &title)?;
    if font.is_none() {
        progress("no TrueType font found: soak.png has no text (see SOAK.md for its layout)");
    }

    let summary = json!({
        "soak": if all_pass { "pass" } else { "fail" },
        "churn_s": duration.as_secs(),
        "wall_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "config": {
            "nodes": args.nodes,
            "records_per_node": args.records,
            "inserts_per_s": args.inserts_per_s,
            "deletes_per_s": args.inserts_per_s,
            "updates_per_s": args.updates_per_s,
            "sample_every_s": args.sample_every,
            "gc_every_s": args.gc_every,
            "relay_gc_interval_s": relay_gc,
            "client_history_retention_s": args.history_retention_s,
            "tolerance": args.tolerance,
            "encrypted": args.encrypted,
            "cli": cli.path.display().to_string(),
        },
        "convergence": convergence.to_json(),
        "client_gc_errors": gc_errors,
        "drivers": handles.iter().zip(&totals).map(|((n, _), t)| (n.clone(), totals_json(t)))
            .collect::<serde_json::Map<_, _>>(),
        "exits": exits,
        "csv": csv_path.display().to_string(),
        "png": png_path.display().to_string(),
        "font": font.map(|p| p.display().to_string()),
        "metrics": metrics_json,
    });
    std::fs::write(
        out.join("summary.json"),
        format!("{}\n", serde_json::to_string_pretty(&summary)?),
    )?;
    let mut last = summary.clone();
    if let Some(o) = last.as_object_mut() {
        o.remove("metrics");
    }
    println!("{last}");
    Ok(all_pass)
}

struct SampleLoop<'a, 'scope> {
    duration: Duration,
    every: Duration,
    relay: (&'a Database, &'a mut Child),
    clients: &'a [(String, std::sync::Arc<Database>)],
    children: &'a mut [Child],
    drivers: &'a [std::thread::ScopedJoinHandle<'scope, Result<NodeTotals>>],
    csv: &'a mut CsvWriter,
    samples: &'a mut Vec<Sample>,
}

/// Sample every node every `every` until `duration` has passed; fail at once if a child
/// exits or a churn thread stops.
fn sample_loop(l: SampleLoop<'_, '_>) -> Result<()> {
    let start = Instant::now();
    let mut next = Duration::ZERO;
    loop {
        let t = start.elapsed();
        if t < next {
            std::thread::sleep((next - t).min(Duration::from_millis(200)));
            check_alive(l.relay.1, l.children, l.drivers)?;
            continue;
        }
        let time_s = t.as_secs_f64();
        let mut round = vec![sample::take(time_s, "relay", l.relay.0, l.relay.1.pid())?];
        for ((name, db), child) in l.clients.iter().zip(l.children.iter()) {
            round.push(sample::take(time_s, name, db, child.pid())?);
        }
        l.csv.write(&round)?;
        let line: Vec<String> = round
            .iter()
            .map(|s| {
                format!(
                    "{} {:.1}MiB h{} t{} {}MiB",
                    s.node,
                    s.file_bytes as f64 / 1048576.0,
                    s.history_rows,
                    s.tombstones,
                    s.rss_kb / 1024
                )
            })
            .collect();
        progress(&format!("t={time_s:5.1}s  {}", line.join(" | ")));
        l.samples.extend(round);
        if t >= l.duration {
            return Ok(());
        }
        next = (next + l.every).min(l.duration);
    }
}

fn check_alive(
    relay: &mut Child,
    children: &mut [Child],
    drivers: &[std::thread::ScopedJoinHandle<'_, Result<NodeTotals>>],
) -> Result<()> {
    for c in std::iter::once(relay).chain(children.iter_mut()) {
        if let Some(status) = c.exited()? {
            bail!(
                "{} (pid {}) exited during the soak ({status}); see its log in the --out directory",
                c.name,
                c.pid()
            );
        }
    }
    if drivers.iter().any(|d| d.is_finished()) {
        bail!("a churn thread stopped early (its error follows)");
    }
    Ok(())
}

/// Wait until every client (and so the relay) holds every seeded record.
fn wait_for_initial_sync(
    nodes: &[Node],
    expected: u64,
    relay: &mut Child,
    clients: &mut [Child],
) -> Result<()> {
    let start = Instant::now();
    loop {
        let counts = nodes
            .iter()
            .map(|n| n.db.count(COLLECTION))
            .collect::<blazedb::Result<Vec<u64>>>()?;
        if counts.iter().all(|&c| c == expected) {
            return Ok(());
        }
        check_alive(relay, clients, &[])?;
        if start.elapsed() > INITIAL_SYNC_WAIT {
            bail!(
                "the seeded records did not reach every node within {INITIAL_SYNC_WAIT:?} \
                 (counts {counts:?}, expected {expected}); see the *.sync.log files"
            );
        }
        std::thread::sleep(CONVERGE_POLL);
    }
}

/// `OUT/data`, emptied: removed only if a previous soak made it (it holds [`MARKER`]).
fn fresh_data_dir(out: &Path) -> Result<PathBuf> {
    let data = out.join("data");
    if data.exists() {
        if !data.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by the soak: choose another --out",
                data.display()
            );
        }
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("removing the previous soak's {}", data.display()))?;
    }
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    std::fs::write(
        data.join(MARKER),
        "made by blazedb-bench soak; replaced by each run\n",
    )?;
    Ok(data)
}

fn totals_json(t: &NodeTotals) -> Json {
    json!({
        "inserts": t.inserts,
        "updates": t.updates,
        "deletes": t.deletes,
        "inserts_per_s": (t.inserts as f64 / t.elapsed_s.max(1e-9) * 10.0).round() / 10.0,
        "updates_per_s": (t.updates as f64 / t.elapsed_s.max(1e-9) * 10.0).round() / 10.0,
        "gc_runs": t.gc_runs,
        "gc_rows_removed": t.gc_removed,
        "gc_errors": t.gc_errors,
        "gc_first_error": t.gc_first_error,
        "behind_s_max": (t.behind_s_max * 10.0).round() / 10.0,
    })
}

fn progress(msg: &str) {
    eprintln!("[soak] {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> SoakArgs {
        SoakArgs::parse_from(std::iter::once("soak").chain(extra.iter().copied()))
    }

    fn wal_sample(node: &str, wal_bytes: u64) -> Sample {
        Sample {
            time_s: 0.0,
            node: node.into(),
            file_bytes: wal_bytes + 1_000_000,
            history_rows: 0,
            tombstones: 0,
            rss_kb: 0,
            live_records: 0,
            feed_rows: 0,
            wal_bytes,
        }
    }

    #[test]
    fn the_wal_is_judged_against_what_the_store_keeps() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let kept = blazedb::limits::WAL_FILE_BYTES_KEPT as u64;
        let within = [wal_sample("a", 20 << 20), wal_sample("b", kept)];
        let v = wal_bound(&within, &names);
        assert_eq!(v["pass"], true, "{v}");
        assert_eq!(v["nodes"]["b"]["max"], kept);
        let beyond = [wal_sample("a", 20 << 20), wal_sample("b", 2 * kept)];
        let v = wal_bound(&beyond, &names);
        assert_eq!(v["pass"], false, "{v}");
        assert_eq!(v["nodes"]["a"]["pass"], true);
        assert_eq!(v["nodes"]["b"]["pass"], false);
        // The database file alone is what must plateau; the sum is reported.
        assert!(Metric::DbBytes.judged() && !Metric::FileBytes.judged());
        assert_eq!(Metric::DbBytes.value(&within[0]), 1_000_000);
    }

    #[test]
    fn defaults_are_valid_and_bounds_are_enforced() {
        args(&[]).validate().unwrap();
        assert_eq!(args(&[]).duration().unwrap(), Duration::from_secs(180));
        for bad in [
            &["--minutes", "0"][..],
            &["--minutes", "121"],
            &["--seconds", "5"],
            &["--nodes", "0"],
            &["--records", "0"],
            &["--tolerance=-1"],
            &["--sample-every", "0"],
            &["--minutes", "1", "--sample-every", "20"],
        ] {
            let e = args(bad).validate().unwrap_err().to_string();
            assert!(e.contains("--"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_the_soaks_own_data_directory_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = fresh_data_dir(dir.path()).unwrap();
        std::fs::write(data.join("node0.db"), b"old").unwrap();
        let again = fresh_data_dir(dir.path()).unwrap();
        assert!(!again.join("node0.db").exists());
        let foreign = tempfile::tempdir().unwrap();
        std::fs::create_dir(foreign.path().join("data")).unwrap();
        std::fs::write(foreign.path().join("data/keep"), b"x").unwrap();
        let e = fresh_data_dir(foreign.path()).unwrap_err().to_string();
        assert!(e.contains("not made by the soak"), "{e}");
        assert!(foreign.path().join("data/keep").exists());
    }
}
