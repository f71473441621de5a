//! `blazedb serve --trusted-proxy 127.0.0.1/32`: requests from that proxy count under the
//! address their `X-Forwarded-For` names, so one forwarded client's wrong tokens get it alone
//! refused (429) while another forwarded client is served, and the log names the client; a
//! `--trusted-proxy` that is not an address or a CIDR range stops the relay at startup with a
//! usage error (exit 2) naming the flag.

mod net_common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use net_common::{blazedb, log_events, start_relay_announced};

const TOKEN: &str = "s3cret-relay-token";

/// `POST /v1/query` for the collection `notes` with `token`, forwarded for `client`; the
/// status code.
fn query_forwarded_for(addr: &str, token: &str, client: &str) -> u16 {
    let body = r#"{"collection": "notes"}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/query HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         authorization: Bearer {token}\r\nx-forwarded-for: {client}\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {out}"))
}

#[test]
fn a_forwarded_client_is_refused_under_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let (relay, started) = start_relay_announced(
        &dir.path().join("data"),
        &[
            "--token",
            TOKEN,
            "--trusted-proxy",
            "127.0.0.1/32",
            "--max-auth-failures-per-address",
            "2",
        ],
        Some(&log),
    );
    let addr = started["http"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();

    for _ in 0..2 {
        assert_eq!(
            query_forwarded_for(&addr, "wrong-token", "203.0.113.7"),
            401
        );
    }
    assert_eq!(query_forwarded_for(&addr, TOKEN, "203.0.113.7"), 429);
    assert_eq!(query_forwarded_for(&addr, TOKEN, "198.51.100.9"), 200);

    let (code, _) = relay.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = log_events(&log, "request_refused");
    assert_eq!(refused.len(), 3, "{text}");
    for l in &refused {
        assert_eq!(l["client"], "203.0.113.7", "{text}");
    }
    assert_eq!(refused[2]["reason"], "auth_rate_limited", "{text}");
}

#[test]
fn a_trusted_proxy_that_is_no_address_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = blazedb()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/33",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--trusted-proxy")
            && err.contains("\"10.0.0.0/33\" is not an IP address or a CIDR range"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing is created");
}
