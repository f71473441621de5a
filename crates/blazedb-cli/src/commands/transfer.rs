//! `import` and `export`: JSON lines in and out.
//!
//! Import commits in batches (`IMPORT_BATCH_RECORDS` records or `IMPORT_BATCH_BYTES_MAX`
//! bytes): one transaction per record would be slow, one for the whole file unbounded. A bad
//! line stops the import; batches committed before it stay, and the message says which lines
//! those were.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{anyhow, Context as _, Result};
use blazedb::limits::{IMPORT_BATCH_RECORDS, TRANSACTION_CELLS_MAX};
use blazedb::Database;
use clap::Args;
use serde_json::json;

use crate::database::{remove_new_database, will_create_database, Access, Context};
use crate::input::{self, RecordInput};
use crate::limits::{IMPORT_BATCH_BYTES_MAX, IMPORT_LINE_BYTES_MAX};
use crate::output::{print_stored, Output};
use crate::report::UsageError;

/// `import DB COLLECTION FILE`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The database file (created if missing).
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
    /// JSON lines, one object per line ("-" for stdin). A line with "_id" upserts that record
    /// (only its fields change); one without is inserted with a new id.
    pub file: PathBuf,
}

/// `export DB COLLECTION`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The database file.
    pub db: PathBuf,
    /// The collection.
    pub collection: String,
}

/// Load a JSON-lines file and print `{"imported": n}`.
pub fn run_import(ctx: &Context, args: &ImportArgs) -> Result<()> {
    // Open the input first: a mistyped file name must not leave a new, empty database behind.
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(UsageError(format!(
                "{} is a directory: give a file of JSON lines (or - for stdin)",
                args.file.display()
            ))
            .into());
        }
        Box::new(BufReader::new(file))
    };
    blazedb::validate_collection_name(&args.collection)?;
    let is_new = will_create_database(&args.db);
    let db = ctx.open(&args.db, Access::CreateIfMissing)?;
    let mut import = Import::new(&db, &args.collection);
    let result = import_lines(&mut import, reader);
    let committed_records = import.committed_records;
    if result.is_err() && is_new && committed_records == 0 {
        // A failed import leaves no new, empty database behind (one whose earlier batches
        // were committed stays: the error says which lines it holds).
        drop(import);
        remove_new_database(db, &args.db);
    }
    result?;
    let stored = || {
        format!(
            "the import was stored, all {committed_records} record(s) of {} in collection \
             {:?}: do not run it again (its lines without \"_id\" would be stored a second \
             time; those with one would only be written again)",
            args.file.display(),
            args.collection
        )
    };
    Ok(print_stored(stored, |out| {
        out.json(&json!({ "imported": committed_records }))
    })?)
}

/// Read, check and commit every line of the input.
fn import_lines(import: &mut Import<'_>, reader: Box<dyn BufRead>) -> Result<()> {
    let mut lines = Lines::new(reader, IMPORT_LINE_BYTES_MAX);
    loop {
        let (number, text) = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(import.stopped(format!("at line {}", lines.number), e)),
        };
        // A UTF-8 byte order mark (editors on Windows write one) is not JSON.
        let text = if number == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        let record = input::parse_object(text)
            .and_then(input::record)
            .map_err(|e| import.stopped(format!("at line {number}"), anyhow!(e)))?;
        import.push(number, record, text.len())?;
    }
    import.commit()
}

