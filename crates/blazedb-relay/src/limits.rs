//! Every limit, timeout and default of the relay, named in one place. The protocol's own
//! limits (frame size, batch size, ping and idle times) are in `blazedb::limits`; the
//! WebSocket message limits are in `blazedb_net::ws`, and those of the failure limit per
//! address, which `blazedb listen` shares, in `blazedb_net::limits` (re-exported here).

/// Where `blazedb serve` keeps its store when `--data` is not given.
pub const DATA_DIR_DEFAULT: &str = "./blazedb-data";

/// The relay's database file inside the data directory.
pub const STORE_FILE_NAME: &str = "relay.db";

/// The HTTP/WebSocket listen address when `--listen` is not given: loopback only, so that a
/// relay started without thinking about it is not reachable from the network.
pub const LISTEN_ADDR_DEFAULT: &str = "127.0.0.1:7420";

/// Most connections held at once, over all listeners (HTTP, WebSocket sync sessions, raw
/// TCP and Unix sessions). One more is accepted and closed at once (HTTP: answered 503).
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;

/// Most connections one client IP address may hold at once; 0 (the default): no such
/// limit, only [`CONNECTIONS_MAX_DEFAULT`]. Set it on a relay that faces the internet
/// directly, so that one address cannot take every slot; leave it off behind a reverse
/// proxy or a NAT that many clients share (they all arrive from its address).
pub const CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: usize = 0;

/// From accepting a connection to its first protocol frame: the TLS handshake, the HTTP
/// request head and the client's HELLO each get this long, in ms, and so does a
/// `POST /v1/query` body (`408` after it). A client that connects and says nothing, or says
/// it a byte at a time, holds a connection slot at most this long per step.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Messages (protocol frames) a connection may send per second, sustained. A client that
/// keeps sending faster gets ERROR `RATE_LIMITED` and is disconnected; it reconnects and
/// resumes from its cursor. Normal sync sends far fewer: a window of unacknowledged units
/// ([`blazedb::limits::WINDOW_UNITS_DEFAULT`]) caps how far a sender runs ahead.
pub const MESSAGE_RATE_PER_S_DEFAULT: u32 = 1_000;

/// Messages a connection may send in a burst above the sustained rate (the token bucket's
/// capacity).
pub const MESSAGE_BURST_DEFAULT: u32 = 2_000;

/// After deciding to end a connection itself (rate limit, handshake timeout, a bad
/// WebSocket message), the relay tries this long, in ms, to deliver the ERROR frame and to
/// read (and discard) the client's input until the client closes, before it drops the
/// connection. Dropping a socket with unread input resets it, which can destroy the ERROR.
pub const CLOSE_FLUSH_MS: u64 = 2_000;

/// An HTTP connection that was not upgraded to a sync session and has moved no bytes for
/// this long, in ms, is closed (or the idle timeout, if shorter): a keep-alive connection
/// holds a connection slot, and a dozen idle ones (left by `/health` checks) locked every
/// sync client out of a relay at its limit for the whole idle timeout.
pub const HTTP_KEEPALIVE_IDLE_MS: u64 = 2_000;

/// Connections kept beyond `--max-connections` for `/health` and `/metrics` alone (anything
/// else on them is answered `503`), so that a relay at its limit can still be seen by its
/// operator and its monitoring: they were refused with everyone else.
pub const STATUS_CONNECTIONS_RESERVED: usize = 4;

/// How long, in ms, a `POST /v1/query` waits for its turn on the query handle before it is
/// answered `503` (`busy`, retry later). Queries run one at a time on a handle of their own
/// (`State::query_turn`): the handle's connection serves one query at a time anyway, and a
/// blocking thread per waiting request (64 concurrent heavy queries: 37 threads and 195 MB
/// of resident memory that never came back down) bought nothing.
pub const QUERY_TURN_WAIT_MS: u64 = 10_000;

/// Largest `POST /v1/query` body, in bytes. The expression itself is limited to
/// [`blazedb::limits::EXPRESSION_BYTES_MAX`] (16 KiB); the rest is room for the JSON around it.
pub const QUERY_BODY_BYTES_MAX: usize = 64 * 1024;

/// Records `POST /v1/query` returns when the request names no `limit`.
pub const QUERY_LIMIT_DEFAULT: usize = 1_000;

/// Most records one `POST /v1/query` returns, whatever `limit` asks for.
pub const QUERY_LIMIT_MAX: usize = 10_000;

/// Largest `offset + limit` of one `POST /v1/query`; more is `400`. The store's scan keeps
/// the `offset + limit` first records it finds (it has to sort them, or find them in order)
/// and only then drops the first `offset`, so without this bound one request naming an
/// `offset` of 10^15 decoded and held the caller's whole readable collection to answer `[]`,
/// while every other query waited for its turn. Paging deeper goes by a filter on the sort
/// key (`where: "priority < LAST"`), which an index serves.
pub const QUERY_OFFSET_AND_LIMIT_MAX: usize = 100_000;

/// Largest HTTP request head (request line and headers), in bytes. Room for a 16 KiB JWT
/// ([`blazedb::limits::TOKEN_BYTES_MAX`]) in the `Authorization` header.
pub const HTTP_HEAD_BYTES_MAX: usize = 64 * 1024;

/// Bytes per read of a sync session's transport on the relay (the driver's buffer; the
/// client library's default is 64 KiB). Small, so that 10,000 idle connections stay cheap.
pub const SESSION_READ_BUFFER_BYTES: usize = 16 * 1024;

/// Outgoing bytes a sync session may have waiting before it is asked for more.
pub const SESSION_WRITE_BUFFER_BYTES_MAX: usize = 256 * 1024;

