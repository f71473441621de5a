//! Reading JSON input (command-line arguments and import lines) into records and patches.
//!
//! Errors are plain strings: the caller knows whether the text was an argument (a usage
//! error) or a line of a file (named by its number).

use std::cell::Cell;
use std::fmt;
use std::str::FromStr as _;

use blazedb::codec::json::{from_json, TYPED_FORMS};
use blazedb::{FieldOp, Patch, RecordId, Value};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value as Json};

use crate::limits::EXCERPT_CHARS_MAX;

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
    let (json, integer_beyond_i64) = parse(text)?;
    match json {
        Json::Object(object) => {
            // Only the text still has such a literal (see `check_integer_literals`); the
            // parser said whether there can be one, so most text is not scanned again.
            if integer_beyond_i64 {
                check_integer_literals(text)?;
            }
            Ok(object)
        }
        other => Err(format!("expected a JSON object, got {}", kind(&other))),
    }
}

/// Parse text that must be one JSON value, refusing an object that names a key twice.
pub fn parse_json(text: &str) -> Result<Json, String> {
    parse(text).map(|(json, _)| json)
}

/// [`parse_json`], and whether the text may hold an integer literal beyond the signed 64-bit
/// range (`false`: it holds none).
fn parse(text: &str) -> Result<(Json, bool), String> {
    let integer_beyond_i64 = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = UniqueKeys {
        integer_beyond_i64: &integer_beyond_i64,
    };
    match seed
        .deserialize(&mut deserializer)
        .and_then(|json| deserializer.end().map(|()| json))
    {
        Ok(json) => Ok((json, integer_beyond_i64.get())),
        Err(e) => {
            // serde_json counts lines within `text`: an import line, or an argument that is
            // one line (but for a pasted document), where "line 1" says nothing.
            let at = format!(" at line {} column {}", e.line(), e.column());
            let full = e.to_string();
            let message = full.strip_suffix(&at).unwrap_or(&full);
            let at = match e.line() {
                1 => format!("column {}", e.column()),
                line => format!("line {line} column {}", e.column()),
            };
            Err(match message.strip_prefix(DUPLICATE_KEY) {
                Some(key) => format!(
                    "duplicate key {key} at {at}: a key may appear once in an object (JSON \
                     readers differ on which value wins): remove the one not meant"
                ),
                None => format!("invalid JSON: {message} at {at}"),
            })
        }
    }
}

/// How [`UniqueKeys`] starts its error, for [`parse`] to recognise.
const DUPLICATE_KEY: &str = "duplicate key ";

/// Reads a JSON value as `serde_json::Value` does, except that an object naming a key twice
/// is an error: serde_json keeps the last value, and a database must not drop input silently.
/// Checked while parsing: afterwards the first value is gone.
///
/// It also notes a number that may have been written as an integer beyond the signed 64-bit
/// range: serde_json hands such a literal over as a float, of magnitude 2^63 or more (or as a
/// `u64` above `i64::MAX`).
#[derive(Clone, Copy)]
struct UniqueKeys<'a> {
    integer_beyond_i64: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
        Ok(Json::from(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Json, E> {
        if i64::try_from(u).is_err() {
            self.integer_beyond_i64.set(true);
        }
        Ok(Json::from(u))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
        // 2^63: every integer literal serde_json reads as a float is at least this large.
        if f.abs() >= 9_223_372_036_854_775_808.0 {
            self.integer_beyond_i64.set(true);
        }
        // JSON text has no NaN or infinity; as serde_json's own visitor, null if one came.
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(map.next_value_seed(self)?);
                }
                Entry::Occupied(entry) => {
                    let key = entry.key();
                    return Err(de::Error::custom(format_args!("{DUPLICATE_KEY}{key:?}")));
                }
            }
        }
        Ok(Json::Object(object))
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
/// other key a field (see [`value`]).
pub fn record(object: Map<String, Json>) -> Result<RecordInput, String> {
    let mut id = None;
    let mut fields = Vec::with_capacity(object.len());
    for (key, json) in object {
        if key == ID_KEY {
            id = Some(record_id(&json)?);
            continue;
        }
        let value = value(&json, &key)?;
        fields.push((key, value));
    }
    Ok(RecordInput { id, fields })
}

/// The value of field `field` from JSON, with the typed forms (`{"$date": ..}` and the like,
/// `blazedb::codec::json`).
///
/// A one-key object whose key starts with `$` but is no typed form (`{"$dat": 1}`) is
/// refused, wherever it is: stored as the map it spells, it would hide a misspelling. Such a
/// map is written `{"$map": {"$dat": 1}}`, as `export` writes it.
pub fn value(json: &Json, field: &str) -> Result<Value, String> {
    if let Err(mut unknown) = check_dollar_keys(json) {
        unknown.path.reverse();
        return Err(format!(
            "field {:?}: unknown typed form {} (the typed forms are {}); to store this map as \
             it is, write {{\"$map\": {}}}",
            path_text(field, &unknown.path),
            unknown.key,
            TYPED_FORMS.join(", "),
            excerpt(unknown.object),
        ));
    }
    from_json(json).map_err(|e| format!("field {field:?}: {e}"))
}

