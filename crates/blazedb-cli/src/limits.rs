//! Limits of the command-line tool. The database's own limits are in `blazedb::limits`.

use blazedb::limits::RECORD_BYTES_MAX;

/// Longest line `import` reads. A record is at most `RECORD_BYTES_MAX` encoded; its JSON can
/// be larger (base64 is 4/3 of the bytes, plus quoting and escapes), so allow four times that.
/// A longer line is refused before it is buffered, so a file without newlines cannot exhaust
/// memory.
pub const IMPORT_LINE_BYTES_MAX: usize = 4 * RECORD_BYTES_MAX;

/// Most JSON bytes `import` buffers for one transaction: a batch is committed at
/// `blazedb::limits::IMPORT_BATCH_RECORDS` records or at this size, whichever comes first, so
/// large records do not multiply into gigabytes of memory.
pub const IMPORT_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest password file read (`--password-file`, `--new-password-file`). A password is far
/// shorter; the bound keeps a file named by mistake (a database, a log, `/dev/zero`) from
/// being read into memory whole, and says what went wrong instead.
pub const PASSWORD_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Longest excerpt of the user's JSON an error message quotes (a refused value can be a
/// megabyte; the message stays one readable line).
pub const EXCERPT_CHARS_MAX: usize = 200;
