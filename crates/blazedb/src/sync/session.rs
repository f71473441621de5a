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

use std::collections::VecDeque;

use super::frame::{FrameDecoder, FrameEncoder, FrameError};
use super::message::{self, caps, kind, Dict, ErrorCode, Hello, Message, SyncMode};
use crate::error::{ApplyError, Error};
use crate::limits::{
    ACK_PERSIST_INTERVAL_MS, BATCH_CELLS_DEFAULT, FRAME_TARGET_BYTES, IDLE_TIMEOUT_MS_DEFAULT,
    PING_INTERVAL_MS_DEFAULT, PROTOCOL_VERSION, TRANSACTION_CELLS_MAX, UNIT_CELLS_MAX,
    WINDOW_UNITS_DEFAULT,
};
use crate::store::{Change, Database, PeerDirection};
use crate::types::Seq;
use crate::NodeId;

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
    /// Ping after this long without sending.
    pub ping_interval_ms: u64,
    /// Give up after this long without receiving.
    pub idle_timeout_ms: u64,
    /// Offer and use LZ4.
    pub lz4: bool,
    /// Who the peer is allowed to be and what it may read and write (a relay sets this per
    /// connection). `None`: everything is allowed.
    pub access: Option<std::sync::Arc<dyn super::AccessControl>>,
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
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync session ended ({code:?}): {message}")]
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
    /// Records whose changes we refused (access rules).
    pub changes_refused: u64,
    /// Records whose changes the peer refused.
    pub changes_rejected_by_peer: u64,
    /// Units cut short at `UNIT_CELLS_MAX` (see `fill`): transactions linked beyond it may
    /// have become visible in parts.
    pub units_cut: u64,
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
    peer: Option<Hello>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
    // Sending our feed.
    peer_from: Option<Seq>,
    sent_through: Seq,
    unit_until: Seq,
    unacked: VecDeque<Seq>,
    /// Cells sent in the current (incomplete) unit.
    unit_cells: usize,
    /// Frames of the current unit went out and its last frame has not.
    unit_open: bool,
    acked: Seq,
    acked_persisted: Seq,
    acked_persisted_ms: u64,
    caught_up_sent: Option<Seq>,
    // Receiving the peer's feed.
    subscribed: bool,
    staged: Vec<Change>,
    staged_cells: usize,
    received_through: Seq,
    /// `received_through` as last stored. A CAUGHT_UP that only moves the position is
    /// stored lazily (see `persist_received`); units store theirs with their data.
    received_persisted: Seq,
    received_persisted_ms: u64,
    peer_caught_up: Option<Seq>,
    // Liveness.
    last_recv_ms: u64,
    last_send_ms: u64,
    ping_nonce: u64,
}

