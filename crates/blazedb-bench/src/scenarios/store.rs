//! The embedded store against raw SQLite: writes, reads, queries, updates, open and bytes.
//!
//! Every scenario runs BlazeDB through its public API with default options (history on,
//! default retention) and the floor through [`crate::floor`], on files in the same directory,
//! with the same pragmas and, when encrypted, the same SQLCipher key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use blazedb::limits::TRANSACTION_WRITES_MAX;
use blazedb::{Database, OpenOptions, Patch, Query, RecordId, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};

use super::{Ctx, Scenario, PASSWORD};
use crate::floor::{self, Floor};
use crate::report::{Figure, Outcome, Target};
use crate::stats::{rate_per_s, timed, Summary};
use crate::workload::{assignee, assignee_pool, Bug, Generator};

/// The collection (and the floor's table) every scenario writes.
pub const COLLECTION: &str = "bugs";
/// Records per transaction when a scenario loads more than one transaction can hold.
pub(super) const LOAD_CHUNK_RECORDS: usize = TRANSACTION_WRITES_MAX;
/// Untimed operations before a timed series, so both sides start with warm caches.
pub(super) const WARMUP_OPS: usize = 20;
/// Issue target: batched insert at least this fraction of the floor's rows/s.
const INSERT_FLOOR_FRACTION_MIN: f64 = 0.5;
/// Issue target: point read p50 at most this many µs.
const READ_P50_US_MAX: f64 = 10.0;
/// Issue target: per-record metadata at most this many bytes.
const METADATA_BYTES_MAX: f64 = 64.0;
/// "Opening costs the same at 1k and 1M records": the large file's median open may be at
/// most this factor of the small file's (room for noise, far below any scan's cost).
const OPEN_GROWTH_MAX: f64 = 1.5;

/// The store scenarios, in run order.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(InsertBatch),
        Box::new(Metadata),
        Box::new(ReadPoint),
        Box::new(QueryEq),
        Box::new(Update),
        Box::new(WriteSingle),
        Box::new(Open),
    ]
}

/// Files the store scenarios share within a run.
#[derive(Debug, Default)]
pub struct Shared {
    /// The loaded collection, per mode (key: encrypted).
    loaded: HashMap<bool, Loaded>,
    /// The plain files of the open scenario (the encrypted ones are derived from them).
    open_plain: Option<[OpenPair; 2]>,
}

/// A collection of `records` records written by BlazeDB and the same rows by the floor.
#[derive(Debug)]
struct Loaded {
    db: Database,
    db_path: PathBuf,
    floor: Floor,
    floor_path: PathBuf,
    db_ids: Vec<RecordId>,
    floor_ids: Vec<[u8; 16]>,
    bugs: Vec<Bug>,
    insert_blazedb: Duration,
    insert_floor: Duration,
    indexed: bool,
    updated: bool,
}

impl Loaded {
    /// Write the same generated rows with both, timing each (the floor first).
    fn build(ctx: &Ctx, encrypted: bool) -> Result<Loaded> {
        let n = ctx.config.sizes.records;
        let pw = Ctx::password(encrypted);
        let bugs = Generator::new(ctx.config.seed, n).bugs(n);
        let (db_path, floor_path) = (ctx.path("blazedb", encrypted), ctx.path("floor", encrypted));
        remove_db_files(&db_path)?;
        remove_db_files(&floor_path)?;
        let db = Database::open(&db_path, options(encrypted))?;
        let mut floor = Floor::create(&floor_path, pw)?;

        let (floor_ids, insert_floor) = timed(|| -> Result<Vec<[u8; 16]>> {
            let ids: Vec<[u8; 16]> = bugs.iter().map(|_| new_floor_id()).collect();
            for (ids, bugs) in ids
                .chunks(LOAD_CHUNK_RECORDS)
                .zip(bugs.chunks(LOAD_CHUNK_RECORDS))
            {
                floor.insert_batch(ids, bugs)?;
            }
            Ok(ids)
        });
        let (db_ids, insert_blazedb) = timed(|| insert_chunked(&db, &bugs, LOAD_CHUNK_RECORDS));
        Ok(Loaded {
            db,
            db_path,
            floor,
            floor_path,
            db_ids: db_ids?,
            floor_ids: floor_ids?,
            bugs,
            insert_blazedb,
            insert_floor,
            indexed: false,
            updated: false,
        })
    }
}

