//! How failures reach the user: one line on stderr, starting with `error: `, and an exit code.
//!
//! Scripts read the exit code and one line; nothing prints a backtrace or a panic message
//! spread over several lines.

use std::error::Error as StdError;
use std::fmt;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use blazedb::query::QueryError;

use crate::output::{StdoutError, StoredNotPrinted};

/// Exit code when the command ran and failed.
const EXIT_FAILED: u8 = 1;
/// Exit code when the command line itself is wrong (clap uses the same code).
const EXIT_USAGE: u8 = 2;
/// Exit code when the command did its work but the peer refused some of this side's changes
/// (its access rules): `blazedb sync` against a relay with write rules.
const EXIT_REFUSED: u8 = 3;
/// Exit code when the command stored its write but could not print its result (stdout on a
/// full disk): the message says what was stored, and the command must not be run again.
const EXIT_STORED_NOT_PRINTED: u8 = 4;
/// Exit code after a panic, as Rust's default.
const EXIT_PANIC: i32 = 101;

/// An argument the user typed is invalid (a malformed JSON argument, contradicting ids).
/// Exits with [`EXIT_USAGE`], like clap's own errors, rather than [`EXIT_FAILED`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for UsageError {}

/// The sync ran, but the peer refused some of this side's changes: exits with
/// [`EXIT_REFUSED`], so that a script can tell it from a sync that failed and from one that
/// delivered everything.
#[derive(Debug)]
pub struct RefusedByPeer(pub String);

impl fmt::Display for RefusedByPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RefusedByPeer {}

/// Print `line` and a newline on stderr, whatever becomes of it. A stderr that takes nothing
/// (a pipe whose reader is gone, a file on a full disk) must not stop a command that is
/// doing or has done its work: std's `eprintln!` panics there, and the panic hook's own
/// line then aborted the process (exit 134; found 2026-12-07). Every line the CLI writes on
/// stderr goes through here (`clippy::print_stderr` is denied in this crate); stdout goes
/// through [`crate::output::Output`], whose failures are errors.
pub fn stderr_line(line: impl fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Report a failed command and choose its exit code.
///
/// `password_from_env`: the database password came from `BLAZEDB_PASSWORD` (no
/// `--password-file`), which a wrong-password or not-encrypted error then names: an exported
/// variable is easy to forget, and it reaches every command of the shell (a relay started
/// from it encrypts its store with it).
pub fn failure(err: &anyhow::Error, password_from_env: bool) -> ExitCode {
    if is_stdout_closed_by_reader(err) {
        return ExitCode::SUCCESS;
    }
    let mut line = one_line(err);
    line.push_str(password_hint(err, password_from_env));
    line.push_str(command_line_hint(err, &line));
    stderr_line(format_args!("error: {line}"));
    // The caret under the expression is worth the extra lines for a person at a terminal;
    // scripts keep their one line (the column is in it).
    if let Some(QueryError::Syntax { excerpt, .. }) = err.chain().find_map(query_error) {
        if std::io::stderr().is_terminal() {
            stderr_line(excerpt);
        }
    }
    if err.chain().any(|e| e.is::<RefusedByPeer>()) {
        return ExitCode::from(EXIT_REFUSED);
    }
    if err.chain().any(|e| e.is::<StoredNotPrinted>()) {
        return ExitCode::from(EXIT_STORED_NOT_PRINTED);
    }
    let usage = err
        .chain()
        .any(|e| e.is::<UsageError>() || query_error(e).is_some());
    ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILED })
}

/// The CLI's side of a failed open's password errors. The library says what to do in its
/// own terms ("open it with its password"); here is how a user of the command line gives
/// one, and, when the password came from `BLAZEDB_PASSWORD` (`password_from_env`), that it
/// did.
fn password_hint(err: &anyhow::Error, password_from_env: bool) -> &'static str {
    use blazedb::OpenError;
    let open = err.chain().find_map(|e| {
        e.downcast_ref::<OpenError>()
            .or(match e.downcast_ref::<blazedb::Error>() {
                Some(blazedb::Error::Open(o)) => Some(o),
                _ => None,
            })
    });
    match open {
        Some(OpenError::PasswordRequired { .. }) => {
            " (give the password in BLAZEDB_PASSWORD or in a file named by --password-file; \
             `sync` of two files takes one for each with --password-file-a/-b)"
        }
        _ if !password_from_env => "",
        Some(OpenError::NotEncrypted { .. }) => {
            " (the password came from BLAZEDB_PASSWORD: unset it for this file, e.g. `env -u \
             BLAZEDB_PASSWORD blazedb ...`; `sync` of two files takes one for each with \
             --password-file-a/-b)"
        }
        Some(OpenError::WrongPassword { .. }) => {
            " (the password came from BLAZEDB_PASSWORD: is it still the old one after a \
             rekey, or meant for another file?)"
        }
        _ => "",
    }
}

