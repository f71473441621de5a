//! `get --at TIME` shows a record as it was at that moment; before it existed it is missing.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::TestDb;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as RFC 3339, with a pause on each side so that writes before and after it fall in
/// other milliseconds of the wall clock (which versions are stamped with).
fn moment() -> String {
    sleep(Duration::from_millis(20));
    let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    sleep(Duration::from_millis(20));
    now
}

#[test]
fn get_at_shows_each_past_state() {
    let db = TestDb::new();
    let before_insert = moment();
    let id = db.put("bugs", r#"{"status": "new", "votes": 1}"#);
    let after_insert = moment();
    db.run(
        "update",
        &[
            "bugs",
            &id,
            r#"{"status": "open", "votes": {"$unset": true}}"#,
        ],
    )
    .success();
    let after_update = moment();
    db.run("delete", &["bugs", &id]).success();

    let at = |t: &str| db.run("get", &["bugs", &id, "--at", t]);
    let old = at(&after_insert).success().json();
    assert_eq!(
        (old["status"].as_str(), old["votes"].as_i64()),
        (Some("new"), Some(1))
    );
    let mid = at(&after_update).success().json();
    assert_eq!(mid["status"], "open");
    assert!(mid.get("votes").is_none(), "{mid}");
    at(&before_insert).failure(1);
    db.run("get", &["bugs", &id]).failure(1);
}

#[test]
fn an_invalid_time_is_a_usage_error() {
    let db = TestDb::new();
    let id = db.put("bugs", "{}");
    let run = db
        .run("get", &["bugs", &id, "--at", "yesterday"])
        .failure(2);
    assert!(run.stderr.contains("RFC 3339"), "{}", run.stderr);
}
