//! Besides WebSocket, the relay serves raw protocol frames over TCP (`--tcp-listen`) and a
//! Unix socket (`--unix`), with the token in HELLO: clients on all transports sync with each
//! other, and a wrong token in HELLO ends the session with `AUTH_FAILED` before any data
//! flows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb::Database;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport};
use common::{
    auth_failures, http, metric, metric_sum, open, sessions_closed, wait_until, TestRelay, TOKEN,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn spawn<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    db: Arc<Database>,
    io: T,
    token: &str,
    stop: &CancellationToken,
) -> JoinHandle<Result<SessionReport, NetError>> {
    let cfg = SessionConfig {
        token: token.into(),
        ..SessionConfig::default()
    };
    let opts = DriverOptions {
        shutdown: stop.clone(),
        ..DriverOptions::default()
    };
    tokio::spawn(run_session(db, io, cfg, opts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_and_unix_clients_sync_and_bad_hello_tokens_are_refused() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("relay.sock");
    let s = sock.clone();
    let relay = TestRelay::start(move |c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.unix = Some(s);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, intruder) = (
        open(dir.path(), "a"),
        open(dir.path(), "b"),
        open(dir.path(), "intruder"),
    );
    let stop = CancellationToken::new();
    let tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    let ta = spawn(a.clone(), tcp, TOKEN, &stop);
    let unix = UnixStream::connect(&sock).await.unwrap();
    let tb = spawn(b.clone(), unix, TOKEN, &stop);

    let id = a.insert("notes", [("via", "tcp")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        b.get("notes", id).unwrap().is_some()
    })
    .await;
    let back = b.insert("notes", [("via", "unix")]).unwrap();
    wait_until(Duration::from_secs(10), || {
        a.get("notes", back).unwrap().is_some()
    })
    .await;

    // A wrong token in HELLO: AUTH_FAILED, and nothing moved either way.
    intruder.insert("notes", [("via", "intruder")]).unwrap();
    let tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    let e = spawn(intruder.clone(), tcp, "wrong", &stop)
        .await
        .unwrap()
        .unwrap_err();
    match &e {
        NetError::Sync { error, report } => {
            assert_eq!(error.code, ErrorCode::AuthFailed);
            assert!(
                error.remote && error.message.contains("invalid token"),
                "{e}"
            );
            assert_eq!(report.stats.cells_received, 0);
            assert_eq!(report.stats.cells_sent, 0);
        }
        other => panic!("expected AUTH_FAILED, got {other}"),
    }
    let unix = UnixStream::connect(&sock).await.unwrap();
    let e = spawn(intruder.clone(), unix, "", &stop)
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("missing credentials"), "{e}");
    assert_eq!(intruder.count("notes").unwrap(), 1);
    assert_eq!(relay.db.count("notes").unwrap(), 2);

    // The relay counts a session, and stops counting its connection, when its task ends,
    // which may be just after the client saw the error (the two a moment apart).
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if sessions_closed(&m, "auth_failed") == Some(2.0)
            && metric(&m, "blazedb_relay_connections{transport=\"tcp\"}") == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The wrong token; the missing one is no failure (its session still closed
    // `auth_failed`).
    assert_eq!(auth_failures(&m, "invalid"), Some(1.0), "{m}");
    assert_eq!(
        metric_sum(&m, "blazedb_relay_auth_failures_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sessions_closed(&m, "auth_failed"), Some(2.0), "{m}");
    assert_eq!(
        metric(&m, "blazedb_relay_connections{transport=\"tcp\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "blazedb_relay_connections{transport=\"unix\"}"),
        Some(1.0)
    );
    stop.cancel();
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();
    relay.stop().await;
    assert!(!sock.exists(), "the socket file is removed on shutdown");
}

/// Over raw TCP the credential comes in HELLO, so the relay's own HELLO (its node id and
/// feed position) waits for it: a peer with a wrong token reads the refusal and nothing
/// else; one with the right token then gets the relay's HELLO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_hello_waits_for_the_peers_credential() {
    use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
    use blazedb::sync::message::{decode_simple, encode_simple, kind};
    use blazedb::sync::{Hello, Message, SyncMode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let relay = TestRelay::start(|c| c.tcp_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    let client = open(dir.path(), "client");
    let relay_node = relay.db.node_id().to_string();
    let hello = |token: &str| {
        let (k, p) = encode_simple(&Message::Hello(Hello {
            version: blazedb::limits::PROTOCOL_VERSION,
            node: client.node_id(),
            last_seq: blazedb::Seq(0),
            mode: SyncMode::Both,
            server: false,
            caps: 0,
            token: token.into(),
        }));
        FrameEncoder::default().encode(k, false, &p)
    };
    // What the relay sends to a peer that says `token`, read until it closes or goes quiet.
    let frames_for = |token: &'static str| {
        let wire = hello(token);
        async move {
            let mut tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
            tcp.write_all(&wire).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let mut dec = FrameDecoder::default();
            dec.push(&got);
            let mut frames = Vec::new();
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push((f.kind, decode_simple(f.kind, &f.payload).ok()));
            }
            frames
        }
    };
    let refused = frames_for("wrong").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, kind::ERROR, "{refused:?}");
    assert!(
        !format!("{refused:?}").contains(&relay_node),
        "the refusal names the relay's node: {refused:?}"
    );
    let accepted = frames_for(TOKEN).await;
    match accepted.first() {
        Some((k, Some(Message::Hello(h)))) if *k == kind::HELLO => {
            assert_eq!(h.node, relay.db.node_id());
        }
        other => panic!("expected the relay's HELLO first, got {other:?}"),
    }
    relay.stop().await;
}

/// `frames_sent_total` / `bytes_sent_total` count what goes out: here, with no HELLO in
/// time, the only frame is the ERROR the relay's guard writes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_own_error_frame_is_counted_as_sent() {
    use blazedb::sync::frame::FrameDecoder;
    use blazedb::sync::message::{decode_simple, Message};
    use tokio::io::AsyncReadExt;

    let relay = TestRelay::start(|c| {
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.handshake_timeout_ms = 200;
    })
    .await;
    let mut tcp = TcpStream::connect(relay.tcp_addr.unwrap()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let mut dec = FrameDecoder::default();
    dec.push(&got);
    let f = dec.next_frame().unwrap().expect("an ERROR frame");
    assert!(
        matches!(
            decode_simple(f.kind, &f.payload),
            Ok(Message::Error {
                code: ErrorCode::Timeout,
                ..
            })
        ),
        "{:?}",
        decode_simple(f.kind, &f.payload)
    );
    assert!(dec.next_frame().unwrap().is_none());
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(
        metric(&m, "blazedb_relay_frames_sent_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "blazedb_relay_bytes_sent_total"),
        Some(got.len() as f64),
        "{m}"
    );
    relay.stop().await;
}
