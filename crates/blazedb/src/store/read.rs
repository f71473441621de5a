//! Reads: point lookups, collection scans and queries.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;

use rusqlite::{params, OptionalExtension};

use super::{body, Database, Inner};
use crate::codec::keys;
use crate::error::{Error, Result};
use crate::limits::{FOR_EACH_PAGE_BYTES, FOR_EACH_PAGE_RECORDS, ORDER_BY_KEYS_MAX};
use crate::query::{Expr, Params};
use crate::types::Seq;
use crate::{RecordId, Value};

/// How much of a collection one page of [`Database::for_each`] reads.
#[derive(Clone, Copy)]
struct PageLimit {
    records: usize,
    /// Encoded bytes: a page ends after the record that reaches it.
    bytes: usize,
}

/// A record as the application sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: RecordId,
    /// Its version: starts at 1 and grows by one with every committed change (local or from
    /// a peer).
    pub rev: u64,
    /// Its fields.
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    /// `_id`, a top-level field of exactly this name (field names may contain dots), or else
    /// a dotted path into nested maps (`a.b`).
    pub fn field(&self, path: &str) -> Option<Value> {
        if path == "_id" {
            return Some(Value::Uuid(self.id.as_uuid()));
        }
        if let Some(v) = self.fields.get(path) {
            return Some(v.clone());
        }
        let mut parts = path.split('.');
        let first = self.fields.get(parts.next()?)?;
        let rest: Vec<&str> = parts.collect();
        first.path(&rest).cloned()
    }

    /// The record as one JSON object with its fields and `"_id"`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("_id".into(), serde_json::Value::String(self.id.to_string()));
        for (k, v) in &self.fields {
            m.insert(k.clone(), crate::codec::json::to_json(v));
        }
        serde_json::Value::Object(m)
    }
}

/// A sort key.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    /// `_id`, a top-level field name, or a path into nested maps (`a.b`): a record's field of
    /// exactly this name comes first, so a name with a dot in it sorts by that field (see
    /// [`Record::field`]).
    pub field: String,
    /// Descending instead of ascending.
    pub desc: bool,
}

impl OrderBy {
    /// `FIELD`, `FIELD:asc` or `FIELD:desc` (the direction in any case), as the CLI's
    /// `--order-by` and the relay's `order_by` take it. Any other word after the last colon
    /// is refused rather than read as part of the field name: `p:descending` sorting by a
    /// field that no record has would answer unsorted without a word. The same for SQL's
    /// `p desc` (a direction after a space) and `a,b` (several keys in one): each is refused
    /// saying how to write it here. (A field whose name ends in `:` and a word, in a space
    /// and a direction, or that is a comma-separated list of plain names, cannot be named
    /// here.)
    pub fn parse(text: &str) -> std::result::Result<OrderBy, String> {
        // What the errors repeat of the text, and of the parts they quote back: a start of
        // it, however long it is.
        let shown = crate::error::excerpt(text);
        let cut = crate::error::excerpt;
        if let Some((field, dir)) = text.trim_end().rsplit_once(char::is_whitespace) {
            let field = field.trim_end();
            if !field.is_empty()
                && (dir.eq_ignore_ascii_case("desc") || dir.eq_ignore_ascii_case("asc"))
            {
                return Err(format!(
                    "{shown:?}: write the direction after a colon: \"{}:{}\"",
                    cut(field),
                    dir.to_ascii_lowercase()
                ));
            }
        }
        let plain_name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "_.-$".contains(c));
        let keys: Vec<&str> = text.split(',').map(str::trim).collect();
        if keys.len() > 1
            && keys
                .iter()
                .all(|k| plain_name(k.rsplit_once(':').map_or(k, |(f, _)| f)))
        {
            return Err(format!(
                "{shown:?}: one sort key each: give the keys one by one (--order-by {} ..., or \
                 a list in the relay's order_by)",
                cut(keys[0])
            ));
        }
        let (field, desc) = match text.rsplit_once(':') {
            Some((field, dir)) if dir.eq_ignore_ascii_case("desc") => (field, true),
            Some((field, dir)) if dir.eq_ignore_ascii_case("asc") => (field, false),
            Some((_, dir)) if !dir.is_empty() && dir.chars().all(|c| c.is_ascii_alphabetic()) => {
                return Err(format!(
                    "{shown:?}: the direction after ':' must be asc or desc, not {:?}",
                    cut(dir)
                ))
            }
            // `a:` (a direction left out) sorted by a field named "a:" that no record has.
            Some((field, "")) => {
                return Err(format!(
                    "{shown:?}: nothing after ':': write {0:?}, \"{0}:asc\" or \"{0}:desc\"",
                    if field.is_empty() {
                        "FIELD".to_owned()
                    } else {
                        cut(field)
                    }
                ))
            }
            _ => (text, false),
        };
        if field.is_empty() {
            return Err(format!(
                "{shown:?}: expected FIELD, FIELD:asc or FIELD:desc"
            ));
        }
        // `n:desc:desc` sorted by a field named "n:desc" that no record has.
        if let Some((_, dir)) = field.rsplit_once(':') {
            if dir.eq_ignore_ascii_case("desc") || dir.eq_ignore_ascii_case("asc") {
                return Err(format!(
                    "{shown:?}: one direction per key, after the last ':'"
                ));
            }
        }
        Ok(OrderBy {
            field: field.to_owned(),
            desc,
        })
    }
}

