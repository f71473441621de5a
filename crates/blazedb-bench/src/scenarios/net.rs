//! Networked sync over real sockets on 127.0.0.1, beside raw-socket floors (and a peer system,
//! Yjs's `y-websocket`, where the benchmark script installed it).
//!
//! - `net_fanout`: one writer → relay (WebSocket) → 10 subscribers, each its own file: field
//!   changes per second delivered to every subscriber, beside a raw TCP hub forwarding the same
//!   number of frames of the same size to 10 readers.
//! - `net_latency_1000`: 1,000 connected clients, one writer committing 100 changes/s: commit
//!   → applied at every client, p50/p99, beside a raw TCP hub sending a frame of the same size
//!   to 1,000 readers at the same rate.
//! - `net_idle_10k`: relay memory per idle authenticated session (the relay is a child process,
//!   `blazedb serve`, measured through /proc), beside a minimal tokio server holding idle TCP
//!   connections.
//! - `net_p2p_tcp`: `blazedb listen`-style TCP peer to peer, commit → applied p50/p99, beside a
//!   raw TCP ping-pong of a frame of the same size.
//! - `net_peer_yjs`: the fan-out workload through `y-websocket` (installed by
//!   `crates/blazedb-bench/peers/install.sh`), as a ratio to ours measured in the same call.
//!
//! ```text
//!   writer ══ws══► relay (blazedb_relay::Relay, in-process, own runtime) ══ws══► subscriber × N
//!   floor:  writer ──tcp──► hub task ──tcp──► reader × N   (same frames, same sizes)
//! ```
//!
//! The network scenarios run once, unencrypted (in encrypted mode they return no rows, except
//! `net_fanout` and `net_p2p_tcp`, whose few files are cheap to encrypt): opening 1,000
//! SQLCipher files would measure key derivation, not the network. Every relay uses the
//! default limits of `blazedb serve` (rate limit included) and a static token.

mod clients;
mod fanout;
mod floor;
mod frames;
mod idle;
mod latency;
mod p2p;
mod yjs;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tokio::runtime::Runtime;

use super::store::details;
use super::Scenario;
use crate::report::{Figure, Outcome};

/// The relay's static token in every network scenario.
const TOKEN: &str = "blazedb-bench-token";
/// Tokio workers of the process's runtime: the machine the targets are set for has 2 cores.
const RUNTIME_WORKERS: usize = 2;
/// File descriptors a scenario keeps free for everything else (files, the runtime, stdio).
const FD_MARGIN: u64 = 256;

/// The network scenarios, in run order.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(fanout::Fanout),
        Box::new(latency::Latency1000),
        Box::new(idle::Idle10k),
        Box::new(p2p::P2pTcp),
        Box::new(yjs::PeerYjs),
    ]
}

/// How much work each network scenario does (full run, or `--quick`).
#[derive(Clone, Debug)]
struct NetSizes {
    /// Subscribers of the fan-out scenarios.
    subscribers: usize,
    /// Records the fan-out writer updates (one field per record per change).
    fanout_records: usize,
    /// Field changes the fan-out writer commits, timed.
    fanout_changes: usize,
    /// Records updated per fan-out transaction.
    fanout_tx_records: usize,
    /// Connected clients of the latency scenario.
    latency_clients: usize,
    /// The latency writer's commits per second.
    latency_rate_per_s: u64,
    /// How long the latency writer commits, in ms.
    latency_ms: u64,
    /// Idle authenticated sessions held open against the relay.
    idle_connections: usize,
    /// How long the idle sessions are held after the last one connected, in ms: longer than
    /// the relay's ping interval, so every session has pinged and been answered once.
    idle_hold_ms: u64,
    /// Records of the peer-to-peer pair.
    p2p_records: usize,
    /// Commits timed from commit on A to applied on B, peer to peer.
    p2p_commits: usize,
}

impl NetSizes {
    fn of(quick: bool) -> NetSizes {
        if quick {
            NetSizes {
                subscribers: 10,
                fanout_records: 2_000,
                fanout_changes: 20_000,
                fanout_tx_records: 100,
                latency_clients: 100,
                latency_rate_per_s: 100,
                latency_ms: 2_000,
                idle_connections: 1_000,
                idle_hold_ms: 1_000,
                p2p_records: 1_000,
                p2p_commits: 200,
            }
        } else {
            NetSizes {
                subscribers: 10,
                fanout_records: 10_000,
                fanout_changes: 300_000,
                fanout_tx_records: 100,
                latency_clients: 1_000,
                latency_rate_per_s: 100,
                latency_ms: 10_000,
                idle_connections: 10_000,
                idle_hold_ms: blazedb::limits::PING_INTERVAL_MS_DEFAULT + 1_000,
                p2p_records: 10_000,
                p2p_commits: 2_000,
            }
        }
    }
}

/// A multi-threaded runtime of [`RUNTIME_WORKERS`] workers: every client session and the
/// floors' socket tasks share it (the committing thread is the benchmark's own; the relay
/// has a runtime of its own, see `clients::LocalRelay`).
fn runtime() -> Result<Runtime> {
    named_runtime("tokio-runtime-worker", RUNTIME_WORKERS)
}

/// A multi-threaded runtime of `workers` threads named `name`: what stands for another
/// process or device in a scenario (the relay, a writer) gets one of its own.
fn named_runtime(name: &str, workers: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} tokio runtime"))
}

/// Raise the soft limit on open files to the hard limit (children inherit it, so a relay
/// started after this gets it too) and fail, saying what to do, when `needed` does not fit.
/// Returns `(soft, hard)` after raising.
fn raise_fd_limit(needed: u64) -> Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft < hard {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: lim.maximum,
            },
        )
        .context("raising the soft limit on open files (RLIMIT_NOFILE) to the hard limit")?;
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now < needed + FD_MARGIN {
        bail!(
            "this scenario needs about {} open files but the limit is {now} (hard limit {hard}): \
             raise it (e.g. `ulimit -Hn {}` as root, or LimitNOFILE= in a systemd unit) or run \
             with --quick",
            needed + FD_MARGIN,
            needed + FD_MARGIN
        );
    }
    Ok((now, hard))
}

/// Poll `done` every `every` until it holds; fails with `what` after `limit`.
fn wait_until(
    limit: Duration,
    every: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() >= limit {
            bail!("{what} did not happen within {limit:?}");
        }
        std::thread::sleep(every);
    }
    Ok(())
}

/// A row for a scenario that could not run here, saying why and what to do. Its figures are
/// NaN (null in JSON) and it has no target, so it never counts as met or missed.
fn skipped(name: &str, scenario: &'static str, unit: &'static str, reason: String) -> Outcome {
    eprintln!("  {name}: skipped: {reason}");
    Outcome {
        name: name.to_owned(),
        scenario,
        encrypted: false,
        blazedb: Figure::cost(f64::NAN, unit, format!("skipped: {reason}")),
        floor: Figure::cost(f64::NAN, unit, "skipped"),
        target: None,
        details: details(json!({ "skipped": reason })),
    }
}

/// The network scenarios that open many files run unencrypted only (see the module docs).
fn plain_only(name: &str, encrypted: bool) -> bool {
    if encrypted {
        eprintln!("  {name}: runs unencrypted only (see scenarios/net.rs); no encrypted rows");
    }
    !encrypted
}
