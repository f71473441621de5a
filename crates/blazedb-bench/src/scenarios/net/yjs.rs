//! The fan-out workload through a peer system: Yjs documents synced by a `y-websocket` server
//! (node), installed under `target/bench-peers` by `crates/blazedb-bench/peers/install.sh`
//! (never by tests or CI). Without it the scenario reports itself skipped.
//!
//! The node side (`peers/yjs-fanout.cjs`) mirrors [`super::fanout::measure`]: a writer doc and
//! N subscriber docs, each its own `WebsocketProvider` to the server; the writer loads the
//! records (a `Y.Map` per record), everyone syncs (untimed), then the writer commits the same
//! transactions of record × 1 field updates and the clock stops when every subscriber has
//! the last one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::fanout::{measure, scratch, Params};
use super::{plain_only, runtime, skipped, NetSizes};
use crate::report::{Figure, Outcome};
use crate::scenarios::store::details;
use crate::scenarios::{Ctx, Scenario};
use crate::stats::rate_per_s;

/// The server has this long to start listening.
const SERVER_START_WAIT: Duration = Duration::from_secs(20);
/// The node client gets this long for setup and the whole workload.
const CLIENT_WAIT: Duration = Duration::from_secs(120);

/// Our fan-out beside y-websocket's.
#[derive(Debug)]
pub(super) struct PeerYjs;

impl Scenario for PeerYjs {
    fn name(&self) -> &'static str {
        "net_peer_yjs"
    }

    fn about(&self) -> &'static str {
        "the fan-out workload through Yjs + y-websocket (node), as a ratio to ours"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if !plain_only(self.name(), encrypted) {
            return Ok(Vec::new());
        }
        let peers = peers_dir();
        let server_js = peers.join("node_modules/y-websocket/bin/server.js");
        let node_ok = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !node_ok || !server_js.is_file() {
            return Ok(vec![skipped(
                self.name(),
                self.name(),
                "changes/s",
                format!(
                    "run crates/blazedb-bench/peers/install.sh (needs node and npm; installs \
                     y-websocket into {})",
                    peers.display()
                ),
            )]);
        }
        let sizes = NetSizes::of(ctx.config.quick);
        let p = Params::of(&sizes, ctx.config.seed);

        let port = free_port()?;
        let mut server = Server(
            Command::new("node")
                .arg(&server_js)
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the y-websocket server (node)")?,
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > SERVER_START_WAIT {
                bail!("the y-websocket server did not listen within {SERVER_START_WAIT:?}");
            }
            if let Some(s) = server.0.try_wait()? {
                bail!("the y-websocket server exited at once ({s})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let yjs = run_client(&peers, port, &p)?;
        drop(server);
        let yjs_ms = yjs["elapsed_ms"]
            .as_f64()
            .context("the node client printed no elapsed_ms")?;
        let yjs_rate = rate_per_s(p.changes, Duration::from_secs_f64(yjs_ms / 1e3));

        // Ours, the same workload in the same call.
        let dir = scratch(ctx, "net-peer-yjs", false)?;
        let rt = runtime()?;
        let ours = measure(&rt, &dir, &p, false)?;
        drop(rt);
        let _ = std::fs::remove_dir_all(&dir);
        let rate = ours.rate();
        Ok(vec![Outcome {
            name: "net_peer_yjs".into(),
            scenario: self.name(),
            encrypted: false,
            blazedb: Figure::rate(rate, "changes/s", ours.what(&p)),
            floor: Figure::rate(
                yjs_rate,
                "changes/s",
                format!(
                    "PEER SYSTEM (not a raw floor): the same {} changes as Yjs transactions of \
                     {} Y.Map sets, a writer doc and {} subscriber docs (one node process, one \
                     WebsocketProvider each) through a y-websocket server (another node \
                     process, in-memory docs); from the first transaction until every \
                     subscriber observed the last",
                    p.changes, p.tx_records, p.subscribers
                ),
            ),
            target: None,
            details: details(json!({
                "ratio_means": "blazedb changes/s over y-websocket's: above 1, BlazeDB is faster",
                "peer": "yjs + y-websocket (versions in peers/package.json)",
                "peer_result": yjs,
                "blazedb": ours.details(&p, Duration::ZERO),
            })),
        }])
    }
}

/// Where `install.sh` puts the peer systems: `BLAZEDB_BENCH_PEERS`, or `target/bench-peers`
/// of this workspace.
fn peers_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("BLAZEDB_BENCH_PEERS") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-peers")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Run `peers/yjs-fanout.cjs` and parse its one JSON line (its output goes to files, so a
/// chatty client cannot fill a pipe; it is killed past [`CLIENT_WAIT`]).
fn run_client(peers: &Path, port: u16, p: &Params) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/yjs-fanout.cjs");
    let out_path = peers.join("yjs-fanout.out");
    let err_path = peers.join("yjs-fanout.err");
    let mut child = Server(
        Command::new("node")
            .arg(&script)
            .args([
                format!("--url=ws://127.0.0.1:{port}"),
                format!("--subscribers={}", p.subscribers),
                format!("--records={}", p.records),
                format!("--changes={}", p.changes),
                format!("--tx={}", p.tx_records),
            ])
            .env("NODE_PATH", peers.join("node_modules"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("starting node {}", script.display()))?,
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait()? {
            break s;
        }
        if start.elapsed() > CLIENT_WAIT {
            bail!("the Yjs client did not finish within {CLIENT_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        bail!(
            "the Yjs client failed ({status}): {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&out_path)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the Yjs client printed no JSON line")?;
    serde_json::from_str(line).context("the Yjs client's JSON line")
}

/// A node process, killed when dropped.
#[derive(Debug)]
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
