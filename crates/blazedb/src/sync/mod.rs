//! Sync: the sans-IO protocol that keeps replicas in step.
//!
//! - [`frame`]: length, type, flags, checksum; LZ4.
//! - [`message`]: message types and their payloads, session dictionaries.
//! - [`session`]: the per-peer state machine.
//!
//! Transports (in-process channels, Unix sockets, TCP/TLS, WebSocket) live in the tokio-side
//! crates and only move bytes between sessions.

pub mod access;
pub mod frame;
pub mod message;
pub mod session;

pub use access::{AccessControl, Rejection};
pub use message::{ErrorCode, Hello, Message, SyncMode};
pub use session::{Session, SessionConfig, SessionEvent, SessionProgress, SessionStats, SyncError};
