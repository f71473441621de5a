//! Why a relay could not start. Everything that can be wrong with the configuration is found
//! before the relay accepts its first connection; errors of single connections never stop it.

use std::io;
use std::path::PathBuf;

/// A relay could not start (or stopped because a listener failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The data directory could not be created or used.
    #[error(
        "cannot use the data directory {}: {source}: `RelayConfig::data_dir` must name a \
         directory this user may write to (it is created if missing)",
        path.display()
    )]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The data directory belongs to another user, or other users may write to it: they
    /// could replace or read the store (`data_dir.rs`).
    #[error("the data directory {} is not safe to keep the store in: {reason}", path.display())]
    DataDirUnsafe {
        /// The directory.
        path: PathBuf,
        /// Who else could change it, and what to do.
        reason: String,
    },
    /// The store could not be opened (wrong password, corruption, permissions...). The
    /// message names the file once (see [`store_message`]).
    #[error("{}", store_message(path, source))]
    Store {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        source: blazedb::Error,
    },
    /// The store file is empty (0 bytes) but its write-ahead log beside it holds data: the
    /// store was cut short, and its last commits may be in the log. The relay does not
    /// create a new store over it.
    #[error(
        "the relay store {} is empty (0 bytes) but its write-ahead log {}-wal holds \
         {wal_bytes} bytes: the store was truncated, and its last changes may be in the log. \
         The relay will not create a new store over them: move both files out of the data \
         directory (keep them), then restore the store from a backup or start the relay \
         with an empty one",
        path.display(), path.display()
    )]
    StoreTruncated {
        /// The store file.
        path: PathBuf,
        /// The size of its write-ahead log.
        wal_bytes: u64,
    },
    /// The rules file is missing, unreadable or invalid.
    #[error("rules file {}: {}{message}", path.display(), location(collection, key))]
    Rules {
        /// The rules file.
        path: PathBuf,
        /// The collection (table) the problem is in, if any.
        collection: Option<String>,
        /// The key (`read` or `write`) the problem is in, if any.
        key: Option<String>,
        /// What is wrong (for an expression: the parser's message with its column).
        message: String,
    },
    /// The authentication settings are unusable (unreadable key file, unknown key type...).
    #[error("authentication: {0}")]
    Auth(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The flags contradict each other or are unsafe.
    #[error("{0}")]
    Config(String),
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind {
        /// The address or socket path.
        addr: String,
        /// What went wrong (address in use, permission denied...).
        source: io::Error,
    },
    /// The Unix socket (`--unix`) could not be opened. The socket error says what to do when
    /// something is already at the path (a live listener, a file that is not a socket).
    #[error(
        "cannot listen on the Unix socket {} (--unix): {source}{}",
        path.display(),
        unix_bind_hint(source)
    )]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// What to do about the reasons a Unix socket cannot be bound that its error leaves unsaid.
fn unix_bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => ": choose a path in a directory this user may write to",
        io::ErrorKind::NotFound => ": the socket's directory does not exist: create it first",
        _ => "",
    }
}

/// What to do about the common reasons a listener cannot be opened.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            ": another process (another relay?) listens there: stop it, or choose another \
             port (--listen, --tcp-listen)"
        }
        io::ErrorKind::PermissionDenied => {
            ": ports below 1024 need privileges: choose a port from 1024 up (or, for a Unix \
             socket, a directory this user may write to)"
        }
        io::ErrorKind::AddrNotAvailable => {
            ": no network interface of this machine has that address: use 127.0.0.1 (this \
             machine only) or 0.0.0.0 (every interface)"
        }
        io::ErrorKind::NotFound => ": the socket's directory does not exist: create it first",
        _ => "",
    }
}

/// "cannot open the relay store PATH: why", the path left out where the library's error
/// names it already ("cannot open the relay store: wrong password for PATH: ..."; until
/// 2026-12-07 "cannot open the relay store PATH: cannot open PATH: ...").
fn store_message(path: &std::path::Path, source: &blazedb::Error) -> String {
    match source.names_the_file() {
        true => format!("cannot open the relay store: {source}"),
        false => format!("cannot open the relay store {}: {source}", path.display()),
    }
}

fn location(collection: &Option<String>, key: &Option<String>) -> String {
    match (collection, key) {
        (Some(c), Some(k)) => format!("[{c}] {k}: "),
        (Some(c), None) => format!("[{c}]: "),
        _ => String::new(),
    }
}
