//! The relay's token and JWT secret, and a client's token, can be given in a file or an
//! environment variable, so that no other user of the machine reads them in the process list
//! (`/proc/PID/cmdline`); empty secrets are refused with a clear message, and the old
//! `--token` / `--jwt-secret` flags still work but warn that the secret is visible. The
//! relay's token file may hold several tokens, one a line, and is read again when it changes.

mod net_common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use net_common::{
    blazedb, log_events, start_listener, start_relay, start_relay_announced, sync_once_status,
    wait_for_event, Daemon,
};

const TOKEN: &str = "a-relay-token-of-32-characters!!";

/// A request to the relay's HTTP address; the status code and the body.
fn http(addr: &str, request_line: &str, headers: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{request_line} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    (code, out)
}

/// `/v1/query` with `token` (none when `None`): its status code.
fn query_status(addr: &str, token: Option<&str>) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    http(addr, "POST /v1/query", &auth, r#"{"collection":"docs"}"#).0
}

/// The command line of a running process as the kernel shows it to every user.
fn cmdline(d: &Daemon) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", d.child.id())).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

fn addr_of(sync_url: &str) -> String {
    sync_url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/sync")
        .to_owned()
}

fn secret_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_relay_token_comes_from_a_file_and_stays_out_of_the_process_list() {
    let dir = tempfile::tempdir().unwrap();
    // `echo TOKEN > file` ends it with a newline, which is not part of the token.
    let file = secret_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let log = dir.path().join("relay.log");
    let (relay, url) = start_relay(
        &dir.path().join("data"),
        &["--token-file", file.to_str().unwrap()],
        Some(&log),
    );
    assert!(!cmdline(&relay).contains(TOKEN), "{}", cmdline(&relay));
    let addr = addr_of(&url);
    // 200: the file's newline is not part of the token.
    assert_eq!(query_status(&addr, Some(TOKEN)), 200);
    assert_eq!(query_status(&addr, Some(&TOKEN[1..])), 401);
    assert_eq!(query_status(&addr, None), 401);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains("secret_in_command_line"), "{stderr}");

    // A client presents the token from a file too, to the relay...
    let db = dir.path().join("client.db");
    let tfile = file.to_str().unwrap();
    let (code, stderr) = sync_once_status(&db, &url, &["--token-file", tfile]);
    assert_eq!(code, Some(0), "{stderr}");
    // ...and to `blazedb listen`, which reads its own from a file.
    let hub = dir.path().join("hub.db");
    let (listener, peer) =
        start_listener(&hub, &["--tcp", "127.0.0.1:0", "--token-file", tfile], None);
    assert!(!cmdline(&listener).contains(TOKEN));
    let sync = |token_file: &Path| {
        blazedb()
            .arg("sync")
            .arg(&db)
            .arg(&peer)
            .arg("--once")
            .arg("--token-file")
            .arg(token_file)
            .output()
            .unwrap()
    };
    let out = sync(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = secret_file(dir.path(), "wrong", "not-the-token-at-all-no-no-no\n");
    let out = sync(&wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUTH_FAILED"));
}

/// `--token-file` may hold several tokens, one a line, and the relay reads it again when it
/// changes: a token is rotated without a restart; a file caught empty keeps the tokens read
/// before; each reading is logged with the count, never with a token.
#[test]
fn the_relay_token_file_holds_several_tokens_and_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TOKEN, "the-next-relay-token-of-32-chars");
    let file = secret_file(dir.path(), "tokens", &format!("{old}\n"));
    let publish = |text: &str| {
        let tmp = secret_file(dir.path(), "tokens.new", text);
        std::fs::rename(tmp, &file).unwrap();
    };
    let log = dir.path().join("relay.log");
    let (_relay, url) = start_relay(
        &dir.path().join("data"),
        &["--token-file", file.to_str().unwrap()],
        Some(&log),
    );
    let addr = addr_of(&url);
    assert_eq!(query_status(&addr, Some(old)), 200);
    assert_eq!(query_status(&addr, Some(new)), 401);

    // The new token on a line of its own, blank lines and spaces around: both pass.
    publish(&format!("{old}\n\n   {new}  \n"));
    wait_for_event(&log, "tokens_reloaded");
    assert_eq!(log_events(&log, "tokens_reloaded")[0]["tokens"], 2);
    assert_eq!(query_status(&addr, Some(old)), 200);
    assert_eq!(query_status(&addr, Some(new)), 200);

    // A file caught empty changes nothing, and the log says what is wrong.
    publish("\n  \n");
    wait_for_event(&log, "tokens_unusable");
    let error = log_events(&log, "tokens_unusable")[0]["error"].to_string();
    assert!(
        error.contains("is empty") && error.contains("the tokens read before are still accepted"),
        "{error}"
    );
    assert_eq!(query_status(&addr, Some(old)), 200);
    assert_eq!(query_status(&addr, Some(new)), 200);

    // The old token taken out: refused from then on.
    publish(&format!("{new}\n"));
    wait_for_event_count(&log, "tokens_reloaded", 2);
    assert_eq!(log_events(&log, "tokens_reloaded")[1]["tokens"], 1);
    assert_eq!(query_status(&addr, Some(old)), 401);
    assert_eq!(query_status(&addr, Some(new)), 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(old) && !text.contains(new), "{text}");
}

