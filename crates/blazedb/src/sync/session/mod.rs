//! The sync session: one per connected peer, sans-IO.
//!
//! The session owns no socket, thread, timer or clock. The driver calls, in any order and
//! as often as it likes:
//!
//! 1. [`Session::new`] — queues our HELLO;
//! 2. [`Session::handle_bytes`] with whatever bytes arrived (any split of the stream);
//! 3. [`Session::poll_transmit`] until it returns `None`, sending each frame — call it again
//!    after every local commit (see `Database::on_commit`) so new changes go out at once;
//! 4. [`Session::handle_timeout`] when the instant from [`Session::poll_timeout`] passes;
//! 5. [`Session::poll_event`] to learn what happened.
//!
//! Each of these may wait for the database's lock. While another caller holds it for long (a
//! bulk import, an application's long transaction), a driver that will not block meanwhile
//! calls only [`Session::keep_alive`] at the instant it returns and sends what
//! [`Session::poll_queued`] hands out, neither of which touches the database; once it can
//! call in again it reports the time it could not with [`Session::handle_stall`], first.
//!
//! The driver passes the current time (ms) in; the database is passed in per call because the
//! session reads the change feed and applies the peer's changes through it.
//!
//! ```text
//!  A                                   B
//!  HELLO(node, head, mode) ──────────►
//!  ◄────────────────────────────────── HELLO
//!  SUBSCRIBE(from = my cursor of B) ──►
//!  ◄────────────────────────────────── SUBSCRIBE(from = B's cursor of A)
//!  ◄──── CHANGES… (unit) / CAUGHT_UP ─►  (both ways, windowed)
//!  ACK(end of applied unit) ─────────►
//! ```
//!
//! **Selective sync and snapshots** (protocol 2). SUBSCRIBE carries the receiver's
//! [`SyncPolicy`]; the sender filters what it sends through it and through its access control
//! (see `sync/policy.rs` for how membership changes become whole records or EVICTs). Instead
//! of the feed, the sender answers with a snapshot of the view — SNAPSHOT_BEGIN, CHUNK…, END,
//! then the feed from the snapshot's position — when the peer is new, asks for one (its view
//! changed: a new policy, live or at reconnect), resumes an interrupted one, has a cursor
//! older than what GC kept, or was last served another view (other claims or rules). The
//! receiver stages chunks on disk and applies the whole snapshot in one transaction, dropping
//! what it held of the sender's data that the snapshot no longer contains.
//!
//! This file holds the session's state, its public calls and the message dispatch; the work
//! behind them is split by direction and concern:
//!
//! - `send.rs` — answering SUBSCRIBE and sending our feed as units, within the window;
//! - `receive.rs` — staging the peer's units, applying them, acknowledging;
//! - `snapshot.rs` — snapshots, both sides;
//! - `view.rs` — what the peer may see: filters, EVICTs, restatements and their notes.

use std::collections::VecDeque;

use super::access::IDENTITY_NOTE;
use super::frame::{FrameDecoder, FrameEncoder, FrameError};
use super::message::{
    self, approx_cell_bytes, caps, kind, Dict, ErrorCode, Hello, Message, RecordCells,
    SnapshotWish, SyncMode,
};
use super::policy::{CompiledPolicy, SyncPolicy};
use crate::error::{ApplyError, Error};
use crate::limits::{
    BATCH_CELLS_DEFAULT, ECHO_CAUGHT_UP_INTERVAL_MS, END_ACK_WAIT_MS, FRAME_TARGET_BYTES,
    IDLE_TIMEOUT_MS_DEFAULT, LAGGING_PAGE_BATCHES_MAX, PING_INTERVAL_MS_DEFAULT,
    PING_INTERVAL_MS_MIN, PROTOCOL_VERSION, QUEUED_FRAMES_MAX, RECORD_BYTES_MAX,
    SNAPSHOT_APPLY_CELLS_PER_MS_MIN, SNAPSHOT_APPLY_GRACE_MS_MAX, SNAPSHOT_CHUNK_CELLS,
    TRANSACTION_CELLS_MAX, UNIT_STAGE_CELLS, WINDOW_UNITS_DEFAULT,
};
use crate::query::Params;
use crate::store::{
    Change, Database, EvictGuard, PeerDirection, RefusedBy, SnapshotApplied, SnapshotKey,
    SnapshotScope,
};
use crate::store::{NOTE_EVICTS, NOTE_EVICTS_UNAPPLIED, PUSHES_ONLY_NOTE, SERVER_NOTE};

use crate::types::Seq;
use crate::{NodeId, PastVisibility, RecordId, StagedParts, StagingId};

/// Records of ours a peer refused that a session remembers until the peer evicts them from
/// us (`Session::refused_by_peer`): a client refused this many times before the EVICTs come
/// loses the oldest notes (their values would then go with the eviction, unrecorded).
const REFUSED_RECORDS_REMEMBERED_MAX: usize = 100_000;

mod receive;
mod send;
mod snapshot;
mod view;

use snapshot::{feed_collected_past, new_snapshot};
use view::{decode_policy_note, encode_policy_note, filter_view, hex, scope_of, strip_excluded};

/// How a session behaves.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Send, receive or both.
    pub mode: SyncMode,
    /// This side is a relay/server.
    pub server: bool,
    /// Credentials to present.
    pub token: String,
    /// Cells per batch read from the feed.
    pub batch_cells_max: usize,
    /// Unacknowledged units before the sender waits.
    pub window_units: usize,
    /// Ping after this long without sending; below [`PING_INTERVAL_MS_MIN`] counts as that.
    pub ping_interval_ms: u64,
    /// Give up after this long without receiving.
    pub idle_timeout_ms: u64,
    /// Offer and use LZ4.
    pub lz4: bool,
    /// Who the peer is allowed to be and what it may read and write (a relay sets this per
    /// connection). `None`: everything is allowed.
    pub access: Option<std::sync::Arc<dyn super::AccessControl>>,
    /// What this side asks to receive (selective sync). Change it on a live session with
    /// [`Session::set_policy`].
    pub policy: SyncPolicy,
    /// Bootstrap a new peer with a snapshot rather than by replaying the feed.
    pub snapshot_new_peers: bool,
    /// Cells of an incoming unit held in memory before its complete transactions are staged
    /// on disk (`UNIT_STAGE_CELLS`; tests set it low to stage every unit).
    pub unit_stage_cells: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            mode: SyncMode::Both,
            server: false,
            token: String::new(),
            batch_cells_max: BATCH_CELLS_DEFAULT,
            window_units: WINDOW_UNITS_DEFAULT,
            ping_interval_ms: PING_INTERVAL_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            lz4: true,
            access: None,
            policy: SyncPolicy::everything(),
            snapshot_new_peers: true,
            unit_stage_cells: UNIT_STAGE_CELLS,
        }
    }
}

/// What [`Session::ready_to_end`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReadiness {
    /// End the session now.
    Ready,
    /// A CAUGHT_UP was queued: transmit it, then ask again.
    TransmitFirst,
    /// Wait for input (the peer's ACK) or for `poll_timeout`, then ask again.
    AwaitAck,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sync session ended ({}{}): {message}",
    code.name(),
    if *remote { ", reported by the peer" } else { "" }
)]
pub struct SyncError {
    /// The protocol error code (sent to or received from the peer).
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// True when the peer reported the error; false when we detected it.
    pub remote: bool,
}

/// Something the driver may want to know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The peer said HELLO.
    Connected {
        /// Who.
        peer: NodeId,
        /// Its HELLO.
        hello: Hello,
    },
    /// A unit of the peer's changes was applied.
    Applied {
        /// Cells that changed something here.
        cells: usize,
        /// The peer's feed position now reached.
        through: Seq,
    },
    /// The peer refused some of our changes (access rules); they were not applied there,
    /// and the peer's version of those records is on its way back to us.
    Rejected(Vec<super::Rejection>),
    /// We refused some of the peer's changes (access rules) and told it so.
    Refused(Vec<super::Rejection>),
    /// This side presented a token and the peer's HELLO says it checks none
    /// (`caps::TOKEN_UNCHECKED`): anyone who reaches the peer may sync with it, token or
    /// not. Told once, right after `Connected`; the session goes on. A peer of a release
    /// that does not say whether it checks is never reported.
    TokenUnchecked,
    /// The session ended.
    Closed(SyncError),
}

/// Counters for one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent (framed).
    pub bytes_sent: u64,
    /// Bytes received (framed).
    pub bytes_received: u64,
    /// Cells sent in CHANGES.
    pub cells_sent: u64,
    /// Cells received in CHANGES.
    pub cells_received: u64,
    /// Received cells that changed something here.
    pub cells_applied: u64,
    /// Of `cells_sent`, those that restate our own version of records whose change by the
    /// peer we refused (access rules), or values server priority kept over its writes
    /// (`ApplyOutcome::restated_at`): the peer's own writes undone, not changes from
    /// elsewhere. Counted for the positions of the last [`RESTATED_POSITIONS_MAX`] units
    /// that called for any, so a flood of refused units may undercount it.
    pub cells_restated: u64,
    /// Conflicts recorded open here while applying the peer's changes
    /// (`ApplyOutcome::conflicts`).
    pub conflicts_recorded: u64,
    /// Records whose changes we refused (access rules).
    pub changes_refused: u64,
    /// Records whose changes the peer refused.
    pub changes_rejected_by_peer: u64,
    /// Records we told the peer to evict (they left its view).
    pub evicts_sent: u64,
    /// Records evicted here because the peer said they left our view.
    pub evicted: u64,
    /// Snapshots sent (begun, including resumed ones).
    pub snapshots_sent: u64,
    /// Snapshots received and applied.
    pub snapshots_applied: u64,
    /// Parts of large incoming units staged on disk (see `store/unit.rs`).
    pub unit_parts_staged: u64,
}

