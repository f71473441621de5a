//! A child process commits records in a loop and prints each one only after its commit
//! returned Ok; killed with SIGKILL at a random moment, the reopened database holds every
//! printed record intact, every transaction whole, and passes the integrity check.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blazedb::{Database, OpenOptions};
use common::{blazedb_command, TestDb};
use serde_json::Value as Json;

/// Kill-and-reopen rounds per test; each writes its own collection into the same file, so
/// later rounds also write to a file that has just been recovered from a crash.
const ROUNDS: u64 = 5;
/// The kill lands this long (plus up to `KILL_SPREAD_MS`) after the first commit.
const KILL_AFTER_MS_MIN: u64 = 300;
const KILL_SPREAD_MS: u64 = 200;
/// How long the child may take to open the file and commit its first transaction.
const FIRST_COMMIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A record the child promised: its commit had returned Ok when this line was printed.
#[derive(Debug)]
struct Promised {
    id: String,
    n: u64,
    tx: u64,
}

/// The payload the write loop gives record `n` (see `commands::debug::payload`).
fn payload(n: u64) -> String {
    format!("record {n} ").repeat(8)
}

#[test]
fn unencrypted_writes_survive_kill_9() {
    crash_rounds("unencrypted", &TestDb::new());
}

#[test]
fn encrypted_writes_survive_kill_9() {
    crash_rounds("encrypted", &TestDb::encrypted("crash test password"));
}

fn crash_rounds(label: &str, db: &TestDb) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Shown with the rest of the test's output on failure: which kill delays were tried.
    eprintln!("{label}: kill delay seed {seed}");
    let mut promised = Vec::new();
    for round in 0..ROUNDS {
        let delay = KILL_AFTER_MS_MIN + splitmix64(seed.wrapping_add(round)) % KILL_SPREAD_MS;
        let collection = format!("crash{round}");
        let printed = write_until_killed(db, &collection, Duration::from_millis(delay));
        eprintln!(
            "{label} round {round}: killed {delay} ms in, {} records promised",
            printed.len()
        );
        verify(&reopen(db), &collection, &printed);
        promised.push((collection, printed));
    }
    // Writing after each recovery must not have disturbed the earlier rounds.
    let reopened = reopen(db);
    for (collection, printed) in &promised {
        verify(&reopened, collection, printed);
    }
}

/// Open the file the way an application would after the crash (in this process: an encrypted
/// open derives the key, which costs a noticeable part of the test's time budget).
fn reopen(db: &TestDb) -> Database {
    let options = OpenOptions {
        password: db.password.clone(),
        create: false,
        ..OpenOptions::default()
    };
    Database::open(&db.path, options).unwrap()
}

/// Start the write loop, let it commit for `delay` after its first commit, SIGKILL it, and
/// return the records it printed.
fn write_until_killed(db: &TestDb, collection: &str, delay: Duration) -> Vec<Promised> {
    let mut cmd = blazedb_command(db.password.as_deref());
    cmd.args(["debug", "write-loop"])
        .arg(&db.path)
        .arg(collection);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (first_tx, first_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || read_promises(stdout, first_tx));

    if first_rx.recv_timeout(FIRST_COMMIT_TIMEOUT).is_err() {
        fail_child(&mut child, "did not commit in time");
    }
    thread::sleep(delay);
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no rollback runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the child exited by itself ({status}) before the kill"
    );
    reader.join().unwrap()
}

/// Read the child's lines until its stdout closes. A line cut short by the kill has no
/// newline and is ignored: its commit returned, but the promise was not finished.
fn read_promises(stdout: impl std::io::Read, first: mpsc::Sender<()>) -> Vec<Promised> {
    let mut reader = BufReader::new(stdout);
    let mut promised = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 || line.last() != Some(&b'\n') {
            return promised;
        }
        let json: Json = serde_json::from_slice(&line).unwrap();
        promised.push(Promised {
            id: json["_id"].as_str().unwrap().to_owned(),
            n: json["n"].as_u64().unwrap(),
            tx: json["tx"].as_u64().unwrap(),
        });
        let _ = first.send(());
    }
}

/// Stop the child and fail the test with what it said on stderr.
fn fail_child(child: &mut Child, what: &str) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    panic!("write loop {what}; stderr: {stderr}");
}

/// Check every promise, every record and the whole file.
fn verify(db: &Database, collection: &str, printed: &[Promised]) {
    assert!(
        !printed.is_empty(),
        "the child promised nothing before the kill"
    );
    let records: HashMap<String, Json> = db
        .scan(collection)
        .unwrap()
        .iter()
        .map(|r| (r.id.to_string(), r.to_json()))
        .collect();
    for p in printed {
        let record = records
            .get(&p.id)
            .unwrap_or_else(|| panic!("promised record lost: {p:?}"));
        assert_eq!(record["n"], p.n, "{p:?}");
        assert_eq!(record["tx"], p.tx, "{p:?}");
    }
    // Every record that is there (promised or committed just before the kill) is whole, and
    // every transaction is all there or not at all.
    let mut per_tx: HashMap<u64, (u64, u64)> = HashMap::new();
    for record in records.values() {
        let n = record["n"].as_u64().unwrap();
        assert_eq!(record["payload"], payload(n), "torn record {record}");
        let tx_size = record["tx_size"].as_u64().unwrap();
        let seen = per_tx
            .entry(record["tx"].as_u64().unwrap())
            .or_insert((0, tx_size));
        seen.0 += 1;
    }
    for (tx, (seen, size)) in per_tx {
        assert_eq!(seen, size, "transaction {tx} is partly there");
    }
    let report = db.integrity_check().unwrap();
    assert!(report.ok, "integrity check: {:?}", report.problems);
}

/// A small, good mixing function: turns a seed and round number into a kill delay.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
