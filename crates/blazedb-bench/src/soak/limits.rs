//! Every bound of the soak, named, in one place: how long it may run, how long it waits for
//! children and for convergence, how fast the driver ticks.

use std::time::Duration;

/// Shortest soak: a plateau needs a middle and a last third of some length.
pub const MINUTES_MIN: u64 = 1;
/// Longest soak, so the command is always bounded.
pub const MINUTES_MAX: u64 = 120;
/// Shortest `--seconds` (a smoke run of the harness itself, not a verdict on growth).
pub const SECONDS_MIN: u64 = 15;
/// Most nodes (client databases).
pub const NODES_MAX: usize = 16;
/// Most live records per node.
pub const RECORDS_MAX: usize = 1_000_000;
/// Most inserts or updates per second per node.
pub const RATE_MAX: u32 = 10_000;

/// How long the relay may take to print its "listening" line.
pub const RELAY_START_WAIT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it is killed.
pub const CHILD_EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long the seeded records may take to reach every node before the churn starts.
pub const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(120);
/// How long the nodes may take to converge after the churn stops.
pub const CONVERGE_WAIT: Duration = Duration::from_secs(60);
/// How often convergence is checked while waiting.
pub const CONVERGE_POLL: Duration = Duration::from_millis(500);

/// The churn driver's tick: it sleeps this long between bursts of due work.
pub const CHURN_TICK: Duration = Duration::from_millis(20);
/// How often the driver checkpoints its WAL (as an application writing steadily should).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Seconds of backlog after which the driver drops due work instead of catching up.
pub const BEHIND_S_MAX: f64 = 5.0;
/// Records per transaction when seeding.
pub const SEED_BATCH: usize = 1_000;

/// Samples below which no plateau verdict is given (too few to compare thirds).
pub const SAMPLES_MIN: usize = 6;
