//! A `turmoil` world for network-fault tests of the tokio driver: a `server` host accepting
//! TCP connections and a `client` host reconnecting to it, each with its own BlazeDB file,
//! each writing while they sync; a `checker` host that stops everything once both replicas
//! hold the same records. The test in between steps the simulation and injects faults.
//!
//! ```text
//!   client ── turmoil TcpStream ── server        checker: dumps equal? → stop
//!   (writer, reconnect loop)      (writer, one run_session per connection)
//! ```
//!
//! Time: each host is a paused current-thread tokio runtime whose clock turmoil advances
//! by one tick per step, and the driver reads only `tokio::time::Instant` (`now_ms` is the
//! time since the session started), so every ping, idle timeout, linger and backoff below
//! is simulated time. The database's hybrid clock still reads the system clock, which
//! only orders versions and plays no part in timing.
//!
//! Determinism: the network is seeded (`TURMOIL_SEED` overrides a test's seed; the seed is
//! printed first). The driver options keep every session step on the host's own thread
//! (reads, output rounds and staged units stay under the blocking-pool thresholds), so no
//! second thread can reorder events. Node and record ids are still random.

#![allow(dead_code)]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use blazedb::sync::SessionConfig;
use blazedb::{Database, OpenOptions, RecordId, Seq, Value};
use blazedb_net::{canonical_dump, run_session, DriverOptions, EndReason, NetError, SessionReport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use turmoil::net::{TcpListener, TcpStream};

pub const SERVER: &str = "server";
pub const CLIENT: &str = "client";
pub const CHECKER: &str = "checker";
pub const PORT: u16 = 7421;

/// Ping after this long without sending (simulated ms).
pub const PING_MS: u64 = 250;
/// A session gives up on its peer after this long without receiving (simulated ms).
pub const IDLE_TIMEOUT_MS: u64 = 1_500;
/// A connection attempt that gets no answer is abandoned after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Reconnect pauses: doubling from the first to the last.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_millis(800);
/// How long, in simulated time, the checker waits for convergence after the writers finish.
pub const CONVERGE_SIM: Duration = Duration::from_secs(30);

/// The seed: `TURMOIL_SEED` when set, else the test's own. Printed, so a failure can be
/// replayed.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("TURMOIL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("turmoil seed {seed} (replay with TURMOIL_SEED={seed})");
    seed
}

/// Session settings: small batches (many units, so faults land between and inside them)
/// and fast heartbeats.
pub fn session_cfg(server: bool) -> SessionConfig {
    SessionConfig {
        server,
        batch_cells_max: 64,
        ping_interval_ms: PING_MS,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        ..SessionConfig::default()
    }
}

/// Driver settings: reads, output rounds and staged units stay below the thresholds that
/// move work to the blocking pool (see the module docs), and a short linger.
pub fn driver_opts(stop: &CancellationToken) -> DriverOptions {
    DriverOptions {
        shutdown: stop.clone(),
        linger_ms: 300,
        read_buffer_bytes: 8 * 1024,
        write_buffer_bytes_max: 8 * 1024,
        ..DriverOptions::default()
    }
}

/// Which host a session ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// How one session ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub side: Side,
    pub report: SessionReport,
    /// The error, when it ended with one.
    pub error: Option<String>,
}

/// A write that returned `Ok`: it must be in both replicas at the end.
#[derive(Clone, Debug)]
pub struct Acked {
    pub collection: &'static str,
    pub id: RecordId,
    pub n: i64,
}

/// What one side writes while the test runs.
#[derive(Clone, Copy, Debug)]
pub struct Writes {
    /// Records written before the simulation starts (the initial bulk sync).
    pub before: usize,
    /// Records written during the simulation, one transaction per `per_tx`.
    pub during: usize,
    pub per_tx: usize,
    /// Simulated pause between two transactions.
    pub every: Duration,
}

/// Sessions of a side that are still running.
type Live = Arc<AtomicUsize>;

/// Everything the hosts share with the test.
#[derive(Clone)]
pub struct Harness {
    pub dir: Arc<tempfile::TempDir>,
    pub server_db: Arc<Database>,
    pub client_db: Arc<Database>,
    pub acked: Arc<Mutex<Vec<Acked>>>,
    pub ended: Arc<Mutex<Vec<Ended>>>,
    pub stop: CancellationToken,
    writers_done: Arc<AtomicUsize>,
    server_live: Live,
    client_live: Live,
    accepted: Arc<AtomicUsize>,
    cells_per_record: u64,
    client_writes: Writes,
    server_writes: Writes,
}

