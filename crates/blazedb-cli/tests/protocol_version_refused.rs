//! `blazedb sync DB URL` with a peer of an older sync protocol (a fake one on 127.0.0.1 that
//! sends an older HELLO) fails naming the peer's URL, both versions, which side is older
//! and what to upgrade, and points at README's "Upgrading" (an upgrade audit, 2026-12-07, F7:
//! "peer speaks protocol 3, this node 4: upgrade the older one").

mod net_common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;

use blazedb::limits::PROTOCOL_VERSION;
use blazedb::sync::frame::FrameEncoder;
use blazedb::sync::message::encode_simple;
use blazedb::sync::{Hello, Message, SyncMode};

use net_common::{blazedb, put};

#[test]
fn a_peer_of_an_older_protocol_is_named_and_said_to_be_the_one_to_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    put(&db, "notes", r#"{"n": 1}"#);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let old_peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let (kind, payload) = encode_simple(&Message::Hello(Hello {
            version: PROTOCOL_VERSION - 1,
            node: blazedb::NodeId([7; 16]),
            last_seq: blazedb::Seq(0),
            mode: SyncMode::Both,
            server: true,
            caps: 0,
            token: String::new(),
        }));
        s.write_all(&FrameEncoder::default().encode(kind, false, &payload))
            .unwrap();
        // Until the client closes (after its ERROR frame).
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let out = blazedb()
        .arg("sync")
        .arg(&db)
        .arg(&url)
        .arg("--once")
        .output()
        .unwrap();
    old_peer.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let expected = format!(
        "error: the peer at {url}: sync session ended (UNSUPPORTED_VERSION): the peer speaks \
         sync protocol {}, this build {PROTOCOL_VERSION}: the peer is older, upgrade the \
         peer's BlazeDB",
        PROTOCOL_VERSION - 1
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("README, \"Upgrading\""), "{err}");
}
