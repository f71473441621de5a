//! Hostile bytes at a live sync session — random frames, mutated valid streams, and every
//! crash input the `fuzz/` targets found — never panic, end in a clear error at worst, and
//! leave a database that reopens and passes its integrity check.
//!
//! The cargo-fuzz targets (`fuzz/fuzz_targets/`) explore the decoders far more deeply but need
//! a nightly toolchain; this file keeps the same guarantees in the ordinary test run.

use blazedb::crdt::{Cell, CellKey, CellValue};
use blazedb::sync::frame::FrameDecoder;
use blazedb::sync::message::{decode_simple, encode_simple, kind, Dict, Hello, Message};
use blazedb::sync::{Session, SessionConfig, SyncMode};
use blazedb::{Change, Database, Hlc, NodeId, OpenOptions, RecordId, Seq, Value, Version};
use proptest::prelude::*;

const PEER: NodeId = NodeId([0xa5; 16]);
const OTHER: NodeId = NodeId([0x3c; 16]);
/// 2023-11-14: in the past, so no timestamp trips the clock-skew check by accident.
const WALL_MS: u64 = 1_700_000_000_000;

fn hello(last_seq: u64) -> Message {
    Message::Hello(Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: PEER,
        last_seq: Seq(last_seq),
        mode: SyncMode::Both,
        server: false,
        caps: 1,
        token: String::new(),
    })
}

/// One frame body as the peer would send it, before framing.
#[derive(Clone, Debug)]
struct Body {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

fn frame_bytes(index: u64, b: &Body) -> Vec<u8> {
    let mut body = vec![b.kind, b.flags];
    body.extend_from_slice(&b.payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(&body);
    let mut out = Vec::new();
    blazedb::codec::varint::write_u64(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out
}

/// Frame bodies in order, with correct lengths and checksums.
fn stream(bodies: &[Body]) -> Vec<u8> {
    bodies
        .iter()
        .enumerate()
        .flat_map(|(i, b)| frame_bytes(i as u64, b))
        .collect()
}

fn simple(m: &Message) -> Body {
    let (kind, payload) = encode_simple(m);
    Body {
        kind,
        flags: 0,
        payload,
    }
}

/// What happened when the bytes were fed.
#[derive(Debug)]
struct Outcome {
    error: Option<blazedb::sync::SyncError>,
    /// Frames the session sent back, decoded in order.
    replies: Vec<Message>,
}

/// Feed `bytes` in `chunks`-sized pieces to a fresh session on a fresh database, then check the
/// database: it must pass its integrity check, reopen, and still take writes.
fn feed(bytes: &[u8], chunk: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim.db");
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let mut s = Session::new(&db, SessionConfig::default(), 0).unwrap();
    let mut replies_raw = Vec::new();
    // As a driver does: our HELLO goes out before anything is read.
    while let Some(f) = s.poll_transmit(0, &db) {
        replies_raw.extend_from_slice(&f);
    }
    let mut error = None;
    for piece in bytes.chunks(chunk.max(1)) {
        let r = s.handle_bytes(0, piece, &db);
        while let Some(f) = s.poll_transmit(0, &db) {
            replies_raw.extend_from_slice(&f);
        }
        if let Err(e) = r {
            assert!(s.is_closed(), "an error closes the session");
            error = Some(e);
            break;
        }
    }
    // The session keeps working as a state machine after all this.
    s.handle_timeout(60_000, &db);
    while let Some(f) = s.poll_transmit(60_000, &db) {
        replies_raw.extend_from_slice(&f);
    }
    drop(s);

    let report = db.integrity_check().unwrap();
    assert!(report.ok, "integrity check failed: {:?}", report.problems);
    drop(db);
    let db = Database::open(&path, OpenOptions::default()).unwrap();
    let report = db.integrity_check().unwrap();
    assert!(
        report.ok,
        "integrity check after reopening failed: {:?}",
        report.problems
    );
    db.insert("after", [("ok", Value::Bool(true))]).unwrap();

    // Whatever the session sent back decodes (CHANGES too, if a mutation made a SUBSCRIBE).
    let mut dec = FrameDecoder::default();
    dec.push(&replies_raw);
    let mut dict = Dict::default();
    let mut replies = Vec::new();
    while let Ok(Some(f)) = dec.next_frame() {
        replies.push(if f.kind == kind::CHANGES {
            let (changes, end) = dict
                .decode_changes(&f.payload, usize::MAX)
                .expect("own CHANGES decode");
            Message::Changes {
                changes,
                end,
                partial: f.partial,
            }
        } else {
            decode_simple(f.kind, &f.payload).expect("the session's own frames decode")
        });
    }
    Outcome { error, replies }
}

// ---- generators of valid traffic ----

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        "[a-z ]{0,12}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(Value::List)
    })
}

