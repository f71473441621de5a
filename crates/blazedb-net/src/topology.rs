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
//! A node's sessions wake on its handle's commits (its commit listener) and on commits made
//! to its file through any other handle — another `Database` on the file in this process,
//! or another process: the topology watches each node's file from its first connection
//! ([`HeadWatch::spawn_event_driven`]: the file system tells of writes, and nothing polls
//! while the file is watched). Before, such a commit waited for the next PING (5 s).
//!
//! A connection outlives its sessions: when they end with an error that another attempt may
//! not meet (a timeout, a clock skew the peer refused, a busy file), a supervisor task
//! connects the two nodes again after a pause ([`Backoff`], as [`crate::sync_watch`] does
//! for a network peer), and the new sessions resume from the cursors both databases hold.
//! An error that another attempt would meet again (a refused policy, a file that cannot be
//! read) ends the connection for good, and [`Topology::wait_converged`] says so at once.
//!
//! ```text
//!   connect ──► run_session × 2 ──► both end ──► permanent? ──yes──► ended (wait fails)
//!                  ▲                                │ no
//!                  └──── sleep Backoff::next_delay ◄┘
//! ```
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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use blazedb::sync::{SessionConfig, SyncMode, SyncPolicy};
use blazedb::Database;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::driver::{run_session, DriverOptions, SessionMonitor, SessionReport, SessionSnapshot};
use crate::error::{ConvergeError, EndedConnection, NetError};
use crate::head_watch::HeadWatch;
use crate::limits::{
    DUPLEX_BUFFER_BYTES_DEFAULT, RECONNECT_STABLE_MS, TOPOLOGY_CONNECTIONS_MAX, TOPOLOGY_NODES_MAX,
};
use crate::reconnect::{is_permanent, Backoff, BackoffConfig};

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
    /// An ordinary replica. Registering as one leaves the database's server role
    /// ([`Database::set_server_role`]) as it is.
    #[default]
    Peer,
    /// A server/hub: its HELLO says so, and its database acts as a server, which gives its
    /// writes priority where a collection's policy asks for it
    /// (`CollectionPolicy::server_priority`: its value written again over a peer's newer
    /// concurrent one). Registering turns [`Database::set_server_role`] on for the handle —
    /// the role is the handle's, so it holds in all of the handle's sessions, in this
    /// topology or elsewhere — and dropping the topology turns it off again, unless it was on
    /// before (set by the application) or another topology still holds the handle as a
    /// server.
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
    /// Pauses before connecting the two nodes again after their sessions ended with an
    /// error that another attempt may not meet (see the module docs).
    pub backoff: BackoffConfig,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            mode: SyncMode::Both,
            buffer_bytes: DUPLEX_BUFFER_BYTES_DEFAULT,
            session: SessionConfig::default(),
            first_policy: SyncPolicy::everything(),
            second_policy: SyncPolicy::everything(),
            backoff: BackoffConfig::default(),
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

/// Live state of both ends of a connection: of its running sessions, or of the last ones
/// while it waits to connect again (their counters start over with each new session).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionSnapshot {
    /// The first node's end.
    pub a: SessionSnapshot,
    /// The second node's end.
    pub b: SessionSnapshot,
    /// Pairs of sessions the connection has started: 1 until its sessions first end and it
    /// connects again.
    pub sessions: u64,
}

/// How both ends of a disconnected connection finished (its last sessions).
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
    /// The server role this node holds on its database (a `Server` node), given back when
    /// the topology goes.
    _server_role: Option<ServerRoleHold>,
    /// Wakes the node's sessions on commits to its file that its handle's commit listener
    /// does not hear of: through another handle, in this process or another. Started with the
    /// node's first connection (it needs the runtime).
    heads: Option<Arc<HeadWatch>>,
}

/// A hold on a database handle's server role ([`Database::set_server_role`]) by a node
/// registered as [`NodeRole::Server`]: the role is on while any hold of that handle lives,
/// and goes back to what it was before the first when the last one goes.
#[derive(Debug)]
struct ServerRoleHold {
    db: Arc<Database>,
}

impl ServerRoleHold {
    fn take(db: &Arc<Database>) -> ServerRoleHold {
        let mut holds = server_role_holds();
        let (count, _) = holds
            .entry(handle_key(db))
            .or_insert_with(|| (0, db.is_server()));
        *count += 1;
        db.set_server_role(true);
        ServerRoleHold { db: db.clone() }
    }
}

