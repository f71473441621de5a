//! `blazedb`: the command-line interface of BlazeDB, JSON in and JSON out.
//!
//! ```text
//! main ──► cli (clap: what the user typed) ──► commands::run ──► commands::<family>
//!                                                  │                 │
//!                                        password, database      input (JSON → values,
//!                                        (how a file is opened)   patches), output (JSON lines)
//! ```
//!
//! Exit codes: `0` success; `1` the command failed (missing record or conflict, wrong
//! password, a bad import line, a failed integrity check); `2` the command line is wrong
//! (unknown flag, invalid query expression, malformed JSON argument); `3` `sync` ran but the
//! peer refused some changes; `4` the command stored its write (`put`, `import`, `rekey`, ...)
//! but could not print its result: do not run it again (the message says what was stored).
//! Every failure prints one line on stderr, starting with `error: `.
//!
//! ```sh
//! blazedb put bugs.db bugs '{"title": "Crash", "priority": 5}'
//! blazedb query bugs.db bugs --where 'priority >= 5' --order-by title
//! ```
// The doc comments of the command-line types are clap's help text, written for a terminal
// (`<base64>`, `[collection]`, bare URLs), not for rustdoc.
#![allow(
    rustdoc::invalid_html_tags,
    rustdoc::broken_intra_doc_links,
    rustdoc::bare_urls
)]
#![forbid(unsafe_code)]
// Lines on stderr go through `report::stderr_line`, which a closed stderr does not stop, and
// stdout through `output::Output`, whose failures are errors: never through the std macros,
// which panic when the stream is closed.
#![deny(clippy::print_stderr, clippy::print_stdout)]

/// mimalloc rather than the system allocator: syncing allocates and frees small buffers per
/// cell, and glibc's malloc and free were ~15% of the relay fan-out's CPU (perf, 2026-12-05).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod commands;
mod database;
mod input;
mod limits;
mod output;
mod password;
mod report;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    report::install_panic_hook();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return report::usage_error(&e),
    };
    let password_from_env = cli.global.password_file.is_none()
        && std::env::var_os(password::PASSWORD_ENV).is_some_and(|v| !v.is_empty());
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report::failure(&e, password_from_env),
    }
}
