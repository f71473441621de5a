//! Reading a file that holds secrets (a password, static tokens, HMAC secrets) without leaving
//! copies of them in memory: one bounded read into a buffer of its full size, zeroized when
//! dropped, and the bytes zeroized when they are not UTF-8. Shared by the CLI's password and
//! token files and the relay's credential files; each says in its own words what went wrong.

use std::io::Read as _;
use std::path::Path;

use zeroize::{Zeroize as _, Zeroizing};

/// Why a secret file could not be read as text.
#[derive(Debug)]
pub enum SecretFileError {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It holds more than the bound given: not just secrets (a wrong path, most likely).
    TooLarge,
    /// It is not UTF-8 text.
    NotUtf8,
}

/// The text of the file `path`, at most `max_bytes`, in memory overwritten with zeros when
/// dropped.
pub fn read_secret_text(path: &Path, max_bytes: u64) -> Result<Zeroizing<String>, SecretFileError> {
    // Read to its full size up front: a growing buffer would leave copies behind as it moves.
    let mut bytes = Zeroizing::new(Vec::with_capacity(max_bytes as usize + 1));
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes))
        .map_err(SecretFileError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(SecretFileError::TooLarge);
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(SecretFileError::NotUtf8)
        }
    }
}
