//! The test vectors in docs/PROTOCOL.md decode, with the real decoders, to the messages the
//! document describes, and re-encode to exactly the same bytes: the document and the code
//! cannot drift apart.

use std::collections::BTreeMap;

use blazedb::codec::value;
use blazedb::crdt::{Cell, CellKey, CellValue};
use blazedb::sync::frame::{Frame, FrameDecoder, FrameEncoder, FrameError};
use blazedb::sync::message::{
    caps, decode_simple, encode_simple, kind, Dict, ErrorCode, Hello, Message, SyncMode,
};
use blazedb::{Change, Hlc, NodeId, RecordId, Seq, Timestamp, Value, Version};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");

const A: NodeId = NodeId([
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
]);
const B: NodeId = NodeId([
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
]);
const R1: RecordId = RecordId([
    0x01, 0x90, 0xf3, 0xa2, 0x6b, 0x00, 0x7c, 0x4e, 0x8a, 0x6f, 0x0c, 0x1d, 0x2e, 0x3f, 0x40, 0x51,
]);
const R2: RecordId = RecordId([
    0x01, 0x90, 0xf3, 0xa2, 0x6b, 0x01, 0x7d, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
]);

/// Every vector the document must contain; no other may appear.
const NAMES: &[&str] = &[
    "hello",
    "subscribe",
    "hello-listener",
    "ack",
    "ack-caught-up",
    "caught-up",
    "ping",
    "pong",
    "error",
    "evict",
    "snapshot-begin",
    "snapshot-end",
    "changes-insert",
    "changes-update",
    "changes-cell-kinds",
    "changes-delete-seen",
    "changes-lz4",
    "changes-lz4-payload",
    "value",
];

/// One ```hex block, named by the nearest `#### `name`` heading above it.
struct Vector {
    bytes: Vec<u8>,
    /// The "N bytes." line under the heading, if any.
    stated_len: Option<usize>,
}

fn parse_doc(doc: &str) -> BTreeMap<String, Vector> {
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut stated_len = None;
    let mut lines = doc.lines().enumerate();
    while let Some((no, line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("#### `") {
            name = Some(rest.split('`').next().unwrap().to_owned());
            stated_len = None;
        } else if let Some(n) = line
            .strip_suffix(" bytes.")
            .and_then(|n| n.parse::<usize>().ok())
        {
            stated_len = Some(n);
        } else if line.trim_end() == "```hex" {
            let name = name.take().unwrap_or_else(|| {
                panic!("hex block at line {} has no #### `name` heading", no + 1)
            });
            let mut bytes = Vec::new();
            loop {
                let (no, l) = lines
                    .next()
                    .unwrap_or_else(|| panic!("unterminated hex block {name}"));
                if l.trim_end() == "```" {
                    break;
                }
                let data = l.split('#').next().unwrap();
                for tok in data.split_whitespace() {
                    assert!(
                        tok.len() == 2,
                        "line {}: {tok:?} is not one hex byte",
                        no + 1
                    );
                    bytes.push(
                        u8::from_str_radix(tok, 16)
                            .unwrap_or_else(|_| panic!("line {}: bad hex {tok:?}", no + 1)),
                    );
                }
            }
            let v = Vector {
                bytes,
                stated_len: stated_len.take(),
            };
            assert!(
                out.insert(name.clone(), v).is_none(),
                "vector {name} appears twice"
            );
        }
    }
    out
}

fn vectors() -> BTreeMap<String, Vector> {
    let doc =
        std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"));
    parse_doc(&doc)
}

fn bytes_of(v: &BTreeMap<String, Vector>, name: &str) -> Vec<u8> {
    v.get(name)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md lacks vector {name}"))
        .bytes
        .clone()
}

/// Decode exactly the frames in `bytes` (fed one byte at a time, to exercise reassembly).
fn frames(bytes: &[u8], dec: &mut FrameDecoder) -> Vec<Frame> {
    let mut out = Vec::new();
    for b in bytes {
        dec.push(std::slice::from_ref(b));
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(f);
        }
    }
    assert_eq!(dec.buffered(), 0, "bytes left over after the last frame");
    out
}

fn one_frame(bytes: &[u8], dec: &mut FrameDecoder) -> Frame {
    let mut f = frames(bytes, dec);
    assert_eq!(f.len(), 1, "exactly one frame");
    f.pop().unwrap()
}

