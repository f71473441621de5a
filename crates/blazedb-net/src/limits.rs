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

/// A database lock held at least this long belongs to a long operation (a bulk apply, a
/// snapshot, a rekey), not to a commit (tens of µs): a driver about to call the database
/// waits for it on the blocking pool instead of on its executor thread.
pub const LOCK_HELD_LONG_US: u64 = 1_000;

/// When the previous `poll_transmit` round produced at least this many bytes, the feed is
/// being read in bulk: run the next round on the blocking pool.
pub const BLOCKING_TRANSMIT_BYTES_MIN: usize = 32 * 1024;

/// Capacity of each direction of an in-process connection (`tokio::io::duplex`), in bytes.
pub const DUPLEX_BUFFER_BYTES_DEFAULT: usize = 256 * 1024;

/// Most sync rounds `sync_files_once` runs before it gives up on a file that keeps
/// changing under it (see `files` for why a second round can be needed).
pub const SYNC_ONCE_ROUNDS_MAX: u32 = 4;

/// Most nodes one topology holds.
pub const TOPOLOGY_NODES_MAX: usize = 1024;

/// Most connections one topology holds.
pub const TOPOLOGY_CONNECTIONS_MAX: usize = 16 * 1024;

/// Limit for setting up a client connection (TCP connect, TLS and WebSocket handshakes).
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Limit for a client's TLS handshake at a listener: a connection that opens a socket and
/// says nothing must not hold a connection slot for long.
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// How often a TLS listener looks whether its certificate, key or client certificate
/// revocation lists changed (a `stat` of each file): a renewed certificate is served, and
/// sessions open with a client certificate revoked since end, within about this long.
pub const TLS_FILES_CHECK_INTERVAL_MS: u64 = 1_000;

/// Most sessions one listener serves at once; further connections wait in the backlog.
pub const LISTEN_CONNECTIONS_MAX_DEFAULT: usize = 1024;

/// Connection events a listener buffers for each slow observer before dropping the oldest.
pub const LISTEN_EVENTS_CAPACITY: usize = 256;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the listener does not
/// spin on an error that persists.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// How often a listener or a watching client checks its database's feed head for commits
/// made by other processes when the file system has not told it of a change (see
/// `head_watch`: the poll is the safety net behind the file-system watch).
pub const HEAD_POLL_INTERVAL_MS: u64 = 100;

/// The shortest time between two head checks prompted by the file system: this process's
/// own commits write the file too, and a busy writer must not turn the watch into a loop of
/// head queries. Another process's commit is noticed within this long of its write. More
/// than `blazedb::limits::HEAD_RECHECK_US`, so that a second look after this gap never gets
/// the cached head the first look got.
pub const HEAD_CHECK_GAP_US: u64 = 1_500;

/// First pause before reconnecting after a failure.
pub const RECONNECT_BACKOFF_INITIAL_MS: u64 = 200;

/// Longest pause between reconnection attempts.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 30_000;

/// Each consecutive failure multiplies the pause by this.
pub const RECONNECT_BACKOFF_MULTIPLIER: u32 = 2;

/// Each pause is shortened by a random share of up to this percentage, so that clients cut
/// off together (a relay restart) spread their reconnections.
pub const RECONNECT_JITTER_PERCENT: u32 = 50;

/// A session that lasted this long resets the backoff: the next failure waits only the
/// initial pause again. Shorter sessions (accepted, then dropped at once) keep backing off.
pub const RECONNECT_STABLE_MS: u64 = 5_000;

/// UDP port of mDNS (RFC 6762); LAN discovery uses it unless told otherwise.
pub const MDNS_PORT_DEFAULT: u16 = 5353;

/// How long `blazedb discover` listens for answers by default, in ms. Responders delay
/// their answers by up to ~500 ms (RFC 6762 §6) and a fresh one probes for ~750 ms first.
pub const DISCOVERY_BROWSE_MS_DEFAULT: u64 = 3_000;

/// Most peers one browse keeps; further services are ignored.
pub const DISCOVERY_PEERS_MAX: usize = 1024;

/// Most TXT entries read from, or announced in, one service.
pub const DISCOVERY_TXT_ENTRIES_MAX: usize = 32;

/// Longest `key=value` TXT entry (one DNS character-string).
pub const DISCOVERY_TXT_ENTRY_BYTES_MAX: usize = 255;

/// Longest DNS-SD instance name (one DNS label).
pub const DISCOVERY_INSTANCE_NAME_BYTES_MAX: usize = 63;

