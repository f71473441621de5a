//! Throwaway: prints the annotated test vectors for docs/PROTOCOL.md.

use std::collections::BTreeMap;
use std::fmt::Write;

use blazedb::codec::{value, varint};
use blazedb::crdt::{Cell, CellKey, CellValue};
use blazedb::sync::frame::FrameEncoder;
use blazedb::sync::message::{encode_simple, kind, Dict, ErrorCode, Hello, Message, SyncMode};
use blazedb::{Change, Hlc, NodeId, RecordId, Seq, Timestamp, Value, Version};

const A: NodeId = NodeId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
const B: NodeId = NodeId([0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0]);
const R1: RecordId = RecordId([0x01, 0x90, 0xf3, 0xa2, 0x6b, 0x00, 0x7c, 0x4e, 0x8a, 0x6f, 0x0c, 0x1d, 0x2e, 0x3f, 0x40, 0x51]);
const R2: RecordId = RecordId([0x01, 0x90, 0xf3, 0xa2, 0x6b, 0x01, 0x7d, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02]);

#[derive(Default)]
struct Ann {
    segs: Vec<(Vec<u8>, String)>,
}

impl Ann {
    fn raw(&mut self, b: &[u8], label: impl Into<String>) {
        self.segs.push((b.to_vec(), label.into()));
    }
    fn u8(&mut self, b: u8, label: impl Into<String>) {
        self.raw(&[b], label);
    }
    fn var(&mut self, v: u64, label: impl Into<String>) {
        let mut b = Vec::new();
        varint::write_u64(&mut b, v);
        self.raw(&b, label);
    }
    fn zz(&mut self, v: i64, label: impl Into<String>) {
        let mut b = Vec::new();
        varint::write_i64(&mut b, v);
        self.raw(&b, label);
    }
    fn str(&mut self, s: &str, label: &str) {
        self.var(s.len() as u64, format!("{label}: length {}", s.len()));
        self.raw(s.as_bytes(), format!("{label}: {s:?}"));
    }
    fn bytes(&self) -> Vec<u8> {
        self.segs.iter().flat_map(|s| s.0.clone()).collect()
    }
    fn extend(&mut self, o: Ann) {
        self.segs.extend(o.segs);
    }
    fn render(&self) -> String {
        let mut out = String::new();
        for (b, label) in &self.segs {
            for (i, chunk) in b.chunks(16).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
                let hex = hex.join(" ");
                if i == 0 {
                    writeln!(out, "{hex:<48}# {label}").unwrap();
                } else {
                    writeln!(out, "{hex}").unwrap();
                }
            }
        }
        out
    }
}

fn crc(index: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(body);
    h.finalize()
}

fn frame(index: u64, k: u8, kname: &str, flags: u8, flabel: &str, payload: Ann) -> Ann {
    let mut body = Ann::default();
    body.u8(k, format!("type 0x{k:02x} {kname}"));
    body.u8(flags, format!("flags 0x{flags:02x}: {flabel}"));
    body.extend(payload);
    let bb = body.bytes();
    let mut f = Ann::default();
    f.var(bb.len() as u64, format!("body length {}", bb.len()));
    f.extend(body);
    let c = crc(index, &bb);
    f.raw(&c.to_le_bytes(), format!("CRC-32 0x{c:08x} (u32 LE) of frame index {index} (u64 LE) ‖ body"));
    f
}

fn hlc_label(h: Hlc) -> String {
    format!("{} = wall_ms {} << 16 | logical {}", h.0, h.wall_ms(), h.logical())
}

fn print(name: &str, a: &Ann, real: &[u8]) {
    assert_eq!(a.bytes(), real, "{name}: annotation differs from the encoder");
    println!("#### `{name}`\n\n{} bytes.\n\n```hex\n{}```\n", real.len(), a.render());
}

fn simple(enc: &mut FrameEncoder, index: u64, name: &str, m: Message, payload: Ann, kname: &str) {
    let (k, p) = encode_simple(&m);
    assert_eq!(p, payload.bytes(), "{name} payload");
    let real = enc.encode(k, false, &p);
    let a = frame(index, k, kname, 0, "none", payload);
    print(name, &a, &real);
}