impl Session {
    /// Start a session for the database `db`; HELLO is queued.
    pub fn new(db: &Database, cfg: SessionConfig, now_ms: u64) -> Result<Session, Error> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: db.node_id(),
            last_seq: db.last_seq()?,
            mode: cfg.mode,
            server: cfg.server,
            caps: if cfg.lz4 { caps::LZ4 } else { 0 },
            token: cfg.token.clone(),
        };
        let mut s = Session {
            node: db.node_id(),
            state: State::AwaitHello,
            encoder: FrameEncoder::default(),
            decoder: FrameDecoder::default(),
            tx_dict: Dict::default(),
            rx_dict: Dict::default(),
            out: VecDeque::new(),
            peer: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
            peer_from: None,
            sent_through: Seq(0),
            unit_until: Seq(0),
            unacked: VecDeque::new(),
            unit_cells: 0,
            unit_open: false,
            acked: Seq(0),
            acked_persisted: Seq(0),
            acked_persisted_ms: now_ms,
            caught_up_sent: None,
            subscribed: false,
            staged: Vec::new(),
            staged_cells: 0,
            received_through: Seq(0),
            received_persisted: Seq(0),
            received_persisted_ms: now_ms,
            peer_caught_up: None,
            last_recv_ms: now_ms,
            last_send_ms: now_ms,
            ping_nonce: 0,
            cfg,
        };
        s.send(&Message::Hello(hello), now_ms);
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
        }
    }

    /// True once the session ended (after an error sent or received, or `close`).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
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
            || (self.staged.is_empty()
                && self
                    .peer_caught_up
                    .is_some_and(|s| self.received_through >= s));
        let tx_done = !sending
            || (self.peer_from.is_some()
                && self.unacked.is_empty()
                && !self.unit_open
                && self.caught_up_sent == Some(self.sent_through)
                && self.nothing_more_for_peer(db)?);
        Ok(rx_done && tx_done)
    }

    /// True when the feed past what we sent holds nothing for this peer (it may hold changes
    /// that came from the peer itself, which are never sent back).
    fn nothing_more_for_peer(&self, db: &Database) -> Result<bool, Error> {
        if self.sent_through >= db.last_seq()? {
            return Ok(true);
        }
        let peer = self.peer.as_ref().map(|p| p.node);
        let batch = db.changes_since(self.sent_through, 1, peer)?;
        Ok(batch.changes.is_empty() && !batch.more)
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
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                        FrameError::Checksum { .. } => ErrorCode::Checksum,
                        _ => ErrorCode::Malformed,
                    };
                    return Err(self.fail(code, e.to_string(), now_ms));
                }
            };
            self.stats.frames_received += 1;
            // Liveness counts whole frames only: a peer (or a corrupted length) that sends
            // bytes which never complete a frame still times out.
            self.last_recv_ms = now_ms;
            let msg = if frame.kind == kind::CHANGES {
                let budget = TRANSACTION_CELLS_MAX.saturating_sub(self.staged_cells);
                match self.rx_dict.decode_changes(&frame.payload, budget) {
                    Ok((changes, end)) => Message::Changes {
                        changes,
                        end,
                        partial: frame.partial,
                    },
                    Err(e @ crate::codec::DecodeError::TooLarge { .. }) => {
                        return Err(self.fail(ErrorCode::TooLarge, format!("CHANGES: {e}"), now_ms))
                    }
                    Err(e) => {
                        return Err(self.fail(
                            ErrorCode::Malformed,
                            format!("CHANGES: {e}"),
                            now_ms,
                        ))
                    }
                }
            } else {
                if frame.partial {
                    return Err(self.fail(
                        ErrorCode::Malformed,
                        "PARTIAL flag on a non-CHANGES frame".into(),
                        now_ms,
                    ));
                }
                // Check the version before the rest, so a newer HELLO layout is reported as
                // a version mismatch rather than as malformed.
                if frame.kind == kind::HELLO {
                    if let Some(v) = frame.payload.get(..2) {
                        let v = u16::from_le_bytes([v[0], v[1]]);
                        if v != PROTOCOL_VERSION {
                            return Err(self.fail(
                                ErrorCode::UnsupportedVersion,
                                format!("peer speaks protocol {v}, this node {PROTOCOL_VERSION}: upgrade the older one"),
                                now_ms,
                            ));
                        }
                    }
                }
                match message::decode_simple(frame.kind, &frame.payload) {
                    Ok(m) => m,
                    Err(e) => return Err(self.fail(ErrorCode::Malformed, e.to_string(), now_ms)),
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
            (State::Open, Message::Subscribe { .. }) if self.peer_from.is_some() => Err(self.fail(
                ErrorCode::Unexpected,
                "second SUBSCRIBE in one session".into(),
                now_ms,
            )),
            (State::Open, Message::Subscribe { from }) => {
                if !self.cfg.mode.sends() {
                    return Err(self.fail(
                        ErrorCode::Forbidden,
                        "this side only receives (pull mode); it does not send its changes".into(),
                        now_ms,
                    ));
                }
                let head = db.last_seq().map_err(|e| self.internal(e, now_ms))?;
                // A cursor past our head means our file is older than the one the peer synced
                // with (restored from a backup): start over; apply is idempotent.
                let from = if from > head { Seq(0) } else { from };
                self.peer_from = Some(from);
                self.sent_through = from;
                self.unit_until = from;
                self.acked = from;
                Ok(())
            }
            (
                State::Open,
                Message::Changes {
                    changes,
                    end,
                    partial,
                },
            ) => {
                if !self.subscribed {
                    return Err(self.fail(
                        ErrorCode::Unexpected,
                        "CHANGES without SUBSCRIBE".into(),
                        now_ms,
                    ));
                }
                let cells: usize = changes.iter().map(|c| c.cells.len()).sum();
                self.stats.cells_received += cells as u64;
                self.staged_cells += cells;
                self.staged.extend(changes);
                if partial {
                    return Ok(());
                }
                self.apply_staged(now_ms, end, db)
            }
            (State::Open, Message::Ack { seq }) => {
                if seq > self.sent_through {
                    return Err(self.fail(
                        ErrorCode::Malformed,
                        format!("ACK of {seq} beyond what was sent"),
                        now_ms,
                    ));
                }
                while self.unacked.front().is_some_and(|u| *u <= seq) {
                    self.unacked.pop_front();
                }
                self.acked = self.acked.max(seq);
                self.persist_acked(now_ms, db, false);
                Ok(())
            }
            (State::Open, Message::CaughtUp { seq }) => {
                self.peer_caught_up = Some(seq);
                if self.staged.is_empty() && seq > self.received_through {
                    // Everything between was skipped by the sender (it came from us):
                    // remember the position so a reconnect does not rescan it. Not a write
                    // per CAUGHT_UP: stored at most every ACK_PERSIST_INTERVAL_MS, with the
                    // next unit, or on close. Storing it late is safe: what a reconnect
                    // receives again is skipped or applied idempotently.
                    self.received_through = seq;
                    self.persist_received(now_ms, db, false)
                        .map_err(|e| self.internal(e, now_ms))?;
                }
                Ok(())
            }
            (State::Open, Message::Ping { nonce }) => {
                self.send(&Message::Pong { nonce }, now_ms);
                Ok(())
            }
            (State::Open, Message::Pong { .. }) => Ok(()),
            (State::Open, Message::Reject { rejections }) => {
                self.stats.changes_rejected_by_peer += rejections.len() as u64;
                self.events.push_back(SessionEvent::Rejected(rejections));
                Ok(())
            }
            (State::Closed, _) => Ok(()),
        }
    }

    fn on_hello(&mut self, now_ms: u64, h: Hello, db: &Database) -> Result<(), SyncError> {
        if h.version != PROTOCOL_VERSION {
            return Err(self.fail(
                ErrorCode::UnsupportedVersion,
                format!(
                    "peer speaks protocol {}, this node {PROTOCOL_VERSION}: upgrade the older one",
                    h.version
                ),
                now_ms,
            ));
        }
        if h.node == self.node {
            return Err(self.fail(
                ErrorCode::SameNode,
                format!(
                    "both sides are node {}: a database file was copied; give each copy its \
                     own file (export/import or snapshot) instead of copying files",
                    h.node
                ),
                now_ms,
            ));
        }
        if let Some(access) = self.cfg.access.clone() {
            if let Err(message) = access.authenticate(&h) {
                return Err(self.fail(ErrorCode::AuthFailed, message, now_ms));
            }
        }
        self.encoder.lz4 = self.cfg.lz4 && h.caps & caps::LZ4 != 0;
        self.state = State::Open;
        self.events.push_back(SessionEvent::Connected {
            peer: h.node,
            hello: h.clone(),
        });
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
            self.received_persisted = from;
            self.subscribed = true;
            self.send(&Message::Subscribe { from }, now_ms);
        }
        self.peer = Some(h);
        Ok(())
    }

    fn apply_staged(&mut self, now_ms: u64, end: Seq, db: &Database) -> Result<(), SyncError> {
        let changes = std::mem::take(&mut self.staged);
        self.staged_cells = 0;
        let peer = self.peer.as_ref().map(|p| p.node).expect("open");
        match db.apply_changes_owned(peer, changes, Some(end), self.cfg.access.as_deref()) {
            Ok(outcome) => {
                let n = outcome.applied;
                self.stats.cells_applied += n as u64;
                self.received_through = end;
                // The cursor was stored with the unit.
                self.received_persisted = end;
                self.received_persisted_ms = now_ms;
                if !outcome.rejected.is_empty() {
                    self.stats.changes_refused += outcome.rejected.len() as u64;
                    let rejections = outcome.rejected.clone();
                    self.send(&Message::Reject { rejections }, now_ms);
                    self.events
                        .push_back(SessionEvent::Refused(outcome.rejected));
                }
                self.send(&Message::Ack { seq: end }, now_ms);
                self.events.push_back(SessionEvent::Applied {
                    cells: n,
                    through: end,
                });
                Ok(())
            }
            Err(Error::Apply(ApplyError::ClockSkew(e))) => {
                Err(self.fail(ErrorCode::ClockSkew, e.to_string(), now_ms))
            }
            Err(Error::Apply(ApplyError::Invalid(m))) => {
                Err(self.fail(ErrorCode::Malformed, m, now_ms))
            }
            Err(e) => Err(self.internal(e, now_ms)),
        }
    }

    /// The next frame to send, if any. Reads the change feed when the peer subscribed and
    /// the window has room.
    pub fn poll_transmit(&mut self, now_ms: u64, db: &Database) -> Option<Vec<u8>> {
        if self.out.is_empty() && self.state == State::Open {
            if let Err(e) = self.fill(now_ms, db) {
                let _ = self.internal(e, now_ms);
            }
        }
        let f = self.out.pop_front()?;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += f.len() as u64;
        Some(f)
    }

    fn fill(&mut self, now_ms: u64, db: &Database) -> Result<(), Error> {
        if self.peer_from.is_none() {
            return Ok(());
        }
        let head = db.last_seq()?;
        // A unit in progress must be finished whatever the window says.
        let in_unit = self.sent_through < self.unit_until;
        if self.sent_through < head && (in_unit || self.unacked.len() < self.cfg.window_units) {
            let peer = self.peer.as_ref().map(|p| p.node);
            let mut batch = db.changes_since(self.sent_through, self.cfg.batch_cells_max, peer)?;
            if let Some(access) = &self.cfg.access {
                filter_readable(db, access.as_ref(), &mut batch.changes)?;
            }
            self.unit_until = self.unit_until.max(batch.needs_through);
            self.unit_cells += batch.changes.iter().map(|c| c.cells.len()).sum::<usize>();
            if batch.next < self.unit_until && self.unit_cells >= UNIT_CELLS_MAX {
                // Chains of partly overwritten transactions (e.g. every transaction touches
                // one hot record) can link the whole feed into one unit. Past the limit the
                // receiver could never take it, so cut here: liveness over atomicity, counted.
                self.unit_until = batch.next;
                self.stats.units_cut += 1;
            }
            let complete = batch.next >= self.unit_until;
            if complete {
                self.unit_cells = 0;
            }
            let sent = self.send_changes(&batch.changes, batch.next, !complete, now_ms);
            self.sent_through = batch.next;
            if complete && (sent || self.unit_open) {
                // Closing a unit whose earlier frames went out: the last frame was sent
                // above (possibly empty), and the ACK for it is awaited.
                self.unacked.push_back(batch.next);
            }
            self.unit_open = !complete && (sent || self.unit_open);
        }
        if self.sent_through >= head
            && self.sent_through >= self.unit_until
            && self.caught_up_sent != Some(self.sent_through)
        {
            self.caught_up_sent = Some(self.sent_through);
            self.send(
                &Message::CaughtUp {
                    seq: self.sent_through,
                },
                now_ms,
            );
        }
        Ok(())
    }

    /// Encode changes as one or more CHANGES frames, splitting at record boundaries.
    /// Returns whether anything was sent.
    fn send_changes(&mut self, changes: &[Change], end: Seq, partial: bool, now_ms: u64) -> bool {
        if changes.is_empty() {
            if !partial && self.unit_open {
                // The unit's earlier frames went out; close it even though this last part
                // held nothing for this peer (everything came from it).
                let payload = self.tx_dict.encode_changes(&[], end);
                self.push_frame(kind::CHANGES, false, &payload, now_ms);
                return true;
            }
            // Nothing for this peer: CAUGHT_UP will carry the position.
            return false;
        }
        let mut start = 0;
        let mut bytes = 0usize;
        let mut cells = 0usize;
        for i in 0..changes.len() {
            bytes += changes[i]
                .cells
                .iter()
                .map(approx_cell_bytes)
                .sum::<usize>()
                + 20;
            cells += changes[i].cells.len();
            let last = i + 1 == changes.len();
            if last || bytes >= FRAME_TARGET_BYTES || cells >= self.cfg.batch_cells_max {
                let chunk = &changes[start..=i];
                let frame_end = if last {
                    end
                } else {
                    chunk.last().map(|c| c.seq).unwrap_or(end)
                };
                let payload = self.tx_dict.encode_changes(chunk, frame_end);
                self.stats.cells_sent += chunk.iter().map(|c| c.cells.len() as u64).sum::<u64>();
                self.push_frame(kind::CHANGES, partial || !last, &payload, now_ms);
                start = i + 1;
                bytes = 0;
                cells = 0;
            }
        }
        true
    }

    /// Handle timers: ping when quiet, give up when the peer is silent too long, persist the
    /// acknowledged cursor.
    pub fn handle_timeout(&mut self, now_ms: u64, db: &Database) {
        if self.state == State::Closed {
            return;
        }
        if now_ms.saturating_sub(self.last_recv_ms) >= self.cfg.idle_timeout_ms {
            let _ = self.fail(
                ErrorCode::Timeout,
                format!(
                    "nothing received for {} ms: the peer or the network is down",
                    self.cfg.idle_timeout_ms
                ),
                now_ms,
            );
            return;
        }
        if now_ms.saturating_sub(self.last_send_ms) >= self.cfg.ping_interval_ms {
            self.ping_nonce += 1;
            self.send(
                &Message::Ping {
                    nonce: self.ping_nonce,
                },
                now_ms,
            );
        }
        self.persist_acked(now_ms, db, false);
        let _ = self.persist_received(now_ms, db, false);
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.state == State::Closed {
            return None;
        }
        Some(
            (self.last_send_ms + self.cfg.ping_interval_ms)
                .min(self.last_recv_ms + self.cfg.idle_timeout_ms),
        )
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
        self.persist_acked(now_ms, db, true);
        let _ = self.persist_received(now_ms, db, true);
        let _ = self.fail(code, message.to_owned(), now_ms);
    }

    /// The transport went away: mark closed without sending anything.
    pub fn transport_closed(&mut self, now_ms: u64, db: &Database) {
        if self.state == State::Closed {
            return;
        }
        self.persist_acked(now_ms, db, true);
        let _ = self.persist_received(now_ms, db, true);
        self.state = State::Closed;
        self.events.push_back(SessionEvent::Closed(SyncError {
            code: ErrorCode::Timeout,
            message: "connection closed".into(),
            remote: false,
        }));
    }

    fn persist_acked(&mut self, now_ms: u64, db: &Database, force: bool) {
        let Some(peer) = self.peer.as_ref().map(|p| p.node) else {
            return;
        };
        if self.acked > self.acked_persisted
            && (force || now_ms.saturating_sub(self.acked_persisted_ms) >= ACK_PERSIST_INTERVAL_MS)
            && db
                .set_peer_cursor(peer, PeerDirection::Acked, self.acked)
                .is_ok()
        {
            self.acked_persisted = self.acked;
            self.acked_persisted_ms = now_ms;
        }
    }

    /// Store `received_through` when it moved without a unit (CAUGHT_UP only), at most every
    /// `ACK_PERSIST_INTERVAL_MS` unless `force`d.
    fn persist_received(&mut self, now_ms: u64, db: &Database, force: bool) -> Result<(), Error> {
        let Some(peer) = self.peer.as_ref().map(|p| p.node) else {
            return Ok(());
        };
        if self.received_through > self.received_persisted
            && (force
                || now_ms.saturating_sub(self.received_persisted_ms) >= ACK_PERSIST_INTERVAL_MS)
        {
            db.set_peer_cursor(peer, PeerDirection::Received, self.received_through)?;
            self.received_persisted = self.received_through;
            self.received_persisted_ms = now_ms;
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
        if self.state != State::Closed {
            // Frames already queued keep their place: each has used up a frame index, so the
            // ERROR must come after them for the peer's checksums to match.
            self.send(
                &Message::Error {
                    code,
                    message: message.clone(),
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

    fn internal(&mut self, e: Error, now_ms: u64) -> SyncError {
        self.fail(ErrorCode::Internal, e.to_string(), now_ms)
    }
}

/// Keep only the changes the peer may read: records readable as they are now, and deletes
/// in collections it may read.
fn filter_readable(
    db: &Database,
    access: &dyn super::AccessControl,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    let mut keep = Vec::with_capacity(changes.len());
    for ch in changes.drain(..) {
        if !access.can_read_collection(&ch.collection) {
            continue;
        }
        let readable = match db.get(&ch.collection, ch.id)? {
            Some(r) => access.can_read(&ch.collection, ch.id, &r.fields),
            None => true,
        };
        if readable {
            keep.push(ch);
        }
    }
    *changes = keep;
    Ok(())
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
        Message::Error { .. } => "ERROR",
    }
}

fn approx_cell_bytes(c: &crate::crdt::Cell) -> usize {
    let key = c.key.field().map_or(0, str::len) + 4;
    let value = match &c.value {
        crate::crdt::CellValue::Value(v) => crate::codec::value::to_bytes(v).len(),
        _ => 2,
    };
    key + value + 12
}