/// Where a session stands, for lag metrics and diagnostics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionProgress {
    /// Our feed position sent so far.
    pub sent_through: Seq,
    /// Our feed position the peer acknowledged.
    pub acked: Seq,
    /// The current unit must reach this before it is complete.
    pub unit_until: Seq,
    /// Complete units sent and not yet acknowledged.
    pub unacked_units: usize,
    /// The peer's feed position applied here.
    pub received_through: Seq,
    /// The peer's last CAUGHT_UP position.
    pub peer_caught_up: Option<Seq>,
    /// Cells of an incomplete unit held here.
    pub staged_cells: usize,
    /// Whether the peer asked for our changes.
    pub peer_subscribed: bool,
    /// Received bytes waiting for the rest of a frame.
    pub buffered_bytes: usize,
    /// A snapshot is being sent to the peer.
    pub sending_snapshot: bool,
    /// A snapshot from the peer is being received.
    pub receiving_snapshot: bool,
}

#[derive(Debug)]
struct SnapOut {
    snap_id: u64,
    position: Seq,
    next_index: u32,
    after: Option<SnapshotKey>,
    /// The head when the last page was read: records before `after` that changed since go
    /// again with the next page (`SnapshotPage::changed_before`). A resumed snapshot starts
    /// from its position, not knowing what the interrupted session read.
    read_through: Seq,
    begun: bool,
    replace: bool,
    /// Cells sent in this snapshot (the receiver's apply time grows with it).
    cells: u64,
}

/// Complete units received and not applied yet: the first `changes` of `Session::staged`
/// (`cells` cells), through the peer's feed position `end`.
///
/// Group commit: a receiver that falls behind finds many small units in one read; applying
/// them in one SQLite transaction (one commit, one ACK) costs a fraction of one each, so a
/// busy receiver catches up instead of falling further behind. Each unit stays atomic (the
/// group is all or nothing), and nothing waits for later input: the group is applied before
/// `handle_bytes` returns.
#[derive(Clone, Copy, Debug)]
struct Group {
    changes: usize,
    cells: usize,
    end: Seq,
}

#[derive(Debug)]
struct SnapIn {
    snap_id: u64,
    position: Seq,
    next_index: u32,
    replace: bool,
    /// Chunks are merged as they arrive (rather than staged and applied together at the
    /// end) while this is `Some(head)`: the database's head after our last merge. Only for
    /// a snapshot that does not replace, into a database that held nothing when it began
    /// (a new replica's bootstrap): merged as they come, the records of a transaction that
    /// the sender's chunks put apart would otherwise meet copies already here one chunk at a
    /// time, and a reader could see part of that transaction (simulation seed 2400337). An
    /// empty database has no such copies, and its records show up as they arrive. Once
    /// another peer's changes commit here meanwhile (`others_meanwhile`), or in a resumed
    /// session that cannot tell, the rest is staged. Local writes go on beside it.
    merging: Option<Seq>,
    /// Another peer's changes committed here since this snapshot began merging.
    others_meanwhile: bool,
    /// What the chunks merged as they arrived did.
    merged: SnapshotApplied,
    /// Merged as they arrive: the cells of a record that the last chunk ended inside of,
    /// merged with the rest of it (`Database::snapshot_merge_chunk_held`).
    held: Option<Change>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    AwaitHello,
    Open,
    Closed,
}

/// One sync session with one peer.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    node: NodeId,
    state: State,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    tx_dict: Dict,
    rx_dict: Dict,
    out: VecDeque<Vec<u8>>,
    /// How many frames at the front of `out` the feed or a snapshot put there (`fill` runs
    /// only on an empty queue, and frames leave from the front): the rest are replies to
    /// the peer, which `QUEUED_FRAMES_MAX` bounds.
    out_fill_frames: usize,
    peer: Option<Hello>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
    // Sending our feed.
    peer_from: Option<Seq>,
    sent_through: Seq,
    unit_until: Seq,
    /// Where the unit being sent began. Until the peer has applied the unit, it holds each
    /// record as it was here (see `filter_view`).
    unit_from: Seq,
    /// Cells of the unit being sent, so far (see `unacked`).
    unit_cells: u64,
    /// Units sent and not yet acknowledged: where each ends, and its cells. The peer applies
    /// a unit whole, in one transaction, and reads nothing meanwhile: the idle timeout
    /// allows for applying what is outstanding (`apply_grace_ms`), as for a snapshot.
    unacked: VecDeque<(Seq, u64)>,
    /// Until the feed is sent this far, the peer's own cells go too: its file was restored
    /// from an older copy and may lack writes of its own that we hold (see `on_subscribe`).
    echo_until: Seq,
    /// Cells to ask the feed for next: the configured batch, doubled after each page that
    /// left more behind (a peer that fell behind takes fewer, larger units, each applied in
    /// one transaction), back to the batch once a page reaches the head.
    page_cells: usize,
    /// Frames of the current unit went out and its last frame has not.
    unit_open: bool,
    acked: Seq,
    /// The last acknowledged cursor handed to `Database::note_peer_cursor`.
    acked_noted: Seq,
    /// How far the peer acknowledged our feed with its own feed, as it stood then, applied
    /// here: an ACK followed by the peer's CAUGHT_UP, or an ACK saying the peer's feed had
    /// gone whole before it. Only this is what GC counts (`PeerDirection::Stable`): until
    /// then, a write the peer held when it acknowledged our delete, older than the delete,
    /// may still be on its way here (known gap 5, see `store/gc.rs`). Never past `acked`.
    stable: Seq,
    /// `stable` as last handed to `Database::note_peer_cursor` (`None`: not in this session).
    stable_noted: Option<Seq>,
    /// An acknowledged position that becomes stable once the units waiting in `group`, which
    /// came before the word that makes it stable, are applied.
    stable_after_group: Option<Seq>,
    caught_up_sent: Option<Seq>,
    /// When the last CAUGHT_UP went out (see `pass_over_echo`).
    caught_up_sent_ms: u64,
    /// `caught_up_sent` covers positions of the peer's own changes that no CAUGHT_UP has
    /// announced yet (`pass_over_echo`): one goes out once the interval since the last is
    /// over, whether or not more units arrive (see `announce_deferred_echo`).
    echo_unannounced: bool,
    /// When `ready_to_end` began to wait for the peer's ACK of our last CAUGHT_UP.
    end_ack_wait_since: Option<u64>,
    /// That wait ran out (`handle_timeout`): no more timer for it, and the session may end.
    end_ack_wait_over: bool,
    // Receiving the peer's feed.
    /// The highest position this session acknowledged (`send_ack`).
    ack_sent_through: Seq,
    subscribed: bool,
    staged: Vec<Change>,
    staged_cells: usize,
    /// Parts of the unit in progress staged on disk (`Database::unit_stage`), and for a peer
    /// with a restricted view, the records they touched and may have moved in (see
    /// `apply_staged`).
    staged_parts: u32,
    /// Whose staged parts on disk are ours: another session with the same peer (another
    /// process on this file, another connection from the same node) stages its own.
    staging: StagingId,
    /// Whether this session ever staged a part on disk (its rows are discarded when it ends:
    /// a unit cut off, refused or failed in its apply leaves them otherwise).
    staging_used: bool,
    staged_touched: Vec<RecordKey>,
    staged_moved_in: Vec<RecordKey>,
    /// Complete units that arrived in the current `handle_bytes` call and wait to be applied
    /// together (see [`Group`]); always `None` between calls.
    group: Option<Group>,
    /// Inside `handle_bytes`: complete units may wait for the frames after them.
    grouping: bool,
    /// A CAUGHT_UP that came after the units waiting in `group`, handled after them.
    caught_up_after_group: Option<Seq>,
    received_through: Seq,
    /// `received_through` as last stored or noted. A CAUGHT_UP that only moves the position
    /// is noted, and stored with the other noted cursors (see `note_cursors`); units store
    /// theirs with their data.
    received_noted: Seq,
    peer_caught_up: Option<Seq>,
    /// Subscriptions sent in this session (a policy change sends another).
    subscriptions_sent: u32,
    /// Waiting for the snapshot that answers our latest SUBSCRIBE; what arrives before it
    /// belongs to the old view and is dropped.
    restarting: bool,
    /// The snapshot being received.
    snap_in: Option<SnapIn>,
    /// Collections whose records a finished snapshot may drop here: those of the policy it
    /// was asked under and of the one before (`None`: all).
    snap_scope: Option<Vec<String>>,
    // Selective sync, sending side.
    /// What the peer asked for, checked.
    peer_policy: CompiledPolicy,
    /// Subscriptions received in this session.
    subscriptions_received: u32,
    /// The snapshot being sent.
    snap_out: Option<SnapOut>,
    /// GC collected past the position a feed page was read from: the page may have lacked
    /// deletes the peer needs. A replacing snapshot follows once the unit in progress is
    /// complete (a snapshot cannot start inside one).
    replacing_snapshot_due: bool,
    /// The view to store for the peer once it acknowledges what we sent under it.
    view_pending: Option<String>,
    /// Records to evict at the peer, sent once the current unit is complete.
    evict_pending: Vec<(String, RecordId)>,
    /// Records of ours the peer refused (REJECT), with how far it had acknowledged our feed
    /// then: if it then EVICTs one (we may not read it), our refused values in it are kept
    /// as conflicts before it goes (`Database::evict_keeping_refused`). At most
    /// [`REFUSED_RECORDS_REMEMBERED_MAX`]; the oldest go first.
    refused_by_peer: std::collections::BTreeMap<(String, RecordId), Seq>,
    /// Fields our policy excludes were kept in records with changes the peer had not
    /// acknowledged, up to this position of our feed: evicted once it has.
    fields_kept_until: Option<Seq>,
    /// Through this position of our feed, no record holds a field our policy excludes, save
    /// those kept for changes the peer had not acknowledged (newer, so looked at again):
    /// the next eviction looks only at records changed since. Persisted as the peer note
    /// [`NOTE_FIELDS_EVICTED`].
    fields_evicted_through: Seq,
    refused_order: std::collections::VecDeque<(String, RecordId)>,
    /// EVICTs went out right after this position, followed by a PING with this nonce, and
    /// neither a later unit's ACK nor that PONG has come back: the peer may not have them (a
    /// disconnect right after the unit's ACK loses them). Persisted as the peer note
    /// `NOTE_EVICTS` (see `flush_evictions`).
    evicts_unconfirmed: Option<(Seq, u64)>,
    /// The stored `NOTE_EVICTS`: evictions derived from our feed after this position may not
    /// have reached the peer.
    evicts_note: Option<Seq>,
    /// Records the peer moved into its view with its own write: sent whole, once the
    /// current unit is complete.
    restate_pending: Vec<(String, RecordId)>,
    /// Records whose change by the peer was refused (REJECT): this node wrote its own
    /// version again, and when that is a delete the peer needs it even if it could never
    /// read the record (its refused insert must go). Bounded by `REFUSED_REMEMBERED_MAX`.
    refused: std::collections::HashSet<(String, RecordId)>,
    /// Feed positions, ascending, where an apply of the peer's units restated our version
    /// over its writes (`ApplyOutcome::restated_at`) and that were not yet sent past: what
    /// goes out from there counts in `SessionStats::cells_restated`. At most
    /// [`RESTATED_POSITIONS_MAX`] (the oldest go first).
    restated_at: std::collections::VecDeque<Seq>,
    // Liveness.
    /// When the peer's credential runs out (`AccessControl::credential_lifetime_ms`); the
    /// session then ends with `AUTH_FAILED`.
    credential_expires_ms: Option<u64>,
    /// Our HELLO, held until the peer's credential is accepted
    /// (`AccessControl::hello_after_authentication`).
    hello_deferred: Option<Hello>,
    last_recv_ms: u64,
    last_send_ms: u64,
    ping_nonce: u64,
    /// The database's file, named in this side's own messages about it (never sent to the
    /// peer: a relay does not tell its clients where it keeps its files).
    db_path: std::path::PathBuf,
}

