//! `blazedb serve` whose periodic GC fails at every run — its store deleted while it runs,
//! its disk full — logs the first failure and stays quiet while the cause lasts (before: a
//! `gc_failed` line every interval, for as long as it lasted), and says `gc_recovered`, with
//! how many runs failed, once a run works again.
//!
//! The full disk needs root to mount a tmpfs (as CI runs); elsewhere that part says so and
//! passes.

mod common;
mod net_common;

use std::path::Path;
use std::time::Duration;

use common::SmallDisk;
use net_common::{
    log_events as events, put, start_relay, sync_once_status, wait_for_event, Daemon,
};

/// GC every 100 ms: ten runs a second.
const GC_EVERY: &str = "100ms";

/// `blazedb sync DB URL --once ARGS..`, which must succeed.
fn sync_once(db: &Path, url: &str, args: &[&str]) {
    let (code, stderr) = sync_once_status(db, url, args);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn gc_on_a_deleted_store_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("relay.log"));
    let (relay, url) = start_relay(&data, &["--gc-interval", GC_EVERY], Some(&log));
    let client = dir.path().join("client.db");
    put(&client, "notes", r#"{"n": 1}"#);
    sync_once(&client, &url, &[]);

    std::fs::remove_dir_all(&data).unwrap();
    wait_for_event(&log, "gc_failed");
    // Twenty runs more.
    std::thread::sleep(Duration::from_secs(2));
    let failed = events(&log, "gc_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["cause"], "store_gone", "{failed:?}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("was deleted"),
        "{failed:?}"
    );
    assert!(events(&log, "gc_recovered").is_empty());
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
}

#[test]
fn gc_on_a_full_disk_says_so_once_and_when_it_works_again() {
    let Some(disk) = SmallDisk::mount(16 << 20) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (disk.path("data"), dir.path().join("relay.log"));
    let client = dir.path().join("client.db");
    put(&client, "notes", r#"{"n": 1}"#);
    {
        let (relay, url) = start_relay(&data, &[], Some(&log));
        sync_once(&client, &url, &[]);
        relay.terminate(Duration::from_secs(30));
    }
    // Restarted, the store's write-ahead log is empty: on a full disk, every write needs
    // room it cannot have.
    let (relay, url): (Daemon, String) =
        start_relay(&data, &["--gc-interval", GC_EVERY], Some(&log));
    disk.fill_leaving(0);
    // A reader is served; what the relay notes about it waits in memory, and GC, which
    // stores it first, fails at every run.
    sync_once(&dir.path().join("reader.db"), &url, &["--mode", "pull"]);
    wait_for_event(&log, "gc_failed");
    std::thread::sleep(Duration::from_secs(1));
    let failed = events(&log, "gc_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["cause"], "disk_full", "{failed:?}");

    disk.unfill();
    wait_for_event(&log, "gc_recovered");
    let recovered = &events(&log, "gc_recovered")[0];
    assert_eq!(recovered["cause"], "disk_full", "{recovered}");
    assert!(
        recovered["failed_runs"].as_u64().unwrap() >= 5,
        "{recovered}"
    );
    assert_eq!(events(&log, "gc_failed").len(), 1);
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
}
