//! Stalled clients on a TLS relay (a TCP connection that never starts the TLS handshake,
//! a TLS connection that never sends its HTTP request, one that sends its request head a byte
//! at a time, a TLS-over-TCP session that never says HELLO) are each closed within the
//! handshake timeout (twice it, where a TLS handshake and an HTTP head are both timed) and give
//! their connection slot back; while they hang, a well-behaved client still syncs. A
//! `POST /v1/query` whose body trickles in is answered 408 within the handshake timeout too.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::sync::SessionConfig;
use blazedb_net::transport::{connect, ConnectOptions, Endpoint, TlsClientOptions};
use blazedb_net::{run_session, DriverOptions};
use blazedb_relay::TlsFiles;
use common::{open, TestRelay, TOKEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

const HANDSHAKE_MS: u64 = 500;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixtures().join("tls_ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_relay(connections_max: usize) -> TestRelay {
    TestRelay::start(|c| {
        c.tls = Some(TlsFiles {
            cert: fixtures().join("tls_cert.pem"),
            key: fixtures().join("tls_key.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        });
        c.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.limits.connections_max = connections_max;
        c.limits.handshake_timeout_ms = HANDSHAKE_MS;
    })
    .await
}

/// The ways a client can stall before its session starts.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// TCP to the HTTPS port, no ClientHello.
    NoTlsHandshake,
    /// TCP to the TLS-over-TCP port, no ClientHello.
    NoTlsHandshakeRaw,
    /// TLS done on the HTTPS port, no HTTP request.
    NoHttpRequest,
    /// TLS done on the HTTPS port, the request head one byte every 50 ms, never finished.
    HeadByteByByte,
    /// TLS done on the TLS-over-TCP port, no HELLO.
    NoHello,
}

const STALLS: [Stall; 5] = [
    Stall::NoTlsHandshake,
    Stall::NoTlsHandshakeRaw,
    Stall::NoHttpRequest,
    Stall::HeadByteByByte,
    Stall::NoHello,
];

/// Open a stalled connection; resolves once the relay closed it, with how long that took
/// from the moment the stall began.
async fn stall(relay_http: SocketAddr, relay_tcp: SocketAddr, how: Stall) -> Duration {
    let addr = match how {
        Stall::NoTlsHandshakeRaw | Stall::NoHello => relay_tcp,
        _ => relay_http,
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    match how {
        Stall::NoTlsHandshake | Stall::NoTlsHandshakeRaw => {
            let mut tcp = tcp;
            while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        }
        Stall::NoHttpRequest | Stall::NoHello => {
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector().connect(name, tcp).await.unwrap();
            while tls.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        }
        Stall::HeadByteByByte => {
            let name = ServerName::try_from("localhost").unwrap();
            let tls = connector().connect(name, tcp).await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(tls);
            let head = b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-slow: ".repeat(64);
            let dribble = async {
                for b in head {
                    if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = dribble => unreachable!(),
                _ = async { while rd.read(&mut buf).await.is_ok_and(|n| n > 0) {} } => {}
            }
        }
    }
    start.elapsed()
}

/// Sync connections open on the TLS relay at `addr`, handshake done or not: the sum of the
/// `connections` gauge. (Not `/health`'s `connected_clients`, which counts only clients past
/// their HELLO: a session that never said it is not one, but holds its slot until it ends.)
async fn sessions_on(addr: SocketAddr) -> u64 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector().connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    // The relay closes after answering; a TLS peer may skip close_notify.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split("\r\n\r\n").nth(1).expect("a response body");
    let sum = common::metric_sum(body, "blazedb_relay_connections").expect("the gauge");
    sum as u64
}

/// One sync over WSS; true when the record arrived.
async fn sync_once(relay: &TestRelay, db: Arc<blazedb::Database>) -> bool {
    let endpoint: Endpoint = format!("wss://localhost:{}/v1/sync", relay.addr.port())
        .parse()
        .unwrap();
    let options = ConnectOptions {
        tls: TlsClientOptions {
            ca_pem: Some(fixtures().join("tls_ca.pem")),
            ..TlsClientOptions::default()
        },
        bearer_token: Some(TOKEN.into()),
        ..ConnectOptions::default()
    };
    let Ok(stream) = connect(&endpoint, &options).await else {
        return false;
    };
    let run = run_session(db, stream, SessionConfig::default(), DriverOptions::once());
    matches!(
        tokio::time::timeout(Duration::from_secs(10), run).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_bounded_and_do_not_block_others() {
    const EACH: usize = 8;
    let relay = tls_relay(EACH * STALLS.len() + 1).await;
    let id = relay.db.insert("notes", [("text", "hi")]).unwrap();
    let tcp_addr = relay.tcp_addr.unwrap();
    let mut stalled = JoinSet::new();
    for how in STALLS {
        for _ in 0..EACH {
            let http = relay.addr;
            stalled.spawn(async move { (how, stall(http, tcp_addr, how).await) });
        }
    }
    // While they all hang, a well-behaved client takes the last slot and syncs.
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "good");
    assert!(
        sync_once(&relay, db.clone()).await,
        "the good client synced"
    );
    assert!(db.get("notes", id).unwrap().is_some());

    // Each stalled connection is closed by the relay, within twice the handshake timeout
    // (TLS, then the HTTP head) and a margin for a busy machine.
    let bound = Duration::from_millis(2 * HANDSHAKE_MS + 1_500);
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        let mut ended = Vec::new();
        while let Some(r) = stalled.join_next().await {
            ended.push(r.unwrap());
        }
        ended
    })
    .await
    .expect("every stalled connection was closed by the relay");
    for (how, took) in all {
        assert!(took <= bound, "{how:?} held its connection for {took:?}");
    }

    // Their slots are free again: as many good clients as the limit allows sync at once.
    // (A session the relay ends keeps its slot until the client has closed too: wait for
    // the relay to have none left, then take every slot.)
    let start = Instant::now();
    while sessions_on(relay.addr).await > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "sessions left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dbs: Vec<_> = (0..EACH * STALLS.len() + 1)
        .map(|k| open(dir.path(), &format!("g{k}")))
        .collect();
    let relay = Arc::new(relay);
    let mut syncs = JoinSet::new();
    for db in dbs {
        let relay = relay.clone();
        syncs.spawn(async move { sync_once(&relay, db).await });
    }
    let ok = syncs.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(ok, EACH * STALLS.len() + 1, "every slot was given back");
    Arc::into_inner(relay).unwrap().stop().await;
}

/// A query body sent a byte at a time (each byte resets the idle timer, and the request head
/// was complete, so the head timeout is over) is cut off after the handshake timeout with
/// `408`, not read for as long as the client keeps dribbling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_query_body_is_cut_off() {
    let relay = TestRelay::start(|c| c.limits.handshake_timeout_ms = HANDSHAKE_MS).await;
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /v1/query HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 60000\r\n\r\n{{\"collection\": \""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let dribble = async {
        loop {
            if wr.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::future::pending::<()>().await
    };
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            _ = dribble => unreachable!(),
            _ = read => {}
        }
    })
    .await
    .expect("the relay kept reading the trickled body");
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took <= Duration::from_millis(HANDSHAKE_MS + 1_500),
        "cut off after {took:?}"
    );
    relay.stop().await;
}
