//! LEB128 varints: 7 bits per byte, low bits first, high bit set on every byte but the last.
//! Signed integers are zigzag-mapped first (0, -1, 1, -2 ... → 0, 1, 2, 3 ...).

use super::{DecodeError, Reader};

/// Append `v` as an unsigned varint (1 to 10 bytes).
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append `v` zigzag-encoded.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    write_u64(out, zigzag(v));
}

/// Map signed to unsigned so small magnitudes stay small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Read an unsigned varint; refuses encodings longer than 10 bytes or overflowing 64 bits.
pub fn read_u64(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let start = r.pos();
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = r.u8()?;
        let bits = u64::from(b & 0x7f);
        if i == 9 && (b & 0x7e) != 0 {
            return Err(DecodeError::BadVarint { offset: start });
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::BadVarint { offset: start })
}

/// Read a zigzag-encoded signed varint.
pub fn read_i64(r: &mut Reader<'_>) -> Result<i64, DecodeError> {
    read_u64(r).map(unzigzag)
}

/// Encoded length of `v`.
pub fn len_u64(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u64_round_trip(v: u64) {
            let mut b = Vec::new();
            write_u64(&mut b, v);
            prop_assert_eq!(b.len(), len_u64(v));
            let mut r = Reader::new(&b);
            prop_assert_eq!(read_u64(&mut r).unwrap(), v);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn i64_round_trip(v: i64) {
            let mut b = Vec::new();
            write_i64(&mut b, v);
            prop_assert_eq!(read_i64(&mut Reader::new(&b)).unwrap(), v);
        }

        #[test]
        fn garbage_never_panics(b: Vec<u8>) {
            let _ = read_u64(&mut Reader::new(&b));
        }
    }

    #[test]
    fn overlong_is_refused() {
        let b = [0xffu8; 11];
        assert!(matches!(
            read_u64(&mut Reader::new(&b)),
            Err(DecodeError::BadVarint { .. })
        ));
        let b = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            read_u64(&mut Reader::new(&b)),
            Err(DecodeError::BadVarint { .. })
        ));
    }
}
