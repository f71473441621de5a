//! The relay's disk is full (its data directory on a small tmpfs, filled): new clients that
//! only read — pull mode, a selective view, a new replica with nothing to send — are served
//! (the relay cannot store what it notes about them, so that waits in memory); a client's
//! writes are refused with "the relay's disk is full"; `/health` says `degraded` with the
//! reason. Once space is freed, writes are taken again, `/health` is `ok`, and what waited
//! is stored.
//!
//! Needs root to mount the tmpfs (as CI runs); elsewhere the test says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::{ErrorCode, SessionConfig, SyncMode, SyncPolicy};
use blazedb::{Database, OpenOptions, Value};
use blazedb_net::ws::WsStream;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport};
use common::{connect_ws, http, open, wait_until, within, TestRelay, TOKEN};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mount a tmpfs of `mb` MiB; `None` (and why) when this process may not.
    fn mount(mb: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the disk with a file: what is left is less than a page.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let small = vec![0u8; 512];
        while f.write(&small).is_ok_and(|n| n > 0) {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        if !unmount(false) {
            unmount(true);
        }
    }
}

/// One sync with the relay that ends once caught up.
async fn sync_once(
    relay: &TestRelay,
    db: &Arc<Database>,
    mode: SyncMode,
    policy: SyncPolicy,
) -> Result<SessionReport, NetError> {
    let ws = connect_ws(relay.addr, Some(TOKEN)).await.expect("connects");
    let cfg = SessionConfig {
        mode,
        policy,
        token: TOKEN.into(),
        ..SessionConfig::default()
    };
    within(
        Duration::from_secs(30),
        run_session(db.clone(), WsStream::new(ws), cfg, DriverOptions::once()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_full_disk_serves_readers_and_refuses_writes_saying_why() {
    let disk = match SmallDisk::mount(16) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: this test mounts a tmpfs, which needs root ({why})");
            return;
        }
    };
    let data = disk.path().join("relay");
    let relay = TestRelay::start(|c| c.data_dir = data.clone()).await;
    for n in 0..200 {
        relay
            .db
            .insert(
                "bugs",
                [("n", Value::Int(n)), ("text", Value::from("x".repeat(200)))],
            )
            .unwrap();
    }
    // The write-ahead log truncated, as after a restart: it has no room left in it, so on a
    // full disk every write fails (with room in it, a small one may still fit).
    relay.db.vacuum().unwrap();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));

    let filler = disk.fill();

    // Before: 200 "ok".
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!(h.status, 200, "readers are still served: {}", h.body);
    let j = h.json();
    assert_eq!(j["status"], "degraded", "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.contains("is full") && reason.contains("Free space on that disk"),
        "{reason}"
    );

    // New clients that only read are served (before: each failed, "database or disk is
    // full", because the relay writes a note about a new peer).
    let dir = tempfile::tempdir().unwrap();
    let puller = open(dir.path(), "puller");
    sync_once(&relay, &puller, SyncMode::Pull, SyncPolicy::default())
        .await
        .expect("a pull client is served");
    assert_eq!(puller.count("bugs").unwrap(), 200);
    let selective = open(dir.path(), "selective");
    let view = SyncPolicy {
        collections: Some(vec!["bugs".into()]),
        filter: Some("n < 10".into()),
        exclude_fields: vec!["text".into()],
    };
    sync_once(&relay, &selective, SyncMode::Pull, view)
        .await
        .expect("a selective client is served");
    assert_eq!(selective.count("bugs").unwrap(), 10);
    let empty = open(dir.path(), "empty");
    sync_once(&relay, &empty, SyncMode::Both, SyncPolicy::default())
        .await
        .expect("a new replica with nothing to send is served");
    assert_eq!(empty.count("bugs").unwrap(), 200);

    // A client's writes are refused, saying whose disk is full.
    let writer = open(dir.path(), "writer");
    for n in 0..300 {
        writer
            .insert(
                "tasks",
                [
                    ("n", Value::Int(n)),
                    ("text", Value::from("y".repeat(1000))),
                ],
            )
            .unwrap();
    }
    let e = sync_once(&relay, &writer, SyncMode::Both, SyncPolicy::default())
        .await
        .expect_err("the relay cannot store the writes");
    let NetError::Sync { error, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(error.code, ErrorCode::StorageFull, "{e}");
    assert!(error.remote, "{e}");
    assert!(
        error.message.starts_with("the relay's disk is full")
            && error.message.contains("the client keeps them"),
        "{e}"
    );
    assert_eq!(relay.db.count("tasks").unwrap(), 0);
    assert_eq!(writer.count("tasks").unwrap(), 300, "the client keeps them");

    // Space comes back: writes are taken again, and /health says so.
    std::fs::remove_file(&filler).unwrap();
    let h = http(relay.addr, "GET", "/health", &[], "").await;
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));
    sync_once(&relay, &writer, SyncMode::Both, SyncPolicy::default())
        .await
        .expect("the writes are taken once there is room");
    wait_until(Duration::from_secs(10), || {
        relay.db.count("tasks").unwrap() == 300
    })
    .await;

    // What the relay noted about the readers while it could not write is in the file now:
    // another handle (as `blazedb peers` or GC by another process) sees them.
    relay.db.store_noted_cursors().unwrap();
    let other = Database::open(data.join("relay.db"), OpenOptions::default()).unwrap();
    let known: Vec<_> = other.peers().unwrap().iter().map(|p| p.node).collect();
    for reader in [&puller, &selective, &empty] {
        assert!(known.contains(&reader.node_id()), "{known:?}");
        assert_eq!(
            other.peer_note(reader.node_id(), "identity").unwrap(),
            Some("token".into()),
            "the node is bound to the identity it used"
        );
    }
    drop(other);
    relay.stop().await;
}
