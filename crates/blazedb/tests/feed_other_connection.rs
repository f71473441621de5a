//! Reading the change feed while another connection (as another process would) keeps
//! committing: every commit is returned by some batch — a batch's `next` never moves past a
//! commit the batch did not contain.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazedb::{Database, OpenOptions, Seq, Value};

#[test]
fn feed_batches_miss_no_commit_of_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let reader = Database::open(&path, OpenOptions::default()).unwrap();
    let writer = Database::open(&path, OpenOptions::default()).unwrap();
    writer.insert("c", [("n", Value::Int(0))]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                writer.insert("c", [("n", Value::Int(n))]).unwrap();
                n += 1;
            }
            writer
        })
    };
    let mut seen = BTreeSet::new();
    let mut since = Seq(0);
    let started = Instant::now();
    let mut drain = |since: &mut Seq| loop {
        let batch = reader.changes_since(*since, 64, None).unwrap();
        for ch in &batch.changes {
            seen.insert(ch.seq);
        }
        *since = batch.next;
        if !batch.more {
            break;
        }
    };
    while started.elapsed() < Duration::from_millis(1_500) {
        drain(&mut since);
    }
    stop.store(true, Ordering::Relaxed);
    let writer = w.join().unwrap();
    drain(&mut since);
    let head = writer.last_seq().unwrap();
    assert_eq!(since, head);
    // Every commit inserted one record, never overwritten: each seq has cells.
    let missing: Vec<u64> = (1..=head.0).filter(|s| !seen.contains(&Seq(*s))).collect();
    assert!(
        missing.is_empty(),
        "{} of {} commits never returned, e.g. {:?}",
        missing.len(),
        head.0,
        &missing[..missing.len().min(10)]
    );
}
