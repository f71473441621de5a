//! One `blazedb sync` of a database file with one peer at a time: a second one on the same
//! file and peer URL (`--watch` or `--once`, by any path to the file) stops at once with one
//! error line naming the file, the peer and the first one's pid, while the first syncs on;
//! the same file syncs with two different peers at once; the same peer under another URL is
//! refused as soon as it is known, naming both URLs; a SIGKILLed watcher leaves no lock
//! that blocks the next run. Real processes: a relay, a listener, watchers.

mod net_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use net_common::{blazedb, export, put, start_listener, start_relay, Daemon};

/// Run `cmd` to its end, killing it if it runs longer than `limit` (a second watcher that
/// is not refused would run for ever): exit code and stderr.
fn run_limited(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: it was not refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `blazedb sync DB URL ARGS..`.
fn sync(db: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = blazedb();
    cmd.arg("sync").arg(db).arg(url).args(args);
    cmd
}

/// Start `sync DB URL --watch`.
fn watcher(db: &Path, url: &str, log: &Path) -> Daemon {
    Daemon::spawn("watcher", sync(db, url, &["--watch"]), Some(log))
}

/// Wait until `db` holds `n` records of `collection`.
#[track_caller]
fn wait_for(db: &Path, collection: &str, n: usize) {
    let t = Instant::now();
    while export(db, collection).len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} never got {n}",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn assert_refused(code: Option<i32>, err: &str, db_shown: &str, url: &str, pid: u32, how: &str) {
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err:?}"
    );
    for part in [
        format!("{db_shown} is already syncing with {url}"),
        format!("in process {pid} (a `sync --{how}`)"),
        format!("`kill {pid}`"),
    ] {
        assert!(err.contains(&part), "{part:?} in {err}");
    }
}

#[test]
fn a_second_sync_of_the_same_file_and_peer_stops_at_once_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay_db = data.join("relay.db");
    let (_relay, url) = start_relay(&data, &[], None);
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"n": 1}"#);
    let first = watcher(&a, &url, &dir.path().join("first.log"));
    let pid = first.child.id();
    // The lock is taken before connecting: once the record is at the relay it is held.
    wait_for(&relay_db, "notes", 1);

    let shown = a.display().to_string();
    let (code, err) = run_limited(sync(&a, &url, &["--watch"]), Duration::from_secs(20));
    assert_refused(code, &err, &shown, &url, pid, "watch");
    // By another path to the same file too.
    let mut roundabout = sync(Path::new("./a.db"), &url, &["--watch"]);
    roundabout.current_dir(dir.path());
    let (code, err) = run_limited(roundabout, Duration::from_secs(20));
    assert_refused(code, &err, "./a.db", &url, pid, "watch");
    // A one-shot sync is refused as well: the watcher already does its work.
    let (code, err) = run_limited(sync(&a, &url, &["--once"]), Duration::from_secs(20));
    assert_refused(code, &err, &shown, &url, pid, "watch");
    assert!(
        err.contains("writes to the file reach the peer through it"),
        "{err}"
    );

    // The first syncs on, both ways.
    put(&a, "notes", r#"{"n": 2}"#);
    wait_for(&relay_db, "notes", 2);
    let other = dir.path().join("other.db");
    put(&other, "notes", r#"{"n": 3}"#);
    run_limited(sync(&other, &url, &["--once"]), Duration::from_secs(20));
    wait_for(&a, "notes", 3);
    let (code, _) = first.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));

    // Once it is gone, the next sync runs.
    let (code, err) = run_limited(sync(&a, &url, &["--once"]), Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
}

/// `localhost` and `127.0.0.1` are two URLs of one relay: the second sync connects (its URL
/// lock is another), and is refused once the relay's HELLO names the node the first one
/// syncs with.
#[test]
fn the_same_peer_under_another_url_is_refused_once_it_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay_db = data.join("relay.db");
    let (_relay, url) = start_relay(&data, &[], None);
    let by_name = url.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, url, "{url}");
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"n": 1}"#);
    let first = watcher(&a, &by_name, &dir.path().join("first.log"));
    let pid = first.child.id();
    wait_for(&relay_db, "notes", 1);

    for how in ["--once", "--watch"] {
        let (code, err) = run_limited(sync(&a, &url, &[how]), Duration::from_secs(20));
        // A watcher has said it connected (a JSON event line) before the HELLO named the peer.
        let err: String = err
            .lines()
            .filter(|l| !l.starts_with("{\"event\":\"connected\""))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_refused(code, &err, &a.display().to_string(), &by_name, pid, "watch");
        assert!(
            err.contains(&format!("and {url} is that same peer (node ")),
            "{how}: {err}"
        );
    }
    // The lock files: one per URL and one for the relay's node, no more.
    let mut locks: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("a.db-sync-"))
        .collect();
    locks.sort();
    assert_eq!(locks.len(), 3, "{locks:?}");
    assert_eq!(
        locks
            .iter()
            .filter(|n| n.starts_with("a.db-sync-node-"))
            .count(),
        1,
        "{locks:?}"
    );

    // The first syncs on.
    put(&a, "notes", r#"{"n": 2}"#);
    wait_for(&relay_db, "notes", 2);
    let (code, _) = first.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    assert!(!log.contains("already syncing"), "{log}");
    // Once it is gone, the other URL syncs.
    let (code, err) = run_limited(sync(&a, &url, &["--once"]), Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn one_file_syncs_with_two_peers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay_db = data.join("relay.db");
    let hub = dir.path().join("hub.db");
    let (_relay, relay_url) = start_relay(&data, &[], None);
    let (_listener, listener_url) = start_listener(&hub, &["--tcp", "127.0.0.1:0"], None);
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"n": 1}"#);
    let _to_relay = watcher(&a, &relay_url, &dir.path().join("relay.log"));
    let _to_listener = watcher(&a, &listener_url, &dir.path().join("listener.log"));
    put(&a, "notes", r#"{"n": 2}"#);
    wait_for(&relay_db, "notes", 2);
    wait_for(&hub, "notes", 2);
    // And a one-shot sync with a third peer meanwhile.
    let third = dir.path().join("third.db");
    let (_third, third_url) = start_listener(&third, &["--tcp", "127.0.0.1:0"], None);
    let (code, err) = run_limited(sync(&a, &third_url, &["--once"]), Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(export(&third, "notes").len(), 2);
    for log in ["relay.log", "listener.log"] {
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(!text.contains("already syncing"), "{log}: {text}");
    }
}

#[test]
fn a_killed_watcher_leaves_no_lock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay_db = data.join("relay.db");
    let (_relay, url) = start_relay(&data, &[], None);
    let a = dir.path().join("a.db");
    put(&a, "notes", r#"{"n": 1}"#);
    let mut first = watcher(&a, &url, &dir.path().join("first.log"));
    wait_for(&relay_db, "notes", 1);
    first.kill9();

    let second = watcher(&a, &url, &dir.path().join("second.log"));
    put(&a, "notes", r#"{"n": 2}"#);
    wait_for(&relay_db, "notes", 2);
    let (code, _) = second.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(!log.contains("already syncing"), "{log}");
}