/// One step from a value into the value inside it.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    /// The entry of a map.
    Key(&'a str),
    /// The element of a list.
    Index(usize),
}

/// A one-key object whose key starts with `$` and is no typed form.
#[derive(Debug)]
struct UnknownTypedForm<'a> {
    /// Its key.
    key: &'a str,
    /// The object.
    object: &'a Json,
    /// The steps that lead to it, the last first.
    path: Vec<Step<'a>>,
}

/// Find the first one-key object whose key starts with `$` and is no typed form.
/// `{"$map": {..}}`'s keys are its entries' (any), its values checked like any other.
///
/// Every import line goes through this: the path is built only on the way back from a
/// refusal, so a value that passes costs no allocation.
fn check_dollar_keys(json: &Json) -> Result<(), UnknownTypedForm<'_>> {
    let entries = match json {
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_dollar_keys(item).map_err(|mut e| {
                    e.path.push(Step::Index(i));
                    e
                })?;
            }
            return Ok(());
        }
        Json::Object(entries) => match single_entry(json) {
            Some(("$map", Json::Object(entries))) => entries,
            // The other typed forms hold a string or a number; `from_json` checks which.
            Some((key, _)) if TYPED_FORMS.contains(&key) => return Ok(()),
            Some((key, _)) if key.starts_with('$') => {
                return Err(UnknownTypedForm {
                    key,
                    object: json,
                    path: Vec::new(),
                })
            }
            _ => entries,
        },
        _ => return Ok(()),
    };
    for (key, value) in entries {
        check_dollar_keys(value).map_err(|mut e| {
            e.path.push(Step::Key(key));
            e
        })?;
    }
    Ok(())
}