fn arb_cell() -> impl Strategy<Value = Cell> {
    let field = prop_oneof![Just("title"), Just("status"), Just("votes"), Just("tags")]
        .prop_map(str::to_owned);
    let node = prop_oneof![Just(PEER), Just(OTHER)];
    let key_value = prop_oneof![
        any::<bool>().prop_map(|p| (
            CellKey::Record,
            if p {
                CellValue::Present
            } else {
                CellValue::Absent
            }
        )),
        (field.clone(), arb_value())
            .prop_map(|(f, v)| (CellKey::Field(f.into()), CellValue::Value(v))),
        field
            .clone()
            .prop_map(|f| (CellKey::Field(f.into()), CellValue::Absent)),
        (field.clone(), node.clone(), any::<i32>())
            .prop_map(|(f, n, c)| (CellKey::Counter(f.into(), n), CellValue::Count(c.into()))),
        (field, "[a-z]{1,4}", any::<bool>()).prop_map(|(f, e, p)| {
            let bytes = blazedb::codec::value::to_bytes(&Value::Text(e));
            (
                CellKey::Element(f.into(), bytes),
                if p {
                    CellValue::Present
                } else {
                    CellValue::Absent
                },
            )
        }),
    ];
    let version = (0u64..5_000, 0u16..3, node.clone()).prop_map(|(ms, l, n)| Version {
        hlc: Hlc::new(WALL_MS - 10_000 + ms, l),
        node: n,
    });
    let older = (0u64..5_000, node).prop_map(|(ms, n)| Version {
        hlc: Hlc::new(WALL_MS - 20_000 + ms, 0),
        node: n,
    });
    let prev = proptest::option::of(older.clone());
    // A reset's list: prev and other nodes' versions (prev's node's entry is prev).
    let seen = proptest::option::of(proptest::collection::vec(older, 0..3));
    (key_value, version, prev, seen).prop_map(|((key, value), version, prev, seen)| {
        let seen = match (prev, seen) {
            (Some(p), Some(others)) => blazedb::crdt::Seen::from_versions(
                std::iter::once(p).chain(others.into_iter().filter(|o| o.node != p.node)),
            ),
            _ => blazedb::crdt::Seen::default(),
        };
        Cell {
            key,
            value,
            version,
            prev,
            seen,
            seq: Seq(0),
        }
    })
}

fn arb_change() -> impl Strategy<Value = Change> {
    (
        prop_oneof![Just("bugs"), Just("notes")],
        0u8..4,
        proptest::collection::vec(arb_cell(), 1..5),
    )
        .prop_map(|(coll, id, mut cells)| {
            cells.sort_by(|a, b| a.key.cmp(&b.key));
            cells.dedup_by(|a, b| a.key == b.key);
            Change {
                seq: Seq(0),
                collection: coll.to_owned(),
                id: RecordId([id; 16]),
                cells,
            }
        })
}

/// A valid session from the peer: HELLO, then units of CHANGES (some split into PARTIAL
/// frames), CAUGHT_UP, PING — all through a real sender dictionary.
fn arb_session() -> impl Strategy<Value = Vec<Body>> {
    proptest::collection::vec(
        (proptest::collection::vec(arb_change(), 1..4), any::<bool>()),
        1..5,
    )
    .prop_map(|units| {
        let mut dict = Dict::default();
        let mut seq = 0u64;
        let mut frames = Vec::new();
        for (changes, split) in units {
            let mut staged = Vec::new();
            for mut ch in changes {
                seq += 1;
                ch.seq = Seq(seq);
                staged.push(ch);
            }
            let parts: Vec<&[Change]> = if split && staged.len() > 1 {
                staged.chunks(1).collect()
            } else {
                vec![&staged[..]]
            };
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let end = if last {
                    Seq(seq)
                } else {
                    part.last().unwrap().seq
                };
                let payload = dict.encode_changes(part, end);
                frames.push(Body {
                    kind: kind::CHANGES,
                    flags: if last { 0 } else { 0x04 },
                    payload,
                });
            }
        }
        let mut bodies = vec![simple(&hello(seq))];
        bodies.extend(frames);
        bodies.push(simple(&Message::CaughtUp { seq: Seq(seq) }));
        bodies.push(simple(&Message::Ping { nonce: 7 }));
        bodies
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit of a frame's payload before framing (checksums stay valid, so the message
    /// decoders and the apply path see it).
    PayloadBit { frame: usize, at: usize, bit: u8 },
    /// Set a frame's flags byte before framing.
    Flags { frame: usize, flags: u8 },
    /// Cut a frame's payload short before framing.
    PayloadCut { frame: usize, len: usize },
    /// Replace a frame's type before framing.
    Kind { frame: usize, kind: u8 },
    /// Flip one bit of the framed stream (lengths and checksums included).
    StreamBit { at: usize, bit: u8 },
    /// Send one frame twice.
    Duplicate { frame: usize },
    /// Cut the stream.
    Truncate { len: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), 0u8..8)
            .prop_map(|(frame, at, bit)| Mutation::PayloadBit { frame, at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(frame, flags)| Mutation::Flags { frame, flags }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(frame, len)| Mutation::PayloadCut { frame, len }),
        (any::<usize>(), 0u8..12).prop_map(|(frame, kind)| Mutation::Kind { frame, kind }),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::StreamBit { at, bit }),
        any::<usize>().prop_map(|frame| Mutation::Duplicate { frame }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
    ]
}