/// Print every record of the collection as JSON lines, streaming (not collecting them first).
pub fn run_export(ctx: &Context, args: &ExportArgs) -> Result<()> {
    let db = ctx.open(&args.db, Access::Read)?;
    let mut out = Output::stdout();
    let mut write_error = None;
    db.for_each(&args.collection, |record| {
        match out.json(&record.to_json()) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    Ok(out.finish()?)
}

/// One line waiting in the current batch.
struct Pending {
    number: usize,
    record: RecordInput,
}

/// The state of an import: the batch being filled and what is already committed.
struct Import<'a> {
    db: &'a Database,
    collection: &'a str,
    batch: Vec<Pending>,
    batch_bytes: usize,
    /// Cells the batch's inserts write (a record cell and one per field): one transaction
    /// may change at most `TRANSACTION_CELLS_MAX`.
    batch_cells: usize,
    committed_records: u64,
    /// The last line of the last committed batch (0: none yet).
    committed_through_line: usize,
}

impl<'a> Import<'a> {
    fn new(db: &'a Database, collection: &'a str) -> Import<'a> {
        Import {
            db,
            collection,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_cells: 0,
            committed_records: 0,
            committed_through_line: 0,
        }
    }

    /// Add a line; commit when the batch is full.
    fn push(&mut self, number: usize, record: RecordInput, bytes: usize) -> Result<()> {
        let cells = record.fields.len() + 1;
        if self.batch_cells + cells > TRANSACTION_CELLS_MAX {
            // Wide records: the batch ends at the transaction's cell limit first.
            self.commit()?;
        }
        self.batch_cells += cells;
        self.batch.push(Pending { number, record });
        self.batch_bytes += bytes;
        if self.batch.len() >= IMPORT_BATCH_RECORDS || self.batch_bytes >= IMPORT_BATCH_BYTES_MAX {
            self.commit()?;
        }
        Ok(())
    }

    /// Write the batch in one transaction. On failure nothing of the batch is written, and
    /// the error names the line the database refused (or the batch, if the commit failed).
    fn commit(&mut self) -> Result<()> {
        let (Some(first), Some(last)) = (self.batch.first(), self.batch.last()) else {
            return Ok(());
        };
        let (first, last) = (first.number, last.number);
        let batch = std::mem::take(&mut self.batch);
        let count = batch.len() as u64;
        let collection = self.collection;
        let mut refused_line = None;
        let result = self.db.transaction(|tx| {
            for Pending { number, record } in batch {
                refused_line = Some(number);
                match record.id {
                    Some(id) => tx.upsert(collection, id, record.fields)?,
                    None => drop(tx.insert(collection, record.fields)?),
                }
            }
            refused_line = None;
            Ok(())
        });
        if let Err(e) = result {
            let at = match refused_line {
                Some(number) => format!("at line {number}"),
                None => format!("committing lines {first}-{last}"),
            };
            return Err(self.stopped(at, e.into()));
        }
        self.batch_bytes = 0;
        self.batch_cells = 0;
        self.committed_records += count;
        self.committed_through_line = last;
        Ok(())
    }

    /// The error for an import that stopped (`at`: where), saying what stayed committed.
    fn stopped(&self, at: String, cause: anyhow::Error) -> anyhow::Error {
        let kept = match self.committed_through_line {
            0 => "nothing was imported".to_owned(),
            through => format!(
                "the {} records of lines 1-{through} were committed and stay; nothing after \
                 line {through} was imported: fix the input and import from line {} on (e.g. \
                 `tail -n +{} FILE | blazedb import DB COLLECTION -`)",
                self.committed_records,
                through + 1,
                through + 1
            ),
        };
        anyhow!(
            "import stopped {at}: {}; {kept}",
            crate::report::one_line(&cause)
        )
    }
}

/// Lines of the input, numbered from 1, each at most `line_bytes_max` bytes.
struct Lines<R> {
    reader: R,
    line_bytes_max: usize,
    /// The number of the last line read.
    number: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R, line_bytes_max: usize) -> Lines<R> {
        Lines {
            reader,
            line_bytes_max,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// The next line's number and text without its line ending, or `None` at the end of the
    /// input. After an error, `self.number` is the number of the line that failed.
    fn next(&mut self) -> Result<Option<(usize, &str)>> {
        self.buf.clear();
        self.number += 1;
        // Read one byte past the limit, so a line of exactly the limit plus its newline fits
        // and anything longer is caught without buffering the rest of it.
        let limit = self.line_bytes_max as u64 + 1;
        let n = Read::take(&mut self.reader, limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if n as u64 == limit {
            return Err(anyhow!("line is longer than {} bytes", self.line_bytes_max));
        }
        let text = std::str::from_utf8(&self.buf).context("line is not valid UTF-8")?;
        Ok(Some((self.number, text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line (number, text) up to the end or the first error ("number: message").
    fn all(input: &[u8], line_bytes_max: usize) -> Vec<Result<(usize, String), String>> {
        let mut lines = Lines::new(input, line_bytes_max);
        let mut out = Vec::new();
        loop {
            match lines.next() {
                Ok(Some((n, text))) => out.push(Ok((n, text.to_owned()))),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(format!("{}: {e:#}", lines.number)));
                    return out;
                }
            }
        }
    }

    fn ok(n: usize, text: &str) -> Result<(usize, String), String> {
        Ok((n, text.to_owned()))
    }

    #[test]
    fn line_endings_are_stripped_and_lines_numbered() {
        let got = all(b"a\r\n\nb\nlast", 10);
        assert_eq!(got, [ok(1, "a"), ok(2, ""), ok(3, "b"), ok(4, "last")]);
    }

    #[test]
    fn a_line_at_the_limit_fits_and_a_longer_one_is_refused() {
        let too_long = Err("2: line is longer than 4 bytes".to_owned());
        assert_eq!(all(b"abcd\nabcde\n", 4), [ok(1, "abcd"), too_long]);
        assert_eq!(all(b"abcd", 4), [ok(1, "abcd")]);
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let got = all(b"ok\n\xff\n", 10);
        assert!(got[1]
            .as_ref()
            .is_err_and(|e| e.starts_with("2: line is not valid UTF-8")));
    }
}
