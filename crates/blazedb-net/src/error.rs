//! Errors of the drivers. Each variant that ends a running session carries the session's
//! report, so a caller always learns how far the session got (bytes, cells, peer).

use std::fmt;
use std::path::PathBuf;

use blazedb::sync::SyncError;
use blazedb::NodeId;

use crate::driver::SessionReport;
use crate::topology::ConnectionHandle;

/// Why a driver, a file sync or a topology operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Reading the database to start the session failed.
    #[error("cannot start the sync session: {0}")]
    Database(#[from] blazedb::Error),
    /// A database file could not be opened. The message names the file once: the library's
    /// error does already for most causes (`blazedb::Error::names_the_file`), and then it is
    /// the whole message.
    #[error("{}", open_message(path, source))]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong (wrong password, corruption, permissions...).
        source: blazedb::Error,
    },
    /// Both paths name the same file; a file cannot sync with itself.
    #[error("{} and {} are the same file: name two different databases", a.display(), b.display())]
    SameFile {
        /// First path as given.
        a: PathBuf,
        /// Second path as given.
        b: PathBuf,
    },
    /// The session ended with a protocol error, detected here or reported by the peer.
    #[error("{error}")]
    Sync {
        /// The protocol error.
        error: SyncError,
        /// How far the session got.
        report: Box<SessionReport>,
    },
    /// The transport failed (read or write error). A TLS peer refusing our client
    /// certificate is met here too (TLS 1.3 tells the client on its first read), and is said
    /// so ([`client_certificate_refusal`](crate::transport::error::client_certificate_refusal)).
    #[error("sync transport failed: {source}{}", tls_advice(source))]
    Io {
        /// The I/O error.
        source: std::io::Error,
        /// How far the session got.
        report: Box<SessionReport>,
    },
    /// The peer closed the connection without saying goodbye (a crashed peer or a cut
    /// network); reconnect to resume where the acknowledged data left off.
    #[error("the peer closed the connection without ending the session; reconnect to resume")]
    Disconnected {
        /// How far the session got.
        report: Box<SessionReport>,
    },
    /// The session was asked to stop once caught up, but the peer stopped first while this
    /// side still had changes in flight (a write happened during the sync); run it again.
    #[error(
        "the peer finished before this side was caught up (a write landed during the sync); \
         sync again to send the rest"
    )]
    Incomplete {
        /// How far the session got.
        report: Box<SessionReport>,
    },
    /// The session was asked to stop once caught up, but the peer was shut down (a listener
    /// or relay stopping) before this side was caught up; run it again.
    #[error("the peer shut down before the sync finished (it said: {message}); run sync again")]
    PeerShutDown {
        /// The peer's goodbye message.
        message: String,
        /// How far the session got.
        report: Box<SessionReport>,
    },
    /// A file kept changing: `sync_files_once` ran its maximum number of rounds without
    /// both sides ending caught up.
    #[error("still not caught up after {rounds} rounds: the files keep changing; use watch mode")]
    NotSettled {
        /// Rounds run.
        rounds: u32,
    },
    /// A topology limit was reached.
    #[error("topology limit reached: {0}")]
    Limit(&'static str),
    /// A topology handle does not belong to this topology (or was removed).
    #[error("unknown {0} handle for this topology")]
    UnknownHandle(&'static str),
    /// A topology connection between two nodes with one node id: a node and itself, one
    /// database registered twice, or two copies of one database file. Their sessions would
    /// only fail with `SAME_NODE`.
    #[error(
        "{a} and {b} are the same database (node {node}): a database cannot sync with itself; \
         connect two different databases (a copied file keeps its node id: give each replica \
         its own file through export/import or a snapshot)"
    )]
    SameDatabase {
        /// The first node's name.
        a: String,
        /// The second node's name.
        b: String,
        /// Their node id.
        node: NodeId,
    },
    /// Options that contradict each other (say what to change).
    #[error("invalid connection options: {0}")]
    InvalidOptions(String),
    /// A driver task panicked or was aborted.
    #[error("sync task did not finish: {0}")]
    Task(String),
}

/// "cannot open PATH: why", or only the library's error where it names the file itself
/// ("wrong password for PATH: ...", "cannot open PATH: the disk that holds ... is full"):
/// until 2026-12-07 such messages said "cannot open PATH: cannot open PATH: ...".
fn open_message(path: &std::path::Path, source: &blazedb::Error) -> String {
    match source.names_the_file() {
        true => source.to_string(),
        false => format!("cannot open {}: {source}", path.display()),
    }
}

/// ": what to do" when a transport error is the peer refusing our TLS client certificate.
fn tls_advice(e: &std::io::Error) -> String {
    crate::transport::error::client_certificate_refusal(e)
        .map(|advice| format!(": {advice}"))
        .unwrap_or_default()
}

impl NetError {
    /// The session report, for errors that ended a running session.
    pub fn report(&self) -> Option<&SessionReport> {
        match self {
            NetError::Sync { report, .. }
            | NetError::Io { report, .. }
            | NetError::Disconnected { report }
            | NetError::Incomplete { report }
            | NetError::PeerShutDown { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// `Topology::wait_converged` (or `wait_caught_up`) gave up: the time ran out, or a session
/// ended before it was caught up, which no amount of waiting mends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeError {
    /// How long it waited.
    pub waited_ms: u64,
    /// (node name, records) per node at the last check.
    pub records: Vec<(String, usize)>,
    /// Whether every running session reported caught up at the last check.
    pub sessions_caught_up: bool,
    /// The connection whose sessions ended, which made the wait give up at once (`None`: the
    /// time ran out).
    pub ended_connection: Option<EndedConnection>,
    /// Connections between sessions when the time ran out (their supervisors connect them
    /// again after a pause), with why their last sessions ended.
    pub reconnecting: Vec<EndedConnection>,
}

/// A topology connection with a session that ended before it was caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedConnection {
    /// The connection (still registered: disconnect it to collect both reports).
    pub connection: ConnectionHandle,
    /// The names of its first and second node.
    pub nodes: (String, String),
    /// Each end that ended: its node's name and why (the driver's error). Both are given:
    /// when one end fails, the other usually ends only because its peer went away.
    pub ends: Vec<(String, String)>,
}

impl fmt::Display for ConvergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(c) = &self.ended_connection else {
            write!(
                f,
                "not converged after {} ms: records per node {:?}, sessions caught up: {}",
                self.waited_ms, self.records, self.sessions_caught_up
            )?;
            for c in &self.reconnecting {
                write!(
                    f,
                    "; the connection {} - {} is connecting again",
                    c.nodes.0, c.nodes.1
                )?;
                for (node, why) in &c.ends {
                    write!(f, "; {node}'s last session: {why}")?;
                }
            }
            return Ok(());
        };
        write!(
            f,
            "the connection {} - {} stopped before it was caught up",
            c.nodes.0, c.nodes.1
        )?;
        for (node, why) in &c.ends {
            write!(f, "; {node}'s session: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConvergeError {}