/// Annotated mirror of `Dict::encode_changes` for the vectors below (keeps its own dictionary).
#[derive(Default)]
struct Mirror {
    nodes: Vec<NodeId>,
    strings: Vec<String>,
    last_hlc: u64,
    last_seq: u64,
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Mirror {
    fn node(&mut self, a: &mut Ann, n: NodeId, label: &str) {
        if let Some(i) = self.nodes.iter().position(|x| *x == n) {
            a.var(i as u64 + 2, format!("{label}: ref {} = node entry {i} ({})", i + 2, &hexs(&n.0)[..8]));
        } else {
            a.u8(0, format!("{label}: ref 0 = inline, becomes node entry {}", self.nodes.len()));
            a.raw(&n.0, format!("{label}: node id {}", hexs(&n.0)));
            self.nodes.push(n);
        }
    }
    fn string(&mut self, a: &mut Ann, s: &str, label: &str) {
        if let Some(i) = self.strings.iter().position(|x| x == s) {
            a.var(i as u64 + 2, format!("{label}: ref {} = name entry {i} ({s:?})", i + 2));
        } else {
            a.u8(0, format!("{label}: ref 0 = inline, becomes name entry {}", self.strings.len()));
            a.str(s, label);
            self.strings.push(s.to_owned());
        }
    }
    fn version(&mut self, a: &mut Ann, v: Version, label: &str) {
        let d = v.hlc.0.wrapping_sub(self.last_hlc) as i64;
        a.zz(d, format!("{label} hlc: zigzag(hlc − last_hlc {}) = zigzag({d}); hlc {}", self.last_hlc, hlc_label(v.hlc)));
        self.last_hlc = v.hlc.0;
        self.node(a, v.node, &format!("{label} node"));
    }
    fn changes(&mut self, changes: &[Change], end: Seq) -> Ann {
        let mut a = Ann::default();
        let mut groups: Vec<&[Change]> = Vec::new();
        let mut start = 0;
        for i in 1..=changes.len() {
            if i == changes.len() || changes[i].seq != changes[start].seq {
                groups.push(&changes[start..i]);
                start = i;
            }
        }
        a.var(groups.len() as u64, format!("{} group(s)", groups.len()));
        for g in groups {
            let seq = g[0].seq.0;
            a.var(seq - self.last_seq, format!("group seq {seq} = last_seq {} + {}", self.last_seq, seq - self.last_seq));
            self.last_seq = seq;
            a.var(g.len() as u64, format!("{} record(s) in the group", g.len()));
            for ch in g {
                self.string(&mut a, &ch.collection, "collection");
                a.raw(&ch.id.0, format!("record id {}", ch.id));
                a.var(ch.cells.len() as u64, format!("{} cell(s)", ch.cells.len()));
                let mut before: Option<&Cell> = None;
                for c in &ch.cells {
                    self.cell(&mut a, c, before);
                    before = Some(c);
                }
            }
        }
        a.var(end.0 - self.last_seq, format!("end = last_seq {} + {} = {}", self.last_seq, end.0 - self.last_seq, end.0));
        self.last_seq = end.0;
        a
    }
    fn cell(&mut self, a: &mut Ann, c: &Cell, before: Option<&Cell>) {
        let (kk, kname) = match c.key {
            CellKey::Record => (0u8, "Record"),
            CellKey::Field(_) => (1, "Field"),
            CellKey::Counter(..) => (2, "Counter"),
            CellKey::Element(..) => (3, "Element"),
        };
        let (vk, vname) = match c.value {
            CellValue::Value(_) => (0u8, "Value"),
            CellValue::Absent => (1, "Absent"),
            CellValue::Present => (2, "Present"),
            CellValue::Count(_) => (3, "Count"),
        };
        let same_version = before.is_some_and(|b| b.version == c.version);
        let same_prev = c.prev.is_some() && before.is_some_and(|b| b.prev == c.prev);
        let mut flags = kk | (vk << 2);
        let mut fl = vec![format!("key {kname}"), format!("value {vname}")];
        if same_version {
            flags |= 0x10;
            fl.push("SAME_VERSION".into());
        }
        if c.prev.is_some() {
            flags |= 0x20;
            fl.push("HAS_PREV".into());
        }
        if same_prev {
            flags |= 0x40;
            fl.push("SAME_PREV".into());
        }
        a.u8(flags, format!("cell flags 0x{flags:02x}: {}", fl.join(", ")));
        match &c.key {
            CellKey::Record => {}
            CellKey::Field(f) => self.string(a, f, "field"),
            CellKey::Counter(f, n) => {
                self.string(a, f, "field");
                self.node(a, *n, "counter node");
            }
            CellKey::Element(f, e) => {
                self.string(a, f, "field");
                a.var(e.len() as u64, format!("element: length {}", e.len()));
                a.raw(e, format!("element: encoded value {:?}", value::from_bytes(e).unwrap()));
            }
        }
        match &c.value {
            CellValue::Value(Value::Int(i)) => {
                a.u8(0x03, "value: tag 0x03 int");
                a.zz(*i, format!("value: zigzag({i})"));
            }
            CellValue::Value(Value::Text(t)) => {
                a.u8(0x05, "value: tag 0x05 text");
                a.var(t.len() as u64, format!("value: length {}", t.len()));
                let shown = if t.len() > 40 { format!("{:?} × 8", &t[..28]) } else { format!("{t:?}") };
                a.raw(t.as_bytes(), format!("value: {shown}"));
            }
            CellValue::Value(v) => {
                let b = value::to_bytes(v);
                a.raw(&b, format!("value {v:?}"));
            }
            CellValue::Count(n) => a.zz(*n, format!("count {n} (zigzag)")),
            _ => {}
        }
        if !same_version {
            self.version(a, c.version, "version");
        }
        if let (Some(p), false) = (c.prev, same_prev) {
            let back = c.version.hlc.0.wrapping_sub(p.hlc.0) as i64;
            a.zz(back, format!("prev hlc: zigzag(version hlc − prev hlc) = zigzag({back}); prev hlc {}", hlc_label(p.hlc)));
            self.node(a, p.node, "prev node");
        }
    }
}

fn cell(key: CellKey, value: CellValue, version: Version, prev: Option<Version>) -> Cell {
    Cell { key, value, version, prev, seq: Seq(0) }
}

#[test]
fn generate() {
    let t0 = Hlc::new(1_700_000_000_000, 0);
    let t1 = Hlc::new(1_700_000_004_250, 1);
    let t2 = Hlc::new(1_700_000_009_000, 0);
    let t3 = Hlc(t2.0 + 1);
    let va0 = Version { hlc: t0, node: A };

    // ---- simple messages ----
    let mut enc = FrameEncoder::default();
    let mut p = Ann::default();
    p.raw(&1u16.to_le_bytes(), "version 1 (u16 LE)");
    p.raw(&A.0, format!("node id {}", hexs(&A.0)));
    p.var(42, "last_seq 42");
    p.u8(0, "mode 0 = both");
    p.u8(0, "server 0 = false");
    p.var(1, "caps 1 = LZ4");
    p.str("s3cret", "token");
    simple(&mut enc, 0, "hello", Message::Hello(Hello { version: 1, node: A, last_seq: Seq(42), mode: SyncMode::Both, server: false, caps: 1, token: "s3cret".into() }), p, "HELLO");
    let mut p = Ann::default();
    p.var(17, "from 17");
    simple(&mut enc, 1, "subscribe", Message::Subscribe { from: Seq(17) }, p, "SUBSCRIBE");

    let mut p = Ann::default();
    p.var(300, "seq 300");
    simple(&mut FrameEncoder::default(), 0, "ack", Message::Ack { seq: Seq(300) }, p, "ACK");
    let mut p = Ann::default();
    p.var(300, "seq 300");
    simple(&mut FrameEncoder::default(), 0, "caught-up", Message::CaughtUp { seq: Seq(300) }, p, "CAUGHT_UP");
    let nonce = 0x0102_0304_0506_0708u64;
    let mut p = Ann::default();
    p.raw(&nonce.to_le_bytes(), "nonce 0x0102030405060708 (u64 LE)");
    simple(&mut FrameEncoder::default(), 0, "ping", Message::Ping { nonce }, p, "PING");
    let mut p = Ann::default();
    p.raw(&nonce.to_le_bytes(), "nonce 0x0102030405060708 (u64 LE)");
    simple(&mut FrameEncoder::default(), 0, "pong", Message::Pong { nonce }, p, "PONG");
    let msg = "frame of 9000000 bytes exceeds the limit of 8388608";
    let mut p = Ann::default();
    p.raw(&4u16.to_le_bytes(), "code 4 = TOO_LARGE (u16 LE)");
    p.str(msg, "message");
    simple(&mut FrameEncoder::default(), 0, "error", Message::Error { code: ErrorCode::TooLarge, message: msg.into() }, p, "ERROR");

    // ---- CHANGES: insert then update, one direction ----
    let mut enc = FrameEncoder::default();
    let mut dict = Dict::default();
    let mut m = Mirror::default();
    let insert = vec![Change {
        seq: Seq(5),
        collection: "bugs".into(),
        id: R1,
        cells: vec![
            cell(CellKey::Field("priority".into()), CellValue::Value(Value::Int(5)), va0, None),
            cell(CellKey::Field("title".into()), CellValue::Value(Value::from("Crash on save")), va0, None),
        ],
    }];
    let payload = dict.encode_changes(&insert, Seq(6));
    let real = enc.encode(kind::CHANGES, false, &payload);
    let a = frame(0, kind::CHANGES, "CHANGES", 0, "none", m.changes(&insert, Seq(6)));
    print("changes-insert", &a, &real);
    let update = vec![Change {
        seq: Seq(9),
        collection: "bugs".into(),
        id: R1,
        cells: vec![cell(
            CellKey::Field("title".into()),
            CellValue::Value(Value::from("Crash on save as PDF")),
            Version { hlc: t1, node: A },
            Some(va0),
        )],
    }];
    let payload = dict.encode_changes(&update, Seq(9));
    let real = enc.encode(kind::CHANGES, false, &payload);
    let a = frame(1, kind::CHANGES, "CHANGES", 0, "none", m.changes(&update, Seq(9)));
    print("changes-update", &a, &real);

    // ---- CHANGES: every cell kind, two groups ----
    let mut enc = FrameEncoder::default();
    let mut dict = Dict::default();
    let mut m = Mirror::default();
    let va2 = Version { hlc: t2, node: A };
    let vb3 = Version { hlc: t3, node: B };
    let ui = value::to_bytes(&Value::from("ui"));
    let crash = value::to_bytes(&Value::from("crash"));
    let kinds = vec![
        Change {
            seq: Seq(3),
            collection: "bugs".into(),
            id: R1,
            cells: vec![
                cell(CellKey::Record, CellValue::Present, va2, None),
                cell(CellKey::Field("title".into()), CellValue::Absent, va2, Some(va0)),
                cell(CellKey::Counter("votes".into(), B), CellValue::Count(3), vb3, None),
                cell(CellKey::Element("tags".into(), ui), CellValue::Present, vb3, Some(va2)),
                cell(CellKey::Element("tags".into(), crash), CellValue::Absent, vb3, Some(va2)),
            ],
        },
        Change {
            seq: Seq(4),
            collection: "notes".into(),
            id: R2,
            cells: vec![cell(CellKey::Field("text".into()), CellValue::Value(Value::from("hi")), vb3, None)],
        },
    ];
    let payload = dict.encode_changes(&kinds, Seq(4));
    let real = enc.encode(kind::CHANGES, false, &payload);
    let a = frame(0, kind::CHANGES, "CHANGES", 0, "none", m.changes(&kinds, Seq(4)));
    print("changes-cell-kinds", &a, &real);

    // ---- CHANGES, LZ4, PARTIAL ----
    let mut enc = FrameEncoder::default();
    enc.lz4 = true;
    let mut dict = Dict::default();
    let mut m = Mirror::default();
    let text = "lorem ipsum dolor sit amet, ".repeat(8);
    let lz = vec![Change {
        seq: Seq(7),
        collection: "notes".into(),
        id: R2,
        cells: vec![cell(CellKey::Field("text".into()), CellValue::Value(Value::from(text.as_str())), Version { hlc: t0, node: B }, None)],
    }];
    let payload = dict.encode_changes(&lz, Seq(7));
    let real = enc.encode(kind::CHANGES, true, &payload);
    let pa = m.changes(&lz, Seq(7));
    assert_eq!(pa.bytes(), payload);
    let c = lz4_flex::block::compress(&payload);
    let mut body = Ann::default();
    body.var(payload.len() as u64, format!("uncompressed payload length {}", payload.len()));
    body.raw(&c, format!("LZ4 block, {} bytes", c.len()));
    let a = frame(0, kind::CHANGES, "CHANGES", 0x05, "LZ4 | PARTIAL", body);
    print("changes-lz4", &a, &real);
    print("changes-lz4-payload", &pa, &payload);

    // ---- a value with every tag ----
    let mut map = BTreeMap::new();
    map.insert("a".to_owned(), Value::Null);
    map.insert("b".to_owned(), Value::Bool(false));
    map.insert("c".to_owned(), Value::Bool(true));
    map.insert("d".to_owned(), Value::Int(-3));
    map.insert("e".to_owned(), Value::Float(1.5));
    map.insert("f".to_owned(), Value::from("hé"));
    map.insert("g".to_owned(), Value::Bytes(vec![0x01, 0x02]));
    map.insert("h".to_owned(), Value::Uuid(uuid::Uuid::from_bytes(R1.0)));
    map.insert("i".to_owned(), Value::Timestamp(Timestamp(1_700_000_000_000_000)));
    map.insert("j".to_owned(), Value::List(vec![Value::Int(1), Value::from("x")]));
    map.insert("k".to_owned(), Value::Map(BTreeMap::new()));
    let v = Value::Map(map);
    let mut a = Ann::default();
    a.u8(0x0a, "tag 0x0a map");
    a.var(11, "11 entries");
    let key = |a: &mut Ann, k: &str| {
        a.var(1, format!("key length 1"));
        a.raw(k.as_bytes(), format!("key {k:?}"));
    };
    key(&mut a, "a");
    a.u8(0x00, "tag 0x00 null");
    key(&mut a, "b");
    a.u8(0x01, "tag 0x01 false");
    key(&mut a, "c");
    a.u8(0x02, "tag 0x02 true");
    key(&mut a, "d");
    a.u8(0x03, "tag 0x03 int");
    a.zz(-3, "zigzag(-3) = 5");
    key(&mut a, "e");
    a.u8(0x04, "tag 0x04 float");
    a.raw(&1.5f64.to_le_bytes(), "1.5 as IEEE 754 binary64, little-endian");
    key(&mut a, "f");
    a.u8(0x05, "tag 0x05 text");
    a.var(3, "length 3 (UTF-8 bytes)");
    a.raw("hé".as_bytes(), "\"hé\"");
    key(&mut a, "g");
    a.u8(0x06, "tag 0x06 bytes");
    a.var(2, "length 2");
    a.raw(&[1, 2], "01 02");
    key(&mut a, "h");
    a.u8(0x07, "tag 0x07 uuid");
    a.raw(&R1.0, format!("{}", R1));
    key(&mut a, "i");
    a.u8(0x08, "tag 0x08 timestamp");
    a.zz(1_700_000_000_000_000, "zigzag(1700000000000000 µs) = 2023-11-14T22:13:20Z");
    key(&mut a, "j");
    a.u8(0x09, "tag 0x09 list");
    a.var(2, "2 items");
    a.u8(0x03, "tag 0x03 int");
    a.zz(1, "zigzag(1) = 2");
    a.u8(0x05, "tag 0x05 text");
    a.var(1, "length 1");
    a.raw(b"x", "\"x\"");
    key(&mut a, "k");
    a.u8(0x0a, "tag 0x0a map");
    a.var(0, "0 entries");
    print("value", &a, &value::to_bytes(&v));
}

#[test]
fn probe_error_after_queued_frame() {
    use blazedb::sync::{Session, SessionConfig};
    use blazedb::{Database, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
    let b = Database::open(dir.path().join("b.db"), OpenOptions::default()).unwrap();
    let mut sa = Session::new(&a, SessionConfig::default(), 0).unwrap();
    let mut sb = Session::new(&b, SessionConfig::default(), 0).unwrap();
    // Handshake fully.
    for _ in 0..10 {
        while let Some(f) = sa.poll_transmit(0, &a) { sb.handle_bytes(0, &f, &b).unwrap(); }
        while let Some(f) = sb.poll_transmit(0, &b) { sa.handle_bytes(0, &f, &a).unwrap(); }
    }
    // B sends A a PING and then garbage in one read, built by hand with B's real encoder:
    // get B to send a PING via timeout.
    sb.handle_timeout(6_000, &b);
    let ping = sb.poll_transmit(6_000, &b).unwrap();
    let mut bytes = ping.clone();
    bytes.extend_from_slice(&[0x05, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00]); // bad crc frame
    let err = sa.handle_bytes(6_000, &bytes, &a).unwrap_err();
    println!("A detected: {err:?}");
    let mut got = Vec::new();
    while let Some(f) = sa.poll_transmit(6_000, &a) { got.push(f); }
    println!("A queued {} frames after failing", got.len());
    for f in got {
        let r = sb.handle_bytes(6_000, &f, &b);
        println!("B on A's frame: {r:?}");
    }
}

#[test]
fn probe_unit_chain() {
    use blazedb::{Database, OpenOptions, Patch};
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
    let hot = a.insert("c", [("n", Value::Int(0))]).unwrap();
    for i in 0..200 {
        a.transaction(|tx| {
            tx.update("c", hot, Patch::new().set("n", Value::Int(i)))?;
            tx.insert("c", [("x", Value::Int(i))])?;
            Ok(())
        }).unwrap();
    }
    let b = a.changes_since(Seq(0), 4, None).unwrap();
    println!("head {:?} batch next {:?} needs_through {:?} changes {} more {}", a.last_seq().unwrap(), b.next, b.needs_through, b.changes.len(), b.more);
}

#[test]
fn probe_unit_chain_session() {
    use blazedb::sync::frame::FrameDecoder;
    use blazedb::sync::{Session, SessionConfig};
    use blazedb::{Database, OpenOptions, Patch};
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path().join("a.db"), OpenOptions::default()).unwrap();
    let b = Database::open(dir.path().join("b.db"), OpenOptions::default()).unwrap();
    let hot = a.insert("c", [("n", Value::Int(0))]).unwrap();
    for i in 0..200 {
        a.transaction(|tx| {
            tx.update("c", hot, Patch::new().set("n", Value::Int(i)))?;
            tx.insert("c", [("x", Value::Int(i))])?;
            Ok(())
        }).unwrap();
    }
    let cfg = SessionConfig { batch_cells_max: 4, ..SessionConfig::default() };
    let mut sa = Session::new(&a, cfg.clone(), 0).unwrap();
    let mut sb = Session::new(&b, cfg, 0).unwrap();
    let mut dec = FrameDecoder::default();
    let (mut partial, mut whole) = (0, 0);
    for _ in 0..1000 {
        while let Some(f) = sa.poll_transmit(0, &a) {
            dec.push(&f);
            while let Some(fr) = dec.next_frame().unwrap() {
                if fr.kind == 3 { if fr.partial { partial += 1 } else { whole += 1 } }
            }
            sb.handle_bytes(0, &f, &b).unwrap();
        }
        while let Some(f) = sb.poll_transmit(0, &b) { sa.handle_bytes(0, &f, &a).unwrap(); }
    }
    println!("CHANGES frames: {partial} partial, {whole} complete; max staged?");
}