fn cell(key: CellKey, value: CellValue, version: Version, prev: Option<Version>) -> Cell {
    Cell {
        key,
        value,
        version,
        prev,
        seen: blazedb::crdt::Seen::default(),
        seq: Seq(0),
    }
}

fn field(f: &str) -> CellKey {
    CellKey::Field(f.into())
}

fn text(s: &str) -> CellValue {
    CellValue::Value(Value::from(s))
}

fn t0() -> Hlc {
    Hlc::new(1_700_000_000_000, 0)
}
fn t1() -> Hlc {
    Hlc::new(1_700_000_004_250, 1)
}
fn t2() -> Hlc {
    Hlc::new(1_700_000_009_000, 0)
}
fn t3() -> Hlc {
    Hlc(t2().0 + 1)
}

/// Exact comparison: `Debug` tells `Int(1)` from `Float(1.0)`, which `PartialEq` on values may not.
fn assert_same<T: std::fmt::Debug>(got: &T, want: &T, what: &str) {
    assert_eq!(format!("{got:#?}"), format!("{want:#?}"), "{what}");
}

#[test]
fn document_holds_exactly_the_expected_vectors_with_their_stated_sizes() {
    let v = vectors();
    let names: Vec<&str> = v.keys().map(String::as_str).collect();
    let mut want = NAMES.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    for (name, vec) in &v {
        if let Some(n) = vec.stated_len {
            assert_eq!(vec.bytes.len(), n, "vector {name} says {n} bytes");
        }
    }
    // The size the document quotes for a one-field update.
    assert_eq!(v["changes-update"].bytes.len(), 65);
    let doc = std::fs::read_to_string(DOC_PATH).unwrap();
    assert!(doc.contains("one-field update is 65 bytes on the wire"));
}

#[test]
fn hello_and_subscribe_are_frames_0_and_1_of_one_direction() {
    let v = vectors();
    let (hello, subscribe) = (bytes_of(&v, "hello"), bytes_of(&v, "subscribe"));
    let want_hello = Message::Hello(Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: A,
        last_seq: Seq(42),
        mode: SyncMode::Both,
        server: false,
        caps: 1,
        token: "s3cret".into(),
    });
    let want_sub = Message::Subscribe {
        from: Seq(17),
        policy: blazedb::sync::SyncPolicy {
            collections: Some(vec!["todos".into()]),
            filter: Some("done == false".into()),
            exclude_fields: vec!["blob".into()],
        },
        snapshot: blazedb::sync::SnapshotWish::No,
        acked: Seq(5),
    };

    let mut dec = FrameDecoder::default();
    let f = one_frame(&hello, &mut dec);
    assert_eq!((f.kind, f.partial), (kind::HELLO, false));
    assert_eq!(decode_simple(f.kind, &f.payload).unwrap(), want_hello);
    let f = one_frame(&subscribe, &mut dec);
    assert_eq!((f.kind, f.partial), (kind::SUBSCRIBE, false));
    assert_eq!(decode_simple(f.kind, &f.payload).unwrap(), want_sub);

    let mut enc = FrameEncoder::default();
    let (k, p) = encode_simple(&want_hello);
    assert_eq!(enc.encode(k, false, &p), hello);
    let (k, p) = encode_simple(&want_sub);
    assert_eq!(enc.encode(k, false, &p), subscribe);

    // The index is part of the checksum: the same SUBSCRIBE as frame 0 is refused.
    let mut fresh = FrameDecoder::default();
    fresh.push(&subscribe);
    assert!(matches!(
        fresh.next_frame(),
        Err(FrameError::Checksum { index: 0 })
    ));
}

/// A listener without a token: a server that checks no credential and presents none.
#[test]
fn hello_of_a_listener_that_checks_no_token() {
    let v = vectors();
    let bytes = bytes_of(&v, "hello-listener");
    let want = Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: B,
        last_seq: Seq(7),
        mode: SyncMode::Both,
        server: true,
        caps: caps::LZ4 | caps::SPLIT_RECORDS | caps::TOKEN_UNCHECKED,
        token: String::new(),
    };
    assert_eq!(want.caps, 13);
    assert!(want.token_unchecked());
    let f = one_frame(&bytes, &mut FrameDecoder::default());
    assert_eq!((f.kind, f.partial), (kind::HELLO, false));
    assert_eq!(
        decode_simple(f.kind, &f.payload).unwrap(),
        Message::Hello(want.clone())
    );
    let (k, p) = encode_simple(&Message::Hello(want));
    assert_eq!(FrameEncoder::default().encode(k, false, &p), bytes);
}

