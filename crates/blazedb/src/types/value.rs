//! Typed field values.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A point in time: microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parse an RFC 3339 timestamp such as `2026-11-22T10:00:00Z`.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("invalid RFC 3339 time {:?}: {e}", crate::error::excerpt(s)))?;
        let micros = t.unix_timestamp_nanos() / 1000;
        i64::try_from(micros)
            .map(Timestamp)
            .map_err(|_| format!("time {s:?} is out of range"))
    }

    /// Format as RFC 3339 with microseconds, in UTC. A time RFC 3339 cannot write (outside
    /// the years 0000–9999, reachable only through the API's `Timestamp(i64)`) comes out as
    /// its microsecond count in decimal digits, which [`Timestamp::parse_rfc3339`] refuses.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }

    /// Milliseconds since the epoch (rounded down).
    pub fn unix_ms(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// From milliseconds since the epoch.
    pub fn from_unix_ms(ms: i64) -> Timestamp {
        Timestamp(ms.saturating_mul(1000))
    }
}

/// A field value. Counter fields read as [`Value::Int`] (the sum of every node's
/// contribution); set fields read as [`Value::List`] of their elements in [`Value::total_cmp`]
/// order.
#[derive(Clone, Debug)]
pub enum Value {
    /// No value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A UUID.
    Uuid(uuid::Uuid),
    /// A point in time.
    Timestamp(Timestamp),
    /// An ordered list.
    List(Vec<Value>),
    /// A map from text keys to values, ordered by key.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The rank of the value's type in the total order across types.
    fn type_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Text(_) => 3,
            Value::Bytes(_) => 4,
            Value::Uuid(_) => 5,
            Value::Timestamp(_) => 6,
            Value::List(_) => 7,
            Value::Map(_) => 8,
        }
    }

    /// The type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Uuid(_) => "uuid",
            Value::Timestamp(_) => "timestamp",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// A total order over all values, used by `order by`, indexes and sets: first by type
    /// (null < bool < number < text < bytes < uuid < timestamp < list < map), ints and floats
    /// compare numerically with each other, NaN sorts above every other number.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => match (a.is_nan(), b.is_nan()) {
                // Every NaN is one value, greater than every other number.
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                // -0.0 == 0.0, as for ints.
                (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Int(a), Float(b)) => cmp_int_float(*a, *b),
            (Float(a), Int(b)) => cmp_int_float(*b, *a).reverse(),
            (Text(a), Text(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (List(a), List(b)) => {
                for (x, y) in a.iter().zip(b) {
                    let o = x.total_cmp(y);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Map(a), Map(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let o = ka.cmp(kb).then_with(|| va.total_cmp(vb));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }

    /// Navigate a dotted path (`a.b.c`) into nested maps. `None` when a step is missing or
    /// not a map.
    pub fn path<'a>(&'a self, path: &[&str]) -> Option<&'a Value> {
        let mut v = self;
        for step in path {
            match v {
                Value::Map(m) => v = m.get(*step)?,
                _ => return None,
            }
        }
        Some(v)
    }

    /// Nesting depth: scalars are 0, a list of scalars is 1.
    pub fn depth(&self) -> usize {
        self.depth_up_to(usize::MAX - 1)
    }

    /// [`Value::depth`], counted no further than `cap`: a value nested deeper answers
    /// `cap + 1`, having gone only that many levels down. What checks a limit uses: counting
    /// the whole depth of a value nested 10,000 levels deep overflowed a 2 MiB thread stack
    /// (the default for threads and tokio's workers) and aborted the process, before the
    /// limit could refuse it.
    pub fn depth_up_to(&self, cap: usize) -> usize {
        let inner = |items: &mut dyn Iterator<Item = &Value>| {
            if cap == 0 {
                return 1;
            }
            1 + items.map(|v| v.depth_up_to(cap - 1)).max().unwrap_or(0)
        };
        match self {
            Value::List(l) => inner(&mut l.iter()),
            Value::Map(m) => inner(&mut m.values()),
            _ => 0,
        }
    }
}

/// Compare an int with a float exactly (no rounding through f64 for large ints).
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // i64 range as f64: [-2^63, 2^63).
    if f >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = f.trunc() as i64; // exact: in range
    match i.cmp(&t) {
        Ordering::Equal => {
            let frac = f - f.trunc();
            if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        self.total_cmp(other)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::codec::json::to_json(self))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<uuid::Uuid> for Value {
    fn from(v: uuid::Uuid) -> Self {
        Value::Uuid(v)
    }
}
impl From<Timestamp> for Value {
    fn from(v: Timestamp) -> Self {
        Value::Timestamp(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert!(Value::Int(2) > Value::Float(1.5));
        assert!(Value::Int(1) < Value::Float(1.5));
        assert_eq!(Value::Int(3), Value::Float(3.0));
        assert!(Value::Int(i64::MAX) < Value::Float(1e19));
        assert!(Value::Float(f64::NAN) > Value::Int(i64::MAX));
    }

    #[test]
    fn types_order_by_rank() {
        assert!(Value::Null < Value::Bool(false));
        assert!(Value::Int(100) < Value::Text("a".into()));
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-22T10:00:00.5Z").unwrap();
        assert_eq!(t.0 % 1_000_000, 500_000);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
    }
}
