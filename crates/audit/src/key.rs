//! The audit key: a MAC over the head (and over exported checkpoints), so that someone who can
//! write the audit folder but does not hold the key cannot cut records from the end and
//! rewrite `audit.head` to match.
//!
//! The key is a 32-byte file made by `warden-datadir` (0600, created once). By default it is
//! `DATA/audit.key`, outside `DATA/audit`; an operator who wants the MAC to hold against
//! someone with write access to the whole data dir keeps it elsewhere. Checkpoints exported to
//! another place (see [`crate::Checkpoint`]) catch a rewrite even by someone holding the key.

use std::path::Path;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use warden_datadir::{DataDirError, Key};

/// The audit key's default file name in the data dir.
pub const AUDIT_KEY_FILE: &str = "audit.key";

/// The key for the head's MAC; wiped on drop, never printed.
#[derive(Debug)]
pub struct AuditKey(Key);

impl AuditKey {
    /// Reads the key file at `path`, creating it if missing. Returns the key and whether it
    /// was created now (a log opened with a new key may adopt a head that has no MAC yet).
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), DataDirError> {
        let existed = path.symlink_metadata().is_ok();
        Ok((AuditKey(Key::load_or_create(path)?), !existed))
    }

    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<AuditKey, DataDirError> {
        Ok(AuditKey(Key::load(path)?))
    }

    /// A random key (tests, logs that live only as long as the process).
    pub fn random() -> AuditKey {
        AuditKey(Key::random())
    }

    fn hmac(&self, seq: u64, hash: &str) -> Hmac<Sha256> {
        // HMAC pads a key shorter than the block (64 bytes) with zeros, so this is HMAC under
        // the 32-byte key, through the constructor that cannot fail.
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.0.bytes());
        let mut m = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
        // Domain-separated, unambiguous: the seq is decimal and the hash fixed-length hex.
        m.update(b"warden-audit-head-v1\n");
        m.update(seq.to_string().as_bytes());
        m.update(b"\n");
        m.update(hash.as_bytes());
        m
    }

    /// The MAC of (seq, hash), 64 lowercase hex digits.
    pub fn mac(&self, seq: u64, hash: &str) -> String {
        hex::encode(self.hmac(seq, hash).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is the MAC of (seq, hash); compared in constant time.
    pub fn check(&self, seq: u64, hash: &str, mac: &str) -> bool {
        match hex::decode(mac) {
            Ok(bytes) => self.hmac(seq, hash).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_seq_and_hash_and_key() {
        let k = AuditKey::random();
        let h = "a".repeat(64);
        let m = k.mac(7, &h);
        assert_eq!(m.len(), 64);
        assert!(k.check(7, &h, &m));
        assert!(!k.check(6, &h, &m));
        assert!(!k.check(7, &"b".repeat(64), &m));
        assert!(!AuditKey::random().check(7, &h, &m));
        assert!(!k.check(7, &h, "zz"));
        assert!(!k.check(7, &h, &m[..62]));
        // The same as HMAC-SHA256 with the 32-byte key (RFC 2104 pads short keys with zeros).
        let mut plain = <Hmac<Sha256> as KeyInit>::new_from_slice(k.0.bytes()).unwrap();
        plain.update(b"warden-audit-head-v1\n7\n");
        plain.update(h.as_bytes());
        assert_eq!(hex::encode(plain.finalize().into_bytes()), m);
    }
}
