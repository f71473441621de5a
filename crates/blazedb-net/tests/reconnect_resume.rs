//! A connection dropped in the middle of a sync resumes after reconnecting from the last
//! applied unit: nothing that was acknowledged (applied and durable) is sent again.

mod common;

use std::sync::Arc;

use blazedb::sync::{SessionConfig, SyncMode};
use blazedb::Database;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport, Topology};
use common::{dump, fill, live_cells, open, CONVERGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const RECORDS: u64 = 4_000;

/// Small batches so the sync is many units and the cut falls between them.
/// The feed path (a fresh replica would get a snapshot, which stages and resumes by chunk:
/// see crates/blazedb/tests/selective.rs).
fn cfg() -> SessionConfig {
    SessionConfig {
        batch_cells_max: 256,
        snapshot_new_peers: false,
        ..SessionConfig::default()
    }
}

async fn once(a: &Arc<Database>, b: &Arc<Database>) -> (SessionReport, SessionReport) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (ra, rb) = tokio::join!(
        run_session(a.clone(), x, cfg(), DriverOptions::once()),
        run_session(b.clone(), y, cfg(), DriverOptions::once()),
    );
    (ra.unwrap(), rb.unwrap())
}

/// Forward bytes between the two ends; after `a_to_b_max` bytes from A, drop everything —
/// a cut cable: no goodbye either way.
async fn cut_after(a: DuplexStream, b: DuplexStream, a_to_b_max: u64) {
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let forward = async {
        let mut limited = (&mut ar).take(a_to_b_max);
        let _ = tokio::io::copy(&mut limited, &mut bw).await;
    };
    let backward = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
    };
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
    let _ = aw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sync_resumes_without_resending_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    fill(&a, "c", RECORDS as usize, 20, "a");
    let total_cells = live_cells(&a);

    // Baseline: the whole sync in one go, into a fresh replica.
    let fresh = open(dir.path(), "fresh");
    let (full, _) = once(&a, &fresh).await;
    assert_eq!(full.stats.cells_sent, total_cells);

    // The same sync, cut when ~40% of the bytes went through.
    let b = open(dir.path(), "b");
    let (x, x_proxy) = tokio::io::duplex(64 * 1024);
    let (y_proxy, y) = tokio::io::duplex(64 * 1024);
    let cut = full.stats.bytes_sent * 2 / 5;
    let (ra, rb, ()) = tokio::join!(
        run_session(a.clone(), x, cfg(), DriverOptions::once()),
        run_session(b.clone(), y, cfg(), DriverOptions::once()),
        cut_after(x_proxy, y_proxy, cut),
    );
    for r in [&ra, &rb] {
        assert!(
            matches!(
                r,
                Err(NetError::Disconnected { .. }) | Err(NetError::Io { .. })
            ),
            "a cut connection is an error: {r:?}"
        );
    }
    let applied_records = b.count("c").unwrap();
    assert!(
        applied_records > 0 && applied_records < RECORDS,
        "cut at {applied_records} records"
    );
    let cells_per_record = total_cells / RECORDS;
    let applied_cells = applied_records * cells_per_record;

    // Reconnect: only what B had not applied travels.
    let (second, _) = once(&a, &b).await;
    assert_eq!(
        second.stats.cells_sent,
        total_cells - applied_cells,
        "resent cells B had already applied"
    );
    let remaining = (total_cells - applied_cells) as f64 / total_cells as f64;
    let expected_bytes = (full.stats.bytes_sent as f64 * remaining) as u64;
    assert!(
        second.stats.bytes_sent <= expected_bytes + 512,
        "second session sent {} bytes; the unsent part of a full sync is ~{expected_bytes}",
        second.stats.bytes_sent
    );
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(dump(&b), dump(&fresh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_severed_topology_link_resumes_from_the_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    fill(&a, "c", 500, 50, "a");
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a.clone()), topo.register("b", b.clone()));
    let c = topo.connect(na, nb, SyncMode::Both).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    assert!(topo.sever(c), "abort both ends without a goodbye");

    // Written while apart: only this travels on the next connection.
    let before = live_cells(&a);
    fill(&a, "c", 10, 10, "later");
    let new_cells = live_cells(&a) - before;
    let c2 = topo.connect(na, nb, SyncMode::Both).unwrap();
    topo.wait_converged(CONVERGE).await.unwrap();
    let snap = topo.connection_snapshot(c2).unwrap();
    assert_eq!(snap.a.stats.cells_sent, new_cells);
    assert_eq!(snap.b.stats.cells_sent, 0);
    assert_eq!(b.count("c").unwrap(), 510);
    topo.shutdown().await;
}
