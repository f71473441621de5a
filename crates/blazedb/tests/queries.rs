//! Queries: filters, order, limit/offset, indexes used by the planner, and a property test
//! that every query returns the same rows with and without indexes.

use blazedb::{Database, OpenOptions, OrderBy, Query, Value};
use proptest::prelude::*;

fn bugs() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("q.db"), OpenOptions::default()).unwrap();
    db.transaction(|tx| {
        for i in 0..60i64 {
            let status = ["open", "closed", "triage"][(i % 3) as usize];
            let mut fields = vec![
                ("title", Value::from(format!("bug {i:02}"))),
                ("status", Value::from(status)),
                ("priority", Value::Int(i % 10)),
                (
                    "tags",
                    Value::List(vec![Value::from(if i % 2 == 0 { "even" } else { "odd" })]),
                ),
                (
                    "meta",
                    Value::Map([("owner".to_owned(), Value::from(format!("u{}", i % 4)))].into()),
                ),
            ];
            if i % 5 == 0 {
                fields.push(("score", Value::Float(i as f64 / 2.0)));
            }
            tx.insert("bugs", fields)?;
        }
        Ok(())
    })
    .unwrap();
    (dir, db)
}

fn titles(rs: &[blazedb::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| match &r.fields["title"] {
            Value::Text(t) => t.clone(),
            _ => panic!(),
        })
        .collect()
}

#[test]
fn filters_order_limit_offset() {
    let (_d, db) = bugs();
    let q = |e: &str| db.query("bugs", &Query::filter(e).unwrap()).unwrap();
    assert_eq!(q("status == \"open\" && priority >= 5").len(), 10);
    assert_eq!(q("status in [\"open\", \"closed\"]").len(), 40);
    assert_eq!(q("!(status == \"open\")").len(), 40);
    assert_eq!(q("tags contains \"even\"").len(), 30);
    assert_eq!(q("exists(score)").len(), 12);
    assert_eq!(q("title starts_with \"bug 1\"").len(), 10);
    assert_eq!(q("meta.owner == \"u1\"").len(), 15);
    assert_eq!(q("score > 10").len(), 7);

    let mut query = Query::filter("status == \"open\"").unwrap();
    query.order_by = vec![
        OrderBy {
            field: "priority".into(),
            desc: true,
        },
        OrderBy {
            field: "title".into(),
            desc: false,
        },
    ];
    query.limit = Some(3);
    query.offset = 1;
    assert_eq!(
        titles(&db.query("bugs", &query).unwrap()),
        vec!["bug 39", "bug 18", "bug 48"]
    );
}

fn order_by(keys: &[&str]) -> Vec<OrderBy> {
    keys.iter().map(|k| OrderBy::parse(k).unwrap()).collect()
}

/// A query sorts by at most `ORDER_BY_KEYS_MAX` keys: every key is read from every record it
/// sorts, and a relay's store took about a minute over one request naming thousands.
#[test]
fn more_sort_keys_than_the_limit_are_refused() {
    let (_d, db) = bugs();
    let max = blazedb::limits::ORDER_BY_KEYS_MAX;
    let mut query = Query::filter("status == \"open\"").unwrap();
    query.order_by = order_by(&vec!["priority"; max + 1]);
    let e = db.query("bugs", &query).unwrap_err();
    assert!(matches!(e, blazedb::Error::InvalidArgument(_)), "{e:?}");
    assert!(
        e.to_string().contains(&format!(
            "order_by has {} keys, the limit is {max}",
            max + 1
        )),
        "{e}"
    );
    // At the limit, a key repeating an earlier key's field changes nothing.
    let mut keys = vec!["priority:desc"; max - 1];
    keys.push("title");
    query.order_by = order_by(&keys);
    let repeated = db.query("bugs", &query).unwrap();
    query.order_by = order_by(&["priority:desc", "title"]);
    assert_eq!(
        titles(&repeated),
        titles(&db.query("bugs", &query).unwrap())
    );
    assert_eq!(&titles(&repeated)[..3], ["bug 09", "bug 39", "bug 18"]);
}

