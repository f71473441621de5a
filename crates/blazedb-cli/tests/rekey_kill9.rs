//! `blazedb rekey` killed with SIGKILL at any moment (while it derives the keys, while it
//! writes the re-encrypted copy, just after it renamed the copy over the file, ...) leaves a
//! database that opens with exactly one of the old and the new password, holds every record
//! and passes the integrity check; a copy left by the crash is removed by the next open.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use blazedb::{Database, Error, OpenError, OpenOptions, Value};
use common::{blazedb_command, TestDb};

const OLD: &str = "old password";
const NEW: &str = "new password";
/// Enough data that writing the copy takes a while, so kills land inside it.
const RECORDS: i64 = 20_000;
/// Kills spread evenly over the time an uninterrupted rekey takes.
const SPREAD_KILLS: u32 = 10;
/// How long a rekey may take to reach a point the test waits for.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_rekey_killed_at_any_point_leaves_the_file_under_one_password_with_all_its_data() {
    let db = TestDb::encrypted(OLD);
    fill(&db.path);

    // One uninterrupted rekey, timed, so the kills below spread over the whole of one.
    let started = Instant::now();
    let mut child = spawn_rekey(&db.path);
    assert!(child.wait().unwrap().success(), "the rekey failed");
    let whole = started.elapsed();
    assert_eq!(opens_with(&db.path), NEW);
    rekey_back_to_old(&db.path);

    for i in 0..SPREAD_KILLS {
        let delay = whole * i / SPREAD_KILLS;
        let mut child = spawn_rekey(&db.path);
        std::thread::sleep(delay);
        kill(&mut child);
        let opened = opens_with(&db.path);
        eprintln!("killed {delay:?} into a {whole:?} rekey: opens with {opened:?}");
        if opened == NEW {
            rekey_back_to_old(&db.path);
        }
    }

    // While it writes the copy: the old password, and the next open clears the copy away
    // (a second copy of the data, under the password the rekey was to set).
    let mut child = spawn_rekey(&db.path);
    wait_for("the copy to appear", || copy_of(&db.path).exists());
    kill(&mut child);
    assert!(copy_of(&db.path).exists(), "the killed rekey left no copy");
    assert_eq!(opens_with(&db.path), OLD);
    assert!(
        !copy_of(&db.path).exists(),
        "the open left the killed rekey's copy behind"
    );

    // Just after the rename: the new password.
    let salt = salt_of(&db.path);
    let mut child = spawn_rekey(&db.path);
    wait_for("the copy to replace the file", || salt_of(&db.path) != salt);
    kill(&mut child);
    assert_eq!(opens_with(&db.path), NEW);
    assert!(
        !copy_of(&db.path).exists(),
        "the renamed copy is still there"
    );
}

/// `RECORDS` records, in a file encrypted with `OLD`.
fn fill(path: &Path) {
    let db = Database::open(path, OpenOptions::with_password(OLD)).unwrap();
    db.transaction(|tx| {
        for n in 0..RECORDS {
            tx.insert(
                "notes",
                [("n", Value::Int(n)), ("text", Value::from("x".repeat(200)))],
            )?;
        }
        Ok(())
    })
    .unwrap();
}

/// `blazedb rekey` from `OLD` to `NEW`.
fn spawn_rekey(path: &Path) -> Child {
    let mut cmd = blazedb_command(Some(OLD));
    cmd.env("BLAZEDB_NEW_PASSWORD", NEW)
        .arg("rekey")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGKILL `child` (no destructor, no rollback runs), or reap it if it finished first.
fn kill(child: &mut Child) {
    let _ = child.kill();
    child.wait().unwrap();
}

/// Which of the two passwords opens the file: exactly one must, the other must be refused
/// as a wrong password, and the file must hold every record and pass the integrity check.
fn opens_with(path: &Path) -> &'static str {
    let open = |pw: &str| {
        let options = OpenOptions {
            create: false,
            ..OpenOptions::with_password(pw)
        };
        Database::open(path, options)
    };
    let (opened, refused) = match (open(OLD), open(NEW)) {
        (Ok(db), Err(e)) => ((OLD, db), e),
        (Err(e), Ok(db)) => ((NEW, db), e),
        (old, new) => panic!("not exactly one password opens the file: {old:?}, {new:?}"),
    };
    assert!(
        matches!(refused, Error::Open(OpenError::WrongPassword { .. })),
        "the other password: {refused:?}"
    );
    let (password, db) = opened;
    assert_eq!(db.count("notes").unwrap(), RECORDS as u64, "records lost");
    let check = db.integrity_check().unwrap();
    assert!(check.ok, "{:?}", check.problems);
    password
}

fn rekey_back_to_old(path: &Path) {
    let mut db = Database::open(path, OpenOptions::with_password(NEW)).unwrap();
    db.rekey(Some(OLD)).unwrap();
}

fn copy_of(path: &Path) -> PathBuf {
    let mut copy = path.as_os_str().to_owned();
    copy.push(".rekey-tmp");
    PathBuf::from(copy)
}

/// An encrypted file's first 16 bytes: the salt, new in every re-encrypted copy.
fn salt_of(path: &Path) -> [u8; 16] {
    use std::io::Read as _;
    let mut salt = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut salt))
        .unwrap();
    salt
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
