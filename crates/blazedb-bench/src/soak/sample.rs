//! What the soak measures every few seconds, per node (the relay and each client): the
//! file's size, history rows, tombstones, feed rows, live records (from `Database::stats`
//! through a library handle on the file), and the resident memory of the process that serves
//! the file (`blazedb serve` or `blazedb sync`). Written as CSV, one row per node and sample.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use blazedb::Database;

use super::procs::rss_kb;

/// One node at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the churn started.
    pub time_s: f64,
    /// `relay`, `node0`, ...
    pub node: String,
    /// The database file plus its WAL, in bytes.
    pub file_bytes: u64,
    /// Rows in the history table.
    pub history_rows: u64,
    /// Deleted records still stored.
    pub tombstones: u64,
    /// Resident memory of the relay or sync process, KiB.
    pub rss_kb: u64,
    /// Live records.
    pub live_records: u64,
    /// Rows in the change feed.
    pub feed_rows: u64,
    /// The WAL's part of `file_bytes`.
    pub wal_bytes: u64,
}

/// The measured quantities, in CSV column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// [`Sample::file_bytes`].
    FileBytes,
    /// [`Sample::history_rows`].
    HistoryRows,
    /// [`Sample::tombstones`].
    Tombstones,
    /// [`Sample::rss_kb`].
    RssKb,
    /// [`Sample::live_records`].
    LiveRecords,
    /// [`Sample::feed_rows`].
    FeedRows,
    /// [`Sample::wal_bytes`].
    WalBytes,
    /// The database file alone: [`Sample::file_bytes`] minus [`Sample::wal_bytes`].
    DbBytes,
}

impl Metric {
    /// All of them, in CSV column order.
    pub const ALL: [Metric; 8] = [
        Metric::FileBytes,
        Metric::HistoryRows,
        Metric::Tombstones,
        Metric::RssKb,
        Metric::LiveRecords,
        Metric::FeedRows,
        Metric::WalBytes,
        Metric::DbBytes,
    ];

    /// The CSV column and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::FileBytes => "file_bytes",
            Metric::HistoryRows => "history_rows",
            Metric::Tombstones => "tombstones",
            Metric::RssKb => "rss_kb",
            Metric::LiveRecords => "live_records",
            Metric::FeedRows => "feed_rows",
            Metric::WalBytes => "wal_bytes",
            Metric::DbBytes => "db_bytes",
        }
    }

    /// The plot panel's title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::FileBytes => "file size (db + wal), MiB",
            Metric::HistoryRows => "history rows",
            Metric::Tombstones => "tombstones",
            Metric::RssKb => "RSS of the serving process, MiB",
            Metric::LiveRecords => "live records (the control: constant by design)",
            Metric::FeedRows => "change-feed rows",
            Metric::WalBytes => "WAL part of the file size, MiB",
            Metric::DbBytes => "database file without the WAL, MiB",
        }
    }

    /// The value to plot: bytes and KiB shown in MiB.
    pub fn plotted(self, s: &Sample) -> f64 {
        match self {
            Metric::FileBytes | Metric::WalBytes | Metric::DbBytes => {
                self.value(s) as f64 / (1024.0 * 1024.0)
            }
            Metric::RssKb => s.rss_kb as f64 / 1024.0,
            _ => self.value(s) as f64,
        }
    }

    /// The raw value.
    pub fn value(self, s: &Sample) -> u64 {
        match self {
            Metric::FileBytes => s.file_bytes,
            Metric::HistoryRows => s.history_rows,
            Metric::Tombstones => s.tombstones,
            Metric::RssKb => s.rss_kb,
            Metric::LiveRecords => s.live_records,
            Metric::FeedRows => s.feed_rows,
            Metric::WalBytes => s.wal_bytes,
            Metric::DbBytes => s.file_bytes.saturating_sub(s.wal_bytes),
        }
    }

    /// Whether the soak's verdict depends on it: the quantities issue 5 says must plateau.
    /// Storage is judged as the database file; the WAL keeps its blocks on purpose (up to
    /// `blazedb::limits::WAL_FILE_BYTES_KEPT`, so that commits overwrite them instead of
    /// growing the file), so it is judged against that bound instead (`soak::wal_bound`), and
    /// the sum of both is reported. Live records are the control (the workload keeps them
    /// constant); feed rows are reported beside them, to explain what grows.
    pub fn judged(self) -> bool {
        !matches!(
            self,
            Metric::LiveRecords | Metric::FeedRows | Metric::WalBytes | Metric::FileBytes
        )
    }

    /// Growth smaller than the tolerance times this is never a failure: at small values a
    /// few hundred rows or a few pages of noise are not growth (see SOAK.md).
    pub fn floor(self) -> f64 {
        match self {
            Metric::FileBytes | Metric::WalBytes | Metric::DbBytes => 1024.0 * 1024.0,
            Metric::RssKb => 4096.0,
            _ => 1000.0,
        }
    }
}