impl Drop for ServerRoleHold {
    fn drop(&mut self) {
        let mut holds = server_role_holds();
        let key = handle_key(&self.db);
        if let Some((count, was_on)) = holds.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                if !*was_on {
                    self.db.set_server_role(false);
                }
                holds.remove(&key);
            }
        }
    }
}

/// The holds of the process's database handles on their server role: (holds, whether the
/// role was on before the first), by handle. A handle's key is its address, which no other
/// handle can take while a hold keeps the handle alive.
fn server_role_holds() -> MutexGuard<'static, HashMap<usize, (usize, bool)>> {
    static HOLDS: OnceLock<Mutex<HashMap<usize, (usize, bool)>>> = OnceLock::new();
    HOLDS
        .get_or_init(Mutex::default)
        .lock()
        // Every update is a whole entry's: a poisoned lock is safe to reuse.
        .unwrap_or_else(|e| e.into_inner())
}

fn handle_key(db: &Arc<Database>) -> usize {
    Arc::as_ptr(db) as usize
}

type SessionTask = JoinHandle<Result<SessionReport, NetError>>;

#[derive(Debug)]
struct Connection {
    a: NodeHandle,
    b: NodeHandle,
    shutdown: CancellationToken,
    monitors: (SessionMonitor, SessionMonitor),
    /// Shared with the connection's supervisor ([`supervise`]).
    link: Arc<Mutex<Link>>,
    /// The supervisor: runs session pairs until the connection ends, and returns how the
    /// last pair finished.
    supervisor: JoinHandle<ConnectionReport>,
}

/// What a connection's supervisor and the topology share.
#[derive(Debug, Default)]
struct Link {
    /// Session pairs started.
    sessions: u64,
    /// The last pair ended with an error that another attempt would meet again: the
    /// connection is over (a wait for convergence fails, naming it).
    ended: bool,
    /// [`Topology::sever`] cut the connection: start no more sessions. Checked under the same
    /// lock that records the running sessions, so a pair is never started unseen by `sever`.
    severed: bool,
    /// The running sessions, for `sever` to abort.
    running: Option<(AbortHandle, AbortHandle)>,
}

/// One end of a connection, as its supervisor starts sessions on it.
struct End {
    db: Arc<Database>,
    cfg: SessionConfig,
    monitor: SessionMonitor,
    /// The node's head watch: each session subscribes.
    heads: Arc<HeadWatch>,
}

/// Everything a connection's supervisor needs.
struct Supervised {
    ends: (End, End),
    buffer_bytes: usize,
    backoff: BackoffConfig,
    shutdown: CancellationToken,
    link: Arc<Mutex<Link>>,
    changed: Arc<Notify>,
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