impl Session {
    /// Start a session for the database `db`; HELLO is queued.
    pub fn new(db: &Database, cfg: SessionConfig, now_ms: u64) -> Result<Session, Error> {
        if let Err(m) = cfg.policy.compile() {
            return Err(Error::InvalidArgument(m));
        }
        let lz4 = if cfg.lz4 { caps::LZ4 } else { 0 };
        // Said by every side that checks no credential, a connecting client included (it
        // checks none of its peer's): harmless there, as an accepting side presents none.
        let unchecked = if cfg.access.as_ref().is_some_and(|a| a.checks_credential()) {
            0
        } else {
            caps::TOKEN_UNCHECKED
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: db.node_id(),
            last_seq: db.last_seq()?,
            mode: cfg.mode,
            server: cfg.server,
            caps: lz4 | caps::SPLIT_RECORDS | caps::ACK_CAUGHT_UP | unchecked,
            token: cfg.token.clone(),
        };
        let mut s = Session {
            node: db.node_id(),
            db_path: db.path().to_path_buf(),
            state: State::AwaitHello,
            encoder: FrameEncoder::default(),
            decoder: FrameDecoder::default(),
            tx_dict: Dict::default(),
            rx_dict: Dict::default(),
            out: VecDeque::new(),
            out_fill_frames: 0,
            peer: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
            peer_from: None,
            sent_through: Seq(0),
            unit_until: Seq(0),
            unit_from: Seq(0),
            unit_cells: 0,
            unacked: VecDeque::new(),
            echo_until: Seq(0),
            page_cells: 0,
            unit_open: false,
            acked: Seq(0),
            acked_noted: Seq(0),
            caught_up_sent: None,
            end_ack_wait_since: None,
            end_ack_wait_over: false,
            ack_sent_through: Seq(0),
            caught_up_sent_ms: now_ms,
            echo_unannounced: false,
            subscribed: false,
            staged: Vec::new(),
            staged_cells: 0,
            staged_parts: 0,
            staging: StagingId::random(),
            staging_used: false,
            staged_touched: Vec::new(),
            staged_moved_in: Vec::new(),
            group: None,
            grouping: false,
            caught_up_after_group: None,
            stable: Seq(0),
            stable_noted: None,
            stable_after_group: None,
            received_through: Seq(0),
            received_noted: Seq(0),
            peer_caught_up: None,
            subscriptions_sent: 0,
            restarting: false,
            snap_in: None,
            snap_scope: None,
            peer_policy: CompiledPolicy::default(),
            subscriptions_received: 0,
            snap_out: None,
            replacing_snapshot_due: false,
            view_pending: None,
            evict_pending: Vec::new(),
            refused_by_peer: Default::default(),
            fields_kept_until: None,
            fields_evicted_through: Seq(0),
            refused_order: Default::default(),
            evicts_unconfirmed: None,
            evicts_note: None,
            restate_pending: Vec::new(),
            refused: Default::default(),
            restated_at: Default::default(),
            credential_expires_ms: None,
            hello_deferred: None,
            last_recv_ms: now_ms,
            last_send_ms: now_ms,
            ping_nonce: 0,
            cfg,
        };
        if s.cfg
            .access
            .as_ref()
            .is_some_and(|a| a.hello_after_authentication())
        {
            s.hello_deferred = Some(hello);
        } else {
            s.send(&Message::Hello(hello), now_ms);
        }
        Ok(s)
    }

    /// The peer's HELLO, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Where the session stands.
    pub fn progress(&self) -> SessionProgress {
        SessionProgress {
            sent_through: self.sent_through,
            acked: self.acked,
            unit_until: self.unit_until,
            unacked_units: self.unacked.len(),
            received_through: self.received_through,
            peer_caught_up: self.peer_caught_up,
            staged_cells: self.staged_cells,
            peer_subscribed: self.peer_from.is_some(),
            buffered_bytes: self.decoder.buffered(),
            sending_snapshot: self.snap_out.is_some(),
            receiving_snapshot: self.snap_in.is_some() || self.restarting,
        }
    }

    /// True once the session ended (after an error sent or received, or `close`).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// How far the peer has acknowledged applying our feed in this session (or before it,
    /// as stored for its node when the session began).
    pub fn acked(&self) -> Seq {
        self.acked
    }

    /// True when, as far as this side knows, both directions are in sync: the peer told us
    /// it has sent everything (and we applied it), and it acknowledged everything we have.
    pub fn is_caught_up(&self, db: &Database) -> Result<bool, Error> {
        let Some(peer) = &self.peer else {
            return Ok(false);
        };
        let receiving = self.cfg.mode.receives() && peer.mode.sends();
        let sending = self.cfg.mode.sends() && peer.mode.receives();
        let rx_done = !receiving
            || (!self.unit_in_progress()
                && self.snap_in.is_none()
                && !self.restarting
                && self
                    .peer_caught_up
                    .is_some_and(|s| self.received_through >= s));
        let tx_done = !sending
            || (self.peer_from.is_some()
                && self.snap_out.is_none()
                && !self.replacing_snapshot_due
                && self.evict_pending.is_empty()
                && self.restate_pending.is_empty()
                && self.unacked.is_empty()
                && !self.unit_open
                && self.caught_up_sent == Some(self.sent_through)
                && self.nothing_more_for_peer(db)?);
        Ok(rx_done && tx_done)
    }

    /// For a side that ends the session as soon as it is caught up (a driver's `--once`),
    /// asked once [`Session::is_caught_up`] holds: may it end now? Not before the peer
    /// acknowledged our feed up to our head, or our record of what it holds (which bounds
    /// our GC, and decides where its next session resumes) stays behind: the positions our
    /// applies of its units took hold only its own changes, and are announced by a
    /// CAUGHT_UP at most once a second (`pass_over_echo`), so a replica synced only by
    /// sessions shorter than that, that never wrote, kept every delete it received. So
    /// positions passed over without a CAUGHT_UP are announced now (queued: transmit, then
    /// ask again), and the peer's ACK of the last CAUGHT_UP is awaited at most
    /// [`END_ACK_WAIT_MS`] (`poll_timeout` wakes the caller then); past that the session may
    /// end anyway, and the next one settles it.
    pub fn ready_to_end(&mut self, now_ms: u64) -> EndReadiness {
        if self.echo_unannounced && self.state == State::Open {
            // `is_caught_up` held: everything up to `sent_through` went out.
            self.send_caught_up(now_ms);
            self.end_ack_wait_since = Some(now_ms);
            return EndReadiness::TransmitFirst;
        }
        let Some(announced) = self.caught_up_sent else {
            return EndReadiness::Ready;
        };
        if self.acked >= announced {
            return EndReadiness::Ready;
        }
        let since = *self.end_ack_wait_since.get_or_insert(now_ms);
        if self.end_ack_wait_over || now_ms >= since.saturating_add(END_ACK_WAIT_MS) {
            EndReadiness::Ready
        } else {
            EndReadiness::AwaitAck
        }
    }