#[test]
fn simple_messages_as_frame_0() {
    let v = vectors();
    let nonce = 0x0102_0304_0506_0708;
    let cases = [
        (
            "ack",
            kind::ACK,
            Message::Ack {
                seq: Seq(300),
                caught_up: false,
            },
        ),
        (
            "ack-caught-up",
            kind::ACK,
            Message::Ack {
                seq: Seq(300),
                caught_up: true,
            },
        ),
        (
            "caught-up",
            kind::CAUGHT_UP,
            Message::CaughtUp { seq: Seq(300) },
        ),
        ("ping", kind::PING, Message::Ping { nonce }),
        ("pong", kind::PONG, Message::Pong { nonce }),
        (
            "error",
            kind::ERROR,
            Message::Error {
                code: ErrorCode::TooLarge,
                message: "frame of 9000000 bytes exceeds the limit of 8388608".into(),
            },
        ),
    ];
    for (name, k, want) in cases {
        let bytes = bytes_of(&v, name);
        let f = one_frame(&bytes, &mut FrameDecoder::default());
        assert_eq!((f.kind, f.partial), (k, false), "{name}");
        assert_eq!(decode_simple(f.kind, &f.payload).unwrap(), want, "{name}");
        let (ek, p) = encode_simple(&want);
        assert_eq!(ek, k);
        assert_eq!(
            FrameEncoder::default().encode(ek, false, &p),
            bytes,
            "{name} re-encoded"
        );
    }
    // The wire number of TOO_LARGE is 4.
    assert_eq!(ErrorCode::TooLarge as u16, 4);
}

fn insert_and_update() -> [(Vec<Change>, Seq); 2] {
    let va0 = Version { hlc: t0(), node: A };
    let insert = vec![Change {
        seq: Seq(5),
        collection: "bugs".into(),
        id: R1,
        cells: vec![
            cell(
                field("priority"),
                CellValue::Value(Value::Int(5)),
                va0,
                None,
            ),
            cell(field("title"), text("Crash on save"), va0, None),
        ],
    }];
    let update = vec![Change {
        seq: Seq(9),
        collection: "bugs".into(),
        id: R1,
        cells: vec![cell(
            field("title"),
            text("Crash on save as PDF"),
            Version { hlc: t1(), node: A },
            Some(va0),
        )],
    }];
    [(insert, Seq(6)), (update, Seq(9))]
}

#[test]
fn changes_insert_then_update_share_one_dictionary() {
    let v = vectors();
    let wire = [
        bytes_of(&v, "changes-insert"),
        bytes_of(&v, "changes-update"),
    ];
    let want = insert_and_update();

    let mut dec = FrameDecoder::default();
    let mut rx = Dict::default();
    for (bytes, (changes, end)) in wire.iter().zip(&want) {
        let f = one_frame(bytes, &mut dec);
        assert_eq!((f.kind, f.partial), (kind::CHANGES, false));
        let (got, got_end) = rx.decode_changes(&f.payload, 1_000_000).unwrap();
        assert_same(&got, changes, "decoded changes");
        assert_eq!(got_end, *end);
    }

    let mut enc = FrameEncoder::default();
    let mut tx = Dict::default();
    for (bytes, (changes, end)) in wire.iter().zip(&want) {
        let payload = tx.encode_changes(changes, *end);
        assert_eq!(
            &enc.encode(kind::CHANGES, false, &payload),
            bytes,
            "re-encoded"
        );
    }

    // Out of context (a fresh dictionary, frame 0) the update does not decode: it refers to
    // dictionary entries that only the first frame created.
    let body_len = wire[1][0] as usize;
    let payload = &wire[1][3..1 + body_len];
    assert!(Dict::default().decode_changes(payload, 1_000_000).is_err());
}

