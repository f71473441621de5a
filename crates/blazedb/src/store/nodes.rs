//! Dictionaries of the file: node ids and field names, numbered locally so that a record's
//! versions and field names cost a varint each instead of 16 bytes or a repeated string.

use std::hash::Hash;

use rusqlite::types::{FromSql, ToSql};
use rusqlite::{params, Connection, OptionalExtension};

use crate::crdt::FieldName;
use crate::hash::FastMap;
use crate::NodeId;

/// What a dictionary holds, and the table it lives in.
pub trait DictKey: Clone + Eq + Hash {
    /// The table: `(idx INTEGER PRIMARY KEY, <column> UNIQUE)`.
    const TABLE: &'static str;
    /// Its value column.
    const COLUMN: &'static str;
    /// As stored.
    type Stored: ToSql + FromSql;
    /// To the stored form.
    fn to_stored(&self) -> Self::Stored;
    /// From the stored form (`None`: damaged).
    fn from_stored(s: Self::Stored) -> Option<Self>;
}

impl DictKey for NodeId {
    const TABLE: &'static str = "nodes";
    const COLUMN: &'static str = "id";
    type Stored = Vec<u8>;
    fn to_stored(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn from_stored(s: Vec<u8>) -> Option<NodeId> {
        s.try_into().ok().map(NodeId)
    }
}

impl DictKey for FieldName {
    const TABLE: &'static str = "fields";
    const COLUMN: &'static str = "name";
    type Stored = String;
    fn to_stored(&self) -> String {
        self.to_string()
    }
    fn from_stored(s: String) -> Option<FieldName> {
        Some(s.into())
    }
}

/// In-memory copy of a dictionary table. New entries are numbered on first use and written
/// out by [`Dictionary::flush`] inside the same transaction as the records that use them.
#[derive(Debug)]
pub struct Dictionary<K: DictKey> {
    entries: Vec<K>,
    index: FastMap<K, u64>,
    unsaved_from: usize,
}

impl<K: DictKey> Default for Dictionary<K> {
    fn default() -> Self {
        Dictionary {
            entries: Vec::new(),
            index: FastMap::default(),
            unsaved_from: 0,
        }
    }
}

/// The node-id dictionary.
pub type NodeTable = Dictionary<NodeId>;
/// The field-name dictionary.
pub type FieldTable = Dictionary<FieldName>;

impl<K: DictKey> Dictionary<K> {
    /// Load the table.
    pub fn load(conn: &Connection) -> rusqlite::Result<Dictionary<K>> {
        let mut t = Dictionary::default();
        let sql = format!("SELECT idx, {} FROM {} ORDER BY idx", K::COLUMN, K::TABLE);
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, K::Stored>(1)?)))?;
        for row in rows {
            let (idx, stored) = row?;
            t.push_loaded(idx, stored)?;
        }
        t.unsaved_from = t.entries.len();
        Ok(t)
    }

    /// Catch up with entries another connection added since this copy was loaded: the
    /// tables only ever grow (a number, once given, names its key for good), so only rows
    /// past the last one known are read. Entries numbered here but never written (a rolled
    /// back transaction) are dropped first. If the last known entry is no longer in the table
    /// as it was (the file was replaced), the whole table is read again.
    pub fn load_new(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.rollback();
        if let Some(last) = self.entries.last() {
            let stored: Option<K::Stored> = conn
                .prepare_cached(&format!(
                    "SELECT {} FROM {} WHERE idx = ?1",
                    K::COLUMN,
                    K::TABLE
                ))?
                .query_row([self.entries.len() as i64 - 1], |r| r.get(0))
                .optional()?;
            if stored.and_then(K::from_stored).as_ref() != Some(last) {
                *self = Dictionary::load(conn)?;
                return Ok(());
            }
        }
        let sql = format!(
            "SELECT idx, {} FROM {} WHERE idx >= ?1 ORDER BY idx",
            K::COLUMN,
            K::TABLE
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([self.entries.len() as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, K::Stored>(1)?))
        })?;
        for row in rows {
            let (idx, stored) = row?;
            self.push_loaded(idx, stored)?;
        }
        self.unsaved_from = self.entries.len();
        Ok(())
    }

    /// Append a row read from the table, which must be the next number.
    fn push_loaded(&mut self, idx: i64, stored: K::Stored) -> rusqlite::Result<()> {
        let damaged = || {
            rusqlite::Error::InvalidColumnType(
                0,
                format!("{} is damaged", K::TABLE),
                rusqlite::types::Type::Blob,
            )
        };
        let key = K::from_stored(stored).ok_or_else(damaged)?;
        if idx as usize != self.entries.len() {
            return Err(damaged());
        }
        self.index.insert(key.clone(), idx as u64);
        self.entries.push(key);
        Ok(())
    }

    /// The local number of a key, assigning one if new.
    pub fn index(&mut self, key: &K) -> u64 {
        if let Some(i) = self.index.get(key) {
            return *i;
        }
        let i = self.entries.len() as u64;
        self.entries.push(key.clone());
        self.index.insert(key.clone(), i);
        i
    }

    /// The local number of a known key.
    pub fn known(&self, key: &K) -> Option<u64> {
        self.index.get(key).copied()
    }

    /// The key of a local number.
    pub fn get(&self, index: u64) -> Option<&K> {
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// Write new entries (call inside the transaction that used them).
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let sql = format!(
            "INSERT INTO {} (idx, {}) VALUES (?1, ?2)",
            K::TABLE,
            K::COLUMN
        );
        for (i, key) in self.entries.iter().enumerate().skip(self.unsaved_from) {
            conn.prepare_cached(&sql)?
                .execute(params![i as i64, key.to_stored()])?;
        }
        self.unsaved_from = self.entries.len();
        Ok(())
    }

    /// Forget entries not yet written (after a rollback).
    pub fn rollback(&mut self) {
        for key in self.entries.drain(self.unsaved_from..) {
            self.index.remove(&key);
        }
    }
}

impl Dictionary<NodeId> {
    /// The node id of a local number.
    pub fn id(&self, index: u64) -> Option<NodeId> {
        self.get(index).copied()
    }
}
