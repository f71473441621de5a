//! The relay's log: one JSON line per event on stderr.
//!
//! A stderr that takes nothing (a pipe whose reader is gone, a log file on a full disk) does
//! not stop the relay: std's `eprintln!` panics there, and a panic in a session, the GC or
//! the store watch took that task down, or the whole `blazedb serve` (whose panic hook
//! exits). Serving clients matters more than the log. Every line goes through [`line`]
//! (`clippy::print_stderr` is denied in this crate).

/// Print `event` and a newline on stderr; a failed write is dropped.
pub(crate) fn line(event: impl std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{event}");
}
