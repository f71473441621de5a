//! Protocol messages and their payload encodings (docs/PROTOCOL.md has the byte layouts and
//! test vectors).

use crate::codec::varint::{read_i64, write_i64, write_u64, zigzag};
use crate::codec::{value, DecodeError, Reader};
use crate::crdt::{Cell, CellKey, CellValue, FieldName, Seen};
use crate::hash::FastMap;
use crate::limits::{
    COLLECTION_NAME_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX, EVICT_RECORDS_MAX, FIELD_NAME_BYTES_MAX,
    SEEN_VERSIONS_MAX, SESSION_DICT_ENTRIES_MAX, TOKEN_BYTES_MAX, TRANSACTION_CELLS_MAX,
    VALUE_BYTES_MAX,
};
use crate::store::Change;
use crate::sync::policy::SyncPolicy;
use crate::types::{Hlc, Seq, Version};
use crate::{NodeId, RecordId};

/// Message type bytes.
pub mod kind {
    /// HELLO: first message in each direction.
    pub const HELLO: u8 = 0x01;
    /// SUBSCRIBE: "send me your changes after this seq".
    pub const SUBSCRIBE: u8 = 0x02;
    /// CHANGES: a batch of cells.
    pub const CHANGES: u8 = 0x03;
    /// ACK: "I applied your feed up to this seq".
    pub const ACK: u8 = 0x04;
    /// CAUGHT_UP: "you have everything of my feed up to this seq".
    pub const CAUGHT_UP: u8 = 0x05;
    /// PING.
    pub const PING: u8 = 0x06;
    /// PONG.
    pub const PONG: u8 = 0x07;
    /// ERROR: the sender closes after it.
    pub const ERROR: u8 = 0x08;
    /// REJECT: changes the receiver refused (access rules); the session goes on.
    pub const REJECT: u8 = 0x09;
    /// The receiver must drop its copy of these records (selective sync: they left its view).
    pub const EVICT: u8 = 0x0A;
    /// A snapshot of the sender's data (in the receiver's view) follows.
    pub const SNAPSHOT_BEGIN: u8 = 0x0B;
    /// One zstd-compressed, checksummed chunk of a snapshot.
    pub const SNAPSHOT_CHUNK: u8 = 0x0C;
    /// The snapshot is complete.
    pub const SNAPSHOT_END: u8 = 0x0D;
}

/// What a side of a session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Send and receive.
    Both,
    /// Only send (the peer is a read-only replica of us).
    Push,
    /// Only receive (we are a read-only replica of the peer).
    Pull,
}

impl SyncMode {
    /// Whether this side sends its changes.
    pub fn sends(self) -> bool {
        self != SyncMode::Pull
    }
    /// Whether this side applies the peer's changes.
    pub fn receives(self) -> bool {
        self != SyncMode::Push
    }
    fn byte(self) -> u8 {
        match self {
            SyncMode::Both => 0,
            SyncMode::Push => 1,
            SyncMode::Pull => 2,
        }
    }
    fn from_byte(b: u8) -> Result<SyncMode, DecodeError> {
        Ok(match b {
            0 => SyncMode::Both,
            1 => SyncMode::Push,
            2 => SyncMode::Pull,
            _ => return Err(DecodeError::Malformed(format!("unknown sync mode {b}"))),
        })
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "both" => Ok(SyncMode::Both),
            "push" => Ok(SyncMode::Push),
            "pull" => Ok(SyncMode::Pull),
            _ => Err(format!(
                "unknown sync mode {:?}: use both, push or pull",
                crate::error::excerpt(s)
            )),
        }
    }
}

/// The ACK's optional flags byte: bit 0, CAUGHT_UP (see [`Message::Ack`]).
const ACK_FLAG_CAUGHT_UP: u8 = 1;

/// Capability bits in HELLO.
pub mod caps {
    /// Accepts LZ4-compressed frames.
    pub const LZ4: u64 = 1;
    /// Accepts zstd-compressed snapshot chunks.
    pub const ZSTD: u64 = 2;
    /// Joins a record whose cells a sender split across consecutive snapshot chunks into one
    /// record before applying it (PROTOCOL.md §5.9). A sender splits a record larger than
    /// `RECORD_BYTES_MAX` (only a merge makes one) across chunks only for a peer that sets
    /// it: a receiver that applies each chunk's records on their own would, in a replacing
    /// snapshot, drop the cells of the record's earlier chunks that it already held.
    pub const SPLIT_RECORDS: u64 = 4;
    /// The sender checks no credential: it accepts every peer, whatever token its HELLO (or
    /// its WebSocket upgrade) carries (PROTOCOL.md §5.1). Not a capability but a statement,
    /// said negatively so that a peer of a release before it (which never sets it, whether
    /// it checks or not) raises no false alarm: a side that presented a token and meets this
    /// bit learns that its token was never checked ([`Hello::token_unchecked`]).
    pub const TOKEN_UNCHECKED: u64 = 8;
    /// Reads the CAUGHT_UP flag of an ACK ([`Message::Ack`]'s `caught_up`; PROTOCOL.md §5.3).
    /// A side sends the flag only to a peer that sets this bit: a receiver of a release
    /// before it refuses an ACK with a byte after its `seq`.
    pub const ACK_CAUGHT_UP: u64 = 16;
}

