//! Scenarios and what they share: sizes, the run context, and the registry.
//!
//! A scenario runs once per encryption mode and returns rows ([`Outcome`]s), each a BlazeDB
//! figure beside its floor measured in the same call. To add one, implement [`Scenario`] in a
//! new file here and list it in [`registry`]; any state it wants to share between scenarios
//! goes in a field of [`Ctx`].
//!
//! - [`store`]: the embedded store against raw SQLite.
//! - [`sync`]: replication between two databases against raw SQLite plus an in-process
//!   channel, and wire sizes against a JSON encoding of the same changes.
//! - [`net`]: sync over real sockets (relay fan-out, 1,000 clients, idle sessions, TCP peer to
//!   peer) against raw-socket floors, and a peer system (y-websocket) where installed.
//! - [`bootstrap`]: a new client's first sync from a relay over WebSocket (snapshot) against a
//!   local bulk load, selective sync's bytes against a full replica's, and sync metadata per
//!   live record under delete churn with GC.

pub mod bootstrap;
pub mod net;
pub mod store;
pub mod sync;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::report::Outcome;

/// The password of every encrypted file (BlazeDB's and the floor's: the same SQLCipher key).
pub const PASSWORD: &str = "blazedb-bench-password";

/// How much work each scenario does.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Records in the collection that batched insert writes and reads, queries, updates and
    /// the metadata figure use.
    pub records: usize,
    /// Single-record committed writes.
    pub single_writes: usize,
    /// Point reads measured (after as many untimed warm-up reads).
    pub reads: usize,
    /// Indexed equality queries measured.
    pub indexed_queries: usize,
    /// Unindexed (full-scan) queries measured.
    pub scan_queries: usize,
    /// Committed one-field updates.
    pub updates: usize,
    /// Records in the small file of the open scenario.
    pub open_small: usize,
    /// Records in the large file of the open scenario.
    pub open_large: usize,
    /// Opens measured per file.
    pub open_reps: usize,
    /// Timed work is split into this many rounds that alternate between BlazeDB and the
    /// floor, so a burst of noise on the machine hits both.
    pub rounds: usize,
    /// New 5-field records in the wire-size batch (one transaction).
    pub sync_batch_records: usize,
    /// One-field updates whose CHANGES frames are measured in a warmed-up session.
    pub sync_wire_updates: usize,
    /// Records of the synced pair behind the incremental, latency and throughput figures.
    pub sync_records: usize,
    /// Commits timed from commit on A to readable on B.
    pub sync_latency_commits: usize,
    /// How long A keeps writing in the throughput scenario, in ms (B's catch-up after it is
    /// timed too).
    pub sync_throughput_ms: u64,
    /// Records updated (one field each) per transaction in the throughput scenario.
    pub sync_throughput_tx_records: usize,
    /// Records of the initial-sync scenario.
    pub sync_initial_records: usize,
}

impl Sizes {
    /// The default run: the sizes of the issue (about a minute on 2 cores, half of it sync).
    pub fn full() -> Sizes {
        Sizes {
            records: 100_000,
            single_writes: 2_000,
            reads: 20_000,
            indexed_queries: 200,
            scan_queries: 10,
            updates: 2_000,
            open_small: 1_000,
            open_large: 1_000_000,
            open_reps: 15,
            rounds: 4,
            sync_batch_records: 1_000,
            sync_wire_updates: 200,
            sync_records: 10_000,
            sync_latency_commits: 2_000,
            sync_throughput_ms: 3_000,
            sync_throughput_tx_records: 100,
            sync_initial_records: 100_000,
        }
    }

    /// A smoke test that finishes in seconds.
    pub fn quick() -> Sizes {
        Sizes {
            records: 5_000,
            single_writes: 200,
            reads: 2_000,
            indexed_queries: 20,
            scan_queries: 3,
            updates: 200,
            open_small: 1_000,
            open_large: 100_000,
            open_reps: 3,
            rounds: 2,
            sync_batch_records: 1_000,
            sync_wire_updates: 50,
            sync_records: 2_000,
            sync_latency_commits: 200,
            sync_throughput_ms: 300,
            sync_throughput_tx_records: 100,
            sync_initial_records: 5_000,
        }
    }

    fn to_json(&self) -> Map<String, Value> {
        let v = json!({
            "records": self.records,
            "single_writes": self.single_writes,
            "reads": self.reads,
            "indexed_queries": self.indexed_queries,
            "scan_queries": self.scan_queries,
            "updates": self.updates,
            "open_small": self.open_small,
            "open_large": self.open_large,
            "open_reps": self.open_reps,
            "rounds": self.rounds,
            "sync_batch_records": self.sync_batch_records,
            "sync_wire_updates": self.sync_wire_updates,
            "sync_records": self.sync_records,
            "sync_latency_commits": self.sync_latency_commits,
            "sync_throughput_ms": self.sync_throughput_ms,
            "sync_throughput_tx_records": self.sync_throughput_tx_records,
            "sync_initial_records": self.sync_initial_records,
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("json! of an object literal"),
        }
    }
}

/// What a run was asked for.
#[derive(Clone, Debug)]
pub struct Config {
    /// Quick (smoke-test) sizes.
    pub quick: bool,
    /// The sizes.
    pub sizes: Sizes,
    /// Seed of the record generator and of the id choices.
    pub seed: u64,
}

impl Config {
    /// The configuration as JSON, for the report.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("quick".into(), json!(self.quick));
        m.insert("seed".into(), json!(self.seed));
        m.extend(self.sizes.to_json());
        m
    }
}

/// The state of a run, handed to every scenario.
#[derive(Debug)]
pub struct Ctx {
    /// What the run was asked for.
    pub config: Config,
    dir: PathBuf,
    /// Files and connections the store scenarios share.
    pub store: store::Shared,
}

impl Ctx {
    /// A context whose files live under `dir`.
    pub fn new(config: Config, dir: &Path) -> Ctx {
        Ctx {
            config,
            dir: dir.to_path_buf(),
            store: store::Shared::default(),
        }
    }

    /// A path for a scenario's file, distinct per name and mode.
    pub fn path(&self, name: &str, encrypted: bool) -> PathBuf {
        let mode = if encrypted { "enc" } else { "plain" };
        self.dir.join(format!("{name}-{mode}.db"))
    }

    /// The password for a mode.
    pub fn password(encrypted: bool) -> Option<&'static str> {
        encrypted.then_some(PASSWORD)
    }
}

/// A benchmark scenario.
pub trait Scenario {
    /// Its name (what `--only` selects).
    fn name(&self) -> &'static str;
    /// What it measures, in a line.
    fn about(&self) -> &'static str;
    /// Measure BlazeDB and the floor, encrypted or not, and return the rows.
    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>>;
}

/// Every scenario, in run order. Order matters for cost, not for correctness: later
/// scenarios reuse the collection that batched insert built (and build it if it did not run),
/// and the metadata figure is taken before updates and indexes change the files. The sync
/// scenarios build their own files.
pub fn registry() -> Vec<Box<dyn Scenario>> {
    let mut all = store::scenarios();
    all.extend(sync::scenarios());
    all.extend(net::scenarios());
    all.extend(bootstrap::scenarios());
    all
}
