//! Snapshot chunks and snapshot files: how a whole copy of the records travels.
//!
//! A **chunk** is one page of [`Database::snapshot_page`], encoded with a fresh session
//! dictionary (so every chunk decodes on its own, in any session), compressed with zstd and
//! checksummed:
//!
//! ```text
//! chunk := u8 version (1) | u32 crc32 of raw (LE) | u32 raw length (LE) | zstd frame of raw
//! raw   := CHANGES payload (see `Dict::encode_changes`)
//! ```
//!
//! The declared raw length is checked against `SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX` before
//! anything is allocated, and decompression never writes past it, so a zstd bomb fails
//! cleanly.
//!
//! A **snapshot file** (`blazedb snapshot export`) seeds a device offline:
//!
//! ```text
//! file    := header | entry* | trailer
//! header  := "BLZSNAP1" | source node id [16] | position u64 (LE) | chunk count u32 (LE)
//!          | "BLZSNAP2" | source node id [16] | position u64 (LE) | chunk count u32 (LE)
//!            | flags u32 (LE)   (bit 0: the writer holds part of its peers' data only)
//! entry   := u16 collection length (LE) | collection | id [16]   (the chunk's last record,
//!            or the record before it for a piece of a split record: PROTOCOL.md §5.9)
//!            | u32 chunk length (LE) | chunk
//! trailer := u32 crc32 of everything before it (LE) | "BLZSNEND"
//! ```
//!
//! Importing checks the whole file (structure and trailer checksum) before it touches the
//! database, then stages and applies it as a snapshot received from the source node, so a
//! later sync with that node continues from the position and sends nothing twice.
//!
//! A file of a writer that holds only part of its peers' data (a partial replica, a relay's
//! client: `session::holds_part_of_peers_data`) says so (flag bit 0, in a `BLZSNAP2`
//! header; a whole copy's file keeps the `BLZSNAP1` header older builds read): a record
//! missing from it may just be outside the writer's view, so the import evicts nothing.
//! Read as a whole copy's, such a file took records (and fields) the writer had evicted away
//! from a full copy that had them from it, and the full copy never got them back (an audit,
//! 2026-12-06).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::codec::DecodeError;
use crate::error::{Error, Result};
use crate::limits::{
    COLLECTION_NAME_BYTES_MAX, RECORD_BYTES_MAX, SNAPSHOT_CHUNKS_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
    SNAPSHOT_CHUNK_CELLS, SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX, SNAPSHOT_PAGE_BODY_BYTES_TARGET,
    SNAPSHOT_ZSTD_LEVEL,
};
use crate::store::{Change, Database, PeerDirection, SnapshotApplied, SnapshotKey, SnapshotScope};
use crate::sync::message::{approx_cell_bytes, Dict, RecordCells};
use crate::types::Seq;
use crate::{NodeId, RecordId};

/// The version byte every chunk starts with: 1, or 2 when a cell carries a reset's `seen`
/// list (cell flag 0x80, protocol 4), which a build that reads only 1 would refuse as
/// malformed; told by the version, it asks to be upgraded instead. A chunk without lists
/// stays version 1, readable by older builds.
const CHUNK_VERSION: u8 = 2;
/// Chunks without `seen` lists.
const CHUNK_VERSION_NO_SEEN: u8 = 1;
/// Bytes before the zstd frame: version, crc32, raw length.
const CHUNK_HEADER_BYTES: usize = 9;
/// First bytes of a snapshot file.
pub const FILE_MAGIC: &[u8; 8] = b"BLZSNAP1";
/// Last bytes of a complete snapshot file.
const FILE_END: &[u8; 8] = b"BLZSNEND";
/// First bytes of a snapshot file whose header ends with flags.
const FILE_MAGIC_FLAGS: &[u8; 8] = b"BLZSNAP2";
/// Flag: the writer holds only part of its peers' data.
const FLAG_WRITER_PARTIAL: u32 = 1;
/// magic, node id, position, chunk count (and, after `FILE_MAGIC_FLAGS`, 4 bytes of flags).
const FILE_HEADER_BYTES: usize = 8 + 16 + 8 + 4;