/// A query over one collection.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only records matching this expression.
    pub filter: Option<Expr>,
    /// Values for `$name` parameters in the filter.
    pub params: Params,
    /// Sort keys, most significant first, at most [`ORDER_BY_KEYS_MAX`] (a key naming a field
    /// an earlier key names changes nothing and is skipped). Without any, records come in id
    /// order; ties are broken by id.
    pub order_by: Vec<OrderBy>,
    /// At most this many records.
    pub limit: Option<usize>,
    /// Skip this many records first.
    pub offset: usize,
    /// Ignore secondary indexes (for testing the planner).
    pub no_index: bool,
}

impl Query {
    /// A query with a filter expression (parsed here: invalid expressions fail now).
    pub fn filter(expr: &str) -> Result<Query> {
        Ok(Query {
            filter: Some(crate::query::parse(expr)?),
            ..Query::default()
        })
    }

    /// The sort keys that can change the order: `order_by` without the keys on a field an
    /// earlier key already sorts by (records tied on a field are tied on it again). More than
    /// [`ORDER_BY_KEYS_MAX`] keys are refused.
    fn sort_keys(&self) -> Result<Vec<&OrderBy>> {
        if self.order_by.len() > ORDER_BY_KEYS_MAX {
            return Err(Error::InvalidArgument(format!(
                "order_by has {} keys, the limit is {ORDER_BY_KEYS_MAX}: sort by fewer fields",
                self.order_by.len()
            )));
        }
        let mut keys: Vec<&OrderBy> = Vec::with_capacity(self.order_by.len());
        for o in &self.order_by {
            if !keys.iter().any(|k| k.field == o.field) {
                keys.push(o);
            }
        }
        Ok(keys)
    }
}

/// A record with the values it sorts by, read once: a sort compares each record many times,
/// and reading (and cloning) the fields at every comparison multiplied its cost.
struct SortedRecord {
    /// The record's value of each sort key, most significant first; a missing field is null.
    key: Vec<SortValue>,
    record: Record,
}

impl SortedRecord {
    fn new(record: Record, keys: &[&OrderBy]) -> SortedRecord {
        let key = keys
            .iter()
            .map(|o| SortValue {
                value: record.field(&o.field).unwrap_or(Value::Null),
                desc: o.desc,
            })
            .collect();
        SortedRecord { key, record }
    }
}

impl Ord for SortedRecord {
    /// The query's order: by the sort keys, ties by id (so the order is total and a page
    /// boundary falls in the same place every time).
    fn cmp(&self, other: &SortedRecord) -> Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.record.id.cmp(&other.record.id))
    }
}

