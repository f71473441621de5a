//! Every error is one `error: ` line on stderr and a non-zero exit: 2 for a wrong command line
//! (including malformed JSON arguments), 1 for a failed command.

mod common;

use common::{run_blazedb, TestDb};

#[test]
fn malformed_json_arguments_exit_2() {
    let db = TestDb::new();
    let run = db
        .run("put", &["bugs", r#"{"title": "unterminated"#])
        .failure(2);
    assert!(
        run.stderr.contains("JSON argument: invalid JSON"),
        "{}",
        run.stderr
    );
    let run = db.run("put", &["bugs", "[1, 2]"]).failure(2);
    assert!(
        run.stderr.contains("expected a JSON object, got an array"),
        "{}",
        run.stderr
    );
    assert!(!db.path.exists(), "a rejected put must not create the file");

    let id = db.put("bugs", "{}");
    db.run("update", &["bugs", &id, "nope"]).failure(2);
}

#[test]
fn clap_errors_are_one_line_and_exit_2() {
    let db = TestDb::new();
    let run = db.run("get", &["bugs", "not-a-uuid"]).failure(2);
    assert!(run.stderr.contains("invalid record id"), "{}", run.stderr);
    let run = db.run("put", &["bugs"]).failure(2);
    assert!(run.stderr.contains("<JSON>"), "{}", run.stderr);
    let run = run_blazedb(None, &["frobnicate"]).failure(2);
    assert!(run.stderr.contains("frobnicate"), "{}", run.stderr);
}

#[test]
fn a_file_that_is_not_a_database_is_named_as_such() {
    let db = TestDb::new();
    std::fs::write(&db.path, "hello, I am a text file\n").unwrap();
    let run = db.run("stats", &[]).failure(1);
    assert!(
        run.stderr.contains("not a BlazeDB database"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_lists_the_commands_but_not_debug() {
    let run = run_blazedb(None, &["--help"]).success();
    for command in [
        "put", "get", "update", "delete", "query", "history", "import", "export",
    ] {
        assert!(run.stdout.contains(command), "{command} missing from help");
    }
    assert!(!run.stdout.contains("debug"), "{}", run.stdout);
}
