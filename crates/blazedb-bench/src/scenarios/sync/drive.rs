//! Running two sessions against each other: in memory on the calling thread (sans-IO, for
//! exact bytes), or as two `blazedb_net::run_session` tasks over an in-process pipe (the real
//! driver, for time), optionally recording every byte each side writes.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use blazedb::sync::{Session, SessionConfig};
use blazedb::{Database, RecordId, WatchItem};
use blazedb_net::limits::CHECKPOINT_INTERVAL_MS_DEFAULT;
use blazedb_net::limits::DUPLEX_BUFFER_BYTES_DEFAULT;
use blazedb_net::{
    run_session, spawn_checkpointer, Checkpointer, DriverOptions, NetError, SessionReport,
};
use serde_json::{json, Map};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wire::{frames, kind_name};

/// Worker threads of the tokio runtime that drives the sessions. The machine the issue's
/// targets are set for has 2 cores; the committing thread is the benchmark's own.
pub(super) const RUNTIME_WORKERS: usize = 2;
/// A commit that has not reached B within this long fails the run (it is a bug, not a slow
/// figure).
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// Bound on the in-memory pump: frames exchanged before it gives up.
const PUMP_ROUNDS_MAX: usize = 1_000_000;

/// One session per side, both configured with `cfg`, started at time 0 (HELLOs queued).
pub(super) fn sessions(
    a: &Database,
    b: &Database,
    cfg: SessionConfig,
) -> Result<(Session, Session)> {
    Ok((Session::new(a, cfg.clone(), 0)?, Session::new(b, cfg, 0)?))
}

/// The frames each side sent during a pump, in order, and the time each side's session
/// calls took (A: its `poll_transmit` and its `handle_bytes` of B's frames; B likewise).
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) a_to_b: Vec<Vec<u8>>,
    pub(super) b_to_a: Vec<Vec<u8>>,
    pub(super) a_busy: Duration,
    pub(super) b_busy: Duration,
}

/// Run two sessions against each other until both are caught up and quiet.
pub(super) fn pump(
    a: &Database,
    sa: &mut Session,
    b: &Database,
    sb: &mut Session,
) -> Result<Traffic> {
    let mut t = Traffic::default();
    for _ in 0..PUMP_ROUNDS_MAX {
        let mut progress = false;
        loop {
            let start = Instant::now();
            let Some(f) = sa.poll_transmit(0, a) else {
                t.a_busy += start.elapsed();
                break;
            };
            let sent = Instant::now();
            sb.handle_bytes(0, &f, b)?;
            t.a_busy += sent - start;
            t.b_busy += sent.elapsed();
            t.a_to_b.push(f);
            progress = true;
        }
        loop {
            let start = Instant::now();
            let Some(f) = sb.poll_transmit(0, b) else {
                t.b_busy += start.elapsed();
                break;
            };
            let sent = Instant::now();
            sa.handle_bytes(0, &f, a)?;
            t.b_busy += sent - start;
            t.a_busy += sent.elapsed();
            t.b_to_a.push(f);
            progress = true;
        }
        if !progress {
            ensure!(
                sa.is_caught_up(a)? && sb.is_caught_up(b)?,
                "sessions stalled before catching up"
            );
            return Ok(t);
        }
    }
    bail!("sessions exchanged {PUMP_ROUNDS_MAX} rounds without settling")
}

/// The multi-threaded runtime the driver scenarios run on ([`RUNTIME_WORKERS`] workers).
pub(super) fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

type SessionTask = JoinHandle<Result<SessionReport, NetError>>;

/// Two `run_session` tasks connected by an in-process pipe, running until stopped.
#[derive(Debug)]
pub(super) struct Link {
    stop: CancellationToken,
    tasks: (SessionTask, SessionTask),
    /// WAL checkpoints off the commit path, as a syncing application runs them.
    _checkpoints: (Checkpointer, Checkpointer),
}

impl Link {
    pub(super) fn start(rt: &Runtime, a: &Arc<Database>, b: &Arc<Database>) -> Link {
        Self::start_with(rt, a, b, None)
    }

    /// [`Link::start`] with A's session also woken by `wake_a` (a `HeadWatch`'s notifier, for
    /// commits other processes make on A's file).
    pub(super) fn start_woken(
        rt: &Runtime,
        a: &Arc<Database>,
        b: &Arc<Database>,
        wake_a: Arc<Notify>,
    ) -> Link {
        Self::start_with(rt, a, b, Some(wake_a))
    }