/// Encode one page of a snapshot as a chunk (see the module docs).
pub fn encode_chunk(changes: &[Change]) -> Vec<u8> {
    let records: Vec<RecordCells<'_>> = changes.iter().map(RecordCells::from).collect();
    encode_chunk_of(&records)
}

/// The key a chunk names as its last record when the first record it holds cells of is
/// also the snapshot's first and goes on in the next chunk: no record sorts before it (no
/// collection has an empty name), so a snapshot resumed after it starts from the beginning.
pub fn key_before_all() -> SnapshotKey {
    SnapshotKey {
        collection: String::new(),
        id: RecordId([0; 16]),
    }
}

/// The chunks of one snapshot page, each with the key it names as its last record: one chunk,
/// unless `split` and a record of the page is larger than `RECORD_BYTES_MAX` (only a merge of
/// concurrent writes makes one). Whole, such a record may not fit in a frame (its chunk was
/// refused by every receiver, for good); its cells go in consecutive chunks of their own, of
/// about `SNAPSHOT_PAGE_BODY_BYTES_TARGET` each. Each chunk but the record's last names as its
/// last record the one before it (`before`, where the page began, for the page's first; or
/// [`key_before_all`]): a snapshot resumed after such a chunk sends the record again from its
/// start, and a receiver tells that the record goes on in the next chunk (PROTOCOL.md §5.9).
pub fn page_chunks(
    changes: &[Change],
    before: Option<&SnapshotKey>,
    split: bool,
) -> Vec<(SnapshotKey, Vec<u8>)> {
    let key = |ch: &Change| SnapshotKey {
        collection: ch.collection.clone(),
        id: ch.id,
    };
    let mut out = Vec::new();
    let mut run: Vec<RecordCells<'_>> = Vec::new();
    let mut before = before.cloned();
    let flush = |run: &mut Vec<RecordCells<'_>>, out: &mut Vec<(SnapshotKey, Vec<u8>)>| {
        if let Some(last) = run.last() {
            let k = SnapshotKey {
                collection: last.collection.to_owned(),
                id: last.id,
            };
            out.push((k, encode_chunk_of(run)));
            run.clear();
        }
    };
    for ch in changes {
        let bytes = || ch.cells.iter().map(approx_cell_bytes).sum::<usize>();
        if split && bytes() > RECORD_BYTES_MAX {
            flush(&mut run, &mut out);
            let (mut from, mut piece) = (0, 0);
            for (j, c) in ch.cells.iter().enumerate() {
                piece += approx_cell_bytes(c);
                if piece >= SNAPSHOT_PAGE_BODY_BYTES_TARGET && j + 1 < ch.cells.len() {
                    let last = before.clone().unwrap_or_else(key_before_all);
                    out.push((
                        last,
                        encode_chunk_of(&[RecordCells::piece(ch, from..j + 1)]),
                    ));
                    (from, piece) = (j + 1, 0);
                }
            }
            let rest = RecordCells::piece(ch, from..ch.cells.len());
            out.push((key(ch), encode_chunk_of(&[rest])));
        } else {
            run.push(ch.into());
        }
        before = Some(key(ch));
    }
    flush(&mut run, &mut out);
    out
}

/// `changes` cut into runs of whole records of at most `SNAPSHOT_CHUNK_CELLS` cells and
/// about `SNAPSHOT_PAGE_BODY_BYTES_TARGET` bytes each, like a page: for records a sender
/// sends again (`SnapshotPage::changed_before`), which come in any number. A record larger
/// than that is a run of its own ([`page_chunks`] then splits it).
pub fn bounded_parts(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut parts: Vec<Vec<Change>> = Vec::new();
    let (mut run, mut cells, mut bytes) = (Vec::new(), 0usize, 0usize);
    for ch in changes {
        let n = ch.cells.len();
        let b = ch.cells.iter().map(approx_cell_bytes).sum::<usize>();
        if !run.is_empty()
            && (cells + n > SNAPSHOT_CHUNK_CELLS || bytes + b > SNAPSHOT_PAGE_BODY_BYTES_TARGET)
        {
            parts.push(std::mem::take(&mut run));
            (cells, bytes) = (0, 0);
        }
        run.push(ch);
        cells += n;
        bytes += b;
    }
    if !run.is_empty() {
        parts.push(run);
    }
    parts
}