/// The CLI's side of library errors that say what to do in the library's terms (an API
/// call, a configuration field): which command or option that is here. The library is also
/// used embedded, where there are no options to name (an API audit found `--data`, `listen
/// --tcp` and `blazedb serve` in its messages). `line` is the message so far.
fn command_line_hint(err: &anyhow::Error, line: &str) -> &'static str {
    use blazedb::OpenError;
    let in_use = err.chain().any(|e| {
        matches!(e.downcast_ref::<OpenError>(), Some(OpenError::InUse { .. }))
            || matches!(
                e.downcast_ref::<blazedb::Error>(),
                Some(blazedb::Error::Open(OpenError::InUse { .. }))
            )
    });
    let data_dir = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<blazedb_relay::RelayError>(),
            Some(blazedb_relay::RelayError::DataDir { .. })
        )
    });
    if in_use {
        " (a `blazedb serve`, `listen` or `sync` holding the file: stop it first)"
    } else if data_dir {
        " (--data names the data directory)"
    } else if line.contains(blazedb::sync::frame::ANSWERED_IN_HTTP) {
        // The error crossed the session as text (an ERROR's message), so its start is
        // what is matched.
        " (a port that speaks BlazeDB frames is `blazedb listen --tcp` or `blazedb serve \
         --tcp-listen`)"
    } else {
        ""
    }
}

/// Report a command line clap refused (or print the help or version it asked for).
pub fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help is meant to be long; print it as clap formats it.
        let _ = err.print();
        return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
    }
    stderr_line(format_args!(
        "error: {} (see --help)",
        clap_one_line(&err.render().to_string())
    ));
    ExitCode::from(EXIT_USAGE)
}

/// A panic is a bug in BlazeDB: say so in one line instead of the default multi-line message.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = flatten(&info.to_string());
        stderr_line(format_args!(
            "error: internal error (a bug in blazedb, please report it): {text}"
        ));
        std::process::exit(EXIT_PANIC);
    }));
}

/// The error and its causes as one line: `what failed: why`.
///
/// Library errors often include their cause's text in their own message and also return it as
/// `source()`; a cause whose text is already in the line is skipped so it does not repeat.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = match query_error(cause) {
            // Its first line says what is wrong and at which column; the excerpt lines under
            // it are for a terminal (see `failure`).
            Some(q) => q.to_string().lines().next().unwrap_or_default().to_owned(),
            None => flatten(&cause.to_string()),
        };
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The query error inside `e`, whether it is one or is wrapped in `blazedb::Error` (whose
/// `Query` variant is transparent, so the query error is not a separate link of the chain).
fn query_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a QueryError> {
    e.downcast_ref::<QueryError>()
        .or(match e.downcast_ref::<blazedb::Error>() {
            Some(blazedb::Error::Query(q)) => Some(q),
            _ => None,
        })
}

/// `blazedb export db c | head` closes the pipe early; that is the reader's choice, not an
/// error of ours. Only a broken pipe on stdout counts: one on a sync connection (the peer
/// went away) is as much a failure as any other transport error.
fn is_stdout_closed_by_reader(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| {
            e.downcast_ref::<StdoutError>()
                .or(e.downcast_ref::<StoredNotPrinted>().map(|s| &s.error))
        })
        .any(StdoutError::is_closed_by_reader)
}

/// Several lines of text as one, keeping every non-empty line.
fn flatten(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Clap's error text without its usage and "for more information" footer, on one line.
fn clap_one_line(rendered: &str) -> String {
    let kept: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = kept.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such database");
        let err = anyhow::Error::new(io).context("cannot open x.db: no such database");
        assert_eq!(one_line(&err), "cannot open x.db: no such database");
    }

    #[test]
    fn query_errors_keep_their_column_on_one_line() {
        let q = blazedb::query::parse("status == ").unwrap_err();
        let err = anyhow::Error::new(blazedb::Error::from(q));
        let line = one_line(&err);
        assert!(
            line.starts_with("invalid expression at column 11:"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_reader_closing_stdout_is_not_a_failure() {
        let closed = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::new(StdoutError(closed)).context("exporting notes");
        assert_eq!(failure(&err, false), ExitCode::SUCCESS);
    }

    #[test]
    fn a_broken_pipe_on_the_sync_connection_is_a_failure() {
        // What `blazedb sync DB unix://… --once` returns when the peer drops the connection
        // while this side writes.
        let report = blazedb_net::SessionReport {
            node: blazedb::NodeId([1; 16]),
            peer: None,
            stats: Default::default(),
            end: blazedb_net::EndReason::TransportClosed,
            caught_up: false,
            elapsed_ms: 0,
            rejected: Vec::new(),
            token_unchecked: false,
            peer_goodbye: None,
        };
        let err = anyhow::Error::new(blazedb_net::ClientError::Session(
            blazedb_net::NetError::Io {
                source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
                report: Box::new(report),
            },
        ));
        assert_eq!(failure(&err, false), ExitCode::from(EXIT_FAILED));
    }

    #[test]
    fn clap_errors_lose_their_footer() {
        let rendered = "error: the following required arguments were not provided:\n  \
                        <JSON>\n\nUsage: blazedb put <DB> <COLLECTION> <JSON>\n\n\
                        For more information, try '--help'.\n";
        assert_eq!(
            clap_one_line(rendered),
            "the following required arguments were not provided: <JSON>"
        );
    }
}
