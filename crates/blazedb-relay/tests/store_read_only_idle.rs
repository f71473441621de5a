//! A relay nobody writes to, whose store's file system turns read-only (ext4 on a loop
//! device, aborted as `errors=remount-ro` does after a disk error): `/health` says `failing`
//! within the probe interval, without waiting for a client's write to fail (it said `ok`
//! until then), and writes are then refused at once.
//!
//! Needs root, `losetup`, `mkfs.ext4` and a free loop device (as CI runs); elsewhere the test
//! says why and passes.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use blazedb_test_disks::LoopExt4;
use common::{http, TestRelay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_finds_its_file_system_turned_read_only() {
    let Some(disk) = LoopExt4::mount(32 << 20) else {
        return;
    };
    let data = disk.mount_point().join("relay");
    let relay = TestRelay::start(|c| {
        c.data_dir = data.clone();
        c.limits.store_probe_interval_ms = 200;
    })
    .await;
    relay.db.insert("notes", [("n", 1i64)]).unwrap();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));

    disk.abort();
    let started = Instant::now();
    loop {
        let h = http(relay.addr, "GET", "/health", &[], "").await;
        if h.status == 503 {
            let j = h.json();
            assert_eq!(j["status"], "failing", "{j}");
            assert!(
                j.to_string().contains("turned read-only"),
                "says what happened: {j}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {}: {}",
            h.status,
            h.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(relay.db.file_system_read_only());
    let refused = relay.db.insert("notes", [("n", 2i64)]).unwrap_err();
    assert!(
        matches!(refused, blazedb::Error::FileSystemReadOnly { .. }),
        "{refused:?}"
    );
    assert_eq!(relay.db.count("notes").unwrap(), 1, "reads go on");
    relay.stop().await;
}
