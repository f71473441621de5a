//! Two handles on one file (two connections, as two processes would have) taking turns to
//! write records with field names the other has not seen. Each handle numbers field names in
//! its own in-memory dictionary and catches up with the other's entries when it notices the
//! other's commits; a stale copy would give a taken number to a new name (the insert of the
//! dictionary row would fail) or read a record's fields under the wrong names. A rolled back
//! transaction that numbered a new name must not leave the number behind either.

use blazedb::{Database, OpenOptions, Value};

#[test]
fn field_names_numbered_by_either_handle_read_back_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let a = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let b = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    let mut ids = Vec::new();
    for round in 0..40i64 {
        let (me, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let field = format!("f{round}");
        ids.push((
            field.clone(),
            me.insert("c", [(field.as_str(), Value::Int(round))])
                .unwrap(),
        ));
        if round % 5 == 0 {
            // Numbers new names (and writes some out: inserts go to the file in batches),
            // then rolls back: the names never reach the file.
            let r = me.transaction(|tx| {
                for k in 0..100 {
                    tx.insert("c", [(format!("lost{round}-{k}").as_str(), Value::Int(-1))])?;
                }
                Err::<(), _>(blazedb::Error::Write(blazedb::WriteError::NotFound {
                    collection: "c".into(),
                    id: Default::default(),
                }))
            });
            assert!(r.is_err());
        }
        // The other handle reads every record so far under the right names.
        for (k, (f, id)) in ids.iter().enumerate() {
            let rec = other.get("c", *id).unwrap().expect("record");
            assert_eq!(
                rec.fields.get(f),
                Some(&Value::Int(k as i64)),
                "round {round}: {f}"
            );
            assert_eq!(rec.fields.len(), 1, "round {round}: {rec:?}");
        }
    }
    for db in [&a, &b] {
        assert_eq!(db.count("c").unwrap(), 40);
    }
    drop((a, b));
    let c = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
    assert!(c.integrity_check().unwrap().ok);
    for (k, (f, id)) in ids.iter().enumerate() {
        let rec = c.get("c", *id).unwrap().expect("record");
        assert_eq!(rec.fields.get(f), Some(&Value::Int(k as i64)));
    }
}