/// What a SUBSCRIBE asks about snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotWish {
    /// Incremental changes from `from` (the sender may still decide a snapshot is needed).
    #[default]
    No,
    /// Start with a snapshot of the view (new replica, or the view changed).
    Want,
    /// Continue an interrupted snapshot.
    Resume {
        /// The snapshot's id.
        snap_id: u64,
        /// Its position (from SNAPSHOT_BEGIN).
        position: Seq,
        /// The next chunk index wanted.
        next_index: u32,
        /// The last record of the last chunk received.
        last: (String, RecordId),
    },
}

/// The first message of each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// The sender's node id.
    pub node: NodeId,
    /// The sender's feed head.
    pub last_seq: Seq,
    /// What the sender does.
    pub mode: SyncMode,
    /// True for a relay/server node.
    pub server: bool,
    /// Capability bits.
    pub caps: u64,
    /// Credentials (empty when none).
    pub token: String,
}

impl Hello {
    /// Whether the sender says it checks no credential ([`caps::TOKEN_UNCHECKED`]): a token
    /// presented to it was accepted unread. False for a sender that checks one, and for a
    /// sender of a release that does not say (it may or may not check).
    pub fn token_unchecked(&self) -> bool {
        self.caps & caps::TOKEN_UNCHECKED != 0
    }
}

/// Error codes of ERROR frames. The numbers are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peer speaks another protocol version.
    UnsupportedVersion = 1,
    /// A frame or message could not be decoded.
    Malformed = 2,
    /// A frame failed its checksum.
    Checksum = 3,
    /// A frame, message or transaction exceeded a limit.
    TooLarge = 4,
    /// Credentials missing or invalid.
    AuthFailed = 5,
    /// The peer is not allowed to do this.
    Forbidden = 6,
    /// A timestamp was too far in the future.
    ClockSkew = 7,
    /// The peer failed internally.
    Internal = 8,
    /// Nothing was received for too long.
    Timeout = 9,
    /// Too many messages too fast.
    RateLimited = 10,
    /// Both sides have the same node id (one database file on both sides, or a copy not yet
    /// given an id of its own).
    SameNode = 11,
    /// The message was not valid at this point of the session.
    Unexpected = 12,
    /// The peer is shutting down.
    ShuttingDown = 13,
    /// The receiver's sync policy (selective sync) is invalid.
    InvalidPolicy = 14,
    /// The sender could not store what the session needs: the disk that holds its database
    /// is full (or the database reached its size limit). Nothing is lost; the next session
    /// sends again what was not stored. A peer of a release before this code reads it as
    /// `Internal`.
    StorageFull = 15,
}

