//! Sync: the sans-IO protocol that keeps replicas in step.
//!
//! - [`frame`]: length, type, flags, checksum; LZ4.
//! - [`message`]: message types and their payloads, session dictionaries.
//! - [`policy`]: selective sync (what a receiver asks for).
//! - [`session`]: the per-peer state machine.
//!
//! Transports (in-process channels, Unix sockets, TCP/TLS, WebSocket) live in the tokio-side
//! crates and only move bytes between sessions.

pub mod access;
pub mod frame;
pub mod message;
pub mod policy;
pub mod session;
pub mod snapshot;

pub use access::{AccessControl, Rejection};
pub use message::{ErrorCode, Hello, Message, SnapshotWish, SyncMode};
pub use policy::{CompiledPolicy, SyncPolicy};
pub use session::{
    EndReadiness, Session, SessionConfig, SessionEvent, SessionProgress, SessionStats, SyncError,
};
