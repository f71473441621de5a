//! Arbitrary bytes into the snapshot chunk decoder (what a receiver runs on every
//! SNAPSHOT_CHUNK and on every chunk of an imported snapshot file).
//!
//! Input layout: byte 0 picks the mode, the rest is data.
//! - mode even: the data is a whole chunk (version, CRC, declared length, zstd bytes), which
//!   exercises the header checks and the bounded decompression.
//! - mode odd: the data is a CHANGES-style payload that the target wraps in a valid chunk
//!   (zstd, correct length and checksum), so the fuzzer reaches the changes decoder behind
//!   the checksum.
//!
//! A chunk that decodes must survive encode → decode unchanged (compared through `Debug`,
//! so NaN payloads compare equal), and `verify_chunk` must accept exactly the chunks whose
//! decompression and checksum pass.

#![no_main]

use blazedb::limits::SNAPSHOT_CHUNK_CELLS_MAX;
use blazedb::sync::snapshot::{decode_chunk, encode_chunk, verify_chunk};
use libfuzzer_sys::fuzz_target;

/// The chunk layout of `sync/snapshot.rs`: version 2 (with `seen` lists), CRC-32 of the raw
/// bytes, their length, then the zstd frame.
fn wrap(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![2u8];
    out.extend_from_slice(&crc32fast::hash(raw).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&zstd::bulk::compress(raw, 1).expect("compresses"));
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let chunk = if mode & 1 == 1 {
        wrap(data)
    } else {
        data.to_vec()
    };
    let decoded = decode_chunk(&chunk, SNAPSHOT_CHUNK_CELLS_MAX);
    if decoded.is_ok() {
        assert!(verify_chunk(&chunk).is_ok(), "decodes but fails verification");
    }
    let Ok(changes) = decoded else {
        return;
    };
    let again = encode_chunk(&changes);
    let back = decode_chunk(&again, SNAPSHOT_CHUNK_CELLS_MAX).expect("own chunk decodes");
    assert_eq!(
        format!("{changes:?}"),
        format!("{back:?}"),
        "round trip changed the chunk"
    );
});