/// The loaded collection of a mode, building it if no scenario has yet.
fn loaded(ctx: &mut Ctx, encrypted: bool) -> Result<&mut Loaded> {
    if !ctx.store.loaded.contains_key(&encrypted) {
        let l = Loaded::build(ctx, encrypted)?;
        ctx.store.loaded.insert(encrypted, l);
    }
    ctx.store
        .loaded
        .get_mut(&encrypted)
        .context("loaded collection vanished")
}

pub(super) fn options(encrypted: bool) -> OpenOptions {
    if encrypted {
        OpenOptions::with_password(PASSWORD)
    } else {
        OpenOptions::default()
    }
}

pub(super) fn new_floor_id() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

/// Insert through the API, `chunk` records per transaction; returns the ids in order.
pub(super) fn insert_chunked(db: &Database, bugs: &[Bug], chunk: usize) -> Result<Vec<RecordId>> {
    let mut ids = Vec::with_capacity(bugs.len());
    for part in bugs.chunks(chunk) {
        db.transaction(|tx| {
            for b in part {
                ids.push(tx.insert(COLLECTION, b.fields())?);
            }
            Ok(())
        })?;
    }
    Ok(ids)
}

/// A file's size in bytes (0 if it cannot be read).
pub(super) fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Delete a database file with its WAL and shared-memory files, if they exist.
pub(super) fn remove_db_files(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    Ok(())
}

/// Time `ops` operations one at a time, in `rounds` rounds that alternate floor then BlazeDB.
/// Returns (floor, BlazeDB) per-operation times.
pub(super) fn alternate(
    ops: usize,
    rounds: usize,
    mut floor: impl FnMut(usize) -> Result<()>,
    mut blazedb: impl FnMut(usize) -> Result<()>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut f, mut b) = (Vec::with_capacity(ops), Vec::with_capacity(ops));
    let rounds = rounds.clamp(1, ops.max(1));
    for r in 0..rounds {
        let range = ops * r / rounds..ops * (r + 1) / rounds;
        for i in range.clone() {
            let t = Instant::now();
            floor(i)?;
            f.push(t.elapsed());
        }
        for i in range {
            let t = Instant::now();
            blazedb(i)?;
            b.push(t.elapsed());
        }
    }
    Ok((f, b))
}

pub(super) fn summary(samples: &[Duration]) -> Result<Summary> {
    Summary::of(samples).context("no samples (a size is 0)")
}

/// Two rows (p50 and p99) for a latency distribution.
fn latency_rows(
    name: &str,
    scenario: &'static str,
    encrypted: bool,
    (floor_what, floor_s): (&str, &Summary),
    (db_what, db_s): (&str, &Summary),
    p50_target: Option<(String, bool)>,
    details: Map<String, serde_json::Value>,
) -> Vec<Outcome> {
    let row = |pct: &str, db_v: f64, floor_v: f64, target: Option<Target>| Outcome {
        name: format!("{name}_{pct}"),
        scenario,
        encrypted,
        blazedb: Figure::latency(db_v, "us", db_s.clone(), db_what),
        floor: Figure::latency(floor_v, "us", floor_s.clone(), floor_what),
        target,
        details: details.clone(),
    };
    vec![
        row(
            "p50",
            db_s.p50_us,
            floor_s.p50_us,
            p50_target.map(|(description, met)| Target { description, met }),
        ),
        row("p99", db_s.p99_us, floor_s.p99_us, None),
    ]
}

pub(super) fn details(v: serde_json::Value) -> Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Batched insert of the whole collection in one transaction.
#[derive(Debug)]
struct InsertBatch;

impl Scenario for InsertBatch {
    fn name(&self) -> &'static str {
        "insert_batch"
    }

    fn about(&self) -> &'static str {
        "insert N 5-field records in one transaction (rows/s)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        ensure!(
            !ctx.store.loaded.contains_key(&encrypted),
            "insert_batch must run before the other store scenarios"
        );
        let l = loaded(ctx, encrypted)?;
        let n = l.bugs.len();
        let (db_rate, floor_rate) = (
            rate_per_s(n, l.insert_blazedb),
            rate_per_s(n, l.insert_floor),
        );
        let chunks = n.div_ceil(LOAD_CHUNK_RECORDS);
        Ok(vec![Outcome {
            name: "insert_batch".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::rate(
                db_rate,
                "rows/s",
                format!("Tx::insert of {n} records in {chunks} transaction(s), default options"),
            ),
            floor: Figure::rate(
                floor_rate,
                "rows/s",
                "prepared INSERT into the 6-column WITHOUT ROWID table (id BLOB PRIMARY KEY + 5 \
                 typed columns), one transaction",
            ),
            target: Some(Target {
                description: format!("≥ {:.0}% of floor", INSERT_FLOOR_FRACTION_MIN * 100.0),
                met: db_rate >= INSERT_FLOOR_FRACTION_MIN * floor_rate,
            }),
            details: details(json!({
                "records": n,
                "blazedb_s": l.insert_blazedb.as_secs_f64(),
                "floor_s": l.insert_floor.as_secs_f64(),
            })),
        }])
    }
}

