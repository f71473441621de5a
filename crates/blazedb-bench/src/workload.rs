//! The records every store scenario writes: bug reports of five fields, generated
//! deterministically from a seed, so BlazeDB and the floor store exactly the same values.
//!
//! | field      | type      | content                                     |
//! |------------|-----------|---------------------------------------------|
//! | `title`    | text      | 40 bytes of words                           |
//! | `status`   | text      | `open` or `closed`                          |
//! | `priority` | int       | 1..=10                                      |
//! | `assignee` | text      | `engineer0042`: 12 bytes, one of a pool     |
//! | `created`  | timestamp | µs, within a year after 2024-01-01          |
//!
//! The assignee pool has one name per [`MATCHES_PER_ASSIGNEE`] records, so an equality query
//! on `assignee` matches about that many records whatever the collection size.

use blazedb::{Timestamp, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Records per assignee name: the size of an equality query's answer.
pub const MATCHES_PER_ASSIGNEE: usize = 100;
/// Length of every title, in bytes.
pub const TITLE_BYTES: usize = 40;
/// 2024-01-01T00:00:00Z in µs.
const CREATED_US_MIN: i64 = 1_704_067_200_000_000;
/// A year in µs.
const YEAR_US: i64 = 365 * 24 * 3600 * 1_000_000;

const WORDS: &[&str] = &[
    "crash",
    "when",
    "saving",
    "large",
    "attachment",
    "offline",
    "sync",
    "stalls",
    "after",
    "resume",
    "login",
    "fails",
    "on",
    "slow",
    "network",
    "button",
    "misaligned",
    "in",
    "dark",
    "mode",
    "export",
    "loses",
    "unicode",
    "search",
    "ignores",
    "filter",
    "memory",
    "leak",
    "settings",
    "page",
    "timeout",
    "upload",
    "retry",
    "storm",
    "cursor",
    "jumps",
    "editor",
];

/// One generated record.
#[derive(Clone, Debug, PartialEq)]
pub struct Bug {
    /// 40 bytes of words.
    pub title: String,
    /// `open` or `closed`.
    pub status: &'static str,
    /// 1..=10.
    pub priority: i64,
    /// One name of the pool.
    pub assignee: String,
    /// Creation time, µs since the epoch.
    pub created_us: i64,
}

impl Bug {
    /// The record as BlazeDB fields.
    pub fn fields(&self) -> [(&'static str, Value); 5] {
        [
            ("title", Value::from(self.title.as_str())),
            ("status", Value::from(self.status)),
            ("priority", Value::Int(self.priority)),
            ("assignee", Value::from(self.assignee.as_str())),
            ("created", Value::Timestamp(Timestamp(self.created_us))),
        ]
    }

    /// Bytes of the values alone, as a hand-written table stores them: text bytes, 8 per
    /// int and timestamp (the floor's logical payload, without the 16-byte id).
    pub fn value_bytes(&self) -> usize {
        self.title.len() + self.status.len() + 8 + self.assignee.len() + 8
    }
}

/// The assignee name number `i` of the pool.
pub fn assignee(i: usize) -> String {
    format!("engineer{:04}", i % 10_000)
}

/// How many assignee names a collection of `records` uses.
pub fn assignee_pool(records: usize) -> usize {
    (records / MATCHES_PER_ASSIGNEE).clamp(1, 10_000)
}

/// A deterministic stream of records.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    pool: usize,
}

impl Generator {
    /// Records for a collection of about `records` records, from `seed`.
    pub fn new(seed: u64, records: usize) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            pool: assignee_pool(records),
        }
    }

    /// The next record.
    pub fn bug(&mut self) -> Bug {
        let mut title = String::with_capacity(TITLE_BYTES + 12);
        while title.len() < TITLE_BYTES {
            if !title.is_empty() {
                title.push(' ');
            }
            title.push_str(WORDS[self.rng.gen_range(0..WORDS.len())]);
        }
        title.truncate(TITLE_BYTES);
        Bug {
            title,
            status: if self.rng.gen_bool(0.5) {
                "open"
            } else {
                "closed"
            },
            priority: self.rng.gen_range(1..=10),
            assignee: assignee(self.rng.gen_range(0..self.pool)),
            created_us: CREATED_US_MIN + self.rng.gen_range(0..YEAR_US),
        }
    }

    /// The next `n` records.
    pub fn bugs(&mut self, n: usize) -> Vec<Bug> {
        (0..n).map(|_| self.bug()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let a = Generator::new(7, 1000).bugs(50);
        let b = Generator::new(7, 1000).bugs(50);
        assert_eq!(a, b);
        assert_ne!(a, Generator::new(8, 1000).bugs(50));
    }

    #[test]
    fn records_have_the_documented_shape() {
        for bug in Generator::new(1, 100_000).bugs(1000) {
            assert_eq!(bug.title.len(), TITLE_BYTES);
            assert!(bug.status == "open" || bug.status == "closed");
            assert!((1..=10).contains(&bug.priority));
            assert_eq!(bug.assignee.len(), 12);
            assert!(bug.assignee < assignee(assignee_pool(100_000)));
        }
    }
}
