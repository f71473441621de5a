//! An invalid `--where` expression exits 2 with one line that says at which column the
//! problem is, before the database is even opened.

mod common;

use common::TestDb;

#[test]
fn the_error_points_at_the_column() {
    let db = TestDb::new();
    db.put("bugs", r#"{"priority": 1}"#);
    let run = db
        .run("query", &["bugs", "--where", "priority >= && x"])
        .failure(2);
    assert!(
        run.stderr
            .starts_with("error: invalid expression at column 13:"),
        "{}",
        run.stderr
    );
}

#[test]
fn it_is_reported_even_when_the_file_is_missing() {
    let db = TestDb::new();
    let run = db.run("query", &["bugs", "--where", "(a == 1"]).failure(2);
    assert!(
        run.stderr.contains("invalid expression at column"),
        "{}",
        run.stderr
    );
    assert!(!db.path.exists());
}

/// The command line has no way to give a `$param`, and one never given is unknown: `v != $x`
/// would match nothing and exit 0. Refused instead (as /v1/query refuses unknown parameters).
#[test]
fn a_parameter_is_refused_since_the_command_line_cannot_give_it() {
    let db = TestDb::new();
    db.put("bugs", r#"{"v": 1}"#);
    for filter in ["v != $x", "v == 1 || exists($auth.sub)"] {
        let run = db.run("query", &["bugs", "--where", filter]).failure(2);
        assert!(
            run.stderr.contains("write the value itself"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
    // A `$` inside a string is text.
    db.run("query", &["bugs", "--where", r#"v != "$x""#])
        .success();
}

/// An expression that starts with a minus sign is the value of `--where`, not an option.
#[test]
fn an_expression_starting_with_a_minus_sign_is_taken_as_one() {
    let db = TestDb::new();
    db.put("bugs", r#"{"x": 1}"#);
    db.put("bugs", r#"{"x": -5}"#);
    let run = db.run("query", &["bugs", "--where", "-1 < x"]).success();
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.contains(r#""x":1"#), "{}", run.stdout);
}