/// `field.key[2].other`: where a value is inside a field, for messages.
fn path_text(field: &str, path: &[Step<'_>]) -> String {
    let mut text = field.to_owned();
    for step in path {
        match step {
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// JSON text for a message, cut short (at a character boundary) if long.
fn excerpt(json: &Json) -> String {
    let text = json.to_string();
    match text.char_indices().nth(EXCERPT_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
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
/// whose one key starts with `$`), or any other value to set (see [`value`]).
pub fn patch(object: Map<String, Json>) -> Result<Patch, String> {
    let mut patch = Patch::new();
    for (field, json) in object {
        let op = field_op(&field, &json)?;
        patch.ops.push((field, op));
    }
    Ok(patch)
}

/// The update operators of [`patch`].
const OPERATORS: [&str; 5] = ["$inc", "$add", "$remove", "$unset", "$set"];

/// The change `json` asks of `field`; errors name the field.
fn field_op(field: &str, json: &Json) -> Result<FieldOp, String> {
    let refuse = |e: String| format!("field {field:?}: {e}");
    if let Json::Object(o) = json {
        // `{"$inc": 1, "$unset": true}` would otherwise be stored as a map of that shape,
        // the counter lost without a word.
        if o.len() > 1 && o.keys().any(|k| OPERATORS.contains(&k.as_str())) {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            return Err(refuse(format!(
                "one operator per field, got {}: write {{\"$inc\": 1}}, {{\"$add\": [..]}}, \
                 {{\"$remove\": [..]}} or {{\"$unset\": true}} alone",
                keys.join(", ")
            )));
        }
    }
    if let Some((op, arg)) = single_entry(json) {
        match op {
            "$inc" => {
                let by = arg
                    .as_i64()
                    .ok_or_else(|| refuse(format!("$inc needs an integer, got {arg}")))?;
                return Ok(FieldOp::Increment(by));
            }
            "$add" => return Ok(FieldOp::Add(elements(field, "$add", arg)?)),
            "$remove" => return Ok(FieldOp::Remove(elements(field, "$remove", arg)?)),
            "$unset" if arg == &Json::Bool(true) => return Ok(FieldOp::Unset),
            "$unset" => return Err(refuse(format!("$unset takes true, got {arg}"))),
            // The escape for a value that reads as an operator: `{"$set": {"$x": 1}}` sets the
            // map `{"$x": 1}` (as `{"$map": {"$x": 1}}` does anywhere).
            "$set" => {
                return Ok(FieldOp::Set(match single_entry(arg) {
                    Some((key, inner)) if key.starts_with('$') && !TYPED_FORMS.contains(&key) => {
                        let entry = (key.to_owned(), value(inner, &format!("{field}.{key}"))?);
                        Value::Map([entry].into_iter().collect())
                    }
                    _ => value(arg, field)?,
                }))
            }
            // A typed form ($uuid, $bytes, $date, $float, $map) is a value to set, below.
            op if TYPED_FORMS.contains(&op) => {}
            // Almost surely a misspelled operator: storing it as a map would hide the mistake.
            op if op.starts_with('$') => {
                return Err(refuse(format!(
                    "unknown operator {op} (expected $inc, $add, $remove, $unset, $set, or a \
                     typed value: {}); to set this map as it is, write {{\"$set\": {}}}",
                    TYPED_FORMS.join(", "),
                    excerpt(json)
                )))
            }
            _ => {}
        }
    }
    Ok(FieldOp::Set(value(json, field)?))
}

/// The key and value of a one-entry JSON object.
fn single_entry(json: &Json) -> Option<(&str, &Json)> {
    match json {
        Json::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

fn elements(field: &str, op: &str, arg: &Json) -> Result<Vec<Value>, String> {
    let Json::Array(items) = arg else {
        return Err(format!(
            "field {field:?}: {op} needs a list of elements, got {arg}"
        ));
    };
    items.iter().map(|item| value(item, field)).collect()
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
    fn unknown_dollar_keys_are_refused_with_their_path_wherever_they_are() {
        let field = |text: &str| value(&serde_json::from_str(text).unwrap(), "f");
        for (text, path) in [
            (r#"{"$dat": 1}"#, "f"),
            (r#"[0, [1, {"$dat": 1}]]"#, "f[1][1]"),
            (r#"{"a": {"b.c": {"$dat": 1}}}"#, "f.a.b.c"),
            (r#"{"$map": {"$k": [{"$dat": 1}]}}"#, "f.$k[0]"),
        ] {
            let e = field(text).unwrap_err();
            let told = format!(
                r#"field "{path}": unknown typed form $dat (the typed forms are $uuid, $bytes, $date, $float, $map); to store this map as it is, write {{"$map": {{"$dat":1}}}}"#
            );
            assert_eq!(e, told, "{text}");
        }
        // Two keys, or `$` not first: no typed form was meant.
        for text in [
            r#"{"$a": 1, "$b": 2}"#,
            r#"{"a$": 1}"#,
            r#"{"$map": {"$x": {}}}"#,
        ] {
            assert!(field(text).is_ok(), "{text}");
        }
        assert_eq!(
            field(r#"{"$map": 5}"#).unwrap_err(),
            r#"field "f": $map expects an object, got 5"#
        );
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

    /// The scan runs only when the parser saw a number an integer literal beyond 64 bits can
    /// have become: it must see every one of them.
    #[test]
    fn the_parser_notes_every_number_that_may_be_an_integer_beyond_64_bits() {
        for big in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "-18446744073709551617",
            "123456789012345678901234567890",
        ] {
            let (_, noted) = parse(&format!(r#"{{"a": [{{"n": {big}}}]}}"#)).unwrap();
            assert!(noted, "{big}");
        }
        // Usual numbers leave the text unscanned (a float of 2^63 or more has it scanned, to
        // find nothing).
        let text = r#"{"n": 9223372036854775807, "m": -9223372036854775808, "f": 1.5e18,
                       "s": "99999999999999999999", "l": [0, -0, 1e-7]}"#;
        assert!(!parse(text).unwrap().1);
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
    fn a_key_named_twice_is_refused_at_any_depth() {
        for (text, told) in [
            (r#"{"a": 1, "a": 1}"#, r#"duplicate key "a" at column 12"#),
            (
                r#"[{"b": [{"c": 1, "c": 2}]}]"#,
                r#"duplicate key "c" at column 20"#,
            ),
            (
                "{\"a\": 1,\n \"a\": 2}",
                r#"duplicate key "a" at line 2 column 4"#,
            ),
            (
                r#"{"q\"": 1, "q\u0022": 2}"#,
                r#"duplicate key "q\"" at column 20"#,
            ),
        ] {
            let e = parse_json(text).unwrap_err();
            assert!(e.starts_with(told), "{text}: {e}");
        }
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        for text in [
            r#"{"n": null, "b": [true, false], "i": -7, "u": 18446744073709551615}"#,
            r#"{"f": 1.5, "e": -2e-300, "s": "\u00e9\n", "o": {}, "l": [[]]}"#,
            r#""just a string""#,
        ] {
            let plain: Json = serde_json::from_str(text).unwrap();
            assert_eq!(parse_json(text), Ok(plain), "{text}");
        }
    }

    #[test]
    fn non_objects_are_refused_by_kind() {
        assert_eq!(
            parse_object("[1]").unwrap_err(),
            "expected a JSON object, got an array"
        );
        assert_eq!(
            parse_object("{").unwrap_err(),
            "invalid JSON: EOF while parsing an object at column 1"
        );
    }
}
