//! Helpers of the network CLI tests: background `blazedb` processes that are killed when
//! the test ends however it ends, a listener's announced URL, exports as sets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value as Json;

/// The `blazedb` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

/// `blazedb` without the developer's password or token variables.
pub fn blazedb() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("BLAZEDB_PASSWORD")
        .env_remove("BLAZEDB_NEW_PASSWORD")
        .env_remove("BLAZEDB_TOKEN")
        .env_remove("BLAZEDB_RELAY_TOKEN")
        .env_remove("BLAZEDB_JWT_SECRET")
        .stdin(Stdio::null());
    cmd
}

/// A background process, SIGKILLed when dropped.
pub struct Daemon {
    pub child: Child,
    pub name: String,
}

impl Daemon {
    /// Start `cmd` with stdout piped and stderr appended to `log` (dropped without one).
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> Daemon {
        let stderr = match log {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("open log"),
            ),
            None => Stdio::null(),
        };
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Daemon {
            child,
            name: name.to_owned(),
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash or power loss.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns stdout.
    pub fn terminate(mut self, limit: Duration) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stdout = self.child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut s) = stdout {
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
            let _ = tx.send(text);
        });
        let text = rx.recv_timeout(limit).unwrap_or_default();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), text);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit within {limit:?} of SIGTERM", self.name);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `blazedb put DB COLLECTION JSON` (no password), which must succeed; the new record's id.
pub fn put(db: &Path, collection: &str, json: &str) -> String {
    let out = blazedb()
        .arg("put")
        .arg(db)
        .args([collection, json])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `blazedb ARGS[0] DB ARGS[1..]`, which must succeed: its stdout and stderr.
pub fn run_on(db: &Path, args: &[&str]) -> (String, String) {
    let out = blazedb()
        .arg(args[0])
        .arg(db)
        .args(&args[1..])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Start `blazedb listen DB ARGS..` and return it with the first URL it announces.
pub fn start_listener(db: &Path, args: &[&str], log: Option<&Path>) -> (Daemon, String) {
    let mut cmd = blazedb();
    cmd.arg("listen").arg(db).args(args);
    let mut d = Daemon::spawn("listener", cmd, log);
    let v = announcement(&mut d);
    (
        d,
        v["listening"].as_str().expect("listening URL").to_owned(),
    )
}

/// Start `blazedb serve --listen 127.0.0.1:0 --data DATA ARGS..` and return it with its
/// sync URL (`ws://…/v1/sync`).
pub fn start_relay(data: &Path, args: &[&str], log: Option<&Path>) -> (Daemon, String) {
    let mut cmd = blazedb();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args);
    let mut d = Daemon::spawn("relay", cmd, log);
    let v = announcement(&mut d);
    (d, v["sync"].as_str().expect("sync URL").to_owned())
}

/// Start `blazedb serve --listen 127.0.0.1:0 --data DATA ARGS..` and return it with the line
/// it announces (`sync`, `tcp`, `unix`, ... addresses).
pub fn start_relay_announced(data: &Path, args: &[&str], log: Option<&Path>) -> (Daemon, Json) {
    let mut cmd = blazedb();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args);
    let mut d = Daemon::spawn("relay", cmd, log);
    let v = announcement(&mut d);
    (d, v)
}

/// The JSON line a listener or relay prints first, saying where it listens.
pub fn announcement(d: &mut Daemon) -> Json {
    let stdout = d.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{} announces where it listens", d.name));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A TCP port that was free a moment ago (for a listener that must come back on the same
/// port after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every record of a collection, by id (an empty map when the file or collection does not
/// exist yet).
pub fn export(db: &Path, collection: &str) -> BTreeMap<String, Json> {
    let out = blazedb()
        .arg("export")
        .arg(db)
        .arg(collection)
        .output()
        .expect("run export");
    if !out.status.success() {
        return BTreeMap::new();
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            (v["_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// `GET path` on the relay whose sync URL is `sync_url` (`ws://ADDR/v1/sync`): the status
/// and the body.
pub fn relay_get(sync_url: &str, path: &str) -> (u16, String) {
    let addr = sync_url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/sync");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// `blazedb sync DB URL --once ARGS..`: exit code and stderr.
pub fn sync_once_status(db: &Path, url: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = blazedb()
        .arg("sync")
        .arg(db)
        .args([url, "--once"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait (at most 20 s) until a relay's or listener's log has a line of `event`.
pub fn wait_for_event(log: &Path, event: &str) {
    let start = std::time::Instant::now();
    while log_events(log, event).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {event} line: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON lines of `event` in a relay's or listener's log (its stderr).
pub fn log_events(log: &Path, event: &str) -> Vec<Json> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}
