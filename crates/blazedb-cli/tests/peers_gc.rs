//! `peers` lists the replicas a file synced with and `--forget` stops GC waiting for one;
//! `gc` removes the tombstones every peer has seen and prints what it did as one JSON line.
//! Encrypted files take the password from BLAZEDB_PASSWORD like every other command.

mod common;

use common::{blazedb_command, Run, TestDb};

#[test]
fn peers_gc_and_forget() {
    let a = TestDb::encrypted("pw-a");
    let b_path = a.file("b.db");
    let b = b_path.to_str().unwrap();
    let keep = a.put("notes", r#"{"text": "keep"}"#);
    let gone = a.put("notes", r#"{"text": "gone"}"#);
    a.run("delete", &["notes", &gone]).success();
    // A fresh file without peers: nothing listed.
    assert!(a.run("peers", &[]).success().stdout.is_empty());

    // Both files take BLAZEDB_PASSWORD; b gets one record of its own.
    let mut put = blazedb_command(Some("pw-a"));
    put.arg("put")
        .arg(b)
        .arg("notes")
        .arg(r#"{"text": "from b"}"#);
    Run::of(put, None).success();
    let mut sync = blazedb_command(Some("pw-a"));
    sync.arg("sync").arg(&a.path).arg(b).arg("--once");
    Run::of(sync, None).success();

    let b_node = {
        let mut cmd = blazedb_command(Some("pw-a"));
        cmd.arg("stats").arg(b);
        Run::of(cmd, None).success().json()["node_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let peers = a.run("peers", &[]).success().json_lines();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let p = &peers[0];
    assert_eq!(p["node"], b_node.as_str());
    assert!(p["acked"].as_u64().unwrap() >= 3, "{p}");
    // b had nothing more to send when it acknowledged: stable at once.
    assert_eq!(p["stable"], p["acked"], "{p}");
    assert!(p["received"].is_u64(), "{p}");
    assert!(p["last_contact"].as_str().unwrap().ends_with('Z'), "{p}");
    assert_eq!(p["needs_snapshot"], false);

    let report = a.run("gc", &["--peer-retention", "1d"]).success().json();
    assert_eq!(report["tombstones_purged"], 1, "{report}");
    assert_eq!(report["expired_peers"], serde_json::json!([]));
    assert!(report["horizon"].as_u64().unwrap() >= 3, "{report}");
    for key in [
        "cells_pruned",
        "links_pruned",
        "feed_rows_pruned",
        "history_rows_removed",
    ] {
        assert!(report[key].is_u64(), "{key} missing: {report}");
    }
    let stats = a.run("stats", &[]).success().json();
    assert_eq!(stats["collections"]["notes"]["tombstones"], 0);
    // Its own record and b's.
    assert_eq!(stats["collections"]["notes"]["records"], 2);
    a.run("get", &["notes", &keep]).success();

    a.run("peers", &["--forget", &b_node]).success();
    // GC no longer waits for it; how far `a` received its changes stays, so that should it
    // return, its old writes are not applied again over deletes GC collected meanwhile.
    let forgotten = a.run("peers", &[]).success().json_lines();
    assert_eq!(forgotten.len(), 1, "{forgotten:?}");
    assert_eq!(forgotten[0]["node"], b_node.as_str());
    assert_eq!(forgotten[0]["acked"], 0);
    assert_eq!(forgotten[0]["received"], p["received"]);
    assert_eq!(forgotten[0]["needs_snapshot"], true);
    let err = a.run("peers", &["--forget", &b_node]).failure(1).stderr;
    assert!(err.contains("forgotten already"), "{err}");

    a.run("peers", &["--forget", "not-a-node"]).failure(2);
    let err = a.run("gc", &["--peer-retention", "30"]).failure(2).stderr;
    assert!(err.contains("unit"), "{err}");
    // The wrong password is the usual clear error.
    a.run_with_password(Some("wrong"), "gc", &[]).failure(1);
}