impl ErrorCode {
    /// The code's name in `docs/PROTOCOL.md` §9 (`AUTH_FAILED`), for messages.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            UnsupportedVersion => "UNSUPPORTED_VERSION",
            Malformed => "MALFORMED",
            Checksum => "CHECKSUM",
            TooLarge => "TOO_LARGE",
            AuthFailed => "AUTH_FAILED",
            Forbidden => "FORBIDDEN",
            ClockSkew => "CLOCK_SKEW",
            Internal => "INTERNAL",
            Timeout => "TIMEOUT",
            RateLimited => "RATE_LIMITED",
            SameNode => "SAME_NODE",
            Unexpected => "UNEXPECTED",
            ShuttingDown => "SHUTTING_DOWN",
            InvalidPolicy => "INVALID_POLICY",
            StorageFull => "STORAGE_FULL",
        }
    }

    /// From the wire number (unknown numbers read as `Internal`).
    pub fn from_u16(n: u16) -> ErrorCode {
        use ErrorCode::*;
        match n {
            1 => UnsupportedVersion,
            2 => Malformed,
            3 => Checksum,
            4 => TooLarge,
            5 => AuthFailed,
            6 => Forbidden,
            7 => ClockSkew,
            9 => Timeout,
            10 => RateLimited,
            11 => SameNode,
            12 => Unexpected,
            13 => ShuttingDown,
            14 => InvalidPolicy,
            15 => StorageFull,
            _ => Internal,
        }
    }
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// HELLO.
    Hello(Hello),
    /// SUBSCRIBE (again on a live session: the receiver changed its policy).
    Subscribe {
        /// Send changes after this seq of your feed.
        from: Seq,
        /// What to send (selective sync).
        policy: SyncPolicy,
        /// Whether the receiver asks for a snapshot first.
        snapshot: SnapshotWish,
        /// How far the subscriber has recorded the peer's acknowledgements of the
        /// subscriber's own feed (0 if never). Below what the peer received from it, the
        /// subscriber's file is older than the one that sent those changes (restored from a
        /// backup): the peer then sends it back its own cells too (PROTOCOL.md §8.2).
        acked: Seq,
    },
    /// EVICT: drop the local copy of these records (no tombstone; they left the view).
    Evict {
        /// (collection, record) pairs.
        records: Vec<(String, RecordId)>,
    },
    /// SNAPSHOT_BEGIN.
    SnapshotBegin {
        /// Names this snapshot (resume asks for it).
        snap_id: u64,
        /// The sender's feed position the snapshot covers; the live feed continues after it.
        position: Seq,
        /// Index of the first chunk that follows (non-zero when resuming).
        first_index: u32,
        /// How many SUBSCRIBEs the sender had received in this session when it began: a
        /// receiver that re-subscribed (new policy) ignores everything until the snapshot
        /// answering its latest SUBSCRIBE begins.
        subscription: u32,
        /// The snapshot replaces the receiver's copy of the sender's data: records in scope
        /// that it does not contain are evicted (a view change, or a cursor below the GC
        /// horizon). False for a new peer: the snapshot is merged, nothing is dropped.
        replace: bool,
    },
    /// SNAPSHOT_CHUNK.
    SnapshotChunk {
        /// Chunk number, from 0.
        index: u32,
        /// The last record in the chunk (where a resumed snapshot continues).
        last: (String, RecordId),
        /// The chunk (see `sync::snapshot`: zstd with a checksum).
        data: Vec<u8>,
    },
    /// SNAPSHOT_END.
    SnapshotEnd {
        /// How many chunks the snapshot had.
        chunks: u32,
    },
    /// CHANGES.
    Changes {
        /// The changes (grouped by sender seq).
        changes: Vec<Change>,
        /// The sender's feed position once this frame's unit is complete.
        end: Seq,
        /// More frames of this unit follow.
        partial: bool,
    },
    /// ACK.
    Ack {
        /// Applied up to here.
        seq: Seq,
        /// When this ACK went out, the sender's own feed had gone to the receiver whole, in
        /// complete units before the ACK (apart from the receiver's own changes, which are
        /// never sent back): once it has applied those units, the receiver knows every write
        /// the sender held when it acknowledged `seq` (its GC counts the ACK then: see
        /// `store/gc.rs`, "Counted once stable"). Sent only to a peer that set
        /// [`caps::ACK_CAUGHT_UP`]; the byte is absent when false.
        caught_up: bool,
    },
    /// CAUGHT_UP.
    CaughtUp {
        /// Everything up to here was sent.
        seq: Seq,
    },
    /// PING.
    Ping {
        /// Echoed in the PONG.
        nonce: u64,
    },
    /// PONG.
    Pong {
        /// From the PING.
        nonce: u64,
    },
    /// REJECT: these records' changes were refused and not applied.
    Reject {
        /// What was refused and why.
        rejections: Vec<crate::sync::Rejection>,
    },
    /// ERROR.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encode a non-CHANGES message's payload (CHANGES needs the session dictionary: see