fn mutate(mut bodies: Vec<Body>, mutations: &[Mutation]) -> Vec<u8> {
    let n = bodies.len();
    let mut stream_ops = Vec::new();
    for m in mutations {
        match *m {
            Mutation::PayloadBit { frame, at, bit } => {
                let p = &mut bodies[frame % n].payload;
                if !p.is_empty() {
                    let i = at % p.len();
                    p[i] ^= 1 << bit;
                }
            }
            Mutation::Flags { frame, flags } => bodies[frame % n].flags = flags,
            Mutation::PayloadCut { frame, len } => {
                let p = &mut bodies[frame % n].payload;
                p.truncate(len % (p.len() + 1));
            }
            Mutation::Kind { frame, kind } => bodies[frame % n].kind = kind,
            Mutation::Duplicate { frame } => {
                let b = bodies[frame % n].clone();
                bodies.insert(frame % n, b);
                // Framed as the same index twice: what a replaying relay would produce.
                stream_ops.push(m.clone());
            }
            _ => stream_ops.push(m.clone()),
        }
    }
    let mut bytes = stream(&bodies);
    for m in stream_ops {
        match m {
            Mutation::StreamBit { at, bit } if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
            Mutation::Duplicate { frame } => {
                // Re-frame so the duplicate carries its original index (a true replay).
                let i = frame % n;
                let mut replay = stream(&bodies[..=i]);
                let dup = frame_bytes(i as u64, &bodies[i]);
                replay.extend_from_slice(&dup);
                replay.extend(
                    bodies[i + 1..]
                        .iter()
                        .enumerate()
                        .flat_map(|(k, b)| frame_bytes((i + 1 + k) as u64, b)),
                );
                bytes = replay;
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Unmutated traffic is accepted: the generators above really produce valid sessions,
    /// so the mutated cases below start from something the session accepts.
    #[test]
    fn valid_sessions_are_accepted(bodies in arb_session(), chunk in 1usize..64) {
        let out = feed(&stream(&bodies), chunk);
        prop_assert!(out.error.is_none(), "valid traffic refused: {:?}", out.error);
        let acked = out.replies.iter().any(|m| matches!(m, Message::Ack { .. }));
        let ponged = out.replies.iter().any(|m| matches!(m, Message::Pong { nonce: 7 }));
        prop_assert!(acked && ponged, "replies: {:?}", out.replies);
    }

    #[test]
    fn mutated_sessions_never_panic_or_corrupt(
        bodies in arb_session(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
        chunk in 1usize..300,
    ) {
        let _ = feed(&mutate(bodies, &mutations), chunk);
    }

    /// After a valid HELLO, random frame bodies with correct checksums reach every message
    /// decoder.
    #[test]
    fn random_frames_after_hello_never_panic(
        bodies in proptest::collection::vec(
            (0u8..16, prop_oneof![Just(0u8), Just(1), Just(4), any::<u8>()], proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(kind, flags, payload)| Body { kind, flags, payload }),
            0..6,
        ),
        chunk in 1usize..100,
    ) {
        let mut all = vec![simple(&hello(10))];
        all.extend(bodies);
        let _ = feed(&stream(&all), chunk);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let _ = feed(&bytes, chunk);
    }
}

/// A refused unit is refused whole: a valid unit whose last frame is damaged stores nothing.
#[test]
fn damaged_last_frame_of_a_unit_stores_nothing_of_it() {
    let mut dict = Dict::default();
    let cell = |key: CellKey| Cell {
        key,
        value: CellValue::Value(Value::Int(1)),
        version: Version {
            hlc: Hlc::new(WALL_MS, 0),
            node: PEER,
        },
        prev: None,
        seen: blazedb::crdt::Seen::default(),
        seq: Seq(0),
    };
    let ch = |seq: u64, id: u8, key: CellKey| Change {
        seq: Seq(seq),
        collection: "c".into(),
        id: RecordId([id; 16]),
        cells: vec![cell(key)],
    };
    let first = dict.encode_changes(&[ch(1, 1, CellKey::Field("x".into()))], Seq(1));
    // Decodes fine, but no BlazeDB writes it: a Record cell holding a plain value.
    let second = dict.encode_changes(&[ch(2, 2, CellKey::Record)], Seq(2));
    let bodies = vec![
        simple(&hello(2)),
        Body {
            kind: kind::CHANGES,
            flags: 0x04,
            payload: first,
        },
        Body {
            kind: kind::CHANGES,
            flags: 0,
            payload: second,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("v.db"), OpenOptions::default()).unwrap();
    let mut s = Session::new(&db, SessionConfig::default(), 0).unwrap();
    let err = s.handle_bytes(0, &stream(&bodies), &db).unwrap_err();
    assert_eq!(err.code, blazedb::sync::ErrorCode::Malformed, "{err}");
    assert_eq!(
        db.count("c").unwrap(),
        0,
        "nothing of the refused unit was stored"
    );
    assert!(db.integrity_check().unwrap().ok);
}

/// Regression: when the session fails while frames it produced are still queued (here a
/// PONG for a PING that arrived in the same read as a corrupt frame), the ERROR must come
/// after them, or its frame index is wrong and the peer never learns the real error code.
#[test]
fn error_after_queued_frames_is_readable_by_the_peer() {
    let mut bodies = vec![simple(&hello(0)), simple(&Message::Ping { nonce: 1 })];
    bodies.push(Body {
        kind: kind::PING,
        flags: 0,
        payload: vec![0; 8],
    });
    let mut bytes = stream(&bodies);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // the second PING fails its checksum
    let out = feed(&bytes, bytes.len());
    assert!(out.error.is_some());
    assert!(
        matches!(out.replies.last(), Some(Message::Error { .. })),
        "the peer must be able to read the ERROR frame; it read {:?}",
        out.replies
    );
}

/// A hostile snapshot — a chunk that is not zstd, a zstd bomb, a wrong chunk count, chunks out
/// of order — ends the session with an error and stores nothing of it.
#[test]
fn hostile_snapshots_store_nothing() {
    let begin = |index_first: u32| {
        simple(&Message::SnapshotBegin {
            snap_id: 9,
            position: Seq(5),
            first_index: index_first,
            subscription: 1,
            replace: false,
        })
    };
    let chunk = |index: u32, data: Vec<u8>| {
        simple(&Message::SnapshotChunk {
            index,
            last: ("c".into(), RecordId([1; 16])),
            data,
        })
    };
    let end = |chunks: u32| simple(&Message::SnapshotEnd { chunks });
    // 64 MiB of zeros compresses to a few KiB.
    let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 3).unwrap();
    let cases: Vec<(&str, Vec<Body>)> = vec![
        (
            "not zstd",
            vec![begin(0), chunk(0, vec![0xde; 100]), end(1)],
        ),
        ("bomb", vec![begin(0), chunk(0, bomb), end(1)]),
        ("count", vec![begin(0), end(3)]),
        ("order", vec![begin(0), chunk(1, vec![1, 2, 3])]),
        ("resume unknown", vec![begin(4)]),
    ];
    for (name, mut frames) in cases {
        frames.insert(0, simple(&hello(5)));
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("v.db"), OpenOptions::default()).unwrap();
        let mut s = Session::new(&db, SessionConfig::default(), 0).unwrap();
        let err = s.handle_bytes(0, &stream(&frames), &db).unwrap_err();
        assert!(
            matches!(
                err.code,
                blazedb::sync::ErrorCode::Malformed | blazedb::sync::ErrorCode::Unexpected
            ),
            "{name}: {err}"
        );
        assert!(s.is_closed(), "{name}");
        assert_eq!(db.count("c").unwrap(), 0, "{name}");
        assert!(db.integrity_check().unwrap().ok, "{name}");
        // Nothing left staged that a resume would trip over again.
        assert_eq!(db.snapshot_progress(PEER).unwrap(), None, "{name}");
    }
}
