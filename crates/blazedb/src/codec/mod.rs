//! Byte encodings, specified independently of any Rust crate (docs/PROTOCOL.md) so that other
//! languages can read and write them.
//!
//! - [`varint`]: LEB128 unsigned integers and zigzag signed integers.
//! - [`value`]: the tagged binary encoding of a [`crate::Value`], shared by the file format and
//!   the wire protocol.
//! - [`json`]: the JSON form of values used by the CLI and the relay's HTTP API.
//! - [`keys`]: an order-preserving encoding for index keys (memcmp order = value order).

pub mod json;
pub mod keys;
pub mod value;
pub mod varint;

/// Bytes from disk or from a peer could not be decoded. Never a panic: such bytes may come
/// from an attacker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of an item.
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the item started.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A varint ran past 10 bytes or overflowed 64 bits.
    #[error("invalid varint at offset {offset}")]
    BadVarint {
        /// Where it started.
        offset: usize,
    },
    /// An unknown type tag.
    #[error("unknown value tag 0x{tag:02x} at offset {offset}")]
    BadTag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        offset: usize,
    },
    /// A text was not valid UTF-8.
    #[error("invalid UTF-8 in text at offset {offset}")]
    BadUtf8 {
        /// Where the text started.
        offset: usize,
    },
    /// A length or count exceeded its named limit.
    #[error("{what} of {got} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The size found.
        got: u64,
        /// The limit.
        max: u64,
    },
    /// Values nested deeper than the limit.
    #[error("value nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Structurally invalid input (duplicate map key, bad reference, trailing bytes...).
    #[error("malformed input: {0}")]
    Malformed(String),
}

/// A cursor over input bytes that never reads out of bounds.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Read one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            offset: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Read exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Read a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Read an unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        varint::read_u64(self)
    }

    /// Read a length prefix and check it against `max` and the bytes left.
    pub fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(DecodeError::TooLarge {
                what,
                got: n,
                max: max as u64,
            });
        }
        Ok(n as usize)
    }

    /// Read a count of items each at least `min_item_bytes` long, refusing counts that cannot
    /// fit in the remaining input (so a hostile count never drives a large allocation).
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.len(what, max)?;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n * min_item_bytes.max(1) - self.remaining(),
            });
        }
        Ok(n)
    }

    /// Read a length-prefixed UTF-8 string.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let n = self.len(what, max)?;
        let start = self.pos;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::BadUtf8 { offset: start })
    }

    /// Read a length-prefixed byte string.
    pub fn blob(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what, max)?;
        self.bytes(n)
    }
}
