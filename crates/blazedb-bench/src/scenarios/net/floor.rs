//! Raw-socket floors: what the same traffic costs with nothing but TCP on 127.0.0.1 — no
//! WebSocket, no protocol, no database.
//!
//! - [`Hub`]: a writer socket → a hub task → N reader sockets; each length-prefixed message
//!   is written to every reader in turn (the relay's job without sync).
//! - [`ping_pong`]: blocking round trips of a message of a given size to an echo thread.
//! - [`idle_tcp`]: the memory a minimal raw TCP server process spends per idle connection.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::stats::Summary;

/// Bytes of the length prefix of a hub message.
const PREFIX_BYTES: usize = 4;
/// Bytes at the start of a hub message that carry its number (the rest is filler).
const TICK_BYTES: usize = 4;
/// A hub run that has not delivered everything within this long fails.
const HUB_WAIT: Duration = Duration::from_secs(60);

/// A running hub: the writer's socket, and per reader the arrival time of each message.
#[derive(Debug)]
pub(super) struct Hub {
    writer: TcpStream,
    epoch: Instant,
    /// Per message: readers that received it.
    received: Arc<Vec<AtomicUsize>>,
    /// Per message: the latest arrival at any reader, in ns since `epoch`.
    last_arrival_ns: Arc<Vec<AtomicU64>>,
    readers: Vec<JoinHandle<Result<()>>>,
    hub: JoinHandle<Result<()>>,
    reader_count: usize,
}

impl Hub {
    /// Connect a writer and `readers` readers through a hub task, for `messages` messages of
    /// `message_bytes` each (prefix included; at least the prefix and the message number).
    pub(super) async fn start(
        readers: usize,
        messages: usize,
        message_bytes: usize,
    ) -> Result<Hub> {
        let message_bytes = message_bytes.max(PREFIX_BYTES + TICK_BYTES);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let epoch = Instant::now();
        let received: Arc<Vec<AtomicUsize>> =
            Arc::new((0..messages).map(|_| AtomicUsize::new(0)).collect());
        let last_arrival_ns: Arc<Vec<AtomicU64>> =
            Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
        // Readers connect first, then the writer: the hub tells them apart by order.
        let mut reader_tasks = Vec::with_capacity(readers);
        let mut outs = Vec::with_capacity(readers);
        for _ in 0..readers {
            let s = connect(addr).await?;
            let (s_hub, _) = listener.accept().await?;
            let _ = s_hub.set_nodelay(true);
            outs.push(s_hub);
            let (received, last) = (received.clone(), last_arrival_ns.clone());
            reader_tasks.push(tokio::spawn(read_messages(
                s,
                messages,
                message_bytes,
                epoch,
                received,
                last,
            )));
        }
        let writer = connect(addr).await?;
        let (from_writer, _) = listener.accept().await?;
        let hub = tokio::spawn(forward(from_writer, outs, messages, message_bytes));
        Ok(Hub {
            writer,
            epoch,
            received,
            last_arrival_ns,
            readers: reader_tasks,
            hub,
            reader_count: readers,
        })
    }

    /// Send message `tick` (its number in the first bytes, filler after); returns when the
    /// writer's socket took it, with the time it was handed over.
    pub(super) async fn send(&mut self, tick: usize, message_bytes: usize) -> Result<Instant> {
        let message_bytes = message_bytes.max(PREFIX_BYTES + TICK_BYTES);
        let mut m = vec![0xA5u8; message_bytes];
        m[..PREFIX_BYTES].copy_from_slice(&((message_bytes - PREFIX_BYTES) as u32).to_le_bytes());
        m[PREFIX_BYTES..PREFIX_BYTES + TICK_BYTES].copy_from_slice(&(tick as u32).to_le_bytes());
        let t = Instant::now();
        self.writer.write_all(&m).await?;
        Ok(t)
    }

