//! `blazedb listen` and `blazedb sync DB URL --once` as separate processes: over TCP and
//! over a Unix socket the two files end with the same records, the JSON report counts what
//! moved each way, a second run moves nothing, a wrong token is refused, and a peer that drops
//! the connection is a failure.

mod net_common;

use serde_json::Value as Json;

use net_common::{blazedb, export, put, start_listener};

fn sync_once(db: &std::path::Path, url: &str, extra: &[&str]) -> (bool, Json, String) {
    let out = blazedb()
        .arg("sync")
        .arg(db)
        .arg(url)
        .arg("--once")
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Json::Null);
    // Without the warning that `--token` on the command line is visible to other users,
    // which these tests pass there for brevity (tests/secrets_not_in_argv.rs covers it).
    let stderr: String = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"secret_in_command_line\""))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.success(), json, stderr)
}

#[test]
fn listen_and_sync_once_over_tcp_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    for i in 0..20 {
        put(&a, "notes", &format!(r#"{{"from": "a", "n": {i}}}"#));
    }
    put(&hub, "notes", r#"{"from": "hub"}"#);
    let (_listener, url) = start_listener(
        &hub,
        &["--tcp", "127.0.0.1:0", "--token", "t0k3n-of-the-listener"],
        None,
    );
    assert!(url.starts_with("tcp://127.0.0.1:"), "{url}");

    // A short token is the listener's to refuse, not the client's: `sync` presents it, and
    // the listener says it is wrong.
    let (ok, _, err) = sync_once(&a, &url, &["--token", "wrong"]);
    assert!(!ok);
    assert!(
        err.starts_with("error: ") && err.contains("AUTH_FAILED"),
        "{err}"
    );
    assert_eq!(
        export(&hub, "notes").len(),
        1,
        "nothing flowed with a wrong token"
    );

    let (ok, report, err) = sync_once(&a, &url, &["--token", "t0k3n-of-the-listener"]);
    assert!(ok, "{err}");
    assert_eq!(report["url"], url.as_str());
    // 20 records of 3 cells (existence, from, n) one way, 1 record of 2 cells the other.
    assert_eq!(report["sent"]["cells"], 60, "{report}");
    assert_eq!(report["received"]["cells"], 2, "{report}");
    assert_eq!(report["received"]["cells_applied"], 2, "{report}");
    assert!(report["sent"]["bytes"].as_u64().unwrap() > 0);
    assert!(report["received"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(export(&a, "notes"), export(&hub, "notes"));
    assert_eq!(export(&a, "notes").len(), 21);

    let (ok, again, err) = sync_once(&a, &url, &["--token", "t0k3n-of-the-listener"]);
    assert!(ok, "{err}");
    assert_eq!(again["sent"]["cells"], 0);
    assert_eq!(again["received"]["cells"], 0);
}

#[test]
fn a_filter_on_auth_claims_is_refused_by_a_listen_peer() {
    // `blazedb listen` checks a static token: it has no claims to give as `$auth.*`, so such
    // a filter would match nothing and the replica would stay empty without a word.
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    put(&hub, "notes", r#"{"owner": "ann"}"#);
    let (_listener, url) = start_listener(
        &hub,
        &["--tcp", "127.0.0.1:0", "--token", "t0k3n-of-the-listener"],
        None,
    );
    let (ok, _, err) = sync_once(
        &a,
        &url,
        &[
            "--token",
            "t0k3n-of-the-listener",
            "--where",
            "owner == $auth.sub",
        ],
    );
    assert!(!ok, "a filter that can match nothing was accepted");
    assert!(
        err.starts_with("error: ") && err.contains("$auth") && err.contains("INVALID_POLICY"),
        "{err}"
    );
    // The same filter with the value written out works.
    let (ok, report, err) = sync_once(
        &a,
        &url,
        &[
            "--token",
            "t0k3n-of-the-listener",
            "--where",
            "owner == \"ann\"",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(report["received"]["cells_applied"], 2, "{report}");
}

/// In watch mode too: the peer's refusal would come again on every reconnect, so the sync
/// exits with it instead of retrying forever.
#[test]
fn a_refused_filter_ends_sync_watch_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    put(&hub, "notes", r#"{"owner": "ann"}"#);
    let (_listener, url) = start_listener(
        &hub,
        &["--tcp", "127.0.0.1:0", "--token", "t0k3n-of-the-listener"],
        None,
    );
    let mut cmd = blazedb();
    cmd.arg("sync").arg(&a).arg(&url).arg("--watch");
    cmd.args([
        "--token",
        "t0k3n-of-the-listener",
        "--where",
        "owner == $auth.sub",
    ]);
    let log = dir.path().join("watch.log");
    let mut watch = net_common::Daemon::spawn("sync --watch", cmd, Some(&log));
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = watch.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < limit,
            "sync --watch kept retrying a refused filter"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("error: ") && err.contains("$auth") && err.contains("INVALID_POLICY"),
        "{err}"
    );
    assert_eq!(export(&a, "notes").len(), 0);
}

#[test]
fn listen_and_sync_once_over_a_unix_socket_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    let socket = dir.path().join("hub.sock");
    put(&a, "notes", r#"{"from": "a"}"#);
    put(&hub, "notes", r#"{"from": "hub"}"#);
    let (_listener, url) = start_listener(&hub, &["--unix", socket.to_str().unwrap()], None);
    assert_eq!(url, format!("unix://{}", socket.display()));
    let (ok, report, err) = sync_once(&a, &url, &[]);
    assert!(ok, "{err}");
    assert_eq!(report["sent"]["cells"], 2);
    assert_eq!(export(&a, "notes"), export(&hub, "notes"));
}

/// Heartbeat settings that cannot work are usage errors (exit 2) before anything is opened:
/// a ping interval of 0 made sessions send PINGs in a tight loop, and an idle timeout not
/// longer than the ping interval ends sessions whose peers are alive.
#[test]
fn heartbeat_flags_that_cannot_work_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let db = db.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "sync",
                db,
                "tcp://127.0.0.1:9",
                "--once",
                "--ping-interval-ms",
                "0",
            ],
            "--ping-interval-ms 0 is too short: give at least 100",
        ),
        (
            &[
                "listen",
                db,
                "--tcp",
                "127.0.0.1:0",
                "--ping-interval-ms",
                "99",
            ],
            "--ping-interval-ms 99 is too short",
        ),
        (
            &[
                "listen",
                db,
                "--tcp",
                "127.0.0.1:0",
                "--ping-interval-ms",
                "1000",
                "--idle-timeout-ms",
                "1000",
            ],
            "--idle-timeout-ms 1000 must be longer than --ping-interval-ms 1000",
        ),
    ];
    for (args, expected) in cases {
        let mut child = blazedb()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Without the check, `listen` would serve until killed.
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("{args:?} kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // The message's lines were once joined with the source's indentation.
        assert!(!stderr.contains("  "), "{args:?}: {stderr}");
        assert!(!std::path::Path::new(db).exists(), "nothing is created");
    }
}

/// A peer that accepts the connection and drops it at once: the sync fails, every time.
/// The write on the dead connection fails with a broken pipe, which once passed for the
/// reader of stdout closing it (`export | head`) and exited 0 with no output.
#[test]
fn sync_once_with_a_peer_that_drops_the_connection_fails() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"from": "a"}"#);
    let socket = dir.path().join("drop.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // The thread ends with the test process; it only ever accepts and drops.
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    let url = format!("unix://{}", socket.display());
    for run in 0..20 {
        let (ok, report, err) = sync_once(&a, &url, &[]);
        assert!(!ok, "run {run} exited 0: {report}");
        assert!(err.starts_with("error: "), "run {run}: {err}");
    }
}

/// A second `listen --unix` or `serve --unix` on the socket of a live listener is refused in
/// one sentence that points at --unix (the relay's said "another process is listening on
/// this socket: another process (another relay?) listens there: stop it, or choose another
/// port (--listen, --tcp-listen)"); the live listener keeps serving.
#[test]
fn a_live_unix_socket_is_refused_with_advice_about_unix() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, a) = (dir.path().join("hub.db"), dir.path().join("a.db"));
    let socket = dir.path().join("hub.sock");
    put(&hub, "notes", r#"{"from": "hub"}"#);
    let (_listener, url) = start_listener(&hub, &["--unix", socket.to_str().unwrap()], None);
    let second = |args: &[&std::ffi::OsStr]| {
        let out = blazedb().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let other = dir.path().join("other.db");
    let err = second(&[
        "listen".as_ref(),
        other.as_os_str(),
        "--unix".as_ref(),
        socket.as_os_str(),
    ]);
    assert!(
        err.contains(
            "another process is listening on this socket: stop it, or give --unix another path"
        ),
        "{err}"
    );
    let data = dir.path().join("relay");
    let err = second(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--unix".as_ref(),
        socket.as_os_str(),
    ]);
    // After the line that says the relay created its store.
    assert_eq!(
        err.trim_end().lines().last(),
        Some(&*format!(
            "error: cannot listen on the Unix socket {} (--unix): another process is \
             listening on this socket: stop it, or give --unix another path",
            socket.display()
        ))
    );
    let (ok, report, err) = sync_once(&a, &url, &[]);
    assert!(ok, "{err}");
    assert_eq!(report["received"]["cells"], 2, "{report}");
}