fn encode_chunk_of(records: &[RecordCells<'_>]) -> Vec<u8> {
    let end = records.last().map_or(Seq(0), |c| c.seq);
    let raw = Dict::default().encode_records(records, end);
    let compressed = zstd::bulk::compress(&raw, SNAPSHOT_ZSTD_LEVEL)
        .expect("zstd compression of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(CHUNK_HEADER_BYTES + compressed.len());
    let any_seen = records.iter().any(|r| {
        r.cells
            .iter()
            .any(|c| c.prev.is_some() && !c.seen.is_empty())
    });
    out.push(if any_seen {
        CHUNK_VERSION
    } else {
        CHUNK_VERSION_NO_SEEN
    });
    out.extend_from_slice(&crc32fast::hash(&raw).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&compressed);
    out
}

/// Decompress a chunk and check its checksum, without decoding the changes: what a receiver
/// runs before staging a chunk, so that a damaged one is asked for again at once.
pub fn verify_chunk(bytes: &[u8]) -> std::result::Result<(), DecodeError> {
    decompress_chunk(bytes).map(|_| ())
}

/// Decode a chunk made by [`encode_chunk`]. `cells_budget` bounds how many cells it may
/// hold. Cells come back with seq 0; each change keeps its record's seq at the sender.
pub fn decode_chunk(
    bytes: &[u8],
    cells_budget: usize,
) -> std::result::Result<Vec<Change>, DecodeError> {
    let raw = decompress_chunk(bytes)?;
    let (changes, _) = Dict::default().decode_changes(&raw, cells_budget)?;
    Ok(changes)
}

fn decompress_chunk(bytes: &[u8]) -> std::result::Result<Vec<u8>, DecodeError> {
    if bytes.len() < CHUNK_HEADER_BYTES {
        return Err(DecodeError::Truncated {
            offset: 0,
            needed: CHUNK_HEADER_BYTES - bytes.len(),
        });
    }
    if bytes.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            what: "snapshot chunk",
            got: bytes.len() as u64,
            max: SNAPSHOT_CHUNK_BYTES_MAX as u64,
        });
    }
    if !(CHUNK_VERSION_NO_SEEN..=CHUNK_VERSION).contains(&bytes[0]) {
        return Err(DecodeError::Malformed(format!(
            "snapshot chunk version {} is not supported (this build reads {CHUNK_VERSION}); \
             upgrade BlazeDB",
            bytes[0]
        )));
    }
    let crc = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let raw_len = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
    if raw_len > SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            what: "decompressed snapshot chunk",
            got: raw_len as u64,
            max: SNAPSHOT_CHUNK_DECOMPRESSED_BYTES_MAX as u64,
        });
    }
    // The output buffer holds exactly the declared length: a frame that inflates past it
    // fails here instead of allocating more.
    let raw = zstd::bulk::decompress(&bytes[CHUNK_HEADER_BYTES..], raw_len).map_err(|e| {
        DecodeError::Malformed(format!(
            "snapshot chunk does not decompress to its declared {raw_len} bytes: {e}"
        ))
    })?;
    if raw.len() != raw_len {
        return Err(DecodeError::Malformed(format!(
            "snapshot chunk decompressed to {} bytes but declared {raw_len}",
            raw.len()
        )));
    }
    if crc32fast::hash(&raw) != crc {
        return Err(DecodeError::Malformed(
            "snapshot chunk failed its checksum (corrupted); ask for it again".into(),
        ));
    }
    Ok(raw)
}

/// What [`write_snapshot_file`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFileInfo {
    /// The node the snapshot was taken from.
    pub node: NodeId,
    /// Its feed position: a later sync with it continues from here.
    pub position: Seq,
    /// Chunks in the file.
    pub chunks: u32,
    /// Records (live and tombstones).
    pub records: u64,
    /// Cells.
    pub cells: u64,
    /// File size.
    pub bytes: u64,
    /// The writer holds only part of its peers' data (a partial replica, a relay's client):
    /// an import evicts nothing the file lacks.
    pub partial: bool,
}