    fn start_with(
        rt: &Runtime,
        a: &Arc<Database>,
        b: &Arc<Database>,
        wake_a: Option<Arc<Notify>>,
    ) -> Link {
        let stop = CancellationToken::new();
        let (x, y) = tokio::io::duplex(DUPLEX_BUFFER_BYTES_DEFAULT);
        let opts = |wake: Option<Arc<Notify>>| DriverOptions {
            shutdown: stop.clone(),
            wake,
            ..DriverOptions::default()
        };
        let tasks = (
            rt.spawn(run_session(
                a.clone(),
                x,
                SessionConfig::default(),
                opts(wake_a),
            )),
            rt.spawn(run_session(
                b.clone(),
                y,
                SessionConfig::default(),
                opts(None),
            )),
        );
        let every = Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT);
        let _runtime = rt.enter();
        let checkpoints = (
            spawn_checkpointer(a.clone(), every),
            spawn_checkpointer(b.clone(), every),
        );
        Link {
            stop,
            tasks,
            _checkpoints: checkpoints,
        }
    }

    /// End both sessions politely and return their reports.
    pub(super) fn stop(self, rt: &Runtime) -> Result<(SessionReport, SessionReport)> {
        self.stop.cancel();
        rt.block_on(async {
            let a = self.tasks.0.await.context("session task A")??;
            let b = self.tasks.1.await.context("session task B")??;
            Ok((a, b))
        })
    }
}

/// A transport that keeps a copy of every byte written through it.
#[derive(Debug)]
pub(super) struct Tap<T> {
    inner: T,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..*n]);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Every byte each side wrote during one session.
#[derive(Debug)]
pub(super) struct Recorded {
    pub(super) a_to_b: Vec<u8>,
    pub(super) b_to_a: Vec<u8>,
}

impl Recorded {
    pub(super) fn total(&self) -> usize {
        self.a_to_b.len() + self.b_to_a.len()
    }

    /// `{"HELLO": {"frames": 1, "bytes": 30}, ...}` for one direction.
    pub(super) fn by_kind(&self, a_to_b: bool) -> Result<serde_json::Value> {
        let stream = if a_to_b { &self.a_to_b } else { &self.b_to_a };
        let mut m: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        for f in frames(stream)? {
            let e = m.entry(kind_name(f.kind)).or_default();
            e.0 += 1;
            e.1 += f.wire_bytes;
        }
        Ok(json!(m
            .into_iter()
            .map(|(k, (frames, bytes))| (k.to_owned(), json!({"frames": frames, "bytes": bytes})))
            .collect::<Map<_, _>>()))
    }

    /// Bytes of frames of one type, both directions.
    pub(super) fn kind_bytes(&self, kind: u8) -> Result<usize> {
        let mut n = 0;
        for s in [&self.a_to_b, &self.b_to_a] {
            n += frames(s)?
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.wire_bytes)
                .sum::<usize>();
        }
        Ok(n)
    }
}

/// One `--once` session pair (as `blazedb sync --once` runs), every byte recorded.
pub(super) async fn resync(a: &Arc<Database>, b: &Arc<Database>) -> Result<Recorded> {
    let (x, y) = tokio::io::duplex(DUPLEX_BUFFER_BYTES_DEFAULT);
    let (wa, wb) = (Arc::default(), Arc::default());
    let (x, y) = (
        Tap {
            inner: x,
            written: Arc::clone(&wa),
        },
        Tap {
            inner: y,
            written: Arc::clone(&wb),
        },
    );
    let cfg = SessionConfig::default;
    let (ra, rb) = tokio::join!(
        run_session(a.clone(), x, cfg(), DriverOptions::once()),
        run_session(b.clone(), y, cfg(), DriverOptions::once()),
    );
    let (ra, rb) = (ra?, rb?);
    ensure!(
        ra.caught_up && rb.caught_up,
        "resync ended before both sides caught up"
    );
    let take =
        |w: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *w.lock().unwrap_or_else(|e| e.into_inner()));
    let rec = Recorded {
        a_to_b: take(wa),
        b_to_a: take(wb),
    };
    ensure!(
        rec.a_to_b.len() as u64 == ra.stats.bytes_sent
            && rec.b_to_a.len() as u64 == rb.stats.bytes_sent,
        "the tap and the session counters disagree"
    );
    Ok(rec)
}

/// Wait until `watch` yields the event of a change to record `id`.
pub(super) fn wait_for(watch: &blazedb::Watch, id: RecordId) -> Result<()> {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watch.recv_timeout(left) {
            Some(WatchItem::Event(e)) if e.record.id == id => return Ok(()),
            Some(WatchItem::Event(_)) => {}
            Some(WatchItem::Lagged(k)) => bail!("the watch on B lagged by {k} events"),
            None => bail!("the change did not reach B within {EVENT_WAIT:?}"),
        }
    }
}