/// [`Dict::encode_changes`]).
pub fn encode_simple(m: &Message) -> (u8, Vec<u8>) {
    let mut p = Vec::new();
    let k = match m {
        Message::Hello(h) => {
            p.extend_from_slice(&h.version.to_le_bytes());
            p.extend_from_slice(&h.node.0);
            write_u64(&mut p, h.last_seq.0);
            p.push(h.mode.byte());
            p.push(u8::from(h.server));
            write_u64(&mut p, h.caps);
            write_str(&mut p, &h.token);
            kind::HELLO
        }
        Message::Subscribe {
            from,
            policy,
            snapshot,
            acked,
        } => {
            write_u64(&mut p, from.0);
            policy.encode(&mut p);
            match snapshot {
                SnapshotWish::No => p.push(0),
                SnapshotWish::Want => p.push(1),
                SnapshotWish::Resume {
                    snap_id,
                    position,
                    next_index,
                    last,
                } => {
                    p.push(2);
                    p.extend_from_slice(&snap_id.to_le_bytes());
                    write_u64(&mut p, position.0);
                    write_u64(&mut p, u64::from(*next_index));
                    write_str(&mut p, &last.0);
                    p.extend_from_slice(&last.1 .0);
                }
            }
            write_u64(&mut p, acked.0);
            kind::SUBSCRIBE
        }
        Message::Evict { records } => {
            write_u64(&mut p, records.len() as u64);
            for (c, id) in records {
                write_str(&mut p, c);
                p.extend_from_slice(&id.0);
            }
            kind::EVICT
        }
        Message::SnapshotBegin {
            snap_id,
            position,
            first_index,
            subscription,
            replace,
        } => {
            p.extend_from_slice(&snap_id.to_le_bytes());
            write_u64(&mut p, position.0);
            write_u64(&mut p, u64::from(*first_index));
            write_u64(&mut p, u64::from(*subscription));
            p.push(u8::from(*replace));
            kind::SNAPSHOT_BEGIN
        }
        Message::SnapshotChunk { index, last, data } => {
            write_u64(&mut p, u64::from(*index));
            write_str(&mut p, &last.0);
            p.extend_from_slice(&last.1 .0);
            p.extend_from_slice(data);
            kind::SNAPSHOT_CHUNK
        }
        Message::SnapshotEnd { chunks } => {
            write_u64(&mut p, u64::from(*chunks));
            kind::SNAPSHOT_END
        }
        Message::Ack { seq, caught_up } => {
            write_u64(&mut p, seq.0);
            if *caught_up {
                p.push(ACK_FLAG_CAUGHT_UP);
            }
            kind::ACK
        }
        Message::CaughtUp { seq } => {
            write_u64(&mut p, seq.0);
            kind::CAUGHT_UP
        }
        Message::Ping { nonce } => {
            p.extend_from_slice(&nonce.to_le_bytes());
            kind::PING
        }
        Message::Pong { nonce } => {
            p.extend_from_slice(&nonce.to_le_bytes());
            kind::PONG
        }
        Message::Error { code, message } => {
            p.extend_from_slice(&(*code as u16).to_le_bytes());
            let mut msg = message.as_str();
            while msg.len() > ERROR_MESSAGE_BYTES_MAX {
                let mut cut = ERROR_MESSAGE_BYTES_MAX;
                while !msg.is_char_boundary(cut) {
                    cut -= 1;
                }
                msg = &msg[..cut];
            }
            write_str(&mut p, msg);
            kind::ERROR
        }
        Message::Reject { rejections } => {
            write_u64(&mut p, rejections.len() as u64);
            for r in rejections {
                write_str(&mut p, &r.collection);
                p.extend_from_slice(&r.id.0);
                let mut reason = r.reason.as_str();
                while reason.len() > ERROR_MESSAGE_BYTES_MAX {
                    let mut cut = ERROR_MESSAGE_BYTES_MAX;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason = &reason[..cut];
                }
                write_str(&mut p, reason);
            }
            kind::REJECT
        }
        Message::Changes { .. } => panic!("CHANGES is encoded with a session dictionary"),
    };
    (k, p)
}

/// Decode a non-CHANGES message.
pub fn decode_simple(kind: u8, payload: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(payload);
    let m = match kind {
        kind::HELLO => Message::Hello(Hello {
            version: u16::from_le_bytes(r.array()?),
            node: NodeId(r.array()?),
            last_seq: Seq(r.varint()?),
            mode: SyncMode::from_byte(r.u8()?)?,
            server: match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(DecodeError::Malformed(format!("bad server flag {b}"))),
            },
            caps: r.varint()?,
            token: r.str("token", TOKEN_BYTES_MAX)?.to_owned(),
        }),
        kind::SUBSCRIBE => Message::Subscribe {
            from: Seq(r.varint()?),
            policy: SyncPolicy::decode(&mut r)?,
            snapshot: match r.u8()? {
                0 => SnapshotWish::No,
                1 => SnapshotWish::Want,
                2 => SnapshotWish::Resume {
                    snap_id: u64::from_le_bytes(r.array()?),
                    position: Seq(r.varint()?),
                    next_index: u32_of(r.varint()?)?,
                    last: (
                        r.str("collection name", COLLECTION_NAME_BYTES_MAX)?
                            .to_owned(),
                        RecordId(r.array()?),
                    ),
                },
                b => return Err(DecodeError::Malformed(format!("bad snapshot flag {b}"))),
            },
            acked: Seq(r.varint()?),
        },
        kind::EVICT => {
            let n = r.count("evicted records", EVICT_RECORDS_MAX, 17)?;
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                records.push((
                    r.str("collection name", COLLECTION_NAME_BYTES_MAX)?
                        .to_owned(),
                    RecordId(r.array()?),
                ));
            }
            Message::Evict { records }
        }
        kind::SNAPSHOT_BEGIN => Message::SnapshotBegin {
            snap_id: u64::from_le_bytes(r.array()?),
            position: Seq(r.varint()?),
            first_index: u32_of(r.varint()?)?,
            subscription: u32_of(r.varint()?)?,
            replace: match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(DecodeError::Malformed(format!("bad replace flag {b}"))),
            },
        },
        kind::SNAPSHOT_CHUNK => {
            let index = u32_of(r.varint()?)?;
            let last = (
                r.str("collection name", COLLECTION_NAME_BYTES_MAX)?
                    .to_owned(),
                RecordId(r.array()?),
            );
            let data = r.bytes(r.remaining())?.to_vec();
            Message::SnapshotChunk { index, last, data }
        }
        kind::SNAPSHOT_END => Message::SnapshotEnd {
            chunks: u32_of(r.varint()?)?,
        },
        kind::ACK => {
            let seq = Seq(r.varint()?);
            let flags = if r.remaining() > 0 { r.u8()? } else { 0 };
            if flags & !ACK_FLAG_CAUGHT_UP != 0 {
                return Err(DecodeError::Malformed(format!(
                    "ACK flags {flags:#04x}: only bit 0 (CAUGHT_UP) is defined"
                )));
            }
            Message::Ack {
                seq,
                caught_up: flags & ACK_FLAG_CAUGHT_UP != 0,
            }
        }
        kind::CAUGHT_UP => Message::CaughtUp {
            seq: Seq(r.varint()?),
        },
        kind::PING => Message::Ping {
            nonce: u64::from_le_bytes(r.array()?),
        },
        kind::PONG => Message::Pong {
            nonce: u64::from_le_bytes(r.array()?),
        },
        kind::ERROR => Message::Error {
            code: ErrorCode::from_u16(u16::from_le_bytes(r.array()?)),
            message: r.str("error message", ERROR_MESSAGE_BYTES_MAX)?.to_owned(),
        },
        kind::REJECT => {
            let n = r.count("rejections", TRANSACTION_CELLS_MAX, 18)?;
            let mut rejections = Vec::with_capacity(n);
            for _ in 0..n {
                rejections.push(crate::sync::Rejection {
                    collection: r
                        .str("collection name", COLLECTION_NAME_BYTES_MAX)?
                        .to_owned(),
                    id: RecordId(r.array()?),
                    reason: r.str("reason", ERROR_MESSAGE_BYTES_MAX)?.to_owned(),
                });
            }
            Message::Reject { rejections }
        }
        // Said as what it is: "unknown value tag" sent implementers looking at values.
        k => {
            return Err(DecodeError::Malformed(format!(
                "unknown message type 0x{k:02x} (PROTOCOL.md §5 lists the types of protocol \
                 version {})",
                crate::limits::PROTOCOL_VERSION
            )))
        }
    };
    if !r.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes in message",
            r.remaining()
        )));
    }
    Ok(m)
}

