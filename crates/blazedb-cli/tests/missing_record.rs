//! Naming a record that does not exist exits 1 with a one-line message; so does naming a
//! database file that does not exist, which read commands never create.

mod common;

use common::TestDb;

const ABSENT: &str = "0190b3c4-0000-7000-8000-00000000dead";

#[test]
fn get_update_delete_history_of_a_missing_record_exit_1() {
    let db = TestDb::new();
    db.put("bugs", r#"{"title": "present"}"#);
    for (command, extra) in [
        ("get", None),
        ("update", Some(r#"{"a": 1}"#)),
        ("delete", None),
        ("history", None),
    ] {
        let mut args = vec!["bugs", ABSENT];
        args.extend(extra);
        let run = db.run(command, &args).failure(1);
        assert!(run.stderr.contains(ABSENT), "{command}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{command}: {}", run.stdout);
    }
}

#[test]
fn a_deleted_record_is_missing_but_keeps_its_history() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "gone soon"}"#);
    db.run("delete", &["bugs", &id]).success();
    db.run("get", &["bugs", &id]).failure(1);
    db.run("delete", &["bugs", &id]).failure(1);
    let history = db.run("history", &["bugs", &id]).success().json_lines();
    assert_eq!(history.last().unwrap()["op"], "delete");
}

#[test]
fn read_commands_do_not_create_a_missing_database() {
    let db = TestDb::new();
    for (command, args) in [
        ("get", vec!["bugs", ABSENT]),
        ("query", vec!["bugs"]),
        ("export", vec!["bugs"]),
        ("stats", vec![]),
        ("check", vec![]),
        ("history", vec!["bugs", ABSENT]),
        ("conflicts", vec![]),
    ] {
        let run = db.run(command, &args).failure(1);
        assert!(
            run.stderr.contains("no such database"),
            "{command}: {}",
            run.stderr
        );
        assert!(!db.path.exists(), "{command} created the file");
    }
}

/// A write to a database in a directory that does not exist says so: SQLite's own words were
/// "unable to open database file", which says nothing of the directory.
#[test]
fn a_write_into_a_missing_directory_names_the_directory() {
    let db = TestDb::new();
    let path = db.file("no/such/dir/x.db");
    let run =
        common::run_blazedb(None, &["put", path.to_str().unwrap(), "c", r#"{"a":1}"#]).failure(1);
    assert!(
        run.stderr.contains("the directory") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no/such/dir"), "{}", run.stderr);
}
