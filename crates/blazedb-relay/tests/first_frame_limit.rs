//! A connection's first frame must be a HELLO, which is at most a few KiB: one announcing more
//! than `FIRST_FRAME_BYTES_MAX` is refused with `TOO_LARGE` as soon as its length prefix
//! arrives (long before the handshake timeout, with no credential presented and nothing
//! buffered), on the relay's raw TCP port and on `blazedb listen --tcp`; a compressed first
//! frame is refused too; and the relay keeps serving its other clients meanwhile. Over a
//! WebSocket to a relay without credentials, a first message announcing megabytes is refused
//! with `TOO_LARGE` once little more than a HELLO's worth of it has arrived, without waiting
//! for the rest.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::codec::varint::write_u64;
use blazedb::limits::{FIRST_FRAME_BYTES_MAX, FRAME_BYTES_MAX};
use blazedb::sync::frame::{FrameDecoder, FLAG_LZ4};
use blazedb::sync::message::{decode_simple, kind, Message};
use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb::Database;
use blazedb_net::transport::{listen, ListenConfig};
use blazedb_net::ws::{websocket_config, WsStream, WS_FIRST_FRAME_READ_BYTES_MAX};
use blazedb_net::{run_session, DriverOptions};
use blazedb_relay::AuthConfig;
use common::{connect_ws, http, open, sessions_closed, wait_until, within, TestRelay, TOKEN};
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Send `bytes` on a new connection to `addr` (keeping it open), then read until the peer
/// closes: the code and message of its ERROR frame, and how long the answer took.
async fn first_frame_answer(
    addr: std::net::SocketAddr,
    bytes: &[u8],
) -> (ErrorCode, String, Duration) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    tcp.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    // Far below the handshake timeout (10 s): the answer must come from the length alone.
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("the peer answers the first frame's length at once")
        .unwrap();
    let elapsed = t.elapsed();
    let mut dec = FrameDecoder::default();
    dec.push(&got);
    // The peer's HELLO may come before its ERROR (a listener sends its own first).
    while let Some(f) = dec.next_frame().unwrap() {
        if f.kind == kind::ERROR {
            match decode_simple(f.kind, &f.payload).unwrap() {
                Message::Error { code, message, .. } => return (code, message, elapsed),
                other => panic!("{other:?}"),
            }
        }
    }
    panic!("no ERROR frame in {got:?}")
}

/// The length prefix of a frame nearly as large as a frame may be, and a few bytes of it.
fn huge_first_frame() -> Vec<u8> {
    let mut b = Vec::new();
    write_u64(&mut b, (FRAME_BYTES_MAX - 1) as u64);
    b.extend_from_slice(&[kind::HELLO, 0, 0, 0]);
    b
}