#[test]
fn the_relay_secrets_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = blazedb();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("BLAZEDB_RELAY_TOKEN", TOKEN);
    let mut relay = Daemon::spawn("relay", cmd, None);
    let line = first_line(&mut relay);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = addr_of(v["sync"].as_str().unwrap());
    assert!(!cmdline(&relay).contains(TOKEN));
    assert_eq!(query_status(&addr, None), 401);
    assert_eq!(query_status(&addr, Some(TOKEN)), 200);
    drop(relay);

    // The JWT secret: from BLAZEDB_JWT_SECRET, or from a file.
    let secret = "a-jwt-secret-of-more-than-16-bytes";
    let mut cmd = blazedb();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("BLAZEDB_JWT_SECRET", secret);
    let log = dir.path().join("relay.log");
    let mut relay = Daemon::spawn("relay", cmd, Some(&log));
    first_line(&mut relay);
    assert!(!cmdline(&relay).contains(secret));
    // The relay says how it authenticates in its log (`/health` said it to anyone until
    // 2026-12-07).
    assert_eq!(auth_kinds(&log), ["jwt-hmac"]);
    drop(relay);
    let file = secret_file(dir.path(), "jwt", &format!("{secret}\n"));
    let (relay, _) = start_relay_announced(
        &data,
        &["--jwt-secret-file", file.to_str().unwrap()],
        Some(&log),
    );
    assert!(!cmdline(&relay).contains(secret));
    wait_for_event_count(&log, "relay_started", 2);
    assert_eq!(auth_kinds(&log), ["jwt-hmac", "jwt-hmac"]);
}

/// The kind of authentication of each relay started with `log` as its log, in order.
fn auth_kinds(log: &Path) -> Vec<String> {
    wait_for_event(log, "relay_started");
    log_events(log, "relay_started")
        .iter()
        .map(|v| v["auth"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Wait (at most 20 s) until `log` has `n` lines of `event`.
fn wait_for_event_count(log: &Path, event: &str, n: usize) {
    let start = std::time::Instant::now();
    while log_events(log, event).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {n} {event} lines"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn empty_or_conflicting_secrets_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let empty = secret_file(dir.path(), "empty", "\n");
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = blazedb();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} {env:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(&["--token-file", empty.to_str().unwrap()], &[]);
    assert!(e.contains("token file") && e.contains("is empty"), "{e}");
    let e = serve(&["--jwt-secret-file", empty.to_str().unwrap()], &[]);
    assert!(
        e.contains("JWT secret file") && e.contains("is empty"),
        "{e}"
    );
    // `BLAZEDB_RELAY_TOKEN="$(cat missing-file)"` must not start an open relay.
    let e = serve(&[], &[("BLAZEDB_RELAY_TOKEN", "")]);
    assert!(e.contains("BLAZEDB_RELAY_TOKEN is set but empty"), "{e}");
    let e = serve(
        &[],
        &[
            ("BLAZEDB_RELAY_TOKEN", TOKEN),
            ("BLAZEDB_JWT_SECRET", TOKEN),
        ],
    );
    assert!(e.contains("unset one of them"), "{e}");
    let missing = dir.path().join("missing");
    let e = serve(&["--token-file", missing.to_str().unwrap()], &[]);
    assert!(e.contains("cannot read the token file"), "{e}");
    let file = secret_file(dir.path(), "token", TOKEN);
    let e = serve(
        &["--token-file", file.to_str().unwrap(), "--token", TOKEN],
        &[],
    );
    assert!(e.contains("cannot be used with"), "{e}");
    // A client given both ways is asked to choose.
    let out = blazedb()
        .arg("sync")
        .arg(dir.path().join("c.db"))
        .args([
            "ws://127.0.0.1:9/v1/sync",
            "--once",
            "--token",
            TOKEN,
            "--token-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
}

#[test]
fn a_secret_on_the_command_line_still_works_but_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relay.log");
    let (_relay, url) = start_relay(&dir.path().join("data"), &["--token", TOKEN], Some(&log));
    assert_eq!(query_status(&addr_of(&url), Some(TOKEN)), 200);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("secret_in_command_line") && stderr.contains("--token-file"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(TOKEN),
        "the warning repeats the secret: {stderr}"
    );
}

fn first_line(d: &mut Daemon) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(d.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}