impl PartialOrd for SortedRecord {
    fn partial_cmp(&self, other: &SortedRecord) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortedRecord {
    fn eq(&self, other: &SortedRecord) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortedRecord {}

/// One sort key's value in a record. Null (a missing field) sorts first in ascending order,
/// like SQL's NULLS FIRST, and last in descending order.
#[derive(PartialEq, Eq)]
struct SortValue {
    value: Value,
    desc: bool,
}

impl Ord for SortValue {
    /// Two records' values of the same key compare; `desc` is the same on both sides.
    fn cmp(&self, other: &SortValue) -> Ordering {
        let ascending = self.value.cmp(&other.value);
        if self.desc {
            ascending.reverse()
        } else {
            ascending
        }
    }
}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &SortValue) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a query read, to tell its cost: [`Database::query_with_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryStats {
    /// Records read from the file and decoded, matching or not (an index scan reads only its
    /// candidates).
    pub records_decoded: u64,
}

/// The matches a query keeps while it scans (in id order), so that a limit bounds what it
/// holds in memory, and without sort keys what it reads.
enum Kept<'q> {
    /// No sort keys: the scan's id order is the answer's, so the first `wanted` matches are
    /// all the query needs and the scan stops there.
    InScanOrder {
        records: Vec<Record>,
        wanted: Option<usize>,
    },
    /// Sort keys without a limit: every match, sorted at the end.
    AllSorted {
        keys: Vec<&'q OrderBy>,
        records: Vec<SortedRecord>,
    },
    /// Sort keys and a limit: the best `wanted` matches so far, in a max-heap whose top is
    /// the worst of them, replaced when a better one comes.
    BestSorted {
        keys: Vec<&'q OrderBy>,
        heap: BinaryHeap<SortedRecord>,
        wanted: usize,
    },
}

impl<'q> Kept<'q> {
    fn new(keys: Vec<&'q OrderBy>, wanted: Option<usize>) -> Kept<'q> {
        match (keys.is_empty(), wanted) {
            (true, wanted) => Kept::InScanOrder {
                records: Vec::new(),
                wanted,
            },
            (false, None) => Kept::AllSorted {
                keys,
                records: Vec::new(),
            },
            (false, Some(wanted)) => Kept::BestSorted {
                keys,
                heap: BinaryHeap::new(),
                wanted,
            },
        }
    }

    /// Whether no further match can change the answer: the scan may stop.
    fn is_full(&self) -> bool {
        match self {
            Kept::InScanOrder { records, wanted } => wanted.is_some_and(|w| records.len() >= w),
            Kept::AllSorted { .. } => false,
            Kept::BestSorted { wanted, .. } => *wanted == 0,
        }
    }

    /// A match the scan found.
    fn offer(&mut self, record: Record) {
        match self {
            Kept::InScanOrder { records, .. } => records.push(record),
            Kept::AllSorted { keys, records } => records.push(SortedRecord::new(record, keys)),
            Kept::BestSorted { keys, heap, wanted } => {
                let candidate = SortedRecord::new(record, keys);
                if heap.len() < *wanted {
                    heap.push(candidate);
                } else if let Some(mut worst) = heap.peek_mut() {
                    if candidate < *worst {
                        *worst = candidate;
                    }
                }
            }
        }
    }

    /// The kept records in the query's order (sorting here, with the database unlocked).
    fn into_ordered(self) -> Vec<Record> {
        match self {
            Kept::InScanOrder { records, .. } => records,
            Kept::AllSorted { mut records, .. } => {
                records.sort_unstable();
                records.into_iter().map(|s| s.record).collect()
            }
            Kept::BestSorted { heap, .. } => heap
                .into_sorted_vec()
                .into_iter()
                .map(|s| s.record)
                .collect(),
        }
    }
}

/// Reads of a collection that does not exist (yet) answer nothing; a name no collection can
/// have (empty, too long, with control characters) is refused with the error a write to it
/// gets, [`WriteError::InvalidName`](crate::WriteError::InvalidName): [`Database::get`],
/// [`Database::scan`], [`Database::for_each`], [`Database::query`], [`Database::count`],
/// [`Database::history`], [`Database::get_at`], as [`Database::watch`] does.
impl Database {
    /// A record by id, or `None` if there is none (or it was deleted).
    pub fn get(&self, collection: &str, id: RecordId) -> Result<Option<Record>> {
        let inner = self.lock()?;
        inner.get(collection, id)
    }

    /// Every cell of a record, tombstones included (`None`: no such record here). Selective
    /// sync sends this when a record moves into a peer's view.
    pub fn record_state(
        &self,
        collection: &str,
        id: RecordId,
    ) -> Result<Option<crate::crdt::RecordState>> {
        let inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(None);
        };
        let row: Option<(u64, Vec<u8>)> = inner
            .conn
            .prepare_cached("SELECT seq, body FROM records WHERE coll = ?1 AND id = ?2")?
            .query_row(params![coll, &id.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(None),
            Some((seq, bytes)) => Ok(Some(body::decode(
                &bytes,
                Seq(seq),
                &inner.nodes,
                &inner.fields,
            )?)),
        }
    }

    /// Every live record of a collection, in id order, to `f`. Return `false` from `f` to stop.
    ///
    /// The records are read a page at a time (see [`FOR_EACH_PAGE_RECORDS`]), and `f` runs
    /// with the database unlocked, so it may read and write the database (holding the lock
    /// through `f` made any such call wait for itself forever). Each page is one consistent
    /// read, the walk as a whole is not: a change committed meanwhile shows if it lands ahead
    /// of the walk. [`Database::scan`] reads the whole collection in one snapshot.
    pub fn for_each(&self, collection: &str, mut f: impl FnMut(Record) -> bool) -> Result<()> {
        let page_limit = PageLimit {
            records: FOR_EACH_PAGE_RECORDS,
            bytes: FOR_EACH_PAGE_BYTES,
        };
        let mut after: Vec<u8> = Vec::new();
        loop {
            let page = {
                let inner = self.lock()?;
                let Some(coll) = inner.read_collection_id(collection)? else {
                    return Ok(());
                };
                inner.live_records(collection, coll, &after, Some(page_limit))?
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id.0.to_vec();
            for rec in page {
                if !f(rec) {
                    return Ok(());
                }
            }
        }
    }

    /// Every live record of a collection, in id order, read in one snapshot.
    pub fn scan(&self, collection: &str) -> Result<Vec<Record>> {
        let inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(Vec::new());
        };
        inner.live_records(collection, coll, &[], None)
    }

    /// Run a query.
    ///
    /// The matching records are read under the database's lock, in one snapshot; they are
    /// sorted after it is released, so a long sort does not hold up every other reader and
    /// writer of the database. With a `limit`, the scan keeps only `offset + limit` records:
    /// without sort keys it stops once it has found them, with sort keys it keeps the best so
    /// far (every match must still be read, but not held).
    pub fn query(&self, collection: &str, q: &Query) -> Result<Vec<Record>> {
        Ok(self.query_with_stats(collection, q)?.0)
    }

    /// [`Database::query`], and what it read.
    pub fn query_with_stats(
        &self,
        collection: &str,
        q: &Query,
    ) -> Result<(Vec<Record>, QueryStats)> {
        let sort_keys = q.sort_keys()?;
        // The records skipped and the records answered.
        let wanted = q.limit.map(|n| q.offset.saturating_add(n));
        let mut kept = Kept::new(sort_keys, wanted);
        let stats = {
            let inner = self.lock()?;
            inner.scan_matches(collection, q, &mut kept)?
        };
        let out = kept.into_ordered().into_iter().skip(q.offset);
        let out = match q.limit {
            Some(n) => out.take(n).collect(),
            None => out.collect(),
        };
        Ok((out, stats))
    }

    /// Number of live records in a collection.
    pub fn count(&self, collection: &str) -> Result<u64> {
        let inner = self.lock()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(0);
        };
        Ok(inner.conn.query_row(
            "SELECT count(*) FROM records WHERE coll = ?1 AND live = 1",
            [coll],
            |r| r.get(0),
        )?)
    }

    /// Names of the collections, sorted.
    pub fn collections(&self) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut v: Vec<String> = inner.collections.keys().cloned().collect();
        v.sort();
        Ok(v)
    }
}

impl Inner {
    /// Offer the live records of a collection that match `q.filter` to `kept`, in id order,
    /// until it is full (through an index when the planner finds one).
    fn scan_matches(&self, collection: &str, q: &Query, kept: &mut Kept<'_>) -> Result<QueryStats> {
        let mut stats = QueryStats::default();
        let Some(coll) = self.read_collection_id(collection)? else {
            return Ok(stats);
        };
        let plan = match (&q.filter, q.no_index) {
            (Some(f), false) => {
                let indexed = self.indexes.get(&coll);
                f.plan(
                    &|name: &str| indexed.is_some_and(|s| s.contains(name)),
                    &q.params,
                )
            }
            _ => None,
        };
        let keep = |r: &Record| {
            q.filter
                .as_ref()
                .is_none_or(|f| f.matches(&r.id.0, &r.fields, &q.params))
        };
        match plan {
            Some(scan) => {
                // Candidates from the index (a superset), then the full filter.
                let mut ids: Vec<RecordId> = Vec::new();
                for range in &scan.ranges {
                    let (lo, hi) = keys::key_range_bounds(range);
                    let (lo_sql, lo_v) = match &lo {
                        Bound::Included(b) => ("AND key >= ?3", Some(b.clone())),
                        Bound::Excluded(b) => ("AND key > ?3", Some(b.clone())),
                        Bound::Unbounded => ("AND ?3 IS NULL", None),
                    };
                    let (hi_sql, hi_v) = match &hi {
                        Bound::Included(b) => ("AND key <= ?4", Some(b.clone())),
                        Bound::Excluded(b) => ("AND key < ?4", Some(b.clone())),
                        Bound::Unbounded => ("AND ?4 IS NULL", None),
                    };
                    let sql = format!(
                        "SELECT id FROM index_entries WHERE coll = ?1 AND field = ?2 {lo_sql} {hi_sql}"
                    );
                    let mut stmt = self.conn.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params![coll, scan.field, lo_v, hi_v], |r| {
                        r.get::<_, Vec<u8>>(0)
                    })?;
                    for id in rows {
                        let id: [u8; 16] = id?.try_into().map_err(|_| {
                            crate::codec::DecodeError::Malformed(
                                "index entry id is not 16 bytes".into(),
                            )
                        })?;
                        ids.push(RecordId(id));
                    }
                }
                ids.sort();
                ids.dedup();
                for id in ids {
                    if kept.is_full() {
                        break;
                    }
                    if let Some(r) = self.get(collection, id)? {
                        stats.records_decoded += 1;
                        if keep(&r) {
                            kept.offer(r);
                        }
                    }
                }
            }
            None => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, rev, seq, body FROM records WHERE coll = ?1 AND live = 1 ORDER BY id",
                )?;
                let mut rows = stmt.query([coll])?;
                while !kept.is_full() {
                    let Some(row) = rows.next()? else { break };
                    let r = self.decode_row(collection, row)?;
                    stats.records_decoded += 1;
                    if keep(&r) {
                        kept.offer(r);
                    }
                }
            }
        }
        Ok(stats)
    }

    /// The live records of a collection with ids above `after` (an empty `after`: from the
    /// first), in id order; with a `limit`, a page of them (at least one record, if any).
    fn live_records(
        &self,
        collection: &str,
        coll: i64,
        after: &[u8],
        limit: Option<PageLimit>,
    ) -> Result<Vec<Record>> {
        // An empty blob sorts before every id; a negative LIMIT is none.
        let records = limit.map_or(-1, |l| l.records as i64);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, rev, seq, body FROM records WHERE coll = ?1 AND live = 1 AND id > ?2
             ORDER BY id LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![coll, after, records])?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            bytes += row.get_ref(3)?.as_blob().map_or(0, <[u8]>::len);
            out.push(self.decode_row(collection, row)?);
            if limit.is_some_and(|l| bytes >= l.bytes) {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) fn get(&self, collection: &str, id: RecordId) -> Result<Option<Record>> {
        let Some(coll) = self.read_collection_id(collection)? else {
            return Ok(None);
        };
        let row: Option<(u64, u64, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT rev, seq, body FROM records WHERE coll = ?1 AND id = ?2 AND live = 1",
            )?
            .query_row(params![coll, &id.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((rev, seq, bytes)) = row else {
            return Ok(None);
        };
        let state = body::decode(&bytes, Seq(seq), &self.nodes, &self.fields)?;
        Ok(Some(Record {
            collection: collection.to_owned(),
            id,
            rev,
            fields: state.into_fields(),
        }))
    }

    fn decode_row(&self, collection: &str, row: &rusqlite::Row<'_>) -> Result<Record> {
        let id: Vec<u8> = row.get(0)?;
        let id: [u8; 16] = id.try_into().map_err(|_| {
            crate::codec::DecodeError::Malformed("record id is not 16 bytes".into())
        })?;
        let rev: u64 = row.get(1)?;
        let seq: u64 = row.get(2)?;
        let bytes: Vec<u8> = row.get(3)?;
        let state = body::decode(&bytes, Seq(seq), &self.nodes, &self.fields)?;
        Ok(Record {
            collection: collection.to_owned(),
            id: RecordId(id),
            rev,
            fields: state.into_fields(),
        })
    }
}
