//! The churn driver: one thread per client database, opened through the library beside that
//! client's `blazedb sync` process (two processes on one file, as an application and its sync
//! service would be). Each keeps a stable set of its own live records and, every second,
//! deletes `k`, inserts `k` and updates `m` of them, each write its own transaction, so the
//! live data stays the same size while tombstones, history and feed churn through.
//!
//! Each node only writes its own records: updates racing deletes from another node would bring
//! records back (a newer field write survives a concurrent delete), and the live set would
//! drift, hiding whether growth comes from metadata or from data.
//!
//! | field    | written by        | content                                      |
//! |----------|-------------------|----------------------------------------------|
//! | `owner`  | insert            | the node's index                             |
//! | `title`  | insert            | `node1 #123`                                 |
//! | `status` | insert, update    | one of four words                            |
//! | `n`      | insert, update    | the node's running count of updates          |
//! | `votes`  | insert, update    | a counter, incremented by every other update |
//! | `body`   | insert, 1 in 10 updates | [`BODY_BYTES`] of random letters       |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use blazedb::{Database, Patch, RecordId, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::limits::{BEHIND_S_MAX, CHECKPOINT_EVERY, CHURN_TICK, SEED_BATCH};
use super::COLLECTION;

/// Bytes of the `body` field.
pub const BODY_BYTES: usize = 200;
const STATUSES: [&str; 4] = ["open", "triaged", "in-progress", "closed"];

/// What each node does per second.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Inserts per second (and as many deletes).
    pub inserts_per_s: u32,
    /// Updates per second.
    pub updates_per_s: u32,
    /// Seconds between the driver's client-side GC runs.
    pub gc_every_s: u64,
}

/// What one node's driver did.
#[derive(Debug, Clone, Default)]
pub struct NodeTotals {
    /// Inserts committed.
    pub inserts: u64,
    /// Updates committed.
    pub updates: u64,
    /// Deletes committed.
    pub deletes: u64,
    /// Client-side GC runs.
    pub gc_runs: u64,
    /// Rows the client-side GC runs removed (tombstones, history, feed rows, feed links).
    pub gc_removed: u64,
    /// Client-side GC runs that failed.
    pub gc_errors: u64,
    /// The first failure's message.
    pub gc_first_error: Option<String>,
    /// The most seconds of work the driver was behind its schedule (it skips ahead past
    /// [`BEHIND_S_MAX`], so the load stays bounded on a slow machine).
    pub behind_s_max: f64,
    /// Seconds the churn ran.
    pub elapsed_s: f64,
}

/// One client database and its own live records.
#[derive(Debug)]
pub struct Node {
    /// `node0`, `node1`, ...
    pub name: String,
    /// Its index (the `owner` field).
    pub index: usize,
    /// The library handle the driver writes and samples through.
    pub db: Arc<Database>,
    live: Vec<RecordId>,
    rng: StdRng,
    updates_done: i64,
    serial: u64,
}

impl Node {
    /// Open (creating) the node's database.
    pub fn open(
        name: &str,
        index: usize,
        path: &std::path::Path,
        options: blazedb::OpenOptions,
        seed: u64,
    ) -> Result<Node> {
        let db =
            Database::open(path, options).with_context(|| format!("opening {}", path.display()))?;
        Ok(Node {
            name: name.to_owned(),
            index,
            db: Arc::new(db),
            live: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            updates_done: 0,
            serial: 0,
        })
    }

