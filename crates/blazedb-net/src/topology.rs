//! In-process topologies: register databases, connect them in any graph, and let sync run.
//!
//! Each connection is a `tokio::io::duplex` pipe with a bounded buffer and a
//! [`run_session`] task on each end, so in-process sync exercises exactly the bytes and the
//! driver that a socket would.
//!
//! ```text
//!   pair           hub and spoke        mesh              chain
//!   A ── B         S1   S2              A ── B            A ── B ── C ── D
//!                    \ /                │ ╲╱ │
//!                 S3 ─ H ─ S4           │ ╱╲ │
//!                                       C ── D
//! ```
//!
//! Loops in the graph are harmless: a node never sends a cell back to the peer it received
//! it from, and a cell that arrives again by another path is equal to the stored one, so its
//! apply is a no-op that adds nothing to the feed — the flood stops after one round.
//!
//! ```no_run
//! # async fn f(a: std::sync::Arc<blazedb::Database>, b: std::sync::Arc<blazedb::Database>) {
//! use blazedb::sync::SyncMode;
//! use blazedb_net::Topology;
//! let topo = Topology::new();
//! let (na, nb) = (topo.register("iPhone", a), topo.register("Mac", b));
//! topo.connect(na, nb, SyncMode::Both).unwrap();
//! topo.wait_converged(std::time::Duration::from_secs(5)).await.unwrap();
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use blazedb::sync::{SessionConfig, SyncMode, SyncPolicy};
use blazedb::Database;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{run_session, DriverOptions, SessionMonitor, SessionReport, SessionSnapshot};
use crate::error::{ConvergeError, EndedConnection, NetError};
use crate::limits::{DUPLEX_BUFFER_BYTES_DEFAULT, TOPOLOGY_CONNECTIONS_MAX, TOPOLOGY_NODES_MAX};

/// A set of databases in this process and the sync connections between them.
///
/// Cloning gives another handle to the same topology. Connections start tasks with
/// `tokio::spawn`, so call [`Topology::connect`] and its helpers inside a tokio runtime.
/// When the last handle is dropped, every connection is shut down politely.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    inner: Arc<Shared>,
}

/// A node registered in a [`Topology`]. It names its topology: another topology refuses it
/// ([`NetError::UnknownHandle`]) rather than take it for its own node at the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeHandle {
    topology: TopologyId,
    index: usize,
}

/// A connection in a [`Topology`]; like a [`NodeHandle`], it names its topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle {
    topology: TopologyId,
    id: u64,
}

/// Tells topologies apart: unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TopologyId(u64);

impl TopologyId {
    fn next() -> TopologyId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TopologyId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The role a node plays in its sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NodeRole {
    /// An ordinary replica.
    #[default]
    Peer,
    /// A server/hub: its HELLO says so, which gives its writes priority where a collection's
    /// policy asks for it.
    Server,
}

/// How to connect two nodes.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// What the first node does (`Push`: it only sends; the second node is then a read-only
    /// replica that only receives). The second node gets the complementary mode. "Read-only"
    /// is about the connection: the database still takes local writes, which stay on it
    /// (not sent over this connection) until it syncs in a mode that sends them.
    pub mode: SyncMode,
    /// Capacity of each direction of the in-process pipe, in bytes.
    pub buffer_bytes: usize,
    /// Session settings for both ends (`mode` and `server` are set per end). Its `policy`
    /// must stay `everything()`: each end's policy is its own (`first_policy`,
    /// `second_policy`). A policy makes its node a partial replica, which drops its own
    /// records outside the view; given to both ends (as before 2026-12-06) it made the full
    /// node evict its records that left the phone's filter, and they were gone everywhere.
    pub session: SessionConfig,
    /// What the first node receives of the second's data (selective sync; default:
    /// everything).
    pub first_policy: SyncPolicy,
    /// What the second node receives of the first's data (default: everything): the usual
    /// place for a phone's filter, with the full copy first.
    pub second_policy: SyncPolicy,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            mode: SyncMode::Both,
            buffer_bytes: DUPLEX_BUFFER_BYTES_DEFAULT,
            session: SessionConfig::default(),
            first_policy: SyncPolicy::everything(),
            second_policy: SyncPolicy::everything(),
        }
    }
}