#[test]
fn changes_with_every_cell_kind() {
    let v = vectors();
    let bytes = bytes_of(&v, "changes-cell-kinds");
    let va0 = Version { hlc: t0(), node: A };
    let va2 = Version { hlc: t2(), node: A };
    let vb3 = Version { hlc: t3(), node: B };
    let want = vec![
        Change {
            seq: Seq(3),
            collection: "bugs".into(),
            id: R1,
            cells: vec![
                cell(CellKey::Record, CellValue::Present, va2, None),
                cell(field("title"), CellValue::Absent, va2, Some(va0)),
                cell(
                    CellKey::Counter("votes".into(), B),
                    CellValue::Count(3),
                    vb3,
                    None,
                ),
                cell(
                    CellKey::Element("tags".into(), vec![0x05, 0x02, b'u', b'i']),
                    CellValue::Present,
                    vb3,
                    Some(va2),
                ),
                cell(
                    CellKey::Element("tags".into(), value::to_bytes(&Value::from("crash"))),
                    CellValue::Absent,
                    vb3,
                    Some(va2),
                ),
            ],
        },
        Change {
            seq: Seq(4),
            collection: "notes".into(),
            id: R2,
            cells: vec![cell(field("text"), text("hi"), vb3, None)],
        },
    ];
    let f = one_frame(&bytes, &mut FrameDecoder::default());
    assert_eq!((f.kind, f.partial), (kind::CHANGES, false));
    let (got, end) = Dict::default()
        .decode_changes(&f.payload, 1_000_000)
        .unwrap();
    assert_same(&got, &want, "decoded changes");
    assert_eq!(end, Seq(4));
    let payload = Dict::default().encode_changes(&want, Seq(4));
    assert_eq!(
        FrameEncoder::default().encode(kind::CHANGES, false, &payload),
        bytes
    );

    // The budget of cells per unit is enforced while decoding (6 cells here).
    assert!(Dict::default().decode_changes(&f.payload, 5).is_err());
}

/// A delete whose writer held A's writes up to T2 and B's up to T1: the Record cell carries
/// its `seen` list (HAS_SEEN), prev's entry implied, B's sent.
#[test]
fn changes_with_a_delete_carrying_its_seen_list() {
    let va2 = Version { hlc: t2(), node: A };
    let vb1 = Version { hlc: t1(), node: B };
    let delete = Cell {
        seen: blazedb::crdt::Seen::from_versions([va2, vb1]),
        ..cell(
            CellKey::Record,
            CellValue::Absent,
            Version { hlc: t3(), node: A },
            Some(va2),
        )
    };
    let want = vec![Change {
        seq: Seq(5),
        collection: "bugs".into(),
        id: R1,
        cells: vec![delete],
    }];
    let payload = Dict::default().encode_changes(&want, Seq(5));
    let framed = FrameEncoder::default().encode(kind::CHANGES, false, &payload);
    let v = vectors();
    let bytes = bytes_of(&v, "changes-delete-seen");
    let f = one_frame(&bytes, &mut FrameDecoder::default());
    assert_eq!((f.kind, f.partial), (kind::CHANGES, false));
    let (got, end) = Dict::default()
        .decode_changes(&f.payload, 1_000_000)
        .unwrap();
    assert_same(&got, &want, "decoded changes");
    assert_eq!(end, Seq(5));
    assert_eq!(framed, bytes);

    // A list that names prev's node again is malformed (a writer never makes one): B's
    // entry, inline at the end of the payload before `end`, turned into A.
    let mut twice = f.payload.clone();
    let at = twice.len() - 1 - 16;
    assert_eq!(twice[at..at + 16], B.0, "B's node id");
    twice[at..at + 16].copy_from_slice(&A.0);
    assert!(Dict::default().decode_changes(&twice, 1_000_000).is_err());
}

