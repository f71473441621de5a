//! Clients failing in a loop over real sockets on 127.0.0.1 make `blazedb serve` log at most
//! `CLOSE_LOG_LINES_PER_WINDOW` lines per event, reason and window, plus one
//! `<event>_suppressed` line per reason saying how many it left out and from which address
//! (also for the last window, at shutdown), while `/metrics` counts every failure: hundreds
//! of HELLOs with a wrong token and garbled frames over raw TCP (`session_closed`; before,
//! every failure was a line), hundreds of WebSocket upgrades and `/v1/query` requests with a
//! wrong or no token (`request_refused`; before, none was logged at all, the token never is),
//! requests from an origin not allowed and connections over the per-address limit
//! (`request_refused`, `connection_refused`; before, not logged), and `/v1/query` requests
//! refused before they run — bad JSON, a bad expression, a body too large or too slow
//! (`request_refused`, without the body; before, not logged), and attempts refused unread for
//! their address's failed credentials (`request_refused`, `auth_rate_limited`).

mod net_common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blazedb::sync::frame::FrameEncoder;
use blazedb::sync::message::encode_simple;
use blazedb::sync::{Hello, Message, SyncMode};
use blazedb_relay::limits::{CLOSE_LOG_LINES_PER_WINDOW, CLOSE_LOG_WINDOW_MS};
use serde_json::Value as Json;

use net_common::{blazedb, export, put, start_relay_announced};

const TOKEN: &str = "the-right-token-of-the-relay";
/// Failed handshakes with a wrong token, at least.
const BAD_TOKENS_MIN: u64 = 500;

/// A HELLO frame carrying `token`.
fn hello(token: &str) -> Vec<u8> {
    let (kind, payload) = encode_simple(&Message::Hello(Hello {
        version: blazedb::limits::PROTOCOL_VERSION,
        node: blazedb::NodeId([7; 16]),
        last_seq: blazedb::Seq(0),
        mode: SyncMode::Both,
        server: false,
        caps: 0,
        token: token.into(),
    }));
    FrameEncoder::default().encode(kind, false, &payload)
}

/// Connect, send `bytes`, and read until the relay closes the connection.
fn attempt(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut sink = Vec::new();
    // The relay may reset the connection after its ERROR frame: either way it is over.
    let _ = s.read_to_end(&mut sink);
}

/// Send `request` on `s` and read the answer (an HTTP/1.1 response with a `content-length`):
/// its status and body; `None` if the connection ends first.
fn exchange(s: &mut TcpStream, request: &str) -> Option<(u16, String)> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })?;
            if body.len() >= length {
                let status = head.split(' ').nth(1)?.parse().unwrap();
                return Some((status, body[..length].to_owned()));
            }
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// `request` on a new connection to `http`: the answer's status and body.
fn request(http: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(http).unwrap();
    exchange(&mut s, request).expect("an answer")
}

/// A WebSocket upgrade request for `target` with `headers` (each ending in CRLF).
fn upgrade(http: &str, target: &str, headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nhost: {http}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
    )
}

/// A metric's value in the relay's `/metrics` text.
fn metric(http: &str, name: &str) -> f64 {
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The relay's log lines (one JSON object a line), but for the lines a start writes whatever
/// clients do (`store_created`, for the relay's new store; `relay_started`).
fn log_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .filter(|l| {
            !matches!(l["event"].as_str(), Some("store_created" | "relay_started"))
                && l["kind"] != "secret_in_command_line"
        })
        .collect()
}

/// The windows of the throttled log a relay started at `started` and stopped now went
/// through (they start with the relay), plus the one shutdown ends.
fn windows_since(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64 / CLOSE_LOG_WINDOW_MS + 1
}