    /// Feed received bytes. On a protocol error the session queues an ERROR frame for the
    /// peer (send it, then close the transport) and returns the error.
    pub fn handle_bytes(
        &mut self,
        now_ms: u64,
        bytes: &[u8],
        db: &Database,
    ) -> Result<(), SyncError> {
        self.stats.bytes_received += bytes.len() as u64;
        if self.state == State::Closed {
            return Ok(());
        }
        self.decoder.push(bytes);
        self.grouping = true;
        let handled = self.handle_frames(now_ms, db);
        self.grouping = false;
        handled
    }

    /// Handle every complete frame the decoder holds. Complete units wait in `group` while
    /// more CHANGES frames follow, and are applied before any other message and before this
    /// returns: the units that one read brought in are applied in one SQLite transaction.
    fn handle_frames(&mut self, now_ms: u64, db: &Database) -> Result<(), SyncError> {
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return self.apply_group(now_ms, db),
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } | FrameError::FirstFrameTooLarge { .. } => {
                            ErrorCode::TooLarge
                        }
                        FrameError::Checksum { .. } => ErrorCode::Checksum,
                        _ => ErrorCode::Malformed,
                    };
                    return Err(self.fail_bad_frame(code, e.to_string(), now_ms, db));
                }
            };
            self.stats.frames_received += 1;
            // Liveness counts whole frames only: a peer (or a corrupted length) that sends
            // bytes which never complete a frame still times out.
            self.last_recv_ms = now_ms;
            let replies = self.out.len().saturating_sub(self.out_fill_frames);
            if replies >= QUEUED_FRAMES_MAX {
                // The peer keeps sending but reads nothing (or the transport is stuck): a
                // reply per frame would pile up here without end, and the driver keeps
                // reading so that a peer that does read is never deadlocked.
                return Err(self.fail(
                    ErrorCode::RateLimited,
                    format!(
                        "{replies} replies wait for the peer to read them and it keeps \
                         sending: read what the session sends while sending (limit \
                         QUEUED_FRAMES_MAX)"
                    ),
                    now_ms,
                ));
            }
            let msg = if frame.kind == kind::CHANGES {
                let budget = TRANSACTION_CELLS_MAX.saturating_sub(self.staged_cells);
                match self.rx_dict.decode_changes(&frame.payload, budget) {
                    Ok((changes, end)) => Message::Changes {
                        changes,
                        end,
                        partial: frame.partial,
                    },
                    Err(e) => {
                        let code = match e {
                            crate::codec::DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
                            _ => ErrorCode::Malformed,
                        };
                        return Err(self.fail_bad_frame(code, format!("CHANGES: {e}"), now_ms, db));
                    }
                }
            } else {
                // Messages about our own feed (ACK, PING, PONG) do not need the units before
                // them applied, nor does CAUGHT_UP (it waits for the group, see there): a
                // sender that is caught up follows each unit with one. Everything else sees
                // the units before it applied.
                if !matches!(
                    frame.kind,
                    kind::ACK | kind::PING | kind::PONG | kind::CAUGHT_UP
                ) {
                    self.apply_group(now_ms, db)?;
                }
                if frame.partial {
                    return Err(self.fail_bad_frame(
                        ErrorCode::Malformed,
                        "PARTIAL flag on a non-CHANGES frame".into(),
                        now_ms,
                        db,
                    ));
                }
                // Check the version before the rest, so a newer HELLO layout is reported as
                // a version mismatch rather than as malformed (a second HELLO is UNEXPECTED
                // whatever its version: see `handle_message`).
                if frame.kind == kind::HELLO && self.state != State::Open {
                    if let Some(v) = frame.payload.get(..2) {
                        let v = u16::from_le_bytes([v[0], v[1]]);
                        if v != PROTOCOL_VERSION {
                            return Err(self.fail_version(v, now_ms));
                        }
                    }
                }
                match message::decode_simple(frame.kind, &frame.payload) {
                    Ok(m) => m,
                    Err(e) => {
                        // A limit is TOO_LARGE, as for CHANGES; in SUBSCRIBE the only limits
                        // are the policy's (§5.2: INVALID_POLICY).
                        let code = match (&e, frame.kind) {
                            (crate::codec::DecodeError::TooLarge { .. }, kind::SUBSCRIBE) => {
                                ErrorCode::InvalidPolicy
                            }
                            (crate::codec::DecodeError::TooLarge { .. }, _) => ErrorCode::TooLarge,
                            _ => ErrorCode::Malformed,
                        };
                        return Err(self.fail_bad_frame(code, e.to_string(), now_ms, db));
                    }
                }
            };
            self.handle_message(now_ms, msg, db)?;
            if self.state == State::Closed {
                return Ok(());
            }
        }
    }

    fn handle_message(
        &mut self,
        now_ms: u64,
        msg: Message,
        db: &Database,
    ) -> Result<(), SyncError> {
        match (self.state, msg) {
            (_, Message::Error { code, message }) => {
                // The peer's goodbye: keep what it acknowledged (GC and `is_caught_up`
                // on the next session rely on it).
                let _ = self.note_cursors(db, true);
                self.state = State::Closed;
                let e = SyncError {
                    code,
                    message,
                    remote: true,
                };
                self.events.push_back(SessionEvent::Closed(e.clone()));
                Err(e)
            }
            (State::AwaitHello, Message::Hello(h)) => self.on_hello(now_ms, h, db),
            (State::AwaitHello, other) => Err(self.fail(
                ErrorCode::Unexpected,
                format!("expected HELLO first, got {}", name(&other)),
                now_ms,
            )),
            (State::Open, Message::Hello(_)) => {
                Err(self.fail(ErrorCode::Unexpected, "second HELLO".into(), now_ms))
            }
            (
                State::Open,
                Message::Subscribe {
                    from,
                    policy,
                    snapshot,
                    acked,
                },
            ) => self.on_subscribe(now_ms, (from, acked), policy, snapshot, db),
            (
                State::Open,
                Message::Changes {
                    changes,
                    end,
                    partial,
                },
            ) => {
                if !self.subscribed || self.snap_in.is_some() {
                    return Err(self.fail(
                        ErrorCode::Unexpected,
                        "CHANGES without SUBSCRIBE, or inside a snapshot".into(),
                        now_ms,
                    ));
                }
                if self.restarting {
                    // Sent under the old view, before our new SUBSCRIBE arrived.
                    return Ok(());
                }
                let cells: usize = changes.iter().map(|c| c.cells.len()).sum();
                self.stats.cells_received += cells as u64;
                self.staged_cells += cells;
                self.staged.extend(changes);
                if partial {
                    if self.staged_cells >= self.cfg.unit_stage_cells {
                        // Complete units waiting before this one go first; staging on
                        // disk is for the unit in progress alone.
                        self.apply_group(now_ms, db)?;
                    }
                    if self.staged_cells >= self.cfg.unit_stage_cells {
                        self.stage_unit_part(now_ms, db)?;
                    }
                    return Ok(());
                }
                if self.grouping
                    && self.staged_parts == 0
                    && self.staged_cells < self.cfg.unit_stage_cells
                {
                    self.group = Some(Group {
                        changes: self.staged.len(),
                        cells: self.staged_cells,
                        end,
                    });
                    return Ok(());
                }
                // This unit and any waiting before it, in one transaction; a CAUGHT_UP that
                // waited for those is handled after it, as `apply_group` would (dropped, the
                // peer's position stayed unknown until its next CAUGHT_UP, and a caught-up
                // session did not know it: simulation, seed 211786 with `BLAZEDB_SIM_PERTURB`).
                let caught_up = self.caught_up_after_group.take();
                self.apply_staged(now_ms, end, db)?;
                self.units_applied(now_ms, db)?;
                match caught_up {
                    Some(seq) => self.on_caught_up(now_ms, seq, db),
                    None => Ok(()),
                }
            }
            (State::Open, Message::Ack { seq, caught_up }) => {
                if seq > self.sent_through {
                    return Err(self.fail(
                        ErrorCode::Malformed,
                        format!("ACK of {seq} beyond what was sent"),
                        now_ms,
                    ));
                }
                while self.unacked.front().is_some_and(|(u, _)| *u <= seq) {
                    self.unacked.pop_front();
                }
                self.acked = self.acked.max(seq);
                if caught_up && !self.unit_in_progress() {
                    // Its feed went whole before this ACK: stable once the units that came
                    // before it are applied.
                    self.stabilize_after_units(self.acked);
                }
                self.evict_kept_fields_once_acked(db)
                    .map_err(|e| self.internal(e, now_ms))?;
                if self
                    .evicts_unconfirmed
                    .is_some_and(|(after, _)| seq > after)
                    && self.view_updates_flushed()
                {
                    // A unit sent after the EVICTs was applied: they arrived before it.
                    self.evicts_unconfirmed = None;
                    self.set_evicts_note(db, None)
                        .map_err(|e| self.internal(e, now_ms))?;
                }
                let _ = self.note_cursors(db, false);
                if self.snap_out.is_none() {
                    if let (Some(view), Some(peer)) =
                        (self.view_pending.take(), self.peer.as_ref().map(|p| p.node))
                    {
                        // The peer applied what we sent under this view: remember it, so a
                        // reconnect with the same view resumes incrementally.
                        db.set_peer_notes_or_wait(peer, &[(NOTE_VIEW, Some(&view))])
                            .map_err(|e| self.internal(e, now_ms))?;
                    }
                }
                Ok(())
            }
            (State::Open, Message::CaughtUp { .. }) if self.restarting => Ok(()),
            (State::Open, Message::CaughtUp { seq }) if self.group.is_some() => {
                // About the position after the units waiting to be applied: handled after
                // them (`apply_group`).
                self.caught_up_after_group = Some(seq);
                // The peer's feed went whole after every ACK it sent before this.
                self.stabilize_after_units(self.acked);
                Ok(())
            }
            (State::Open, Message::CaughtUp { seq }) => {
                if !self.unit_in_progress() {
                    self.stabilize_after_units(self.acked);
                }
                self.on_caught_up(now_ms, seq, db)?;
                self.note_cursors(db, false)
                    .map_err(|e| self.internal(e, now_ms))
            }
            (State::Open, Message::Ping { nonce }) => {
                self.send(&Message::Pong { nonce }, now_ms);
                Ok(())
            }
            (State::Open, Message::Pong { nonce }) => {
                if self
                    .evicts_unconfirmed
                    .is_some_and(|(_, ping)| nonce >= ping)
                    && self.view_updates_flushed()
                {
                    // The peer answered a PING sent after the EVICTs: it has them.
                    self.evicts_unconfirmed = None;
                    self.set_evicts_note(db, None)
                        .map_err(|e| self.internal(e, now_ms))?;
                }
                Ok(())
            }
            (State::Open, Message::Reject { rejections }) => {
                self.stats.changes_rejected_by_peer += rejections.len() as u64;
                for r in &rejections {
                    self.remember_refused(r.collection.clone(), r.id);
                }
                self.events.push_back(SessionEvent::Rejected(rejections));
                Ok(())
            }
            (State::Open, Message::Evict { .. }) if self.restarting => Ok(()),
            (State::Open, Message::Evict { records }) => self.on_evict(now_ms, records, db),
            (
                State::Open,
                Message::SnapshotBegin {
                    snap_id,
                    position,
                    first_index,
                    subscription,
                    replace,
                },
            ) => self.on_snapshot_begin(
                now_ms,
                (snap_id, position, first_index, subscription, replace),
                db,
            ),
            (State::Open, Message::SnapshotChunk { .. }) if self.restarting => Ok(()),
            (State::Open, Message::SnapshotChunk { index, last, data }) => {
                self.on_snapshot_chunk(now_ms, index, last, &data, db)
            }
            (State::Open, Message::SnapshotEnd { .. }) if self.restarting => Ok(()),
            (State::Open, Message::SnapshotEnd { chunks }) => {
                self.on_snapshot_end(now_ms, chunks, db)
            }
            (State::Closed, _) => Ok(()),
        }
    }

    fn on_hello(&mut self, now_ms: u64, mut h: Hello, db: &Database) -> Result<(), SyncError> {
        if self.cfg.access.is_some() {
            // A peer of a side that enforces access rules is its client, whatever its HELLO
            // claims: a "relay" never expires in our GC and is never sent a snapshot, so one
            // client saying so once would hold back the collection of every tombstone here.
            h.server = false;
        }
        if h.version != PROTOCOL_VERSION {
            return Err(self.fail_version(h.version, now_ms));
        }
        if h.node == self.node {
            return Err(self.fail(
                ErrorCode::SameNode,
                format!(
                    "both sides are node {}: the same database file is on both sides (sync \
                     two different files), or a copy of one that was only opened read-only \
                     since it was copied (a copy gets a node id of its own at its first \
                     writable open)",
                    h.node
                ),
                now_ms,
            ));
        }
        if let Some(access) = self.cfg.access.clone() {
            if let Err(message) = access.admit(&h) {
                return Err(self.fail(ErrorCode::RateLimited, message, now_ms));
            }
            if let Err(message) = access.authenticate(&h) {
                return Err(self.fail(ErrorCode::AuthFailed, message, now_ms));
            }
            self.credential_expires_ms = access
                .credential_lifetime_ms()
                .map(|l| now_ms.saturating_add(l));
            if let Some(who) = access.identity() {
                let known = db
                    .peer_note(h.node, IDENTITY_NOTE)
                    .map_err(|e| self.internal(e, now_ms))?;
                match known {
                    Some(owner) if owner != who => {
                        return Err(self.fail(
                            ErrorCode::AuthFailed,
                            format!(
                                "node {} belongs to another user here (the first identity it \
                                 connected with): each copy of the database connects with its \
                                 own node id and its owner's token. If this copy is yours and \
                                 never connected as anyone else, someone claimed its id first \
                                 (node ids are in every change a node makes, visible to its \
                                 readers): the peer's operator can release it by forgetting \
                                 the node (`Database::forget_peer`; `blazedb peers STORE --forget {}`)",
                                h.node, h.node
                            ),
                            now_ms,
                        ))
                    }
                    Some(_) => {}
                    // May wait in memory while the file takes no writes (a full disk):
                    // the node is bound in this process until it is stored.
                    None => db
                        .set_peer_notes_or_wait(h.node, &[(IDENTITY_NOTE, Some(&who))])
                        .map_err(|e| self.internal(e, now_ms))?,
                }
            }
        }
        if let Some(mut hello) = self.hello_deferred.take() {
            // Accepted: now it may know who we are and how far our feed reaches.
            hello.last_seq = db.last_seq().map_err(|e| self.internal(e, now_ms))?;
            self.send(&Message::Hello(hello), now_ms);
        }
        self.note_peer_roles(&h, db)
            .map_err(|e| self.internal(e, now_ms))?;
        self.encoder.lz4 = self.cfg.lz4 && h.caps & caps::LZ4 != 0;
        self.state = State::Open;
        self.events.push_back(SessionEvent::Connected {
            peer: h.node,
            hello: h.clone(),
        });
        if !self.cfg.token.is_empty() && h.token_unchecked() {
            self.events.push_back(SessionEvent::TokenUnchecked);
        }
        if self.cfg.mode.receives() && h.mode.sends() {
            let mut from = db
                .peer_cursor(h.node, PeerDirection::Received)
                .map_err(|e| self.internal(e, now_ms))?;
            if from > h.last_seq {
                // The peer's feed is shorter than what we received from it: it was restored
                // from an older copy. Receive everything again (idempotent).
                from = Seq(0);
            }
            self.received_through = from;
            self.received_noted = from;
            self.subscribed = true;
            let peer = h.node;
            let h_receives = h.mode.receives();
            self.peer = Some(h);
            let snapshot = self
                .snapshot_wish(peer, db)
                .map_err(|e| self.internal(e, now_ms))?;
            // What we recorded of the peer's ACKs. Sent in SUBSCRIBE: less than it received
            // from us says our file is older than the one that sent it (restored), see
            // `on_subscribe`.
            let acked = db
                .peer_cursor(peer, PeerDirection::Acked)
                .map_err(|e| self.internal(e, now_ms))?;
            if !(self.cfg.mode.sends() && h_receives) {
                // Nobody will tell us what the peer has of ours: go by the stored cursor.
                self.evict_outside_own_filter(peer, acked, db)
                    .map_err(|e| self.internal(e, now_ms))?;
            }
            self.subscriptions_sent += 1;
            self.send(
                &Message::Subscribe {
                    from,
                    policy: self.cfg.policy.clone(),
                    snapshot,
                    acked,
                },
                now_ms,
            );
            return Ok(());
        }
        self.peer = Some(h);
        Ok(())
    }

    /// Remember whether the peer is a relay (GC never lets a relay expire) and whether it
    /// only pushes to us (it never learns of our removals, so GC holds them by age): see
    /// `store/gc.rs`. Written only when they change, so a reconnect costs two reads.
    fn note_peer_roles(&self, h: &Hello, db: &Database) -> Result<(), Error> {
        let we_receive = self.cfg.mode.receives() && h.mode.sends();
        let we_send = self.cfg.mode.sends() && h.mode.receives();
        let mut changed = Vec::new();
        for (name, want) in [
            (SERVER_NOTE, h.server.then_some("1")),
            (PUSHES_ONLY_NOTE, (we_receive && !we_send).then_some("1")),
        ] {
            if db.peer_note(h.node, name)?.as_deref() != want {
                changed.push((name, want));
            }
        }
        if !changed.is_empty() {
            // Read by GC, which stores notes waiting for the disk before it runs.
            db.set_peer_notes_or_wait(h.node, &changed)?;
        }
        Ok(())
    }

    /// Change what this side receives, on a live session: the peer answers with a snapshot
    /// of the new view, and what we hold of its data outside the new view is evicted when
    /// that snapshot is applied. Errors (an invalid policy) leave the session as it was.
    pub fn set_policy(
        &mut self,
        now_ms: u64,
        db: &Database,
        policy: SyncPolicy,
    ) -> Result<(), String> {
        policy.compile()?;
        if policy == self.cfg.policy {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.cfg.policy, policy);
        if self.state != State::Open || !self.subscribed {
            // Sent with SUBSCRIBE when the peer says HELLO.
            return Ok(());
        }
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        self.snap_scope = scope_of(Some(&old), &self.cfg.policy);
        self.drop_unit();
        self.snap_in = None;
        self.restarting = true;
        let res = db.snapshot_abort(peer).and_then(|()| {
            if self.cfg.policy.exclude_fields.is_empty() {
                Ok(())
            } else {
                self.evict_excluded_fields(db, Seq(0))
            }
        });
        if let Err(e) = res {
            let _ = self.internal(e, now_ms);
            return Err("storage error while changing the policy; the session ended".into());
        }
        self.subscriptions_sent += 1;
        self.send(
            &Message::Subscribe {
                from: self.received_through,
                policy: self.cfg.policy.clone(),
                snapshot: SnapshotWish::Want,
                // Only a session's first SUBSCRIBE is judged for a restore.
                acked: self.acked,
            },
            now_ms,
        );
        Ok(())
    }

    /// The policy this side receives under.
    pub fn policy(&self) -> &SyncPolicy {
        &self.cfg.policy
    }

    /// The next frame to send, if any. Reads the change feed when the peer subscribed and
    /// the window has room.
    pub fn poll_transmit(&mut self, now_ms: u64, db: &Database) -> Option<Vec<u8>> {
        if self.out.is_empty() && self.state == State::Open {
            if let Err(e) = self.fill(now_ms, db) {
                let _ = self.internal(e, now_ms);
            }
            self.out_fill_frames = self.out.len();
        }
        self.poll_queued()
    }

    /// The next frame already queued (replies, a PING from [`Session::keep_alive`], frames of
    /// the feed read earlier), without reading the feed for more: for a driver that cannot
    /// call into the database for now. Touches no database.
    pub fn poll_queued(&mut self) -> Option<Vec<u8>> {
        let f = self.out.pop_front()?;
        self.out_fill_frames = self.out_fill_frames.saturating_sub(1);
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += f.len() as u64;
        Some(f)
    }

    /// Handle timers: ping when quiet, give up when the peer is silent too long, persist the
    /// acknowledged cursor.
    pub fn handle_timeout(&mut self, now_ms: u64, db: &Database) {
        if self.state == State::Closed {
            return;
        }
        if self.credential_expires_ms.is_some_and(|t| now_ms >= t) {
            self.close(
                now_ms,
                db,
                ErrorCode::AuthFailed,
                "the credential expired during the session: reconnect with a fresh token",
            );
            return;
        }
        if self
            .end_ack_wait_since
            .is_some_and(|t| now_ms >= t.saturating_add(END_ACK_WAIT_MS))
        {
            // Past it, the timer would fire at once again and again while new changes keep
            // the session from being caught up.
            self.end_ack_wait_over = true;
        }
        if now_ms >= self.idle_deadline_ms() {
            let message = if self.state == State::AwaitHello {
                // The connection works (the transport opened it), but no HELLO came: a
                // BlazeDB peer sends one at once, so this is most likely another kind of
                // server on that port.
                format!(
                    "the peer said no HELLO in {} ms although the connection is open: it is \
                     probably not a BlazeDB peer (check the host and port), or badly overloaded",
                    self.cfg.idle_timeout_ms
                )
            } else {
                format!(
                    "nothing received for {} ms: the peer or the network is down",
                    self.cfg.idle_timeout_ms
                )
            };
            let _ = self.fail(ErrorCode::Timeout, message, now_ms);
            return;
        }
        self.ping_if_due(now_ms);
        let _ = self.note_cursors(db, false);
    }

    /// Queue a PING when nothing was sent for the ping interval. Not while our HELLO waits
    /// for the peer's credential: a PING would come before it, and the peer refuses anything
    /// but HELLO first (its HELLO may be late on a lossy link; the idle timeout ends a
    /// session that never says it).
    fn ping_if_due(&mut self, now_ms: u64) {
        if self.hello_deferred.is_none()
            && now_ms.saturating_sub(self.last_send_ms) >= self.ping_interval_ms()
        {
            self.ping_nonce += 1;
            self.send(
                &Message::Ping {
                    nonce: self.ping_nonce,
                },
                now_ms,
            );
        }
    }

    /// For a driver that cannot call into the database for now (another caller holds its lock
    /// for long): queue a PING when one is due, as [`Session::handle_timeout`] would, so the
    /// peer, which hears nothing else from this side meanwhile, does not take it for dead.
    /// Returns when to call again (`None`: nothing is due, e.g. the session is closed).
    /// Touches no database, checks no idle timeout and runs no other timer: those wait for
    /// [`Session::handle_stall`]. Take the PING with [`Session::poll_queued`].
    pub fn keep_alive(&mut self, now_ms: u64) -> Option<u64> {
        if self.state == State::Closed || self.hello_deferred.is_some() {
            return None;
        }
        self.ping_if_due(now_ms);
        Some(self.last_send_ms.saturating_add(self.ping_interval_ms()))
    }

    /// The driver could not call into the session from `from_ms` to `to_ms` because it waited
    /// for the database (see [`Session::keep_alive`]), and read nothing meanwhile: that time
    /// does not count as the peer's silence. Whatever the peer sent meanwhile waits unread
    /// in the transport; counted against it, a live peer was cut off by the idle timeout the
    /// moment a transaction here held the lock longer than that timeout. A peer that is
    /// really gone is still found out: the idle timeout runs again from `to_ms`, minus the
    /// silence before `from_ms`. Call it before anything else once the wait is over.
    pub fn handle_stall(&mut self, from_ms: u64, to_ms: u64) {
        let excluded = to_ms.saturating_sub(from_ms.max(self.last_recv_ms));
        self.last_recv_ms = self.last_recv_ms.saturating_add(excluded);
    }

    /// Whether a local commit may wait for the ACK this session is waiting for: it holds
    /// unacknowledged changes and only a trickle (less than a batch) is left to send, so
    /// `poll_transmit` would send nothing for a commit before that ACK comes (see the
    /// coalescing in `fill`). A driver may then leave commits unwatched until its next
    /// input: the ACK wakes it, and `poll_transmit` then sends everything that waited. A
    /// commit large enough to open the window waits for that ACK too (at most one round
    /// trip).
    pub fn commit_can_wait(&self, db: &Database) -> bool {
        let quiet = self.peer_from.is_some()
            && !self.unacked.is_empty()
            && !self.unit_open
            && self.sent_through >= self.unit_until
            && self.snap_out.is_none()
            && self.evict_pending.is_empty()
            && self.restate_pending.is_empty();
        quiet && db.last_seq().is_ok_and(|head| self.trickle(head))
    }

    /// The configured ping interval, at least [`PING_INTERVAL_MS_MIN`]: an interval of 0
    /// would have every timer tick send a PING and the driver wake at once for the next.
    fn ping_interval_ms(&self) -> u64 {
        self.cfg.ping_interval_ms.max(PING_INTERVAL_MS_MIN)
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.state == State::Closed {
            return None;
        }
        // No ping is due while our HELLO is held (`handle_timeout`).
        let ping_due = if self.hello_deferred.is_some() {
            u64::MAX
        } else {
            self.last_send_ms.saturating_add(self.ping_interval_ms())
        };
        Some(
            // Saturating: an interval configured near u64::MAX means "never", not a wrap
            // into the past that would fire the timer in a loop.
            ping_due
                .min(self.idle_deadline_ms())
                .min(self.credential_expires_ms.unwrap_or(u64::MAX))
                .min(self.deferred_echo_due().unwrap_or(u64::MAX))
                .min(
                    self.end_ack_wait_since
                        .filter(|_| !self.end_ack_wait_over)
                        .map_or(u64::MAX, |t| t.saturating_add(END_ACK_WAIT_MS)),
                ),
        )
    }

    /// When the peer's silence ends the session: the idle timeout after the last frame
    /// received, plus the time the peer may take to apply the units it has not acknowledged
    /// (it applies each whole and reads nothing meanwhile; a unit of a few hundred thousand
    /// cells took longer than the idle timeout, and the sender cut a live peer off).
    fn idle_deadline_ms(&self) -> u64 {
        let outstanding: u64 = self.unacked.iter().map(|(_, cells)| cells).sum();
        self.last_recv_ms
            .saturating_add(self.cfg.idle_timeout_ms)
            .saturating_add(apply_grace_ms(outstanding))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// End the session: queue an ERROR frame with `code` (e.g. `ShuttingDown`) and persist
    /// the acknowledged cursor.
    pub fn close(&mut self, now_ms: u64, db: &Database, code: ErrorCode, message: &str) {
        if self.state == State::Closed {
            return;
        }
        let _ = self.note_cursors(db, true);
        let _ = self.fail(code, message.to_owned(), now_ms);
    }

    /// The transport went away: mark closed without sending anything.
    pub fn transport_closed(&mut self, _now_ms: u64, db: &Database) {
        // A unit cut off here (or whose apply failed) is never applied; the sender sends it
        // again whole: its staged parts go now, not when they are taken for abandoned.
        if self.staging_used {
            if let Some(peer) = self.peer.as_ref().map(|p| p.node) {
                if db.unit_discard_session(peer, self.staging).is_ok() {
                    self.staging_used = false;
                    self.staged_parts = 0;
                }
            }
        }
        if self.state == State::Closed {
            return;
        }
        let _ = self.note_cursors(db, true);
        self.state = State::Closed;
        self.events.push_back(SessionEvent::Closed(SyncError {
            code: ErrorCode::Timeout,
            message: "connection closed".into(),
            remote: false,
        }));
    }

    /// Note the cursors that moved without a unit carrying them (the acknowledged one, and
    /// `received_through` moved by CAUGHT_UP alone) with the database, which stores the
    /// noted cursors of all its sessions together (`Database::note_peer_cursor`); `force`
    /// (the session ends) stores them now. Every step is tried; the first error is returned.
    fn note_cursors(&mut self, db: &Database, force: bool) -> Result<(), Error> {
        let Some(peer) = self.peer.as_ref().map(|p| p.node) else {
            return Ok(());
        };
        let mut result = Ok(());
        if self.acked > self.acked_noted {
            match db.note_peer_cursor(peer, PeerDirection::Acked, self.acked) {
                Ok(()) => self.acked_noted = self.acked,
                Err(e) => result = Err(e),
            }
        }
        if self.received_through > self.received_noted {
            match db.note_peer_cursor(peer, PeerDirection::Received, self.received_through) {
                Ok(()) => self.received_noted = self.received_through,
                Err(e) => result = result.and(Err(e)),
            }
        }
        if !self.subscribed {
            // Nothing of the peer's comes to us in this session (its mode or ours): it has
            // no write on its way here, and what it acknowledged is stable at once.
            self.stable = self.stable.max(self.acked);
        }
        if self.peer_from.is_some() && self.stable_noted != Some(self.stable) {
            match db.note_peer_cursor(peer, PeerDirection::Stable, self.stable) {
                Ok(()) => self.stable_noted = Some(self.stable),
                Err(e) => result = result.and(Err(e)),
            }
        }
        if force {
            result = result.and(db.store_noted_cursors());
        }
        result
    }

    /// ACK `seq` of the peer's feed, saying whether ours has gone to it whole (`caught_up`).
    pub(super) fn send_ack(&mut self, seq: Seq, now_ms: u64, db: &Database) {
        self.ack_sent_through = self.ack_sent_through.max(seq);
        let caught_up = self.feed_sent_whole(db);
        self.send(&Message::Ack { seq, caught_up }, now_ms);
    }

    /// Whether everything of our feed up to its head went to the peer in complete units
    /// (apart from its own changes), so that an ACK queued now may say so, for a peer that
    /// reads it (`caps::ACK_CAUGHT_UP`). Only the cached head is read.
    fn feed_sent_whole(&self, db: &Database) -> bool {
        self.peer
            .as_ref()
            .is_some_and(|p| p.caps & caps::ACK_CAUGHT_UP != 0)
            && self.peer_from.is_some()
            && self.snap_out.is_none()
            && !self.replacing_snapshot_due
            && !self.unit_open
            && self.sent_through >= self.unit_until
            && db.last_seq().is_ok_and(|head| self.sent_through >= head)
    }

    /// The peer's feed, as it stood when it sent the ACKs through `upto`, has all come (a
    /// CAUGHT_UP, or a flagged ACK): `upto` is stable once the units waiting in `group`
    /// (which came before) are applied.
    fn stabilize_after_units(&mut self, upto: Seq) {
        if self.group.is_some() {
            self.stable_after_group = Some(self.stable_after_group.map_or(upto, |s| s.max(upto)));
        } else {
            self.stable = self.stable.max(upto);
        }
    }

    /// The units that waited in a group were applied: what waited for them is stable now.
    pub(super) fn units_applied(&mut self, now_ms: u64, db: &Database) -> Result<(), SyncError> {
        if let Some(upto) = self.stable_after_group.take() {
            self.stable = self.stable.max(upto);
            self.note_cursors(db, false)
                .map_err(|e| self.internal(e, now_ms))?;
        }
        Ok(())
    }

    fn send(&mut self, m: &Message, now_ms: u64) {
        let (k, payload) = message::encode_simple(m);
        self.push_frame(k, false, &payload, now_ms);
    }

    fn push_frame(&mut self, k: u8, partial: bool, payload: &[u8], now_ms: u64) {
        let f = self.encoder.encode(k, partial, payload);
        self.out.push_back(f);
        self.last_send_ms = now_ms;
    }

    fn fail(&mut self, code: ErrorCode, message: String, now_ms: u64) -> SyncError {
        self.fail_telling(code, message.clone(), message, now_ms)
    }

    /// End the session on a HELLO of another protocol version (`UNSUPPORTED_VERSION`),
    /// telling each side which of the two is older and what to upgrade, in its own terms:
    /// "the peer speaks protocol 3, this build 4" read the same on both sides, and left the
    /// user to work out which one that was (an upgrade audit, 2026-12-07, F7). Versions must
    /// match exactly (PROTOCOL.md §8.2), so a relay and all its peers move together.
    fn fail_version(&mut self, peer: u16, now_ms: u64) -> SyncError {
        let (here, to_peer) = version_mismatch(peer, PROTOCOL_VERSION);
        self.fail_telling(ErrorCode::UnsupportedVersion, here, to_peer, now_ms)
    }

    /// [`Session::fail`] with one message for this side (`here`, in the returned error and
    /// the `Closed` event) and another for the peer's ERROR (`to_peer`): where what this
    /// side's user reads names its own files, or reads differently from the other side.
    fn fail_telling(
        &mut self,
        code: ErrorCode,
        here: String,
        to_peer: String,
        now_ms: u64,
    ) -> SyncError {
        let message = here;
        if self.state != State::Closed {
            // Frames already queued keep their place: each has used up a frame index, so the
            // ERROR must come after them for the peer's checksums to match.
            self.send(
                &Message::Error {
                    code,
                    message: to_peer,
                },
                now_ms,
            );
            self.state = State::Closed;
        }
        let e = SyncError {
            code,
            message,
            remote: false,
        };
        self.events.push_back(SessionEvent::Closed(e.clone()));
        e
    }

    /// End the session on a failure of this side's database. A full disk is `STORAGE_FULL`
    /// and says whose disk it is: this side's message names the file, the peer's says it is
    /// the peer's (an audit, 2026-12-07: both sides read "INTERNAL ... free space on the disk
    /// that holds the database", which a client of a full relay took for its own disk, and
    /// `sync A B` named neither file).
    fn internal(&mut self, e: Error, now_ms: u64) -> SyncError {
        if e.is_disk_full() {
            let cause = match &e {
                Error::Sqlite(s) => crate::error::sqlite_brief(s),
                other => other.to_string(),
            };
            let here = format!(
                "{} ({cause})",
                crate::error::advice::sync_no_room_here(&self.db_path)
            );
            // A relay's clients also learn that syncs that only read still work.
            let to_peer = match self.cfg.server {
                true => crate::error::advice::SYNC_NO_ROOM_AT_RELAY,
                false => crate::error::advice::SYNC_NO_ROOM_AT_PEER,
            };
            return self.fail_telling(ErrorCode::StorageFull, here, to_peer.to_owned(), now_ms);
        }
        let message = match self.cfg.server {
            true => relay_store_message(&e),
            false => None,
        };
        self.fail(
            ErrorCode::Internal,
            message.unwrap_or_else(|| e.to_string()),
            now_ms,
        )
    }
}

