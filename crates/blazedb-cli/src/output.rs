//! Writing results to stdout: JSON lines through one buffer, flushed at the end.

use std::io::{self, BufWriter, StdoutLock, Write};

use serde_json::Value as Json;

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
    pub fn json(&mut self, value: &Json) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// One line of plain text.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Push everything out now (for a reader that acts on each line as it comes).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flush and report any write error.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}
