//! The end-of-soak check: once the churn stops, every client and the relay must hold the same
//! live records — the same ids with the same field values — within [`CONVERGE_WAIT`].

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use blazedb::{Database, RecordId, Value};
use serde_json::{json, Value as Json};

use super::limits::{CONVERGE_POLL, CONVERGE_WAIT};
use super::COLLECTION;

/// A node's live records: id → fields.
pub type Snapshot = BTreeMap<RecordId, BTreeMap<String, Value>>;

/// Where the nodes disagree, compared with the first node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Ids live on the first node but not on another, or the reverse (summed over nodes).
    pub missing_or_extra: usize,
    /// Ids live on both whose fields differ (summed over nodes).
    pub different_values: usize,
    /// A few of the above, for the report.
    pub examples: Vec<String>,
}

impl Diff {
    /// True when every node matched the first.
    pub fn is_empty(&self) -> bool {
        self.missing_or_extra == 0 && self.different_values == 0
    }
}

/// What the check found.
#[derive(Debug, Clone)]
pub struct Convergence {
    /// Whether all nodes matched before the deadline.
    pub converged: bool,
    /// Seconds from the end of the churn until they matched (or the deadline).
    pub seconds: f64,
    /// Live records on the first node at the last comparison.
    pub live_records: usize,
    /// The last comparison's differences (empty when converged).
    pub diff: Diff,
}

impl Convergence {
    /// As JSON.
    pub fn to_json(&self) -> Json {
        json!({
            "converged": self.converged,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "live_records": self.live_records,
            "missing_or_extra": self.diff.missing_or_extra,
            "different_values": self.diff.different_values,
            "examples": self.diff.examples,
        })
    }
}

/// Read one node's live records.
pub fn snapshot(db: &Database) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    db.for_each(COLLECTION, |r| {
        out.insert(r.id, r.fields);
        true
    })?;
    Ok(out)
}

/// Compare every snapshot with the first.
pub fn compare(nodes: &[(&str, Snapshot)]) -> Diff {
    let mut diff = Diff::default();
    let Some((first_name, first)) = nodes.first() else {
        return diff;
    };
    for (name, other) in &nodes[1..] {
        for (id, fields) in first {
            match other.get(id) {
                None => {
                    diff.missing_or_extra += 1;
                    note(
                        &mut diff,
                        format!("{id} live on {first_name}, not on {name}"),
                    );
                }
                Some(f) if f != fields => {
                    diff.different_values += 1;
                    note(
                        &mut diff,
                        format!("{id} differs on {first_name} and {name}"),
                    );
                }
                Some(_) => {}
            }
        }
        for id in other.keys().filter(|id| !first.contains_key(id)) {
            diff.missing_or_extra += 1;
            note(
                &mut diff,
                format!("{id} live on {name}, not on {first_name}"),
            );
        }
    }
    diff
}

fn note(diff: &mut Diff, example: String) {
    const EXAMPLES_MAX: usize = 5;
    if diff.examples.len() < EXAMPLES_MAX {
        diff.examples.push(example);
    }
}

/// Compare the nodes every [`CONVERGE_POLL`] until they match or [`CONVERGE_WAIT`] passes.
pub fn wait(nodes: &[(&str, &Database)]) -> Result<Convergence> {
    let start = Instant::now();
    loop {
        let snaps = nodes
            .iter()
            .map(|(name, db)| Ok((*name, snapshot(db)?)))
            .collect::<Result<Vec<_>>>()?;
        let diff = compare(&snaps);
        let live_records = snaps.first().map_or(0, |s| s.1.len());
        let done = diff.is_empty();
        if done || start.elapsed() >= CONVERGE_WAIT {
            return Ok(Convergence {
                converged: done,
                seconds: start.elapsed().as_secs_f64(),
                live_records,
                diff,
            });
        }
        std::thread::sleep(CONVERGE_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(u8, i64)]) -> Snapshot {
        entries
            .iter()
            .map(|&(id, v)| {
                (
                    RecordId([id; 16]),
                    BTreeMap::from([("n".to_owned(), Value::Int(v))]),
                )
            })
            .collect()
    }

    #[test]
    fn equal_snapshots_have_no_diff() {
        let a = snap(&[(1, 10), (2, 20)]);
        assert!(compare(&[("a", a.clone()), ("b", a.clone()), ("c", a)]).is_empty());
    }

    #[test]
    fn missing_extra_and_different_records_are_counted() {
        let a = snap(&[(1, 10), (2, 20)]);
        let b = snap(&[(1, 11), (3, 30)]);
        let d = compare(&[("a", a), ("b", b)]);
        assert_eq!((d.missing_or_extra, d.different_values), (2, 1), "{d:?}");
        assert_eq!(d.examples.len(), 3);
    }
}
