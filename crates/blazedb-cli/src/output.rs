//! Writing results to stdout: JSON lines through one buffer, flushed at the end.

use std::fmt;
use std::io::{self, BufWriter, StdoutLock, Write};

use serde_json::Value as Json;

/// Writing to stdout failed.
///
/// A type of its own so that [`crate::report::failure`] can tell a reader that closed our
/// stdout (`blazedb export db c | head`, not an error) from a broken pipe anywhere else — a
/// sync connection whose peer went away is a failure and must not exit 0.
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl StdoutError {
    /// The reader of our stdout closed it before we were done.
    pub fn is_closed_by_reader(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot write the output")
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A command stored its write, and then printing its result failed (stdout on a full disk,
/// `/dev/full`): said as what was stored, so that nobody runs the command again, which for a
/// `put` or an `import` would store its records a second time (an audit, 2026-12-07: both
/// exited 1 with only "cannot write the output: No space left on device", and the import run
/// again doubled the collection). Exits with its own code (`report::EXIT_STORED_NOT_PRINTED`).
#[derive(Debug)]
pub struct StoredNotPrinted {
    /// What was stored and what running the command again would do: "the record was stored
    /// ...; do not run `put` again: ...". Follows "but " in the message.
    pub stored: String,
    /// Why printing failed.
    pub error: StdoutError,
}

impl fmt::Display for StoredNotPrinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}, but {}", self.error, self.error.0, self.stored)
    }
}

/// The cause is in the message already.
impl std::error::Error for StoredNotPrinted {}

/// Print the result of a command whose write is committed already: a failure to print it
/// says what was stored ([`StoredNotPrinted`], with `stored`, asked only then).
pub fn print_stored(
    stored: impl FnOnce() -> String,
    print: impl FnOnce(&mut Output) -> Result<(), StdoutError>,
) -> Result<(), StoredNotPrinted> {
    let mut out = Output::stdout();
    print(&mut out)
        .and_then(|()| out.finish())
        .map_err(|error| StoredNotPrinted {
            stored: stored(),
            error,
        })
}

/// Buffered stdout. Commands write every result through it and call [`Output::finish`], so a
/// failed write (a full disk, a closed pipe) is an error rather than lost in a `Drop`.
#[derive(Debug)]
pub struct Output {
    out: BufWriter<StdoutLock<'static>>,
}

impl Output {
    /// Stdout, locked for the life of the command.
    pub fn stdout() -> Output {
        Output {
            out: BufWriter::new(io::stdout().lock()),
        }
    }

    /// One JSON value on one line.
    pub fn json(&mut self, value: &Json) -> Result<(), StdoutError> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| StdoutError(e.into()))?;
        self.out.write_all(b"\n").map_err(StdoutError)
    }

    /// One line of plain text.
    pub fn line(&mut self, text: &str) -> Result<(), StdoutError> {
        self.out.write_all(text.as_bytes()).map_err(StdoutError)?;
        self.out.write_all(b"\n").map_err(StdoutError)
    }

    /// Push everything out now (for a reader that acts on each line as it comes).
    pub fn flush(&mut self) -> Result<(), StdoutError> {
        self.out.flush().map_err(StdoutError)
    }

    /// Flush and report any write error.
    pub fn finish(mut self) -> Result<(), StdoutError> {
        self.out.flush().map_err(StdoutError)
    }
}