impl ConnectOptions {
    /// A policy shared by both ends, or on an end that only sends (ignored without a word),
    /// is refused.
    fn check_policies(&self) -> Result<(), NetError> {
        let everything = SyncPolicy::everything();
        if self.session.policy != everything {
            return Err(NetError::InvalidOptions(
                "`session.policy` would apply to both ends, making the full copy a partial \
                 replica that drops its own records outside the view: set `second_policy` \
                 (what the second node receives) or `first_policy` instead"
                    .into(),
            ));
        }
        if self.mode == SyncMode::Pull && self.second_policy != everything {
            return Err(NetError::InvalidOptions(
                "in a Pull connection the second node only sends, so `second_policy` would \
                 never apply: set `first_policy`, the receiving node's"
                    .into(),
            ));
        }
        if self.mode == SyncMode::Push && self.first_policy != everything {
            return Err(NetError::InvalidOptions(
                "in a Push connection the first node only sends, so `first_policy` would never \
                 apply: set `second_policy`, the receiving node's"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Live state of both ends of a connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionSnapshot {
    /// The first node's end.
    pub a: SessionSnapshot,
    /// The second node's end.
    pub b: SessionSnapshot,
}

/// How both ends of a disconnected connection finished.
#[derive(Debug)]
pub struct ConnectionReport {
    /// The first node's end.
    pub a: Result<SessionReport, NetError>,
    /// The second node's end.
    pub b: Result<SessionReport, NetError>,
}

/// The mode the other end of a connection runs in.
pub fn complement(mode: SyncMode) -> SyncMode {
    match mode {
        SyncMode::Both => SyncMode::Both,
        SyncMode::Push => SyncMode::Pull,
        SyncMode::Pull => SyncMode::Push,
    }
}

#[derive(Debug)]
struct Shared {
    id: TopologyId,
    state: Mutex<State>,
    /// Woken (`notify_waiters`) on every commit on any node and every session change.
    changed: Arc<Notify>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            id: TopologyId::next(),
            state: Mutex::default(),
            changed: Arc::default(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    nodes: Vec<Node>,
    connections: BTreeMap<u64, Connection>,
    next_connection: u64,
}

#[derive(Debug)]
struct Node {
    name: String,
    db: Arc<Database>,
    role: NodeRole,
    listener: u64,
}

type SessionTask = JoinHandle<Result<SessionReport, NetError>>;

#[derive(Debug)]
struct Connection {
    a: NodeHandle,
    b: NodeHandle,
    shutdown: CancellationToken,
    monitors: (SessionMonitor, SessionMonitor),
    tasks: (SessionTask, SessionTask),
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for c in state.connections.values() {
            c.shutdown.cancel();
        }
        for n in &state.nodes {
            n.db.remove_commit_listener(n.listener);
        }
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Topology {
        Topology::default()
    }

    /// Add a database as an ordinary peer.
    ///
    /// # Panics
    /// When the topology already holds [`TOPOLOGY_NODES_MAX`] nodes.
    pub fn register(&self, name: impl Into<String>, db: Arc<Database>) -> NodeHandle {
        self.register_with_role(name, db, NodeRole::Peer)
    }

    /// Add a database with a role (e.g. the hub of a hub-and-spoke topology as `Server`).
    ///
    /// # Panics
    /// When the topology already holds [`TOPOLOGY_NODES_MAX`] nodes.
    pub fn register_with_role(
        &self,
        name: impl Into<String>,
        db: Arc<Database>,
        role: NodeRole,
    ) -> NodeHandle {
        let mut state = self.lock();
        assert!(
            state.nodes.len() < TOPOLOGY_NODES_MAX,
            "a topology holds at most {TOPOLOGY_NODES_MAX} nodes"
        );
        let changed = self.inner.changed.clone();
        let listener = db.on_commit(Arc::new(move || changed.notify_waiters()));
        state.nodes.push(Node {
            name: name.into(),
            db,
            role,
            listener,
        });
        self.node_handle(state.nodes.len() - 1)
    }

    /// The database of a node (`None` for a handle of another topology).
    pub fn database(&self, node: NodeHandle) -> Option<Arc<Database>> {
        self.node(&self.lock(), node).map(|n| n.db.clone())
    }

    /// The name a node was registered with (`None` for a handle of another topology).
    pub fn name(&self, node: NodeHandle) -> Option<String> {
        self.node(&self.lock(), node).map(|n| n.name.clone())
    }

    /// Every registered node, in registration order.
    pub fn nodes(&self) -> Vec<NodeHandle> {
        (0..self.lock().nodes.len())
            .map(|i| self.node_handle(i))
            .collect()
    }

    /// Connect `a` and `b` with default options and `mode` for `a` (`b` gets the complement).
    pub fn connect(
        &self,
        a: NodeHandle,
        b: NodeHandle,
        mode: SyncMode,
    ) -> Result<ConnectionHandle, NetError> {
        self.connect_with(
            a,
            b,
            ConnectOptions {
                mode,
                ..ConnectOptions::default()
            },
        )
    }

    /// Connect `a` and `b`: an in-process pipe with a session task on each end. Sync starts
    /// at once and runs until [`Topology::disconnect`], an error, or the topology is dropped.
    ///
    /// Fails with [`NetError::UnknownHandle`] for a handle of another topology, and with
    /// [`NetError::SameDatabase`] when both nodes have one node id (a node and itself, one
    /// database registered twice, a copy of a database file).
    pub fn connect_with(
        &self,
        a: NodeHandle,
        b: NodeHandle,
        opts: ConnectOptions,
    ) -> Result<ConnectionHandle, NetError> {
        let connected = self.connect_all(&[(a, b)], &opts)?;
        Ok(connected[0])
    }

    /// Connect every spoke to the hub (both ways). Spokes reach each other through the hub.
    /// All or nothing, as [`Topology::connect_mesh`].
    pub fn connect_hub_and_spoke(
        &self,
        hub: NodeHandle,
        spokes: &[NodeHandle],
    ) -> Result<Vec<ConnectionHandle>, NetError> {
        let pairs: Vec<_> = spokes.iter().map(|s| (*s, hub)).collect();
        self.connect_all(&pairs, &ConnectOptions::default())
    }

    /// Connect every node to every other node (both ways). All or nothing: every pair is
    /// checked (handles, distinct databases, the connection limit) before the first is
    /// connected, so an error leaves no connection behind that the caller has no handle of.
    pub fn connect_mesh(&self, nodes: &[NodeHandle]) -> Result<Vec<ConnectionHandle>, NetError> {
        let mut pairs = Vec::new();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                pairs.push((*a, *b));
            }
        }
        self.connect_all(&pairs, &ConnectOptions::default())
    }

    /// Connect each node to the next one (both ways): changes travel hop by hop. All or
    /// nothing, as [`Topology::connect_mesh`].
    pub fn connect_chain(&self, nodes: &[NodeHandle]) -> Result<Vec<ConnectionHandle>, NetError> {
        let pairs: Vec<_> = nodes.windows(2).map(|w| (w[0], w[1])).collect();
        self.connect_all(&pairs, &ConnectOptions::default())
    }

    /// A chain whose last node is also connected to its first. All or nothing, as
    /// [`Topology::connect_mesh`].
    pub fn connect_ring(&self, nodes: &[NodeHandle]) -> Result<Vec<ConnectionHandle>, NetError> {
        let mut pairs: Vec<_> = nodes.windows(2).map(|w| (w[0], w[1])).collect();
        if let (Some(first), Some(last)) = (nodes.first(), nodes.last()) {
            if nodes.len() > 2 {
                pairs.push((*last, *first));
            }
        }
        self.connect_all(&pairs, &ConnectOptions::default())
    }

    /// Connect every pair with `opts`, or none: all pairs are checked under one lock before
    /// the first connection starts.
    fn connect_all(
        &self,
        pairs: &[(NodeHandle, NodeHandle)],
        opts: &ConnectOptions,
    ) -> Result<Vec<ConnectionHandle>, NetError> {
        opts.check_policies()?;
        let mut state = self.lock();
        if state.connections.len() + pairs.len() > TOPOLOGY_CONNECTIONS_MAX {
            return Err(NetError::Limit("connections per topology"));
        }
        for &(a, b) in pairs {
            let (na, nb) = match (self.node(&state, a), self.node(&state, b)) {
                (Some(na), Some(nb)) => (na, nb),
                _ => return Err(NetError::UnknownHandle("node")),
            };
            // Checked here, with names, rather than met later as SAME_NODE in both sessions.
            if na.db.node_id() == nb.db.node_id() {
                return Err(NetError::SameDatabase {
                    a: na.name.clone(),
                    b: nb.name.clone(),
                    node: na.db.node_id(),
                });
            }
        }
        Ok(pairs
            .iter()
            .map(|&(a, b)| self.start_connection(&mut state, a, b, opts))
            .collect())
    }

    /// Start the two session tasks of a checked pair.
    fn start_connection(
        &self,
        state: &mut State,
        a: NodeHandle,
        b: NodeHandle,
        opts: &ConnectOptions,
    ) -> ConnectionHandle {
        let shutdown = CancellationToken::new();
        let monitors = (SessionMonitor::new(), SessionMonitor::new());
        let (io_a, io_b) = tokio::io::duplex(opts.buffer_bytes.max(1));
        let spawn_end =
            |node: &Node, mode: SyncMode, policy: &SyncPolicy, monitor: &SessionMonitor, io| {
                let cfg = SessionConfig {
                    mode,
                    server: node.role == NodeRole::Server,
                    policy: policy.clone(),
                    ..opts.session.clone()
                };
                let dopts = DriverOptions {
                    shutdown: shutdown.clone(),
                    monitor: Some(monitor.clone()),
                    ..DriverOptions::default()
                };
                let db = node.db.clone();
                let changed = self.inner.changed.clone();
                let mut rx = monitor.subscribe();
                // Forward this end's changes to the topology's notifier (for wait_converged).
                tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        changed.notify_waiters();
                    }
                    changed.notify_waiters();
                });
                tokio::spawn(run_session(db, io, cfg, dopts))
            };
        let ta = spawn_end(
            &state.nodes[a.index],
            opts.mode,
            &opts.first_policy,
            &monitors.0,
            io_a,
        );
        let tb = spawn_end(
            &state.nodes[b.index],
            complement(opts.mode),
            &opts.second_policy,
            &monitors.1,
            io_b,
        );
        let id = state.next_connection;
        state.next_connection += 1;
        state.connections.insert(
            id,
            Connection {
                a,
                b,
                shutdown,
                monitors,
                tasks: (ta, tb),
            },
        );
        self.connection_handle(id)
    }

    /// The two nodes of a connection.
    pub fn endpoints(&self, c: ConnectionHandle) -> Option<(NodeHandle, NodeHandle)> {
        self.lock()
            .connections
            .get(&self.connection_id(c)?)
            .map(|x| (x.a, x.b))
    }

    /// Every connection, in creation order.
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        self.lock()
            .connections
            .keys()
            .map(|k| self.connection_handle(*k))
            .collect()
    }