#[test]
fn lz4_partial_changes() {
    let v = vectors();
    let bytes = bytes_of(&v, "changes-lz4");
    let raw = bytes_of(&v, "changes-lz4-payload");
    let want = vec![Change {
        seq: Seq(7),
        collection: "notes".into(),
        id: R2,
        cells: vec![cell(
            field("text"),
            text(&"lorem ipsum dolor sit amet, ".repeat(8)),
            Version { hlc: t0(), node: B },
            None,
        )],
    }];
    // The flags byte says LZ4 | PARTIAL.
    assert_eq!(bytes[2], 0x05);
    // It is frame 1 (its CRC covers index 1): frame 0, the HELLO, is never compressed.
    let mut dec = FrameDecoder::default();
    one_frame(
        &FrameEncoder::default().encode(kind::HELLO, false, b"hello"),
        &mut dec,
    );
    let f = one_frame(&bytes, &mut dec);
    assert_eq!((f.kind, f.partial), (kind::CHANGES, true));
    assert_eq!(f.payload, raw, "decompressed payload");
    let (got, end) = Dict::default().decode_changes(&raw, 1_000_000).unwrap();
    assert_same(&got, &want, "decoded changes");
    assert_eq!(end, Seq(7));

    let payload = Dict::default().encode_changes(&want, Seq(7));
    assert_eq!(payload, raw);
    let mut enc = FrameEncoder::default();
    enc.lz4 = true;
    enc.encode(kind::HELLO, false, b"hello");
    assert_eq!(
        enc.encode(kind::CHANGES, true, &payload),
        bytes,
        "re-encoded with lz4_flex"
    );
    // Without LZ4 the same frame is the plain payload.
    let plain = FrameEncoder::default().encode(kind::CHANGES, true, &payload);
    assert!(plain.len() > bytes.len() + 150);
}

#[test]
fn value_with_every_tag() {
    let v = vectors();
    let bytes = bytes_of(&v, "value");
    let mut m = BTreeMap::new();
    m.insert("a".to_owned(), Value::Null);
    m.insert("b".to_owned(), Value::Bool(false));
    m.insert("c".to_owned(), Value::Bool(true));
    m.insert("d".to_owned(), Value::Int(-3));
    m.insert("e".to_owned(), Value::Float(1.5));
    m.insert("f".to_owned(), Value::from("hé"));
    m.insert("g".to_owned(), Value::Bytes(vec![0x01, 0x02]));
    m.insert("h".to_owned(), Value::Uuid(uuid::Uuid::from_bytes(R1.0)));
    m.insert(
        "i".to_owned(),
        Value::Timestamp(Timestamp(1_700_000_000_000_000)),
    );
    m.insert(
        "j".to_owned(),
        Value::List(vec![Value::Int(1), Value::from("x")]),
    );
    m.insert("k".to_owned(), Value::Map(BTreeMap::new()));
    let want = Value::Map(m);
    let got = value::from_bytes(&bytes).unwrap();
    assert_same(&got, &want, "decoded value");
    assert_eq!(value::to_bytes(&want), bytes);
}

#[test]
fn parser_reads_comments_and_refuses_unnamed_blocks() {
    let doc = "#### `x`\n\n2 bytes.\n\n```hex\n0a   # ten\nff # a comment with 00 in it\n```\n";
    let v = parse_doc(doc);
    assert_eq!(v["x"].bytes, vec![0x0a, 0xff]);
    assert_eq!(v["x"].stated_len, Some(2));
    let unnamed = std::panic::catch_unwind(|| parse_doc("```hex\n00\n```\n"));
    assert!(unnamed.is_err());
}

#[test]
fn selective_sync_and_snapshot_messages_as_frame_0() {
    let v = vectors();
    let cases = [
        (
            "evict",
            kind::EVICT,
            Message::Evict {
                records: vec![("todos".into(), R1)],
            },
        ),
        (
            "snapshot-begin",
            kind::SNAPSHOT_BEGIN,
            Message::SnapshotBegin {
                snap_id: 0x0102_0304_0506_0708,
                position: Seq(300),
                first_index: 0,
                subscription: 1,
                replace: true,
            },
        ),
        (
            "snapshot-end",
            kind::SNAPSHOT_END,
            Message::SnapshotEnd { chunks: 3 },
        ),
    ];
    for (name, k, want) in cases {
        let bytes = bytes_of(&v, name);
        let mut dec = FrameDecoder::default();
        let f = one_frame(&bytes, &mut dec);
        assert_eq!(f.kind, k, "{name}");
        assert_eq!(decode_simple(f.kind, &f.payload).unwrap(), want, "{name}");
        let (kk, p) = encode_simple(&want);
        assert_eq!(
            FrameEncoder::default().encode(kk, false, &p),
            bytes,
            "{name}"
        );
    }
}
