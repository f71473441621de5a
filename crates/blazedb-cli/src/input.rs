//! Reading JSON input (command-line arguments and import lines) into records and patches.
//!
//! Errors are plain strings: the caller knows whether the text was an argument (a usage
//! error) or a line of a file (named by its number).

use std::str::FromStr as _;

use blazedb::codec::json::from_json;
use blazedb::{FieldOp, Patch, RecordId, Value};
use serde_json::{Map, Value as Json};

/// The JSON key that carries a record's id (as `Record::to_json` writes it).
pub const ID_KEY: &str = "_id";

/// A record to write: its id if the input named one, and its fields in input order.
#[derive(Debug, PartialEq)]
pub struct RecordInput {
    /// From `"_id"`, if present.
    pub id: Option<RecordId>,
    /// Every other key, converted with the typed JSON forms.
    pub fields: Vec<(String, Value)>,
}

/// Parse text that must be one JSON object.
pub fn parse_object(text: &str) -> Result<Map<String, Json>, String> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(object)) => {
            check_integer_literals(text)?;
            Ok(object)
        }
        Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// Refuse an integer literal (no `.`, `e` or `E`) outside the signed 64-bit range, naming the
/// top-level field it is in.
///
/// serde_json reads an integer above `u64::MAX` or below `i64::MIN` as the nearest float, so
/// by the time the parsed value is converted the number written is already lost; only the
/// text still has it. (serde_json's `arbitrary_precision` would keep it, but that feature is
/// global to the build and changes every JSON parse in the workspace.) `text` must be valid
/// JSON: this only tells number literals from the digits inside strings.
fn check_integer_literals(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    // Objects and arrays open around the current position, outside strings.
    let mut depth = 0usize;
    // The last string read (with its quotes), and the top-level key being read.
    let mut last_string = "";
    let mut field = "";
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    // The escaped character (a quote, a backslash, `u` of `\uXXXX`) never
                    // ends the string; the hex digits after `\u` are plain string characters.
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                last_string = &text[start..i.min(text.len())];
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' if depth == 1 => field = last_string,
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = &text[start..i];
                let is_integer = !literal.contains(['.', 'e', 'E']);
                if is_integer && literal.parse::<i64>().is_err() {
                    // The key as written, escapes decoded, the way `record` and `patch` name it.
                    let name = serde_json::from_str::<String>(field).unwrap_or_default();
                    return Err(format!(
                        "field {name:?}: {}",
                        blazedb::codec::json::integer_beyond_64_bits(literal)
                    ));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A record from a JSON object: `"_id"` (a UUID string or `{"$uuid": ..}`) is the id, every
/// other key a field.
pub fn record(object: Map<String, Json>) -> Result<RecordInput, String> {
    let mut id = None;
    let mut fields = Vec::with_capacity(object.len());
    for (key, json) in object {
        if key == ID_KEY {
            id = Some(record_id(&json)?);
            continue;
        }
        let value = from_json(&json).map_err(|e| format!("field {key:?}: {e}"))?;
        fields.push((key, value));
    }
    Ok(RecordInput { id, fields })
}

/// A record id given as JSON: the plain string `export` writes, or the typed `$uuid` form.
pub fn record_id(json: &Json) -> Result<RecordId, String> {
    let id = match json {
        Json::String(s) => RecordId::from_str(s).ok(),
        other => match from_json(other) {
            Ok(Value::Uuid(u)) => Some(RecordId::from(u)),
            _ => None,
        },
    };
    id.ok_or_else(|| {
        format!(
            "{ID_KEY} must be a UUID (a string, or {{\"$uuid\": \"...\"}}), got {json}: to keep \
             another system's id, rename the key (e.g. to \"source_id\") and each record gets a \
             new id"
        )
    })
}

/// An update from a JSON object: per field `{"$inc": n}`, `{"$add": [..]}`,
/// `{"$remove": [..]}`, `{"$unset": true}`, `{"$set": value}` (the value as it is, for a map
/// whose one key starts with `$`), or any other value to set.
pub fn patch(object: Map<String, Json>) -> Result<Patch, String> {
    let mut patch = Patch::new();
    for (field, json) in object {
        let op = field_op(&json).map_err(|e| format!("field {field:?}: {e}"))?;
        patch.ops.push((field, op));
    }
    Ok(patch)
}

/// The update operators of [`patch`].
const OPERATORS: [&str; 5] = ["$inc", "$add", "$remove", "$unset", "$set"];

fn field_op(json: &Json) -> Result<FieldOp, String> {
    if let Json::Object(o) = json {
        // `{"$inc": 1, "$unset": true}` would otherwise be stored as a map of that shape,
        // the counter lost without a word.
        if o.len() > 1 && o.keys().any(|k| OPERATORS.contains(&k.as_str())) {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            return Err(format!(
                "one operator per field, got {}: write {{\"$inc\": 1}}, {{\"$add\": [..]}}, \
                 {{\"$remove\": [..]}} or {{\"$unset\": true}} alone",
                keys.join(", ")
            ));
        }
    }
    if let Some((op, arg)) = single_entry(json) {
        match op {
            "$inc" => {
                let by = arg
                    .as_i64()
                    .ok_or_else(|| format!("$inc needs an integer, got {arg}"))?;
                return Ok(FieldOp::Increment(by));
            }
            "$add" => return Ok(FieldOp::Add(elements("$add", arg)?)),
            "$remove" => return Ok(FieldOp::Remove(elements("$remove", arg)?)),
            "$unset" if arg == &Json::Bool(true) => return Ok(FieldOp::Unset),
            "$unset" => return Err(format!("$unset takes true, got {arg}")),
            // The escape for a value that reads as an operator: `{"$set": {"$x": 1}}` sets the
            // map `{"$x": 1}`, which `put` and `import` store as it is.
            "$set" => return Ok(FieldOp::Set(from_json(arg)?)),
            _ => {}
        }
    }
    let value = from_json(json)?;
    // The typed forms ($uuid, $bytes, $date, $float) became typed values above; a one-key map
    // whose key still starts with `$` is almost surely a misspelled operator, and storing it
    // as a map would hide the mistake.
    if let Value::Map(m) = &value {
        if let Some(key) = m
            .keys()
            .next()
            .filter(|k| m.len() == 1 && k.starts_with('$'))
        {
            return Err(format!(
                "unknown operator {key} (expected $inc, $add, $remove, $unset, or a typed value \
                 such as $uuid, $bytes, $date); to set this map as it is, write \
                 {{\"$set\": {json}}}"
            ));
        }
    }
    Ok(FieldOp::Set(value))
}

/// The key and value of a one-entry JSON object.
fn single_entry(json: &Json) -> Option<(&str, &Json)> {
    match json {
        Json::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

fn elements(op: &str, arg: &Json) -> Result<Vec<Value>, String> {
    let Json::Array(items) = arg else {
        return Err(format!("{op} needs a list of elements, got {arg}"));
    };
    items.iter().map(from_json).collect()
}

/// "an array", "a string", ... for error messages.
fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch_of(text: &str) -> Result<Patch, String> {
        patch(parse_object(text)?)
    }

    #[test]
    fn operators_become_field_ops_in_input_order() {
        let p = patch_of(
            r#"{"votes": {"$inc": -2}, "tags": {"$add": ["a"]}, "old": {"$unset": true},
                "gone": {"$remove": [1]}, "title": "x"}"#,
        )
        .unwrap();
        let ops: Vec<&FieldOp> = p.ops.iter().map(|(_, op)| op).collect();
        assert_eq!(
            ops,
            [
                &FieldOp::Increment(-2),
                &FieldOp::Add(vec![Value::from("a")]),
                &FieldOp::Unset,
                &FieldOp::Remove(vec![Value::Int(1)]),
                &FieldOp::Set(Value::from("x")),
            ]
        );
    }

    #[test]
    fn typed_values_are_set_and_misspelled_operators_refused() {
        let p = patch_of(r#"{"at": {"$date": "2026-01-01T00:00:00Z"}}"#).unwrap();
        assert!(matches!(p.ops[0].1, FieldOp::Set(Value::Timestamp(_))));
        let e = patch_of(r#"{"votes": {"$incr": 1}}"#).unwrap_err();
        assert!(e.contains("unknown operator $incr"), "{e}");
        assert!(patch_of(r#"{"votes": {"$inc": 1.5}}"#).is_err());
        assert!(patch_of(r#"{"old": {"$unset": false}}"#).is_err());
        // A map whose one key starts with `$` (which `put` stores) is set through `$set`, as
        // the refusal says.
        let e = patch_of(r#"{"m": {"$x": 2}}"#).unwrap_err();
        assert!(e.contains(r#"write {"$set": {"$x":2}}"#), "{e}");
        let p = patch_of(r#"{"m": {"$set": {"$x": 2}}}"#).unwrap();
        let map = Value::Map([("$x".to_owned(), Value::Int(2))].into_iter().collect());
        assert_eq!(p.ops[0].1, FieldOp::Set(map));
        let p = patch_of(r#"{"at": {"$set": {"$date": "2026-01-01T00:00:00Z"}}}"#).unwrap();
        assert!(matches!(p.ops[0].1, FieldOp::Set(Value::Timestamp(_))));
    }

    #[test]
    fn id_key_is_taken_out_of_the_fields() {
        let id = "0190b3c4-0000-7000-8000-000000000001";
        let r = record(parse_object(&format!(r#"{{"_id": "{id}", "a": 1}}"#)).unwrap()).unwrap();
        assert_eq!(r.id, Some(id.parse().unwrap()));
        assert_eq!(r.fields, vec![("a".to_owned(), Value::Int(1))]);
        let typed = format!(r#"{{"$uuid": "{id}"}}"#);
        assert_eq!(
            record_id(&serde_json::from_str(&typed).unwrap()),
            Ok(id.parse().unwrap())
        );
        assert!(record_id(&Json::from(7)).is_err());
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_wherever_they_are() {
        for big in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "9223372036854775808",
        ] {
            for (text, field) in [
                (format!(r#"{{"n": {big}}}"#), "n"),
                (format!(r#"{{"x": 1, "a": [1, {{"b": {big}}}]}}"#), "a"),
                (format!(r#"{{"m\"q":{big},"n":1}}"#), "m\"q"),
            ] {
                let e = parse_object(&text).unwrap_err();
                assert!(
                    e.starts_with(&format!(
                        "field {field:?}: integer {big} is beyond the 64-bit range"
                    )),
                    "{text}: {e}"
                );
            }
        }
    }

    #[test]
    fn the_integer_scan_skips_strings_floats_and_the_edges_of_the_range() {
        let fine = [
            r#"{"n": 9223372036854775807, "m": -9223372036854775808, "z": -0}"#,
            r#"{"big": "123456789012345678901234567890"}"#,
            r#"{"123456789012345678901234567890": 1}"#,
            r#"{"q": "say \"99999999999999999999\" twice", "n": 1}"#,
            r#"{"bs": "ends in a backslash \\", "n": 2}"#,
            r#"{"u": "\u0022 99999999999999999999", "n": 3}"#,
            r#"{"f": 123456789012345678901234567890.0, "e": 1e30, "E": -2E+40}"#,
        ];
        for text in fine {
            assert!(parse_object(text).is_ok(), "{text}");
        }
        // After a string that ends in an escaped backslash, the scan is outside again.
        let e = parse_object(r#"{"bs": "\\", "n": 99999999999999999999}"#).unwrap_err();
        assert!(
            e.starts_with("field \"n\": integer 99999999999999999999"),
            "{e}"
        );
    }

    #[test]
    fn non_objects_are_refused_by_kind() {
        assert_eq!(
            parse_object("[1]").unwrap_err(),
            "expected a JSON object, got an array"
        );
        assert!(parse_object("{").unwrap_err().starts_with("invalid JSON"));
    }
}
