//! A one-key object whose key starts with `$` but is no typed form (`{"$dat": 1}`, a
//! misspelt `$date`) is refused by `put`, `import` and `update`, naming the key and where it
//! is; a map of that shape is written `{"$map": {..}}`, which `export` writes, so export →
//! import still keeps every map.

mod common;

use blazedb::{Database, OpenOptions, RecordId, Value};
use common::TestDb;
use serde_json::json;

const ID: &str = "0190b3c4-0000-7000-8000-000000000001";

#[test]
fn put_refuses_a_misspelt_typed_form_naming_its_key_path_and_the_map_form() {
    let db = TestDb::new();
    let run = db
        .run("put", &["bugs", r#"{"title": "x", "due": {"$dat": 123}}"#])
        .failure(2);
    for part in [
        r#"field "due": unknown typed form $dat"#,
        "the typed forms are $uuid, $bytes, $date, $float, $map",
        r#"to store this map as it is, write {"$map": {"$dat":123}}"#,
    ] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }
    // Nested in maps and lists, and inside a `$map`'s values: the path says where.
    for (json, path, key) in [
        (r#"{"a": {"b": [1, {"$x": true}]}}"#, "a.b[1]", "$x"),
        (r#"{"a": {"$map": {"$k": {"$y": 1}}}}"#, "a.$k", "$y"),
    ] {
        let run = db.run("put", &["bugs", json]).failure(2);
        let told = format!("field {path:?}: unknown typed form {key}");
        assert!(run.stderr.contains(&told), "{json}: {}", run.stderr);
    }
    assert!(!db.path.exists(), "a refused put created the database");
}

#[test]
fn import_refuses_a_misspelt_typed_form_naming_its_line() {
    let db = TestDb::new();
    let lines = "{\"n\": 1}\n{\"n\": 2, \"when\": [{\"$Date\": \"2026-01-01T00:00:00Z\"}]}\n";
    let run = db
        .run_with_stdin("import", &["bugs", "-"], lines)
        .failure(1);
    let told = r#"import stopped at line 2: field "when[0]": unknown typed form $Date"#;
    assert!(run.stderr.contains(told), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
}

#[test]
fn update_refuses_a_misspelt_typed_form_inside_a_value() {
    let db = TestDb::new();
    let id = db.put("bugs", "{}");
    // At the top of a field it reads as a misspelt operator, which update already refused.
    let run = db
        .run("update", &["bugs", &id, r#"{"due": {"$dat": 1}}"#])
        .failure(2);
    assert!(
        run.stderr.contains("unknown operator $dat"),
        "{}",
        run.stderr
    );
    for json in [
        r#"{"m": {"a": {"$dat": 1}}}"#,
        r#"{"tags": {"$add": [{"$dat": 1}]}}"#,
        r#"{"m": {"$set": {"a": {"$dat": 1}}}}"#,
    ] {
        let run = db.run("update", &["bugs", &id, json]).failure(2);
        assert!(
            run.stderr.contains("unknown typed form $dat"),
            "{json}: {}",
            run.stderr
        );
    }
    assert_eq!(db.get("bugs", &id), json!({"_id": id}));
}

#[test]
fn the_map_form_stores_a_map_whose_only_key_starts_with_dollar() {
    let db = TestDb::new();
    let id = db.put(
        "bugs",
        r#"{"m": {"$map": {"$dat": 123}}, "d": {"$map": {"$date": "2026-01-01T00:00:00Z"}}}"#,
    );
    let got = db.get("bugs", &id);
    assert_eq!(got["m"], json!({"$map": {"$dat": 123}}));
    // A map holding the text of a date, not a date.
    assert_eq!(got["d"], json!({"$map": {"$date": "2026-01-01T00:00:00Z"}}));
    // Update takes the map form too, besides its `$set`.
    db.run(
        "update",
        &[
            "bugs",
            &id,
            r#"{"m": {"$map": {"$x": 1}}, "n": {"$set": {"$y": 2}}}"#,
        ],
    )
    .success();
    let got = db.get("bugs", &id);
    assert_eq!(got["m"], json!({"$map": {"$x": 1}}));
    assert_eq!(got["n"], json!({"$map": {"$y": 2}}));
}

/// The maps are written through the library, so that they are what the store holds however
/// the CLI reads its input.
#[test]
fn export_writes_maps_keyed_like_typed_forms_so_import_keeps_them() {
    let map = |k: &str, v: Value| Value::Map([(k.to_owned(), v)].into_iter().collect());
    let fields = vec![
        // Each map has one key starting with `$`: written plain, import would read the first
        // as a date and refuse the others as misspelt typed forms.
        (
            "text_of_a_date",
            map("$date", Value::from("2026-01-01T00:00:00Z")),
        ),
        ("custom", map("$ref", Value::from("users/7"))),
        (
            "in_a_list",
            Value::List(vec![map("$bytes", Value::Bytes(vec![0, 1]))]),
        ),
        ("map_of_map", map("$map", map("$x", Value::Null))),
        (
            "two_keys",
            Value::Map(
                [
                    ("$x".to_owned(), Value::Int(1)),
                    ("y".to_owned(), Value::Int(2)),
                ]
                .into_iter()
                .collect(),
            ),
        ),
    ];
    let source = TestDb::new();
    let id: RecordId = ID.parse().unwrap();
    Database::open(&source.path, OpenOptions::default())
        .unwrap()
        .insert_with_id("bugs", id, fields.clone())
        .unwrap();

    let exported = source.run("export", &["bugs"]).success().stdout;
    let line: serde_json::Value = serde_json::from_str(exported.trim()).unwrap();
    assert_eq!(
        line,
        json!({
            "_id": ID,
            "text_of_a_date": {"$map": {"$date": "2026-01-01T00:00:00Z"}},
            "custom": {"$map": {"$ref": "users/7"}},
            "in_a_list": [{"$map": {"$bytes": {"$bytes": "AAE="}}}],
            "map_of_map": {"$map": {"$map": {"$map": {"$x": null}}}},
            "two_keys": {"$x": 1, "y": 2},
        })
    );

    let copy = TestDb::new();
    copy.run_with_stdin("import", &["bugs", "-"], &exported)
        .success();
    let options = OpenOptions {
        create: false,
        ..OpenOptions::default()
    };
    let back = Database::open(&copy.path, options)
        .unwrap()
        .get("bugs", id)
        .unwrap()
        .unwrap();
    for (field, value) in &fields {
        assert_eq!(back.fields.get(*field), Some(value), "{field}");
    }
    assert_eq!(back.fields.len(), fields.len());
}

#[test]
fn the_help_lists_the_typed_forms_and_the_map_form() {
    let help = common::run_blazedb(None, &["--help"]).success().stdout;
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for form in [r#"{"$float": "NaN"#, r#"{"$map": {"$key": ...}}"#] {
        assert!(help.contains(form), "{form}: {help}");
    }
}