/// Bytes per record that BlazeDB stores beyond the values, beside the floor's.
#[derive(Debug)]
struct Metadata;

impl Scenario for Metadata {
    fn name(&self) -> &'static str {
        "metadata"
    }

    fn about(&self) -> &'static str {
        "bytes per record beyond the raw values (dbstat)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let l = loaded(ctx, encrypted)?;
        ensure!(
            !l.updated,
            "metadata must be measured before the update scenario"
        );
        let pw = Ctx::password(encrypted);
        let n = l.bugs.len() as f64;
        let side = floor::inspect(&l.db_path, pw)?;
        let records = floor::table_bytes(&side, &["records"])?;
        let feed = floor::table_bytes(&side, &["feed"])?;
        let history = floor::table_bytes(&side, &["history"])?;
        drop(side);
        let floor_table = floor::table_bytes(l.floor.conn(), &[floor::TABLE])?;
        // The raw values: the 16-byte id plus each value's bytes.
        let payload: usize = l.bugs.iter().map(|b| 16 + b.value_bytes()).sum();
        let db_extra = ((records + feed) as f64 - payload as f64) / n;
        let floor_extra = (floor_table as f64 - payload as f64) / n;
        let metadata = db_extra - floor_extra;
        Ok(vec![Outcome {
            name: "metadata_per_record".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::cost(
                db_extra,
                "bytes/record",
                "(dbstat pgsize of tables records + feed - raw values) / records",
            ),
            floor: Figure::cost(
                floor_extra,
                "bytes/record",
                "(dbstat pgsize of the hand-written table - raw values) / records",
            ),
            target: Some(Target {
                description: format!(
                    "≤ {METADATA_BYTES_MAX:.0} B/record beyond floor (measured {metadata:.1})"
                ),
                met: metadata <= METADATA_BYTES_MAX,
            }),
            details: details(json!({
                "method": "dbstat",
                "metadata_bytes_per_record": metadata,
                "records": l.bugs.len(),
                "raw_value_bytes": payload,
                "blazedb_records_table_bytes": records,
                "blazedb_feed_table_bytes": feed,
                "blazedb_history_bytes": history,
                "blazedb_history_bytes_per_record": history as f64 / n,
                "floor_table_bytes": floor_table,
                "blazedb_file_bytes": file_bytes(&l.db_path),
                "floor_file_bytes": file_bytes(&l.floor_path),
            })),
        }])
    }
}

/// Point reads by id, warm cache.
#[derive(Debug)]
struct ReadPoint;

impl Scenario for ReadPoint {
    fn name(&self) -> &'static str {
        "read_point"
    }

    fn about(&self) -> &'static str {
        "get one record by id from the loaded collection (µs per read)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let (reads, rounds, seed) = (
            ctx.config.sizes.reads,
            ctx.config.sizes.rounds,
            ctx.config.seed,
        );
        let l = loaded(ctx, encrypted)?;
        let n = l.bugs.len();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5EAD);
        // The warm-up reads as many random records as the measurement, then the measurement
        // reads others: a warm cache, but not only the pages just read.
        let warm: Vec<usize> = (0..reads).map(|_| rng.gen_range(0..n)).collect();
        let picks: Vec<usize> = (0..reads).map(|_| rng.gen_range(0..n)).collect();
        let (floor, db) = (&l.floor, &l.db);
        let floor_get = |i: usize| -> Result<()> {
            ensure!(floor.get(&l.floor_ids[i])?.is_some(), "floor row missing");
            Ok(())
        };
        let db_get = |i: usize| -> Result<()> {
            ensure!(db.get(COLLECTION, l.db_ids[i])?.is_some(), "record missing");
            Ok(())
        };
        alternate(reads, 1, |k| floor_get(warm[k]), |k| db_get(warm[k]))?;
        let (f, b) = alternate(reads, rounds, |k| floor_get(picks[k]), |k| db_get(picks[k]))?;
        let (fs, bs) = (summary(&f)?, summary(&b)?);
        let met = bs.p50_us <= READ_P50_US_MAX;
        Ok(latency_rows(
            "read_point",
            self.name(),
            encrypted,
            ("SELECT the 5 columns WHERE id = ?1 (prepared, cached)", &fs),
            ("Database::get(collection, id)", &bs),
            Some((format!("p50 ≤ {READ_P50_US_MAX:.0} us"), met)),
            details(json!({"records": n, "reads": reads, "warmup_reads": reads})),
        ))
    }
}