fn u32_of(v: u64) -> Result<u32, DecodeError> {
    u32::try_from(v).map_err(|_| DecodeError::Malformed(format!("{v} does not fit 32 bits")))
}

/// The cells of one record at one feed position, borrowed: a whole [`Change`], or a run of
/// its cells where a record too large for one frame goes in pieces (consecutive frames of one
/// unit, or consecutive snapshot chunks, each naming the record again: PROTOCOL.md §6.2).
#[derive(Clone, Copy, Debug)]
pub struct RecordCells<'a> {
    /// The feed position (group).
    pub seq: Seq,
    /// The collection.
    pub collection: &'a str,
    /// The record.
    pub id: RecordId,
    /// The cells, in key order.
    pub cells: &'a [Cell],
}

impl<'a> RecordCells<'a> {
    /// The cells `range` of `change`.
    pub fn piece(change: &'a Change, range: std::ops::Range<usize>) -> RecordCells<'a> {
        RecordCells {
            seq: change.seq,
            collection: &change.collection,
            id: change.id,
            cells: &change.cells[range],
        }
    }
}

impl<'a> From<&'a Change> for RecordCells<'a> {
    fn from(change: &'a Change) -> RecordCells<'a> {
        RecordCells::piece(change, 0..change.cells.len())
    }
}

/// About what a cell takes in a CHANGES payload (or a snapshot chunk before compression):
/// what senders count to keep frames near `FRAME_TARGET_BYTES` and chunks near
/// `SNAPSHOT_PAGE_BODY_BYTES_TARGET`, and to tell a record too large to go whole. A set
/// element's value is part of its key, and counts (without it, three records of 3 MB sets
/// made one 9 MB frame that every receiver refused, for good).
pub(crate) fn approx_cell_bytes(c: &Cell) -> usize {
    let element = match &c.key {
        CellKey::Element(_, e) => e.len(),
        _ => 0,
    };
    let key = c.key.field().map_or(0, str::len) + element + 4;
    let value = match &c.value {
        CellValue::Value(v) => value::to_bytes(v).len(),
        _ => 2,
    };
    key + value + 12
}

/// One direction's dictionary of a session: node ids, collection names and field names
/// get small numbers on first use, and timestamps are sent as differences from the previous
/// one. Sender and receiver keep identical copies because frames arrive complete and in
/// order (the frame checksum guarantees it).
#[derive(Debug, Default)]
pub struct Dict {
    nodes: Vec<NodeId>,
    node_index: FastMap<NodeId, u64>,
    /// Names (collections, fields) as received, shared with the cells that name them.
    strings: Vec<FieldName>,
    string_index: FastMap<String, u64>,
    last_hlc: u64,
    last_seq: u64,
}

// Cell flag bits (see PROTOCOL.md).
const CELL_SAME_VERSION: u8 = 0x10;
const CELL_HAS_PREV: u8 = 0x20;
const CELL_SAME_PREV: u8 = 0x40;
/// A reset's `seen` list follows the prev (protocol 4; only with HAS_PREV).
const CELL_HAS_SEEN: u8 = 0x80;

/// Reference to a dictionary entry: 0 = inline and add, 1 = inline (dictionary full),
/// n ≥ 2 = entry n − 2.
impl Dict {
    fn put_node(&mut self, out: &mut Vec<u8>, n: NodeId) {
        if let Some(i) = self.node_index.get(&n) {
            write_u64(out, i + 2);
            return;
        }
        if self.nodes.len() < SESSION_DICT_ENTRIES_MAX {
            out.push(0);
            self.node_index.insert(n, self.nodes.len() as u64);
            self.nodes.push(n);
        } else {
            out.push(1);
        }
        out.extend_from_slice(&n.0);
    }