/// Measure one node: `db` is a library handle on its file, `pid` the process serving it.
pub fn take(time_s: f64, node: &str, db: &Database, pid: u32) -> Result<Sample> {
    let stats = db.stats().with_context(|| format!("stats of {node}"))?;
    let (live, dead) = stats
        .collections
        .values()
        .fold((0, 0), |(l, d), c| (l + c.records, d + c.tombstones));
    Ok(Sample {
        time_s,
        node: node.to_owned(),
        file_bytes: stats.file_bytes + stats.wal_bytes,
        history_rows: stats.history_entries,
        tombstones: dead,
        rss_kb: rss_kb(pid).with_context(|| format!("memory of {node} (pid {pid})"))?,
        live_records: live,
        feed_rows: stats.feed_rows,
        wal_bytes: stats.wal_bytes,
    })
}

/// The CSV file, written as samples come so an interrupted soak still leaves its curves.
#[derive(Debug)]
pub struct CsvWriter {
    out: std::io::BufWriter<std::fs::File>,
}

impl CsvWriter {
    /// Create `path` and write the header.
    pub fn create(path: &Path) -> Result<CsvWriter> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = CsvWriter {
            out: std::io::BufWriter::new(file),
        };
        let header: Vec<&str> = std::iter::once("time_s")
            .chain(std::iter::once("node"))
            .chain(Metric::ALL.iter().map(|m| m.name()))
            .collect();
        writeln!(w.out, "{}", header.join(","))?;
        Ok(w)
    }

    /// Append rows and flush.
    pub fn write(&mut self, samples: &[Sample]) -> Result<()> {
        for s in samples {
            write!(self.out, "{:.1},{}", s.time_s, s.node)?;
            for m in Metric::ALL {
                write!(self.out, ",{}", m.value(s))?;
            }
            writeln!(self.out)?;
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_one_row_per_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.csv");
        let mut w = CsvWriter::create(&path).unwrap();
        let s = Sample {
            time_s: 5.04,
            node: "relay".into(),
            file_bytes: 4096,
            history_rows: 10,
            tombstones: 2,
            rss_kb: 30000,
            live_records: 6000,
            feed_rows: 6001,
            wal_bytes: 1024,
        };
        w.write(&[
            s.clone(),
            Sample {
                node: "node0".into(),
                ..s
            },
        ])
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "time_s,node,file_bytes,history_rows,tombstones,rss_kb,live_records,feed_rows,\
                 wal_bytes,db_bytes",
                "5.0,relay,4096,10,2,30000,6000,6001,1024,3072",
                "5.0,node0,4096,10,2,30000,6000,6001,1024,3072",
            ]
        );
    }

    #[test]
    fn a_sample_reads_the_file_and_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("a.db"), Default::default()).unwrap();
        let id = db.insert(super::super::COLLECTION, [("a", 1)]).unwrap();
        db.insert(super::super::COLLECTION, [("a", 2)]).unwrap();
        db.delete(super::super::COLLECTION, id).unwrap();
        let s = take(1.0, "node0", &db, std::process::id()).unwrap();
        assert_eq!((s.live_records, s.tombstones), (1, 1));
        assert!(s.file_bytes > 0 && s.rss_kb > 0);
    }
}
