//! The JSON form of values, used by the CLI and the relay's HTTP API.
//!
//! Plain JSON maps onto null, bool, int (integral numbers that fit in i64), float, text, list
//! and map. The other types use a one-key object: `{"$uuid": "..."}`, `{"$bytes": "<base64>"}`,
//! `{"$date": "<RFC 3339>"}` (or microseconds since the epoch for times RFC 3339 cannot
//! write), and `{"$float": "NaN" | "Infinity" | "-Infinity"}` for the floats
//! JSON cannot write.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value as Json;

use crate::limits::VALUE_DEPTH_MAX;
use crate::types::Timestamp;
use crate::Value;

/// Convert a value to JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => tagged(
                "$float",
                Json::from(if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }),
            ),
        },
        Value::Text(s) => Json::String(s.clone()),
        Value::Bytes(b) => tagged(
            "$bytes",
            Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        Value::Uuid(u) => tagged("$uuid", Json::String(u.to_string())),
        Value::Timestamp(t) => {
            let text = t.to_rfc3339();
            // Times RFC 3339 cannot write (before year 0 or after 9999) go as microseconds.
            if Timestamp::parse_rfc3339(&text).is_ok() {
                tagged("$date", Json::String(text))
            } else {
                tagged("$date", Json::from(t.0))
            }
        }
        Value::List(l) => Json::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn tagged(tag: &str, v: Json) -> Json {
    let mut m = serde_json::Map::new();
    m.insert(tag.to_owned(), v);
    Json::Object(m)
}

/// The refusal of an integer literal outside the signed 64-bit range (as written): stored,
/// it would become a float that is not the number written.
pub fn integer_beyond_64_bits(literal: &str) -> String {
    format!(
        "integer {literal} is beyond the 64-bit range (±9223372036854775807): store it as a \
         string, or as a float written with a decimal point"
    )
}

/// Convert JSON to a value. Errors say which typed form was malformed.
pub fn from_json(j: &Json) -> Result<Value, String> {
    from_json_at(j, 0)
}

fn from_json_at(j: &Json, depth: usize) -> Result<Value, String> {
    if depth > VALUE_DEPTH_MAX {
        return Err(format!("value nested deeper than {VALUE_DEPTH_MAX} levels"));
    }
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            // An integer beyond the signed 64-bit range would silently become a float that
            // is not the number written (the query parser refuses it too).
            None if n.is_u64() => return Err(integer_beyond_64_bits(&n.to_string())),
            None => Value::Float(
                n.as_f64()
                    .ok_or_else(|| format!("number {n} out of range"))?,
            ),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(a) => Value::List(
            a.iter()
                .map(|x| from_json_at(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => {
            if o.len() == 1 {
                if let Some(v) = typed(o)? {
                    return Ok(v);
                }
            }
            let mut m = BTreeMap::new();
            for (k, v) in o {
                m.insert(k.clone(), from_json_at(v, depth + 1)?);
            }
            Value::Map(m)
        }
    })
}

fn typed(o: &serde_json::Map<String, Json>) -> Result<Option<Value>, String> {
    let Some((k, v)) = o.iter().next() else {
        return Ok(None);
    };
    let s = || {
        v.as_str()
            .ok_or_else(|| format!("{k} expects a string, got {v}"))
    };
    Ok(Some(match k.as_str() {
        "$uuid" => {
            Value::Uuid(uuid::Uuid::try_parse(s()?).map_err(|e| format!("invalid $uuid {v}: {e}"))?)
        }
        "$bytes" => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s()?)
                .map_err(|e| format!("invalid $bytes {v}: {e} (expected standard base64)"))?,
        ),
        "$date" => Value::Timestamp(match v.as_i64() {
            Some(micros) => Timestamp(micros),
            None => Timestamp::parse_rfc3339(s()?)?,
        }),
        "$float" => Value::Float(match s()? {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other
                .parse()
                .map_err(|_| format!("invalid $float {other:?}"))?,
        }),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::value::tests::{arb_value, same};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            // Maps whose only key is a type tag are the one ambiguous form; skip them.
            let j = to_json(&v);
            let back = from_json(&j).unwrap();
            let ambiguous = format!("{j}").contains("{\"$");
            if !ambiguous {
                prop_assert!(same(&v, &back) || v == back, "{v:?} -> {j} -> {back:?}");
            }
        }
    }

    #[test]
    fn typed_forms() {
        let j: Json = serde_json::from_str(
            r#"{"u":{"$uuid":"0190b3c4-0000-7000-8000-000000000001"},"b":{"$bytes":"AAE="},
                "d":{"$date":"2026-01-01T00:00:00Z"},"n":1.5,"i":7}"#,
        )
        .unwrap();
        let Value::Map(m) = from_json(&j).unwrap() else {
            panic!()
        };
        assert!(matches!(m["u"], Value::Uuid(_)));
        assert!(matches!(&m["b"], Value::Bytes(b) if b == &[0, 1]));
        assert!(matches!(m["d"], Value::Timestamp(_)));
        assert!(matches!(m["i"], Value::Int(7)));
        assert!(from_json(&serde_json::json!({"$uuid": "nope"})).is_err());
    }
}
