//! A database file copied to a new file is a device of its own: the first command that opens
//! the copy says so once, and the copy and the original, both writing, lose nothing of each
//! other's writes through a relay; a relay whose store is a copy logs `store_copied`.
//! Separate processes over real sockets: `blazedb serve`, `blazedb put`, `blazedb sync`.

mod net_common;

use std::path::Path;
use std::time::Duration;

use net_common::{export, log_events, put, run_on, start_relay, sync_once_status};

fn labels(db: &Path) -> Vec<String> {
    let mut l: Vec<String> = export(db, "notes")
        .values()
        .map(|r| r["label"].as_str().unwrap().to_owned())
        .collect();
    l.sort();
    l
}

fn sync_once(db: &Path, url: &str) {
    let (code, stderr) = sync_once_status(db, url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

fn node_of(db: &Path) -> String {
    let (out, _) = run_on(db, &["stats"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no node_id in stats: {out}"))
        .to_owned()
}

#[test]
fn a_copy_and_its_original_both_sync_through_a_relay_without_losing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = start_relay(&dir.path().join("relay"), &[], None);
    let (a, copy) = (dir.path().join("a.db"), dir.path().join("copy.db"));
    put(&a, "notes", r#"{"label": "before"}"#);
    sync_once(&a, &url);
    let original = node_of(&a);
    std::fs::copy(&a, &copy).unwrap();

    // The first command on the copy tells its user, once.
    let (_, stderr) = run_on(&copy, &["put", "notes", r#"{"label": "copy-1"}"#]);
    assert!(
        stderr.contains("is a copy of another database file")
            && stderr.contains(&original)
            && stderr.contains("device of its own"),
        "{stderr}"
    );
    let (_, stderr) = run_on(&copy, &["put", "notes", r#"{"label": "copy-2"}"#]);
    assert!(!stderr.contains("copy of another"), "said once: {stderr}");
    assert_ne!(node_of(&copy), original);
    assert_eq!(node_of(&a), original, "the original keeps its id");

    put(&a, "notes", r#"{"label": "a-1"}"#);
    for db in [&copy, &a, &copy, &a] {
        sync_once(db, &url);
    }
    let all = ["a-1", "before", "copy-1", "copy-2"];
    assert_eq!(labels(&a), all);
    assert_eq!(labels(&copy), all);
}

#[test]
fn a_relay_whose_store_is_a_copy_says_so_in_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let log = dir.path().join("relay.log");
    let (relay, url) = start_relay(&first, &[], Some(&log));
    let client = dir.path().join("client.db");
    put(&client, "notes", r#"{"label": "kept"}"#);
    sync_once(&client, &url);
    relay.terminate(Duration::from_secs(10));
    assert!(log_events(&log, "store_copied").is_empty());

    // The store moved to another directory by copying (a new file): a new relay node.
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&second)
        .unwrap();
    std::fs::copy(first.join("relay.db"), second.join("relay.db")).unwrap();
    let log2 = dir.path().join("relay2.log");
    let (_relay, url) = start_relay(&second, &[], Some(&log2));
    let copied = log_events(&log2, "store_copied");
    assert_eq!(
        copied.len(),
        1,
        "{}",
        std::fs::read_to_string(&log2).unwrap()
    );
    assert_ne!(copied[0]["node"], copied[0]["copied_from_node"]);
    assert!(copied[0]["note"].as_str().unwrap().contains("in place"));

    // Its clients exchange the data with it once, and lose nothing.
    put(&client, "notes", r#"{"label": "after"}"#);
    sync_once(&client, &url);
    let fresh = dir.path().join("fresh.db");
    sync_once(&fresh, &url);
    assert_eq!(labels(&fresh), ["after", "kept"]);
}

/// Commands that only read (`stats`, `get`, `export`, `query`, `conflicts`, `peers`...) leave
/// a copy's node id as it is: a backup looked at and then restored in place over the live
/// file is still the same device.
#[test]
fn a_backup_looked_at_and_restored_in_place_stays_the_same_device() {
    let dir = tempfile::tempdir().unwrap();
    let (live, backup) = (dir.path().join("live.db"), dir.path().join("backup.db"));
    let id = put(&live, "notes", r#"{"label": "one"}"#);
    let original = node_of(&live);
    std::fs::copy(&live, &backup).unwrap();
    for args in [
        vec!["stats"],
        vec!["export", "notes"],
        vec!["get", "notes", id.as_str()],
        vec!["query", "notes"],
        vec!["conflicts"],
        vec!["peers"],
        vec!["check"],
    ] {
        let (_, stderr) = run_on(&backup, &args);
        assert!(!stderr.contains("copy of another"), "{args:?}: {stderr}");
    }
    assert_eq!(node_of(&backup), original, "a look changes nothing");

    put(&live, "notes", r#"{"label": "two"}"#);
    // Restored in place: copied over the live file, its -wal and -shm removed.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", live.display()));
    }
    std::fs::copy(&backup, &live).unwrap();
    let (_, stderr) = run_on(&live, &["put", "notes", r#"{"label": "three"}"#]);
    assert!(!stderr.contains("copy of another"), "{stderr}");
    assert_eq!(node_of(&live), original, "the same device");
    assert_eq!(labels(&live), ["one", "three"]);
}
