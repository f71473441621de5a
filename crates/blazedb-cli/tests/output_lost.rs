//! A write command whose result cannot be printed (stdout on a full disk; here `/dev/full`)
//! has stored its write: it says so, what was stored, and not to run it again, and exits 4,
//! not 1 (an audit, 2026-12-07: `put` and `import` exited 1 with only "cannot write the
//! output: No space left on device", and the import run again doubled the collection).

mod common;

use std::process::{Command, Stdio};

use common::{blazedb_command, json_lines, Run, TestDb};

/// `cmd` with its stdout on `/dev/full` (`None` where there is no such device).
fn run_into_a_full_disk(mut cmd: Command) -> Option<Run> {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full here");
        return None;
    };
    let out = cmd
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run blazedb");
    Some(Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    })
}

#[test]
fn a_put_whose_id_cannot_be_printed_says_it_was_stored_and_exits_4() {
    let db = TestDb::new();
    let Some(run) = run_into_a_full_disk(db.command("put", &["c", r#"{"x": 1}"#])) else {
        return;
    };
    let run = run.failure(4);
    let e = &run.stderr;
    assert!(
        e.starts_with("error: cannot write the output: No space left on device"),
        "{e}"
    );
    assert!(
        e.contains("but the record was stored, in collection \"c\" with id "),
        "{e}"
    );
    assert!(e.contains("do not run `put` again"), "{e}");
    let id = e
        .split("with id ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap();
    assert_eq!(db.get("c", id)["x"], 1);
}

#[test]
fn an_import_whose_count_cannot_be_printed_says_how_many_were_stored_and_exits_4() {
    let db = TestDb::new();
    let lines = db.file("lines.jsonl");
    std::fs::write(&lines, json_lines(1000, 20)).unwrap();
    let cmd = db.command("import", &["d", lines.to_str().unwrap()]);
    let Some(run) = run_into_a_full_disk(cmd) else {
        return;
    };
    let e = run.failure(4).stderr;
    assert!(
        e.contains(&format!(
            "but the import was stored, all 1000 record(s) of {} in collection \"d\": do not \
             run it again",
            lines.display()
        )),
        "{e}"
    );
    let stats = db.run("stats", &[]).success().json();
    assert_eq!(stats["collections"]["d"]["records"], 1000);
}

#[test]
fn a_rekey_whose_result_cannot_be_printed_says_the_password_changed_and_exits_4() {
    let db = TestDb::encrypted("old");
    db.put("c", r#"{"x": 1}"#);
    let mut cmd = blazedb_command(Some("old"));
    cmd.env("BLAZEDB_NEW_PASSWORD", "new")
        .arg("rekey")
        .arg(&db.path);
    let Some(run) = run_into_a_full_disk(cmd) else {
        return;
    };
    let e = run.failure(4).stderr;
    assert!(
        e.contains(&format!(
            "but the password of {} was changed: open it with the new password",
            db.path.display()
        )),
        "{e}"
    );
    db.run_with_password(Some("new"), "stats", &[]).success();
}

/// A reader that closes the pipe early is no failure, also after a write.
#[test]
fn a_put_whose_reader_left_still_exits_0() {
    let db = TestDb::new();
    let mut cmd = db.command("put", &["c", r#"{"x": 1}"#]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