/// What a server (a relay) tells its peer, and logs, when its store was deleted while it
/// runs or its file system turned read-only: the storage error alone would send users to
/// their own files. `None` for other
/// errors (a full disk is `STORAGE_FULL`, see [`Session::internal`]). The refused changes
/// stay with the client, which sends them again at its next sync.
fn relay_store_message(e: &Error) -> Option<String> {
    match e {
        Error::FileGone { path } => Some(format!(
            "the relay's store {path} was deleted while the relay runs: it refuses changes, \
             which would be lost with the deleted file. Nothing of this sync's changes was \
             stored on the relay; the client keeps them and sends them again at its next sync \
             once the relay's operator has restored the data directory and restarted the relay"
        )),
        Error::FileSystemReadOnly { .. } => {
            Some(crate::error::advice::SYNC_READ_ONLY_AT_RELAY.to_owned())
        }
        _ => None,
    }
}

/// A record, by collection and id.
type RecordKey = (String, RecordId);

/// Names of per-peer notes (`Database::peer_note`).
const NOTE_VIEW: &str = "served_view";
const NOTE_POLICY: &str = "policy";
/// [`Session::fields_evicted_through`], written after each eviction of excluded fields.
const NOTE_FIELDS_EVICTED: &str = "fields_evicted_through";
/// The feed position of the peer through which a snapshot file of its brought us its
/// changes (`sync::snapshot::import_snapshot_file`). The peer never got an ACK for it, so its
/// record of our ACKs being below what we received from it does not mean its file was
/// restored from an older copy (`on_subscribe`) while we are still there.
pub(crate) const NOTE_RECEIVED_BY_FILE: &str = "received_by_file";

