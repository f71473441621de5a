//! The key an encrypted file's connections are given.
//!
//! SQLCipher turns a password into the page key with PBKDF2-HMAC-SHA512 over the password and
//! the file's salt (its first 16 bytes), 256,000 iterations: ~100 ms of CPU, on purpose. It
//! does that for every connection keyed with the password, and an open database has two
//! connections: the main one, and the checkpointer's (opened by the first
//! `Database::checkpoint`, about a second after the open when a sync driver runs one). The
//! second derivation landed in the middle of whatever the process was doing; in the
//! `net_fanout` benchmark, eleven encrypted files paid it ~1 s into the run: ~1.1 s of the
//! two cores' CPU, while the figure was being measured.
//!
//! So a database derives the key once, here, with the same OpenSSL call SQLCipher itself
//! makes (`PKCS5_PBKDF2_HMAC`, SQLCipher 4's defaults), and keys both connections with the
//! result in SQLCipher's raw-key form `x'<key><salt>'`, which SQLCipher takes as the derived
//! key and does not stretch again. Nothing about the file changes: the same password and
//! salt give the same key, so the file opens with `PRAGMA key = '<password>'` in any
//! SQLCipher tool, and BlazeDB opens files made by them (tests in `tests/encryption.rs` check
//! both ways). The derived key is wiped from this process's memory when the database closes.

use std::fmt::{self, Write as _};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use zeroize::Zeroizing;

/// SQLCipher 4's default PBKDF2 iteration count (`cipher_kdf_iter`), which files made by
/// BlazeDB and by SQLCipher tools with default settings use.
pub(crate) const KDF_ITERATIONS: usize = 256_000;
/// SQLCipher's key size: AES-256.
const KEY_BYTES: usize = 32;
/// SQLCipher's salt size: the first bytes of an encrypted file.
pub(crate) const SALT_BYTES: usize = 16;

/// The value of `PRAGMA key` for an encrypted file's connections.
pub(crate) struct CipherKey(Zeroizing<String>);

impl fmt::Debug for CipherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CipherKey(***)")
    }
}

impl CipherKey {
    /// The key for `password` and the file's `salt`, as SQLCipher 4 derives it.
    pub(crate) fn derive(password: &str, salt: &[u8; SALT_BYTES]) -> Result<CipherKey, ErrorStack> {
        if password.is_empty() {
            // SQLCipher reads an empty key as "no encryption": keep its meaning.
            return Ok(CipherKey(Zeroizing::new(String::new())));
        }
        #[cfg(test)]
        tests::DERIVATIONS.with(|n| n.set(n.get() + 1));
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        openssl::pkcs5::pbkdf2_hmac(
            password.as_bytes(),
            salt,
            KDF_ITERATIONS,
            MessageDigest::sha512(),
            &mut key[..],
        )?;
        let mut spec = Zeroizing::new(String::with_capacity(3 + 2 * (KEY_BYTES + SALT_BYTES)));
        spec.push_str("x'");
        for b in key.iter().chain(salt) {
            // Within the capacity reserved above: the string never moves, so no copy of the
            // key is left behind unwiped.
            write!(spec, "{b:02x}").expect("writing to a String");
        }
        spec.push('\'');
        Ok(CipherKey(spec))
    }

    /// A salt for a new file, from OpenSSL's random generator (what SQLCipher would use).
    pub(crate) fn new_salt() -> Result<[u8; SALT_BYTES], ErrorStack> {
        let mut salt = [0u8; SALT_BYTES];
        openssl::rand::rand_bytes(&mut salt)?;
        Ok(salt)
    }

    /// What `PRAGMA key` is set to.
    pub(crate) fn pragma_value(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Database, OpenOptions};

    thread_local! {
        /// Key derivations run on this thread.
        pub(super) static DERIVATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn derivations() -> usize {
        DERIVATIONS.with(|n| n.get())
    }

    /// The point of this module: one derivation per open, none for the checkpoint
    /// connection (nor for reopening it after `vacuum` closed it).
    #[test]
    fn an_open_derives_the_key_once_and_checkpoints_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        for round in 0..2 {
            let before = derivations();
            let db = Database::open(&path, OpenOptions::with_password("pw")).unwrap();
            db.insert("c", [("round", round)]).unwrap();
            db.checkpoint().unwrap();
            db.vacuum().unwrap();
            db.insert("c", [("round", round)]).unwrap();
            db.checkpoint().unwrap();
            assert_eq!(derivations() - before, 1, "round {round}");
        }
        // A plain file derives nothing.
        let before = derivations();
        let db = Database::open(dir.path().join("plain.db"), OpenOptions::default()).unwrap();
        db.insert("c", [("x", 1)]).unwrap();
        db.checkpoint().unwrap();
        assert_eq!(derivations(), before);
    }

    /// The password is wiped from memory with the handle: the handle keeps it only in a
    /// `Zeroizing` string, not in its (cloneable) options, and neither does its reopened
    /// connection after a rekey.
    #[test]
    fn a_database_keeps_no_plain_copy_of_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut db =
            Database::open(dir.path().join("p.db"), OpenOptions::with_password("pw")).unwrap();
        assert!(db.options.password.is_none(), "kept in the options");
        assert!(db.is_encrypted());
        db.rekey(Some("pw2")).unwrap();
        assert!(
            db.options.password.is_none(),
            "kept in the options after a rekey"
        );
        assert!(db.is_encrypted());
        db.rekey(None).unwrap();
        assert!(!db.is_encrypted());
    }

    #[test]
    fn the_raw_key_carries_the_derived_key_and_the_salt_in_hex() {
        let salt = [0xABu8; SALT_BYTES];
        let k = CipherKey::derive("pw", &salt).unwrap();
        let v = k.pragma_value();
        assert_eq!(v.len(), 3 + 2 * (KEY_BYTES + SALT_BYTES));
        assert!(v.starts_with("x'") && v.ends_with('\''));
        assert!(v.ends_with(&format!("{}'", "ab".repeat(SALT_BYTES))));
        // Deterministic in password and salt; a different salt gives a different key.
        assert_eq!(v, CipherKey::derive("pw", &salt).unwrap().pragma_value());
        let other = CipherKey::derive("pw", &[0u8; SALT_BYTES]).unwrap();
        assert_ne!(v[2..66], other.pragma_value()[2..66]);
        assert_eq!(format!("{k:?}"), "CipherKey(***)");
    }

    #[test]
    fn an_empty_password_stays_an_empty_key() {
        let k = CipherKey::derive("", &[1u8; SALT_BYTES]).unwrap();
        assert_eq!(k.pragma_value(), "");
    }
}
