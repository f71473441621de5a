//! Clients failing their handshake in a loop over real TCP on 127.0.0.1 — hundreds of HELLOs
//! with a wrong token and garbled frames — make `blazedb serve` log at most
//! `CLOSE_LOG_LINES_PER_WINDOW` `session_closed` lines per reason and window, plus one
//! `session_closed_suppressed` line per reason saying how many it left out and from which
//! address (also for the last window, at shutdown); `/metrics` counts every failure, and a
//! client with the right token syncs meanwhile. Before, every failure was a line.

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

const TOKEN: &str = "the-right-token";
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

/// The `session_closed` lines for `reason`, and the sum of what the summaries for `reason`
/// say they left out (checking each summary names the client's address).
fn logged_and_suppressed(lines: &[Json], reason: &str) -> (u64, u64, usize) {
    let full = lines
        .iter()
        .filter(|l| l["event"] == "session_closed" && l["reason"] == reason)
        .count() as u64;
    let summaries: Vec<&Json> = lines
        .iter()
        .filter(|l| l["event"] == "session_closed_suppressed" && l["reason"] == reason)
        .collect();
    for s in &summaries {
        assert_eq!(s["clients"], serde_json::json!(["127.0.0.1"]), "{s}");
        assert_eq!(s["window_ms"], CLOSE_LOG_WINDOW_MS, "{s}");
    }
    let suppressed = summaries
        .iter()
        .map(|s| s["suppressed"].as_u64().unwrap())
        .sum();
    (full, suppressed, summaries.len())
}

#[test]
fn handshakes_failing_in_a_loop_are_logged_a_few_times_and_summed_up_but_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let log = dir.path().join("relay.log");
    let started = Instant::now();
    let (relay, v) = start_relay_announced(
        &data,
        &["--token", TOKEN, "--tcp-listen", "127.0.0.1:0"],
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
        metric(http, "blazedb_relay_auth_failures_total"),
        bad_tokens as f64
    );
    assert_eq!(closed("auth_failed"), bad_tokens as f64);
    assert_eq!(closed("protocol_error"), garbled_frames as f64);

    // SIGTERM: the relay ends the last window itself and prints its summary.
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    // The windows this run spanned (they start with the relay), plus the one shutdown ends.
    let windows = started.elapsed().as_millis() as u64 / CLOSE_LOG_WINDOW_MS + 1;
    let per_window = u64::from(CLOSE_LOG_LINES_PER_WINDOW);
    for (reason, failures) in [
        ("auth_failed", bad_tokens),
        ("protocol_error", garbled_frames),
    ] {
        let (full, suppressed, summaries) = logged_and_suppressed(&lines, reason);
        assert!(
            full <= per_window * windows && summaries as u64 <= windows,
            "{reason}: {full} full lines and {summaries} summaries in {windows} window(s):\n{text}"
        );
        assert!(summaries >= 1, "{reason}: no summary line:\n{text}");
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
