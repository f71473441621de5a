//! The node dictionary: every node id this database has seen, numbered locally so that a
//! record's versions cost one varint each instead of 16 bytes.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use crate::NodeId;

/// In-memory copy of the `nodes` table. New ids are numbered on first use and written out by
/// [`NodeTable::flush`] inside the same transaction as the records that use them.
#[derive(Debug, Default)]
pub struct NodeTable {
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u64>,
    unsaved_from: usize,
}

impl NodeTable {
    /// Load the table.
    pub fn load(conn: &Connection) -> rusqlite::Result<NodeTable> {
        let mut t = NodeTable::default();
        let mut stmt = conn.prepare("SELECT idx, id FROM nodes ORDER BY idx")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        for row in rows {
            let (idx, id) = row?;
            let id: [u8; 16] = id.try_into().map_err(|_| {
                rusqlite::Error::InvalidColumnType(
                    1,
                    "nodes.id".into(),
                    rusqlite::types::Type::Blob,
                )
            })?;
            if idx as usize != t.ids.len() {
                return Err(rusqlite::Error::InvalidColumnType(
                    0,
                    "nodes.idx is not dense".into(),
                    rusqlite::types::Type::Integer,
                ));
            }
            t.index.insert(NodeId(id), idx as u64);
            t.ids.push(NodeId(id));
        }
        t.unsaved_from = t.ids.len();
        Ok(t)
    }

    /// The local number of a node id, assigning one if new.
    pub fn index(&mut self, id: NodeId) -> u64 {
        if let Some(i) = self.index.get(&id) {
            return *i;
        }
        let i = self.ids.len() as u64;
        self.ids.push(id);
        self.index.insert(id, i);
        i
    }

    /// The local number of a known node id.
    pub fn known(&self, id: NodeId) -> Option<u64> {
        self.index.get(&id).copied()
    }

    /// The node id of a local number.
    pub fn id(&self, index: u64) -> Option<NodeId> {
        self.ids.get(usize::try_from(index).ok()?).copied()
    }

    /// Write new entries (call inside the transaction that used them).
    pub fn flush(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for (i, id) in self.ids.iter().enumerate().skip(self.unsaved_from) {
            conn.execute(
                "INSERT INTO nodes (idx, id) VALUES (?1, ?2)",
                params![i as i64, &id.0[..]],
            )?;
        }
        self.unsaved_from = self.ids.len();
        Ok(())
    }

    /// Forget entries not yet written (after a rollback).
    pub fn rollback(&mut self) {
        for id in self.ids.drain(self.unsaved_from..) {
            self.index.remove(&id);
        }
    }
}