    /// Live counters of both ends of a connection.
    pub fn connection_snapshot(&self, c: ConnectionHandle) -> Option<ConnectionSnapshot> {
        self.lock()
            .connections
            .get(&self.connection_id(c)?)
            .map(|x| ConnectionSnapshot {
                a: x.monitors.0.snapshot(),
                b: x.monitors.1.snapshot(),
            })
    }

    /// Bytes sent so far by every session end of every connection (for measuring traffic
    /// over a quiet period).
    pub fn bytes_sent_total(&self) -> u64 {
        self.lock()
            .connections
            .values()
            .map(|x| {
                x.monitors.0.snapshot().stats.bytes_sent + x.monitors.1.snapshot().stats.bytes_sent
            })
            .sum()
    }

    /// End a connection politely (both ends send `ShuttingDown`) and return how each end
    /// finished. `None` for an unknown handle.
    pub async fn disconnect(&self, c: ConnectionHandle) -> Option<ConnectionReport> {
        let conn = self.lock().connections.remove(&self.connection_id(c)?)?;
        conn.shutdown.cancel();
        Some(ConnectionReport {
            a: join(conn.tasks.0).await,
            b: join(conn.tasks.1).await,
        })
    }

    /// Cut a connection abruptly, as a crashed process or a dead network would: both session
    /// tasks are aborted mid-flight without a goodbye. Applied units are durable (data and
    /// cursor commit together), so a later connection resumes after the last applied unit.
    pub fn sever(&self, c: ConnectionHandle) -> bool {
        let Some(id) = self.connection_id(c) else {
            return false;
        };
        match self.lock().connections.remove(&id) {
            Some(conn) => {
                conn.tasks.0.abort();
                conn.tasks.1.abort();
                true
            }
            None => false,
        }
    }