/// How long shutdown waits for sessions to say goodbye and for HTTP requests to finish, in
/// ms, before the relay stops anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Per-peer sync lag is exported for at most this many peers (the ones furthest behind), so
/// the number of metric series stays bounded however many clients connect.
pub const PEER_LAG_TOP_N: usize = 10;

/// How often the relay looks whether its store can take writes (`store_watch.rs`), in ms:
/// whether the file was deleted (one `fstat`) and how much room its disk has (one
/// `statvfs`). It only reports (`/health` looks again at each request, and the store refuses
/// a commit to a deleted file at the commit itself), so this bounds how late the log line
/// and the `store_status` metric come: a second, for the price of two system calls.
pub const STORE_CHECK_INTERVAL_MS: u64 = 1_000;

/// How often the relay looks whether its credential file (`--token-file`, `--jwt-secret-file`
/// or `--jwt-public-key`) changed (a `stat`): a rotated token, secret or key is accepted
/// within about this long, no restart.
pub const CREDENTIAL_FILE_CHECK_INTERVAL_MS: u64 = 1_000;

/// The largest token file or JWT secret file the relay reads (`--token-file`,
/// `--jwt-secret-file`), in bytes: room for hundreds of secrets, one a line, while a path
/// that names a log or a database by mistake is refused rather than read whole and tried,
/// line by line, at every connection. As the CLI's password files (`PASSWORD_FILE_BYTES_MAX`).
pub const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// How often the relay looks whether its rules file (`--rules`) changed (a `stat`): new rules
/// are in force within about this long, no restart.
pub const RULES_FILE_CHECK_INTERVAL_MS: u64 = 1_000;

/// How often, by default, the relay asks its store's file system whether it still takes
/// writes, in ms (`Limits::store_probe_interval_ms`). A file system that turned read-only
/// while mounted (ext4's `errors=remount-ro` after a disk error) says so to nothing but a
/// write; a relay nobody writes to said `ok` until a client's write failed. The probe creates
/// and removes an empty file in the data directory: every 30 s, the disk barely notices.
pub const STORE_PROBE_INTERVAL_MS_DEFAULT: u64 = 30_000;

/// Free bytes on the store's disk under which `/health` reports it full (`degraded`): a
/// commit appends a few pages of 4 KiB to the write-ahead log, or many for a large unit, so
/// with less than this the next writes may fail. Reported until twice this is free again,
/// so that a relay writing at the edge does not flap.
pub const STORE_DISK_FREE_BYTES_MIN: u64 = 1024 * 1024;

/// Open conflicts in the relay's store are counted for `/metrics` at most this often, in ms
/// (counting reads the conflicts table).
pub const CONFLICTS_REFRESH_MS: u64 = 5_000;

/// Largest rules file, in bytes.
pub const RULES_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Clock tolerance when checking a JWT's `exp` and `nbf`, in seconds.
pub const JWT_LEEWAY_S: u64 = 5;

/// Shortest static token and JWT HMAC secret the relay starts with, in bytes. The secret's
/// length is what keeps it unguessable: 16 random bytes are out of reach; `abc` is not. The
/// failure limit per address ([`AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT`]) slows one address
/// down (before it, one client made ~3,000 guesses a second), but a client spread over many
/// addresses, or a relay with the limit off, still guesses as fast as it can ask.
pub const AUTH_SECRET_BYTES_MIN: usize = 16;

// The failure limit per address and its table are shared with `blazedb listen`: see
// `blazedb_net::auth_failures` and the documentation of each constant there.
pub use blazedb_net::limits::{
    AUTH_FAILURES_PER_ADDRESS_MAX_DEFAULT, AUTH_FAILURE_ADDRESSES_MAX,
    AUTH_FAILURE_IPV6_PREFIX_BITS, AUTH_FAILURE_WINDOW_MS_DEFAULT, AUTH_FAILURE_WINDOW_MS_MAX,
};

/// Most `--origin` entries.
pub const ORIGINS_MAX: usize = 256;

/// Most `--trusted-proxy` entries: each request's peer, and each trusted hop of its
/// `X-Forwarded-For`, is matched against every one.
pub const TRUSTED_PROXIES_MAX: usize = 256;

/// The window of the throttled log (`session_closed`, `request_refused`,
/// `connection_refused`), in ms (`log_throttle.rs`). A minute:
/// the span an operator reads a log or an alert in, short enough that a summary of what was
/// left out arrives while the loop behind it is still going on.
pub const CLOSE_LOG_WINDOW_MS: u64 = 60_000;

/// Lines of one event and reason (sessions closed for `auth_failed`, requests refused for
/// `auth_failed`, ...) that are logged in full per window; the rest of the window's are
/// counted in one summary line. Ten show the different messages of a burst (an expired token
/// and a wrong one, a few addresses) and every failure of a relay without a flood; with the
/// summary, an event and reason write at most 11 lines a minute however fast clients fail
/// (before: one per failed session, 5,000 in 0.6 s from one client in a loop).
pub const CLOSE_LOG_LINES_PER_WINDOW: u32 = 10;

/// Client addresses a window's summary names (the ones most of the suppressed sessions came
/// from): enough to see one loop or a few, and a fixed amount of memory per reason however
/// many addresses a client spreads over.
pub const CLOSE_LOG_CLIENTS_MAX: usize = 4;

/// Longest `message` of a throttled log line, in bytes (cut between characters). A message
/// may repeat what a client sent (an `Origin` header, a JWT's `alg`), up to a request head
/// (64 KiB); as a peer's error text ([`blazedb::limits::ERROR_MESSAGE_BYTES_MAX`]), 4 KiB
/// says what happened.
pub const LOG_MESSAGE_BYTES_MAX: usize = 4096;