/// Sender side: the snapshot last begun for the peer and the view it is served under
/// (`snapshot_note`), so that a reconnect under the same view resumes it.
const NOTE_SNAPSHOT_VIEW: &str = "snapshot_view";

/// What `NOTE_VIEW` (and `NOTE_SNAPSHOT_VIEW`) hold for a view: its SHA-256. A relay's view
/// is its whole read-rules text and the caller's claims; noted as it is, in two notes per
/// client, a 1.6 KB rules file cost 9.6 KB of store pages per client node, kept for good (a
/// resource audit, 2026-12-07: 96 MB for 10,000 nodes). Only equality is ever asked of it.
fn view_note(view: &str) -> String {
    format!("sha256:{}", hex(&openssl::sha::sha256(view.as_bytes())))
}

/// The value of `NOTE_SNAPSHOT_VIEW` for snapshot `snap_id` served under `view` (its note).
fn snapshot_note(snap_id: u64, view: &str) -> String {
    format!("{snap_id:x} {view}")
}

/// The snapshot id a `NOTE_SNAPSHOT_VIEW` names.
fn snapshot_note_id(note: &str) -> Option<u64> {
    u64::from_str_radix(note.split(' ').next()?, 16).ok()
}

/// Whether `db` may hold only part of what its peers hold, so that a record missing from it
/// says nothing about the record (a snapshot file of it must not evict records that are not
/// in it, `sync/snapshot.rs`): it subscribed to a peer with a policy that filters
/// collections, records or fields, or it syncs with a relay, whose read rules may keep
/// records from it (and evict those it may no longer read).
pub(crate) fn holds_part_of_peers_data(db: &Database) -> Result<bool, Error> {
    let everything = SyncPolicy::everything().fingerprint();
    for peer in db.peers()? {
        if peer.relay {
            return Ok(true);
        }
        if let Some(note) = db.peer_note(peer.node, NOTE_POLICY)? {
            if decode_policy_note(&note).is_none_or(|p| p.fingerprint() != everything) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
/// Refused records a session remembers (see `Session::refused`).
const REFUSED_REMEMBERED_MAX: usize = 4096;
/// Positions of restatements a session remembers to count what it sends from there
/// (`Session::restated_at`): one per unit that called for any, forgotten once sent past. Only
/// a statistic depends on it.
const RESTATED_POSITIONS_MAX: usize = 1024;
/// Records per EVICT message.
const EVICT_BATCH: usize = 4096;

/// What [`Session::evictions_due`] found among records queued for eviction.
struct Due {
    /// Outside the peer's view: EVICT.
    evict: Vec<RecordKey>,
    /// Deleted by someone else since: restate the tombstone.
    deleted: Vec<RecordKey>,
}

/// What the peer may see (access control) and asked to see (its policy).
struct View<'a> {
    access: Option<&'a dyn super::AccessControl>,
    policy: &'a CompiledPolicy,
    params: Params,
}

impl View<'_> {
    fn collection_visible(&self, coll: &str) -> bool {
        self.policy.allows_collection(coll)
            && self.access.is_none_or(|a| a.can_read_collection(coll))
    }

    fn record_visible(
        &self,
        coll: &str,
        id: RecordId,
        fields: &std::collections::BTreeMap<String, crate::Value>,
    ) -> bool {
        self.access.is_none_or(|a| a.can_read(coll, id, fields))
            && self.policy.matches(id, fields, &self.params)
    }

    /// Whether any change can move a record of `coll` into or out of the view: not when the
    /// collection is visible and neither the policy's filter nor the read rule looks at a
    /// field (then every record of it is in the view, and stays there).
    fn membership_can_change(&self, coll: &str) -> bool {
        if !self.collection_visible(coll) {
            return true;
        }
        let access_fields = match self.access {
            None => Some(std::collections::BTreeSet::new()),
            Some(a) => a.read_fields(coll),
        };
        access_fields.is_none_or(|f| !f.is_empty() || !self.policy.filter_fields().is_empty())
    }

    /// Whether a change to these fields can move the record into or out of the view.
    fn can_move(&self, coll: &str, ch: &Change) -> bool {
        let access_fields = match self.access {
            None => Some(std::collections::BTreeSet::new()),
            Some(a) => a.read_fields(coll),
        };
        let Some(access_fields) = access_fields else {
            return true;
        };
        ch.cells.iter().any(|c| match c.key.field() {
            // Insert, delete or revival.
            None => true,
            Some(f) => self.policy.filter_fields().contains(f) || access_fields.contains(f),
        })
    }
}

/// Where the changes [`filter_view`] judges stand in the feed: the unit they belong to began
/// after `since`, and the batch they were read in ends at `at`.
#[derive(Clone, Copy, Debug)]
struct BatchSpan {
    since: Seq,
    at: Seq,
}

fn name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "HELLO",
        Message::Subscribe { .. } => "SUBSCRIBE",
        Message::Changes { .. } => "CHANGES",
        Message::Ack { .. } => "ACK",
        Message::CaughtUp { .. } => "CAUGHT_UP",
        Message::Ping { .. } => "PING",
        Message::Pong { .. } => "PONG",
        Message::Reject { .. } => "REJECT",
        Message::Evict { .. } => "EVICT",
        Message::SnapshotBegin { .. } => "SNAPSHOT_BEGIN",
        Message::SnapshotChunk { .. } => "SNAPSHOT_CHUNK",
        Message::SnapshotEnd { .. } => "SNAPSHOT_END",
        Message::Error { .. } => "ERROR",
    }
}

