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
//! CHANGES (partial) ... ──► unit_stage(peer, staging, 0, part) ──► unit_stage(peer, staging, 1, part) ...
//! CHANGES (last)        ──► apply_unit(peer, staged, tail) (feed.rs): one transaction that applies
//!                           every staged part, then the tail, writing records out as it
//!                           goes (`Tx::spill`), and deletes the staged rows
//! ```
//!
//! Parts belong to the receiving session that staged them ([`StagingId`]): two sessions with
//! the same peer (two processes on one file, a relay with two connections from one node)
//! each stage and apply their own, and an apply checks that it finds exactly its parts.
//!
//! A unit cut off by a disconnect is never applied; its rows are discarded when the session
//! ends (`Session::transport_closed`), or, should the process die first, when any session
//! starts a unit after
//! [`UNIT_STAGING_ABANDONED_MS`] (the session that staged them is gone: the sender sends the
//! whole unit again after reconnect, from the acknowledged cursor), or when the peer is
//! forgotten.

use rusqlite::{params, OptionalExtension};

use super::feed::{validate_cell, Change};
use super::{validate_collection_name, Database};
use crate::error::{ApplyError, Error, Result};
use crate::limits::TRANSACTION_CELLS_MAX;
use crate::sync::message::Dict;
use crate::types::Seq;
use crate::NodeId;

/// Staged parts older than this are taken for abandoned (their session ended without
/// finishing the unit) and discarded when any session starts a unit. A live session whose
/// unit takes longer finds a part missing when it applies and fails; the unit is sent again.
pub const UNIT_STAGING_ABANDONED_MS: u64 = 24 * 3600 * 1000;

/// The receiving session that staged a unit's parts: random per session, so two sessions
/// with the same peer never read or replace each other's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StagingId(i64);

impl StagingId {
    /// A fresh id, for a new session.
    pub fn random() -> StagingId {
        StagingId(uuid::Uuid::new_v4().as_u64_pair().0 as i64)
    }
}

/// The parts a unit's apply reads from staging: `count` parts, `0..count`, staged by
/// `staging`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedParts {
    /// The session that staged them.
    pub staging: StagingId,
    /// How many it staged.
    pub count: u32,
}

impl StagedParts {
    /// No staged parts: the unit is all in the tail.
    pub const NONE: StagedParts = StagedParts {
        staging: StagingId(0),
        count: 0,
    };
}

impl Database {
    /// Stage part `idx` of the unit `peer` is sending to the session `staging` (parts count
    /// from 0; part 0 discards whatever an earlier, unfinished unit of this session left, and
    /// abandoned parts of any session). The part must end at a transaction boundary. Its
    /// changes are checked now (names, cells, clocks), so that a bad one is refused when it
    /// arrives rather than when the unit completes.
    pub fn unit_stage(
        &self,
        peer: NodeId,
        staging: StagingId,
        idx: u32,
        changes: &[Change],
    ) -> Result<()> {
        let now = self.now_ms();
        // The checks need no read of the file; `begin_write` checks it for the write.
        let mut inner = self.lock_bare()?;
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
                discard_session_in(&inner.conn, peer, staging)?;
                let abandoned_before = now.saturating_sub(UNIT_STAGING_ABANDONED_MS);
                inner
                    .conn
                    .prepare_cached("DELETE FROM unit_staging WHERE staged_ms < ?1")?
                    .execute([abandoned_before as i64])?;
            }
            inner
                .conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO unit_staging (peer, session, idx, staged_ms, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![&peer.0[..], staging.0, idx, now as i64, data])?;
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

    /// Drop the staged parts of the unit `peer` was sending to the session `staging`, which
    /// ended before the unit did (the sender sends it again whole).
    pub fn unit_discard_session(&self, peer: NodeId, staging: StagingId) -> Result<()> {
        let mut inner = self.lock_write()?;
        discard_session_in(&inner.conn, peer, staging)?;
        inner.commit()
    }

    /// Drop the staged parts of `peer`'s unfinished units (of every session).
    pub fn unit_discard(&self, peer: NodeId) -> Result<()> {
        let mut inner = self.lock_write()?;
        discard_in(&inner.conn, peer)?;
        inner.commit()
    }
}

/// Check that exactly the parts `0..staged.count` of `peer`'s unit are staged by its session.
/// A missing part (discarded as abandoned, say) or an extra one means this is not the unit
/// the session staged: applying it would store the cursor past transactions never applied.
pub(super) fn check_staged(tx: &super::Tx<'_>, peer: NodeId, staged: StagedParts) -> Result<()> {
    let (rows, max_idx): (u32, Option<u32>) = tx
        .inner
        .conn
        .prepare_cached(
            "SELECT count(*), max(idx) FROM unit_staging WHERE peer = ?1 AND session = ?2",
        )?
        .query_row(params![&peer.0[..], staged.staging.0], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if rows != staged.count || max_idx.map_or(0, |m| m + 1) != staged.count {
        return Err(Error::InvalidArgument(format!(
            "the unit from {peer} has {rows} staged parts, not the {} its session staged: \
             the unit must be sent again",
            staged.count
        )));
    }
    Ok(())
}

/// Read staged part `idx` of `peer`'s unit, staged by the session `staging`.
pub(super) fn staged_part(
    tx: &super::Tx<'_>,
    peer: NodeId,
    staging: StagingId,
    idx: u32,
) -> Result<Vec<Change>> {
    let data: Vec<u8> = tx
        .inner
        .conn
        .prepare_cached(
            "SELECT data FROM unit_staging WHERE peer = ?1 AND session = ?2 AND idx = ?3",
        )?
        .query_row(params![&peer.0[..], staging.0, idx], |r| r.get(0))
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

/// Delete the staged parts of `peer`'s units (inside the caller's transaction, if any).
pub(super) fn discard_in(conn: &rusqlite::Connection, peer: NodeId) -> Result<()> {
    conn.prepare_cached("DELETE FROM unit_staging WHERE peer = ?1")?
        .execute([&peer.0[..]])?;
    Ok(())
}

/// Delete the parts of `peer`'s unit staged by the session `staging`.
pub(super) fn discard_session_in(
    conn: &rusqlite::Connection,
    peer: NodeId,
    staging: StagingId,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM unit_staging WHERE peer = ?1 AND session = ?2")?
        .execute(params![&peer.0[..], staging.0])?;
    Ok(())
}