impl Harness {
    pub fn new(client_writes: Writes, server_writes: Writes) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            Arc::new(Database::open(dir.path().join(name), OpenOptions::default()).unwrap())
        };
        let (server_db, client_db, scratch) = (open("server.db"), open("client.db"), open("x.db"));
        // Every record has the same fields, so the same number of cells.
        write_record(&scratch, "x", 0).unwrap();
        let cells_per_record = live_cells(&scratch);
        let h = Harness {
            dir: Arc::new(dir),
            server_db,
            client_db,
            acked: Arc::default(),
            ended: Arc::default(),
            stop: CancellationToken::new(),
            writers_done: Arc::default(),
            server_live: Arc::default(),
            client_live: Arc::default(),
            accepted: Arc::default(),
            cells_per_record,
            client_writes,
            server_writes,
        };
        h.write_batch(&h.client_db, "from_client", 0, client_writes.before, 10);
        h.write_batch(&h.server_db, "from_server", 0, server_writes.before, 10);
        h
    }

    /// Install the three hosts. `wrap` sees every accepted connection with its index (0
    /// first) and may wrap it, e.g. to reset it.
    pub fn install(&self, sim: &mut turmoil::Sim<'_>, wrap: fn(usize, TcpStream) -> Conn) {
        let h = self.clone();
        sim.host(SERVER, move || {
            let h = h.clone();
            async move { h.server(wrap).await }
        });
        let h = self.clone();
        sim.client(CLIENT, async move { h.client().await });
        let h = self.clone();
        sim.client(CHECKER, async move { h.checker().await });
    }

    async fn server(self, wrap: fn(usize, TcpStream) -> Conn) -> turmoil::Result {
        let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
        let writer = self.clone();
        tokio::task::spawn_local(async move {
            let w = writer.server_writes;
            writer
                .writer(&writer.server_db, "from_server", w.before, w)
                .await
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let index = self.accepted.fetch_add(1, Ordering::SeqCst);
            let conn = wrap(index, stream);
            let h = self.clone();
            h.server_live.fetch_add(1, Ordering::SeqCst);
            tokio::task::spawn_local(async move {
                let r = run_session(
                    h.server_db.clone(),
                    conn,
                    session_cfg(true),
                    driver_opts(&h.stop),
                )
                .await;
                h.record(Side::Server, r);
                h.server_live.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Write, and keep a session up: reconnect with backoff until stopped.
    async fn client(self) -> turmoil::Result {
        let writer = self.clone();
        let writes = tokio::task::spawn_local(async move {
            let w = writer.client_writes;
            writer
                .writer(&writer.client_db, "from_client", w.before, w)
                .await
        });
        let mut backoff = BACKOFF_FIRST;
        while !self.stop.is_cancelled() {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((SERVER, PORT)));
            let connected = tokio::select! {
                r = connect => r,
                _ = self.stop.cancelled() => break,
            };
            if let Ok(Ok(stream)) = connected {
                self.client_live.fetch_add(1, Ordering::SeqCst);
                let r = run_session(
                    self.client_db.clone(),
                    stream,
                    session_cfg(false),
                    driver_opts(&self.stop),
                )
                .await;
                let progressed = r.is_ok()
                    || r.as_ref()
                        .err()
                        .and_then(NetError::report)
                        .is_some_and(|r| r.stats.cells_applied > 0 || r.stats.cells_sent > 0);
                self.record(Side::Client, r);
                self.client_live.fetch_sub(1, Ordering::SeqCst);
                if progressed {
                    backoff = BACKOFF_FIRST;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        writes.await?;
        Ok(())
    }

    /// Once both writers are done and both replicas hold the same records, stop every
    /// session and wait until all of them ended.
    async fn checker(self) -> turmoil::Result {
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(100);
        loop {
            tokio::time::sleep(step).await;
            if self.writers_done.load(Ordering::SeqCst) == 2 {
                if dump(&self.client_db) == dump(&self.server_db) {
                    break;
                }
                waited += step;
                if waited > CONVERGE_SIM {
                    return Err(format!(
                        "not converged {CONVERGE_SIM:?} (simulated) after the writers finished: \
                         client {} records, server {} records; sessions {:#?}",
                        dump(&self.client_db).len(),
                        dump(&self.server_db).len(),
                        self.ended.lock().unwrap()
                    )
                    .into());
                }
            }
        }
        self.stop.cancel();
        while self.server_live.load(Ordering::SeqCst) + self.client_live.load(Ordering::SeqCst) > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn writer(&self, db: &Database, collection: &'static str, first: usize, w: Writes) {
        let mut n = first;
        while n < first + w.during {
            tokio::time::sleep(w.every).await;
            let k = w.per_tx.min(first + w.during - n);
            self.write_batch(db, collection, n, k, k);
            n += k;
        }
        self.writers_done.fetch_add(1, Ordering::SeqCst);
    }

    /// Records `first..first + count` in transactions of `per_tx`; each one that commits is
    /// acknowledged.
    fn write_batch(
        &self,
        db: &Database,
        collection: &'static str,
        first: usize,
        count: usize,
        per_tx: usize,
    ) {
        let mut n = first;
        while n < first + count {
            let k = per_tx.min(first + count - n);
            let ids = db
                .transaction(|tx| {
                    (n..n + k)
                        .map(|i| {
                            tx.insert(
                                collection,
                                [
                                    ("title", Value::from(format!("{collection} {i}"))),
                                    ("n", Value::Int(i as i64)),
                                    ("pad", Value::from("x".repeat(40))),
                                ],
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .expect("a local write");
            let mut acked = self.acked.lock().unwrap();
            for (i, id) in ids.into_iter().enumerate() {
                acked.push(Acked {
                    collection,
                    id,
                    n: (n + i) as i64,
                });
            }
            n += k;
        }
    }

    fn record(&self, side: Side, r: Result<SessionReport, NetError>) {
        let ended = match r {
            Ok(report) => Ended {
                side,
                report,
                error: None,
            },
            Err(e) => Ended {
                side,
                report: e
                    .report()
                    .cloned()
                    .unwrap_or_else(|| panic!("a session failed before it started: {e}")),
                error: Some(e.to_string()),
            },
        };
        self.ended.lock().unwrap().push(ended);
    }

    /// Sessions that ended on one side.
    pub fn sessions(&self, side: Side) -> Vec<Ended> {
        let ended = self.ended.lock().unwrap();
        ended.iter().filter(|e| e.side == side).cloned().collect()
    }

    /// Connections the server accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The end state holds every acknowledged write, on both replicas, exactly once: equal
    /// dumps, every acked record present with its value, and each side applied exactly
    /// the cells the other side wrote, summed over all its sessions — a cell delivered
    /// twice (a unit resent after a fault) may be received twice but never applied twice.
    pub fn assert_converged_without_loss_or_duplicates(&self) {
        let (client, server) = (dump(&self.client_db), dump(&self.server_db));
        assert_eq!(client.len(), server.len(), "record counts differ");
        assert!(client == server, "the replicas differ");

        let acked = self.acked.lock().unwrap();
        let (client_w, server_w) = (self.client_writes, self.server_writes);
        let from_client = (client_w.before + client_w.during) as u64;
        let from_server = (server_w.before + server_w.during) as u64;
        assert_eq!(acked.len() as u64, from_client + from_server);
        for a in acked.iter() {
            for (name, db) in [("client", &self.client_db), ("server", &self.server_db)] {
                let record = db
                    .get(a.collection, a.id)
                    .unwrap()
                    .unwrap_or_else(|| panic!("acknowledged write {a:?} missing on the {name}"));
                assert_eq!(
                    record.field("n"),
                    Some(Value::Int(a.n)),
                    "{a:?} on the {name}"
                );
                // One version per cell: its creation, nothing applied over it again.
                let history = db.history(a.collection, a.id).unwrap();
                assert_eq!(
                    history.len() as u64,
                    self.cells_per_record,
                    "{a:?} on the {name}"
                );
            }
        }
        assert_eq!(self.client_db.count("from_client").unwrap(), from_client);
        assert_eq!(self.server_db.count("from_server").unwrap(), from_server);

        let applied = |side| -> (u64, u64) {
            self.sessions(side).iter().fold((0, 0), |(a, r), e| {
                (
                    a + e.report.stats.cells_applied,
                    r + e.report.stats.cells_received,
                )
            })
        };
        let (server_applied, server_received) = applied(Side::Server);
        let (client_applied, client_received) = applied(Side::Client);
        assert_eq!(
            server_applied,
            from_client * self.cells_per_record,
            "cells the server applied vs cells the client wrote"
        );
        assert_eq!(
            client_applied,
            from_server * self.cells_per_record,
            "cells the client applied vs cells the server wrote"
        );
        assert!(server_received >= server_applied && client_received >= client_applied);
        // The whole history agrees: each replica's feed holds every cell once.
        let total = (from_client + from_server) * self.cells_per_record;
        assert_eq!(live_cells(&self.client_db), total);
        assert_eq!(live_cells(&self.server_db), total);
        // Inserts only: any stored history row would be a cell version replaced, i.e. a
        // change applied twice or over itself.
        assert_eq!(
            self.client_db.history_len().unwrap(),
            0,
            "client history rows"
        );
        assert_eq!(
            self.server_db.history_len().unwrap(),
            0,
            "server history rows"
        );
    }

    /// One line per session, for the test output.
    pub fn print_sessions(&self) {
        for e in self.ended.lock().unwrap().iter() {
            let s = &e.report.stats;
            println!(
                "{:?}: {:?} after {} ms, cells sent {} received {} applied {}{}",
                e.side,
                e.report.end,
                e.report.elapsed_ms,
                s.cells_sent,
                s.cells_received,
                s.cells_applied,
                e.error
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
        }
    }
}

/// Step the simulation until `at` of simulated time has elapsed. Fails if every client
/// finished before (the fault would land after the end).
pub fn run_until(sim: &mut turmoil::Sim<'_>, at: Duration) {
    while sim.elapsed() < at {
        let finished = sim
            .step()
            .unwrap_or_else(|e| panic!("simulation failed: {e}"));
        assert!(!finished, "the simulation ended before {at:?}");
    }
}

/// Step the simulation until `ready` holds (checked after each step), or fail at `limit`
/// of simulated time.
pub fn run_until_cond(
    sim: &mut turmoil::Sim<'_>,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) {
    while !ready() {
        assert!(
            sim.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        let finished = sim
            .step()
            .unwrap_or_else(|e| panic!("simulation failed: {e}"));
        assert!(!finished, "the simulation ended before the condition held");
    }
}

/// Step the simulation until every client finished.
pub fn run_to_end(sim: &mut turmoil::Sim<'_>) {
    sim.run()
        .unwrap_or_else(|e| panic!("simulation failed: {e}"));
}

/// Whether an end reason is the session's own idle timeout.
pub fn is_idle_timeout(end: &EndReason) -> bool {
    matches!(end, EndReason::Protocol(e) if e.code == blazedb::sync::ErrorCode::Timeout)
}

fn write_record(db: &Database, collection: &str, i: usize) -> blazedb::Result<RecordId> {
    db.insert(
        collection,
        [
            ("title", Value::from(format!("{collection} {i}"))),
            ("n", Value::Int(i as i64)),
            ("pad", Value::from("x".repeat(40))),
        ],
    )
}

pub fn dump(db: &Database) -> Vec<String> {
    canonical_dump(db).unwrap()
}

/// Cells alive in a replica (its whole feed).
pub fn live_cells(db: &Database) -> u64 {
    let (mut cells, mut since) = (0u64, Seq(0));
    loop {
        let batch = db.changes_since(since, 100_000, None).unwrap();
        cells += batch
            .changes
            .iter()
            .map(|c| c.cells.len() as u64)
            .sum::<u64>();
        since = batch.next;
        if !batch.more {
            return cells;
        }
    }
}

/// A server-side connection: as accepted, or reset by this side after some bytes.
pub enum Conn {
    Plain(TcpStream),
    Reset(ResetAfter),
}

impl Conn {
    pub fn plain(_index: usize, stream: TcpStream) -> Conn {
        Conn::Plain(stream)
    }
}

/// Resets the connection once `read_bytes_max` bytes were read: the socket is dropped
/// with the peer's next bytes still unread, which makes turmoil send a TCP RST (RFC 9293
/// §3.10.4, as a real kernel does), and this side's driver sees `ConnectionReset`.
pub struct ResetAfter {
    inner: Option<TcpStream>,
    read_left: usize,
}

impl ResetAfter {
    pub fn new(stream: TcpStream, read_bytes_max: usize) -> ResetAfter {
        ResetAfter {
            inner: Some(stream),
            read_left: read_bytes_max,
        }
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by the test")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Reset(r) => {
                if r.read_left == 0 {
                    r.inner = None;
                }
                let Some(s) = r.inner.as_mut() else {
                    return Poll::Ready(Err(reset()));
                };
                let mut tmp = vec![0u8; r.read_left.min(buf.remaining())];
                let mut sub = ReadBuf::new(&mut tmp);
                match Pin::new(s).poll_read(cx, &mut sub) {
                    Poll::Ready(Ok(())) => {
                        let n = sub.filled().len();
                        buf.put_slice(sub.filled());
                        r.read_left -= n;
                        Poll::Ready(Ok(()))
                    }
                    other => other,
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Reset(r) => match r.inner.as_mut() {
                Some(s) => Pin::new(s).poll_write(cx, buf),
                None => Poll::Ready(Err(reset())),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Reset(r) => match r.inner.as_mut() {
                Some(s) => Pin::new(s).poll_flush(cx),
                None => Poll::Ready(Err(reset())),
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Reset(r) => match r.inner.as_mut() {
                Some(s) => Pin::new(s).poll_shutdown(cx),
                None => Poll::Ready(Err(reset())),
            },
        }
    }
}
