//! File systems of their own for the tests that need a disk to misbehave: a small tmpfs to
//! fill (a full disk, no free inodes) and an ext4 image on a loop device to turn read-only
//! as `errors=remount-ro` does after an I/O error.
//!
//! Mounting needs root (CI runs as root). Where this process may not mount, the constructors
//! say why on stderr and return `None`, and the test stops there, passing: what each error
//! maps to is also tested without a mount, in the library. Every mount is undone when its
//! value drops, also when the test fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs of a given size on a temporary directory.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A tmpfs of `bytes`, or `None` (said why) where mounting one is not allowed.
    pub fn mount(bytes: u64) -> Option<SmallDisk> {
        SmallDisk::mount_with(&format!("size={bytes}"))
    }

    /// A tmpfs of `bytes` that holds at most `inodes` files and directories (its root
    /// directory is one of them).
    pub fn mount_with_inodes(bytes: u64, inodes: u64) -> Option<SmallDisk> {
        SmallDisk::mount_with(&format!("size={bytes},nr_inodes={inodes}"))
    }

    fn mount_with(options: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            skipped("cannot mount a tmpfs here (it needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// A path on this disk.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The mount's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free on the disk.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.dir.path())
            .output()
            .expect("stat -f");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        parts.next().unwrap() * parts.next().unwrap()
    }

    /// Fill the disk with a file (`filler`) until at most `free` bytes are left.
    pub fn fill_leaving(&self, free: u64) {
        let mut f = self.filler();
        let block = vec![0u8; 64 * 1024];
        // Twice at most: the file system's own blocks may take a little of what was free.
        for _ in 0..2 {
            let mut left = self.free_bytes().saturating_sub(free);
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if f.write_all(&block[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
            let _ = f.flush();
        }
    }

    /// Fill the disk with a file (`filler`) until less than 512 bytes are left.
    pub fn fill(&self) {
        let mut f = self.filler();
        for piece in [64 * 1024, 512] {
            let chunk = vec![0u8; piece];
            loop {
                match f.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        }
    }

    fn filler(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("filler"))
            .expect("filler")
    }

    /// Give back what [`SmallDisk::fill_leaving`] or [`SmallDisk::fill`] took.
    pub fn unfill(&self) {
        let _ = std::fs::remove_file(self.path("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// An ext4 file system in an image file on a loop device, mounted with
/// `errors=remount-ro` on a temporary directory. Dropped, it is unmounted and the loop
/// device detached, however the test ended.
#[derive(Debug)]
pub struct LoopExt4 {
    dir: tempfile::TempDir,
    device: String,
    mounted: bool,
}

impl LoopExt4 {
    /// Make and mount an ext4 of `bytes`; `None` (said why) where it cannot be done here:
    /// it needs root, `losetup`, `mkfs.ext4` and a free loop device.
    pub fn mount(bytes: u64) -> Option<LoopExt4> {
        match LoopExt4::try_mount(bytes) {
            Ok(disk) => Some(disk),
            Err(why) => {
                skipped(&format!(
                    "this test mounts an ext4 image on a loop device, which needs root, \
                     losetup, mkfs.ext4 and a free loop device ({why})"
                ));
                None
            }
        }
    }

    fn try_mount(bytes: u64) -> Result<LoopExt4, String> {
        if run("id", &["-u"])?.trim() != "0" {
            return Err("not root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
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

    /// Where it is mounted.
    pub fn mount_point(&self) -> PathBuf {
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
    pub fn abort(&self) {
        let mnt = self.mount_point();
        let mnt = mnt.to_str().unwrap();
        run("sync", &["-f", mnt]).unwrap();
        run("mount", &["-o", "remount,abort", mnt]).unwrap();
    }

    /// Unmount, check and repair (`e2fsck -fy`), mount again.
    pub fn repair(&mut self) {
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
        if self.mounted {
            unmount(&self.mount_point());
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Unmount `dir`; when still in use (a process of the test left running), detach it now:
/// it goes once that process ends.
fn unmount(dir: &Path) {
    let unmounted = Command::new("umount")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !unmounted {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// Say on stderr that the test is skipped, and why.
#[allow(clippy::print_stderr)]
fn skipped(why: &str) {
    eprintln!("skipped: {why}");
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
