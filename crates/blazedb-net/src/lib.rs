//! # blazedb-net
//!
//! The tokio side of BlazeDB sync. The protocol lives in the core crate as a sans-IO state
//! machine (`blazedb::sync::Session`); this crate only moves its bytes and runs its timers.
//!
//! ```text
//!   Database ──on_commit──► Notify ─┐
//!                                   ▼
//!   AsyncRead + AsyncWrite ◄──► run_session ◄──► Session (sans-IO, core crate)
//!          ▲
//!          ├── tokio::io::duplex   (Topology: pairs, hub and spoke, mesh, chain, ring)
//!          ├── sync_files_once / sync_files_watch  (`blazedb sync DB_A DB_B`)
//!          └── any socket: TCP, Unix, TLS, WebSocket adapters
//! ```
//!
//! - [`driver`]: [`run_session`] pumps one session over any byte stream.
//! - [`checkpoint`]: [`spawn_checkpointer`] checkpoints a database's WAL in the background.
//! - [`topology`]: [`Topology`] connects databases of this process in any graph.
//! - [`files`]: [`sync_files_once`] and [`sync_files_watch`] sync two database files.
//! - [`transport`]: TCP, TLS and Unix socket connections ([`connect`]) and listeners
//!   ([`listen`](fn@listen)), URLs ([`Endpoint`]), the listener's token check.
//! - [`reconnect`]: [`sync_once`] and [`sync_watch`] (reconnect with backoff) against a URL.
//! - [`head_watch`]: wake sessions on commits made by other processes.
//! - [`peer_lock`]: one sync of a database file with one peer at a time, across processes.
//! - [`discovery`]: LAN discovery over mDNS (`_blazedb._tcp.local.`): advertise, browse.
//! - [`auth_failures`]: wrong credentials per client address, past a limit refused unread
//!   for a while (the listener's and the relay's guard against guessing).
//! - [`limits`]: every buffer size, timeout and bound of this crate.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use blazedb::{Database, OpenOptions};
//! use blazedb::sync::SyncMode;
//! use blazedb_net::Topology;
//!
//! let dir = tempfile::tempdir()?;
//! let open = |n: &str| Database::open(dir.path().join(n), OpenOptions::default()).map(Arc::new);
//! let (phone, laptop) = (open("phone.db")?, open("laptop.db")?);
//! phone.insert("notes", [("text", "hello")])?;
//!
//! let topo = Topology::new();
//! let (p, l) = (topo.register("phone", phone), topo.register("laptop", laptop.clone()));
//! topo.connect(p, l, SyncMode::Both)?;
//! topo.wait_converged(std::time::Duration::from_secs(10)).await?;
//! assert_eq!(laptop.count("notes")?, 1);
//! topo.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth_failures;
pub mod checkpoint;
pub mod discovery;
pub mod driver;
pub mod error;
mod file_changes;
pub mod file_stamp;
pub mod files;
pub mod head_watch;
pub mod limits;
pub mod peer_lock;
pub mod rate;
pub mod reconnect;
pub mod secret_file;
pub mod topology;
pub mod transport;
pub mod ws;

pub use checkpoint::{spawn_checkpointer, Checkpointer};
pub use driver::{
    run_session, CredentialRecheck, DriverOptions, EndReason, PeerCheck, Restart, SessionMonitor,
    SessionReport, SessionSnapshot,
};
pub use error::{ConvergeError, EndedConnection, NetError};
pub use files::{
    sync_files_once, sync_files_watch, DirectionReport, FilesNotice, SyncFilesOptions,
    SyncFilesReport,
};
pub use reconnect::{sync_once, sync_watch, ClientError, ClientEvent, ClientOptions, ClientReport};
pub use topology::{
    canonical_dump, complement, ConnectOptions, ConnectionHandle, ConnectionReport,
    ConnectionSnapshot, NodeHandle, NodeRole, Topology,
};
pub use transport::{connect, listen, Endpoint, ListenConfig, Listener, TransportError};