    /// Send `messages` messages back to back in writes of about 64 KiB.
    pub(super) async fn send_all(&mut self, messages: usize, message_bytes: usize) -> Result<()> {
        let message_bytes = message_bytes.max(PREFIX_BYTES + TICK_BYTES);
        let per_write = (64 * 1024 / message_bytes).max(1);
        let mut buf = Vec::with_capacity(per_write * message_bytes);
        for tick in 0..messages {
            let start = buf.len();
            buf.resize(start + message_bytes, 0xA5);
            buf[start..start + PREFIX_BYTES]
                .copy_from_slice(&((message_bytes - PREFIX_BYTES) as u32).to_le_bytes());
            buf[start + PREFIX_BYTES..start + PREFIX_BYTES + TICK_BYTES]
                .copy_from_slice(&(tick as u32).to_le_bytes());
            if buf.len() >= per_write * message_bytes {
                self.writer.write_all(&buf).await?;
                buf.clear();
            }
        }
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// Wait until every reader has every message; returns, per message, when the last reader
    /// received it.
    pub(super) async fn finish(self) -> Result<Vec<Instant>> {
        let Hub {
            writer,
            epoch,
            received,
            last_arrival_ns,
            readers,
            hub,
            reader_count,
        } = self;
        let all = async {
            for r in readers {
                r.await.context("floor reader task")??;
            }
            hub.await.context("floor hub task")??;
            Ok::<(), anyhow::Error>(())
        };
        tokio::time::timeout(HUB_WAIT, all)
            .await
            .context("the raw-socket floor did not deliver everything in time")??;
        drop(writer);
        for (i, r) in received.iter().enumerate() {
            ensure!(
                r.load(Ordering::Acquire) == reader_count,
                "floor message {i} reached {} of {reader_count} readers",
                r.load(Ordering::Acquire)
            );
        }
        Ok(last_arrival_ns
            .iter()
            .map(|ns| epoch + Duration::from_nanos(ns.load(Ordering::Acquire)))
            .collect())
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// The hub: read whole messages from the writer and write each to every reader.
async fn forward(
    from: TcpStream,
    mut to: Vec<TcpStream>,
    messages: usize,
    message_bytes: usize,
) -> Result<()> {
    let mut from = BufReader::with_capacity(64 * 1024, from);
    let mut m = vec![0u8; message_bytes];
    for _ in 0..messages {
        from.read_exact(&mut m).await?;
        for out in &mut to {
            out.write_all(&m).await?;
        }
    }
    Ok(())
}

/// A reader: read `messages` messages, stamping each arrival.
async fn read_messages(
    s: TcpStream,
    messages: usize,
    message_bytes: usize,
    epoch: Instant,
    received: Arc<Vec<AtomicUsize>>,
    last_arrival_ns: Arc<Vec<AtomicU64>>,
) -> Result<()> {
    let mut s = BufReader::with_capacity(64 * 1024, s);
    let mut m = vec![0u8; message_bytes];
    for _ in 0..messages {
        s.read_exact(&mut m).await?;
        let at = epoch.elapsed().as_nanos() as u64;
        let tick = u32::from_le_bytes(
            m[PREFIX_BYTES..PREFIX_BYTES + TICK_BYTES]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let slot = received
            .get(tick)
            .context("floor message number out of range")?;
        slot.fetch_add(1, Ordering::AcqRel);
        last_arrival_ns[tick].fetch_max(at, Ordering::AcqRel);
    }
    Ok(())
}

/// `n` blocking round trips of `bytes`-byte messages to an echo thread over TCP (Nagle off),
/// after `warmup` untimed ones.
pub(super) fn ping_pong(n: usize, warmup: usize, bytes: usize) -> Result<Summary> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; bytes];
        loop {
            if let Err(e) = s.read_exact(&mut buf) {
                return match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Ok(()),
                    _ => Err(e),
                };
            }
            s.write_all(&buf)?;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let out = vec![0xA5u8; bytes];
    let mut back = vec![0u8; bytes];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    drop(s);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Summary::of(&samples).context("no round trips (a size is 0)")
}

/// Memory of a minimal raw TCP server per idle connection, in a process of its own like the
/// relay: `node -e` with a `net` server that accepts and discards. Node is used because it is
/// a separate, already-installed runtime (the peer scenario needs it too); a server inside this
/// process would measure the allocator's reuse of earlier scenarios' memory. Returns
/// `(rss_before_kb, rss_after_kb)`, or `None` without node.
pub(super) fn idle_tcp(n: usize) -> Result<Option<(u64, u64)>> {
    const SERVER: &str = "const net=require('net');\
        const s=net.createServer(c=>{c.on('data',()=>{});c.on('error',()=>{})});\
        s.maxConnections=1e6;s.listen(0,'127.0.0.1',()=>console.log(s.address().port));";
    let child = std::process::Command::new("node")
        .args(["-e", SERVER])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        return Ok(None);
    };
    let mut child = super::idle::KillOnDrop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().context("node stdout")?),
        &mut line,
    )?;
    let port: u16 = line
        .trim()
        .parse()
        .context("the node floor server's port")?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.0.id();
    let before = super::idle::rss_kb(pid)?;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(std::net::TcpStream::connect(("127.0.0.1", port))?);
    }
    std::thread::sleep(Duration::from_millis(1_000));
    let after = super::idle::rss_kb(pid)?;
    drop(clients);
    Ok(Some((before, after)))
}
