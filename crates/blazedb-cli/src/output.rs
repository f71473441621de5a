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
