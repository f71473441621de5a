//! `blazedb serve` whose data directory is deleted while it runs (`rm -rf`): a client's
//! write is refused with what happened and what to do, not acknowledged into the deleted
//! file; `/health` answers 503 `failing` with the reason (no path, no process id) and the
//! size of what the open file still holds; one `store_gone` line is logged, saying where to
//! copy the store from (`/proc/PID/fd`);
//! a new client that only reads is still served from the open file; the refused sessions
//! count as `sessions_closed_total{reason="store_unavailable"}`. Restarted, the relay
//! says it created a new store, and the refused write arrives from the client that kept it.

mod net_common;

use std::time::Duration;

use net_common::{
    export, log_events as events, put, relay_get as get, start_relay,
    sync_once_status as sync_once, wait_for_event,
};
use serde_json::Value as Json;

#[test]
fn a_relay_whose_data_directory_is_deleted_refuses_writes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("relay.log");
    let (c1, c2, c3) = (
        dir.path().join("c1.db"),
        dir.path().join("c2.db"),
        dir.path().join("c3.db"),
    );
    let (relay, url) = start_relay(&data, &[], Some(&log));
    put(&c1, "notes", r#"{"before": "rm"}"#);
    assert_eq!(sync_once(&c1, &url, &[]).0, Some(0));
    assert_eq!(events(&log, "store_created").len(), 1, "a new store");

    let stored = std::fs::metadata(data.join("relay.db")).unwrap().len();
    std::fs::remove_dir_all(&data).unwrap();

    // The write is refused (before: exit 0, and the write was gone after a restart).
    put(&c1, "notes", r#"{"after": "rm"}"#);
    let (code, stderr) = sync_once(&c1, &url, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the relay's store")
            && stderr.contains("was deleted while the relay runs")
            && stderr.contains("the client keeps them")
            && stderr.contains("restored the data directory"),
        "{stderr}"
    );

    // Before: 200 and "ok".
    let (status, body) = get(&url, "/health");
    assert_eq!(status, 503, "{body}");
    let health: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "failing", "{body}");
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.contains("store was deleted") && reason.contains("the relay's log (store_gone)"),
        "{reason}"
    );
    // Where the store was and which process holds it are for the operator, in the log
    // (below): `/health` answers anyone (before: both were in `reason`).
    assert!(
        !body.contains(&*data.to_string_lossy()) && !body.contains("/proc/"),
        "{body}"
    );
    // What is at stake: the open file's size, not 0 for a path that names nothing (before).
    let store_bytes = health["store_bytes"].as_u64().unwrap();
    assert!(store_bytes >= stored && stored > 0, "{stored}: {body}");
    let (_, metrics) = get(&url, "/metrics");
    assert!(
        metrics.contains("blazedb_relay_store_status 2"),
        "{metrics}"
    );

    // A reader is served from the open file.
    let (code, stderr) = sync_once(&c2, &url, &["--mode", "pull"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(export(&c2, "notes").len(), 1);

    // One error line, however many checks, health requests and refused writes there were.
    wait_for_event(&log, "store_gone");
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(sync_once(&c1, &url, &[]).0, Some(1));
    get(&url, "/health");
    let gone = events(&log, "store_gone");
    assert_eq!(gone.len(), 1, "{gone:?}");
    let error = gone[0]["error"].as_str().unwrap();
    let pid = relay.child.id();
    assert!(
        error.contains("writes are refused")
            && error.contains("relay.db was deleted")
            && error.contains(&format!("/proc/{pid}/fd")),
        "{gone:?}"
    );
    assert_eq!(gone[0]["pid"], pid, "{gone:?}");
    // Both refused sessions closed for the store, not as failures of the relay (`error`,
    // where they were filed). The relay counts a session as its task ends, just after the
    // client saw the refusal.
    let closed = |metrics: &str, reason: &str| {
        let series = format!("blazedb_relay_sessions_closed_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
    };
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = get(&url, "/metrics").1;
        if closed(&metrics, "store_unavailable") == Some(2.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        closed(&metrics, "store_unavailable"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(closed(&metrics, "error"), Some(0.0), "{metrics}");
    let (code, _) = relay.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));

    // Restarted, the relay has a new, empty store and says so; the client still has its
    // refused write and sends it (with the rest) to the new store.
    let (_relay, url) = start_relay(&data, &[], Some(&log));
    let created = events(&log, "store_created");
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(sync_once(&c1, &url, &[]).0, Some(0));
    assert_eq!(sync_once(&c3, &url, &[]).0, Some(0));
    assert_eq!(export(&c3, "notes").len(), 2);
}
