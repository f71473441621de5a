//! A topology connection whose sessions end with an error that another attempt may not meet
//! (here: the receiver's clock was ten minutes slow, so it refused the sender's changes as
//! from the future, until the clock was put right) is connected again after a pause, as a
//! network client reconnects; a wait for convergence waits for it meanwhile and, if its time
//! runs out, says why the last sessions ended. (Errors another attempt would meet again end
//! the connection for good: `topology_ended_sessions.rs`.)

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blazedb::sync::SyncMode;
use blazedb::{Database, OpenOptions};
use blazedb_net::reconnect::BackoffConfig;
use blazedb_net::{ConnectOptions, Topology};
use common::{count, dump, fill, open, CONVERGE};

/// Far past the default `clock_skew_ms_max` (60 s).
const SLOW_BY_MS: u64 = 10 * 60 * 1000;

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_by_a_passing_error_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    fill(&a, "notes", 50, 10, "a");
    let slow_by = Arc::new(AtomicU64::new(SLOW_BY_MS));
    let b = {
        let slow_by = slow_by.clone();
        let options = OpenOptions {
            wall_clock: Arc::new(move || system_ms() - slow_by.load(Ordering::SeqCst)),
            ..OpenOptions::default()
        };
        Arc::new(Database::open(dir.path().join("b.db"), options).unwrap())
    };
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let c = topo
        .connect_with(
            na,
            nb,
            ConnectOptions {
                mode: SyncMode::Both,
                backoff: BackoffConfig {
                    initial_ms: 50,
                    max_ms: 200,
                    multiplier: 2,
                    jitter_percent: 0,
                },
                ..ConnectOptions::default()
            },
        )
        .unwrap();

    // B refuses A's changes while its clock is slow: the wait runs out its time (the
    // connection is not over), and says why — once a session has ended on it. A wait of 2 s
    // usually sees several; under a loaded CI machine (a debug build, a disk stalling an
    // fsync) the first session once had not ended yet, and the wait could only say that
    // nothing converged: waited again, up to 20 s, for the reason to show.
    let patience = std::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        let err = topo
            .wait_converged(Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.ended_connection.is_none(),
            "the connection was given up: {err}"
        );
        let message = err.to_string();
        if message.contains("CLOCK_SKEW") || std::time::Instant::now() > patience {
            break message;
        }
    };
    assert!(
        message.contains("connecting again") && message.contains("CLOCK_SKEW"),
        "{message}"
    );
    assert_eq!(count(&b, "notes"), 0);
    let tries = topo.connection_snapshot(c).unwrap().sessions;
    assert!(tries > 1, "only {tries} session pairs in 2 s");

    // The clock is put right: the next attempt goes through.
    slow_by.store(0, Ordering::SeqCst);
    topo.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(count(&b, "notes"), 50);
    assert_eq!(dump(&a), dump(&b));
    let snap = topo.connection_snapshot(c).unwrap();
    assert!(!snap.a.ended && !snap.b.ended, "{snap:?}");
    for r in topo.shutdown().await {
        r.a.unwrap();
        r.b.unwrap();
    }
}