/// Write a snapshot of every record of `db` to `path`. The file appears complete or not at
/// all: it is written beside `path` and renamed into place. It is not encrypted, even when
/// the database is: on Unix it is created with mode 0600 (owner only). An existing file at
/// `path` is replaced only if it is a snapshot file itself: anything else (a database, by a
/// slip of the argument order) is refused.
pub fn write_snapshot_file(db: &Database, path: &Path) -> Result<SnapshotFileInfo> {
    check_snapshot_target(db, path)?;
    let partial = partial_path(path);
    let named = |e: crate::Error| match e {
        crate::Error::Io(io) => crate::Error::Io(std::io::Error::new(
            io.kind(),
            format!("cannot write the snapshot file {}: {io}", path.display()),
        )),
        other => other,
    };
    let r = write_file(db, &partial).map_err(named).and_then(|info| {
        std::fs::rename(&partial, path).map_err(|e| named(e.into()))?;
        Ok(info)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    r
}

/// Refuse a target the rename would destroy or cannot take: the database itself (or its
/// WAL or shared-memory file), or a directory.
fn check_snapshot_target(db: &Database, path: &Path) -> Result<()> {
    let bad = |why: String| Err(crate::Error::InvalidArgument(why));
    if path.is_dir() {
        return bad(format!(
            "{} is a directory: give the snapshot file's name (e.g. {}/snapshot.blz)",
            path.display(),
            path.display()
        ));
    }
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    if let (Some(target), Some(file)) = (real(path), real(db.path())) {
        let mut own = vec![file.clone()];
        for suffix in ["-wal", "-shm"] {
            let mut p = file.clone().into_os_string();
            p.push(suffix);
            own.push(PathBuf::from(p));
        }
        if own.contains(&target) {
            return bad(format!(
                "{} is the database's own file: write the snapshot to another path",
                path.display()
            ));
        }
    }
    if path.exists() {
        let mut head = [0u8; 8];
        let is_snapshot = File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && (&head == FILE_MAGIC || &head == FILE_MAGIC_FLAGS);
        if !is_snapshot {
            return bad(format!(
                "{} exists and is not a snapshot file: give a new name (or remove that file \
                 first, if it is really not needed)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Create (or truncate) `path` readable and writable by its owner only. A snapshot file holds
/// every record in clear, even of an encrypted database, so it must not come out readable by
/// every user of the machine as the umask would usually make it.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let file = options.mode(0o600).open(path)?;
        // `mode` applies only when the file is created: a `.partial` left by an earlier,
        // interrupted export keeps its old mode otherwise.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn write_file(db: &Database, path: &Path) -> Result<SnapshotFileInfo> {
    let file = create_private(path)?;
    let mut out = BufWriter::new(file);
    let mut info = SnapshotFileInfo {
        node: db.node_id(),
        position: Seq(0),
        chunks: 0,
        records: 0,
        cells: 0,
        bytes: 0,
        partial: crate::sync::session::holds_part_of_peers_data(db)?,
    };
    // The header is written again once the chunk count is known; the trailer's checksum is
    // the header's combined with the body's.
    out.write_all(&file_header(&info))?;
    let mut body = crc32fast::Hasher::new();
    let mut body_len = 0u64;
    let mut after: Option<SnapshotKey> = None;
    let mut read_through: Option<Seq> = None;
    loop {
        // Records read by earlier pages and changed since come again, whole (see
        // `SnapshotPage::changed_before`): the file stands for one state of the database.
        let page = db.snapshot_page_of_collections(
            after.as_ref(),
            read_through,
            SNAPSHOT_CHUNK_CELLS,
            &mut |_| true,
        )?;
        if after.is_none() {
            info.position = page.position;
        }
        read_through = Some(page.position);
        let again = bounded_parts(page.changed_before);
        // A record too large for one chunk (only a merge makes one) goes in pieces, which
        // the import joins (§5.9 of PROTOCOL.md; the staged apply carries each chunk's last
        // record into the next): whole, its chunk could exceed what a reader decompresses.
        for records in again.iter().chain(std::iter::once(&page.changes)) {
            for (last, chunk) in page_chunks(records, after.as_ref(), true) {
                if info.chunks as usize >= SNAPSHOT_CHUNKS_MAX {
                    return Err(Error::InvalidArgument(format!(
                        "the snapshot needs more than {SNAPSHOT_CHUNKS_MAX} chunks"
                    )));
                }
                let mut entry = Vec::with_capacity(chunk.len() + 64);
                entry.extend_from_slice(&(last.collection.len() as u16).to_le_bytes());
                entry.extend_from_slice(last.collection.as_bytes());
                entry.extend_from_slice(&last.id.0);
                entry.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                entry.extend_from_slice(&chunk);
                out.write_all(&entry)?;
                body.update(&entry);
                body_len += entry.len() as u64;
                info.chunks += 1;
            }
        }
        // Records and cells of the database, each once.
        info.records += page.changes.len() as u64;
        info.cells += page
            .changes
            .iter()
            .map(|c| c.cells.len() as u64)
            .sum::<u64>();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let header = file_header(&info);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.combine(&body);
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(FILE_END)?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
    info.bytes = header.len() as u64 + body_len + 4 + FILE_END.len() as u64;
    Ok(info)
}

fn file_header(info: &SnapshotFileInfo) -> Vec<u8> {
    let mut h = Vec::with_capacity(FILE_HEADER_BYTES + 4);
    h.extend_from_slice(if info.partial {
        FILE_MAGIC_FLAGS
    } else {
        FILE_MAGIC
    });
    h.extend_from_slice(&info.node.0);
    h.extend_from_slice(&info.position.0.to_le_bytes());
    h.extend_from_slice(&info.chunks.to_le_bytes());
    if info.partial {
        h.extend_from_slice(&FLAG_WRITER_PARTIAL.to_le_bytes());
    }
    h
}

/// Seed `db` from a snapshot file: check the whole file, then stage and apply it as a
/// snapshot received from its source node (all collections in scope; local records the
/// source has not seen are kept). On any error the database is left as it was.
pub fn import_snapshot_file(db: &Database, path: &Path) -> Result<SnapshotApplied> {
    let bad = |what: String| {
        Error::InvalidArgument(format!(
            "{} is not a usable snapshot file: {what}",
            path.display()
        ))
    };
    // Pass 1: structure and checksum, nothing kept in memory but one chunk.
    let (source, position, chunks, snap_id, partial) = {
        let mut file = SnapshotReader::open(path)?;
        let header = file.header().map_err(bad)?;
        while file.next_entry(&header).map_err(bad)?.is_some() {}
        let crc = file.trailer().map_err(bad)?;
        (
            header.node,
            header.position,
            header.chunks,
            u64::from(crc) << 32 | u64::from(header.chunks),
            header.flags & FLAG_WRITER_PARTIAL != 0,
        )
    };
    if source == db.node_id() {
        return Err(Error::InvalidArgument(format!(
            "{} was exported from this database (node {source}); import it into another one",
            path.display()
        )));
    }
    let received = db.peer_cursor(source, PeerDirection::Received)?;
    if received > position {
        return Err(Error::InvalidArgument(format!(
            "{} is older than what this database holds: it has received node {source}'s \
             changes up to {}, past the file's position {}; sync with that node instead",
            path.display(),
            received.0,
            position.0
        )));
    }
    // Pass 2: stage and apply. Any failure drops what was staged.
    // A file says nothing of what its writer had received of ours (it may be older than
    // our last sync with it): nothing counts as seen, so only records that came from the
    // writer can be evicted.
    db.snapshot_begin(source, snap_id, position, Seq(0))?;
    let staged = (|| -> Result<SnapshotApplied> {
        let mut file = SnapshotReader::open(path)?;
        let header = file.header().map_err(bad)?;
        let mut idx = 0u32;
        while let Some((key, chunk)) = file.next_entry(&header).map_err(bad)? {
            verify_chunk(&chunk).map_err(|e| bad(format!("chunk {idx}: {e}")))?;
            db.snapshot_stage_chunk(source, snap_id, idx, &key, &chunk)?;
            idx += 1;
        }
        file.trailer().map_err(bad)?;
        // From a writer holding part of the data, a record the file lacks may be one it
        // never held or evicted: nothing is evicted.
        let holds_nothing_missing = |_: &str, _: RecordId, _: &crate::crdt::RecordState| false;
        let peer_holds: Option<&crate::store::PeerHolds<'_>> =
            partial.then_some(&holds_nothing_missing);
        db.snapshot_finish_within(
            source,
            snap_id,
            chunks,
            &SnapshotScope::default(),
            peer_holds,
        )
    })();
    match staged {
        Ok(applied) => {
            // The source never got an ACK for this: see `NOTE_RECEIVED_BY_FILE`. The import
            // has committed; without the note the first sync only sends the source its own
            // cells back, so a failure to write it is no failure of the import.
            let _ = db.set_peer_note(
                source,
                crate::sync::session::NOTE_RECEIVED_BY_FILE,
                Some(&position.0.to_string()),
            );
            Ok(applied)
        }
        Err(e) => {
            let _ = db.snapshot_abort(source);
            Err(e)
        }
    }
}

/// The header of a snapshot file.
struct FileHeader {
    node: NodeId,
    position: Seq,
    chunks: u32,
    /// 0 in a `BLZSNAP1` header.
    flags: u32,
}

/// Reads a snapshot file front to back, checksumming as it goes.
struct SnapshotReader {
    input: BufReader<File>,
    crc: crc32fast::Hasher,
    read_chunks: u32,
}

impl SnapshotReader {
    fn open(path: &Path) -> Result<SnapshotReader> {
        let file = File::open(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open snapshot file {}: {e}", path.display()),
            ))
        })?;
        Ok(SnapshotReader {
            input: BufReader::new(file),
            crc: crc32fast::Hasher::new(),
            read_chunks: 0,
        })
    }

    fn exact(&mut self, n: usize, what: &str) -> std::result::Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        let got = (&mut self.input)
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading {what}: {e}"))?;
        if got < n {
            return Err(format!(
                "truncated in the {what} (the export did not finish or the copy was cut short)"
            ));
        }
        self.crc.update(&buf);
        Ok(buf)
    }

    fn header(&mut self) -> std::result::Result<FileHeader, String> {
        let magic = self.exact(8, "header")?;
        if magic != FILE_MAGIC && magic != FILE_MAGIC_FLAGS {
            return Err(
                "it does not start with BLZSNAP1 or BLZSNAP2 (make one with `blazedb snapshot \
                 export`)"
                    .into(),
            );
        }
        let h = self.exact(FILE_HEADER_BYTES - 8, "header")?;
        let node = NodeId(h[..16].try_into().expect("16 bytes"));
        let position = Seq(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")));
        let chunks = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
        let flags = if magic == FILE_MAGIC_FLAGS {
            let f = self.exact(4, "header")?;
            u32::from_le_bytes(f.try_into().expect("4 bytes"))
        } else {
            0
        };
        if flags & !FLAG_WRITER_PARTIAL != 0 {
            return Err(format!(
                "it has header flags {flags:#x} this build does not know: import it with a \
                 newer BlazeDB"
            ));
        }
        if chunks as usize > SNAPSHOT_CHUNKS_MAX {
            return Err(format!(
                "it claims {chunks} chunks, over the limit of {SNAPSHOT_CHUNKS_MAX}"
            ));
        }
        Ok(FileHeader {
            node,
            position,
            chunks,
            flags,
        })
    }

    /// The next chunk and its last record, or `None` after the last one.
    fn next_entry(
        &mut self,
        header: &FileHeader,
    ) -> std::result::Result<Option<(SnapshotKey, Vec<u8>)>, String> {
        if self.read_chunks == header.chunks {
            return Ok(None);
        }
        let what = format!("chunk {}", self.read_chunks);
        let n = u16::from_le_bytes(self.exact(2, &what)?.try_into().expect("2 bytes")) as usize;
        if n > COLLECTION_NAME_BYTES_MAX {
            return Err(format!("{what} names a collection of {n} bytes"));
        }
        let collection = String::from_utf8(self.exact(n, &what)?)
            .map_err(|_| format!("{what} names a collection that is not UTF-8"))?;
        let id = RecordId(self.exact(16, &what)?.try_into().expect("16 bytes"));
        // No collection has an empty name: only the first piece of a split first record
        // names the key before every record (`key_before_all`).
        let key = SnapshotKey { collection, id };
        if key.collection.is_empty() && key != key_before_all() {
            return Err(format!(
                "{what} names a record of a collection without a name"
            ));
        }
        let len = u32::from_le_bytes(self.exact(4, &what)?.try_into().expect("4 bytes")) as usize;
        if len > SNAPSHOT_CHUNK_BYTES_MAX {
            return Err(format!(
                "{what} is {len} bytes, over the limit of {SNAPSHOT_CHUNK_BYTES_MAX}"
            ));
        }
        let chunk = self.exact(len, &what)?;
        self.read_chunks += 1;
        Ok(Some((key, chunk)))
    }

    /// Check the trailer; returns the file's checksum.
    fn trailer(&mut self) -> std::result::Result<u32, String> {
        let expected = self.crc.clone().finalize();
        let mut t = [0u8; 12];
        self.input
            .read_exact(&mut t)
            .map_err(|_| "truncated before its trailer (the export did not finish)".to_string())?;
        if &t[4..] != FILE_END {
            return Err(
                "its trailer is damaged, or it holds more chunks than its header says".into(),
            );
        }
        let crc = u32::from_le_bytes(t[..4].try_into().expect("4 bytes"));
        if crc != expected {
            return Err("it failed its checksum (corrupted); export it again".into());
        }
        let mut extra = [0u8; 1];
        if self.input.read(&mut extra).map_err(|e| e.to_string())? != 0 {
            return Err("it has bytes after its trailer".into());
        }
        Ok(crc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Cell, CellKey, CellValue, Seen};
    use crate::types::{Hlc, Version};
    use crate::Value;

    fn change(i: u8) -> Change {
        let version = Version {
            hlc: Hlc(1_000_000 + u64::from(i)),
            node: NodeId([7; 16]),
        };
        Change {
            seq: Seq(u64::from(i) + 1),
            collection: "c".into(),
            id: RecordId([i; 16]),
            cells: vec![
                Cell {
                    key: CellKey::Record,
                    value: CellValue::Present,
                    version,
                    prev: None,
                    seen: Seen::default(),
                    seq: Seq(0),
                },
                Cell {
                    key: CellKey::Field("x".into()),
                    value: CellValue::Value(Value::Int(i64::from(i))),
                    version,
                    prev: None,
                    seen: Seen::default(),
                    seq: Seq(0),
                },
            ],
        }
    }

    /// A tombstone whose delete had seen writes of two nodes: its list travels along.
    fn tombstone(i: u8) -> Change {
        let at = |t: u64, n: u8| Version {
            hlc: Hlc(t),
            node: NodeId([n; 16]),
        };
        Change {
            seq: Seq(u64::from(i) + 1),
            collection: "c".into(),
            id: RecordId([i; 16]),
            cells: vec![Cell {
                key: CellKey::Record,
                value: CellValue::Absent,
                version: at(2_000_000, 7),
                prev: Some(at(1_999_000, 7)),
                seen: Seen::from_versions([at(1_999_000, 7), at(1_500_000, 9)]),
                seq: Seq(0),
            }],
        }
    }

    #[test]
    fn chunks_round_trip() {
        let changes: Vec<Change> = (0..50).map(change).collect();
        let chunk = encode_chunk(&changes);
        assert_eq!(
            chunk[0], CHUNK_VERSION_NO_SEEN,
            "no lists: readable by older builds"
        );
        assert_eq!(decode_chunk(&chunk, 1000).unwrap(), changes);
        let with_lists: Vec<Change> = (0..50)
            .map(|i| if i % 3 == 0 { tombstone(i) } else { change(i) })
            .collect();
        let chunk = encode_chunk(&with_lists);
        assert_eq!(chunk[0], CHUNK_VERSION);
        assert_eq!(decode_chunk(&chunk, 1000).unwrap(), with_lists);
        verify_chunk(&chunk).unwrap();
        assert!(matches!(
            decode_chunk(&chunk, 10),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn damage_never_yields_different_data() {
        let changes: Vec<Change> = (0..50).map(change).collect();
        let chunk = encode_chunk(&changes);
        for i in 0..chunk.len() {
            let mut bad = chunk.clone();
            bad[i] ^= 0x55;
            // A flip in a zstd field that does not change the output (e.g. the window size)
            // may decode; anything else must fail the checksum or the structure.
            if let Ok(got) = decode_chunk(&bad, 1000) {
                assert_eq!(got, changes, "byte {i}");
            }
        }
        for n in 0..chunk.len() {
            assert!(decode_chunk(&chunk[..n], 1000).is_err(), "cut at {n}");
        }
    }
}
