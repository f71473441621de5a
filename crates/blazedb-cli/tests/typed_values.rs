//! Typed values written as `{"$uuid"}`, `{"$bytes"}`, `{"$date"}` and `{"$float"}` come back
//! in the same form; counters and sets print as their values.

mod common;

use common::TestDb;
use serde_json::json;

#[test]
fn typed_values_round_trip_through_put_and_get() {
    let db = TestDb::new();
    let record = json!({
        "owner": {"$uuid": "0190b3c4-0000-7000-8000-0000000000ff"},
        "avatar": {"$bytes": "AAECAwQ="},
        "due": {"$date": "2026-11-22T10:00:00.123456Z"},
        "ratio": 0.25,
        "nan": {"$float": "NaN"},
        "big": i64::MAX,
        "nested": {"list": [{"$date": "2000-01-01T00:00:00Z"}, null, "x"]},
    });
    let id = db.put("things", &record.to_string());
    let mut expected = record;
    expected["_id"] = json!(id);
    assert_eq!(db.get("things", &id), expected);
}

#[test]
fn typed_values_are_queryable() {
    let db = TestDb::new();
    db.put(
        "things",
        r#"{"due": {"$date": "2026-01-01T00:00:00Z"}, "name": "early"}"#,
    );
    db.put(
        "things",
        r#"{"due": {"$date": "2027-01-01T00:00:00Z"}, "name": "late"}"#,
    );
    let rows = db
        .run("query", &["things", "--order-by", "due:desc"])
        .success()
        .json_lines();
    assert_eq!(rows[0]["name"], "late");
}

#[test]
fn counters_and_sets_print_as_their_values() {
    let db = TestDb::new();
    let id = db.put("things", "{}");
    db.run(
        "update",
        &[
            "things",
            &id,
            r#"{"hits": {"$inc": 2}, "tags": {"$add": ["b", "a"]}}"#,
        ],
    )
    .success();
    db.run("update", &["things", &id, r#"{"hits": {"$inc": 5}}"#])
        .success();
    assert_eq!(
        db.get("things", &id),
        json!({"_id": id, "hits": 7, "tags": ["a", "b"]})
    );
}

#[test]
fn a_malformed_typed_value_is_refused() {
    let db = TestDb::new();
    let run = db
        .run("put", &["things", r#"{"owner": {"$uuid": "not-a-uuid"}}"#])
        .failure(2);
    assert!(run.stderr.contains("invalid $uuid"), "{}", run.stderr);
}

/// serde_json reads an integer beyond u64 or below i64 as a float of another value: `put`,
/// `update` and `import` refuse it as they refuse 2^63, instead of storing that float; a
/// number inside a string is only text.
#[test]
fn integers_beyond_64_bits_are_refused_not_stored_as_floats() {
    let db = TestDb::new();
    let id = db.put(
        "c",
        r#"{"n": 1, "note": "\"123456789012345678901234567890\""}"#,
    );
    for big in [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
    ] {
        let run = db
            .run("put", &["c", &format!(r#"{{"n":{big}}}"#)])
            .failure(2);
        assert!(
            run.stderr
                .contains(&format!("integer {big} is beyond the 64-bit range")),
            "{}",
            run.stderr
        );
        db.run("update", &["c", &id, &format!(r#"{{"n": {big}}}"#)])
            .failure(2);
        let line = format!("{{\"n\": {big}}}\n");
        let run = db.run_with_stdin("import", &["c", "-"], &line).failure(1);
        assert!(run.stderr.contains("at line 1"), "{}", run.stderr);
    }
    let rows = db.run("export", &["c"]).success().json_lines();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["n"], 1);
}

/// `{"$date": N}` is N microseconds since 1970, the form export writes for dates RFC 3339
/// cannot (outside the years 0-9999), so export → import keeps them; the help says the
/// unit, since JavaScript's `Date.now()` counts milliseconds.
#[test]
fn a_numeric_date_is_microseconds_and_the_help_says_so() {
    let db = TestDb::new();
    let id = db.put(
        "things",
        r#"{"at": {"$date": 1700000000123456}, "far": {"$date": 253402300800000000}}"#,
    );
    let got = db.get("things", &id);
    assert_eq!(got["at"], json!({"$date": "2023-11-14T22:13:20.123456Z"}));
    // The year 10000: beyond RFC 3339, exported as the number and imported back as it.
    assert_eq!(got["far"], json!({"$date": 253402300800000000_i64}));
    let exported = db.run("export", &["things"]).success().stdout;
    let copy = TestDb::new();
    copy.run_with_stdin("import", &["things", "-"], &exported)
        .success();
    assert_eq!(copy.get("things", &id), got);

    let help = common::run_blazedb(None, &["--help"]).success().stdout;
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(r#"{"$date": N} is N MICROseconds since 1970-01-01T00:00:00Z"#),
        "{help}"
    );
    assert!(help.contains("Date.now() counts milliseconds"), "{help}");
}