    fn get_node(&mut self, r: &mut Reader<'_>) -> Result<NodeId, DecodeError> {
        match r.varint()? {
            0 => {
                let n = NodeId(r.array()?);
                if self.nodes.len() >= SESSION_DICT_ENTRIES_MAX {
                    return Err(DecodeError::TooLarge {
                        what: "session node dictionary",
                        got: self.nodes.len() as u64 + 1,
                        max: SESSION_DICT_ENTRIES_MAX as u64,
                    });
                }
                self.nodes.push(n);
                Ok(n)
            }
            1 => Ok(NodeId(r.array()?)),
            i => usize::try_from(i - 2)
                .ok()
                .and_then(|i| self.nodes.get(i))
                .copied()
                .ok_or_else(|| DecodeError::Malformed(format!("unknown node reference {i}"))),
        }
    }

    fn put_str(&mut self, out: &mut Vec<u8>, s: &str) {
        if let Some(i) = self.string_index.get(s) {
            write_u64(out, i + 2);
            return;
        }
        if self.strings.len() < SESSION_DICT_ENTRIES_MAX {
            out.push(0);
            self.string_index
                .insert(s.to_owned(), self.strings.len() as u64);
            self.strings.push(s.into());
        } else {
            out.push(1);
        }
        write_str(out, s);
    }

    fn get_str(
        &mut self,
        r: &mut Reader<'_>,
        what: &'static str,
        max: usize,
    ) -> Result<FieldName, DecodeError> {
        match r.varint()? {
            0 => {
                let s: FieldName = r.str(what, max)?.into();
                if self.strings.len() >= SESSION_DICT_ENTRIES_MAX {
                    return Err(DecodeError::TooLarge {
                        what: "session name dictionary",
                        got: self.strings.len() as u64 + 1,
                        max: SESSION_DICT_ENTRIES_MAX as u64,
                    });
                }
                self.strings.push(s.clone());
                Ok(s)
            }
            1 => Ok(r.str(what, max)?.into()),
            i => {
                let s = usize::try_from(i - 2)
                    .ok()
                    .and_then(|i| self.strings.get(i))
                    .ok_or_else(|| DecodeError::Malformed(format!("unknown name reference {i}")))?;
                if s.len() > max {
                    return Err(DecodeError::TooLarge {
                        what,
                        got: s.len() as u64,
                        max: max as u64,
                    });
                }
                Ok(s.clone())
            }
        }
    }

    fn put_version(&mut self, out: &mut Vec<u8>, v: Version) {
        write_i64(out, v.hlc.0.wrapping_sub(self.last_hlc) as i64);
        self.last_hlc = v.hlc.0;
        self.put_node(out, v.node);
    }

    fn get_version(&mut self, r: &mut Reader<'_>) -> Result<Version, DecodeError> {
        let hlc = self.last_hlc.wrapping_add(read_i64(r)? as u64);
        self.last_hlc = hlc;
        Ok(Version {
            hlc: Hlc(hlc),
            node: self.get_node(r)?,
        })
    }

    /// Encode a CHANGES payload.
    ///
    /// ```text
    /// changes := varint n_groups | group* | varint (end − last group seq)
    /// group   := varint (seq − previous seq) | varint n_records | record*
    /// record  := ref collection | id[16] | varint n_cells | cell*
    /// cell    := u8 flags | [ref field] | [sub] | [value] | [version] | [prev]
    /// ```
    pub fn encode_changes(&mut self, changes: &[Change], end: Seq) -> Vec<u8> {
        let records: Vec<RecordCells<'_>> = changes.iter().map(RecordCells::from).collect();
        self.encode_records(&records, end)
    }