    /// Add a database with a role (e.g. the hub of a hub-and-spoke topology as `Server`,
    /// which turns the database's server role on until the topology is dropped: see
    /// [`NodeRole::Server`]).
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
        let server_role = (role == NodeRole::Server).then(|| ServerRoleHold::take(&db));
        state.nodes.push(Node {
            name: name.into(),
            db,
            role,
            listener,
            _server_role: server_role,
            heads: None,
        });
        self.node_handle(state.nodes.len() - 1)
    }

    /// The database of a node (`None` for a handle of another topology).
    pub fn database(&self, node: NodeHandle) -> Option<Arc<Database>> {
        self.node(&self.lock(), node).map(|n| n.db.clone())
    }

    /// Why commits to a node's file through other handles (another `Database` on the file,
    /// in this process or another) are noticed only by polling, every
    /// [`HEAD_POLL_INTERVAL_MS`](crate::limits::HEAD_POLL_INTERVAL_MS): the operating system
    /// refused to watch the file (see [`HeadWatch::file_watch_error`]). `None` when it
    /// watches, before the node's first connection, and for a handle of another topology.
    pub fn file_watch_error(&self, node: NodeHandle) -> Option<String> {
        let state = self.lock();
        let heads = self.node(&state, node)?.heads.as_ref()?;
        heads.file_watch_error().map(str::to_owned)
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
    /// at once and runs until [`Topology::disconnect`], an error that another attempt would
    /// meet again, or the topology is dropped; after any other error the two nodes are
    /// connected again after a pause ([`ConnectOptions::backoff`], see the module docs).
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

    /// Start the supervisor of a checked pair, which starts its two session tasks.
    fn start_connection(
        &self,
        state: &mut State,
        a: NodeHandle,
        b: NodeHandle,
        opts: &ConnectOptions,
    ) -> ConnectionHandle {
        let shutdown = CancellationToken::new();
        let monitors = (SessionMonitor::new(), SessionMonitor::new());
        for i in [a.index, b.index] {
            let node = &mut state.nodes[i];
            if node.heads.is_none() {
                node.heads = Some(Arc::new(HeadWatch::spawn_event_driven(node.db.clone())));
            }
        }
        let end = |node: &Node, mode: SyncMode, policy: &SyncPolicy, monitor: &SessionMonitor| {
            let changed = self.inner.changed.clone();
            let mut rx = monitor.subscribe();
            // Forward this end's changes to the topology's notifier (for wait_converged), for
            // every session the connection runs: it stops with the connection's monitors.
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    changed.notify_waiters();
                }
                changed.notify_waiters();
            });
            End {
                db: node.db.clone(),
                cfg: SessionConfig {
                    mode,
                    server: node.role == NodeRole::Server,
                    policy: policy.clone(),
                    ..opts.session.clone()
                },
                monitor: monitor.clone(),
                heads: node.heads.clone().expect("started above"),
            }
        };
        let link = Arc::new(Mutex::new(Link::default()));
        let supervised = Supervised {
            ends: (
                end(
                    &state.nodes[a.index],
                    opts.mode,
                    &opts.first_policy,
                    &monitors.0,
                ),
                end(
                    &state.nodes[b.index],
                    complement(opts.mode),
                    &opts.second_policy,
                    &monitors.1,
                ),
            ),
            buffer_bytes: opts.buffer_bytes.max(1),
            backoff: opts.backoff.clone(),
            shutdown: shutdown.clone(),
            link: link.clone(),
            changed: self.inner.changed.clone(),
        };
        let supervisor = tokio::spawn(supervise(supervised));
        let id = state.next_connection;
        state.next_connection += 1;
        state.connections.insert(
            id,
            Connection {
                a,
                b,
                shutdown,
                monitors,
                link,
                supervisor,
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
                sessions: lock_link(&x.link).sessions,
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

    /// End a connection politely (both ends send `ShuttingDown`; one waiting to connect again
    /// does not) and return how each end of its last sessions finished. `None` for an
    /// unknown handle.
    pub async fn disconnect(&self, c: ConnectionHandle) -> Option<ConnectionReport> {
        let conn = self.lock().connections.remove(&self.connection_id(c)?)?;
        conn.shutdown.cancel();
        Some(match conn.supervisor.await {
            Ok(report) => report,
            Err(e) => ConnectionReport {
                a: Err(NetError::Task(e.to_string())),
                b: Err(NetError::Task(e.to_string())),
            },
        })
    }

    /// Cut a connection abruptly, as a crashed process or a dead network would: both session
    /// tasks are aborted mid-flight without a goodbye, and the connection is not made again.
    /// Applied units are durable (data and cursor commit together), so a later connection
    /// resumes after the last applied unit.
    pub fn sever(&self, c: ConnectionHandle) -> bool {
        let Some(id) = self.connection_id(c) else {
            return false;
        };
        let Some(conn) = self.lock().connections.remove(&id) else {
            return false;
        };
        conn.supervisor.abort();
        let mut link = lock_link(&conn.link);
        link.severed = true;
        if let Some((a, b)) = link.running.take() {
            a.abort();
            b.abort();
        }
        true
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
    /// Gives up at once, naming the connection and why, when a connection has ended for good
    /// (an error another attempt would meet again: a policy the peer refuses, a session that
    /// could not start on its file). A connection between sessions is waited for; if the time
    /// runs out meanwhile, the error says why its last sessions ended.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), ConvergeError> {
        self.wait(timeout, true).await
    }

    /// Wait until every running session reports caught up in both directions, without
    /// comparing the nodes (for push-only or pull-only graphs, whose nodes legitimately
    /// differ). Gives up at once when a connection has ended for good, and waits for one
    /// between sessions, as [`Topology::wait_converged`] does.
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
            let (sessions_caught_up, reconnecting) = match checked {
                Ok(p) => (p.caught_up, p.reconnecting),
                Err(ended) => {
                    return Err(ConvergeError {
                        waited_ms: start.elapsed().as_millis() as u64,
                        records: self.compare_nodes().await.1,
                        sessions_caught_up: false,
                        ended_connection: Some(ended),
                        reconnecting: Vec::new(),
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
                    reconnecting,
                });
            }
        }
    }

    /// Whether every session reports caught up, evaluated against its database's current
    /// head (a commit the session has not seen yet means "not yet"), and which connections
    /// are between sessions (not caught up: their supervisors connect them again). A
    /// connection that ended for good is the error: nothing will ever send the rest.
    fn sessions_caught_up(&self) -> Result<Progress, EndedConnection> {
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
                        lock_link(&c.link).ended,
                        [end(c.a, &c.monitors.0), end(c.b, &c.monitors.1)],
                    )
                })
                .collect()
        };
        let mut progress = Progress {
            caught_up: true,
            reconnecting: Vec::new(),
        };
        for (connection, ended_for_good, ends) in connections {
            let described = || EndedConnection {
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
            };
            if ended_for_good {
                return Err(described());
            }
            if ends.iter().any(|(_, _, s)| s.ended) {
                progress.caught_up = false;
                progress.reconnecting.push(described());
                continue;
            }
            progress.caught_up &= ends.iter().all(|(_, db, s)| {
                s.caught_up && db.last_seq().is_ok_and(|head| head <= s.local_seq)
            });
        }
        Ok(progress)
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