/// How long `Advertisement::withdraw` waits for the daemon to send its goodbye, in ms.
pub const DISCOVERY_WITHDRAW_WAIT_MS: u64 = 1_000;
/// How often [`spawn_checkpointer`](crate::spawn_checkpointer) checkpoints a database's WAL
/// (off the commit path; commits checkpoint themselves only past
/// `blazedb::limits::WAL_AUTOCHECKPOINT_PAGES`).
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// A checkpoint that copies fewer WAL frames than this is mostly fixed cost (an fsync of the
/// WAL, one of the file, one more to start the WAL over; ~0.8 ms of CPU each on the test VM),
/// so [`spawn_checkpointer`](crate::spawn_checkpointer) then waits twice as long for the
/// next, up to [`CHECKPOINT_BACKOFF_MAX`] times the interval; past twice this it halves the
/// wait again. The WAL of a slowly written file stays around this size (256 KiB).
pub const CHECKPOINT_FRAMES_WORTHWHILE: u64 = 64;
/// The longest wait between two checkpoints, as a multiple of the interval asked for.
pub const CHECKPOINT_BACKOFF_MAX: u32 = 8;
/// Each wait between checkpoints is longer or shorter by a random part of up to this
/// percentage, so that the checkpointers of many files opened together (a process serving
/// many databases; the 1,000-client benchmark) drift apart instead of all copying and
/// fsyncing at the same instant: that herd stalled every session of the 1,000-client run
/// for ~2 s once a second.
pub const CHECKPOINT_JITTER_PERCENT: u32 = 25;
/// The longest Unix socket path, in bytes: `sun_path` holds 108 on Linux, the last for the
/// terminating NUL (104 on macOS and the BSDs). A listener refuses a longer one rather than
/// bind where no client could connect.
pub const UNIX_SOCKET_PATH_BYTES_MAX: usize = 107;

/// Changes refused by the peer that a session's report lists (with the peer's reasons); the
/// report's counters count them all. Bounds what a peer refusing a large batch makes a
/// client hold.
pub const REJECTIONS_REPORTED_MAX: usize = 100;

/// Failed credentials one client address may present within
/// [`AUTH_FAILURE_WINDOW_MS_DEFAULT`] ([`crate::auth_failures`]), at the relay and at a
/// listener with a token; the one that reaches this number makes the server refuse that
/// address's next attempts for a window, with `429 auth_rate_limited` (the relay's HTTP) or
/// `RATE_LIMITED` (HELLO), without looking at their credentials, so guessing stops there. 0:
/// no limit. Ten leave room for a user who mistypes a token or a client that retries an
/// expired JWT a few times, and cut a guesser from ~3,000 tries a second to ten a minute.
/// Behind a NAT every client arrives from one address and one client's wrong token locks
/// all of them out: raise it there, or set 0 (`--max-auth-failures-per-address`). Behind a
/// reverse proxy the relay counts each client under the address the proxy forwards once the
/// proxy is named (`blazedb serve --trusted-proxy`).
pub const AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT: u32 = 10;

/// The window of [`AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT`], in ms, and how long an address
/// that reached it is refused: a minute, the span fail2ban-style tools count in, long enough
/// that guessing a 16-byte token stays hopeless, short enough that a user who fixed their
/// token is not kept waiting long.
pub const AUTH_FAILURE_WINDOW_MS_DEFAULT: u64 = 60_000;

/// Longest window [`AUTH_FAILURE_WINDOW_MS_DEFAULT`] may be set to, in ms: a day. Refused at
/// startup beyond (and 0, which would count nothing).
pub const AUTH_FAILURE_WINDOW_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// Most client addresses whose failed credentials one server (the relay, a listener)
/// remembers at once. Past it, the eighth with the fewest failures are forgotten (never one
/// being refused), so a spray of addresses, each failing once, cannot grow memory (about 64
/// bytes an address: 1 MiB) and cannot push out an address being refused (when every one
/// is, a new address goes uncounted until one is forgotten). An address is forgotten anyway
/// once its window or its refusal has passed.
pub const AUTH_FAILURE_ADDRESSES_MAX: usize = 16_384;

/// IPv6 clients are counted per prefix of this many bits: one host usually holds a whole /64
/// (SLAAC, privacy addresses, a VM's allocation), so counting per address would let it try
/// 2^64 addresses with ten guesses each. IPv4 addresses count one by one.
pub const AUTH_FAILURE_IPV6_PREFIX_BITS: u8 = 64;

// A second look after the gap must not get the first look's cached head.
const _: () = assert!(HEAD_CHECK_GAP_US > blazedb::limits::HEAD_RECHECK_US);