    /// [`Dict::encode_changes`] of borrowed records, which may be pieces of larger ones (see
    /// [`RecordCells`]). A frame lists a record at most once per group: the pieces of one
    /// record go in different frames.
    pub fn encode_records(&mut self, records: &[RecordCells<'_>], end: Seq) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + records.len() * 64);
        // Groups: consecutive records with the same seq.
        let mut groups: Vec<&[RecordCells<'_>]> = Vec::new();
        let mut start = 0;
        for i in 1..=records.len() {
            if i == records.len() || records[i].seq != records[start].seq {
                groups.push(&records[start..i]);
                start = i;
            }
        }
        write_u64(&mut out, groups.len() as u64);
        for g in groups {
            let seq = g[0].seq.0;
            write_u64(&mut out, seq.wrapping_sub(self.last_seq));
            self.last_seq = seq;
            write_u64(&mut out, g.len() as u64);
            for rec in g {
                self.put_str(&mut out, rec.collection);
                out.extend_from_slice(&rec.id.0);
                write_u64(&mut out, rec.cells.len() as u64);
                let mut prev_cell: Option<&Cell> = None;
                for c in rec.cells {
                    self.put_cell(&mut out, c, prev_cell);
                    prev_cell = Some(c);
                }
            }
        }
        write_u64(&mut out, end.0.wrapping_sub(self.last_seq));
        self.last_seq = end.0;
        out
    }

    fn put_cell(&mut self, out: &mut Vec<u8>, c: &Cell, before: Option<&Cell>) {
        let key_kind = match c.key {
            CellKey::Record => 0u8,
            CellKey::Field(_) => 1,
            CellKey::Counter(..) => 2,
            CellKey::Element(..) => 3,
        };
        let value_kind = match c.value {
            CellValue::Value(_) => 0u8,
            CellValue::Absent => 1,
            CellValue::Present => 2,
            CellValue::Count(_) => 3,
        };
        let same_version = before.is_some_and(|b| b.version == c.version);
        let same_prev = c.prev.is_some() && before.is_some_and(|b| b.prev == c.prev);
        let mut flags = key_kind | (value_kind << 2);
        if same_version {
            flags |= CELL_SAME_VERSION;
        }
        if c.prev.is_some() {
            flags |= CELL_HAS_PREV;
        }
        if same_prev {
            flags |= CELL_SAME_PREV;
        }
        // A list always holds prev (the newest version its writer held): without a prev it
        // would say nothing, and prev's node's entry is not sent again.
        let has_seen = c.prev.is_some() && !c.seen.is_empty();
        if has_seen {
            flags |= CELL_HAS_SEEN;
        }
        out.push(flags);
        match &c.key {
            CellKey::Record => {}
            CellKey::Field(f) => self.put_str(out, f),
            CellKey::Counter(f, n) => {
                self.put_str(out, f);
                self.put_node(out, *n);
            }
            CellKey::Element(f, e) => {
                self.put_str(out, f);
                write_u64(out, e.len() as u64);
                out.extend_from_slice(e);
            }
        }
        match &c.value {
            CellValue::Value(v) => value::encode(out, v),
            CellValue::Count(n) => write_i64(out, *n),
            CellValue::Absent | CellValue::Present => {}
        }
        if !same_version {
            self.put_version(out, c.version);
        }
        if let (Some(p), false) = (c.prev, same_prev) {
            // The version it replaced, as a distance back from this cell's own timestamp.
            write_u64(out, zigzag(c.version.hlc.0.wrapping_sub(p.hlc.0) as i64));
            self.put_node(out, p.node);
        }
        if has_seen {
            // The other writers' newest versions, each as a distance back like prev.
            write_u64(out, c.seen_beyond_prev().count() as u64);
            for v in c.seen_beyond_prev() {
                write_u64(out, zigzag(c.version.hlc.0.wrapping_sub(v.hlc.0) as i64));
                self.put_node(out, v.node);
            }
        }
    }

    /// Decode a CHANGES payload. `cells_budget` bounds how many cells it may hold.
    pub fn decode_changes(
        &mut self,
        payload: &[u8],
        cells_budget: usize,
    ) -> Result<(Vec<Change>, Seq), DecodeError> {
        let mut r = Reader::new(payload);
        let n_groups = r.count("group count", TRANSACTION_CELLS_MAX, 2)?;
        let mut changes = Vec::new();
        let mut cells_total = 0usize;
        for _ in 0..n_groups {
            let seq = self.last_seq.wrapping_add(r.varint()?);
            self.last_seq = seq;
            let n_records = r.count("records in group", TRANSACTION_CELLS_MAX, 18)?;
            for _ in 0..n_records {
                let collection = self
                    .get_str(&mut r, "collection name", COLLECTION_NAME_BYTES_MAX)?
                    .to_string();
                let id = RecordId(r.array()?);
                let n_cells = r.count("cells in record", TRANSACTION_CELLS_MAX, 1)?;
                cells_total += n_cells;
                if cells_total > cells_budget {
                    return Err(DecodeError::TooLarge {
                        what: "cells in one transaction",
                        got: cells_total as u64,
                        max: cells_budget as u64,
                    });
                }
                let mut cells: Vec<Cell> = Vec::with_capacity(n_cells);
                for _ in 0..n_cells {
                    let c = self.get_cell(&mut r, cells.last())?;
                    cells.push(c);
                }
                changes.push(Change {
                    seq: Seq(seq),
                    collection,
                    id,
                    cells,
                });
            }
        }
        let end = self.last_seq.wrapping_add(r.varint()?);
        self.last_seq = end;
        if !r.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes in CHANGES",
                r.remaining()
            )));
        }
        Ok((changes, Seq(end)))
    }

    fn get_cell(&mut self, r: &mut Reader<'_>, before: Option<&Cell>) -> Result<Cell, DecodeError> {
        let flags = r.u8()?;
        if flags & CELL_HAS_SEEN != 0 && flags & CELL_HAS_PREV == 0 {
            return Err(DecodeError::Malformed(
                "cell flag HAS_SEEN without HAS_PREV".into(),
            ));
        }
        let key = match flags & 0b11 {
            0 => CellKey::Record,
            1 => CellKey::Field(self.get_str(r, "field name", FIELD_NAME_BYTES_MAX)?),
            2 => {
                let f = self.get_str(r, "field name", FIELD_NAME_BYTES_MAX)?;
                CellKey::Counter(f, self.get_node(r)?)
            }
            _ => {
                let f = self.get_str(r, "field name", FIELD_NAME_BYTES_MAX)?;
                CellKey::Element(f, r.blob("set element", VALUE_BYTES_MAX)?.to_vec())
            }
        };
        let value = match (flags >> 2) & 0b11 {
            0 => CellValue::Value(value::decode(r)?),
            1 => CellValue::Absent,
            2 => CellValue::Present,
            _ => CellValue::Count(read_i64(r)?),
        };
        let version = if flags & CELL_SAME_VERSION != 0 {
            before.map(|b| b.version).ok_or_else(|| {
                DecodeError::Malformed("first cell of a record cannot reuse a version".into())
            })?
        } else {
            self.get_version(r)?
        };
        if flags & CELL_SAME_PREV != 0 && flags & CELL_HAS_PREV == 0 {
            return Err(DecodeError::Malformed(
                "cell flag SAME_PREV without HAS_PREV".into(),
            ));
        }
        let prev = if flags & CELL_HAS_PREV == 0 {
            None
        } else if flags & CELL_SAME_PREV != 0 {
            Some(before.and_then(|b| b.prev).ok_or_else(|| {
                DecodeError::Malformed("cell reuses a previous version that does not exist".into())
            })?)
        } else {
            let back = crate::codec::varint::unzigzag(r.varint()?);
            let hlc = version.hlc.0.wrapping_sub(back as u64);
            Some(Version {
                hlc: Hlc(hlc),
                node: self.get_node(r)?,
            })
        };
        let seen = match prev {
            Some(prev) if flags & CELL_HAS_SEEN != 0 => {
                let n = r.count("seen list length", SEEN_VERSIONS_MAX - 1, 2)?;
                let mut others: Vec<Version> = Vec::with_capacity(n);
                for _ in 0..n {
                    let back = crate::codec::varint::unzigzag(r.varint()?);
                    let v = Version {
                        hlc: Hlc(version.hlc.0.wrapping_sub(back as u64)),
                        node: self.get_node(r)?,
                    };
                    // One entry per node, prev's being prev: a list a writer makes.
                    if v.node == prev.node || others.iter().any(|o| o.node == v.node) {
                        return Err(DecodeError::Malformed(format!(
                            "seen list names node {} twice",
                            v.node
                        )));
                    }
                    others.push(v);
                }
                Seen::with_prev(prev, others)
            }
            _ => Seen::default(),
        };
        Ok(Cell {
            key,
            value,
            version,
            prev,
            seen,
            seq: Seq(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ACK's flags byte: bit 0 read as CAUGHT_UP, absent as none, any other bit refused
    /// by name, and nothing may follow it.
    #[test]
    fn an_acks_flags_byte_is_read_and_unknown_bits_are_refused() {
        let ack = |bytes: &[u8]| decode_simple(kind::ACK, bytes);
        assert_eq!(
            ack(&[0xac, 0x02]).unwrap(),
            Message::Ack {
                seq: Seq(300),
                caught_up: false
            }
        );
        assert_eq!(
            ack(&[0xac, 0x02, 0x01]).unwrap(),
            Message::Ack {
                seq: Seq(300),
                caught_up: true
            }
        );
        assert_eq!(
            ack(&[0xac, 0x02, 0x00]).unwrap(),
            Message::Ack {
                seq: Seq(300),
                caught_up: false
            }
        );
        let e = ack(&[0xac, 0x02, 0x03]).unwrap_err().to_string();
        assert!(e.contains("ACK flags 0x03"), "{e}");
        assert!(ack(&[0xac, 0x02, 0x01, 0x00]).is_err(), "trailing byte");
        // Encoded without the byte when false: an ACK to a peer of an earlier release.
        let (_, p) = encode_simple(&Message::Ack {
            seq: Seq(300),
            caught_up: false,
        });
        assert_eq!(p, [0xac, 0x02]);
    }

    /// A frame type no version of the protocol defines is named as a message type (it was
    /// "unknown value tag", which sent an implementer looking at values).
    #[test]
    fn an_unknown_message_type_is_named_as_one() {
        for kind in [0x0E_u8, 0x42, 0xFF] {
            let e = decode_simple(kind, &[]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("unknown message type 0x{kind:02x}")),
                "{e}"
            );
        }
    }
}
