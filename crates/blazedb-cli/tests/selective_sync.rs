//! `blazedb sync DB PEER --collections … --where … --exclude-fields …` makes DB a partial
//! replica of PEER — a file or a URL, with `--once` — and a bad expression is refused before
//! anything is opened or sent.

mod net_common;

use std::path::Path;

use serde_json::Value as Json;

use net_common::{blazedb, export, start_listener};

fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = blazedb().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn put(db: &Path, collection: &str, json: &str) {
    let (ok, _, err) = run(&[
        "put".as_ref(),
        db.as_os_str(),
        collection.as_ref(),
        json.as_ref(),
    ]);
    assert!(ok, "{err}");
}

fn seed(source: &Path) {
    for i in 0..12 {
        put(
            source,
            "todos",
            &format!(
                r#"{{"n": {i}, "done": {}, "attachment": "big-{i}"}}"#,
                i % 3 != 0
            ),
        );
    }
    put(source, "notes", r#"{"text": "not in the view"}"#);
}

fn check_partial(replica: &Path) {
    let todos = export(replica, "todos");
    assert_eq!(todos.len(), 4, "{todos:?}");
    for t in todos.values() {
        assert_eq!(t["done"], Json::Bool(false), "{t}");
        assert!(t.get("attachment").is_none(), "excluded field arrived: {t}");
    }
    assert!(export(replica, "notes").is_empty());
}

const POLICY: &[&str] = &[
    "--collections",
    "todos",
    "--where",
    "done == false",
    "--exclude-fields",
    "attachment",
];

#[test]
fn partial_replica_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (dir.path().join("source.db"), dir.path().join("replica.db"));
    seed(&source);
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "sync".as_ref(),
        replica.as_os_str(),
        source.as_os_str(),
        "--once".as_ref(),
    ];
    args.extend(POLICY.iter().map(std::ffi::OsStr::new));
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let report: Json = serde_json::from_str(out.trim()).unwrap();
    assert!(
        report["b_to_a"]["cells_sent"].as_u64().unwrap() > 0,
        "{report}"
    );
    check_partial(&replica);
    // The source is untouched and still whole.
    assert_eq!(export(&source, "todos").len(), 12);
    assert_eq!(export(&source, "notes").len(), 1);
    // Again: nothing new to move.
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let report: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["b_to_a"]["cells_sent"], 0, "{report}");
    check_partial(&replica);
}

#[test]
fn partial_replica_of_a_listener_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (dir.path().join("source.db"), dir.path().join("replica.db"));
    seed(&source);
    let (_listener, url) = start_listener(
        &source,
        &["--tcp", "127.0.0.1:0", "--token", "t0k3n-of-the-listener"],
        None,
    );
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "sync".as_ref(),
        replica.as_os_str(),
        url.as_ref(),
        "--once".as_ref(),
        "--token".as_ref(),
        "t0k3n-of-the-listener".as_ref(),
    ];
    args.extend(POLICY.iter().map(std::ffi::OsStr::new));
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let report: Json = serde_json::from_str(out.trim()).unwrap();
    assert!(
        report["received"]["cells"].as_u64().unwrap() > 0,
        "{report}"
    );
    check_partial(&replica);
    assert_eq!(export(&source, "todos").len(), 12);
}

#[test]
fn a_bad_filter_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (dir.path().join("source.db"), dir.path().join("replica.db"));
    seed(&source);
    let (ok, _, err) = run(&[
        "sync".as_ref(),
        replica.as_os_str(),
        source.as_os_str(),
        "--once".as_ref(),
        "--where".as_ref(),
        "done = false".as_ref(),
    ]);
    assert!(!ok);
    assert!(err.contains("did you mean `==`?"), "{err}");
    assert!(err.contains("column"), "{err}");
    let (ok, _, err) = run(&[
        "sync".as_ref(),
        replica.as_os_str(),
        source.as_os_str(),
        "--once".as_ref(),
        "--where".as_ref(),
        "attachment == \"x\"".as_ref(),
        "--exclude-fields".as_ref(),
        "attachment".as_ref(),
    ]);
    assert!(!ok);
    assert!(err.contains("excludes"), "{err}");
    assert!(!replica.exists(), "nothing was created");
}

/// A `$param` in `--where` is never given (a relay gives only `$auth.*`, and two files have
/// no token at all), so it would quietly match nothing: refused with exit 2, nothing created.
#[test]
fn a_filter_parameter_the_command_line_cannot_give_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source, replica) = (dir.path().join("source.db"), dir.path().join("replica.db"));
    seed(&source);
    for (peer, filter, says) in [
        (source.as_os_str(), "n != $x", "--where uses $x"),
        (
            source.as_os_str(),
            "owner == $auth.sub",
            "syncing two files has no token",
        ),
        (
            "tcp://127.0.0.1:1".as_ref(),
            "n > $limit.max",
            "--where uses $limit",
        ),
    ] {
        let out = blazedb()
            .arg("sync")
            .args([replica.as_os_str(), peer])
            .args(["--once", "--where", filter])
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{filter}: {err}");
        assert!(err.contains(says), "{filter}: {err}");
        assert!(err.contains("write the value itself"), "{err}");
        assert!(!replica.exists(), "{filter}: nothing was created");
    }
}

/// `$auth.*` is given by a relay from the claims of the token presented: with no token (or
/// an empty one) the filter would quietly match nothing. Refused with exit 2, saying why,
/// nothing created; with a token it is accepted (a relay gives claims over ws://, wss:// and
/// its raw TCP and Unix listeners alike).
#[test]
fn auth_in_a_filter_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica.db");
    let peers = [
        "ws://127.0.0.1:1/v1/sync",
        "tcp://127.0.0.1:1",
        "unix:///nonexistent.sock",
    ];
    for peer in peers {
        for token in [None, Some("")] {
            let mut cmd = blazedb();
            cmd.arg("sync")
                .args([replica.as_os_str(), peer.as_ref()])
                .args(["--once", "--where", "owner == $auth.sub"]);
            if let Some(token) = token {
                cmd.args(["--token", token]);
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(out.status.code(), Some(2), "{peer} {token:?}: {err}");
            assert!(
                err.contains("--where uses $auth")
                    && err.contains("no token is given: pass --token"),
                "{peer} {token:?}: {err}"
            );
            assert!(!replica.exists(), "{peer}: nothing was created");
        }
    }
    for peer in peers {
        let out = blazedb()
            .arg("sync")
            .args([replica.as_os_str(), peer.as_ref()])
            .args(["--once", "--where", "owner == $auth.sub", "--token", "t"])
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("--where uses"), "{peer}: {err}");
    }
}
