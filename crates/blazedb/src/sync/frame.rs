//! Framing: length, type, flags, payload, checksum.
//!
//! ```text
//! frame := varint body_len | body | crc32 (u32 LE)
//! body  := type (u8) | flags (u8) | payload
//! crc32 := CRC-32 (IEEE) of (frame_index as u64 LE ‖ body)
//! ```
//! `frame_index` counts the frames sent in one direction of a session, starting at 0; it is
//! not transmitted. A dropped, duplicated or reordered frame therefore fails its checksum, as
//! does a corrupted one — and since session dictionaries depend on every earlier frame, that
//! is exactly when a session must end.
//!
//! Flags: bit 0 = payload is LZ4-compressed (`varint raw_len | lz4 block`), bit 1 = payload is
//! zstd-compressed (same layout), bit 2 = PARTIAL (a CHANGES frame whose unit continues in
//! the next frame). Other bits must be zero.
//!
//! A stream's first frame (index 0) is a HELLO, read before the peer has presented any
//! credential: its body may be at most `FIRST_FRAME_BYTES_MAX` (64 KiB, not
//! `FRAME_BYTES_MAX`), refused as soon as its length prefix is read, and it is never
//! compressed (compression is agreed in the HELLOs, so nothing before them can use it).

use crate::codec::varint::{len_u64, write_u64};
use crate::codec::{DecodeError, Reader};
use crate::limits::{
    COMPRESS_BYTES_MIN, FIRST_FRAME_BYTES_MAX, FRAME_BYTES_MAX, FRAME_DECOMPRESSED_BYTES_MAX,
};

/// Payload is LZ4-compressed.
pub const FLAG_LZ4: u8 = 0b001;
/// Payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0b010;
/// More frames of this unit follow.
pub const FLAG_PARTIAL: u8 = 0b100;
const FLAGS_KNOWN: u8 = FLAG_LZ4 | FLAG_ZSTD | FLAG_PARTIAL;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub kind: u8,
    /// Flags other than compression (compression is undone by the decoder).
    pub partial: bool,
    /// Uncompressed payload.
    pub payload: Vec<u8>,
}

/// How the message of [`FrameError::Malformed`] begins when a stream's first bytes are an
/// HTTP reply: a raw-frame URL (tcp://, tls://) pointed at a web server or a relay's HTTP
/// port. Drivers and tools match it to add their own advice (the CLI names its commands).
pub const ANSWERED_IN_HTTP: &str = "the peer answered in HTTP, not in BlazeDB frames";

/// What can be wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length exceeds the limit.
    #[error("frame of {got} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared size.
        got: u64,
        /// Limit.
        max: u64,
    },
    /// The first frame (which must be a HELLO) declares a length no HELLO has.
    #[error(
        "the first frame declares {got} bytes, and a HELLO has at most {max}: the peer does \
         not speak this protocol, or its HELLO is not a HELLO"
    )]
    FirstFrameTooLarge {
        /// Declared size.
        got: u64,
        /// Limit (`FIRST_FRAME_BYTES_MAX`).
        max: u64,
    },
    /// The checksum did not match (corruption, or a lost, duplicated or reordered frame).
    #[error("frame {index} failed its checksum (corrupted, lost or reordered)")]
    Checksum {
        /// Index of the frame in this direction.
        index: u64,
    },
    /// Unknown flag bits, a bad compressed payload, a bad length.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Malformed(e.to_string())
    }
}

fn checksum(index: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Encodes frames for one direction of a session.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    index: u64,
    /// Compress payloads with LZ4 when it pays.
    pub lz4: bool,
}

