//! Relay memory per idle authenticated session: `blazedb serve` as a child process (so the
//! clients' memory does not count), its VmRSS before and while N sessions are held open.
//!
//! Each client is a WebSocket with the token as a bearer credential that speaks the protocol
//! through the core crate's codecs, without a database ([`super::frames`]): HELLO (token inside too), SUBSCRIBE(0), CAUGHT_UP(0) when the
//! relay subscribes, PONG to every PING — an authenticated, caught-up, idle session as the
//! relay sees it, without a database on the client side.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::clients::ws_connect;
use super::fanout::scratch;
use super::frames::{Incoming, MiniSession};
use super::{floor, plain_only, raise_fd_limit, runtime, skipped, wait_until, NetSizes, TOKEN};
use crate::report::{Figure, Outcome, Target};
use crate::scenarios::store::details;
use crate::scenarios::{Ctx, Scenario};

/// Issue target: relay memory per idle authenticated connection.
const IDLE_BYTES_PER_CONNECTION_MAX: f64 = 50.0 * 1024.0;
/// WebSocket handshakes in flight at once (the listen backlog is 1,024).
const CONNECTS_IN_FLIGHT: usize = 256;
/// Connecting every client may take this long before the run fails.
const CONNECT_WAIT: Duration = Duration::from_secs(45);
/// The relay child has this long to print its `listening` line.
const RELAY_START_WAIT: Duration = Duration::from_secs(20);
/// File descriptors the relay keeps besides its sessions (store, WAL, listener, runtime).
const RELAY_FDS_BESIDES_SESSIONS: u64 = 64;

/// Idle authenticated sessions held by a relay process.
#[derive(Debug)]
pub(super) struct Idle10k;

impl Scenario for Idle10k {
    fn name(&self) -> &'static str {
        "net_idle_10k"
    }

    fn about(&self) -> &'static str {
        "relay (child process) memory per idle authenticated WebSocket session"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        if !plain_only(self.name(), encrypted) {
            return Ok(Vec::new());
        }
        let sizes = NetSizes::of(ctx.config.quick);
        let n = sizes.idle_connections;
        let Some(bin) = relay_binary() else {
            return Ok(vec![skipped(
                self.name(),
                self.name(),
                "bytes/connection",
                "no release CLI binary next to the benchmark: run `cargo build --release -p \
                 blazedb-cli` first (or set BLAZEDB_BIN to the `blazedb` executable)"
                    .into(),
            )]);
        };
        // One descriptor per session on each side: the child inherits the raised limit.
        let (fd_soft, fd_hard) = raise_fd_limit(n as u64 + RELAY_FDS_BESIDES_SESSIONS)?;
        let dir = scratch(ctx, "net-idle", false)?;
        let mut relay = RelayProcess::spawn(&bin, &dir)?;
        std::thread::sleep(Duration::from_millis(500));
        let rss_before = rss_kb(relay.pid())?;

        let rt = runtime()?;
        let stop = CancellationToken::new();
        let ready = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let pongs = Arc::new(AtomicUsize::new(0));
        let connect_start = Instant::now();
        let tasks = {
            let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
            (0..n)
                .map(|_| {
                    let (stop, ready, failures, pongs, gate) = (
                        stop.clone(),
                        ready.clone(),
                        failures.clone(),
                        pongs.clone(),
                        gate.clone(),
                    );
                    let addr = relay.addr;
                    rt.spawn(async move {
                        let r = idle_client(addr, gate, &ready, &pongs, stop).await;
                        if let Err(e) = r {
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{e:#}"));
                        }
                    })
                })
                .collect::<Vec<_>>()
        };
        let connected = wait_until(
            CONNECT_WAIT,
            Duration::from_millis(20),
            "every idle session completing its handshake",
            || {
                let f = failures.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = f.first() {
                    bail!("{} idle clients failed; the first: {e}", f.len());
                }
                Ok(ready.load(Ordering::Acquire) == n)
            },
        );
        let connect_time = connect_start.elapsed();
        let result = connected.and_then(|()| {
            std::thread::sleep(Duration::from_millis(1_000));
            let settled = rss_kb(relay.pid())?;
            // Hold through a ping round: every session pings and gets its PONG.
            std::thread::sleep(Duration::from_millis(
                sizes.idle_hold_ms.saturating_sub(1_000),
            ));
            let held = rss_kb(relay.pid())?;
            relay.check_alive()?;
            let f = failures.lock().unwrap_or_else(|e| e.into_inner());
            ensure!(
                f.is_empty(),
                "{} idle sessions ended while held; the first: {}",
                f.len(),
                f[0]
            );
            Ok((settled, held))
        });
        stop.cancel();
        rt.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
        drop(rt);
        let relay_stderr = relay.stop()?;
        let (settled, held) =
            result.with_context(|| format!("relay stderr (last lines): {relay_stderr}"))?;
        let _ = std::fs::remove_dir_all(&dir);

        // The floor in this process, with what descriptors are left (both ends are here).
        let floor_n = n;
        let (floor_before, floor_after) = floor::idle_tcp(floor_n)?.unwrap_or((0, 0));

        let peak = settled.max(held);
        let per_conn = (peak.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
        let floor_per_conn = match floor_after {
            0 => f64::NAN, // no node: no floor
            _ => (floor_after.saturating_sub(floor_before)) as f64 * 1024.0 / floor_n as f64,
        };
        Ok(vec![Outcome {
            name: "net_idle_10k".into(),
            scenario: self.name(),
            encrypted: false,
            blazedb: Figure::cost(
                per_conn,
                "bytes/connection",
                format!(
                    "(relay VmRSS with {n} idle sessions − VmRSS before) / {n}; the relay is \
                     `blazedb serve --token T` as a child process; each session: WebSocket \
                     upgrade with a bearer token, HELLO (token), SUBSCRIBE, CAUGHT_UP, PONGs; \
                     the larger of two samples (1 s after the last connected, and after a \
                     ping round)"
                ),
            ),
            floor: Figure::cost(
                floor_per_conn,
                "bytes/connection",
                format!(
                    "(VmRSS of a minimal raw TCP server process with {floor_n} idle \
                     connections − before) / {floor_n}: `node -e` with a net server that \
                     accepts and discards (null when node is not installed)"
                ),
            ),
            target: Some(Target {
                description: format!(
                    "≤ {:.0} KB relay memory per idle connection",
                    IDLE_BYTES_PER_CONNECTION_MAX / 1024.0
                ),
                met: per_conn <= IDLE_BYTES_PER_CONNECTION_MAX,
            }),
            details: details(json!({
                "connections": n,
                "relay_rss_before_kb": rss_before,
                "relay_rss_settled_kb": settled,
                "relay_rss_after_ping_round_kb": held,
                "pongs_sent": pongs.load(Ordering::Acquire),
                "connect_all_s": connect_time.as_secs_f64(),
                "connects_in_flight": CONNECTS_IN_FLIGHT,
                "floor_connections": floor_n,
                "floor_rss_before_kb": floor_before,
                "floor_rss_after_kb": floor_after,
                "fd_limit_soft": fd_soft,
                "fd_limit_hard": fd_hard,
                "relay_binary": bin.display().to_string(),
            })),
        }])
    }
}