    /// Disconnect every connection politely.
    pub async fn shutdown(&self) -> Vec<ConnectionReport> {
        let mut out = Vec::new();
        for c in self.connections() {
            if let Some(r) = self.disconnect(c).await {
                out.push(r);
            }
        }
        out
    }

    /// Wait until every node holds the same records (compared as canonical dumps) and every
    /// running session reports caught up. Woken by commits and session progress; no polling.
    /// Gives up at once, naming the connection and why, when a session has ended before it
    /// was caught up (a protocol error, a session that could not start).
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), ConvergeError> {
        self.wait(timeout, true).await
    }

    /// Wait until every running session reports caught up in both directions, without
    /// comparing the nodes (for push-only or pull-only graphs, whose nodes legitimately
    /// differ). Gives up at once when a session has ended before it was caught up, as
    /// [`Topology::wait_converged`] does.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<(), ConvergeError> {
        self.wait(timeout, false).await
    }

    async fn wait(&self, timeout: Duration, compare: bool) -> Result<(), ConvergeError> {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let changed = self.inner.changed.clone();
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change during the check is not missed.
            notified.as_mut().enable();
            // On the blocking pool: it reads each database's head, which waits for a long
            // holder of that database's lock (a bulk apply) and would stall this executor
            // thread meanwhile (see `Driver::wait_out_long_lock_holder`).
            let me = self.clone();
            let checked = tokio::task::spawn_blocking(move || me.sessions_caught_up())
                .await
                .expect("the caught-up check does not panic");
            let sessions_caught_up = match checked {
                Ok(caught_up) => caught_up,
                Err(ended) => {
                    return Err(ConvergeError {
                        waited_ms: start.elapsed().as_millis() as u64,
                        records: self.compare_nodes().await.1,
                        sessions_caught_up: false,
                        ended_connection: Some(ended),
                    })
                }
            };
            let mut records = Vec::new();
            if sessions_caught_up && !compare {
                return Ok(());
            }
            if sessions_caught_up {
                let (same, counts) = self.compare_nodes().await;
                if same {
                    return Ok(());
                }
                records = counts;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if records.is_empty() {
                    records = self.compare_nodes().await.1;
                }
                return Err(ConvergeError {
                    waited_ms: start.elapsed().as_millis() as u64,
                    records,
                    sessions_caught_up,
                    ended_connection: None,
                });
            }
        }
    }

    /// True when every session reports caught up, evaluated against its database's current
    /// head (a commit the session has not seen yet means "not yet"). A session that has
    /// ended counts only if it ended caught up, without an error, and no commit came after:
    /// otherwise nothing will ever send the rest, and its connection is the error.
    fn sessions_caught_up(&self) -> Result<bool, EndedConnection> {
        let connections: Vec<_> = {
            let state = self.lock();
            let node = |h: NodeHandle| &state.nodes[h.index];
            state
                .connections
                .iter()
                .map(|(id, c)| {
                    let end = |h: NodeHandle, m: &SessionMonitor| {
                        (node(h).name.clone(), node(h).db.clone(), m.snapshot())
                    };
                    (
                        self.connection_handle(*id),
                        [end(c.a, &c.monitors.0), end(c.b, &c.monitors.1)],
                    )
                })
                .collect()
        };
        let mut all_caught_up = true;
        for (connection, ends) in connections {
            let caught_up = |db: &Database, s: &SessionSnapshot| {
                s.caught_up && db.last_seq().is_ok_and(|head| head <= s.local_seq)
            };
            let ended_behind = ends
                .iter()
                .any(|(_, db, s)| s.ended && (s.error.is_some() || !caught_up(db, s)));
            if ended_behind {
                return Err(EndedConnection {
                    connection,
                    nodes: (ends[0].0.clone(), ends[1].0.clone()),
                    ends: ends
                        .iter()
                        .filter(|(_, _, s)| s.ended)
                        .map(|(name, _, s)| {
                            let why = s.error.clone().unwrap_or_else(|| {
                                "it ended without an error, leaving later commits unsent".into()
                            });
                            (name.clone(), why)
                        })
                        .collect(),
                });
            }
            all_caught_up &= ends.iter().all(|(_, db, s)| caught_up(db, s));
        }
        Ok(all_caught_up)
    }

    /// Dump every node (on the blocking pool: a dump reads whole databases) and compare.
    async fn compare_nodes(&self) -> (bool, Vec<(String, usize)>) {
        let nodes: Vec<(String, Arc<Database>)> = self
            .lock()
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.db.clone()))
            .collect();
        let dumps = tokio::task::spawn_blocking(move || {
            nodes
                .into_iter()
                .map(|(name, db)| (name, canonical_dump(&db).ok()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let same =
            dumps.iter().all(|(_, d)| d.is_some()) && dumps.windows(2).all(|w| w[0].1 == w[1].1);
        let counts = dumps
            .iter()
            .map(|(n, d)| (n.clone(), d.as_ref().map_or(0, Vec::len)))
            .collect();
        (same, counts)
    }

    /// The node of a handle, if the handle is this topology's.
    fn node<'s>(&self, state: &'s State, h: NodeHandle) -> Option<&'s Node> {
        if h.topology != self.inner.id {
            return None;
        }
        state.nodes.get(h.index)
    }

    fn node_handle(&self, index: usize) -> NodeHandle {
        NodeHandle {
            topology: self.inner.id,
            index,
        }
    }

    /// The key of a connection handle, if the handle is this topology's.
    fn connection_id(&self, c: ConnectionHandle) -> Option<u64> {
        (c.topology == self.inner.id).then_some(c.id)
    }

    fn connection_handle(&self, id: u64) -> ConnectionHandle {
        ConnectionHandle {
            topology: self.inner.id,
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every update is a single insert or
        // remove), so a poisoned lock is safe to reuse.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A canonical dump of a database's records: one line `collection\tid\tfields-as-JSON` per
/// record, sorted. Two replicas that converged have equal dumps.
pub fn canonical_dump(db: &Database) -> Result<Vec<String>, blazedb::Error> {
    let mut out = Vec::new();
    for c in db.collections()? {
        for r in db.scan(&c)? {
            out.push(format!("{c}\t{}\t{}", r.id, r.to_json()));
        }
    }
    out.sort();
    Ok(out)
}

async fn join(task: SessionTask) -> Result<SessionReport, NetError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(NetError::Task(e.to_string())),
    }
}