/// The `event` lines for `reason`, the sum of what the summaries (`<event>_suppressed`) for
/// `reason` say they left out, and how many summaries there are; checks each summary names
/// the client's address, and that there are at most `CLOSE_LOG_LINES_PER_WINDOW` full lines
/// and one summary per window, and at least one summary.
fn logged_and_suppressed(
    lines: &[Json],
    event: &str,
    reason: &str,
    windows: u64,
) -> (u64, u64, usize) {
    let full = lines
        .iter()
        .filter(|l| l["event"] == event && l["reason"] == reason)
        .count() as u64;
    let summary = format!("{event}_suppressed");
    let summaries: Vec<&Json> = lines
        .iter()
        .filter(|l| l["event"] == summary.as_str() && l["reason"] == reason)
        .collect();
    for s in &summaries {
        assert_eq!(s["clients"], serde_json::json!(["127.0.0.1"]), "{s}");
        assert_eq!(s["window_ms"], CLOSE_LOG_WINDOW_MS, "{s}");
    }
    let suppressed = summaries
        .iter()
        .map(|s| s["suppressed"].as_u64().unwrap())
        .sum();
    let per_window = u64::from(CLOSE_LOG_LINES_PER_WINDOW);
    assert!(
        full <= per_window * windows && summaries.len() as u64 <= windows,
        "{event} {reason}: {full} full lines and {} summaries in {windows} window(s)",
        summaries.len()
    );
    assert!(!summaries.is_empty(), "{event} {reason}: no summary line");
    (full, suppressed, summaries.len())
}

