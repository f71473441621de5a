//! A connection that sends messages faster than its token bucket allows gets ERROR
//! `RATE_LIMITED` and is disconnected; a normal client under the same limits keeps syncing,
//! and the metrics count the rate-limited session.

mod common;

use std::time::Duration;

use blazedb::sync::{ErrorCode, Message};
use common::{http, open, sessions_closed, wait_until, Client, RawClient, TestRelay, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flooding_client_is_cut_off_others_are_not() {
    let relay = TestRelay::start(|c| {
        c.limits.message_rate_per_s = 20;
        c.limits.message_burst = 30;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;

    let mut flood = RawClient::connect(relay.addr).await;
    flood.hello().await;
    for nonce in 0..200 {
        if flood.send(&Message::Ping { nonce }).await.is_err() {
            break;
        }
    }
    assert_eq!(flood.error_code().await, Some(ErrorCode::RateLimited));

    // The others were never affected.
    for i in 0..5 {
        let id = a.insert("notes", [("n", i)]).unwrap();
        wait_until(Duration::from_secs(5), || {
            b.get("notes", id).unwrap().is_some()
        })
        .await;
    }
    assert!(!ca.task.is_finished() && !cb.task.is_finished());
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(sessions_closed(&m, "rate_limited"), Some(1.0), "{m}");
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();
    relay.stop().await;
}

/// A client that sends without ever reading (here with no rate limit at all, which the
/// relay allows with `--message-rate 0`): the relay answered each PING with a PONG kept in
/// memory for good, 213 MB for 4 million PINGs on one connection. It now ends such a
/// session with `RATE_LIMITED` once `QUEUED_FRAMES_MAX` replies wait, and closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    use blazedb::limits::{PROTOCOL_VERSION, QUEUED_FRAMES_MAX};
    use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
    use blazedb::sync::message::{decode_simple, encode_simple, kind};
    use blazedb::sync::{Hello, SyncMode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("relay.sock");
    let path = sock.clone();
    let relay = TestRelay::start(move |c| {
        c.unix = Some(path);
        c.limits.message_rate_per_s = 0;
    })
    .await;
    let mut conn = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let mut enc = FrameEncoder::default();
    let mut frame = |m: &Message| {
        let (k, p) = encode_simple(m);
        enc.encode(k, false, &p)
    };
    let mut wire = frame(&Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        node: blazedb::NodeId([0x5a; 16]),
        last_seq: blazedb::Seq(0),
        mode: SyncMode::Both,
        server: false,
        caps: 0,
        token: TOKEN.into(),
    }));
    // Far more PINGs than the socket buffers, the driver's output buffer and the bound
    // together can hold as PONGs.
    let sent = 200 * QUEUED_FRAMES_MAX as u64;
    for nonce in 0..sent {
        wire.extend(frame(&Message::Ping { nonce }));
    }
    // Writing may fail once the relay closes the connection: that is the point.
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.write_all(&wire)).await;
    let mut decoder = FrameDecoder::default();
    let (mut pongs, mut error) = (0u64, None);
    let mut buf = vec![0u8; 1 << 16];
    let read_all = async {
        loop {
            let n = match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            while let Some(f) = decoder.next_frame().unwrap() {
                match f.kind {
                    kind::PONG => pongs += 1,
                    kind::ERROR => error = Some(decode_simple(f.kind, &f.payload).unwrap()),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the relay closes the connection");
    match error {
        Some(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("expected ERROR RATE_LIMITED, got {other:?} after {pongs} PONGs"),
    }
    assert!(pongs < sent / 2, "{pongs} of {sent} PINGs answered");
    relay.stop().await;
}
