//! `blazedb listen --max-auth-failures-per-address N`: after N wrong tokens from one address
//! (`blazedb sync --once` refused with AUTH_FAILED), the next attempt, with the right token
//! too, is refused with RATE_LIMITED, and the client's error says how long to wait and to
//! check the token; the listener logs the refusal. `listen --help` documents the option.
//! Separate processes over real sockets on 127.0.0.1.

mod net_common;

use std::path::Path;

use net_common::{blazedb, export, log_events, put, start_listener, wait_for_event};

const TOKEN: &str = "t0k3n-of-the-listener";

/// `blazedb sync DB URL --once` with `token` in BLAZEDB_TOKEN: exit code and stderr.
fn sync_once(db: &Path, url: &str, token: &str) -> (Option<i32>, String) {
    let out = blazedb()
        .arg("sync")
        .arg(db)
        .args([url, "--once"])
        .env("BLAZEDB_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn past_the_limit_the_right_token_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    put(&hub, "notes", r#"{"from": "hub"}"#);
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, TOKEN).unwrap();
    let log = dir.path().join("listener.log");
    let (_listener, url) = start_listener(
        &hub,
        &[
            "--tcp",
            "127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
            "--max-auth-failures-per-address",
            "2",
        ],
        Some(&log),
    );

    for i in 0..2 {
        let (code, err) = sync_once(&a, &url, "a-wrong-token-of-16-bytes");
        assert_ne!(code, Some(0), "wrong token {i} accepted");
        assert!(
            err.starts_with("error: ") && err.contains("AUTH_FAILED"),
            "{err}"
        );
    }
    let (code, err) = sync_once(&a, &url, TOKEN);
    assert_ne!(code, Some(0), "the right token was checked: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ")
            && err.contains("RATE_LIMITED")
            && err.contains(
                "too many failed authentication attempts from your address (2 within 60 s)"
            )
            && err.contains("wait")
            && err.contains("check the token")
            && err.contains("--max-auth-failures-per-address"),
        "{err}"
    );
    assert!(export(&a, "notes").is_empty(), "nothing flowed");

    // The listener says so in its log, naming the address.
    let refused = |log: &Path| {
        log_events(log, "ended")
            .into_iter()
            .filter(|e| {
                e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("RATE_LIMITED"))
            })
            .collect::<Vec<_>>()
    };
    wait_for_event(&log, "ended");
    let start = std::time::Instant::now();
    while refused(&log).is_empty() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let lines = refused(&log);
    assert_eq!(lines.len(), 1, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(
        lines[0]["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{}",
        lines[0]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "the token is in the log:\n{text}");
}

#[test]
fn listen_help_documents_the_option() {
    let out = blazedb().args(["listen", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--max-auth-failures-per-address <N>") && help.contains("0: no limit"),
        "{help}"
    );
}
