//! A damaged page of an encrypted file (its HMAC fails) met by a read says what to do,
//! as the damage of a plain file does: run an integrity check, restore from a backup or a
//! peer (an audit, 2026-12-07: `stats`, `get` and `export` said only "storage error:
//! database disk image is malformed: Error code 11").

mod common;

use common::{json_lines, TestDb};

#[test]
fn a_damaged_page_of_an_encrypted_file_says_to_check_and_restore() {
    let db = TestDb::encrypted("pw");
    db.run_with_stdin("import", &["c", "-"], &json_lines(3000, 300))
        .success();
    // The import's process checkpointed its log into the file as it closed.
    let mut bytes = std::fs::read(&db.path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 3] {
        *b ^= 0x5a;
    }
    std::fs::write(&db.path, &bytes).unwrap();
    for args in [&["c"][..], &[]] {
        let command = if args.is_empty() { "stats" } else { "export" };
        let run = db.run(command, args).failure(1);
        assert!(
            run.stderr.contains(
                "the file is damaged: run an integrity check, and restore it from a backup \
                 or a peer"
            ),
            "{command}: {}",
            run.stderr
        );
    }
    let check = db.run("check", &[]).failure(1);
    assert!(
        check.stderr.contains("integrity check found"),
        "{}",
        check.stderr
    );
}
