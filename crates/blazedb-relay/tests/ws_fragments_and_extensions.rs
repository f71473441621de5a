//! WebSocket details a browser or proxy may produce: a message split into continuation
//! frames is one message (a HELLO in three fragments starts a session); fragments after the
//! HELLO that add up to more than the message limit end only that connection with ERROR
//! `TOO_LARGE`, before the relay buffers them all; an upgrade offering permessage-deflate is answered without
//! any extension, so compression stays off.

mod common;

use std::time::Duration;

use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
use blazedb::sync::message::{decode_simple, encode_simple, Message};
use blazedb::sync::{ErrorCode, Hello, SyncMode};
use blazedb_net::ws::{websocket_config, WS_MESSAGE_BYTES_MAX};
use common::{connect_ws, within, TestRelay, TOKEN};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Every protocol message the relay sends until it closes the connection, or until `stop`
/// says enough.
async fn read_messages(
    ws: &mut WebSocketStream<TcpStream>,
    mut stop: impl FnMut(&Message) -> bool,
) -> Vec<Message> {
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    within(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            let WsMessage::Binary(b) = m else { continue };
            dec.push(&b);
            while let Some(f) = dec.next_frame().expect("the relay's frames decode") {
                let Ok(m) = decode_simple(f.kind, &f.payload) else {
                    continue;
                };
                let done = stop(&m);
                got.push(m);
                if done {
                    return;
                }
            }
        }
    })
    .await;
    got
}

/// The HELLO of a new pull-only client (its token went with the upgrade).
fn pull_hello() -> Message {
    Message::Hello(Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: blazedb::NodeId::random(),
        last_seq: blazedb::Seq(0),
        mode: SyncMode::Pull,
        server: false,
        caps: 0,
        token: String::new(),
    })
}

fn data_frame(payload: Vec<u8>, first: bool, last: bool) -> WsMessage {
    let opcode = if first {
        OpCode::Data(Data::Binary)
    } else {
        OpCode::Data(Data::Continue)
    };
    WsMessage::Frame(Frame::message(payload, opcode, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_hello_starts_a_session() {
    let relay = TestRelay::start(|_| {}).await;
    let mut ws = connect_ws(relay.addr, Some(TOKEN)).await.unwrap();
    let (k, payload) = encode_simple(&pull_hello());
    let frame = FrameEncoder::default().encode(k, false, &payload);
    let third = frame.len() / 3;
    let pieces = [
        &frame[..third],
        &frame[third..2 * third],
        &frame[2 * third..],
    ];
    for (i, piece) in pieces.iter().enumerate() {
        ws.send(data_frame(piece.to_vec(), i == 0, i == 2))
            .await
            .unwrap();
    }
    let got = read_messages(&mut ws, |m| matches!(m, Message::Hello(_))).await;
    assert!(
        matches!(got.last(), Some(Message::Hello(h)) if h.server),
        "the relay answered with its HELLO: {got:?}"
    );
    drop(ws);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_over_the_message_limit_end_the_connection() {
    let relay = TestRelay::start(|_| {}).await;
    let mut ws = connect_ws(relay.addr, Some(TOKEN)).await.unwrap();
    // After a HELLO: before it, the relay reads no more than a HELLO's worth of any message
    // (`first_frame_limit.rs`).
    let (k, payload) = encode_simple(&pull_hello());
    let hello = FrameEncoder::default().encode(k, false, &payload);
    ws.send(WsMessage::binary(hello)).await.unwrap();
    // 1 MiB fragments, none over the frame limit, together over the message limit.
    let fragment = 1 << 20;
    let count = WS_MESSAGE_BYTES_MAX / fragment + 2;
    for i in 0..count {
        let last = i + 1 == count;
        if ws
            .send(data_frame(vec![0u8; fragment], i == 0, last))
            .await
            .is_err()
        {
            break; // the relay closed: its answer is what it sent
        }
    }
    let got = read_messages(&mut ws, |_| false).await;
    assert!(
        got.iter().any(|m| matches!(
            m,
            Message::Error {
                code: ErrorCode::TooLarge,
                message,
            } if message.contains(&WS_MESSAGE_BYTES_MAX.to_string())
        )),
        "{got:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_is_not_negotiated() {
    let relay = TestRelay::start(|_| {}).await;
    let mut req = relay.ws_url().into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    headers.insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(req, tcp, Some(websocket_config()))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "{:?}",
        response.headers()
    );
    drop(ws);
    relay.stop().await;
}

/// A session the relay ends (here: a frame that fails its checksum) closes the WebSocket with
/// status 1000 after the ERROR frame: without a status the client's library reports 1005
/// ("no status received"), which reads like a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_closes_with_a_status_after_its_error() {
    let relay = TestRelay::start(|_| {}).await;
    let mut ws = connect_ws(relay.addr, Some(TOKEN)).await.unwrap();
    let (k, payload) = encode_simple(&pull_hello());
    let mut frame = FrameEncoder::default().encode(k, false, &payload);
    *frame.last_mut().unwrap() ^= 0xff;
    ws.send(WsMessage::Binary(frame.into())).await.unwrap();
    let mut error = None;
    let mut close = None;
    let mut dec = FrameDecoder::default();
    within(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                WsMessage::Binary(b) => {
                    dec.push(&b);
                    while let Some(f) = dec.next_frame().unwrap() {
                        if let Ok(Message::Error { code, .. }) = decode_simple(f.kind, &f.payload) {
                            error = Some(code);
                        }
                    }
                }
                WsMessage::Close(c) => {
                    close = Some(c);
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(error.is_some(), "an ERROR frame first");
    let close = close.expect("a close message").expect("with a status");
    assert_eq!(u16::from(close.code), 1000);
    relay.stop().await;
}