/// Without sort keys a limit stops the scan: the records come in id order, so the first
/// `offset + limit` matches are all the query reads (it read the whole collection, under the
/// database's lock, to answer one record).
#[test]
fn a_limit_without_sort_keys_stops_the_scan() {
    let (_d, db) = bugs();
    let all = db.scan("bugs").unwrap();
    let query = |filter: Option<&str>, limit: usize, offset: usize| {
        let q = Query {
            filter: filter.map(|f| blazedb::query::parse(f).unwrap()),
            limit: Some(limit),
            offset,
            ..Query::default()
        };
        db.query_with_stats("bugs", &q).unwrap()
    };

    let (records, stats) = query(None, 2, 3);
    assert_eq!(records, all[3..5]);
    assert_eq!(stats.records_decoded, 5);

    // With a filter, the scan stops at the third match.
    let open: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].fields["status"] == Value::from("open"))
        .collect();
    let (records, stats) = query(Some("status == \"open\""), 2, 1);
    assert_eq!(records, [all[open[1]].clone(), all[open[2]].clone()]);
    assert_eq!(stats.records_decoded, open[2] as u64 + 1);

    // Through an index, only candidates are read, and only until there are enough.
    db.create_index("bugs", "status").unwrap();
    let (records, stats) = query(Some("status == \"open\""), 2, 1);
    assert_eq!(records, [all[open[1]].clone(), all[open[2]].clone()]);
    assert_eq!(stats.records_decoded, 3);

    let (records, stats) = query(None, 0, 0);
    assert!(records.is_empty());
    assert_eq!(stats.records_decoded, 0);
    // Without a limit, everything that matches.
    let (records, _) = db
        .query_with_stats("bugs", &Query::filter("status == \"open\"").unwrap())
        .unwrap();
    assert_eq!(records.len(), open.len());
}

/// With sort keys and a limit, the query keeps only the best `offset + limit` records as it
/// scans: the answer is the same slice of the fully sorted matches.
#[test]
fn a_limit_with_sort_keys_answers_the_same_slice() {
    let (_d, db) = bugs();
    let keys = order_by(&["score:desc", "priority", "meta.owner:desc"]);
    // The order by hand: missing `score` is null, first ascending and so last descending.
    let mut expected = db
        .query("bugs", &Query::filter("status != \"triage\"").unwrap())
        .unwrap();
    let value = |r: &blazedb::Record, f: &str| r.field(f).unwrap_or(Value::Null);
    expected.sort_by(|a, b| {
        value(b, "score")
            .cmp(&value(a, "score"))
            .then_with(|| value(a, "priority").cmp(&value(b, "priority")))
            .then_with(|| value(b, "meta.owner").cmp(&value(a, "meta.owner")))
            .then_with(|| a.id.cmp(&b.id))
    });
    for (offset, limit) in [(0, 1), (0, 5), (3, 4), (10, 100), (38, 5), (45, 1), (0, 0)] {
        let mut q = Query::filter("status != \"triage\"").unwrap();
        q.order_by = keys.clone();
        q.offset = offset;
        q.limit = Some(limit);
        let got = db.query("bugs", &q).unwrap();
        let end = (offset + limit).min(expected.len());
        let want = &expected[offset.min(end)..end];
        assert_eq!(got, want, "offset {offset}, limit {limit}");
    }
    let mut q = Query::filter("status != \"triage\"").unwrap();
    q.order_by = keys;
    assert_eq!(db.query("bugs", &q).unwrap(), expected);
}

/// Field names may contain dots: `order_by "user.rank"` sorts by a top-level field of that
/// name (it looked only for `rank` inside a map `user`, and left the records unsorted), and
/// by the nested path where a record has no such field.
#[test]
fn order_by_a_field_name_with_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("q.db"), OpenOptions::default()).unwrap();
    for (rank, title) in [(3, "three"), (1, "one"), (4, "four"), (2, "two")] {
        db.insert(
            "t",
            [("user.rank", Value::Int(rank)), ("title", title.into())],
        )
        .unwrap();
    }
    let nested = Value::Map([("rank".to_owned(), Value::Int(0))].into());
    db.insert("t", [("user", nested), ("title", "nested zero".into())])
        .unwrap();
    let q = Query {
        order_by: order_by(&["user.rank:desc"]),
        ..Query::default()
    };
    assert_eq!(
        titles(&db.query("t", &q).unwrap()),
        ["four", "three", "two", "one", "nested zero"]
    );
}

