//! Order-preserving key encoding for indexes.
//!
//! [`encode_key`] maps a [`Value`] to bytes whose memcmp order (SQLite's order for BLOBs) is
//! [`Value::total_cmp`]: for all `a`, `b`,
//! `encode_key(a).cmp(&encode_key(b)) == a.total_cmp(b)`. Equal values (`3` and `3.0`,
//! `0.0` and `-0.0`, any two NaNs) encode to equal bytes.
//!
//! Layout: one tag byte per type, in type order, then:
//!
//! | type      | tag    | body                                                           |
//! |-----------|--------|----------------------------------------------------------------|
//! | null      | `0x05` | nothing                                                        |
//! | bool      | `0x10` | `0x00` / `0x01`                                                |
//! | number    | `0x20` | 8 bytes: ordered bits of the f64 image, 2 bytes: tiebreak      |
//! | text      | `0x30` | UTF-8, `0x00` escaped as `0x00 0xFF`, then `0x00 0x01`         |
//! | bytes     | `0x40` | as text                                                        |
//! | uuid      | `0x50` | the 16 bytes                                                   |
//! | timestamp | `0x60` | micros as i64, sign bit flipped, big-endian                    |
//! | list      | `0x70` | each element's encoding, then `0x00`                           |
//! | map       | `0x80` | per entry `0x01`, key as text body, value's encoding; `0x00`   |
//!
//! Every encoding is prefix-free (no encoding is a proper prefix of another), which is what
//! makes a concatenation of encodings compare element by element, so lists and maps need no
//! length prefix. The list/map terminator `0x00` is below every tag and below the entry marker
//! `0x01`, so a shorter list sorts first.
//!
//! Numbers: ints and floats share one scale. The primary key is the f64 nearest the number
//! (the number itself for a float; an i64 rounds to it), with the IEEE bits made to sort as
//! unsigned (flip all bits of negatives, the sign bit of positives), `-0.0` as `0.0` and every
//! NaN as one canonical NaN above `+inf`. Rounding is monotone, so different images order the
//! numbers; equal images differ by the exact int minus the image, at most 512 for an i64
//! (half the f64 spacing just below 2^63), stored as an i16 with its sign bit flipped.

use std::ops::Bound;

use crate::query::KeyRange;
use crate::types::Value;

const TAG_NULL: u8 = 0x05;
const TAG_BOOL: u8 = 0x10;
const TAG_NUMBER: u8 = 0x20;
const TAG_TEXT: u8 = 0x30;
const TAG_BYTES: u8 = 0x40;
const TAG_UUID: u8 = 0x50;
const TAG_TIMESTAMP: u8 = 0x60;
const TAG_LIST: u8 = 0x70;
const TAG_MAP: u8 = 0x80;

/// Ends a list or a map; below every tag and [`MAP_ENTRY`].
const END: u8 = 0x00;
/// Starts each map entry.
const MAP_ENTRY: u8 = 0x01;
/// `0x00` inside text or bytes is written as `ESCAPE ESCAPED_ZERO`.
const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
/// Text and bytes end with `ESCAPE STRING_END`, which sorts below any escaped zero, so a
/// string sorts before every longer string it is a prefix of.
const STRING_END: u8 = 0x01;

/// The bits of the canonical NaN (positive, quiet).
const CANONICAL_NAN_BITS: u64 = 0x7FF8_0000_0000_0000;

/// The index key of `v`: memcmp order of keys is [`Value::total_cmp`] of values.
///
/// Recursion follows the value's nesting, which the codec bounds to `VALUE_DEPTH_MAX`.
pub fn encode_key(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

/// Append the key of `v` to `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(b) => out.extend([TAG_BOOL, u8::from(*b)]),
        Value::Int(i) => encode_int(*i, out),
        Value::Float(f) => encode_number(*f, 0, out),
        Value::Text(s) => {
            out.push(TAG_TEXT);
            encode_string(s.as_bytes(), out);
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            encode_string(b, out);
        }
        Value::Uuid(u) => {
            out.push(TAG_UUID);
            out.extend_from_slice(u.as_bytes());
        }
        Value::Timestamp(t) => {
            out.push(TAG_TIMESTAMP);
            out.extend_from_slice(&flip_sign(t.0).to_be_bytes());
        }
        Value::List(items) => {
            out.push(TAG_LIST);
            for x in items {
                encode_into(x, out);
            }
            out.push(END);
        }
        Value::Map(m) => {
            out.push(TAG_MAP);
            for (k, x) in m {
                out.push(MAP_ENTRY);
                encode_string(k.as_bytes(), out);
                encode_into(x, out);
            }
            out.push(END);
        }
    }
}

/// A value range as byte bounds over [`encode_key`] keys: a value lies in `r` exactly when
/// its key lies in the returned bounds, because the encoding preserves order.
pub fn key_range_bounds(r: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (map_bound(&r.lo), map_bound(&r.hi))
}