    /// Insert the node's starting records, [`SEED_BATCH`] per transaction.
    pub fn seed(&mut self, records: usize) -> Result<()> {
        while self.live.len() < records {
            let n = (records - self.live.len()).min(SEED_BATCH);
            let rows: Vec<Vec<(&'static str, Value)>> = (0..n).map(|_| self.new_fields()).collect();
            let ids = self.db.transaction(|tx| {
                rows.into_iter()
                    .map(|fields| tx.insert(COLLECTION, fields))
                    .collect::<blazedb::Result<Vec<_>>>()
            })?;
            self.live.extend(ids);
        }
        Ok(())
    }

    /// Churn until `stop`, then return what was done. Fails on the first write error: a soak
    /// that hits one (a busy file, a full disk) must say so, not average over it. GC errors
    /// are counted in the totals instead (see below).
    pub fn churn(mut self, rates: Rates, stop: &AtomicBool) -> Result<NodeTotals> {
        let mut totals = NodeTotals::default();
        let start = Instant::now();
        let mut last_checkpoint = start;
        let mut last_gc = start;
        // Work is scheduled by the clock: by time t, t × rate operations are due.
        let mut pairs_done = 0u64;
        let mut updates_done = 0u64;
        let mut skipped_pairs = 0u64;
        let mut skipped_updates = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let t = start.elapsed().as_secs_f64();
            let pairs_due = (t * f64::from(rates.inserts_per_s)) as u64 - skipped_pairs;
            let updates_due = (t * f64::from(rates.updates_per_s)) as u64 - skipped_updates;
            let behind_s = behind(pairs_due, pairs_done, rates.inserts_per_s).max(behind(
                updates_due,
                updates_done,
                rates.updates_per_s,
            ));
            totals.behind_s_max = totals.behind_s_max.max(behind_s);
            if behind_s > BEHIND_S_MAX {
                // Drop the backlog rather than let it grow without bound.
                skipped_pairs += pairs_due - pairs_done;
                skipped_updates += updates_due - updates_done;
                continue;
            }
            // Interleave the three kinds in proportion, so no kind waits for another.
            while (pairs_done < pairs_due || updates_done < updates_due)
                && !stop.load(Ordering::Relaxed)
            {
                if pairs_done < pairs_due {
                    self.delete_one()?;
                    self.insert_one()?;
                    totals.deletes += 1;
                    totals.inserts += 1;
                    pairs_done += 1;
                }
                let updates_now = if pairs_due == 0 {
                    updates_due - updates_done
                } else {
                    (rates.updates_per_s / rates.inserts_per_s.max(1)).max(1) as u64
                };
                for _ in 0..updates_now.min(updates_due - updates_done) {
                    self.update_one()?;
                    totals.updates += 1;
                    updates_done += 1;
                }
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                // What an application that writes steadily does (see Database::checkpoint):
                // the WAL is reused from the start instead of growing.
                self.db.checkpoint()?;
                last_checkpoint = Instant::now();
            }
            if last_gc.elapsed() >= Duration::from_secs(rates.gc_every_s) {
                // A failed GC is counted, not fatal: the soak keeps going so the curves show
                // what the failure does to growth, and the verdict fails on it.
                match super::gc::collect(&self.db) {
                    Ok(removed) => {
                        totals.gc_removed += removed;
                        totals.gc_runs += 1;
                    }
                    Err(e) => {
                        if totals.gc_errors == 0 {
                            eprintln!("[soak] {}: GC failed: {e:#}", self.name);
                        }
                        totals.gc_errors += 1;
                        totals
                            .gc_first_error
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                last_gc = Instant::now();
            }
            std::thread::sleep(CHURN_TICK);
        }
        totals.elapsed_s = start.elapsed().as_secs_f64();
        Ok(totals)
    }

    fn new_fields(&mut self) -> Vec<(&'static str, Value)> {
        self.serial += 1;
        vec![
            ("owner", Value::Int(self.index as i64)),
            ("title", format!("{} #{}", self.name, self.serial).into()),
            ("status", STATUSES[0].into()),
            ("n", Value::Int(0)),
            ("votes", Value::Int(0)),
            ("body", self.body().into()),
        ]
    }

    fn body(&mut self) -> String {
        (0..BODY_BYTES)
            .map(|_| char::from(self.rng.gen_range(b'a'..=b'z')))
            .collect()
    }

    fn insert_one(&mut self) -> Result<()> {
        let fields = self.new_fields();
        let id = self.db.insert(COLLECTION, fields)?;
        self.live.push(id);
        Ok(())
    }

    fn delete_one(&mut self) -> Result<()> {
        if self.live.is_empty() {
            return Ok(());
        }
        let i = self.rng.gen_range(0..self.live.len());
        let id = self.live.swap_remove(i);
        self.db.delete(COLLECTION, id)?;
        Ok(())
    }

    fn update_one(&mut self) -> Result<()> {
        if self.live.is_empty() {
            return Ok(());
        }
        let id = self.live[self.rng.gen_range(0..self.live.len())];
        self.updates_done += 1;
        let status = STATUSES[self.rng.gen_range(0..STATUSES.len())];
        let mut patch = Patch::new()
            .set("status", status)
            .set("n", self.updates_done);
        if self.updates_done % 2 == 0 {
            patch = patch.increment("votes", 1);
        }
        if self.updates_done % 10 == 0 {
            patch = patch.set("body", self.body());
        }
        self.db.update(COLLECTION, id, patch)?;
        Ok(())
    }
}

/// Seconds of work `due - done` operations are at `rate` per second.
fn behind(due: u64, done: u64, rate: u32) -> f64 {
    if rate == 0 {
        return 0.0;
    }
    due.saturating_sub(done) as f64 / f64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_keeps_the_live_set_and_does_the_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut node =
            Node::open("node0", 0, &dir.path().join("n.db"), Default::default(), 7).unwrap();
        node.seed(300).unwrap();
        let db = node.db.clone();
        assert_eq!(db.count(COLLECTION).unwrap(), 300);
        let stop = AtomicBool::new(false);
        let rates = Rates {
            inserts_per_s: 40,
            updates_per_s: 80,
            gc_every_s: 1,
        };
        let totals = std::thread::scope(|s| {
            let h = s.spawn(|| node.churn(rates, &stop));
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap()
        })
        .unwrap();
        assert_eq!(db.count(COLLECTION).unwrap(), 300, "{totals:?}");
        assert_eq!(totals.inserts, totals.deletes);
        // 1.5 s at 40/s and 80/s, give or take the last tick.
        assert!((50..=70).contains(&totals.inserts), "{totals:?}");
        assert!((100..=130).contains(&totals.updates), "{totals:?}");
        let stats = db.stats().unwrap();
        assert!(stats.collections[COLLECTION].tombstones > 0 || totals.gc_runs > 0);
        assert!(stats.history_entries > 0);
        assert_eq!(totals.gc_errors, 0, "{totals:?}");
    }
}