/// A first frame flagged LZ4 (its content does not matter: the flag is refused).
fn compressed_first_frame() -> Vec<u8> {
    let mut body = vec![kind::HELLO, FLAG_LZ4];
    write_u64(&mut body, 1000);
    body.extend_from_slice(&[0u8; 40]);
    let mut h = crc32fast::Hasher::new();
    h.update(&0u64.to_le_bytes());
    h.update(&body);
    let mut frame = Vec::new();
    write_u64(&mut frame, body.len() as u64);
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&h.finalize().to_le_bytes());
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_refuses_a_first_frame_larger_than_a_hello_at_once() {
    let relay = TestRelay::start(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let tcp_addr = relay.tcp_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let stop = CancellationToken::new();
    let client = spawn_client(a.clone(), tcp_addr, &stop).await;

    let (code, message, took) = first_frame_answer(tcp_addr, &huge_first_frame()).await;
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(
        message.contains("first frame") && message.contains(&FIRST_FRAME_BYTES_MAX.to_string()),
        "{message}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Just over the limit is refused; the largest frame a HELLO may be is not refused for
    // its size (it is no HELLO, so it fails later, as malformed, once it has arrived).
    let mut over = Vec::new();
    write_u64(&mut over, FIRST_FRAME_BYTES_MAX as u64 + 1);
    let (code, _, _) = first_frame_answer(tcp_addr, &over).await;
    assert_eq!(code, ErrorCode::TooLarge);
    let mut at_limit = Vec::new();
    write_u64(&mut at_limit, FIRST_FRAME_BYTES_MAX as u64);
    at_limit.extend_from_slice(&vec![0u8; FIRST_FRAME_BYTES_MAX + 4]);
    let (code, _, _) = first_frame_answer(tcp_addr, &at_limit).await;
    assert_ne!(code, ErrorCode::TooLarge);

    let (code, message, _) = first_frame_answer(tcp_addr, &compressed_first_frame()).await;
    assert_eq!(code, ErrorCode::Malformed);
    assert!(message.contains("compressed"), "{message}");

    // The relay still serves: the client connected before keeps syncing, /health answers.
    let id = a.insert("notes", [("after", "hostile")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        relay.db.get("notes", id).unwrap().is_some()
    })
    .await;
    assert_eq!(
        http(relay.addr, "GET", "/health", &[], "").await.status,
        200
    );
    stop.cancel();
    client.await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_refuses_a_first_frame_larger_than_a_hello_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = open(dir.path(), "hub");
    let listener = listen(
        hub.clone(),
        ListenConfig {
            tcp: Some("127.0.0.1:0".into()),
            token: Some(TOKEN.into()),
            ..ListenConfig::default()
        },
    )
    .await
    .unwrap();
    let addr = listener.tcp_addr().unwrap();
    let (code, message, took) = first_frame_answer(addr, &huge_first_frame()).await;
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (code, _, _) = first_frame_answer(addr, &compressed_first_frame()).await;
    assert_eq!(code, ErrorCode::Malformed);

    // And it still serves a peer with the token.
    let a = open(dir.path(), "a");
    let stop = CancellationToken::new();
    let client = spawn_client(a.clone(), addr, &stop).await;
    let id = a.insert("notes", [("via", "listener")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        hub.get("notes", id).unwrap().is_some()
    })
    .await;
    stop.cancel();
    client.await.unwrap();
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anonymous_relay_refuses_a_large_first_websocket_message_early() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::None).await;
    // The upgrade by hand, so that the socket can be written and read at once afterwards.
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let request = format!(
        "GET /v1/sync HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        relay.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        // Byte by byte: the relay's HELLO follows the head at once, and is for the reader.
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (rd, mut wr) = tcp.into_split();

    // A binary message announcing 4 MiB (masked with key 0, so the payload goes as it is),
    // of which only 200 KiB come; the connection stays open.
    let mut message = vec![0x82, 0x80 | 127];
    message.extend_from_slice(&(4u64 << 20).to_be_bytes());
    message.extend_from_slice(&[0; 4]);
    message.extend_from_slice(&vec![0u8; 200 * 1024]);
    assert!(message.len() > WS_FIRST_FRAME_READ_BYTES_MAX);
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        // The relay may reset the connection before it has taken everything.
        let _ = wr.write_all(&message).await;
        wr
    });

    let mut ws = WebSocketStream::from_raw_socket(
        tokio::io::join(rd, tokio::io::sink()),
        Role::Client,
        Some(websocket_config()),
    )
    .await;
    let mut dec = FrameDecoder::default();
    let mut error = None;
    let mut closed = false;
    // Far below the handshake timeout (10 s), after which the relay would end the session
    // with TIMEOUT instead.
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                WsMessage::Binary(b) => {
                    dec.push(&b);
                    while let Some(f) = dec.next_frame().unwrap() {
                        if let Message::Error { code, message, .. } =
                            decode_simple(f.kind, &f.payload).unwrap()
                        {
                            error = Some((code, message));
                        }
                    }
                }
                WsMessage::Close(_) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the relay refuses the first message before its end arrives");
    let took = t.elapsed();
    let (code, message) = error.expect("an ERROR frame");
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(
        message.contains("first frame") && message.contains(&FIRST_FRAME_BYTES_MAX.to_string()),
        "{message}"
    );
    assert!(closed, "a WebSocket close follows the ERROR");
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(ws);
    drop(within(Duration::from_secs(10), writer).await.unwrap());

    // Counted as any refused first frame is; and the relay still syncs a client.
    within(Duration::from_secs(10), async {
        loop {
            let metrics = http(relay.addr, "GET", "/metrics", &[], "").await.body;
            if sessions_closed(&metrics, "protocol_error") == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let id = a
        .insert("notes", [("after", "a large first message")])
        .unwrap();
    let ws = connect_ws(relay.addr, None).await.unwrap();
    within(
        Duration::from_secs(10),
        run_session(
            a.clone(),
            WsStream::new(ws),
            SessionConfig::default(),
            DriverOptions::once(),
        ),
    )
    .await
    .unwrap();
    assert!(relay.db.get("notes", id).unwrap().is_some());
    relay.stop().await;
}

/// A client syncing `db` over raw TCP with the right token until `stop`.
async fn spawn_client(
    db: Arc<Database>,
    addr: std::net::SocketAddr,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cfg = SessionConfig {
        token: TOKEN.into(),
        ..SessionConfig::default()
    };
    let opts = DriverOptions {
        shutdown: stop.clone(),
        ..DriverOptions::default()
    };
    tokio::spawn(async move {
        let _ = run_session(db, tcp, cfg, opts).await;
    })
}