fn map_bound(b: &Bound<Value>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(v) => Bound::Included(encode_key(v)),
        Bound::Excluded(v) => Bound::Excluded(encode_key(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn encode_int(i: i64, out: &mut Vec<u8>) {
    // `as` rounds to nearest; the image of i64::MAX is 2^63, which still fits an i128.
    let image = i as f64;
    let offset = i128::from(i) - image as i128;
    let offset = i16::try_from(offset)
        .unwrap_or_else(|_| unreachable!("an i64 is within 512 of its f64 image, {i} is not"));
    encode_number(image, offset, out);
}

/// A number as `image + offset`, where `offset` is 0 unless the number is an int that `image`
/// rounds.
fn encode_number(image: f64, offset: i16, out: &mut Vec<u8>) {
    let bits = if image.is_nan() {
        CANONICAL_NAN_BITS
    } else if image == 0.0 {
        0 // -0.0 is 0.0
    } else {
        image.to_bits()
    };
    // Negative floats sort in reverse as unsigned bits: flip them all; positives: set the
    // sign bit so they sort above every negative.
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    out.push(TAG_NUMBER);
    out.extend_from_slice(&ordered.to_be_bytes());
    out.extend_from_slice(&((offset as u16) ^ 0x8000).to_be_bytes());
}

fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0 {
            out.extend([ESCAPE, ESCAPED_ZERO]);
        } else {
            out.push(b);
        }
    }
    out.extend([ESCAPE, STRING_END]);
}

/// An i64 as a u64 that sorts the same way unsigned.
fn flip_sign(i: i64) -> u64 {
    (i as u64) ^ (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;
    use proptest::prelude::*;
    use std::cmp::Ordering;
    use std::collections::BTreeMap;
    use std::ops::RangeBounds;

    #[track_caller]
    fn same_order(a: &Value, b: &Value) {
        assert_eq!(
            encode_key(a).cmp(&encode_key(b)),
            a.total_cmp(b),
            "{a:?} vs {b:?}: {:?} vs {:?}",
            encode_key(a),
            encode_key(b)
        );
    }

    fn all_pairs(values: &[Value]) {
        for a in values {
            for b in values {
                same_order(a, b);
            }
        }
    }

    #[test]
    fn equal_numbers_encode_equally() {
        assert_eq!(encode_key(&Value::Int(3)), encode_key(&Value::Float(3.0)));
        assert_eq!(
            encode_key(&Value::Float(-0.0)),
            encode_key(&Value::Float(0.0))
        );
        assert_eq!(encode_key(&Value::Int(0)), encode_key(&Value::Float(-0.0)));
        assert_eq!(
            encode_key(&Value::Float(f64::NAN)),
            encode_key(&Value::Float(-f64::NAN))
        );
        assert_eq!(
            encode_key(&Value::Float(f64::from_bits(0x7FF0_0000_0000_0001))),
            encode_key(&Value::Float(f64::NAN))
        );
        assert_eq!(
            encode_key(&Value::Int(-(1 << 62))),
            encode_key(&Value::Float(-4_611_686_018_427_387_904.0))
        );
    }

    #[test]
    fn numbers_near_the_edges_of_f64_precision() {
        let two53 = 1i64 << 53;
        let mut values = vec![
            Value::Float(f64::NEG_INFINITY),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NAN),
            Value::Float(f64::MIN),
            Value::Float(f64::MAX),
            Value::Float(f64::MIN_POSITIVE),
            Value::Float(-f64::MIN_POSITIVE),
            Value::Float(5e-324),
            Value::Float(-5e-324),
            Value::Float(0.0),
            Value::Float(-0.0),
            Value::Float(0.5),
            Value::Float(-0.5),
            Value::Float(9_223_372_036_854_775_808.0),
            Value::Float(-9_223_372_036_854_775_808.0),
            Value::Float(9_223_372_036_854_774_784.0),
            Value::Float(1e19),
            Value::Float(-1e19),
            Value::Float(two53 as f64),
            Value::Float(two53 as f64 + 2.0),
            Value::Float(-(two53 as f64)),
            Value::Float(2.5),
        ];
        for base in [
            0,
            two53,
            -two53,
            i64::MAX,
            i64::MIN,
            1 << 62,
            -(1 << 62),
            1 << 60,
        ] {
            for d in -3..=3i64 {
                values.push(Value::Int(base.saturating_add(d)));
            }
        }
        for d in 0..=1100 {
            values.push(Value::Int(i64::MAX - d));
            values.push(Value::Int(i64::MIN + d));
        }
        all_pairs(&values);
    }

    #[test]
    fn strings_sort_prefix_first_and_zero_bytes_correctly() {
        let texts: Vec<Value> = [
            "",
            "\0",
            "\0\0",
            "\0a",
            "a",
            "a\0",
            "a\0\0",
            "a\u{1}",
            "ab",
            "b",
            "\u{10FFFF}",
            "é",
        ]
        .into_iter()
        .map(Value::from)
        .collect();
        all_pairs(&texts);
        let bytes: Vec<Value> = [
            &[][..],
            &[0],
            &[0, 0],
            &[0, 0xFF],
            &[0, 1],
            &[1],
            &[0xFF],
            &[0xFF, 0],
        ]
        .into_iter()
        .map(|b| Value::Bytes(b.to_vec()))
        .collect();
        all_pairs(&bytes);
    }

    #[test]
    fn types_and_containers() {
        let mut m1 = BTreeMap::new();
        m1.insert(String::new(), Value::Null);
        let mut m2 = BTreeMap::new();
        m2.insert("a".to_owned(), Value::Int(1));
        let mut m0 = BTreeMap::new();
        m0.insert("\0".to_owned(), Value::Null);
        let mut m3 = m2.clone();
        m3.insert("b".to_owned(), Value::Null);
        let values = vec![
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-1),
            Value::Float(f64::NAN),
            Value::from(""),
            Value::from("z"),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0]),
            Value::Uuid(uuid::Uuid::nil()),
            Value::Uuid(uuid::Uuid::max()),
            Value::Timestamp(Timestamp(i64::MIN)),
            Value::Timestamp(Timestamp(-1)),
            Value::Timestamp(Timestamp(0)),
            Value::Timestamp(Timestamp(i64::MAX)),
            Value::List(vec![]),
            Value::List(vec![Value::Null]),
            Value::List(vec![Value::from("")]),
            Value::List(vec![Value::from(""), Value::from("")]),
            Value::List(vec![Value::from("a")]),
            Value::List(vec![Value::List(vec![])]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::List(vec![Value::Float(1.0), Value::Float(2.5)]),
            Value::Map(BTreeMap::new()),
            Value::Map(m1),
            Value::Map(m0),
            Value::Map(m2),
            Value::Map(m3),
        ];
        all_pairs(&values);
    }

    #[test]
    fn range_bounds_follow_the_values() {
        let r = KeyRange {
            lo: Bound::Included(Value::Int(2)),
            hi: Bound::Excluded(Value::from("")),
        };
        let bounds = key_range_bounds(&r);
        assert!(bounds.contains(&encode_key(&Value::Float(2.0))));
        assert!(bounds.contains(&encode_key(&Value::Float(f64::NAN))));
        assert!(!bounds.contains(&encode_key(&Value::Int(1))));
        assert!(!bounds.contains(&encode_key(&Value::from(""))));
        let all = KeyRange {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
        };
        assert_eq!(key_range_bounds(&all), (Bound::Unbounded, Bound::Unbounded));
    }

    /// Numbers that often tie or nearly tie with one another.
    fn arb_number() -> impl Strategy<Value = Value> {
        let near = prop::sample::select(vec![
            0i64,
            1 << 53,
            -(1 << 53),
            1 << 62,
            i64::MAX,
            i64::MIN,
            i64::MAX - 1024,
        ]);
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            (near.clone(), -600i64..600).prop_map(|(b, d)| Value::Int(b.saturating_add(d))),
            (near, -3i64..3).prop_map(|(b, d)| Value::Float(b.saturating_add(d) as f64)),
            prop::sample::select(vec![
                0.0,
                -0.0,
                f64::NAN,
                -f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                9_223_372_036_854_775_808.0,
                -9_223_372_036_854_775_808.0,
                0.5,
            ])
            .prop_map(Value::Float),
            (-3i64..3).prop_map(Value::Int),
            (-3i64..3).prop_map(|i| Value::Float(i as f64)),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            arb_number(),
            "(\0|a|b|\u{10FFFF}|é){0,4}".prop_map(Value::Text),
            ".{0,6}".prop_map(Value::Text),
            proptest::collection::vec(prop::sample::select(vec![0u8, 1, 0xFF, 7]), 0..4)
                .prop_map(Value::Bytes),
            any::<[u8; 16]>().prop_map(|b| Value::Uuid(uuid::Uuid::from_bytes(b))),
            prop::sample::select(vec![[0u8; 16], [0xFF; 16]])
                .prop_map(|b| Value::Uuid(uuid::Uuid::from_bytes(b))),
            any::<i64>().prop_map(|t| Value::Timestamp(Timestamp(t))),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::btree_map("(\0|a|b){0,2}", inner, 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The order law: memcmp of keys is the total order of values.
        #[test]
        fn memcmp_order_is_total_cmp(a in arb_value(), b in arb_value()) {
            let o = encode_key(&a).cmp(&encode_key(&b));
            prop_assert_eq!(o, a.total_cmp(&b), "{:?} vs {:?}", a, b);
        }

        /// Lists compare element-wise, including across int/float and nested ties.
        #[test]
        fn lists_of_numbers(a in proptest::collection::vec(arb_number(), 0..4),
                            b in proptest::collection::vec(arb_number(), 0..4)) {
            let (a, b) = (Value::List(a), Value::List(b));
            prop_assert_eq!(encode_key(&a).cmp(&encode_key(&b)), a.total_cmp(&b));
        }

        /// Numbers tie exactly when equal.
        #[test]
        fn number_order(a in arb_number(), b in arb_number()) {
            let o = encode_key(&a).cmp(&encode_key(&b));
            prop_assert_eq!(o, a.total_cmp(&b), "{:?} vs {:?}", a, b);
            prop_assert_eq!(o == Ordering::Equal, a == b);
        }
    }
}
