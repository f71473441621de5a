//! A database whose file system turns read-only while a handle has it open (ext4 on a loop
//! device, aborted as `errors=remount-ro` does after an I/O error on the disk): the failed
//! write is told as `Error::FileSystemReadOnly` with what to do, not a bare "disk I/O
//! error"; every later write, of this handle and a second one, is refused the same way;
//! `file_system_read_only` says so; reads go on.
//!
//! Needs root, `losetup`, `mkfs.ext4` and a free loop device (as CI runs); elsewhere the test
//! says why and passes.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::process::Command;

use blazedb::{Database, Error, OpenOptions};

/// An ext4 file system in an image file on a loop device, mounted on a temporary directory;
/// unmounted and detached when dropped, however the test ended.
struct LoopExt4 {
    dir: tempfile::TempDir,
    device: String,
    mounted: bool,
}

impl LoopExt4 {
    fn mount() -> Result<LoopExt4, String> {
        if run("id", &["-u"])?.trim() != "0" {
            return Err("not root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
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
        let mnt = disk.mount_point();
        run(
            "mount",
            &[
                "-o",
                "errors=remount-ro",
                &disk.device,
                mnt.to_str().unwrap(),
            ],
        )?;
        disk.mounted = true;
        Ok(disk)
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// What the kernel does on an I/O error under `errors=remount-ro`.
    fn abort(&self) {
        let mnt = self.mount_point();
        let mnt = mnt.to_str().unwrap();
        run("sync", &["-f", mnt]).unwrap();
        run("mount", &["-o", "remount,abort", mnt]).unwrap();
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let mnt = self.mount_point();
        if self.mounted
            && !Command::new("umount")
                .arg(&mnt)
                .status()
                .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
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
fn writes_on_a_file_system_turned_read_only_are_refused_saying_why_and_reads_go_on() {
    let disk = match LoopExt4::mount() {
        Ok(d) => d,
        Err(why) => {
            eprintln!(
                "skipped: this test mounts an ext4 image on a loop device, which needs root, \
                 losetup, mkfs.ext4 and a free loop device ({why})"
            );
            return;
        }
    };
    let path = disk.mount_point().join("app.db");
    let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let kept = db.insert("notes", [("n", 1)]).unwrap();
    let other = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    assert!(!db.file_system_read_only());

    disk.abort();
    // Before: "storage error: disk I/O error", and the next write tried again.
    let e = db.insert("notes", [("n", 2)]).unwrap_err();
    assert!(matches!(e, Error::FileSystemReadOnly { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("app.db is on a file system that turned read-only while it was open")
            && m.contains("writes are refused")
            && m.contains("fsck"),
        "{m}"
    );
    assert!(db.file_system_read_only() && other.file_system_read_only());
    assert!(matches!(
        db.update("notes", kept, blazedb::Patch::new().set("n", 3)),
        Err(Error::FileSystemReadOnly { .. })
    ));
    assert!(matches!(
        other.insert("notes", [("n", 4)]),
        Err(Error::FileSystemReadOnly { .. })
    ));
    // Reads see what the file held; nothing of the refused writes.
    assert_eq!(db.count("notes").unwrap(), 1);
    assert_eq!(
        other.get("notes", kept).unwrap().unwrap().fields["n"],
        1.into()
    );
    // No probe file was left behind (the file system refused it).
    let names: Vec<_> = std::fs::read_dir(disk.mount_point())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("probe"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    drop((db, other));
}
