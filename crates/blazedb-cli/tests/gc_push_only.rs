//! A client that only pushes (`sync --mode push`) never receives the relay's deletes, so the
//! relay's GC holds them for the peer retention: that client's edit made offline before
//! another client deleted the record, pushed after the relay's GC ran, still loses to the
//! delete instead of bringing the record back. Separate processes over real sockets, the
//! relay collecting every 50 ms.

mod net_common;

use std::path::Path;
use std::time::Duration;

use net_common::{export, put, run_on, start_relay};

fn ok(args: &[&str], db: &Path) -> String {
    run_on(db, args).0
}

#[test]
fn a_push_only_clients_older_edit_loses_to_a_delete_the_relay_collected_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_relay, url) = start_relay(
        &data,
        &["--token", "a-token-for-the-tests", "--gc-interval", "50ms"],
        None,
    );
    let device = dir.path().join("device.db");
    let desk = dir.path().join("desk.db");
    let push = |db: &Path| {
        ok(
            &[
                "sync",
                &url,
                "--once",
                "--token",
                "a-token-for-the-tests",
                "--mode",
                "push",
            ],
            db,
        )
    };
    let both = |db: &Path| {
        ok(
            &["sync", &url, "--once", "--token", "a-token-for-the-tests"],
            db,
        )
    };

    // The device records something and pushes it; the desk gets it.
    let id = put(&device, "notes", r#"{"text": "from the device"}"#);
    push(&device);
    both(&desk);
    assert!(export(&desk, "notes").contains_key(&id));

    // Offline, the device edits it; later the desk deletes it, and the relay gets the delete.
    ok(
        &["update", "notes", &id, r#"{"text": "edited offline"}"#],
        &device,
    );
    std::thread::sleep(Duration::from_millis(20));
    ok(&["delete", "notes", &id], &desk);
    both(&desk);
    both(&desk);
    // The relay's GC runs a few times (every client that takes its feed has the delete).
    std::thread::sleep(Duration::from_millis(400));
    let relay_db = data.join("relay.db");
    let peers: Vec<serde_json::Value> = ok(&["peers"], &relay_db)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let device_node: serde_json::Value = serde_json::from_str(&ok(&["stats"], &device)).unwrap();
    let listed = peers
        .iter()
        .find(|p| p["node"] == device_node["node_id"])
        .expect("the relay lists the device");
    assert_eq!(listed["pushes_only"], true, "{listed}");

    // The device's older edit arrives: it loses to the delete, at the relay and at the desk.
    push(&device);
    both(&desk);
    assert!(
        !export(&relay_db, "notes").contains_key(&id),
        "the relay brought the deleted record back: {:?}",
        export(&relay_db, "notes")
    );
    assert!(!export(&desk, "notes").contains_key(&id));
}