#[test]
fn invalid_expressions_point_at_the_position() {
    let (_d, db) = bugs();
    let e = Query::filter("status == \"open\" && priority >=").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("column"), "{msg}");
    let _ = db;
}

#[test]
fn indexes_are_used_and_maintained() {
    let (_d, db) = bugs();
    db.create_index("bugs", "status").unwrap();
    db.create_index("bugs", "priority").unwrap();
    assert_eq!(
        db.indexes("bugs").unwrap(),
        vec!["priority".to_owned(), "status".to_owned()]
    );
    let stats = db.stats().unwrap();
    assert_eq!(stats.collections["bugs"].index_entries["status"], 60);
    // Writes after index creation keep it current.
    let id = db
        .insert(
            "bugs",
            [
                ("status", Value::from("open")),
                ("priority", Value::Int(99)),
            ],
        )
        .unwrap();
    let q = Query::filter("priority == 99").unwrap();
    assert_eq!(db.query("bugs", &q).unwrap().len(), 1);
    db.update("bugs", id, blazedb::Patch::new().set("priority", 98))
        .unwrap();
    assert_eq!(db.query("bugs", &q).unwrap().len(), 0);
    db.delete(
        "bugs",
        db.query("bugs", &Query::filter("priority == 98").unwrap())
            .unwrap()[0]
            .id,
    )
    .unwrap();
    assert_eq!(
        db.stats().unwrap().collections["bugs"].index_entries["priority"],
        60
    );
    assert!(db.drop_index("bugs", "priority").unwrap());
}

fn arb_expr() -> impl Strategy<Value = String> {
    let field = prop_oneof![Just("a"), Just("b"), Just("c")];
    let lit = prop_oneof![
        (-3i64..4).prop_map(|i| i.to_string()),
        Just("1.5".to_owned()),
        Just("\"x\"".to_owned()),
        Just("\"y\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
    ];
    let op = prop_oneof![
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">=")
    ];
    let atom = prop_oneof![
        (field.clone(), op, lit.clone()).prop_map(|(f, o, l)| format!("{f} {o} {l}")),
        (field.clone(), lit.clone(), lit.clone())
            .prop_map(|(f, x, y)| format!("{f} in [{x}, {y}]")),
        field.clone().prop_map(|f| format!("exists({f})")),
        field.prop_map(|f| format!("{f} starts_with \"x\"")),
    ];
    atom.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} && {y})")),
            (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} || {y})")),
            inner.prop_map(|x| format!("!({x})")),
        ]
    })
}

fn arb_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (-3i64..4).prop_map(|i| Some(Value::Int(i))),
        Just(Some(Value::Float(1.5))),
        Just(Some(Value::Float(2.0))),
        Just(Some(Value::from("x"))),
        Just(Some(Value::from("xy"))),
        Just(Some(Value::from("y"))),
        Just(Some(Value::Bool(true))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn index_and_scan_agree(
        rows in proptest::collection::vec((arb_value(), arb_value(), arb_value()), 0..30),
        exprs in proptest::collection::vec(arb_expr(), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("p.db"), OpenOptions::default()).unwrap();
        db.transaction(|tx| {
            for (a, b, c) in &rows {
                let fields: Vec<(&str, Value)> = [("a", a), ("b", b), ("c", c)]
                    .into_iter()
                    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
                    .collect();
                tx.insert("t", fields)?;
            }
            Ok(())
        }).unwrap();
        db.create_index("t", "a").unwrap();
        db.create_index("t", "b").unwrap();
        for e in &exprs {
            let with = Query::filter(e).unwrap();
            let mut without = with.clone();
            without.no_index = true;
            let ids = |q: &Query| db.query("t", q).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>();
            prop_assert_eq!(ids(&with), ids(&without), "expression {}", e);
        }
    }
}
