//! A float written in JSON is stored as exactly that float, and export → import keeps it bit
//! for bit (serde_json's default parsing read about one float in ten as its neighbour).

mod common;

use blazedb::{Database, OpenOptions, Value};
use common::TestDb;

/// Finite floats of every magnitude and, as often, plain ones in [0, 1000), from a fixed
/// xorshift sequence.
fn floats(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = if out.len() % 2 == 0 {
            f64::from_bits(x)
        } else {
            (x >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
        };
        if f.is_finite() {
            out.push(f);
        }
    }
    out
}

/// `got` holds exactly the floats `want` does; else panics naming the first that differs.
fn assert_same_bits(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let differ = (0..got.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .count();
        panic!(
            "{what}: {differ} of {} floats changed, the first {:?} into {:?}",
            want.len(),
            want[i],
            got[i]
        );
    }
}

/// The record's `f` as the floats it holds, read through the library.
fn stored(db: &TestDb) -> Vec<f64> {
    let options = OpenOptions {
        create: false,
        ..OpenOptions::default()
    };
    let db = Database::open(&db.path, options).unwrap();
    let records = db.query("c", &Default::default()).unwrap();
    let Some(Value::List(items)) = records[0].fields.get("f") else {
        panic!("{records:?}")
    };
    items
        .iter()
        .map(|v| match v {
            Value::Float(f) => *f,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn floats_are_stored_and_exported_bit_for_bit() {
    let floats = floats(4000);
    let db = TestDb::new();
    let record = serde_json::json!({ "f": floats });
    db.put("c", &record.to_string());
    assert_same_bits(&stored(&db), &floats, "put");

    let exported = db.run("export", &["c"]).success().stdout;
    let copy = TestDb::new();
    copy.run_with_stdin("import", &["c", "-"], &exported)
        .success();
    assert_same_bits(&stored(&copy), &floats, "export → import");
}
