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

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use net_common::{
    export, log_events as events, put, relay_get as get, start_relay, sync_once_status as sync_once,
};
use serde_json::Value as Json;

/// An ext4 file system in an image file on a loop device, mounted on a temporary directory.
/// Dropped, it is unmounted and the loop device detached, however the test ended.
struct LoopExt4 {
    dir: tempfile::TempDir,
    device: String,
    mounted: bool,
}

impl LoopExt4 {
    /// Make and mount a 32 MiB ext4; `Err` says why it cannot be done here.
    fn mount() -> Result<LoopExt4, String> {
        let uid = run("id", &["-u"])?;
        if uid.trim() != "0" {
            return Err("not root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(32 << 20))
            .map_err(|e| e.to_string())?;
        let image = image.to_str().unwrap().to_owned();
        run("mkfs.ext4", &["-q", "-F", &image])?;
        let device = run("losetup", &["--find", "--show", &image])?
            .trim()
            .to_owned();
        let mut disk = LoopExt4 {
            dir,
            device,
            mounted: false,
        };
        std::fs::create_dir(disk.mount_point()).map_err(|e| e.to_string())?;
        disk.mount_again()?;
        Ok(disk)
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn mount_again(&mut self) -> Result<(), String> {
        let mnt = self.mount_point();
        run(
            "mount",
            &[
                "-o",
                "errors=remount-ro",
                &self.device,
                mnt.to_str().unwrap(),
            ],
        )?;
        self.mounted = true;
        Ok(())
    }

    /// What the kernel does on an I/O error under `errors=remount-ro`: the mount turns
    /// read-only while files are open for writing (a plain `remount,ro` is refused then).
    /// What was written before is flushed first, so that the test knows what the disk holds.
    fn abort(&self) {
        let mnt = self.mount_point();
        let mnt = mnt.to_str().unwrap();
        run("sync", &["-f", mnt]).unwrap();
        run("mount", &["-o", "remount,abort", mnt]).unwrap();
    }

    /// Unmount, check and repair (`e2fsck -fy`), mount again.
    fn repair(&mut self) {
        let mnt = self.mount_point();
        run("umount", &[mnt.to_str().unwrap()]).unwrap();
        self.mounted = false;
        // 0: clean, 1: errors corrected.
        let fsck = Command::new("e2fsck")
            .args(["-fy", &self.device])
            .output()
            .unwrap();
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {fsck:?}"
        );
        self.mount_again().unwrap();
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let mnt = self.mount_point();
        if self.mounted {
            let unmounted = Command::new("umount")
                .arg(&mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Run a command; its stdout, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_relay_whose_file_system_turns_read_only_refuses_writes_and_says_so() {
    let mut disk = match LoopExt4::mount() {
        Ok(d) => d,
        Err(why) => {
            eprintln!(
                "skipped: this test mounts an ext4 image on a loop device, which needs root, \
                 losetup, mkfs.ext4 and a free loop device ({why})"
            );
            return;
        }
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
    let (_, metrics) = get(&url, "/metrics");
    assert!(
        metrics.contains("blazedb_relay_store_status 2"),
        "{metrics}"
    );

    // One line, however many checks, health requests and refused writes there were.
    let start = Instant::now();
    while events(&log, "store_read_only").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no store_read_only line"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
