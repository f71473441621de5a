//! A database file copied to a new file becomes a device of its own.
//!
//! A file's node id names its writes and its change feed to every peer. A byte copy of the
//! file — `cp` to a new name, a file carried to another machine, a container started from an
//! image that holds one — carries that id, and two files that both write and sync as one node
//! break sync: a peer keeps one cursor per node and takes each file's feed for the other's,
//! and never sends a node the cells written under its own id, so neither file hears of the
//! other's writes. Directly the two are refused (`SAME_NODE`); through a relay or a third
//! copy the writes of one were lost without an error (an audit of sync semantics,
//! 2026-12-07).
//!
//! So a file notes which file it is: its inode and its birth time, in `meta.file_stamp`. A
//! copy is a new file, with a new inode and birth time. An open that finds the stamp of
//! another file gives this one a new random node id before anything is read or written under
//! the old one, notes the old one as `meta.copied_from_node`, and stamps the file. From then
//! on the copy is a device of its own: its writes carry the new id; the cells it holds
//! under the old one stay what they are (the original's writes, which peers send it like
//! anyone's); its peers take it as a new node and receive its whole feed once (what they
//! hold already changes nothing). Counters stay right: the copy's increments go to its own
//! contribution.
//!
//! **What keeps a file's id**: reopening; renaming it within its file system; a hard link;
//! a rekey (which replaces the file by a re-encrypted copy, but writes the copy's own stamp
//! into it before the rename, `rekey.rs`, and renames it over the file a symbolic link leads
//! to, refusing a file with a second name); an open with `OpenOptions::identify_copy` off
//! (handles that only read, so that a look at a backup leaves it as it is). **What a stamp
//! does not see**: a backup copied *over* the live file (`cp backup.db live.db` writes into
//! the existing file, which keeps its inode and birth time), or a file system snapshot
//! rolled back. The file is then the same file with older contents, which the protocol's
//! rules for restored files handle (PROTOCOL.md §8.2). A backup put back as a new file
//! (`mv`, a restore tool) is a copy: it becomes a new device, which is as safe (its peers
//! send it everything of the old id that it lacks). Nor does it see a clone of a whole file
//! system or disk image (the same inode and birth time on another disk), or a copy that lands
//! on the same inode number of a file system without birth times (fresh file systems hand out
//! the same first inodes; an audit, 2026-12-07): the device number would tell those apart on
//! one machine, but it changes across reboots for btrfs subvolumes and removable disks, and
//! each change would cost a full resync, so it is not part of the stamp.
//!
//! **Where no stamp is written**: an open that cannot write (a read-only file or mount, a
//! full disk) leaves the file as it is and goes on under the id it found; the next open that
//! can write checks again. A file of a build before this one has no stamp: its first
//! writable open stamps it and keeps its id (a copy made before then is not told apart).
//!
//! A file system whose inode numbers change between mounts (some FUSE and SMB mounts) would
//! make every open after a remount a new device (a full resync each time, nothing lost);
//! SQLite's WAL mode, which every BlazeDB file uses, does not work on such network file
//! systems in any case. Where the platform does not give the birth time (older Linux kernels
//! on some file systems), the inode alone decides; where it gives neither, nothing is checked.

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::file_pin::FilePin;
use crate::NodeId;

/// Which file a database file is, as the file system says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    inode: Option<u64>,
    /// Birth time, nanoseconds since the Unix epoch.
    born_ns: Option<u128>,
}

impl FileStamp {
    /// The stamp of the file `meta` describes; `None` when the platform says neither part.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Option<FileStamp> {
        #[cfg(unix)]
        let inode = Some(std::os::unix::fs::MetadataExt::ino(meta));
        #[cfg(not(unix))]
        let inode = None;
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        (inode.is_some() || born_ns.is_some()).then_some(FileStamp { inode, born_ns })
    }

    /// As stored in `meta.file_stamp`: `inode=N born=NS`, a missing part left out.
    fn encode(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = self.inode {
            parts.push(format!("inode={i}"));
        }
        if let Some(b) = self.born_ns {
            parts.push(format!("born={b}"));
        }
        parts.join(" ")
    }

    /// A stored stamp; `None` for text this build does not read (a newer build's form),
    /// which is then taken as no stamp rather than as another file's.
    fn decode(s: &str) -> Option<FileStamp> {
        let mut stamp = FileStamp {
            inode: None,
            born_ns: None,
        };
        for part in s.split_whitespace() {
            match part.split_once('=')? {
                ("inode", v) => stamp.inode = Some(v.parse().ok()?),
                ("born", v) => stamp.born_ns = Some(v.parse().ok()?),
                _ => {}
            }
        }
        (stamp.inode.is_some() || stamp.born_ns.is_some()).then_some(stamp)
    }

    /// Whether both stamps are of one file: every part both have is equal. A part only one
    /// has is not compared (a kernel that started reporting birth times is no copy), but at
    /// least one part must be compared.
    fn same_file(&self, other: &FileStamp) -> bool {
        let inode = match (self.inode, other.inode) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        let born = match (self.born_ns, other.born_ns) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        match (inode, born) {
            (None, None) => true,
            (i, b) => i.unwrap_or(true) && b.unwrap_or(true),
        }
    }
}