/// Equality query on `assignee` (~100 matches): first without any index (a full scan with
/// a filter), then with one.
#[derive(Debug)]
struct QueryEq;

impl Scenario for QueryEq {
    fn name(&self) -> &'static str {
        "query"
    }

    fn about(&self) -> &'static str {
        "assignee == X (~100 matches): full scan, then with an index (µs per query)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        let seed = ctx.config.seed;
        let l = loaded(ctx, encrypted)?;
        ensure!(!l.indexed, "the query scenario ran twice on one collection");
        let n = l.bugs.len();
        let pool = assignee_pool(n);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9E71);
        let base = Query::filter("assignee == $who")?;
        let mut pick = |count: usize| -> Vec<(String, Query)> {
            (0..count)
                .map(|_| {
                    let name = assignee(rng.gen_range(0..pool));
                    let mut q = base.clone();
                    q.params.insert("who".into(), Value::from(name.as_str()));
                    (name, q)
                })
                .collect()
        };
        let scans = pick(sizes.scan_queries + 1);
        let lookups = pick(sizes.indexed_queries + WARMUP_OPS);

        // Both sides must return the same rows, or the comparison means nothing.
        let check = |(name, q): &(String, Query)| -> Result<usize> {
            let (a, b) = (
                l.floor.by_assignee(name)?.len(),
                l.db.query(COLLECTION, q)?.len(),
            );
            ensure!(a == b, "floor found {a} rows for {name}, BlazeDB {b}");
            Ok(a)
        };
        let matches_scan = check(&scans[0])?;
        let mut matched = 0usize;
        let (fs, bs) = alternate(
            sizes.scan_queries,
            sizes.rounds,
            |i| {
                matched += l.floor.by_assignee(&scans[i + 1].0)?.len();
                Ok(())
            },
            |i| {
                l.db.query(COLLECTION, &scans[i + 1].1)?;
                Ok(())
            },
        )?;
        let (fs, bs) = (summary(&fs)?, summary(&bs)?);
        let mut rows = latency_rows(
            "query_scan",
            self.name(),
            encrypted,
            (
                "SELECT * FROM bugs WHERE assignee = ?1, no index (full scan)",
                &fs,
            ),
            (
                "Database::query(\"assignee == $who\"), no index (full scan)",
                &bs,
            ),
            None,
            details(json!({
                "records": n,
                "queries": sizes.scan_queries,
                "matches_mean": (matches_scan + matched) as f64 / (sizes.scan_queries + 1) as f64,
            })),
        );

        let (t_floor_index, t_db_index) = {
            let (r, tf) = timed(|| l.floor.create_index());
            r?;
            let (r, tb) = timed(|| l.db.create_index(COLLECTION, "assignee"));
            r?;
            (tf, tb)
        };
        l.indexed = true;
        check(&lookups[0])?;
        alternate(
            WARMUP_OPS,
            1,
            |i| l.floor.by_assignee(&lookups[i].0).map(drop),
            |i| {
                l.db.query(COLLECTION, &lookups[i].1)
                    .map(drop)
                    .map_err(Into::into)
            },
        )?;
        let mut matched = 0usize;
        let (fs, bs) = alternate(
            sizes.indexed_queries,
            sizes.rounds,
            |i| {
                matched += l.floor.by_assignee(&lookups[WARMUP_OPS + i].0)?.len();
                Ok(())
            },
            |i| {
                l.db.query(COLLECTION, &lookups[WARMUP_OPS + i].1)?;
                Ok(())
            },
        )?;
        let (fs, bs) = (summary(&fs)?, summary(&bs)?);
        rows.extend(latency_rows(
            "query_indexed",
            self.name(),
            encrypted,
            (
                "SELECT * FROM bugs WHERE assignee = ?1 with CREATE INDEX on assignee",
                &fs,
            ),
            (
                "Database::query(\"assignee == $who\") after create_index(\"assignee\")",
                &bs,
            ),
            None,
            details(json!({
                "records": n,
                "queries": sizes.indexed_queries,
                "matches_mean": matched as f64 / sizes.indexed_queries.max(1) as f64,
                "blazedb_create_index_s": t_db_index.as_secs_f64(),
                "floor_create_index_s": t_floor_index.as_secs_f64(),
            })),
        ));
        Ok(rows)
    }
}

