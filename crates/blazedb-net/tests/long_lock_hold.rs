//! A long operation holding a database's lock (a bulk apply, a snapshot, a rekey) must not
//! stall the executor thread of a session that needs the same database: the session waits
//! for the lock on the blocking pool, and every other task of its runtime keeps running.

mod common;

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blazedb::sync::SyncMode;
use blazedb::{Database, Value};
use blazedb_net::Topology;
use common::{open, CONVERGE};

/// How long the other thread holds A's lock.
const HOLD: Duration = Duration::from_secs(2);
/// The probe's tick; a stalled runtime shows as one tick lasting about `HOLD`.
const TICK: Duration = Duration::from_millis(20);
/// Well past `LOCK_HELD_LONG_US`.
const LONG_ALREADY: Duration = Duration::from_millis(20);

/// A and B synced in a topology on the current runtime.
async fn synced_pair(dir: &std::path::Path) -> (Arc<Database>, Arc<Database>, Topology) {
    let (a, b) = (open(dir, "a"), open(dir, "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    topo.connect(na, nb, SyncMode::Both).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    (a, b, topo)
}

/// Another thread takes `db`'s lock and keeps it for `HOLD` (as a long apply would);
/// returns once the hold is older than a holder the driver waits for inline.
async fn hold_lock(db: &Arc<Database>) -> JoinHandle<()> {
    let (held_tx, held_rx) = mpsc::channel();
    let holder = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.transaction(|_| {
                held_tx.send(()).unwrap();
                std::thread::sleep(HOLD);
                Ok(())
            })
            .unwrap()
        })
    };
    held_rx.recv().unwrap();
    assert!(db.lock_held_for().is_some(), "the holder's lock is visible");
    tokio::time::sleep(LONG_ALREADY).await;
    holder
}

/// The longest of a run of `TICK` sleeps on this runtime over most of the hold.
async fn longest_tick_while_held(held_since: Instant) -> Duration {
    let mut longest = Duration::ZERO;
    while held_since.elapsed() < HOLD * 3 / 4 {
        let t = Instant::now();
        tokio::time::sleep(TICK).await;
        longest = longest.max(t.elapsed());
    }
    longest
}

async fn release(holder: JoinHandle<()>) {
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
}

/// One runtime thread: a session that blocked it on the lock would stop everything else.
#[tokio::test(flavor = "current_thread")]
async fn a_session_waits_for_a_long_lock_holder_without_stalling_its_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, topo) = synced_pair(dir.path()).await;
    let holder = hold_lock(&a).await;

    // A write on B reaches A's session, which must now wait for A's lock.
    let held_since = Instant::now();
    let id = b.insert("msgs", [("n", Value::Int(1))]).unwrap();
    let longest_tick = longest_tick_while_held(held_since).await;
    assert!(
        longest_tick < HOLD / 2,
        "the runtime stalled for {longest_tick:?} while A's lock was held (a session waited \
         for it on the executor thread)"
    );
    assert!(
        a.lock_held_for().is_some(),
        "the hold outlasted the probe (else the probe proves nothing)"
    );

    // Once the lock is free, the write arrives.
    release(holder).await;
    // The long holder is gone; A's session may already hold the lock for its apply (a
    // CI run, 2026-12-07, saw it held for 106 µs here), never for anything like the hold.
    let held = a.lock_held_for();
    assert!(held.is_none_or(|d| d < HOLD / 2), "{held:?}");
    topo.wait_caught_up(CONVERGE).await.unwrap();
    assert_eq!(
        a.get("msgs", id).unwrap().unwrap().fields.get("n"),
        Some(&Value::Int(1))
    );
}

/// The same for a task waiting for the topology to catch up: it reads every database's head.
#[tokio::test(flavor = "current_thread")]
async fn waiting_for_a_topology_does_not_stall_the_runtime_behind_a_long_lock_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b, topo) = synced_pair(dir.path()).await;
    let holder = hold_lock(&a).await;
    let held_since = Instant::now();
    let waiter = {
        let topo = topo.clone();
        tokio::spawn(async move { topo.wait_caught_up(CONVERGE).await })
    };
    let longest_tick = longest_tick_while_held(held_since).await;
    assert!(
        longest_tick < HOLD / 2,
        "the runtime stalled for {longest_tick:?} while A's lock was held (the topology's \
         wait read A's head on the executor thread)"
    );
    release(holder).await;
    waiter.await.unwrap().unwrap();
}
