//! `blazedb serve` whose store's file system turns read-only while it runs (ext4 on a loop
//! device, aborted as `errors=remount-ro` does after an I/O error on the disk): a client's
//! write is refused with what happened and what to do, and the client keeps it; a client
//! that only reads is still served; `/health` answers 503 `failing` with what to do; one
//! `store_read_only` line is logged. Once the relay is stopped and the file system repaired
//! (unmounted, fsck, mounted again), the restarted relay gets the kept write.
//!
//! Needs root, `losetup`, `mkfs.ext4`, `e2fsck` and a free loop device (as CI runs);
//! elsewhere the test says why and passes.

mod net_common;

use std::time::Duration;

use blazedb_test_disks::LoopExt4;

use net_common::{
    export, log_events as events, put, relay_get as get, start_relay,
    sync_once_status as sync_once, wait_for_event,
};
use serde_json::Value as Json;

#[test]
fn a_relay_whose_file_system_turns_read_only_refuses_writes_and_says_so() {
    let Some(mut disk) = LoopExt4::mount(32 << 20) else {
        return;
    };
    // The clients and the log live elsewhere: only the relay's store is on the disk.
    let dir = tempfile::tempdir().unwrap();
    let data = disk.mount_point().join("data");
    let log = dir.path().join("relay.log");
    let (c1, c2, c3) = (
        dir.path().join("c1.db"),
        dir.path().join("c2.db"),
        dir.path().join("c3.db"),
    );
    let (relay, url) = start_relay(&data, &[], Some(&log));
    put(&c1, "notes", r#"{"before": "abort"}"#);
    assert_eq!(sync_once(&c1, &url, &[]).0, Some(0));

    disk.abort();

    // The write is refused, saying why (before: INTERNAL "storage error: disk I/O error").
    put(&c1, "notes", r#"{"after": "abort"}"#);
    let (code, stderr) = sync_once(&c1, &url, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("file system that turned read-only")
            && stderr.contains("the client keeps them")
            && stderr.contains("restarted once the file system is repaired"),
        "{stderr}"
    );
    assert_eq!(export(&c1, "notes").len(), 2, "the client keeps its write");

    // A new client that only reads is served from what the disk held.
    let (code, stderr) = sync_once(&c2, &url, &["--mode", "pull"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(export(&c2, "notes").len(), 1);

    // Before: 200 and "ok" (statvfs still says read-write).
    let (status, body) = get(&url, "/health");
    assert_eq!(status, 503, "{body}");
    let health: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "failing", "{body}");
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.contains("turned read-only") && reason.contains("fsck"),
        "{reason}"
    );
    // The store's path is for the log (`store_read_only`), not for anyone asking `/health`.
    assert!(!body.contains(&*data.to_string_lossy()), "{body}");
    let (_, metrics) = get(&url, "/metrics");
    assert!(
        metrics.contains("blazedb_relay_store_status 2"),
        "{metrics}"
    );

    // One line, however many checks, health requests and refused writes there were.
    wait_for_event(&log, "store_read_only");
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(sync_once(&c1, &url, &[]).0, Some(1));
    get(&url, "/health");
    let lines = events(&log, "store_read_only");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("writes are refused"),
        "{lines:?}"
    );
    relay.terminate(Duration::from_secs(30));

    // Repaired and restarted, the relay has its store back and gets the kept write.
    disk.repair();
    let (_relay, url) = start_relay(&data, &[], Some(&log));
    assert!(events(&log, "store_created").len() == 1, "the same store");
    let (code, stderr) = sync_once(&c1, &url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sync_once(&c3, &url, &["--mode", "pull"]).0, Some(0));
    assert_eq!(export(&c3, "notes").len(), 2);
}
