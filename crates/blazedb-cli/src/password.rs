//! Where passwords and other secrets come from: a file named on the command line, else an
//! environment variable.
//!
//! There is deliberately no `--password` flag: a password on the command line is visible to
//! every user of the machine through the process list (`/proc/PID/cmdline`), while a file can
//! be made owner-only and a process's environment is readable by its owner alone. The
//! relay's token and JWT secret and a client's token still have their older flags (`--token`,
//! `--jwt-secret`), which the commands warn about ([`warn_secret_in_argv`]). A client's token
//! file is read here as password files are ([`read_secret_file`]); the relay reads its token
//! and JWT secret files itself (one secret a line, read again when they change:
//! `blazedb_relay::auth`).

use std::path::Path;

use anyhow::{bail, Result};
use zeroize::Zeroizing;

use crate::limits::PASSWORD_FILE_BYTES_MAX;
use crate::report::UsageError;

/// The environment variable holding the database password.
pub const PASSWORD_ENV: &str = "BLAZEDB_PASSWORD";
/// The environment variable holding the new password for `rekey`.
pub const NEW_PASSWORD_ENV: &str = "BLAZEDB_NEW_PASSWORD";

/// A password as the CLI holds it: its memory is overwritten with zeros when dropped (and
/// every copy made on the way here was too). Hand it to the library with [`hand_over`].
pub type Password = Zeroizing<String>;

/// The password from `file` if given, else from the environment variable `env`; `None` means
/// no password (an unencrypted file). An empty variable counts as unset, so `VAR= blazedb ..`
/// reads as "no password"; an empty file is an error, since naming a file says one is meant.
pub fn resolve(file: Option<&Path>, env: &str) -> Result<Option<Password>> {
    if let Some(path) = file {
        return read_secret_file(path, "password file").map(Some);
    }
    match std::env::var(env).map(Zeroizing::new) {
        Ok(password) if password.is_empty() => Ok(None),
        Ok(password) => Ok(Some(password)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{env} is not valid UTF-8"),
    }
}

/// The new password for `rekey`: from `file` if given, else from [`NEW_PASSWORD_ENV`];
/// `None` when neither is given. Unlike [`resolve`], a variable that is set but empty is an
/// error: `BLAZEDB_NEW_PASSWORD="$(cat missing-file)"` must not read as "no password", which
/// for `rekey` would mean writing the data out in clear. With `decrypt` (the user asked for
/// the file in clear) an empty variable agrees with the request and reads as none: a script
/// that clears the variable rather than unsetting it is not refused.
pub fn resolve_new(file: Option<&Path>, decrypt: bool) -> Result<Option<Password>> {
    if file.is_none() && std::env::var_os(NEW_PASSWORD_ENV).is_some_and(|v| v.is_empty()) {
        if decrypt {
            return Ok(None);
        }
        return Err(UsageError(format!(
            "{NEW_PASSWORD_ENV} is set but empty: put the new password in it (or in a file \
             named by --new-password-file); to remove the encryption, unset it and pass --decrypt"
        ))
        .into());
    }
    resolve(file, NEW_PASSWORD_ENV)
}

/// The password moved (not copied) out of `password` into the plain `String` the library's
/// `OpenOptions` take; the library moves it into zeroized memory of its own when it opens.
pub fn hand_over(password: Option<Password>) -> Option<String> {
    password.map(|mut p| std::mem::take(&mut *p))
}

/// The secret in the file `path` (a password, a token, a JWT secret; `what` names the kind of
/// file in messages, e.g. "token file"): its text less one trailing newline. An empty file is
/// an error, since naming a file says a secret is meant.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Password> {
    let text = read_text_file(path, what)?;
    let secret = strip_one_newline(&text);
    if secret.is_empty() {
        bail!(
            "{what} {} is empty: write the secret in it (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(Zeroizing::new(secret.to_owned()))
}

/// Whether `value` (a flag that clap also fills from the environment variable `env`) was
/// typed on the command line rather than taken from the variable.
pub fn typed_on_command_line(value: Option<&str>, env: &str) -> bool {
    value.is_some_and(|v| std::env::var_os(env).is_none_or(|e| e != v))
}

/// Say on stderr (one JSON `warning` line) that the secret given with `flag` is in the
/// process's command line, which every user of the machine can read (`ps`,
/// `/proc/PID/cmdline`), and how to give it instead (`instead`: the file flag and the
/// variable). A warning, not an error, so that existing scripts keep working.
pub fn warn_secret_in_argv(flag: &str, instead: &str) {
    crate::report::stderr_line(serde_json::json!({
            "event": "warning",
            "kind": "secret_in_command_line",
            "warning": format!(
                "the secret given with {flag} is visible to every user of this machine in the \
                 process list (ps, /proc/PID/cmdline): give it with {instead} instead"
            ),
    }));
}

/// The text of a secret file, at most [`PASSWORD_FILE_BYTES_MAX`] bytes of UTF-8.
fn read_text_file(path: &Path, what: &str) -> Result<Password> {
    use blazedb_net::secret_file::{read_secret_text, SecretFileError};
    read_secret_text(path, PASSWORD_FILE_BYTES_MAX).or_else(|e| match e {
        SecretFileError::Io(e) => {
            Err(anyhow::Error::new(e).context(format!("cannot read {what} {}", path.display())))
        }
        SecretFileError::TooLarge => bail!(
            "{what} {} is larger than {PASSWORD_FILE_BYTES_MAX} bytes: it does not hold just \
             a secret; check the path",
            path.display()
        ),
        SecretFileError::NotUtf8 => bail!(
            "{what} {} is not UTF-8 text: write the secret as text (a binary key file \
             cannot be used; `openssl rand -hex 32` makes a text one)",
            path.display()
        ),
    })
}

/// Editors and `echo` end files with a newline that is not part of the password; anything
/// else (spaces, a second newline) is kept, since it may be.
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_trailing_newline_is_stripped() {
        assert_eq!(strip_one_newline("s3cret\n"), "s3cret");
        assert_eq!(strip_one_newline("s3cret\r\n"), "s3cret");
        assert_eq!(strip_one_newline("s3cret\n\n"), "s3cret\n");
        assert_eq!(strip_one_newline(" s3cret "), " s3cret ");
    }
}