/// Set one field of an existing record, each its own committed transaction.
#[derive(Debug)]
struct Update;

impl Scenario for Update {
    fn name(&self) -> &'static str {
        "update"
    }

    fn about(&self) -> &'static str {
        "set one field of a random existing record, committed (ops/s)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let (ops, rounds, seed) = (
            ctx.config.sizes.updates,
            ctx.config.sizes.rounds,
            ctx.config.seed,
        );
        let l = loaded(ctx, encrypted)?;
        l.updated = true;
        let n = l.bugs.len();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0BDA7E);
        let picks: Vec<usize> = (0..ops + WARMUP_OPS).map(|_| rng.gen_range(0..n)).collect();
        let status = |i: usize| if i % 2 == 0 { "closed" } else { "open" };
        let floor_op = |i: usize| l.floor.update_status(&l.floor_ids[picks[i]], status(i));
        let db_op = |i: usize| -> Result<()> {
            let patch = Patch::new().set("status", status(i));
            Ok(l.db.update(COLLECTION, l.db_ids[picks[i]], patch)?)
        };
        alternate(WARMUP_OPS, 1, floor_op, db_op)?;
        let (f, b) = alternate(
            ops,
            rounds,
            |i| floor_op(WARMUP_OPS + i),
            |i| db_op(WARMUP_OPS + i),
        )?;
        Ok(vec![commit_row(
            "update_one_field",
            self.name(),
            encrypted,
            ("UPDATE bugs SET status = ?1 WHERE id = ?2 (autocommit)", &f),
            ("Database::update(id, Patch::new().set(\"status\", ..))", &b),
            json!({"records": n, "updates": ops}),
        )?])
    }
}

/// A throughput row for one-operation commits, with their latency in the details.
fn commit_row(
    name: &str,
    scenario: &'static str,
    encrypted: bool,
    (floor_what, f): (&str, &[Duration]),
    (db_what, b): (&str, &[Duration]),
    extra: serde_json::Value,
) -> Result<Outcome> {
    let (fs, bs) = (summary(f)?, summary(b)?);
    let total = |v: &[Duration]| v.iter().sum::<Duration>();
    let mut d = details(extra);
    d.insert("blazedb_p50_us".into(), json!(bs.p50_us));
    d.insert("blazedb_p99_us".into(), json!(bs.p99_us));
    d.insert("floor_p50_us".into(), json!(fs.p50_us));
    d.insert("floor_p99_us".into(), json!(fs.p99_us));
    Ok(Outcome {
        name: name.into(),
        scenario,
        encrypted,
        blazedb: Figure::rate(rate_per_s(b.len(), total(b)), "ops/s", db_what),
        floor: Figure::rate(rate_per_s(f.len(), total(f)), "ops/s", floor_what),
        target: None,
        details: d,
    })
}

/// Single-record inserts, each its own committed transaction, into a new file.
#[derive(Debug)]
struct WriteSingle;

impl Scenario for WriteSingle {
    fn name(&self) -> &'static str {
        "write_single"
    }

    fn about(&self) -> &'static str {
        "insert one record per committed transaction into a new file (ops/s)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let (ops, rounds, seed) = (
            ctx.config.sizes.single_writes,
            ctx.config.sizes.rounds,
            ctx.config.seed,
        );
        let (db_path, floor_path) = (
            ctx.path("single", encrypted),
            ctx.path("single-floor", encrypted),
        );
        remove_db_files(&db_path)?;
        remove_db_files(&floor_path)?;
        let db = Database::open(&db_path, options(encrypted))?;
        let floor = Floor::create(&floor_path, Ctx::password(encrypted))?;
        let bugs = Generator::new(seed ^ 0x51, ops).bugs(ops + WARMUP_OPS);
        let floor_op = |i: usize| floor.insert_one(&new_floor_id(), &bugs[i]);
        let db_op = |i: usize| -> Result<()> {
            db.insert(COLLECTION, bugs[i].fields())?;
            Ok(())
        };
        alternate(WARMUP_OPS, 1, floor_op, db_op)?;
        let (f, b) = alternate(
            ops,
            rounds,
            |i| floor_op(WARMUP_OPS + i),
            |i| db_op(WARMUP_OPS + i),
        )?;
        Ok(vec![commit_row(
            "write_single",
            self.name(),
            encrypted,
            ("INSERT of one row (autocommit)", &f),
            (
                "Database::insert(collection, fields) (one transaction each)",
                &b,
            ),
            json!({"writes": ops}),
        )?])
    }
}

