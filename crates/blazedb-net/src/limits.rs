//! Every limit and tuning constant of the tokio drivers, named in one place (the protocol's
//! own limits live in `blazedb::limits`).

/// Bytes read from the transport per read call.
pub const READ_BUFFER_BYTES_DEFAULT: usize = 64 * 1024;

/// The driver stops asking the session for frames once this many bytes wait to be written.
/// The output buffer therefore holds at most this plus one frame
/// (`blazedb::limits::FRAME_BYTES_MAX`). The session's own window bounds how much it queues
/// meanwhile, so a slow reader on the far side slows the sender instead of growing memory.
pub const WRITE_BUFFER_BYTES_MAX_DEFAULT: usize = 256 * 1024;

/// After a session ends, how long the driver keeps flushing its last frames and reading
/// (and discarding) the peer's last bytes before it drops the transport. Lingering lets the
/// peer read our goodbye: a TCP socket dropped with unread input resets the connection,
/// which can destroy frames the peer has not read yet.
pub const LINGER_MS_DEFAULT: u64 = 2_000;

/// A read at least this large means bulk traffic: `handle_bytes` runs on tokio's blocking
/// pool, where one thread hop (tens of µs) is small next to decoding and applying it.
pub const BLOCKING_READ_BYTES_MIN: usize = 32 * 1024;

/// When about this many received cells wait in the session to be applied, the next
/// `handle_bytes` may apply them all in one SQLite transaction: run it on the blocking pool.
pub const BLOCKING_STAGED_CELLS_MIN: u64 = 8 * 1024;

/// When the previous `poll_transmit` round produced at least this many bytes, the feed is
/// being read in bulk: run the next round on the blocking pool.
pub const BLOCKING_TRANSMIT_BYTES_MIN: usize = 32 * 1024;

/// Capacity of each direction of an in-process connection (`tokio::io::duplex`), in bytes.
pub const DUPLEX_BUFFER_BYTES_DEFAULT: usize = 256 * 1024;

/// How often file-to-file watch mode checks each file's feed head for commits made by
/// other processes (those do not reach this process's commit listeners).
pub const FILE_POLL_INTERVAL_MS: u64 = 100;

/// Most sync rounds `sync_files_once` runs before it gives up on a file that keeps
/// changing under it (see `files` for why a second round can be needed).
pub const SYNC_ONCE_ROUNDS_MAX: u32 = 4;

/// Most nodes one topology holds.
pub const TOPOLOGY_NODES_MAX: usize = 1024;

/// Most connections one topology holds.
pub const TOPOLOGY_CONNECTIONS_MAX: usize = 16 * 1024;