#[test]
fn handshakes_failing_in_a_loop_are_logged_a_few_times_and_summed_up_but_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    // Without the failure limit per address: it would refuse the flood unread after ten
    // tokens (`auth_rate_limited`), and the valid client from the same address with it.
    let (relay, v) = start_relay_announced(
        &data,
        &[
            "--token",
            TOKEN,
            "--tcp-listen",
            "127.0.0.1:0",
            "--max-auth-failures-per-address",
            "0",
        ],
        Some(&log),
    );
    let http = v["http"].as_str().unwrap().trim_start_matches("http://");
    let tcp = v["tcp"].as_str().unwrap().to_owned();

    let client = dir.path().join("client.db");
    let id = put(&client, "notes", r#"{"text": "through the flood"}"#);

    // Four clients fail in a loop (one attempt in five a frame that fails its checksum)
    // until the valid client below has synced and at least BAD_TOKENS_MIN tokens were
    // refused.
    let bad_hello = hello("a-wrong-token");
    let mut garbled = hello(TOKEN);
    *garbled.last_mut().unwrap() ^= 0xff;
    let synced = AtomicBool::new(false);
    let (bad_tokens, garbled_frames) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0.. {
                    if synced.load(Ordering::Relaxed)
                        && bad_tokens.load(Ordering::Relaxed) >= BAD_TOKENS_MIN
                    {
                        break;
                    }
                    if i % 5 == 4 {
                        attempt(&tcp, &garbled);
                        garbled_frames.fetch_add(1, Ordering::Relaxed);
                    } else {
                        attempt(&tcp, &bad_hello);
                        bad_tokens.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // The flood has begun when the first refusals are counted, and goes on until the
        // valid client is done.
        while bad_tokens.load(Ordering::Relaxed) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = blazedb()
            .arg("sync")
            .arg(&client)
            .arg(format!("tcp://{tcp}"))
            .args(["--once", "--token", TOKEN])
            .output()
            .unwrap();
        synced.store(true, Ordering::Relaxed);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let (bad_tokens, garbled_frames) = (bad_tokens.into_inner(), garbled_frames.into_inner());
    let relay_db = data.join(blazedb_relay::limits::STORE_FILE_NAME);
    assert!(
        export(&relay_db, "notes").contains_key(&id),
        "the valid client's record reached the relay"
    );

    // Every failure is counted. A client reads the relay's close a moment before the
    // relay's task counts it: wait for the counts to get there, then compare exactly.
    let closed = |reason: &str| {
        metric(
            http,
            &format!("blazedb_relay_sessions_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (closed("auth_failed") as u64) < bad_tokens
        || (closed("protocol_error") as u64) < garbled_frames
    {
        assert!(
            Instant::now() < deadline,
            "the relay did not count every failure"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(http, "blazedb_relay_auth_failures_total{kind=\"invalid\"}"),
        bad_tokens as f64
    );
    assert_eq!(closed("auth_failed"), bad_tokens as f64);
    assert_eq!(closed("protocol_error"), garbled_frames as f64);

    // SIGTERM: the relay ends the last window itself and prints its summary.
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = log_lines(&text);
    let windows = windows_since(started);
    let per_window = u64::from(CLOSE_LOG_LINES_PER_WINDOW);
    for (reason, failures) in [
        ("auth_failed", bad_tokens),
        ("protocol_error", garbled_frames),
    ] {
        let (full, suppressed, _) =
            logged_and_suppressed(&lines, "session_closed", reason, windows);
        assert_eq!(
            full + suppressed,
            failures,
            "{reason}: every failure is a line or in a summary's count:\n{text}"
        );
    }
    assert!(
        lines.len() as u64 <= 2 * (per_window + 1) * windows,
        "{} lines:\n{text}",
        lines.len()
    );
}

/// A wrong token, which must never be written to the log.
const BAD_TOKEN: &str = "wrong-token-8d41c07e5a";

#[test]
fn credentials_refused_over_http_in_a_loop_are_logged_a_few_times_and_summed_up_but_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    // Without the failure limit per address, which would answer most of the loop `429`
    // unread (`auth_rate_limited`): this test is about the log of refused credentials.
    let (relay, v) = start_relay_announced(
        &dir.path().join("relay"),
        &["--token", TOKEN, "--max-auth-failures-per-address", "0"],
        Some(&log),
    );
    let http = v["http"].as_str().unwrap().trim_start_matches("http://");

    // Four clients, each a hundred times, on a new connection each time: a WebSocket upgrade
    // with a wrong token in the header, one with it as `?token=`, one with no token, and a
    // query with a wrong token. Every one is refused with a 401 before anything else.
    let query = r#"{"collection": "notes"}"#;
    let attempts = [
        upgrade(
            http,
            "/v1/sync",
            &format!("authorization: Bearer {BAD_TOKEN}\r\n"),
        ),
        upgrade(http, &format!("/v1/sync?token={BAD_TOKEN}"), ""),
        upgrade(http, "/v1/sync", ""),
        format!(
            "POST /v1/query HTTP/1.1\r\nhost: {http}\r\nauthorization: Bearer {BAD_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{query}",
            query.len()
        ),
    ];
    const CLIENTS: usize = 4;
    const ATTEMPTS_PER_CLIENT: usize = 100;
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let attempts = &attempts;
            s.spawn(move || {
                for i in 0..ATTEMPTS_PER_CLIENT {
                    let (status, body) = request(http, &attempts[(c + i) % attempts.len()]);
                    assert_eq!(status, 401, "{body}");
                    assert!(body.contains(r#""code":"auth_failed""#), "{body}");
                }
            });
        }
    });
    let refused = (CLIENTS * ATTEMPTS_PER_CLIENT) as u64;
    // Counted before the 401 is sent: every refusal, and as failed credentials the wrong
    // tokens (three attempts in four; none presented is no failure).
    assert_eq!(
        metric(
            http,
            "blazedb_relay_requests_refused_total{reason=\"auth_failed\"}"
        ),
        refused as f64
    );
    assert_eq!(
        metric(http, "blazedb_relay_auth_failures_total{kind=\"invalid\"}"),
        (refused * 3 / 4) as f64
    );
    assert_eq!(
        metric(http, "blazedb_relay_auth_failures_total{kind=\"expired\"}"),
        0.0
    );

    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(BAD_TOKEN),
        "the token is in the log:\n{text}"
    );
    let lines = log_lines(&text);
    let windows = windows_since(started);
    let (full, suppressed, _) =
        logged_and_suppressed(&lines, "request_refused", "auth_failed", windows);
    assert_eq!(
        full + suppressed,
        refused,
        "every refusal is a line or in a summary's count:\n{text}"
    );
    for l in lines.iter().filter(|l| l["event"] == "request_refused") {
        assert!(
            l["endpoint"] == "/v1/sync" || l["endpoint"] == "/v1/query",
            "the path alone: {l}"
        );
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert_eq!(l["status"], 401, "{l}");
        let message = l["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid token") || message.starts_with("missing credentials"),
            "{l}"
        );
    }
    let per_window = u64::from(CLOSE_LOG_LINES_PER_WINDOW);
    assert!(
        lines.len() as u64 <= (per_window + 1) * windows,
        "{} lines:\n{text}",
        lines.len()
    );
}

/// Past `--max-auth-failures-per-address`, an address's attempts are refused unread (`429
/// auth_rate_limited`, the right token too) and logged like the other refusals: a few lines
/// a window and a summary, every one counted, the token never.
#[test]
fn attempts_refused_for_their_address_are_logged_a_few_times_and_summed_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    let (relay, v) = start_relay_announced(
        &dir.path().join("relay"),
        &["--token", TOKEN, "--max-auth-failures-per-address", "2"],
        Some(&log),
    );
    let http = v["http"].as_str().unwrap().trim_start_matches("http://");
    let query = |token: &str| {
        let body = r#"{"collection": "notes"}"#;
        format!(
            "POST /v1/query HTTP/1.1\r\nhost: {http}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for _ in 0..2 {
        let (status, body) = request(http, &query(BAD_TOKEN));
        assert_eq!(status, 401, "{body}");
    }
    const REFUSED: u64 = 50;
    let sync = upgrade(
        http,
        "/v1/sync",
        &format!("authorization: Bearer {TOKEN}\r\n"),
    );
    for i in 0..REFUSED {
        let attempt = if i % 2 == 0 {
            query(TOKEN)
        } else {
            sync.clone()
        };
        let (status, body) = request(http, &attempt);
        assert_eq!(status, 429, "{body}");
        assert!(body.contains(r#""code":"auth_rate_limited""#), "{body}");
    }
    assert_eq!(
        metric(
            http,
            "blazedb_relay_requests_refused_total{reason=\"auth_rate_limited\"}"
        ),
        REFUSED as f64
    );
    assert_eq!(
        metric(http, "blazedb_relay_auth_failures_total{kind=\"invalid\"}"),
        2.0
    );

    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "the token is in the log:\n{text}");
    let lines = log_lines(&text);
    let windows = windows_since(started);
    let (full, suppressed, _) =
        logged_and_suppressed(&lines, "request_refused", "auth_rate_limited", windows);
    assert_eq!(full + suppressed, REFUSED, "{text}");
    for l in lines
        .iter()
        .filter(|l| l["reason"] == "auth_rate_limited" && l["event"] == "request_refused")
    {
        assert_eq!(l["status"], 429, "{l}");
        let message = l["message"].as_str().unwrap();
        assert!(
            message.starts_with("too many failed authentication attempts from your address"),
            "{l}"
        );
    }
}

#[test]
fn origins_refused_and_connections_over_the_limit_in_a_loop_are_logged_a_few_times_and_summed_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    let (relay, v) = start_relay_announced(
        &dir.path().join("relay"),
        &[
            "--token",
            TOKEN,
            "--origin",
            "https://app.example.com",
            "--max-connections-per-address",
            "1",
        ],
        Some(&log),
    );
    let http = v["http"].as_str().unwrap().trim_start_matches("http://");

    // A page of another site asks to sync again and again on one keep-alive connection,
    // which holds the one connection 127.0.0.1 may have; between its requests, another
    // client connects and is turned away. Every answer is counted by what it was: should the
    // keep-alive connection be closed (idle on a stalled machine), the next one may get the
    // slot or be refused in turn.
    let from_elsewhere = upgrade(
        http,
        &format!("/v1/sync?token={TOKEN}"),
        "origin: https://evil.example.com\r\n",
    );
    let (mut origin_refused, mut over_limit) = (0u64, 0u64);
    let mut count = |status: u16, body: &str| match status {
        403 => {
            assert!(body.contains("origin_not_allowed"), "{body}");
            origin_refused += 1;
        }
        503 => {
            assert!(body.contains("too_many_connections_from_address"), "{body}");
            over_limit += 1;
        }
        _ => panic!("{status} {body}"),
    };
    let mut page: Option<TcpStream> = None;
    for _ in 0..200 {
        loop {
            let conn = page.get_or_insert_with(|| TcpStream::connect(http).unwrap());
            match exchange(conn, &from_elsewhere) {
                Some((403, body)) => break count(403, &body),
                Some((status, body)) => count(status, &body),
                None => {}
            }
            page = None;
        }
        let (status, body) = request(http, &from_elsewhere);
        count(status, &body);
    }
    drop(page);
    // Until the relay has seen the page's connection close, `/metrics` is refused too.
    let metrics = loop {
        let (status, body) = request(
            http,
            "GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        );
        if status == 200 {
            break body;
        }
        count(status, &body);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        origin_refused >= 200 && over_limit >= 100,
        "{origin_refused} {over_limit}"
    );
    let refused_metric = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("blazedb_relay_connections_refused_total{limit=\"per_address\"} ")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(refused_metric.parse::<f64>().unwrap(), over_limit as f64);

    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "the token is in the log:\n{text}");
    let lines = log_lines(&text);
    let windows = windows_since(started);
    for (event, reason, refused) in [
        ("request_refused", "origin_not_allowed", origin_refused),
        (
            "connection_refused",
            "too_many_connections_from_address",
            over_limit,
        ),
    ] {
        let (full, suppressed, _) = logged_and_suppressed(&lines, event, reason, windows);
        assert_eq!(
            full + suppressed,
            refused,
            "{event} {reason}: every refusal is a line or in a summary's count:\n{text}"
        );
    }
    let origin_line = lines
        .iter()
        .find(|l| l["event"] == "request_refused")
        .unwrap();
    assert_eq!(origin_line["endpoint"], "/v1/sync", "{origin_line}");
    assert_eq!(origin_line["status"], 403, "{origin_line}");
    assert!(
        origin_line["message"]
            .as_str()
            .unwrap()
            .contains("--origin https://evil.example.com"),
        "{origin_line}"
    );
    let per_window = u64::from(CLOSE_LOG_LINES_PER_WINDOW);
    assert!(
        lines.len() as u64 <= 2 * (per_window + 1) * windows,
        "{} lines:\n{text}",
        lines.len()
    );
}

#[test]
fn queries_refused_before_they_run_are_logged_without_their_body_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    let (relay, v) =
        start_relay_announced(&dir.path().join("relay"), &["--token", TOKEN], Some(&log));
    let http = v["http"].as_str().unwrap().trim_start_matches("http://");
    let post = |body: &str| {
        format!(
            "POST /v1/query HTTP/1.1\r\nhost: {http}\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // Text of the bodies that must not reach the log: a JSON error repeats the value it
    // could not take, an expression's error the expression.
    const SECRET: &str = "body-text-7f3a9c";
    const BAD_JSON: u64 = 30;
    for _ in 0..BAD_JSON {
        let (status, body) = request(
            http,
            &post(&format!(
                r#"{{"collection": "notes", "limit": "{SECRET}"}}"#
            )),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("invalid_request") && body.contains(SECRET),
            "{body}"
        );
    }
    let (status, body) = request(
        http,
        &post(&format!(
            r#"{{"collection": "notes", "where": "n == ({SECRET}"}}"#
        )),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_expression"), "{body}");
    let (status, body) = request(
        http,
        &post(&format!(
            r#"{{"collection": "notes", "where": "{}"}}"#,
            "x".repeat(70_000)
        )),
    );
    assert_eq!(status, 413, "{body}");
    // A body that stops short: answered 408 after the handshake timeout (10 s).
    let mut s = TcpStream::connect(http).unwrap();
    let head = post(r#"{"collection": "notes"}"#);
    let short = &head[..head.len() - 5];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(short.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let count = |reason: &str| {
        metric(
            http,
            &format!("blazedb_relay_requests_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("invalid_request"), BAD_JSON as f64);
    assert_eq!(count("invalid_expression"), 1.0);
    assert_eq!(count("body_too_large"), 1.0);
    assert_eq!(count("body_timeout"), 1.0);

    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "the token is in the log:\n{text}");
    assert!(!text.contains(SECRET), "the body is in the log:\n{text}");
    let lines = log_lines(&text);
    let windows = windows_since(started);
    let (full, suppressed, _) =
        logged_and_suppressed(&lines, "request_refused", "invalid_request", windows);
    assert_eq!(full + suppressed, BAD_JSON, "{text}");
    for (reason, status, message) in [
        ("invalid_request", 400, None),
        ("invalid_expression", 400, None),
        ("body_too_large", 413, Some("the query body is limited to")),
        (
            "body_timeout",
            408,
            Some("the query body did not arrive within"),
        ),
    ] {
        let line = lines
            .iter()
            .find(|l| l["event"] == "request_refused" && l["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} line:\n{text}"));
        assert_eq!(line["endpoint"], "/v1/query", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert_eq!(line["status"], status, "{line}");
        match message {
            Some(m) => assert!(line["message"].as_str().unwrap().starts_with(m), "{line}"),
            None => assert!(line.get("message").is_none(), "{line}"),
        }
    }
}
