//! Units of linked transactions received from a peer, staged on disk while they arrive.
//!
//! A sender delivers transactions that depend on one another (see `feed_links` in
//! `schema.rs`) as one unit, possibly over many frames, and the receiver applies the unit in
//! one SQLite transaction when its last frame arrives, so no part of a transaction is ever
//! visible alone. Units have no size limit: a chain of transactions that each overwrite part
//! of the one before (every transaction touching one hot record, say) can link a long stretch
//! of the feed. The receiving session therefore keeps only the unit's latest part in memory
//! and stages the rest here, cut at transaction boundaries:
//!
//! ```text
//! CHANGES (partial) ... ──► unit_stage(peer, 0, part) ──► unit_stage(peer, 1, part) ...
//! CHANGES (last)        ──► apply_unit(peer, parts, tail) (feed.rs): one transaction that applies
//!                           every staged part, then the tail, writing records out as it
//!                           goes (`Tx::spill`), and deletes the staged rows
//! ```
//!
//! A unit cut off by a disconnect is never applied; its rows are discarded when the next unit
//! starts (the sender sends the whole unit again after reconnect, from the acknowledged
//! cursor) or when the peer is forgotten.

use rusqlite::{params, OptionalExtension};

use super::feed::{validate_cell, Change};
use super::{validate_collection_name, Database};
use crate::error::{ApplyError, Error, Result};
use crate::limits::TRANSACTION_CELLS_MAX;
use crate::sync::message::Dict;
use crate::types::Seq;
use crate::NodeId;

impl Database {
    /// Stage part `idx` of the unit `peer` is sending (parts count from 0; part 0 discards
    /// whatever an earlier, unfinished unit left). The part must end at a transaction
    /// boundary. Its changes are checked now (names, cells, clocks), so that a bad one is
    /// refused when it arrives rather than when the unit completes.
    pub fn unit_stage(&self, peer: NodeId, idx: u32, changes: &[Change]) -> Result<()> {
        let now = self.now_ms();
        // The checks need no read of the file; `begin_write` checks it for the write.
        let mut inner = self.lock_bare();
        for ch in changes {
            validate_collection_name(&ch.collection)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            for c in &ch.cells {
                validate_cell(c).map_err(ApplyError::Invalid)?;
                inner
                    .clock
                    .check(c.version.hlc, now)
                    .map_err(ApplyError::from)?;
            }
        }
        let end = changes.last().map_or(Seq(0), |c| c.seq);
        let data = Dict::default().encode_changes(changes, end);
        inner.begin_write()?;
        let res = (|| {
            if idx == 0 {
                discard_in(&inner.conn, peer)?;
            }
            inner
                .conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO unit_staging (peer, idx, data) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![&peer.0[..], idx, data])?;
            Ok::<_, Error>(())
        })();
        match res {
            Ok(()) => inner.commit()?,
            Err(e) => {
                inner.rollback();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drop the staged parts of `peer`'s unfinished unit.
    pub fn unit_discard(&self, peer: NodeId) -> Result<()> {
        let mut inner = self.lock_write()?;
        discard_in(&inner.conn, peer)?;
        Ok(inner.commit()?)
    }
}

/// Read staged part `idx` of `peer`'s unit.
pub(super) fn staged_part(tx: &super::Tx<'_>, peer: NodeId, idx: u32) -> Result<Vec<Change>> {
    let data: Vec<u8> = tx
        .inner
        .conn
        .prepare_cached("SELECT data FROM unit_staging WHERE peer = ?1 AND idx = ?2")?
        .query_row(params![&peer.0[..], idx], |r| r.get(0))
        .optional()?
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "part {idx} of the unit from {peer} is not staged: the unit must be sent again"
            ))
        })?;
    // Written by `unit_stage` from changes already checked; the budget only guards against
    // a damaged row (a part holds what the session stages at once, far below this).
    let (changes, _) = Dict::default()
        .decode_changes(&data, 4 * TRANSACTION_CELLS_MAX)
        .map_err(|e| ApplyError::Invalid(format!("staged part {idx} of a unit: {e}")))?;
    Ok(changes)
}

/// Delete the staged parts of `peer`'s unit (inside the caller's transaction, if any).
pub(super) fn discard_in(conn: &rusqlite::Connection, peer: NodeId) -> Result<()> {
    conn.prepare_cached("DELETE FROM unit_staging WHERE peer = ?1")?
        .execute([&peer.0[..]])?;
    Ok(())
}