/// A small and a large file, written once by each side, in plain form.
#[derive(Debug, Clone)]
struct OpenPair {
    records: usize,
    db_path: PathBuf,
    db_id: RecordId,
    floor_path: PathBuf,
    floor_id: [u8; 16],
}

impl OpenPair {
    /// Write `records` records with BlazeDB's API (in transactions of the largest allowed
    /// size) and the same rows with the floor, both unencrypted, and close both.
    fn build(ctx: &Ctx, label: &str, records: usize) -> Result<OpenPair> {
        let (db_path, floor_path) = (
            ctx.path(&format!("open-{label}"), false),
            ctx.path(&format!("open-{label}-floor"), false),
        );
        remove_db_files(&db_path)?;
        remove_db_files(&floor_path)?;
        let mut gen = Generator::new(ctx.config.seed ^ 0x0FE7, records);
        let db = Database::open(&db_path, OpenOptions::default())?;
        let mut floor = Floor::create(&floor_path, None)?;
        // The record read back after each open: the one in the middle of the file.
        let middle = records / 2;
        let (mut db_id, mut floor_id) = (None, None);
        let mut written = 0;
        while written < records {
            let n = (records - written).min(LOAD_CHUNK_RECORDS);
            let bugs = gen.bugs(n);
            let ids = insert_chunked(&db, &bugs, LOAD_CHUNK_RECORDS)?;
            let fids: Vec<[u8; 16]> = bugs.iter().map(|_| new_floor_id()).collect();
            floor.insert_batch(&fids, &bugs)?;
            if (written..written + n).contains(&middle) {
                (db_id, floor_id) = (Some(ids[middle - written]), Some(fids[middle - written]));
            }
            written += n;
        }
        Ok(OpenPair {
            records,
            db_path,
            db_id: db_id.context("no records")?,
            floor_path,
            floor_id: floor_id.context("no records")?,
        })
    }

    /// Encrypted copies: BlazeDB's through `Database::rekey`, the floor's through
    /// `sqlcipher_export`.
    fn encrypted(&self, ctx: &Ctx, label: &str) -> Result<OpenPair> {
        let (db_path, floor_path) = (
            ctx.path(&format!("open-{label}"), true),
            ctx.path(&format!("open-{label}-floor"), true),
        );
        remove_db_files(&db_path)?;
        remove_db_files(&floor_path)?;
        std::fs::copy(&self.db_path, &db_path)?;
        let mut db = Database::open(&db_path, OpenOptions::default())?;
        db.rekey(Some(PASSWORD))?;
        drop(db);
        floor::export_encrypted(&self.floor_path, &floor_path, PASSWORD)?;
        Ok(OpenPair {
            db_path,
            floor_path,
            ..self.clone()
        })
    }

    /// Per-open times (floor, BlazeDB): open, then read one record.
    fn measure(
        &self,
        encrypted: bool,
        reps: usize,
        rounds: usize,
    ) -> Result<(Vec<Duration>, Vec<Duration>)> {
        let pw = Ctx::password(encrypted);
        let floor_open = |_| -> Result<()> {
            let f = Floor::open(&self.floor_path, pw)?;
            ensure!(
                f.get(&self.floor_id)?.is_some(),
                "floor row missing after open"
            );
            Ok(())
        };
        let db_open = |_| -> Result<()> {
            let db = Database::open(&self.db_path, options(encrypted))?;
            ensure!(
                db.get(COLLECTION, self.db_id)?.is_some(),
                "record missing after open"
            );
            Ok(())
        };
        // The first open of a copied or exported file may convert it to WAL: not timed.
        alternate(1, 1, floor_open, db_open)?;
        alternate(reps, rounds, floor_open, db_open)
    }
}