/// How long a peer may stay silent while it applies `cells` cells of a snapshot or of units
/// (each applied whole, in one transaction, reading nothing meanwhile).
pub(super) fn apply_grace_ms(cells: u64) -> u64 {
    (cells / SNAPSHOT_APPLY_CELLS_PER_MS_MIN).min(SNAPSHOT_APPLY_GRACE_MS_MAX)
}

/// What each side reads when the peer speaks protocol `peer` and this build `ours`: this
/// side's message, and the one sent to the peer (who reads "this peer" as the sender).
fn version_mismatch(peer: u16, ours: u16) -> (String, String) {
    const SAME: &str = "a relay (or listener) and every peer that syncs with it must speak \
                        the same protocol: upgrade them together (README, \"Upgrading\")";
    if peer < ours {
        (
            format!(
                "the peer speaks sync protocol {peer}, this build {ours}: the peer is older, \
                 upgrade the peer's BlazeDB; {SAME}"
            ),
            format!(
                "this peer speaks sync protocol {ours}, yours {peer}: yours is older, upgrade \
                 your BlazeDB; {SAME}"
            ),
        )
    } else {
        (
            format!(
                "the peer speaks sync protocol {peer}, this build {ours}: this build is older, \
                 upgrade this BlazeDB; {SAME}"
            ),
            format!(
                "this peer speaks sync protocol {ours}, yours {peer}: this peer is older, its \
                 operator must upgrade it; {SAME}"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenOptions;

    /// Each side reads which of the two is older and what to upgrade, whichever it is.
    #[test]
    fn a_version_mismatch_says_which_side_is_older_to_each_side() {
        let (here, to_peer) = version_mismatch(3, 4);
        assert!(here.starts_with("the peer speaks sync protocol 3, this build 4: the peer is older, upgrade the peer's BlazeDB; "), "{here}");
        assert!(
            to_peer.starts_with(
                "this peer speaks sync protocol 4, yours 3: yours is older, upgrade your BlazeDB; "
            ),
            "{to_peer}"
        );
        let (here, to_peer) = version_mismatch(5, 4);
        assert!(here.starts_with("the peer speaks sync protocol 5, this build 4: this build is older, upgrade this BlazeDB; "), "{here}");
        assert!(to_peer.starts_with("this peer speaks sync protocol 4, yours 5: this peer is older, its operator must upgrade it; "), "{to_peer}");
        for m in [here, to_peer] {
            assert!(
                m.ends_with("upgrade them together (README, \"Upgrading\")"),
                "{m}"
            );
        }
    }

    /// Pump `sa` and `sb` against each other until both are closed or nothing moves, and
    /// return how each ended (`None`: it did not).
    fn pump_to_end(
        a: &Database,
        sa: &mut Session,
        b: &Database,
        sb: &mut Session,
    ) -> (Option<SyncError>, Option<SyncError>) {
        let (mut ea, mut eb) = (None, None);
        for _ in 0..10_000 {
            let mut progress = false;
            while let Some(f) = sa.poll_transmit(0, a) {
                progress = true;
                if let Err(e) = sb.handle_bytes(0, &f, b) {
                    eb.get_or_insert(e);
                }
            }
            while let Some(f) = sb.poll_transmit(0, b) {
                progress = true;
                if let Err(e) = sa.handle_bytes(0, &f, a) {
                    ea.get_or_insert(e);
                }
            }
            if !progress || (sa.is_closed() && sb.is_closed()) {
                break;
            }
        }
        (ea, eb)
    }

    /// The side whose disk is full (here: its file at SQLite's page limit, which SQLite
    /// reports as a full disk) ends the session with STORAGE_FULL naming its file; the peer
    /// reads STORAGE_FULL saying that it is the peer's disk, without the peer's path. Before,
    /// both read "INTERNAL ... free space on the disk that holds the database" (an audit,
    /// 2026-12-07: a client of a full relay took it for its own disk).
    #[test]
    fn a_full_disk_ends_the_session_with_storage_full_saying_whose_disk() {
        let dir = tempfile::tempdir().unwrap();
        let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
        let b = Database::open(dir.path().join("b.db"), OpenOptions::default()).unwrap();
        let pad = "x".repeat(8 * 1024);
        a.transaction(|tx| {
            for n in 0..200 {
                tx.insert(
                    "c",
                    [("n", crate::Value::Int(n)), ("pad", pad.as_str().into())],
                )?;
            }
            Ok(())
        })
        .unwrap();
        b.insert("c", [("n", -1)]).unwrap();
        {
            let inner = b.lock().unwrap();
            let pages: i64 = inner
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            let limit = format!("PRAGMA max_page_count = {}", pages + 4);
            inner.conn.query_row(&limit, [], |_| Ok(())).unwrap();
        }
        let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
        let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
        let (ea, eb) = pump_to_end(&a, &mut sa, &b, &mut sb);

        let eb = eb.expect("the side with the full disk failed");
        assert_eq!(
            (eb.code, eb.remote),
            (ErrorCode::StorageFull, false),
            "{eb}"
        );
        let here = eb.to_string();
        let b_path = dir.path().join("b.db").display().to_string();
        assert!(
            here.contains(&format!("the disk that holds {b_path} is full")),
            "{here}"
        );
        let ea = ea.expect("the peer was told");
        assert_eq!((ea.code, ea.remote), (ErrorCode::StorageFull, true), "{ea}");
        let there = ea.to_string();
        assert!(
            there.starts_with(
                "sync session ended (STORAGE_FULL, reported by the peer): the peer's disk is full"
            ),
            "{there}"
        );
        assert!(
            !there.contains(&b_path),
            "the peer's path was sent: {there}"
        );
        assert!(!there.contains("INTERNAL"), "{there}");
    }

    #[test]
    fn storage_full_is_code_15_and_reads_back() {
        assert_eq!(ErrorCode::StorageFull as u16, 15);
        assert_eq!(ErrorCode::from_u16(15), ErrorCode::StorageFull);
        assert_eq!(ErrorCode::StorageFull.name(), "STORAGE_FULL");
    }
}
