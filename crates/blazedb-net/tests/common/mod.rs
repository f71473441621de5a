//! Helpers shared by the driver tests: databases in a temporary directory, bulk writes,
//! canonical comparisons.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blazedb::{Database, OpenOptions, Seq, Value};

/// A generous bound for "eventually" in tests; speed targets live in the benchmarks.
pub const CONVERGE: Duration = Duration::from_secs(20);

pub fn open(dir: &Path, name: &str) -> Arc<Database> {
    Arc::new(Database::open(dir.join(format!("{name}.db")), OpenOptions::default()).unwrap())
}

/// `records` new records in `collection`, `per_tx` per transaction.
pub fn fill(db: &Database, collection: &str, records: usize, per_tx: usize, tag: &str) {
    let mut done = 0;
    while done < records {
        let n = per_tx.min(records - done);
        db.transaction(|tx| {
            for i in 0..n {
                tx.insert(
                    collection,
                    [
                        ("title", Value::from(format!("{tag} record {}", done + i))),
                        ("n", Value::Int((done + i) as i64)),
                        ("pad", Value::from("x".repeat(40))),
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
        done += n;
    }
}

pub fn dump(db: &Database) -> Vec<String> {
    blazedb_net::canonical_dump(db).unwrap()
}

/// Records in a collection (0 when it does not exist yet).
pub fn count(db: &Database, collection: &str) -> u64 {
    db.count(collection).unwrap_or(0)
}

/// Cells alive in a replica (its whole feed).
pub fn live_cells(db: &Database) -> u64 {
    let (mut cells, mut since) = (0u64, Seq(0));
    loop {
        let batch = db.changes_since(since, 100_000, None).unwrap();
        cells += batch
            .changes
            .iter()
            .map(|c| c.cells.len() as u64)
            .sum::<u64>();
        since = batch.next;
        if !batch.more {
            return cells;
        }
    }
}
