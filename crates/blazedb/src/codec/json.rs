//! The JSON form of values, used by the CLI and the relay's HTTP API.
//!
//! Plain JSON maps onto null, bool, int (integral numbers that fit in i64), float, text, list
//! and map. The other types use a one-key object: `{"$uuid": "..."}`, `{"$bytes": "<base64>"}`,
//! `{"$date": "<RFC 3339>"}` (or microseconds since the epoch for times RFC 3339 cannot
//! write), and `{"$float": "NaN" | "Infinity" | "-Infinity"}` for the floats
//! JSON cannot write.
//!
//! A map whose only key starts with `$` is written `{"$map": {"$key": value}}`: written plain,
//! it would read back as a typed form (`{"$date": "..."}` as a date), or be refused as a
//! misspelt one by readers that refuse unknown `$` keys (the CLI). `{"$map": {..}}` takes its
//! keys as they are and converts its values as usual, so every value written reads back as it
//! was.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value as Json;

use crate::limits::VALUE_DEPTH_MAX;
use crate::types::Timestamp;
use crate::Value;

/// The keys of the typed forms: a JSON object with exactly one key, one of these, is that
/// type's value (`$map`: a map whose keys are taken as they are).
pub const TYPED_FORMS: [&str; 5] = ["$uuid", "$bytes", "$date", "$float", "$map"];

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
        Value::Map(m) => {
            let object = Json::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect());
            // Plain, it would read as a typed form (or a misspelt one): see the module doc.
            if m.len() == 1 && m.keys().all(|k| k.starts_with('$')) {
                tagged("$map", object)
            } else {
                object
            }
        }
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
                if let Some(v) = typed(o, depth)? {
                    return Ok(v);
                }
            }
            map_from_json(o, depth)?
        }
    })
}

/// The map of a JSON object's entries, keys as they are (no typed forms at this level).
fn map_from_json(o: &serde_json::Map<String, Json>, depth: usize) -> Result<Value, String> {
    let mut m = BTreeMap::new();
    for (k, v) in o {
        m.insert(k.clone(), from_json_at(v, depth + 1)?);
    }
    Ok(Value::Map(m))
}

fn typed(o: &serde_json::Map<String, Json>, depth: usize) -> Result<Option<Value>, String> {
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
        "$map" => match v {
            Json::Object(entries) => map_from_json(entries, depth)?,
            other => return Err(format!("$map expects an object, got {other}")),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::value::tests::{arb_value, same};
    use proptest::prelude::*;

    /// Keys that start with `$`: typed forms' and others.
    fn dollar_key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(TYPED_FORMS.to_vec()).prop_map(str::to_owned),
            "\\$[a-z]{0,4}",
        ]
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let j = to_json(&v);
            let back = from_json(&j).unwrap();
            prop_assert!(same(&v, &back) || v == back, "{v:?} -> {j} -> {back:?}");
        }

        /// A map whose only key starts with `$` reads back as that map, not as a typed form,
        /// at the top and nested in lists and maps.
        #[test]
        fn round_trip_of_maps_keyed_like_typed_forms(
            v in arb_value(),
            outer in dollar_key(),
            inner in dollar_key(),
        ) {
            let map = Value::Map([(inner, v)].into_iter().collect());
            let nested = Value::List(vec![Value::Map([(outer, map.clone())].into_iter().collect())]);
            for v in [map, nested] {
                let j = to_json(&v);
                let back = from_json(&j).unwrap();
                prop_assert!(same(&v, &back) || v == back, "{v:?} -> {j} -> {back:?}");
            }
        }
    }

    #[test]
    fn a_map_keyed_like_a_typed_form_is_written_in_map_form() {
        let map = |k: &str, v: Value| Value::Map([(k.to_owned(), v)].into_iter().collect());
        let date = map("$date", Value::from("2026-01-01T00:00:00Z"));
        assert_eq!(
            to_json(&date),
            serde_json::json!({"$map": {"$date": "2026-01-01T00:00:00Z"}})
        );
        assert_eq!(from_json(&to_json(&date)), Ok(date));
        // Two keys, or one without `$`, cannot be read as a typed form: written plain.
        let plain = map("date", Value::Int(1));
        assert_eq!(to_json(&plain), serde_json::json!({"date": 1}));
        // `$map` of anything but an object is malformed.
        let e = from_json(&serde_json::json!({"$map": [1]})).unwrap_err();
        assert_eq!(e, "$map expects an object, got [1]");
        // Its keys are taken as they are, its values converted as usual.
        let j = serde_json::json!({"$map": {"$map": {"$bytes": "AAE="}}});
        assert_eq!(from_json(&j), Ok(map("$map", Value::Bytes(vec![0, 1]))));
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
