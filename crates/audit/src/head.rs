//! `audit.head`: the sequence number and hash of the last record, rewritten in place after each
//! append, so that records removed from the end of the log (or added to it by hand) show.
//!
//! The file is always [`HEAD_LEN`] bytes: `{"seq":N,"hash":"<64 hex>"}`, padded with spaces,
//! then `\n`. Its fixed length lets it be overwritten with one positioned write. It is also the
//! lock that serializes appends between processes (an exclusive `flock` while appending, a
//! shared one while a verifier takes a consistent snapshot).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainError, GENESIS_HASH, is_hash_hex};

/// Length of the head file in bytes.
pub(crate) const HEAD_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Head {
    /// Records in the log (0 for an empty log).
    pub seq: u64,
    /// The last record's hash ([`GENESIS_HASH`] for an empty log).
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    pub fn encode(&self) -> Result<[u8; HEAD_LEN], serde_json::Error> {
        let json = serde_json::to_vec(self)?;
        let mut out = [b' '; HEAD_LEN];
        // At most 7 + 20 + 10 + 64 + 2 = 103 bytes, so this always fits.
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
        if bytes.len() != HEAD_LEN || bytes.last() != Some(&b'\n') {
            return Err(bad("wrong length"));
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| bad(&crate::sanitize::sanitize(&e.to_string())))?;
        if !is_hash_hex(&head.hash) {
            return Err(bad("`hash` is not 64 lowercase hex digits"));
        }
        if (head.seq == 0) != (head.hash == GENESIS_HASH) {
            return Err(bad("`seq` and `hash` disagree about an empty log"));
        }
        Ok(head)
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
        if len != HEAD_LEN as u64 {
            return Err(ChainError::HeadMalformed {
                path: path.to_owned(),
                reason: "wrong length".into(),
            });
        }
        let mut buf = [0u8; HEAD_LEN];
        file.read_exact_at(&mut buf, 0).map_err(io)?;
        Head::decode(path, &buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_largest_seq() {
        let h = Head {
            seq: u64::MAX,
            hash: "f".repeat(64),
        };
        let bytes = h.encode().unwrap();
        assert_eq!(Head::decode(Path::new("h"), &bytes).unwrap(), h);
        let g = Head::genesis().encode().unwrap();
        assert_eq!(Head::decode(Path::new("h"), &g).unwrap(), Head::genesis());
    }
}
