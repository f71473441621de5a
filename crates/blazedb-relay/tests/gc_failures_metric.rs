//! A relay whose periodic GC fails at every run — its store deleted while it runs — counts
//! each failed run in `/metrics` by its cause (`gc_failures_total{cause="store_gone"}`),
//! however few of them the log mentions; the other causes are there from the start, at 0.

mod common;

use std::time::{Duration, Instant};

use common::{http, metric, TestRelay};

/// `gc_failures_total` for `cause`, from a `/metrics` text.
fn gc_failures(metrics: &str, cause: &str) -> Option<f64> {
    metric(
        metrics,
        &format!("blazedb_relay_gc_failures_total{{cause=\"{cause}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_gc_run_is_counted_by_its_cause() {
    let relay =
        TestRelay::start_with(|_| {}, |r| r.set_gc_interval(Duration::from_millis(50))).await;
    relay.db.insert("notes", [("n", 1)]).unwrap();
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    for cause in ["store_gone", "disk_full", "store_read_only", "error"] {
        assert_eq!(gc_failures(&m, cause), Some(0.0), "{cause}: {m}");
    }

    std::fs::remove_dir_all(relay.dir.path().join("relay")).unwrap();
    let start = Instant::now();
    let m = loop {
        let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if gc_failures(&m, "store_gone").is_some_and(|n| n >= 3.0) {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "failed runs not counted: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for cause in ["disk_full", "store_read_only", "error"] {
        assert_eq!(gc_failures(&m, cause), Some(0.0), "{cause}: {m}");
    }
    assert!(
        m.contains(
            "# HELP blazedb_relay_gc_failures Garbage collection runs that failed, by cause"
        ),
        "{m}"
    );
    relay.stop().await;
}
