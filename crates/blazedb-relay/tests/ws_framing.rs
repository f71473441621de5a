//! The WebSocket carries exactly one protocol frame per binary message (PROTOCOL.md §2), as a
//! browser client needs: a hand-written client that speaks the protocol message by message —
//! no BlazeDB session on its side — gets the relay's HELLO, changes and CAUGHT_UP each in its
//! own message, and may itself split a frame across messages.

mod common;

use std::time::Duration;

use blazedb::limits::PROTOCOL_VERSION;
use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
use blazedb::sync::message::{decode_simple, encode_simple, kind, Hello, Message};
use blazedb::sync::SyncMode;
use blazedb::{NodeId, Seq};
use blazedb_net::ws::frame_len;
use common::{connect_ws, within, TestRelay, TOKEN};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_per_binary_message() {
    let relay = TestRelay::start(|_| {}).await;
    for i in 0..50 {
        relay.db.insert("notes", [("n", i)]).unwrap();
    }
    let mut ws = connect_ws(relay.addr, Some(TOKEN)).await.unwrap();
    let mut enc = FrameEncoder::default();
    let frame = |enc: &mut FrameEncoder, m: &Message| {
        let (k, payload) = encode_simple(m);
        enc.encode(k, false, &payload)
    };
    let hello = frame(
        &mut enc,
        &Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            node: NodeId::random(),
            last_seq: Seq(0),
            mode: SyncMode::Pull,
            server: false,
            caps: 0,
            token: String::new(),
        }),
    );
    // Split across two messages: the relay reassembles by the length prefix.
    ws.send(WsMessage::binary(hello[..3].to_vec()))
        .await
        .unwrap();
    ws.send(WsMessage::binary(hello[3..].to_vec()))
        .await
        .unwrap();
    let subscribe = frame(
        &mut enc,
        &Message::Subscribe {
            from: Seq(0),
            policy: Default::default(),
            snapshot: Default::default(),
            acked: Seq(0),
        },
    );
    ws.send(WsMessage::binary(subscribe)).await.unwrap();

    let mut dec = FrameDecoder::default();
    let mut kinds = Vec::new();
    within(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            let WsMessage::Binary(b) = m else { continue };
            assert_eq!(
                frame_len(&b).unwrap(),
                Some(b.len()),
                "one whole frame per message"
            );
            dec.push(&b);
            let f = dec.next_frame().unwrap().expect("a complete frame");
            assert!(dec.next_frame().unwrap().is_none(), "and only one");
            kinds.push(f.kind);
            if f.kind == kind::CAUGHT_UP {
                break;
            }
            if f.kind != kind::CHANGES {
                decode_simple(f.kind, &f.payload).unwrap();
            }
        }
    })
    .await;
    assert_eq!(kinds.first(), Some(&kind::HELLO));
    // A new, empty client is bootstrapped with a snapshot: its chunks are frames too.
    assert!(kinds.contains(&kind::SNAPSHOT_CHUNK), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&kind::CAUGHT_UP));
    drop(ws);
    relay.stop().await;
}
