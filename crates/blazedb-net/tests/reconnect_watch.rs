//! `sync_watch` over TCP with a proxy that cuts the first connection mid-sync: the client
//! reconnects by itself (backoff) and resumes from the listener's persisted cursor — the
//! second session sends exactly the cells the listener had not applied, nothing it had.

mod common;
mod transport_common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::SessionConfig;
use blazedb_net::reconnect::{BackoffConfig, ClientEvent};
use blazedb_net::transport::ListenConfig;
use blazedb_net::{run_session, sync_watch, ClientOptions, DriverOptions, Endpoint};
use common::{count, dump, fill, live_cells, open};
use tokio::sync::{mpsc, Notify};
use transport_common::{listen_tcp, next_ended, Cut, Proxy, TEST_LIMIT};

const RECORDS: u64 = 4_000;

/// Small batches: the sync is many units, so the cut falls between some of them.
fn small_batches() -> SessionConfig {
    SessionConfig {
        batch_cells_max: 256,
        ..SessionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_reconnects_and_resends_nothing_applied() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), "a");
        fill(&a, "c", RECORDS as usize, 20, "a");
        let total = live_cells(&a);

        // How many bytes a whole sync takes, to cut at about 40%.
        let fresh = open(dir.path(), "fresh");
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (full, _) = tokio::join!(
            run_session(a.clone(), x, small_batches(), DriverOptions::once()),
            run_session(fresh.clone(), y, small_batches(), DriverOptions::once()),
        );
        let full_bytes = full.unwrap().stats.bytes_sent;

        let b = open(dir.path(), "b");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                session: small_batches(),
                ..ListenConfig::default()
            },
        )
        .await;
        let mut server_events = listener.events();
        let release = Arc::new(Notify::new());
        let cut = Cut {
            after_bytes: full_bytes * 2 / 5,
            release_client: release.clone(),
        };
        let proxy = Proxy::start(listener.tcp_addr().unwrap(), Some(cut)).await;
        let url: Endpoint = proxy.url().parse().unwrap();

        // The listener's first session ends (end-of-file from the proxy) before the client
        // may notice the cut and reconnect: its cursor is on disk by then.
        let first_server = tokio::spawn(async move {
            let first = next_ended(&mut server_events).await;
            release.notify_one();
            first
        });

        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let opts = ClientOptions {
            session: small_batches(),
            backoff: BackoffConfig {
                initial_ms: 50,
                ..BackoffConfig::default()
            },
            ..ClientOptions::default()
        };
        let b_watch = b.clone();
        let stop = async move {
            while count(&b_watch, "c") < RECORDS {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let report = sync_watch(a.clone(), &url, &opts, stop, |e| {
            let _ = events_tx.send(e);
        })
        .await
        .unwrap();

        let (server_first, _) = first_server.await.unwrap();
        let applied_before_cut = server_first.unwrap().stats.cells_applied;
        assert!(
            applied_before_cut > 0 && applied_before_cut < total,
            "the cut fell mid-sync: {applied_before_cut} of {total} cells applied"
        );

        let mut sessions = Vec::new();
        let mut retries = 0;
        while let Ok(e) = events_rx.try_recv() {
            match e {
                ClientEvent::SessionEnded { report, .. } => sessions.push(report),
                ClientEvent::Retrying { .. } => retries += 1,
                _ => {}
            }
        }
        assert_eq!(sessions.len(), 2, "one cut session, one that finished");
        assert_eq!(retries, 1);
        assert!(sessions[0].stats.cells_sent >= applied_before_cut);
        assert_eq!(
            sessions[1].stats.cells_sent,
            total - applied_before_cut,
            "the second session resent cells the listener had applied"
        );
        assert_eq!(report.sessions, 2);
        assert_eq!(
            report.traffic.cells_sent,
            sessions[0].stats.cells_sent + sessions[1].stats.cells_sent
        );
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}

/// A watching client checkpoints its WAL in the background: what it received reaches the
/// database file itself while the session runs, with no commit large enough to checkpoint
/// inline and nobody calling `checkpoint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_client_checkpoints_its_wal() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let l = open(dir.path(), "l");
        fill(&l, "c", RECORDS as usize, 200, "l");
        let listener = listen_tcp(l.clone(), ListenConfig::default()).await;
        let url: Endpoint = format!("tcp://{}", listener.tcp_addr().unwrap())
            .parse()
            .unwrap();
        let c = open(dir.path(), "c");
        let file = dir.path().join("c.db");
        let before = std::fs::metadata(&file).unwrap().len();
        let (c_watch, file_watch) = (c.clone(), file.clone());
        let stop = async move {
            // Everything arrived, and (within 10 s) it is in the database file.
            for _ in 0..1_000 {
                if count(&c_watch, "c") == RECORDS
                    && std::fs::metadata(&file_watch).unwrap().len() > before + 100_000
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        sync_watch(c.clone(), &url, &ClientOptions::default(), stop, |_| {})
            .await
            .unwrap();
        assert_eq!(count(&c, "c"), RECORDS);
        let after = std::fs::metadata(&file).unwrap().len();
        assert!(
            after > before + 100_000,
            "the database file stayed at {after} bytes (was {before}): the WAL was not \
             checkpointed"
        );
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
