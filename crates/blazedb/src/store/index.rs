//! Secondary indexes on top-level fields. An entry is `(coll, field, key, id)` where `key` is
//! the field's value in the order-preserving encoding of `codec::keys`, so a range of values
//! is a range of keys. Records without the field have no entry.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection};

use super::write::validate_field_name;
use super::{body, Database};
use crate::codec::keys::encode_key;
use crate::error::Result;
use crate::types::Seq;
use crate::{RecordId, Value};

impl Database {
    /// Declare an index on a top-level field and build it. Idempotent.
    pub fn create_index(&self, collection: &str, field: &str) -> Result<()> {
        validate_field_name(field)?;
        super::validate_collection_name(collection)?;
        // Builds the index over the whole collection: as long as the collection is large.
        let mut inner = self.lock_write_unbounded()?;
        let r = (|| -> Result<()> {
            let coll = inner.collection_id_or_create(collection)?;
            let added = inner.conn.execute(
                "INSERT OR IGNORE INTO indexes (coll, field) VALUES (?1, ?2)",
                params![coll, field],
            )?;
            if added == 1 {
                let mut entries = Vec::new();
                {
                    let mut stmt = inner.conn.prepare(
                        "SELECT id, seq, body FROM records WHERE coll = ?1 AND live = 1",
                    )?;
                    let mut rows = stmt.query([coll])?;
                    while let Some(row) = rows.next()? {
                        let id: Vec<u8> = row.get(0)?;
                        let seq: u64 = row.get(1)?;
                        let bytes: Vec<u8> = row.get(2)?;
                        let state = body::decode(&bytes, Seq(seq), &inner.nodes, &inner.fields)?;
                        if let Some(v) = state.fields().get(field) {
                            entries.push((encode_key(v), id));
                        }
                    }
                }
                let mut ins = inner.conn.prepare_cached(
                    "INSERT OR IGNORE INTO index_entries (coll, field, key, id) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (k, id) in entries {
                    ins.execute(params![coll, field, k, id])?;
                }
            }
            inner.commit()?;
            inner
                .indexes
                .entry(coll)
                .or_default()
                .insert(field.to_owned());
            Ok(())
        })();
        if r.is_err() {
            inner.rollback();
        }
        r
    }

    /// Remove an index. Returns false if there was none.
    pub fn drop_index(&self, collection: &str, field: &str) -> Result<bool> {
        let mut inner = self.lock_write()?;
        let Some(coll) = inner.read_collection_id(collection)? else {
            return Ok(false);
        };
        let n = inner.conn.execute(
            "DELETE FROM indexes WHERE coll = ?1 AND field = ?2",
            params![coll, field],
        )?;
        inner.conn.execute(
            "DELETE FROM index_entries WHERE coll = ?1 AND field = ?2",
            params![coll, field],
        )?;
        inner.commit()?;
        if let Some(s) = inner.indexes.get_mut(&coll) {
            s.remove(field);
        }
        Ok(n == 1)
    }

    /// The indexed fields of a collection.
    pub fn indexes(&self, collection: &str) -> Result<Vec<String>> {
        let inner = self.lock()?;
        Ok(inner
            .read_collection_id(collection)?
            .and_then(|c| inner.indexes.get(&c))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }
}

/// Bring a record's index entries from `before` to `after` (the visible fields).
pub(crate) fn update_entries(
    conn: &Connection,
    coll: i64,
    id: RecordId,
    indexed: &BTreeSet<String>,
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
) -> rusqlite::Result<()> {
    for field in indexed {
        let (old, new) = (before.get(field), after.get(field));
        // Equal values (including Int 3 and Float 3.0) have equal keys: nothing to do.
        if old == new {
            continue;
        }
        if let Some(o) = old {
            conn.prepare_cached(
                "DELETE FROM index_entries WHERE coll = ?1 AND field = ?2 AND key = ?3 AND id = ?4",
            )?
            .execute(params![coll, field, encode_key(o), &id.0[..]])?;
        }
        if let Some(n) = new {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO index_entries (coll, field, key, id) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![coll, field, encode_key(n), &id.0[..]])?;
        }
    }
    Ok(())
}