/// What [`Topology::sessions_caught_up`] found.
struct Progress {
    /// Every connection's sessions report caught up.
    caught_up: bool,
    /// Connections between sessions, with why their last sessions ended.
    reconnecting: Vec<EndedConnection>,
}

/// Run a connection's session pairs: start one, wait for both ends, and unless the
/// connection was shut down or an end met an error another attempt would meet again, start
/// the next after a pause (see the module docs). Returns how the last pair finished.
async fn supervise(s: Supervised) -> ConnectionReport {
    let mut backoff = Backoff::new(s.backoff.clone());
    loop {
        let started = Instant::now();
        let Some((ta, tb)) = s.start_pair() else {
            let severed = || Err(NetError::Task("the connection was severed".into()));
            return ConnectionReport {
                a: severed(),
                b: severed(),
            };
        };
        let (a, b) = (join(ta).await, join(tb).await);
        let permanent = [&a, &b].into_iter().any(|r| match r {
            // A panicked or aborted task is a bug or a severed connection: not retried.
            Err(e) => is_permanent(e) || matches!(e, NetError::Task(_)),
            Ok(_) => false,
        });
        if s.shutdown.is_cancelled() {
            return ConnectionReport { a, b };
        }
        if permanent {
            lock_link(&s.link).ended = true;
            s.changed.notify_waiters();
            return ConnectionReport { a, b };
        }
        // A pair that got going proves the connection works: start the delays over. One
        // that fails at once keeps backing off.
        let met_peer = |r: &Result<SessionReport, NetError>| match r {
            Ok(r) => r.peer.is_some(),
            Err(e) => e.report().is_some_and(|r| r.peer.is_some()),
        };
        let stable = started.elapsed() >= Duration::from_millis(RECONNECT_STABLE_MS);
        if met_peer(&a) && met_peer(&b) && stable {
            backoff.reset();
        }
        let delay = Duration::from_millis(backoff.next_delay_ms(rand::random()));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = s.shutdown.cancelled() => return ConnectionReport { a, b },
        }
    }
}

impl Supervised {
    /// Start a pair of sessions over a new in-process pipe, unless the connection was severed.
    fn start_pair(&self) -> Option<(SessionTask, SessionTask)> {
        let mut link = lock_link(&self.link);
        if link.severed {
            return None;
        }
        let (io_a, io_b) = tokio::io::duplex(self.buffer_bytes);
        let spawn_end = |end: &End, io| {
            let opts = DriverOptions {
                shutdown: self.shutdown.clone(),
                monitor: Some(end.monitor.clone()),
                wake: Some(end.heads.subscribe()),
                ..DriverOptions::default()
            };
            tokio::spawn(run_session(end.db.clone(), io, end.cfg.clone(), opts))
        };
        let ta = spawn_end(&self.ends.0, io_a);
        let tb = spawn_end(&self.ends.1, io_b);
        link.running = Some((ta.abort_handle(), tb.abort_handle()));
        link.sessions += 1;
        Some((ta, tb))
    }
}

fn lock_link(link: &Mutex<Link>) -> MutexGuard<'_, Link> {
    // Every update is a single assignment: a poisoned lock is safe to reuse.
    link.lock().unwrap_or_else(|e| e.into_inner())
}

async fn join(task: SessionTask) -> Result<SessionReport, NetError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(NetError::Task(e.to_string())),
    }
}