/// One idle client: connect (at most [`CONNECTS_IN_FLIGHT`] at once), HELLO, SUBSCRIBE; count
/// itself ready on the relay's HELLO; then answer until `stop`.
async fn idle_client(
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    ready: &AtomicUsize,
    pongs: &AtomicUsize,
    stop: CancellationToken,
) -> Result<()> {
    let mut ws = {
        let _permit = gate.acquire().await?;
        ws_connect(addr).await?
    };
    let mut session = MiniSession::default();
    let node = blazedb::NodeId::random();
    ws.send(Message::binary(session.hello(node, TOKEN))).await?;
    ws.send(Message::binary(session.subscribe())).await?;
    let mut greeted = false;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let data = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(c))) => bail!("the relay closed the session: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("WebSocket error: {e}"),
            None => bail!("the relay closed the connection"),
        };
        for frame in session.receive(&data)? {
            match frame {
                Incoming::Hello if !greeted => {
                    greeted = true;
                    ready.fetch_add(1, Ordering::AcqRel);
                }
                Incoming::Subscribe => ws.send(Message::binary(session.caught_up())).await?,
                Incoming::Ping(nonce) => {
                    ws.send(Message::binary(session.pong(nonce))).await?;
                    pongs.fetch_add(1, Ordering::AcqRel);
                }
                Incoming::Error(e) => bail!("the relay sent ERROR {e}"),
                _ => {}
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// The `blazedb` executable: `BLAZEDB_BIN`, or next to this benchmark's own executable
/// (`target/release/blazedb` beside `target/release/blazedb-bench`).
fn relay_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BLAZEDB_BIN") {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe().ok()?;
    let p = me.parent()?.join("blazedb");
    p.is_file().then_some(p)
}

/// `blazedb serve` as a child process; killed when dropped.
#[derive(Debug)]
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl RelayProcess {
    fn spawn(bin: &Path, dir: &Path) -> Result<RelayProcess> {
        let stderr_path = dir.join("relay-stderr.log");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(dir.join("relay"))
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(RELAY_START_WAIT) {
            Ok(r) => r?,
            Err(_) => {
                let _ = child.kill();
                bail!("the relay printed no `listening` line within {RELAY_START_WAIT:?}");
            }
        };
        let v: serde_json::Value = serde_json::from_str(line.trim()).with_context(|| {
            format!(
                "the relay's first line is not JSON: {line:?} (stderr: {})",
                tail(&stderr_path)
            )
        })?;
        let http = v["http"]
            .as_str()
            .context("no `http` in the listening line")?;
        let addr = http
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("bad address in {http:?}"))?;
        Ok(RelayProcess {
            child,
            addr,
            stderr_path,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the relay exited ({status}); stderr: {}",
                tail(&self.stderr_path)
            );
        }
        Ok(())
    }

    /// Kill the relay; returns the end of its stderr (session problems are logged there).
    fn stop(mut self) -> Result<String> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(tail(&self.stderr_path))
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub(super) struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last few lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/PID/status`).
pub(super) fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (Linux only)"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/PID/status")?;
    line.split_whitespace()
        .nth(1)
        .context("empty VmRSS line")?
        .parse()
        .context("VmRSS is not a number")
}