/// Time to open a file and read one record, with few and with many records.
#[derive(Debug)]
struct Open;

impl Scenario for Open {
    fn name(&self) -> &'static str {
        "open"
    }

    fn about(&self) -> &'static str {
        "open a file and read one record: small vs large file (ms)"
    }

    fn run(&self, ctx: &mut Ctx, encrypted: bool) -> Result<Vec<Outcome>> {
        let sizes = ctx.config.sizes.clone();
        if ctx.store.open_plain.is_none() {
            let small = OpenPair::build(ctx, "small", sizes.open_small)?;
            let large = OpenPair::build(ctx, "large", sizes.open_large)?;
            ctx.store.open_plain = Some([small, large]);
        }
        let plain = ctx
            .store
            .open_plain
            .clone()
            .context("open files vanished")?;
        let pairs = if encrypted {
            [
                plain[0].encrypted(ctx, "small")?,
                plain[1].encrypted(ctx, "large")?,
            ]
        } else {
            plain
        };
        let mut rows = Vec::new();
        let mut medians = Vec::new();
        for (label, pair) in ["small", "large"].iter().zip(&pairs) {
            let (f, b) = pair.measure(encrypted, sizes.open_reps, sizes.rounds)?;
            let (fs, bs) = (summary(&f)?, summary(&b)?);
            medians.push((fs.p50_us, bs.p50_us));
            rows.push(Outcome {
                name: format!("open_{label}"),
                scenario: self.name(),
                encrypted,
                blazedb: Figure::latency(
                    bs.p50_us / 1e3,
                    "ms",
                    bs,
                    "median of Database::open + get(one id)",
                ),
                floor: Figure::latency(
                    fs.p50_us / 1e3,
                    "ms",
                    fs,
                    "median of open + key + pragmas + SELECT by id",
                ),
                target: None,
                details: details(json!({
                    "records": pair.records,
                    "opens": sizes.open_reps,
                    "blazedb_file_bytes": file_bytes(&pair.db_path),
                    "floor_file_bytes": file_bytes(&pair.floor_path),
                })),
            });
        }
        let (small, large) = (medians[0], medians[1]);
        let growth = large.1 / small.1;
        rows.push(Outcome {
            name: "open_growth".into(),
            scenario: self.name(),
            encrypted,
            blazedb: Figure::cost(growth, "x", "median open_large / median open_small"),
            floor: Figure::cost(
                large.0 / small.0,
                "x",
                "median open_large / median open_small",
            ),
            target: Some(Target {
                description: format!(
                    "{} records open ≤ {OPEN_GROWTH_MAX}x {} records",
                    human(sizes.open_large),
                    human(sizes.open_small)
                ),
                met: growth <= OPEN_GROWTH_MAX,
            }),
            details: {
                let mut d = details(json!({
                    "small_records": sizes.open_small,
                    "large_records": sizes.open_large,
                    "blazedb_median_small_ms": small.1 / 1e3,
                    "blazedb_median_large_ms": large.1 / 1e3,
                }));
                if encrypted {
                    d.insert(
                        "note".into(),
                        json!(
                            "SQLCipher's key derivation dominates an encrypted open and would \
                             hide a scan; the plain row shows growth better"
                        ),
                    );
                }
                d
            },
        });
        Ok(rows)
    }
}

/// `1000` → `1k`, `1000000` → `1M`.
fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(1_000), "1k");
        assert_eq!(human(1_000_000), "1M");
        assert_eq!(human(100_000), "100k");
        assert_eq!(human(1_234), "1234");
    }

    #[test]
    fn alternate_splits_work_into_rounds() {
        let mut order = Vec::new();
        let order_cell = std::cell::RefCell::new(&mut order);
        let (f, b) = alternate(
            5,
            2,
            |i| {
                order_cell.borrow_mut().push(('f', i));
                Ok(())
            },
            |i| {
                order_cell.borrow_mut().push(('b', i));
                Ok(())
            },
        )
        .expect("no errors");
        assert_eq!((f.len(), b.len()), (5, 5));
        assert_eq!(
            order,
            [
                ('f', 0),
                ('f', 1),
                ('b', 0),
                ('b', 1),
                ('f', 2),
                ('f', 3),
                ('f', 4),
                ('b', 2),
                ('b', 3),
                ('b', 4)
            ]
        );
    }
}
