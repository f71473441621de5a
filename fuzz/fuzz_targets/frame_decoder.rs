//! Arbitrary bytes into `FrameDecoder`, in arbitrary splits, and every frame that comes out
//! decoded as a message with a session dictionary (CHANGES included).
//!
//! Input layout: byte 0 picks the mode, bytes 1..5 pick the split sizes, the rest is data.
//! - mode even: the data is the raw byte stream, checksums and all (exercises the framing).
//! - mode odd: the data is a list of `kind u8 | flags u8 | len u16 LE | payload` bodies that
//!   the target frames itself with correct lengths and checksums, so the fuzzer reaches the
//!   decompression and message decoders instead of stopping at the CRC.
//!
//! Every message that decodes must survive encode → decode unchanged (compared through
//! `Debug`, so NaN payloads compare equal).

#![no_main]

use blazedb::limits::TRANSACTION_CELLS_MAX;
use blazedb::sync::frame::{FrameDecoder, FrameEncoder};
use blazedb::sync::message::{decode_simple, encode_simple, kind, Dict, Message};
use libfuzzer_sys::fuzz_target;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Frame `kind | flags | payload` bodies with correct lengths and checksums.
fn framed(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = 0u64;
    while data.len() >= 4 {
        let (k, flags) = (data[0], data[1]);
        let len = usize::from(u16::from_le_bytes([data[2], data[3]])).min(data.len() - 4);
        let mut body = vec![k, flags];
        body.extend_from_slice(&data[4..4 + len]);
        data = &data[4 + len..];
        let mut h = crc32fast::Hasher::new();
        h.update(&index.to_le_bytes());
        h.update(&body);
        varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        index += 1;
    }
    out
}

/// Decoded messages re-encoded through a second dictionary pair must decode to the same.
struct Echo {
    tx: Dict,
    rx: Dict,
    enc: FrameEncoder,
    dec: FrameDecoder,
}

impl Echo {
    fn check(&mut self, m: &Message) {
        let (k, payload) = match m {
            Message::Changes { changes, end, .. } => {
                (kind::CHANGES, self.tx.encode_changes(changes, *end))
            }
            other => encode_simple(other),
        };
        let partial = matches!(m, Message::Changes { partial: true, .. });
        self.dec.push(&self.enc.encode(k, partial, &payload));
        let f = self
            .dec
            .next_frame()
            .expect("own frame decodes")
            .expect("complete");
        let back = if f.kind == kind::CHANGES {
            let (changes, end) = self
                .rx
                .decode_changes(&f.payload, TRANSACTION_CELLS_MAX)
                .expect("own CHANGES decodes");
            Message::Changes {
                changes,
                end,
                partial: f.partial,
            }
        } else {
            decode_simple(f.kind, &f.payload).expect("own message decodes")
        };
        assert_eq!(
            format!("{m:?}"),
            format!("{back:?}"),
            "round trip changed the message"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 5 {
        return;
    }
    let mode = input[0];
    let splits: Vec<usize> = input[1..5]
        .iter()
        .map(|b| usize::from(*b % 64) + 1)
        .collect();
    let stream = if mode & 1 == 1 {
        framed(&input[5..])
    } else {
        input[5..].to_vec()
    };
    // Compressed frames too, whatever the peer said in HELLO: the decoder must cope.
    let mut enc = FrameEncoder::default();
    enc.lz4 = mode & 2 == 2;
    let mut echo = Echo {
        tx: Dict::default(),
        rx: Dict::default(),
        enc,
        dec: FrameDecoder::default(),
    };
    let mut decoder = FrameDecoder::default();
    let mut dict = Dict::default();
    let mut rest = &stream[..];
    let mut i = 0;
    while !rest.is_empty() {
        let n = splits[i % splits.len()].min(rest.len());
        i += 1;
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                // Needs more bytes, or the session would end here.
                Ok(None) => break,
                Err(_) => return,
            };
            let msg = if frame.kind == kind::CHANGES {
                match dict.decode_changes(&frame.payload, TRANSACTION_CELLS_MAX) {
                    Ok((changes, end)) => Message::Changes {
                        changes,
                        end,
                        partial: frame.partial,
                    },
                    // The dictionary is now out of step: a session ends here.
                    Err(_) => return,
                }
            } else {
                match decode_simple(frame.kind, &frame.payload) {
                    Ok(m) => m,
                    Err(_) => return,
                }
            };
            echo.check(&msg);
        }
    }
});