/// The stamp of the file SQLite opened (through its pin).
fn stamp_of(pin: &FilePin) -> Option<FileStamp> {
    pin.metadata().ok().and_then(|m| FileStamp::of(&m))
}

/// The stamp to store in a new file (see [`super::schema::create`]).
pub(crate) fn stamp_of_new_file(pin: &FilePin) -> Option<String> {
    stamp_of(pin).map(|s| s.encode())
}

/// The stamp a rekey writes into its copy of `file` (the main database of `conn`) before
/// renaming it over `file`: the copy's own, so that it keeps the file's node id — but only
/// when the file is stamped as itself. A copy not yet given its own id (opened with
/// `OpenOptions::identify_copy` off) keeps the stamp it carries, of another file, and gets
/// its id at the next open.
pub(crate) fn stamp_for_replacement(
    conn: &Connection,
    file: &std::path::Path,
    copy: &std::path::Path,
) -> rusqlite::Result<Option<String>> {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).ok().and_then(|m| FileStamp::of(&m));
    let (Some(here), Some(copy)) = (stamp(file), stamp(copy)) else {
        return Ok(None);
    };
    Ok((read_stamp(conn)? == Some(here)).then(|| copy.encode()))
}

/// Give the file a node id of its own when it is a copy of another file (see the module
/// docs), and stamp it. Returns the node id it had when this open changed it.
pub(crate) fn reidentify_if_copied(
    conn: &Connection,
    pin: &FilePin,
) -> rusqlite::Result<Option<NodeId>> {
    let Some(here) = stamp_of(pin) else {
        return Ok(None);
    };
    // Almost every open: the file is the one its stamp names, and nothing is written.
    if read_stamp(conn)? == Some(here) {
        return Ok(None);
    }
    let written = (|| -> rusqlite::Result<Option<NodeId>> {
        // Under the write lock, looking again: another process may be opening the same copy
        // at this moment, and the first to get here gives it its id.
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let noted = read_stamp(&tx)?;
        if noted == Some(here) {
            tx.commit()?;
            return Ok(None);
        }
        let previous = match noted {
            Some(noted) if !noted.same_file(&here) => {
                let old: Vec<u8> =
                    tx.query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                        r.get(0)
                    })?;
                let new = NodeId::random();
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'node_id'",
                    [&new.0[..]],
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('copied_from_node', ?1)",
                    [&old],
                )?;
                old.try_into().ok().map(NodeId)
            }
            // No stamp yet (a file of an earlier build), or one with a part fewer: this file.
            _ => None,
        };
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('file_stamp', ?1)",
            [here.encode()],
        )?;
        tx.commit()?;
        Ok(previous)
    })();
    match written {
        // An open that may not write goes on as it found the file (see the module docs).
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(
                    ErrorCode::ReadOnly
                        | ErrorCode::CannotOpen
                        | ErrorCode::PermissionDenied
                        | ErrorCode::DiskFull
                )
            ) =>
        {
            Ok(None)
        }
        r => r,
    }
}

fn read_stamp(conn: &Connection) -> rusqlite::Result<Option<FileStamp>> {
    let v: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'file_stamp'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(v.as_deref().and_then(FileStamp::decode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(inode: Option<u64>, born_ns: Option<u128>) -> FileStamp {
        FileStamp { inode, born_ns }
    }

    #[test]
    fn a_stamp_reads_back_as_written() {
        for s in [
            stamp(Some(7), Some(1_700_000_000_123_456_789)),
            stamp(Some(7), None),
            stamp(None, Some(5)),
        ] {
            assert_eq!(FileStamp::decode(&s.encode()), Some(s));
        }
        assert_eq!(FileStamp::decode(""), None);
        assert_eq!(FileStamp::decode("inode=x"), None);
        // A part a later build may add is passed over.
        assert_eq!(
            FileStamp::decode("inode=3 volume=9"),
            Some(stamp(Some(3), None))
        );
    }

    #[test]
    fn a_file_is_another_when_a_part_both_stamps_have_differs() {
        let a = stamp(Some(1), Some(10));
        assert!(a.same_file(&a));
        assert!(!a.same_file(&stamp(Some(2), Some(10))));
        // A new file that got a freed inode number back is told apart by its birth time.
        assert!(!a.same_file(&stamp(Some(1), Some(11))));
        // A birth time the platform started or stopped reporting is not compared.
        assert!(a.same_file(&stamp(Some(1), None)));
        assert!(!a.same_file(&stamp(Some(2), None)));
        assert!(stamp(None, Some(10)).same_file(&stamp(Some(1), None)));
    }
}
