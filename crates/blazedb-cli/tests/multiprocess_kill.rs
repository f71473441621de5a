//! A `blazedb listen` process and three clients — each a writer process
//! (`debug write-loop`, printing a record only after its commit returned Ok) beside a
//! `blazedb sync DB tcp://… --watch` process — write concurrently; one client's processes
//! and then the listener are killed with SIGKILL mid-sync and restarted. Every replica
//! converges to the same records, and every record a writer printed is in all of them.

mod net_common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use net_common::{blazedb, export, free_port, start_listener, Daemon};
use serde_json::Value as Json;

const COLLECTION: &str = "items";
/// Records per writer process; a writer runs one process after another.
const BATCH_RECORDS: &str = "40";
const BATCH_PAUSE: Duration = Duration::from_millis(60);
/// Heartbeats short enough that a dead connection is noticed within the test.
const HEARTBEAT: [&str; 4] = ["--ping-interval-ms", "300", "--idle-timeout-ms", "2000"];
const CONVERGE: Duration = Duration::from_secs(12);

/// A client's writer: `debug write-loop` processes one after another, collecting the ids
/// they print (each printed after its commit returned Ok).
struct Writer {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(db: PathBuf, promised: Arc<Mutex<Vec<String>>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::default();
        let (s, c, p) = (stop.clone(), current.clone(), promised);
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let mut child = blazedb()
                    .args(["debug", "write-loop"])
                    .arg(&db)
                    .args([COLLECTION, "--records-max", BATCH_RECORDS])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn write-loop");
                let stdout = child.stdout.take().expect("stdout");
                *c.lock().unwrap() = Some(child);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // A line cut by SIGKILL does not parse: that record was not promised.
                    if let Ok(v) = serde_json::from_str::<Json>(&line) {
                        p.lock()
                            .unwrap()
                            .push(v["_id"].as_str().unwrap().to_owned());
                    }
                }
                if let Some(mut child) = c.lock().unwrap().take() {
                    let _ = child.wait();
                }
                thread::sleep(BATCH_PAUSE);
            }
        });
        Writer {
            stop,
            current,
            thread: Some(thread),
        }
    }

    /// SIGKILL the running write-loop, if any, and stop starting new ones.
    fn kill9(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.current.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
        self.join();
    }

    /// Let the running write-loop finish, and stop.
    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.current.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
    }
}

fn start_sync(db: &Path, url: &str, log: &Path) -> Daemon {
    let mut cmd = blazedb();
    cmd.arg("sync")
        .arg(db)
        .arg(url)
        .arg("--watch")
        .args(HEARTBEAT);
    Daemon::spawn("sync", cmd, Some(log))
}

#[test]
fn clients_and_listener_killed_mid_sync_converge_without_losing_acknowledged_writes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub.db");
    let clients: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("c{i}.db")))
        .collect();
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("tcp://{addr}");
    let listen_args: Vec<&str> = [&["--tcp", addr.as_str()][..], &HEARTBEAT[..]].concat();
    let (mut listener, announced) = start_listener(&hub, &listen_args, Some(&log("hub")));
    assert_eq!(announced, url);

    let promised: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers: Vec<Option<Writer>> = Vec::new();
    let mut syncs: Vec<Daemon> = Vec::new();
    for (i, db) in clients.iter().enumerate() {
        // The writer creates the file before its sync process opens it.
        let out = blazedb()
            .args(["debug", "write-loop"])
            .arg(db)
            .args([COLLECTION, "--records-max", "1"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap();
        let v: Json = serde_json::from_str(line.trim()).unwrap();
        promised
            .lock()
            .unwrap()
            .push(v["_id"].as_str().unwrap().to_owned());
        writers.push(Some(Writer::start(db.clone(), promised.clone())));
        syncs.push(start_sync(db, &url, &log(&format!("c{i}"))));
    }

    thread::sleep(Duration::from_millis(1_000));
    // Client 0 crashes: its sync process and its writer, mid-commit or mid-sync.
    syncs[0].kill9();
    writers[0].take().unwrap().kill9();
    thread::sleep(Duration::from_millis(300));
    // The listener crashes while the other clients keep writing and syncing.
    listener.kill9();
    thread::sleep(Duration::from_millis(700));
    // Both come back: the listener on the same port, client 0 with its files as they were.
    let (listener, _) = start_listener(&hub, &listen_args, Some(&log("hub")));
    syncs[0] = start_sync(&clients[0], &url, &log("c0"));
    writers[0] = Some(Writer::start(clients[0].clone(), promised.clone()));
    thread::sleep(Duration::from_millis(1_500));
    for w in writers.iter_mut() {
        w.take().unwrap().finish();
    }
    let promised: BTreeSet<String> = promised.lock().unwrap().iter().cloned().collect();
    assert!(
        promised.len() > 100,
        "the writers wrote: {}",
        promised.len()
    );

    // Converge: every replica has the same records, and every promised one.
    let replicas: Vec<&Path> = std::iter::once(hub.as_path())
        .chain(clients.iter().map(|p| p.as_path()))
        .collect();
    let deadline = Instant::now() + CONVERGE;
    let final_state = loop {
        let exports: Vec<_> = replicas.iter().map(|db| export(db, COLLECTION)).collect();
        let same = exports.windows(2).all(|w| w[0] == w[1]);
        let ids: BTreeSet<&String> = exports[0].keys().collect();
        let missing = promised.iter().filter(|id| !ids.contains(id)).count();
        if same && missing == 0 {
            break exports;
        }
        if Instant::now() > deadline {
            let counts: Vec<usize> = exports.iter().map(|e| e.len()).collect();
            for name in ["hub", "c0", "c1", "c2"] {
                let text = std::fs::read_to_string(log(name)).unwrap_or_default();
                eprintln!("--- {name}.log (last lines)");
                for l in text
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    eprintln!("{l}");
                }
            }
            panic!(
                "not converged after {CONVERGE:?}: records per replica {counts:?}, {missing} \
                 of {} promised records missing at the hub",
                promised.len()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    // Every record whole: the fields the writer gave it.
    for record in final_state[0].values() {
        let n = record["n"].as_i64().unwrap();
        assert_eq!(record["payload"], format!("record {n} ").repeat(8));
    }

    // A watching sync ends cleanly on SIGTERM and prints its totals.
    for (i, s) in syncs.into_iter().enumerate() {
        let (code, stdout) = s.terminate(Duration::from_secs(5));
        assert_eq!(code, Some(0), "client {i}");
        let report: Json = serde_json::from_str(stdout.trim()).unwrap();
        assert!(report["sessions"].as_u64().unwrap() >= 1, "{report}");
    }
    let (code, _) = listener.terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