impl FrameEncoder {
    /// Encode one frame.
    pub fn encode(&mut self, kind: u8, partial: bool, payload: &[u8]) -> Vec<u8> {
        let mut flags = if partial { FLAG_PARTIAL } else { 0 };
        let mut body = Vec::with_capacity(payload.len() + 8);
        body.push(kind);
        body.push(0);
        let mut compressed = false;
        // Never the first frame: it is the HELLO that agrees on compression, and a receiver
        // refuses a compressed one.
        if self.lz4 && self.index > 0 && payload.len() >= COMPRESS_BYTES_MIN {
            let c = lz4_flex::block::compress(payload);
            // Worth it only if it saves more than the length prefix costs.
            if c.len() + len_u64(payload.len() as u64) < payload.len() {
                write_u64(&mut body, payload.len() as u64);
                body.extend_from_slice(&c);
                flags |= FLAG_LZ4;
                compressed = true;
            }
        }
        if !compressed {
            body.extend_from_slice(payload);
        }
        body[1] = flags;
        let crc = checksum(self.index, &body);
        self.index += 1;
        let mut out = Vec::with_capacity(body.len() + 9);
        write_u64(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> u64 {
        self.index
    }
}

/// Reassembles and checks frames from a byte stream for one direction of a session. Feed it
/// any split of the bytes; it never buffers more than one maximum-size frame, and for the
/// first frame (the unauthenticated HELLO) no more than `FIRST_FRAME_BYTES_MAX`.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    index: u64,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf` (compacted on push, so many small frames in one read
    /// cost linear time).
    start: usize,
}

impl FrameDecoder {
    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let buf = &self.buf[self.start..];
        // A stream's first frame is a HELLO, whose type byte (0x01) follows the length; an
        // HTTP reply's `T` (0x54) there is never a frame. Said plainly, since the length
        // byte `H` would otherwise pass and the reply fail its checksum as if the network
        // had garbled it: a raw-frame URL (tcp://, tls://) pointed at a web server or at a
        // relay's HTTP port.
        if self.index == 0 && buf.starts_with(b"HTTP/") {
            return Err(FrameError::Malformed(format!(
                "{ANSWERED_IN_HTTP}: it is a web server or a relay's HTTP port; sync with a \
                 relay at ws://HOST:PORT/v1/sync (wss:// with TLS), and use tcp:// only for \
                 a port that speaks BlazeDB frames (a peer's raw TCP listener, a relay's raw \
                 TCP port)"
            )));
        }
        let mut r = Reader::new(buf);
        let len = match crate::codec::varint::read_u64(&mut r) {
            Ok(n) => n,
            Err(DecodeError::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if self.index == 0 && len > FIRST_FRAME_BYTES_MAX as u64 {
            return Err(FrameError::FirstFrameTooLarge {
                got: len,
                max: FIRST_FRAME_BYTES_MAX as u64,
            });
        }
        if len > FRAME_BYTES_MAX as u64 {
            return Err(FrameError::TooLarge {
                got: len,
                max: FRAME_BYTES_MAX as u64,
            });
        }
        if len < 2 {
            return Err(FrameError::Malformed(format!(
                "frame body of {len} bytes is too short"
            )));
        }
        let start = r.pos();
        let total = start + len as usize + 4;
        if buf.len() < total {
            return Ok(None);
        }
        let body = &buf[start..start + len as usize];
        let crc = u32::from_le_bytes(buf[total - 4..total].try_into().expect("4 bytes"));
        if crc != checksum(self.index, body) {
            return Err(FrameError::Checksum { index: self.index });
        }
        let (kind, flags) = (body[0], body[1]);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FrameError::Malformed(format!(
                "unknown flags 0x{flags:02x}"
            )));
        }
        let payload = if flags & (FLAG_LZ4 | FLAG_ZSTD) != 0 {
            if self.index == 0 {
                return Err(FrameError::Malformed(
                    "the first frame is compressed: compression is agreed in HELLO, so the \
                     HELLO itself never is"
                        .into(),
                ));
            }
            if flags & FLAG_ZSTD != 0 {
                return Err(FrameError::Malformed(
                    "zstd is only used in snapshot streams".into(),
                ));
            }
            let mut pr = Reader::new(&body[2..]);
            let raw = pr.len("decompressed size", FRAME_DECOMPRESSED_BYTES_MAX)?;
            let compressed = &body[2 + pr.pos()..];
            // LZ4 expands at most 255:1; a larger claim is a lie that would only make us
            // allocate.
            if raw > compressed.len().saturating_mul(255) + 16 {
                return Err(FrameError::Malformed(format!(
                    "LZ4 payload of {} bytes cannot expand to {raw}",
                    compressed.len()
                )));
            }
            let out = lz4_flex::block::decompress(compressed, raw)
                .map_err(|e| FrameError::Malformed(format!("bad LZ4 payload: {e}")))?;
            if out.len() != raw {
                return Err(FrameError::Malformed(format!(
                    "LZ4 payload decompressed to {} bytes, header said {raw}",
                    out.len()
                )));
            }
            out
        } else {
            body[2..].to_vec()
        };
        self.index += 1;
        self.start += total;
        Ok(Some(Frame {
            kind,
            partial: flags & FLAG_PARTIAL != 0,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An HTTP reply is named as one, in the library's terms (no CLI command: the library
    /// is used embedded; the CLI adds its commands).
    #[test]
    fn an_http_reply_is_named_without_cli_commands() {
        let mut d = FrameDecoder::default();
        d.push(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        let m = d.next_frame().unwrap_err().to_string();
        assert!(
            m.contains(ANSWERED_IN_HTTP) && m.contains("raw TCP listener"),
            "{m}"
        );
        assert!(!m.contains("blazedb ") && !m.contains("--"), "{m}");
    }

    #[test]
    fn round_trip_in_any_split() {
        let mut e = FrameEncoder {
            lz4: true,
            ..Default::default()
        };
        let frames: Vec<Vec<u8>> = vec![
            e.encode(1, false, b"hello"),
            e.encode(2, true, &vec![7u8; 5000]),
            e.encode(3, false, b""),
        ];
        let all: Vec<u8> = frames.concat();
        for split in [1, 3, 7, all.len()] {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for chunk in all.chunks(split) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3);
            assert_eq!(got[1].payload, vec![7u8; 5000]);
            assert!(got[1].partial);
            assert_eq!(d.buffered(), 0);
        }
        assert!(frames[1].len() < 100, "compressed");
    }

    #[test]
    fn lost_duplicated_or_corrupted_frames_fail_the_checksum() {
        let mut e = FrameEncoder::default();
        let a = e.encode(1, false, b"a");
        let b = e.encode(1, false, b"b");
        // Duplicate.
        let mut d = FrameDecoder::default();
        d.push(&a);
        d.push(&a);
        assert!(d.next_frame().unwrap().is_some());
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::Checksum { index: 1 })
        ));
        // Lost first frame.
        let mut d = FrameDecoder::default();
        d.push(&b);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::Checksum { index: 0 })
        ));
        // Corrupted byte.
        let mut bad = a.clone();
        bad[2] ^= 0x40;
        let mut d = FrameDecoder::default();
        d.push(&bad);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::default();
        d.push(&FrameEncoder::default().encode(1, false, b"hello"));
        assert!(d.next_frame().unwrap().is_some());
        let mut b = Vec::new();
        write_u64(&mut b, (FRAME_BYTES_MAX + 1) as u64);
        d.push(&b);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_first_frame_longer_than_a_hello_is_refused_from_its_length_alone() {
        // Just the length prefix: refused before a byte of the body arrives.
        let mut d = FrameDecoder::default();
        let mut b = Vec::new();
        write_u64(&mut b, FIRST_FRAME_BYTES_MAX as u64 + 1);
        d.push(&b);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::FirstFrameTooLarge {
                got: FIRST_FRAME_BYTES_MAX as u64 + 1,
                max: FIRST_FRAME_BYTES_MAX as u64
            })
        );
        // The largest HELLO passes, and so does a later frame far above the first's limit.
        let mut e = FrameEncoder::default();
        let hello = vec![b'x'; crate::limits::HELLO_BODY_BYTES_MAX - 2];
        let big = vec![7u8; FIRST_FRAME_BYTES_MAX * 2];
        let mut d = FrameDecoder::default();
        d.push(&e.encode(1, false, &hello));
        d.push(&e.encode(3, false, &big));
        assert_eq!(d.next_frame().unwrap().unwrap().payload, hello);
        assert_eq!(d.next_frame().unwrap().unwrap().payload, big);
    }

    #[test]
    fn a_compressed_first_frame_is_refused_and_never_sent() {
        let mut e = FrameEncoder {
            lz4: true,
            ..Default::default()
        };
        let payload = vec![0u8; 4096];
        let first = e.encode(1, false, &payload);
        assert!(
            first.len() > payload.len(),
            "the first frame is sent uncompressed"
        );
        let second = e.encode(1, false, &payload);
        assert!(second.len() < 100, "later frames are compressed");
        // A compressed frame 0, built by hand.
        let mut body = vec![1u8, FLAG_LZ4];
        write_u64(&mut body, payload.len() as u64);
        body.extend_from_slice(&lz4_flex::block::compress(&payload));
        let mut frame = Vec::new();
        write_u64(&mut frame, body.len() as u64);
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&checksum(0, &body).to_le_bytes());
        let mut d = FrameDecoder::default();
        d.push(&frame);
        assert!(
            matches!(d.next_frame(), Err(FrameError::Malformed(m)) if m.contains("compressed")),
        );
    }

    #[test]
    fn lz4_bomb_is_refused() {
        // Claims a 1 GiB payload (in the second frame: the first may not be compressed).
        let mut body = vec![1u8, FLAG_LZ4];
        write_u64(&mut body, 1 << 30);
        body.extend_from_slice(&[0; 8]);
        let mut frame = FrameEncoder::default().encode(1, false, b"hello");
        write_u64(&mut frame, body.len() as u64);
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&checksum(1, &body).to_le_bytes());
        let mut d = FrameDecoder::default();
        d.push(&frame);
        assert!(d.next_frame().unwrap().is_some());
        assert!(matches!(d.next_frame(), Err(FrameError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let mut d = FrameDecoder::default();
            for c in chunks {
                d.push(&c);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }
    }
}
