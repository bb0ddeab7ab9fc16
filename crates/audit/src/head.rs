//! `audit.head`: the sequence number and hash of the last record, rewritten in place after each
//! append, so that records removed from the end of the log (or added to it by hand) show.
//!
//! The file is always [`HEAD_LEN`] bytes: `{"seq":N,"hash":"<64 hex>","mac":"<64 hex>"}`,
//! padded with spaces, then `\n`. Its fixed length lets it be overwritten with one positioned
//! write. `mac` is the [`AuditKey`] MAC of (seq, hash); a head written without a key has none.
//! Heads of [`LEGACY_HEAD_LEN`] bytes (from before the MAC) are read too. It is also the
//! lock that serializes appends between processes (an exclusive `flock` while appending, a
//! shared one while a verifier takes a consistent snapshot).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainError, GENESIS_HASH, is_hash_hex};
use crate::key::AuditKey;

/// Length of the head file in bytes.
pub(crate) const HEAD_LEN: usize = 256;
/// Length of a head file written before the MAC (read, never written).
pub(crate) const LEGACY_HEAD_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Head {
    /// Records in the log (0 for an empty log).
    pub seq: u64,
    /// The last record's hash ([`GENESIS_HASH`] for an empty log).
    pub hash: String,
    /// The audit key's MAC of (seq, hash), if the log is keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Head {
    pub fn genesis(key: Option<&AuditKey>) -> Head {
        Head::new(0, GENESIS_HASH.to_owned(), key)
    }

    pub fn new(seq: u64, hash: String, key: Option<&AuditKey>) -> Head {
        let mac = key.map(|k| k.mac(seq, &hash));
        Head { seq, hash, mac }
    }

    /// Refuses a head whose MAC is wrong, or missing while a key is in use. `adopt` accepts a
    /// head without a MAC (a log opened with a key created just now).
    pub fn check_mac(
        &self,
        key: Option<&AuditKey>,
        path: &Path,
        adopt: bool,
    ) -> Result<(), ChainError> {
        let Some(key) = key else { return Ok(()) };
        match &self.mac {
            Some(mac) if key.check(self.seq, &self.hash, mac) => Ok(()),
            Some(_) => Err(ChainError::HeadMac {
                path: path.to_owned(),
            }),
            None if adopt => Ok(()),
            None => Err(ChainError::HeadUnkeyed {
                path: path.to_owned(),
            }),
        }
    }

    pub fn encode(&self) -> Result<[u8; HEAD_LEN], serde_json::Error> {
        let json = serde_json::to_vec(self)?;
        let mut out = [b' '; HEAD_LEN];
        // At most 7 + 20 + 10 + 64 + 9 + 64 + 2 = 176 bytes, so this always fits.
        let n = json.len().min(HEAD_LEN - 1);
        out[..n].copy_from_slice(&json[..n]);
        out[HEAD_LEN - 1] = b'\n';
        Ok(out)
    }

    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Head, ChainError> {
        let bad = |reason: &str| ChainError::HeadMalformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if !matches!(bytes.len(), HEAD_LEN | LEGACY_HEAD_LEN) || bytes.last() != Some(&b'\n') {
            return Err(bad("wrong length"));
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| bad(&crate::sanitize::sanitize(&e.to_string())))?;
        head.check_fields(path)?;
        Ok(head)
    }

    /// Refuses a head whose hash or MAC is not hex, or that names an empty log but not the
    /// genesis hash (or the reverse). `path` names it in the error.
    pub fn check_fields(&self, path: &Path) -> Result<(), ChainError> {
        let bad = |reason: &str| ChainError::HeadMalformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if !is_hash_hex(&self.hash) {
            return Err(bad("`hash` is not 64 lowercase hex digits"));
        }
        if self.mac.as_deref().is_some_and(|m| !is_hash_hex(m)) {
            return Err(bad("`mac` is not 64 lowercase hex digits"));
        }
        if (self.seq == 0) != (self.hash == GENESIS_HASH) {
            return Err(bad("`seq` and `hash` disagree about an empty log"));
        }
        Ok(())
    }

    /// Reads the head file. The caller holds its lock.
    pub fn read(file: &File, path: &Path) -> Result<Head, ChainError> {
        let io = |source| ChainError::Io {
            path: path.to_owned(),
            source,
        };
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(ChainError::HeadMissing {
                path: path.to_owned(),
            });
        }
        let Some(len) = [HEAD_LEN, LEGACY_HEAD_LEN]
            .into_iter()
            .find(|&n| n as u64 == len)
        else {
            return Err(ChainError::HeadMalformed {
                path: path.to_owned(),
                reason: "wrong length".into(),
            });
        };
        let mut buf = [0u8; HEAD_LEN];
        file.read_exact_at(&mut buf[..len], 0).map_err(io)?;
        Head::decode(path, &buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_largest_seq() {
        let key = AuditKey::random();
        let h = Head::new(u64::MAX, "f".repeat(64), Some(&key));
        let bytes = h.encode().unwrap();
        assert_eq!(Head::decode(Path::new("h"), &bytes).unwrap(), h);
        h.check_mac(Some(&key), Path::new("h"), false).unwrap();
        let g = Head::genesis(None).encode().unwrap();
        assert_eq!(
            Head::decode(Path::new("h"), &g).unwrap(),
            Head::genesis(None)
        );
        // A head from before the MAC: 128 bytes, no `mac`.
        let mut legacy = [b' '; LEGACY_HEAD_LEN];
        let json = br#"{"seq":3,"hash":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"}"#;
        legacy[..json.len()].copy_from_slice(json);
        legacy[LEGACY_HEAD_LEN - 1] = b'\n';
        let old = Head::decode(Path::new("h"), &legacy).unwrap();
        assert_eq!((old.seq, old.mac), (3, None));
    }

    #[test]
    fn a_wrong_or_missing_mac_is_refused_under_a_key() {
        let key = AuditKey::random();
        let p = Path::new("audit.head");
        let mut h = Head::new(5, "a".repeat(64), Some(&key));
        h.seq = 4; // cut one record, kept the MAC
        let e = h.check_mac(Some(&key), p, false).unwrap_err().to_string();
        assert!(e.contains("MAC does not match"), "{e}");
        let bare = Head::new(4, "a".repeat(64), None);
        let e = bare
            .check_mac(Some(&key), p, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no MAC"), "{e}");
        bare.check_mac(Some(&key), p, true).unwrap();
        bare.check_mac(None, p, false).unwrap();
    }
}
