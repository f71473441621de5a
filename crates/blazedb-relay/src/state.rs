//! What every connection of a relay shares: the store, authentication, rules, metrics, limits,
//! the connection slots and the registry of running sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use blazedb::Database;
use blazedb_net::SessionMonitor;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::metrics::{Metrics, Transport};
use crate::rules::Rules;

/// Shared by all connections of one relay.
#[derive(Debug)]
pub(crate) struct State {
    pub db: Arc<Database>,
    pub auth: Arc<Authenticator>,
    pub rules: Arc<Rules>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Allowed browser origins, lowercase, without a trailing `/`; empty: any.
    pub origins: Vec<String>,
    pub started: Instant,
    /// Cancelled when the relay shuts down; sessions get child tokens.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// One permit per open connection (`Limits::connections_max`).
    pub slots: Arc<Semaphore>,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next_session: AtomicU64,
}

/// A running sync session, for `/health`, lag metrics and (later) the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct SessionEntry {
    pub monitor: SessionMonitor,
    #[allow(dead_code)] // Read by the dashboard (issue: live dashboard page).
    pub transport: Transport,
}

impl State {
    pub fn new(
        db: Arc<Database>,
        auth: Authenticator,
        rules: Rules,
        limits: Limits,
        origins: Vec<String>,
    ) -> State {
        State {
            db,
            auth: Arc::new(auth),
            rules: Arc::new(rules),
            metrics: Arc::new(Metrics::new()),
            slots: Arc::new(Semaphore::new(limits.connections_max)),
            limits,
            origins,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// Add a running session; returns its key for [`State::unregister`].
    pub fn register(&self, entry: SessionEntry) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.lock_sessions().insert(id, entry);
        id
    }

    pub fn unregister(&self, id: u64) {
        self.lock_sessions().remove(&id);
    }

    /// The running sessions.
    pub fn sessions(&self) -> Vec<SessionEntry> {
        self.lock_sessions().values().cloned().collect()
    }

    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Size of the store file and its write-ahead log, in bytes.
    pub fn store_bytes(&self) -> u64 {
        let path = self.db.path();
        let wal = format!("{}-wal", path.display());
        [path.to_owned(), wal.into()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether a browser origin may connect (requests without `Origin` always may).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(o) => {
                let o = o.trim_end_matches('/').to_ascii_lowercase();
                self.origins.contains(&o)
            }
        }
    }
}
